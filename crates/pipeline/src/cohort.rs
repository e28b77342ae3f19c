//! The synthetic cohort with its optional extras (`glandseg phantom`): the nnU-Net raw
//! dataset from `glandseg-phantom`, plus each case as DICOM (as a scanner would send it)
//! and a review image per case.

use anyhow::{Context, Result};
use glandseg_core::{LabelMap, Progress};
use glandseg_phantom::{write_dataset, DatasetSummary, PhantomConfig};
use std::path::Path;

/// Writes `cases` phantom cases into `out` (and `out/pet_native` with `native`), each also
/// as DICOM into `out/dicom/CASE/` with `dicom` and as `out/preview/CASE.png` with
/// `preview`.
pub fn write_cohort(
    out: &Path,
    cfg: &PhantomConfig,
    cases: usize,
    native: bool,
    dicom: bool,
    preview: bool,
    progress: &dyn Progress,
) -> Result<DatasetSummary> {
    progress.start("phantom", cases as u64);
    let preview_dir = out.join("preview");
    if preview {
        std::fs::create_dir_all(&preview_dir)
            .with_context(|| format!("creating {}", preview_dir.display()))?;
    }
    let map = LabelMap::default();
    let preview_errors = std::sync::Mutex::new(Vec::new());
    let summary = write_dataset(out, cfg, cases, native, &|case| {
        if dicom {
            if let Err(e) = write_dicom_case(out, case, &map) {
                preview_errors
                    .lock()
                    .expect("not poisoned")
                    .push(format!("DICOM of {}: {e}", case.id));
            }
        }
        if preview {
            let title = format!(
                "{}  CT {:.2}x{:.2}x{:.2} mm  PET {:.1} mm  FWHM {:.1} mm",
                case.id,
                case.meta.ct_spacing_mm[0],
                case.meta.ct_spacing_mm[1],
                case.meta.ct_spacing_mm[2],
                case.meta.pet_spacing_mm[0],
                case.meta.pet_psf_fwhm_mm
            );
            let img =
                glandseg_viz::render_review(&case.ct, Some(&case.pet), &case.labels, &map, &title);
            let p = preview_dir.join(format!("{}.png", case.id));
            if let Err(e) = glandseg_viz::save_png(&p, &img) {
                preview_errors
                    .lock()
                    .expect("not poisoned")
                    .push(format!("preview: {e}"));
            }
        }
        progress.message(&case.id);
        progress.inc(1);
    })
    .with_context(|| format!("writing the phantom cohort to {}", out.display()))?;
    progress.finish();
    if let Some(e) = preview_errors.into_inner().expect("not poisoned").first() {
        anyhow::bail!("{e}");
    }
    Ok(summary)
}

/// One phantom case as the scanner would send it: the PET series on its native grid in
/// Bq/mL (SUV x the case's weight/dose factor), with the tags that turn it back into SUV.
fn write_dicom_case(
    out: &std::path::Path,
    case: &glandseg_phantom::PhantomCase,
    map: &LabelMap,
) -> Result<()> {
    let m = &case.meta;
    let meta = glandseg_dicom::PatientMeta {
        patient_id: case.id.clone(),
        patient_name: format!("Phantom^{}", case.id),
        weight_kg: m.patient_weight_kg,
        injected_dose_bq: m.injected_activity_mbq * 1e6,
        half_life_s: m.half_life_s,
        injection_to_scan_s: m.uptake_time_min * 60.0,
        // A fixed date: the same seed gives the same files.
        scan_time_unix: Some(1_767_268_800.0 + 86_400.0 * m.index as f64),
        patient_sex: m.patient_sex.clone(),
        patient_height_m: Some(m.patient_height_m),
        radiopharmaceutical: m.radiopharmaceutical.clone(),
        radionuclide: m.radionuclide.clone(),
    };
    glandseg_dicom::write_case_dicom(
        &out.join("dicom").join(&case.id),
        &case.ct,
        &case.pet_native,
        &case.labels,
        map,
        &meta,
    )?;
    Ok(())
}
