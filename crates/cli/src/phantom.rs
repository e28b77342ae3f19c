//! `glandseg phantom`: `glandseg_pipeline::cohort::write_cohort` and a summary table.

use anyhow::{Context, Result};
use clap::Args;
use glandseg_phantom::spect::SpectConfig;
use glandseg_phantom::{Fov, PhantomConfig};
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
    /// How the cases are built: classic (warped ellipsoid glands, white PET noise),
    /// lobular (lobulated glands, another head, correlated PET noise, PSF tails), or
    /// mixed (each case draws one).
    #[arg(long, default_value = "mixed")]
    style: glandseg_phantom::Style,
    /// Also write a quantitative SPECT time series per case for dosimetry, at these hours
    /// after injection (e.g. 4,24,48,96,168): spect/CASE/spect_024h.nii.gz in Bq/mL at the
    /// scan time, on the SPECT's own grid; known kinetics, true TIA and dose per gland in
    /// meta/CASE.json under "spect".
    #[arg(long, value_delimiter = ',', value_name = "HOURS")]
    timepoints: Vec<f64>,
    /// Therapy nuclide of the SPECT series.
    #[arg(long, default_value = "Lu-177")]
    nuclide: String,
    /// Injected activity of the SPECT series, MBq.
    #[arg(long = "injected-mbq", default_value_t = 7400.0)]
    injected_mbq: f64,
    /// SPECT resolution (FWHM, mm); default: drawn per case from 10-15 mm.
    #[arg(long = "spect-fwhm-mm")]
    spect_fwhm_mm: Option<f64>,
    /// SPECT voxel size, mm.
    #[arg(long = "spect-voxel-mm", default_value_t = 4.8)]
    spect_voxel_mm: f64,
    /// SPECT images without counting noise.
    #[arg(long = "no-spect-noise")]
    no_spect_noise: bool,
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
        style: a.style,
        style_from: None,
    };
    let spect = if a.timepoints.is_empty() {
        None
    } else {
        let nu = glandseg_dose::Nuclide::lookup(&a.nuclide).context("--nuclide")?;
        let mut sc = SpectConfig::lu177(a.timepoints.clone());
        sc.nuclide = nu.name.to_string();
        sc.half_life_h = nu.half_life_h;
        sc.electron_mev = nu.electron_mev;
        sc.injected_mbq = a.injected_mbq;
        sc.fwhm_mm = a.spect_fwhm_mm;
        sc.voxel_mm = a.spect_voxel_mm;
        sc.noise = !a.no_spect_noise;
        sc.check().map_err(anyhow::Error::msg)?;
        Some(sc)
    };
    let start = Instant::now();
    let bars = crate::progress::Bars::new(false);
    let summary = glandseg_pipeline::cohort::write_cohort(
        &a.out,
        &cfg,
        a.cases,
        a.native,
        a.dicom,
        a.preview,
        spect.as_ref(),
        &bars,
    )?;
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
        println!("review images: {}", a.out.join("preview").display());
    }
    if spect.is_some() {
        println!(
            "SPECT time series: {} (Bq/mL at scan time; truth per gland and the effective resolution for dose --pvc-fwhm-mm in meta/CASE.json \"spect\")",
            a.out.join("spect").display()
        );
    }
    Ok(())
}
