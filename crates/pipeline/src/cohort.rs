//! The synthetic cohort with its optional extras (`glandseg phantom`): the nnU-Net raw
//! dataset from `glandseg-phantom`, plus each case as DICOM (as a scanner would send it)
//! and a review image per case.

use anyhow::{Context, Result};
use glandseg_core::{LabelMap, Progress};
use glandseg_phantom::spect::SpectConfig;
use glandseg_phantom::{write_dataset_with, DatasetSummary, PhantomConfig};
use std::path::Path;

/// Writes `cases` phantom cases into `out` (and `out/pet_native` with `native`), each also
/// as DICOM into `out/dicom/CASE/` with `dicom` and as `out/preview/CASE.png` with
/// `preview`; with `spect` each case's SPECT time series for dosimetry into
/// `out/spect/CASE/` (and as NM objects with `dicom`).
pub fn write_cohort(
    out: &Path,
    cfg: &PhantomConfig,
    cases: usize,
    native: bool,
    dicom: bool,
    preview: bool,
    spect: Option<&SpectConfig>,
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
    let summary = write_dataset_with(out, cfg, cases, native, spect, &|case| {
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
    let dir = out.join("dicom").join(&case.id);
    let written = glandseg_dicom::write_case_dicom(
        &dir,
        &case.ct,
        &case.pet_native,
        &case.labels,
        map,
        &meta,
    )?;
    if let Some(spect) = &case.spect {
        write_spect_dicom(&dir.join("NM"), case, spect, &written.ct)?;
    }
    Ok(())
}

/// The SPECT time series as NM objects (`NM/spect_024h.dcm`, Bq/mL with a Real World Value
/// Mapping), in the CT's study and frame of reference: the time points are registered to
/// the CT by construction. Injection at a fixed date (reproducible files), each
/// acquisition its hours later; 60 projections of 30 s per head.
fn write_spect_dicom(
    dir: &Path,
    case: &glandseg_phantom::PhantomCase,
    spect: &glandseg_phantom::spect::SpectSeries,
    ct: &glandseg_dicom::SourceSeries,
) -> Result<()> {
    let m = &spect.meta;
    let injection = 1_767_268_800.0 + 86_400.0 * case.meta.index as f64;
    let projections = 60u32;
    for (n, (t, img)) in m.timepoints_h.iter().zip(&spect.images).enumerate() {
        let ctx = glandseg_dicom::StudyContext {
            study_instance_uid: ct.study_instance_uid.clone(),
            frame_of_reference_uid: ct.frame_of_reference_uid.clone(),
            patient: ct.patient.clone(),
            scan_time_unix: injection + t * 3600.0,
        };
        let acq = glandseg_dicom::NmAcquisition {
            acquisition_unix: injection + t * 3600.0,
            injection_unix: injection,
            injected_mbq: m.injected_mbq,
            half_life_s: m.half_life_h * 3600.0,
            radiopharmaceutical: format!("{} PSMA", m.nuclide),
            projections,
            seconds_per_projection: m.acquisition_s / projections as f64,
            energy_window_kev: [187.2, 228.8],
        };
        let name = glandseg_phantom::spect::image_name(*t).replace(".nii.gz", ".dcm");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        glandseg_dicom::write_nm(
            &dir.join(name),
            img,
            &ctx,
            &acq,
            glandseg_dicom::NmUnits::Bqml,
            10 + n as i64,
        )?;
    }
    Ok(())
}
