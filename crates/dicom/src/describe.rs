//! What glandseg reads from a DICOM file or folder, for a person (`Display`) or a script
//! (JSON, `glandseg info --json`): series, grids, values and, for PET, the SUV factor
//! with every tag it came from.

use crate::DicomError;
use serde::Serialize;
use std::fmt;
use std::path::Path;

/// One series in `glandseg info --json` for DICOM (format version 1).
#[derive(Serialize)]
pub struct SeriesJson {
    /// SeriesInstanceUID.
    pub series_instance_uid: String,
    /// StudyInstanceUID.
    pub study_instance_uid: String,
    /// FrameOfReferenceUID.
    pub frame_of_reference_uid: String,
    /// Modality (CT, PT, ...).
    pub modality: String,
    /// SeriesDescription.
    pub description: String,
    /// Files in the series.
    pub files: usize,
    /// Present when the series loads as a volume.
    pub shape: Option<[usize; 3]>,
    /// Voxel spacing, mm.
    pub spacing_mm: Option<[f64; 3]>,
    /// Centre of the first voxel, LPS mm.
    pub origin_lps_mm: Option<[f64; 3]>,
    /// Columns: LPS directions of the voxel axes.
    pub direction_lps: Option<[[f64; 3]; 3]>,
    /// Where the voxel axes point.
    pub orientation: Option<String>,
    /// Minimum value.
    pub min: Option<f64>,
    /// Maximum value.
    pub max: Option<f64>,
    /// Why the series does not load as a volume.
    pub load_error: Option<String>,
    /// PET only: SUV factors with the tags they came from, or why there are none.
    pub suv: Option<crate::suv::SuvFactors>,
    /// PET only: why there are no SUV factors.
    pub suv_error: Option<String>,
}

/// `glandseg info` of a DICOM file or folder (JSON format version 1).
#[derive(Serialize)]
pub struct DicomInfo {
    /// Version of this JSON layout (1).
    pub format_version: u32,
    /// The file or folder.
    pub path: String,
    /// "dicom".
    pub kind: &'static str,
    /// Every series found.
    pub series: Vec<SeriesJson>,
    /// Files that are not DICOM images, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Describes the DICOM series in a file or folder. Nothing readable is an error, not an
/// empty description: a script checking the exit code must not take a typo'd folder or a
/// stray .txt for an empty study.
pub fn describe(path: &Path) -> Result<DicomInfo, DicomError> {
    let scan = crate::scan_folder(path)?;
    // Nothing readable is a failure, not an empty report: a script checking the exit code
    // must not take a typo'd folder or a stray .txt for an empty study.
    if scan.series.is_empty() {
        let why = scan
            .skipped
            .first()
            .map(|(p, w)| format!("; e.g. {}: {w}", p.display()))
            .unwrap_or_default();
        let what = if path.is_dir() {
            "no DICOM images in this folder"
        } else {
            "neither a NIfTI file (.nii, .nii.gz) nor a DICOM image"
        };
        return Err(DicomError::File {
            path: path.to_path_buf(),
            msg: format!("{what} ({} file(s) skipped{why})", scan.skipped.len()),
        });
    }
    let mut series = Vec::new();
    for s in &scan.series {
        let mut j = SeriesJson {
            series_instance_uid: s.series_instance_uid.clone(),
            study_instance_uid: s.study_instance_uid.clone(),
            frame_of_reference_uid: s.frame_of_reference_uid.clone(),
            modality: s.modality.clone(),
            description: s.description.clone(),
            files: s.slices.len(),
            shape: None,
            spacing_mm: None,
            origin_lps_mm: None,
            direction_lps: None,
            orientation: None,
            min: None,
            max: None,
            load_error: None,
            suv: None,
            suv_error: None,
        };
        match crate::load_series(s) {
            Ok(l) => {
                let g = l.volume.geometry();
                let mm = l.volume.min_max();
                j.shape = Some(g.shape);
                j.spacing_mm = Some(g.spacing);
                j.origin_lps_mm = Some(g.origin);
                j.direction_lps = Some(g.direction);
                j.orientation = Some(g.orientation_code());
                j.min = mm.map(|m| m.0);
                j.max = mm.map(|m| m.1);
            }
            Err(e) => j.load_error = Some(e.to_string()),
        }
        if s.modality == "PT" {
            // The series factor every command uses (crate::study).
            match crate::study::series_suv(s) {
                Ok(f) => j.suv = Some(f.factors),
                Err(e) => j.suv_error = Some(e),
            }
        }
        series.push(j);
    }
    let info = DicomInfo {
        format_version: 1,
        path: path.display().to_string(),
        kind: "dicom",
        series,
        skipped: scan
            .skipped
            .iter()
            .map(|(p, w)| (p.display().to_string(), w.clone()))
            .collect(),
    };
    Ok(info)
}

impl fmt::Display for DicomInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} series, {} other files",
            self.path,
            self.series.len(),
            self.skipped.len()
        )?;
        for s in &self.series {
            writeln!(
                f,
                "  {} {:?} ({} files)  series {}",
                s.modality, s.description, s.files, s.series_instance_uid
            )?;
            match (&s.shape, &s.load_error) {
                (Some(shape), _) => {
                    let sp = s.spacing_mm.unwrap_or_default();
                    let o = s.origin_lps_mm.unwrap_or_default();
                    writeln!(
                        f,
                        "    shape {:?}  spacing {:.4} x {:.4} x {:.4} mm  orientation {}",
                        shape,
                        sp[0],
                        sp[1],
                        sp[2],
                        s.orientation.clone().unwrap_or_default()
                    )?;
                    writeln!(
                        f,
                        "    origin ({:.3}, {:.3}, {:.3}) mm LPS  values {:.3} .. {:.3}",
                        o[0],
                        o[1],
                        o[2],
                        s.min.unwrap_or(f64::NAN),
                        s.max.unwrap_or(f64::NAN)
                    )?;
                }
                (None, Some(e)) => writeln!(f, "    not loadable: {e}")?,
                _ => {}
            }
            if let Some(suv) = &s.suv {
                writeln!(
                    f,
                    "    SUVbw factor {:.6e}  ({})",
                    suv.suvbw,
                    suv.derivation.join("; ")
                )?;
            }
            if let Some(e) = &s.suv_error {
                writeln!(f, "    no SUV: {e}")?;
            }
        }
        Ok(())
    }
}
