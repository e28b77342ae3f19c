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
    /// An activity image at a time after injection: HOURS=PATH (NIfTI in Bq/mL, or DICOM)
    /// or PATH alone for DICOM (an NM file, or a folder with one NM image or one PET
    /// series: the hours come from the acquisition and injection times in the header).
    /// Any grid: resampled onto the label map's, trilinear. Repeat for each time point
    /// (HOURS=PATH in time order); one time point uses Hänscheid's (or, with
    /// --population-t-eff, Madsen's) single-time-point formula.
    #[arg(long = "activity", value_name = "[HOURS=]PATH", required = true)]
    activity: Vec<String>,
    /// SPECT calibration factor in counts per second per MBq, for DICOM NM images that
    /// hold counts (no Real World Value Mapping to Bq/ml, Units not BQML).
    #[arg(long = "calibration-cps-per-mbq")]
    calibration_cps_per_mbq: Option<f64>,
    /// The CT series (DICOM folder) the label map is on: dose_map is also written as
    /// rtdose.dcm in its study and Frame of Reference (without it, rtdose.dcm stands
    /// alone with a new Frame of Reference).
    #[arg(long = "ct-dicom")]
    ct_dicom: Option<PathBuf>,
    /// The CT the label map was drawn on (NIfTI, or a DICOM folder with one CT series):
    /// with --ct, each time point's CT is registered onto it (rigid) and its activity
    /// image moved along.
    #[arg(long = "reference-ct")]
    reference_ct: Option<PathBuf>,
    /// A time point's own CT (SPECT/CT: the low-dose CT in the SPECT's frame), HOURS=PATH
    /// with the HOURS of its --activity; NIfTI or a DICOM folder. Registered rigidly onto
    /// --reference-ct (normalised cross-correlation of HU around the glands, 4 then 2 mm);
    /// the transforms are written to registration.json. Time points without --ct are taken
    /// as already registered.
    #[arg(long = "ct", value_name = "HOURS=PATH")]
    ct: Vec<String>,
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
    /// Partial-volume correction: the SPECT's (or PET's) resolution as FWHM in mm. The
    /// gland activities are corrected by the geometric transfer matrix of the label map
    /// blurred by a Gaussian of this FWHM; the uncorrected TIA and dose are reported beside.
    #[arg(long = "pvc-fwhm-mm")]
    pvc_fwhm_mm: Option<f64>,
    /// Width (mm) of the surround region of the partial-volume correction (default
    /// 2 x FWHM).
    #[arg(long = "pvc-surround-mm")]
    pvc_surround_mm: Option<f64>,
    /// Standard uncertainty of --pvc-fwhm-mm in mm (default 1): the corrected TIA at
    /// FWHM +/- this gives pvc_uncertainty_pct, added in quadrature to dose_uncertainty_pct.
    #[arg(long = "pvc-fwhm-uncertainty-mm")]
    pvc_fwhm_uncertainty_mm: Option<f64>,
    /// Partial-volume correction from a recovery curve measured on a sphere phantom
    /// (`recovery.json` from `glandseg recovery`): each gland's activity is divided by the
    /// curve's recovery coefficient at the gland's volume. Instead of --pvc-fwhm-mm.
    #[arg(long = "recovery-curve", conflicts_with = "pvc_fwhm_mm")]
    recovery_curve: Option<PathBuf>,
    /// Output folder: dose.json, dose.csv, dose_map.nii.gz, rtdose.dcm, tac.png, dvh.png,
    /// report.md.
    #[arg(long, short)]
    out: PathBuf,
    /// A dataset.json whose "labels" name the classes (default: glandseg's label map).
    #[arg(long = "label-names")]
    label_names: Option<PathBuf>,
}

/// A NIfTI file by its name; anything else (a folder, `.dcm`, no extension) is DICOM.
fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy().to_ascii_lowercase();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

/// `24=path.nii.gz` → (Some(24.0), path); `dicom/NM` → (None, path) for DICOM only.
fn parse_activity(s: &str) -> Result<(Option<f64>, PathBuf)> {
    let Some((t, p)) = s.split_once('=') else {
        let p = PathBuf::from(s);
        if !s.is_empty() && !is_nifti(&p) && p.exists() {
            return Ok((None, p));
        }
        bail!("--activity {s:?}: expected HOURS=PATH, e.g. 24=A24.nii.gz, or an existing DICOM file or folder alone (its header gives the time)");
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
    Ok((Some(t), PathBuf::from(p)))
}

/// One --activity input once read: its time, the image (Bq/mL at the scan time) and, for
/// DICOM, the injected MBq and half-life of its header.
struct Input {
    time_h: f64,
    path: PathBuf,
    image: Volume<f32>,
    injected_mbq: Option<f64>,
    half_life_s: Option<f64>,
}

/// Reads one --activity input (NIfTI as it is; DICOM through its header).
fn read_input(
    t: Option<f64>,
    path: &Path,
    calibration: Option<f64>,
    nuclide: &Nuclide,
) -> Result<Input> {
    let shown = |t: Option<f64>| match t {
        Some(t) => format!("--activity {t}={}", path.display()),
        None => format!("--activity {}", path.display()),
    };
    if !path.exists() {
        bail!("{}: file not found", shown(t));
    }
    if is_nifti(path) {
        let image = glandseg_nifti::read_volume(path).with_context(|| shown(t))?;
        return Ok(Input {
            time_h: t.expect("NIfTI inputs carry HOURS="),
            path: path.to_path_buf(),
            image,
            injected_mbq: None,
            half_life_s: None,
        });
    }
    let img = glandseg_dicom::read_activity_image(path, calibration).with_context(|| shown(t))?;
    let time_h = match t {
        Some(t) => t,
        None => img.hours_after_injection().with_context(|| shown(t))?,
    };
    let mut image = img.volume;
    // ADMIN: decay-corrected to the injection; undo it (the fits expect scan-time activity).
    if img.decay_correction.as_deref() == Some("ADMIN") {
        let f = (-nuclide.lambda_per_h() * time_h).exp() as f32;
        image.as_slice_mut().iter_mut().for_each(|v| *v *= f);
    }
    eprintln!(
        "{}: {} at {time_h:.2} h after injection, {}",
        path.display(),
        img.modality,
        img.units_source
    );
    Ok(Input {
        time_h,
        path: path.to_path_buf(),
        image,
        injected_mbq: img.injected_mbq,
        half_life_s: img.half_life_s,
    })
}

/// A CT from a NIfTI file or a DICOM folder holding one CT series (HU).
fn read_ct(path: &Path, what: &str) -> Result<Volume<f32>> {
    if !path.exists() {
        bail!("{what} {}: file not found", path.display());
    }
    if is_nifti(path) {
        return glandseg_nifti::read_volume(path)
            .with_context(|| format!("{what} {}", path.display()));
    }
    let scan = glandseg_dicom::series::scan_folder(path)
        .with_context(|| format!("{what} {}", path.display()))?;
    let cts: Vec<_> = scan.series.iter().filter(|s| s.modality == "CT").collect();
    match cts.as_slice() {
        [one] => Ok(glandseg_dicom::series::load_series(one)
            .with_context(|| format!("{what} {}", path.display()))?
            .volume),
        [] => bail!("{what} {}: no CT series in the folder", path.display()),
        many => bail!(
            "{what} {}: {} CT series in the folder; give the folder of one",
            path.display(),
            many.len()
        ),
    }
}

/// One time point's rigid registration, as written to registration.json.
#[derive(serde::Serialize)]
struct Registered {
    time_h: f64,
    ct: String,
    #[serde(flatten)]
    result: glandseg_ops::register::RigidResult,
    /// Largest displacement within 60 mm of the region's centre, mm.
    max_displacement_mm: f64,
}

/// The activity image `v` (from `path`) on the dose region's grid (`labels`: the cropped
/// label map; `full`: the whole label grid; `region`: the crop).
fn on_grid(
    v: Volume<f32>,
    path: &Path,
    labels: &Volume<u8>,
    full: &Geometry,
    region: ([usize; 3], [usize; 3]),
) -> Result<Volume<f32>> {
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
    if let Some(c) = a.calibration_cps_per_mbq {
        anyhow::ensure!(
            c.is_finite() && c > 0.0,
            "--calibration-cps-per-mbq must be > 0, got {c}"
        );
    }
    let parsed: Vec<(Option<f64>, PathBuf)> = a
        .activity
        .iter()
        .map(|s| parse_activity(s))
        .collect::<Result<_>>()?;
    // Explicit times must come in order; header times are sorted.
    let explicit: Vec<(f64, &PathBuf)> = parsed
        .iter()
        .filter_map(|(t, p)| t.map(|t| (t, p)))
        .collect();
    for w in explicit.windows(2) {
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
    let mut inputs: Vec<Input> = parsed
        .iter()
        .map(|(t, p)| read_input(*t, p, a.calibration_cps_per_mbq, &nuclide))
        .collect::<Result<_>>()?;
    inputs.sort_by(|x, y| x.time_h.total_cmp(&y.time_h));
    for w in inputs.windows(2) {
        if w[1].time_h == w[0].time_h {
            bail!(
                "--activity: {} and {} are both at {:.3} h after injection; give each time point once",
                w[0].path.display(),
                w[1].path.display(),
                w[0].time_h
            );
        }
    }
    // The headers' half-life must be the nuclide's: a Tc-99m or Ga-68 study given as
    // Lu-177 would integrate the wrong decay.
    for i in &inputs {
        if let Some(hl) = i.half_life_s {
            let want = nuclide.half_life_h * 3600.0;
            anyhow::ensure!(
                (hl / want - 1.0).abs() < 0.02,
                "--nuclide {}: {} says the radionuclide half-life (0018,1075) is {hl} s, {} has {want:.0} s",
                a.nuclide,
                i.path.display(),
                nuclide.name
            );
        }
    }
    // Injected activity: the user's, else the headers' (all alike).
    let header_mbq: Vec<f64> = inputs.iter().filter_map(|i| i.injected_mbq).collect();
    let injected_mbq = match (a.injected_mbq, header_mbq.first()) {
        (Some(m), Some(h)) => {
            if (m / h - 1.0).abs() > 0.01 {
                eprintln!(
                    "note: --injected-mbq {m} differs from the DICOM header's {h} MBq; using {m}"
                );
            }
            Some(m)
        }
        (Some(m), None) => Some(m),
        (None, Some(&h)) => {
            if header_mbq.iter().any(|x| (x / h - 1.0).abs() > 0.01) {
                bail!("--injected-mbq: the DICOM headers disagree on the injected activity ({header_mbq:?} MBq); give it");
            }
            Some(h)
        }
        (None, None) => None,
    };
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
    let cts: Vec<(f64, PathBuf)> =
        a.ct.iter()
            .map(|s| match parse_activity(s) {
                Ok((Some(t), p)) => Ok((t, p)),
                _ => bail!("--ct {s:?}: expected HOURS=PATH with the HOURS of an --activity"),
            })
            .collect::<Result<_>>()?;
    if !cts.is_empty() && a.reference_ct.is_none() {
        bail!("--ct needs --reference-ct: the CT the label map was drawn on, to register onto");
    }
    for (t, p) in &cts {
        if !inputs.iter().any(|i| (i.time_h - t).abs() <= 0.5) {
            bail!(
                "--ct {t}={}: no --activity at {t} h (within 0.5 h); the activity times are {:?}",
                p.display(),
                inputs
                    .iter()
                    .map(|i| (i.time_h * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            );
        }
    }
    let map = crate::label_map(a.label_names.as_deref())?;
    let full_labels = glandseg_nifti::read_labels(&a.labels).context("--labels")?;
    let mut opt = DoseOptions::new(nuclide);
    opt.injected_mbq = injected_mbq;
    opt.density_g_ml = a.density;
    opt.population_t_eff_h = a.population_t_eff;
    opt.decay_corrected = a.decay_corrected;
    opt.kernel_truncation_mm = a.kernel_mm;
    opt.calibration_uncertainty_pct = a.calibration_uncertainty_pct;
    opt.volume_uncertainty_pct = a.volume_uncertainty_pct;
    opt.pvc_fwhm_mm = a.pvc_fwhm_mm;
    opt.pvc_surround_mm = a.pvc_surround_mm;
    opt.pvc_fwhm_uncertainty_mm = a.pvc_fwhm_uncertainty_mm;
    if let Some(p) = &a.recovery_curve {
        opt.recovery_curve = Some(crate::recovery::read_curve(p)?);
    }
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
    let sources = glandseg_dose::Sources {
        labels: Some(a.labels.display().to_string()),
        activity: inputs
            .iter()
            .map(|i| i.path.display().to_string())
            .collect(),
    };
    // Rigid registration of each time point's CT onto the reference CT, in the dose region
    // grown by 40 mm (the skull around the glands), the activity image moved along.
    let mut registered = Vec::new();
    if let Some(ref_path) = &a.reference_ct {
        let reference = read_ct(ref_path, "--reference-ct")?;
        let pad = [0, 1, 2].map(|ax| (40.0 / reference.geometry().spacing[ax]).ceil() as usize);
        // The dose region in the reference CT's voxels (the label map may be on another grid).
        let corners = full.crop(lo, hi)?.corners();
        let mut rlo = [usize::MAX; 3];
        let mut rhi = [0usize; 3];
        for c in corners {
            let ijk = reference.geometry().world_to_index(c);
            for ax in 0..3 {
                let n = reference.geometry().shape[ax];
                let l = (ijk[ax].floor().max(0.0) as usize)
                    .saturating_sub(pad[ax])
                    .min(n - 1);
                let h = ((ijk[ax].ceil().max(0.0) as usize) + 1 + pad[ax]).min(n);
                rlo[ax] = rlo[ax].min(l);
                rhi[ax] = rhi[ax].max(h);
            }
        }
        anyhow::ensure!(
            (0..3).all(|ax| rhi[ax] > rlo[ax] + 1),
            "--reference-ct {}: the label map's glands lie outside this CT",
            ref_path.display()
        );
        for (t, ct_path) in &cts {
            let i = inputs
                .iter_mut()
                .min_by(|x, y| (x.time_h - t).abs().total_cmp(&(y.time_h - t).abs()))
                .expect("matched above");
            let moving = read_ct(ct_path, &format!("--ct {t}="))?;
            let result = glandseg_ops::register::register_rigid(
                &reference,
                &moving,
                (rlo, rhi),
                &Default::default(),
            )
            .map_err(|e| anyhow::anyhow!("--ct {t}={}: {e}", ct_path.display()))?;
            let tr = &result.transform;
            eprintln!(
                "{}: registered onto {}: translation {:.1?} mm, rotation {:.1?} degrees, NCC {:.3} -> {:.3}",
                ct_path.display(),
                ref_path.display(),
                tr.translation_mm,
                tr.rotation_deg,
                result.ncc_before,
                result.ncc_after
            );
            let moved = tr.move_geometry(i.image.geometry());
            i.image.set_geometry(moved)?;
            registered.push(Registered {
                time_h: i.time_h,
                ct: ct_path.display().to_string(),
                max_displacement_mm: tr.max_displacement_mm(60.0),
                result,
            });
        }
    }
    let tps: Vec<TimePoint> = inputs
        .into_iter()
        .map(|i| {
            Ok(TimePoint {
                time_h: i.time_h,
                activity: on_grid(i.image, &i.path, &labels, &full, (lo, hi))?,
            })
        })
        .collect::<Result<_>>()?;
    let (mut report, dose_box) = glandseg_dose::compute_dose(&labels, &map, &tps, &opt)?;
    report.sources = Some(sources);
    glandseg_dose::write_outputs(&a.out, &report)?;
    if !registered.is_empty() {
        glandseg_core::atomic::write_json(&a.out.join("registration.json"), &registered)
            .context("writing registration.json")?;
    }
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
    let source = match &a.ct_dicom {
        Some(dir) => Some(ct_source(dir, &full)?),
        None => None,
    };
    glandseg_dicom::write_rtdose(
        &a.out.join("rtdose.dcm"),
        &dose_map,
        source.as_ref(),
        "glandseg absorbed dose (Gy)",
    )?;
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
    println!(
        "written: {} (and dose.json, dose.csv, dose_map.nii.gz, rtdose.dcm, tac.png, dvh.png)",
        a.out.join("report.md").display()
    );
    Ok(())
}

/// The CT series in `dir` as the RTDOSE's source; its grid must be the label map's.
fn ct_source(dir: &Path, labels: &Geometry) -> Result<glandseg_dicom::SourceSeries> {
    let scan = glandseg_dicom::scan_folder(dir)
        .with_context(|| format!("--ct-dicom {}", dir.display()))?;
    let cts: Vec<_> = scan.series.iter().filter(|s| s.modality == "CT").collect();
    let [ct] = cts.as_slice() else {
        bail!(
            "--ct-dicom {}: expected one CT series, found {}",
            dir.display(),
            cts.len()
        );
    };
    let loaded =
        glandseg_dicom::load_series(ct).with_context(|| format!("--ct-dicom {}", dir.display()))?;
    if !loaded.volume.geometry().same_grid(labels, 1e-3) {
        bail!(
            "--ct-dicom {}: the CT's grid is not the label map's (the RTDOSE is written on the label map's grid and must share the CT's frame of reference)",
            dir.display()
        );
    }
    Ok(glandseg_dicom::SourceSeries::from_loaded(&loaded)?)
}
