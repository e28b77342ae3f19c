use anyhow::{bail, Context, Result};
use clap::Args;
use glandseg_core::{geometry::GRID_TOLERANCE, Geometry, Volume};
use glandseg_dose::{DoseOptions, Nuclide, TimePoint};
use glandseg_ops::resample::{resample, Interpolation};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct DoseArgs {
    /// Label map (NIfTI); the dose map is written on its grid.
    #[arg(long)]
    labels: PathBuf,
    /// An activity image at a time after injection: HOURS=PATH (NIfTI, Bq/mL, any grid:
    /// resampled onto the label map's, trilinear). Repeat for each time point, in time
    /// order; one time point uses Hänscheid's (or, with --population-t-eff, Madsen's)
    /// single-time-point formula.
    #[arg(long = "activity", value_name = "HOURS=PATH", required = true)]
    activity: Vec<String>,
    /// Radionuclide (Lu-177; also I-131, Y-90).
    #[arg(long, default_value = "Lu-177")]
    nuclide: String,
    /// Injected activity in MBq: adds dose_gy_per_gbq.
    #[arg(long = "injected-mbq")]
    injected_mbq: Option<f64>,
    /// Tissue density in g/mL (mass = volume x density).
    #[arg(long, default_value_t = 1.0)]
    density: f64,
    /// Population effective half-life (h) for a single time point (Madsen's method).
    #[arg(long = "population-t-eff")]
    population_t_eff: Option<f64>,
    /// The activity images are decay-corrected to the injection time (undo it).
    #[arg(long = "decay-corrected")]
    decay_corrected: bool,
    /// Voxel-S-value kernel truncation radius in mm.
    #[arg(long = "kernel-mm", default_value_t = 30.0)]
    kernel_mm: f64,
    /// Relative standard uncertainty (%) of the activity calibration, added in quadrature
    /// to the fit's in dose_uncertainty_pct.
    #[arg(long = "calibration-uncertainty-pct")]
    calibration_uncertainty_pct: Option<f64>,
    /// Relative standard uncertainty (%) of the gland volumes, added in quadrature to the
    /// fit's in dose_uncertainty_pct.
    #[arg(long = "volume-uncertainty-pct")]
    volume_uncertainty_pct: Option<f64>,
    /// Output folder: dose.json, dose.csv, dose_map.nii.gz, tac.png.
    #[arg(long, short)]
    out: PathBuf,
    /// A dataset.json whose "labels" name the classes (default: glandseg's label map).
    #[arg(long = "label-names")]
    label_names: Option<PathBuf>,
}

/// `24=path.nii.gz` → (24.0, path).
fn parse_activity(s: &str) -> Result<(f64, PathBuf)> {
    let Some((t, p)) = s.split_once('=') else {
        bail!("--activity {s:?}: expected HOURS=PATH, e.g. 24=A24.nii.gz");
    };
    let t: f64 = t
        .trim()
        .parse()
        .ok()
        .filter(|t: &f64| t.is_finite() && *t >= 0.0)
        .with_context(|| format!("--activity {s:?}: {t:?} is not a time in hours ≥ 0"))?;
    if p.is_empty() {
        bail!("--activity {s:?}: no file after '='");
    }
    Ok((t, PathBuf::from(p)))
}

/// The activity image at `path` on the dose region's grid (`labels`: the cropped label
/// map; `full`: the whole label grid; `region`: the crop).
fn on_grid(
    path: &Path,
    t: f64,
    labels: &Volume<u8>,
    full: &Geometry,
    region: ([usize; 3], [usize; 3]),
) -> Result<Volume<f32>> {
    if !path.exists() {
        bail!("--activity {t}={}: file not found", path.display());
    }
    let v = glandseg_nifti::read_volume(path)
        .with_context(|| format!("--activity {t}={}", path.display()))?;
    if v.geometry().same_grid(labels.geometry(), GRID_TOLERANCE) {
        return Ok(v);
    }
    if v.geometry().same_grid(full, GRID_TOLERANCE) {
        // On the label map's grid: keep the dose region only.
        let (lo, hi) = region;
        return Ok(v.crop(lo, hi)?);
    }
    eprintln!(
        "note: {} is not on the label map's grid; resampling it onto it (trilinear)",
        path.display()
    );
    Ok(resample(&v, labels.geometry(), Interpolation::Linear, 0.0))
}

pub fn run(a: DoseArgs) -> Result<()> {
    let nuclide = Nuclide::lookup(&a.nuclide).context("--nuclide")?;
    let inputs: Vec<(f64, PathBuf)> = a
        .activity
        .iter()
        .map(|s| parse_activity(s))
        .collect::<Result<_>>()?;
    for w in inputs.windows(2) {
        if w[1].0 <= w[0].0 {
            let what = if w[1].0 == w[0].0 {
                "duplicated"
            } else {
                "out of order"
            };
            bail!(
                "--activity: time {} h ({}) is {what} after {} h ({}); give the time points once each, in increasing time",
                w[1].0,
                w[1].1.display(),
                w[0].0,
                w[0].1.display()
            );
        }
    }
    if let Some(m) = a.injected_mbq {
        anyhow::ensure!(
            m.is_finite() && m > 0.0,
            "--injected-mbq must be > 0, got {m}"
        );
    }
    anyhow::ensure!(
        a.density.is_finite() && a.density > 0.0,
        "--density must be > 0 g/mL, got {}",
        a.density
    );
    anyhow::ensure!(
        a.kernel_mm.is_finite() && a.kernel_mm > 0.0 && a.kernel_mm <= 200.0,
        "--kernel-mm must be between 0 and 200 mm, got {}",
        a.kernel_mm
    );
    let map = crate::label_map(a.label_names.as_deref())?;
    let full_labels = glandseg_nifti::read_labels(&a.labels).context("--labels")?;
    let mut opt = DoseOptions::new(nuclide);
    opt.injected_mbq = a.injected_mbq;
    opt.density_g_ml = a.density;
    opt.population_t_eff_h = a.population_t_eff;
    opt.decay_corrected = a.decay_corrected;
    opt.kernel_truncation_mm = a.kernel_mm;
    opt.calibration_uncertainty_pct = a.calibration_uncertainty_pct;
    opt.volume_uncertainty_pct = a.volume_uncertainty_pct;
    // Work in the glands' box grown by the kernel radius only: a CT-grid label map of a
    // whole body would otherwise hold every activity image at full size several times.
    let Some((lo, hi)) = glandseg_dose::job::region_of_interest(&full_labels, &map, &opt) else {
        bail!(
            "--labels {}: no voxel carries any of the label map's gland labels",
            a.labels.display()
        );
    };
    let labels = full_labels.crop(lo, hi)?;
    let full = full_labels.geometry().clone();
    let tps: Vec<TimePoint> = inputs
        .iter()
        .map(|(t, p)| {
            Ok(TimePoint {
                time_h: *t,
                activity: on_grid(p, *t, &labels, &full, (lo, hi))?,
            })
        })
        .collect::<Result<_>>()?;
    let (report, dose_box) = glandseg_dose::compute_dose(&labels, &map, &tps, &opt)?;
    glandseg_dose::write_outputs(&a.out, &report)?;
    // The dose map on the full label grid (0 outside the box).
    let mut dose_map = Volume::filled(full.clone(), 0f32);
    let d = dose_box.as_slice();
    let [bx, by, _] = dose_box.shape();
    let [nx, ny, _] = full.shape;
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            let src = bx * ((j - lo[1]) + by * (k - lo[2]));
            let dst = lo[0] + nx * (j + ny * k);
            dose_map.as_slice_mut()[dst..dst + bx].copy_from_slice(&d[src..src + bx]);
        }
    }
    glandseg_nifti::write_volume(&a.out.join("dose_map.nii.gz"), &dose_map)?;
    let f = |v: Option<f64>, p: usize| v.map(|x| format!("{x:.p$}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<22} {:>8} {:<14} {:>7} {:>10} {:>8} {:>8} {:>6}",
        "gland", "mass g", "model", "Teff h", "TIA MBq h", "D Gy", "Dvox Gy", "+-%"
    );
    for g in &report.glands {
        println!(
            "{:<22} {:>8.2} {:<14} {:>7} {:>10.1} {:>8.3} {:>8} {:>6}{}",
            g.name,
            g.mass_g,
            g.model,
            f(g.t_eff_h, 1),
            g.tia_mbq_h,
            g.dose_gy,
            f(g.dose_gy_voxel_mean, 3),
            f(g.uncertainty_pct, 1),
            if g.caveat.is_some() { "  (caveat)" } else { "" }
        );
    }
    println!("written: {}", a.out.join("dose.csv").display());
    Ok(())
}
