//! `glandseg info`: what glandseg reads from a file, for a person (`nib-ls`-like) or a
//! script (`--json`, stable fields documented in the README).

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A NIfTI file (.nii or .nii.gz), a DICOM file, or a folder of DICOM files.
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

fn is_nifti(p: &std::path::Path) -> bool {
    let n = p.to_string_lossy();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

pub fn run(a: InfoArgs) -> Result<()> {
    if a.path.is_dir() || (a.path.is_file() && !is_nifti(&a.path)) {
        return dicom_info(&a);
    }
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

/// One series in `glandseg info --json` for DICOM (format version 1).
#[derive(Serialize)]
struct SeriesJson {
    series_instance_uid: String,
    study_instance_uid: String,
    frame_of_reference_uid: String,
    modality: String,
    description: String,
    files: usize,
    /// Present when the series loads as a volume.
    shape: Option<[usize; 3]>,
    spacing_mm: Option<[f64; 3]>,
    origin_lps_mm: Option<[f64; 3]>,
    direction_lps: Option<[[f64; 3]; 3]>,
    orientation: Option<String>,
    min: Option<f64>,
    max: Option<f64>,
    /// Why the series does not load as a volume.
    load_error: Option<String>,
    /// PET only: SUV factors with the tags they came from, or why there are none.
    suv: Option<glandseg_dicom::suv::SuvFactors>,
    suv_error: Option<String>,
}

#[derive(Serialize)]
struct DicomInfo {
    format_version: u32,
    path: String,
    kind: &'static str,
    series: Vec<SeriesJson>,
    skipped: Vec<(String, String)>,
}

fn dicom_info(a: &InfoArgs) -> Result<()> {
    let scan = glandseg_dicom::scan_folder(&a.path)
        .with_context(|| format!("scanning {}", a.path.display()))?;
    // Nothing readable is a failure, not an empty report: a script checking the exit code
    // must not take a typo'd folder or a stray .txt for an empty study.
    if scan.series.is_empty() {
        let why = scan
            .skipped
            .first()
            .map(|(p, w)| format!("; e.g. {}: {w}", p.display()))
            .unwrap_or_default();
        let what = if a.path.is_dir() {
            "no DICOM images in this folder"
        } else {
            "neither a NIfTI file (.nii, .nii.gz) nor a DICOM image"
        };
        anyhow::bail!(
            "{}: {what} ({} file(s) skipped{why})",
            a.path.display(),
            scan.skipped.len()
        );
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
        match glandseg_dicom::load_series(s) {
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
            match glandseg_dicom::suv::suv_factors_of_file(&s.slices[0].path) {
                Ok(f) => j.suv = Some(f),
                Err(e) => j.suv_error = Some(e),
            }
        }
        series.push(j);
    }
    let info = DicomInfo {
        format_version: 1,
        path: a.path.display().to_string(),
        kind: "dicom",
        series,
        skipped: scan
            .skipped
            .iter()
            .map(|(p, w)| (p.display().to_string(), w.clone()))
            .collect(),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!(
        "{}: {} series, {} other files",
        info.path,
        info.series.len(),
        info.skipped.len()
    );
    for s in &info.series {
        println!(
            "  {} {:?} ({} files)  series {}",
            s.modality, s.description, s.files, s.series_instance_uid
        );
        match (&s.shape, &s.load_error) {
            (Some(shape), _) => {
                let sp = s.spacing_mm.unwrap_or_default();
                let o = s.origin_lps_mm.unwrap_or_default();
                println!(
                    "    shape {:?}  spacing {:.4} x {:.4} x {:.4} mm  orientation {}",
                    shape,
                    sp[0],
                    sp[1],
                    sp[2],
                    s.orientation.clone().unwrap_or_default()
                );
                println!(
                    "    origin ({:.3}, {:.3}, {:.3}) mm LPS  values {:.3} .. {:.3}",
                    o[0],
                    o[1],
                    o[2],
                    s.min.unwrap_or(f64::NAN),
                    s.max.unwrap_or(f64::NAN)
                );
            }
            (None, Some(e)) => println!("    not loadable: {e}"),
            _ => {}
        }
        if let Some(f) = &s.suv {
            println!(
                "    SUVbw factor {:.6e}  ({})",
                f.suvbw,
                f.derivation.join("; ")
            );
        }
        if let Some(e) = &s.suv_error {
            println!("    no SUV: {e}");
        }
    }
    Ok(())
}
