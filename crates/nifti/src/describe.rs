//! What glandseg reads from a NIfTI file, for a person (`Display`) or a script (JSON,
//! `glandseg info --json`): the library's answer, so that any front end shows the same.

use crate::{read_nifti, NiftiError, TransformSource};
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// The JSON of `glandseg info --json` (format version 1).
#[derive(Serialize)]
pub struct NiftiInfo {
    /// Version of this JSON layout (1).
    pub format_version: u32,
    /// The file.
    pub path: String,
    /// "nifti".
    pub kind: &'static str,
    /// 1 or 2.
    pub nifti_version: u8,
    /// The stored datatype (e.g. "int16").
    pub datatype: &'static str,
    /// Voxels per axis (and volumes, when more than one).
    pub shape: Vec<usize>,
    /// Voxel spacing, mm.
    pub spacing_mm: [f64; 3],
    /// Centre of voxel (0, 0, 0), LPS mm.
    pub origin_lps_mm: [f64; 3],
    /// Columns are the LPS directions of the i, j, k axes.
    direction_lps: [[f64; 3]; 3],
    /// Where the voxel axes point (e.g. "LPS").
    pub orientation: String,
    /// Voxel to LPS world affine.
    pub affine_lps: [[f64; 4]; 4],
    /// Which header transform the geometry came from.
    pub transform: TransformSource,
    /// Why the transform is not the first one the codes name (e.g. a sheared sform
    /// replaced by the qform); absent when there is nothing to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transform_note: Option<String>,
    /// The header's qform_code.
    pub qform_code: i32,
    /// The header's sform_code.
    pub sform_code: i32,
    /// Effective scaling slope.
    pub scl_slope: f64,
    /// Effective scaling intercept.
    pub scl_inter: f64,
    /// Minimum of the first volume.
    pub min: f64,
    /// Maximum of the first volume.
    pub max: f64,
    /// Mean of the first volume.
    pub mean: f64,
    /// The header's descrip field.
    pub description: String,
}

/// Describes a NIfTI file: its grid in LPS, storage, scaling and value range.
pub fn describe(path: &Path) -> Result<NiftiInfo, NiftiError> {
    let img = read_nifti(path)?;
    let h = &img.header;
    let g = &img.geometry;
    let nv = g.num_voxels();
    let vol0 = &img.data[..nv];
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &v in vol0 {
        let v = v as f64;
        min = min.min(v);
        max = max.max(v);
        sum += v;
    }
    let mut shape = g.shape.to_vec();
    if h.num_volumes() > 1 {
        shape.push(h.num_volumes());
    }
    let (slope, inter) = h.effective_scaling();
    let info = NiftiInfo {
        format_version: 1,
        path: path.display().to_string(),
        kind: "nifti",
        nifti_version: h.version,
        datatype: h.datatype,
        shape,
        spacing_mm: g.spacing,
        origin_lps_mm: g.origin,
        direction_lps: g.direction,
        orientation: g.orientation_code(),
        affine_lps: g.affine(),
        transform: h.transform,
        transform_note: h.transform_note.clone(),
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        scl_slope: slope,
        scl_inter: inter,
        min,
        max,
        mean: sum / nv as f64,
        description: h.descrip.clone(),
    };
    Ok(info)
}

impl fmt::Display for NiftiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.path)?;
        writeln!(
            f,
            "  NIfTI-{} {}  shape {:?}  orientation {} (voxel axes point to)",
            self.nifti_version, self.datatype, self.shape, self.orientation
        )?;
        writeln!(
            f,
            "  spacing  {:.4} x {:.4} x {:.4} mm",
            self.spacing_mm[0], self.spacing_mm[1], self.spacing_mm[2]
        )?;
        writeln!(
            f,
            "  origin   ({:.3}, {:.3}, {:.3}) mm LPS",
            self.origin_lps_mm[0], self.origin_lps_mm[1], self.origin_lps_mm[2]
        )?;
        for (c, axis) in ["i", "j", "k"].iter().enumerate() {
            writeln!(
                f,
                "  {axis} axis   ({:+.4}, {:+.4}, {:+.4}) LPS",
                self.direction_lps[0][c], self.direction_lps[1][c], self.direction_lps[2][c]
            )?;
        }
        writeln!(
            f,
            "  transform {:?} (qform_code {}, sform_code {})  scaling x{} {:+}",
            self.transform, self.qform_code, self.sform_code, self.scl_slope, self.scl_inter
        )?;
        if let Some(note) = &self.transform_note {
            writeln!(f, "  note     {note}")?;
        }
        writeln!(
            f,
            "  values   min {:.4}  max {:.4}  mean {:.4}{}",
            self.min,
            self.max,
            self.mean,
            if self.shape.len() > 3 {
                "  (volume 0)"
            } else {
                ""
            }
        )?;
        Ok(())
    }
}
