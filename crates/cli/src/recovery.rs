//! `glandseg recovery`: a recovery curve (RC by volume) from a sphere-phantom image, for
//! `glandseg dose --recovery-curve`. The measurement and the fit are
//! `glandseg_dose::recovery`; this reads the image and the sphere table and writes the
//! outputs.

use anyhow::{bail, Context, Result};
use clap::Args;
use glandseg_dose::recovery::{
    equivalent_fwhm, measure_sphere, simulate_phantom, RecoveryCurve, Sphere, SphereMeasurement,
    IEC_DIAMETERS_MM,
};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct RecoveryArgs {
    /// The sphere phantom's activity image in Bq/mL at its scan time: NIfTI, or DICOM (an NM
    /// file, or a folder with one NM image or one PET series in BQML), reconstructed as the
    /// patients' images are.
    #[arg(long, required_unless_present = "simulate_fwhm_mm")]
    image: Option<PathBuf>,
    /// The spheres, CSV with a header: name,x_mm,y_mm,z_mm,volume_ml,bq_ml (centre in DICOM
    /// LPS mm, inner volume, true concentration at the scan time).
    #[arg(long, required_unless_present = "simulate_fwhm_mm")]
    spheres: Option<PathBuf>,
    /// Counts-to-activity factor (cps/MBq) for an NM image in counts.
    #[arg(long = "calibration-cps-per-mbq")]
    calibration_cps_per_mbq: Option<f64>,
    /// Search this far (mm) around each given centre for the sphere (the phantom is placed
    /// by hand); 0 uses the centres as given.
    #[arg(long = "refine-mm", default_value_t = 4.0)]
    refine_mm: f64,
    /// No phantom scan: simulate the IEC spheres (10-37 mm) blurred by a Gaussian PSF of
    /// this FWHM (mm), write spheres.nii.gz and spheres.csv, and measure them.
    #[arg(long = "simulate-fwhm-mm", conflicts_with_all = ["image", "spheres"])]
    simulate_fwhm_mm: Option<f64>,
    /// Voxel size of the simulated image, mm.
    #[arg(long = "voxel-mm", default_value_t = 4.8)]
    voxel_mm: f64,
    /// Background concentration of the simulated phantom as a fraction of the spheres'.
    #[arg(long = "background-ratio", default_value_t = 0.1)]
    background_ratio: f64,
    /// The phantom's background concentration at the scan time (Bq/mL), for the
    /// equivalent-FWHM fit (its spill-in raises small spheres' recovery); 0 when not given.
    #[arg(long = "background-bq-ml", conflicts_with = "simulate_fwhm_mm")]
    background_bq_ml: Option<f64>,
    /// Output folder: recovery.json (the curve, for dose --recovery-curve), recovery.csv
    /// (per sphere), recovery.png.
    #[arg(long, short)]
    out: PathBuf,
}

#[derive(Serialize)]
struct Output<'a> {
    curve: &'a RecoveryCurve,
    /// The Gaussian PSF FWHM that reproduces the spheres' recoveries (for the GTM).
    equivalent_fwhm_mm: Option<f64>,
    background_bq_ml: f64,
    spheres: &'a [SphereMeasurement],
    refine_mm: f64,
}

pub fn run(a: RecoveryArgs) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let sim_bq_ml = 100_000.0;
    let (image, spheres, source) = match a.simulate_fwhm_mm {
        Some(fwhm) => {
            let (img, spheres) = simulate_phantom(
                &IEC_DIAMETERS_MM,
                fwhm,
                a.voxel_mm,
                sim_bq_ml,
                a.background_ratio,
            )?;
            glandseg_nifti::write_volume(&a.out.join("spheres.nii.gz"), &img)?;
            glandseg_core::atomic::write_bytes(
                &a.out.join("spheres.csv"),
                spheres_csv(&spheres).as_bytes(),
            )?;
            let source = format!(
                "simulated IEC spheres: Gaussian PSF {fwhm} mm FWHM, {} mm voxels, background {} of the spheres",
                a.voxel_mm, a.background_ratio
            );
            (img, spheres, source)
        }
        None => {
            let (Some(image), Some(table)) = (&a.image, &a.spheres) else {
                bail!("give --image and --spheres, or --simulate-fwhm-mm");
            };
            let img = read_image(image, a.calibration_cps_per_mbq)?;
            let spheres = read_spheres(table)?;
            (img, spheres, image.display().to_string())
        }
    };
    let measured: Vec<SphereMeasurement> = spheres
        .iter()
        .map(|s| measure_sphere(&image, s, a.refine_mm))
        .collect::<Result<_, _>>()
        .with_context(|| source.clone())?;
    let points: Vec<[f64; 2]> = measured.iter().map(|m| [m.volume_ml, m.rc]).collect();
    let curve = RecoveryCurve::fit(&points, &source)?;
    let background = match a.simulate_fwhm_mm {
        Some(_) => a.background_ratio * sim_bq_ml,
        None => a.background_bq_ml.unwrap_or(0.0),
    };
    if !(background.is_finite() && background >= 0.0) {
        bail!("--background-bq-ml must be 0 or more, got {background}");
    }
    let fwhm = equivalent_fwhm(&measured, background);
    let out = Output {
        curve: &curve,
        equivalent_fwhm_mm: fwhm,
        background_bq_ml: background,
        spheres: &measured,
        refine_mm: a.refine_mm,
    };
    glandseg_core::atomic::write_json(&a.out.join("recovery.json"), &out)?;
    let mut csv = String::from(
        "name,volume_ml,diameter_mm,true_bq_ml,mean_bq_ml,rc,rc_fitted,centre_shift_mm\n",
    );
    for m in &measured {
        csv.push_str(&format!(
            "{},{:.4},{:.2},{:.6},{:.6},{:.5},{:.5},{:.2}\n",
            m.name,
            m.volume_ml,
            m.diameter_mm,
            m.true_bq_ml,
            m.mean_bq_ml,
            m.rc,
            curve.at(m.volume_ml),
            m.shift_mm
        ));
    }
    glandseg_core::atomic::write_bytes(&a.out.join("recovery.csv"), csv.as_bytes())?;
    glandseg_viz::save_png(
        &a.out.join("recovery.png"),
        &glandseg_dose::recovery::plot(&curve),
    )?;
    println!("sphere  volume mL  RC measured  RC fitted  centre moved mm");
    for m in &measured {
        println!(
            "{:<7} {:>9.3} {:>12.3} {:>10.3} {:>16.1}",
            m.name,
            m.volume_ml,
            m.rc,
            curve.at(m.volume_ml),
            m.shift_mm
        );
    }
    println!(
        "curve: RC = {:.3} / (1 + ({:.3} mL / V)^{:.2}); at 0.5 mL {:.3} +- {:.3}, at 10 mL {:.3} +- {:.3}",
        curve.a,
        curve.b_ml,
        curve.c,
        curve.at(0.5),
        curve.standard_error(0.5),
        curve.at(10.0),
        curve.standard_error(10.0)
    );
    if let Some(f) = fwhm {
        println!(
            "equivalent Gaussian PSF: {f:.2} mm FWHM. The curve treats each gland as a sphere \
             of its volume; the GTM (dose --pvc-fwhm-mm {f:.2}) uses the glands' own outlines \
             and corrects elongated glands (the parotid) better."
        );
    }
    println!("wrote {}", a.out.join("recovery.json").display());
    Ok(())
}

fn read_image(path: &Path, calibration: Option<f64>) -> Result<glandseg_core::Volume<f32>> {
    let name = path.to_string_lossy();
    if name.ends_with(".nii") || name.ends_with(".nii.gz") {
        return glandseg_nifti::read_volume(path).with_context(|| format!("--image {name}"));
    }
    let img = glandseg_dicom::read_activity_image(path, calibration)
        .with_context(|| format!("--image {name}"))?;
    Ok(img.volume)
}

fn spheres_csv(spheres: &[Sphere]) -> String {
    let mut s = String::from("name,x_mm,y_mm,z_mm,volume_ml,bq_ml\n");
    for sp in spheres {
        s.push_str(&format!(
            "{},{:.3},{:.3},{:.3},{:.6},{}\n",
            sp.name,
            sp.centre_lps_mm[0],
            sp.centre_lps_mm[1],
            sp.centre_lps_mm[2],
            sp.volume_ml,
            sp.bq_ml
        ));
    }
    s
}

/// Reads the sphere table; errors name the file, the line and the column.
pub fn read_spheres(path: &Path) -> Result<Vec<Sphere>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--spheres {}: cannot read", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((_, header)) = lines.next() else {
        bail!("--spheres {}: empty file", path.display());
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    let want = ["name", "x_mm", "y_mm", "z_mm", "volume_ml", "bq_ml"];
    let mut at = [0usize; 6];
    for (w, slot) in want.iter().zip(at.iter_mut()) {
        *slot = cols.iter().position(|c| c == w).with_context(|| {
            format!(
                "--spheres {}: the header has no column {w:?} (needs {})",
                path.display(),
                want.join(",")
            )
        })?;
    }
    let mut out = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(|c| c.trim()).collect();
        let get = |i: usize| -> Result<f64> {
            let s = f.get(at[i]).copied().unwrap_or("");
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| {
                    format!(
                        "--spheres {} line {}: {} is {s:?}, not a number",
                        path.display(),
                        n + 1,
                        want[i]
                    )
                })
        };
        out.push(Sphere {
            name: f.get(at[0]).copied().unwrap_or("").to_string(),
            centre_lps_mm: [get(1)?, get(2)?, get(3)?],
            volume_ml: get(4)?,
            bq_ml: get(5)?,
        });
    }
    if out.len() < 4 {
        bail!(
            "--spheres {}: {} spheres; the curve needs at least 4 of different volumes",
            path.display(),
            out.len()
        );
    }
    Ok(out)
}

/// Reads `recovery.json` (this command's output) for `dose --recovery-curve`.
pub fn read_curve(path: &Path) -> Result<RecoveryCurve> {
    #[derive(serde::Deserialize)]
    struct File {
        curve: RecoveryCurve,
    }
    let bytes = std::fs::read(path)
        .with_context(|| format!("--recovery-curve {}: cannot read", path.display()))?;
    let f: File = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "--recovery-curve {}: not a recovery.json from glandseg recovery",
            path.display()
        )
    })?;
    f.curve
        .check("curve")
        .with_context(|| format!("--recovery-curve {}", path.display()))?;
    Ok(f.curve)
}
