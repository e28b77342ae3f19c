//! A predicted case on disk: `OUT/CASE.nii.gz` (labels on the CT grid) and `OUT/CASE/`
//! with the uptake tables, `prediction.json`, the review image and, as asked, per-gland
//! masks, probability maps, DICOM-SEG and RTSTRUCT.

use crate::error::{PredictError, Result};
use crate::input::InputCase;
use crate::Prediction;
use glandseg_core::geometry::GRID_TOLERANCE;
use glandseg_core::LabelMap;
use glandseg_ops::resample::{resample, Interpolation};
use glandseg_plan::naming::label_file;
use std::path::{Path, PathBuf};

/// A kind of output file: a closed set shared with the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum OutputType {
    /// `CASE.nii.gz` (always written).
    Nifti,
    /// `CASE/seg.dcm`, a DICOM-SEG (referencing the CT series when the input was DICOM).
    DicomSeg,
    /// `CASE/rtstruct.dcm`, an RTSTRUCT (likewise).
    Rtstruct,
    /// `CASE.seg.nrrd`, a 3D Slicer segmentation (named, coloured, SNOMED-coded segments)
    /// on the grid of `CASE.nii.gz`.
    SegNrrd,
}

/// What [`write_case`] writes besides the label map.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Also one mask file per gland into `CASE/glands/`.
    pub per_gland_files: bool,
    /// Also measure uptake in glands grown by this many mm (PET spill-out).
    pub dilate: Option<f64>,
    /// Write `CASE/review.png` and, where niivue is available, `CASE/review.html`.
    pub review: bool,
    /// Output kinds (NIfTI is always written).
    pub outputs: Vec<OutputType>,
    /// The model's name in DICOM outputs (SEG's algorithm name); empty: "model" (a
    /// [`crate::PredictJob`] fills in the model folder's name).
    pub model_name: String,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            per_gland_files: false,
            dilate: None,
            review: true,
            outputs: vec![OutputType::Nifti],
            model_name: String::new(),
        }
    }
}

/// The label map file of case `id` in `out`.
pub fn labels_path(out: &Path, id: &str) -> PathBuf {
    out.join(label_file(id, ".nii.gz"))
}

/// The 3D Slicer segmentation file of case `id` in `out`.
pub fn seg_nrrd_path(out: &Path, id: &str) -> PathBuf {
    out.join(format!("{id}.seg.nrrd"))
}

/// Writes every output of one predicted case into `out`.
pub fn write_case(
    out: &Path,
    case: &InputCase,
    pred: &Prediction,
    map: &LabelMap,
    opts: &ExportOptions,
) -> Result<()> {
    write_nifti_outputs(out, &case.id, &case.images, pred, map, opts)?;
    write_dicom_outputs(out, case, &pred.labels, map, opts)
}

fn write_nifti_outputs(
    out: &Path,
    id: &str,
    images: &[glandseg_core::Volume<f32>],
    pred: &Prediction,
    map: &LabelMap,
    opts: &ExportOptions,
) -> Result<()> {
    let case_dir = out.join(id);
    std::fs::create_dir_all(&case_dir).map_err(|e| glandseg_core::Error::io(&case_dir, e))?;
    glandseg_nifti::write_volume(&labels_path(out, id), &pred.labels)?;
    if opts.outputs.contains(&OutputType::SegNrrd) {
        crate::seg_nrrd::write_seg_nrrd(&seg_nrrd_path(out, id), &pred.labels, map)
            .map_err(|e| e.context(format!("writing the 3D Slicer segmentation of {id}")))?;
    }
    // Statistics and the review picture read only the segmented region (labels are zero
    // outside it): on a whole-body scan, resampling the PET onto the whole CT grid was a
    // third of the prediction's time and a gigabyte of memory.
    let (lo, hi) = (pred.report.region_lo, pred.report.region_hi);
    let ct = images[0].crop(lo, hi)?;
    let labels = pred.labels.crop(lo, hi)?;
    let pet = images.get(1).map(|p| {
        if p.geometry().same_grid(images[0].geometry(), GRID_TOLERANCE) {
            p.crop(lo, hi)
        } else {
            Ok(resample(p, ct.geometry(), Interpolation::Linear, 0.0))
        }
    });
    let pet = pet.transpose()?;
    let stats = glandseg_stats::gland_stats(&labels, map, Some(&ct), pet.as_ref(), opts.dilate)?;
    glandseg_stats::write_stats(&case_dir, id, &stats)?;
    glandseg_core::atomic::write_json(&case_dir.join("prediction.json"), &pred.report)?;
    if opts.per_gland_files {
        for (v, name) in map.foreground() {
            let m = pred.labels.map(|&x| u8::from(x == v));
            glandseg_nifti::write_volume(
                &case_dir.join("glands").join(format!("{name}.nii.gz")),
                &m,
            )?;
        }
    }
    if let Some(probs) = &pred.probabilities {
        for (c, p) in probs.iter().enumerate() {
            let name = map.name(c as u8).unwrap_or("unused");
            glandseg_nifti::write_volume(
                &case_dir
                    .join("probabilities")
                    .join(format!("{c:02}_{name}.nii.gz")),
                p,
            )?;
        }
    }
    if opts.review {
        let title = format!("{id}  predicted ({} fold(s))", pred.report.folds.len());
        let img = glandseg_viz::render_review(&ct, pet.as_ref(), &labels, map, &title);
        glandseg_viz::save_png(&case_dir.join("review.png"), &img)?;
        crate::review_html::write_case_page(
            &case_dir,
            id,
            &ct,
            pet.as_ref(),
            &labels,
            map,
            &stats,
        )?;
    }
    Ok(())
}

/// DICOM-SEG and/or RTSTRUCT beside the NIfTI output, as asked.
fn write_dicom_outputs(
    out: &Path,
    case: &InputCase,
    labels: &glandseg_core::Volume<u8>,
    map: &LabelMap,
    opts: &ExportOptions,
) -> Result<()> {
    let case_dir = out.join(&case.id);
    if opts.outputs.contains(&OutputType::DicomSeg) {
        let seg = glandseg_dicom::SegOptions {
            model_name: if opts.model_name.is_empty() {
                "model".into()
            } else {
                opts.model_name.clone()
            },
            ..Default::default()
        };
        glandseg_dicom::write_seg(
            &case_dir.join("seg.dcm"),
            labels,
            map,
            case.dicom_ct.as_ref(),
            &seg,
        )
        .map_err(|e| {
            PredictError::from(e).context(format!("writing the DICOM-SEG of {}", case.id))
        })?;
    }
    if opts.outputs.contains(&OutputType::Rtstruct) {
        glandseg_dicom::write_rtstruct(
            &case_dir.join("rtstruct.dcm"),
            labels,
            map,
            case.dicom_ct.as_ref(),
            &glandseg_dicom::RtStructOptions::default(),
        )
        .map_err(|e| {
            PredictError::from(e).context(format!("writing the RTSTRUCT of {}", case.id))
        })?;
    }
    Ok(())
}
