use anyhow::{Context, Result};
use clap::Args;
use glandseg_core::{geometry::GRID_TOLERANCE, Volume};
use glandseg_ops::resample::{resample, Interpolation};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct StatsArgs {
    /// Label map (NIfTI).
    #[arg(long)]
    labels: PathBuf,
    /// PET in SUV (NIfTI); resampled onto the label grid (trilinear) if it is on another.
    #[arg(long)]
    pet: Option<PathBuf>,
    /// CT in HU (NIfTI); resampled onto the label grid (trilinear) if it is on another.
    #[arg(long)]
    ct: Option<PathBuf>,
    /// Also measure uptake inside the gland grown by this many mm (PET spill-out).
    #[arg(long)]
    dilate: Option<f64>,
    /// Output folder for stats.json and stats.csv.
    #[arg(long, short)]
    out: PathBuf,
    /// A dataset.json whose "labels" name the classes (default: glandseg's label map).
    #[arg(long = "label-names")]
    label_names: Option<PathBuf>,
}

fn on_grid(path: &Path, what: &str, labels: &Volume<u8>) -> Result<Volume<f32>> {
    let v = glandseg_nifti::read_volume(path).with_context(|| format!("reading the {what}"))?;
    if v.geometry().same_grid(labels.geometry(), GRID_TOLERANCE) {
        return Ok(v);
    }
    eprintln!(
        "note: {} is not on the label map's grid; resampling it onto it (trilinear)",
        path.display()
    );
    Ok(resample(
        &v,
        labels.geometry(),
        Interpolation::Linear,
        if what == "CT" { -1024.0 } else { 0.0 },
    ))
}

pub fn run(a: StatsArgs) -> Result<()> {
    if let Some(d) = a.dilate {
        anyhow::ensure!(
            d.is_finite() && d > 0.0 && d <= 50.0,
            "--dilate must be between 0 and 50 mm, got {d}"
        );
    }
    let map = crate::label_map(a.label_names.as_deref())?;
    crate::output_folder(&a.out)?;
    let labels = glandseg_nifti::read_labels(&a.labels)?;
    let pet = a
        .pet
        .as_ref()
        .map(|p| on_grid(p, "PET", &labels))
        .transpose()?;
    let ct =
        a.ct.as_ref()
            .map(|p| on_grid(p, "CT", &labels))
            .transpose()?;
    let stats = glandseg_stats::gland_stats(&labels, &map, ct.as_ref(), pet.as_ref(), a.dilate)?;
    let case = a
        .labels
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .trim_end_matches(".gz")
                .trim_end_matches(".nii")
                .to_string()
        })
        .unwrap_or_default();
    glandseg_stats::write_stats(&a.out, &case, &stats)?;
    let f = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "gland", "volume mL", "SUVmean", "SUVmax", "SUVpeak", "SUVtotal", "HU"
    );
    for s in &stats {
        println!(
            "{:<22} {:>9.2} {:>8} {:>8} {:>8} {:>9} {:>8}",
            s.name,
            s.volume_ml,
            f(s.suv_mean),
            f(s.suv_max),
            f(s.suv_peak),
            f(s.suv_total),
            f(s.ct_hu_mean)
        );
    }
    println!("written: {}", a.out.join("stats.csv").display());
    Ok(())
}
