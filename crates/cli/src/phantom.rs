use anyhow::{Context, Result};
use clap::Args;
use glandseg_core::LabelMap;
use glandseg_phantom::{write_dataset, Fov, PhantomConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct PhantomArgs {
    /// Output folder (created; existing case files are overwritten).
    #[arg(long, short)]
    out: PathBuf,
    /// Number of cases.
    #[arg(long, default_value_t = 30)]
    cases: usize,
    /// Random seed: the same seed gives the same cohort.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Field of view: head, head-neck or head-neck-torso.
    #[arg(long, default_value = "head-neck")]
    fov: Fov,
    /// Also write the PET on its own (coarser) grid, as the scanner gives it.
    #[arg(long)]
    native: bool,
    /// Write a review PNG per case into preview/.
    #[arg(long)]
    preview: bool,
    /// Cut the top of the skull off in about 30 % of the cases.
    #[arg(long)]
    cut_top: bool,
    /// Also write each case as DICOM into dicom/CASE/: a CT series, a PET series (Bq/mL
    /// with the SUV tags, PET on its own scanner grid), a DICOM-SEG and an RTSTRUCT.
    #[arg(long)]
    dicom: bool,
    /// Resolution factor: 1.0 = scanner-like; 0.5 = voxels twice as large per axis.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
}

pub fn run(a: PhantomArgs) -> Result<()> {
    anyhow::ensure!(a.cases > 0, "--cases must be at least 1");
    anyhow::ensure!(
        a.scale > 0.05 && a.scale <= 4.0,
        "--scale must be in (0.05, 4], got {}",
        a.scale
    );
    let cfg = PhantomConfig {
        seed: a.seed,
        fov: a.fov,
        cut_top: a.cut_top,
        scale: a.scale,
    };
    let start = Instant::now();
    let bar = ProgressBar::new(a.cases as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} phantom [{bar:30}] {pos}/{len} cases  {elapsed} (ETA {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let preview_dir = a.out.join("preview");
    if a.preview {
        std::fs::create_dir_all(&preview_dir)
            .with_context(|| format!("creating {}", preview_dir.display()))?;
    }
    let map = LabelMap::default();
    let preview_errors = std::sync::Mutex::new(Vec::new());
    let summary = write_dataset(&a.out, &cfg, a.cases, a.native, &|case| {
        if a.dicom {
            if let Err(e) = write_dicom_case(&a.out, case, &map) {
                preview_errors
                    .lock()
                    .expect("not poisoned")
                    .push(format!("DICOM of {}: {e}", case.id));
            }
        }
        if a.preview {
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
        bar.set_message(case.id.clone());
        bar.inc(1);
    })
    .with_context(|| format!("writing the phantom cohort to {}", a.out.display()))?;
    bar.finish_and_clear();
    if let Some(e) = preview_errors.into_inner().expect("not poisoned").first() {
        anyhow::bail!("{e}");
    }
    println!(
        "wrote {} cases to {} in {:.1} s",
        summary.cases,
        a.out.display(),
        start.elapsed().as_secs_f64()
    );
    println!(
        "{:<22} {:>18} {:>16}",
        "gland", "volume mL (range)", "SUVmax (range)"
    );
    for (name, (lo, hi)) in &summary.volume_ml {
        let (slo, shi) = summary.suv_max[name];
        println!("{name:<22} {lo:>8.2} - {hi:<7.2} {slo:>7.1} - {shi:<6.1}");
    }
    if a.preview {
        println!("review images: {}", preview_dir.display());
    }
    Ok(())
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
