//! `glandseg info`: what glandseg reads from a file, for a person (`nib-ls`-like) or a
//! script (`--json`, stable fields documented in the README).

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A NIfTI file (.nii or .nii.gz).
    path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The JSON of `glandseg info --json` (format version 1).
#[derive(Serialize)]
struct NiftiInfo {
    format_version: u32,
    path: String,
    kind: &'static str,
    nifti_version: u8,
    datatype: &'static str,
    shape: Vec<usize>,
    spacing_mm: [f64; 3],
    origin_lps_mm: [f64; 3],
    /// Columns are the LPS directions of the i, j, k axes.
    direction_lps: [[f64; 3]; 3],
    orientation: String,
    affine_lps: [[f64; 4]; 4],
    transform: glandseg_nifti::TransformSource,
    qform_code: i32,
    sform_code: i32,
    scl_slope: f64,
    scl_inter: f64,
    min: f64,
    max: f64,
    mean: f64,
    description: String,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let img = glandseg_nifti::read_nifti(&a.path)
        .with_context(|| format!("reading {}", a.path.display()))?;
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
        path: a.path.display().to_string(),
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
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        scl_slope: slope,
        scl_inter: inter,
        min,
        max,
        mean: sum / nv as f64,
        description: h.descrip.clone(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("{}", info.path);
    println!(
        "  NIfTI-{} {}  shape {:?}  orientation {} (voxel axes point to)",
        info.nifti_version, info.datatype, info.shape, info.orientation
    );
    println!(
        "  spacing  {:.4} x {:.4} x {:.4} mm",
        g.spacing[0], g.spacing[1], g.spacing[2]
    );
    println!(
        "  origin   ({:.3}, {:.3}, {:.3}) mm LPS",
        g.origin[0], g.origin[1], g.origin[2]
    );
    for (c, axis) in ["i", "j", "k"].iter().enumerate() {
        println!(
            "  {axis} axis   ({:+.4}, {:+.4}, {:+.4}) LPS",
            g.direction[0][c], g.direction[1][c], g.direction[2][c]
        );
    }
    println!(
        "  transform {:?} (qform_code {}, sform_code {})  scaling x{} {:+}",
        info.transform, info.qform_code, info.sform_code, slope, inter
    );
    println!(
        "  values   min {:.4}  max {:.4}  mean {:.4}{}",
        min,
        max,
        info.mean,
        if h.num_volumes() > 1 {
            "  (volume 0)"
        } else {
            ""
        }
    );
    Ok(())
}
