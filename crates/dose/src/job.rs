//! The whole computation for one patient: a label map, activity images (Bq/mL) at several
//! times on the label map's grid, a nuclide → per gland TAC, fit, TIA, organ and voxel
//! dose, DVH; and the outputs (`dose.json`, `dose.csv`, `tac.png`, `dvh.png`,
//! `report.md`).
//!
//! Voxel TIA: each voxel's own trapezoid + physical tail (or the single-time-point
//! formula), clamped at 0; inside each gland rescaled so that the gland's voxel TIAs add
//! up to the gland's fitted TIA (the fit decides how much, the images decide where). The
//! dose map is that TIA convolved with the voxel-S-value kernel ([`crate::voxel`]) in the
//! glands' bounding box grown by the kernel radius; it is 0 elsewhere.

use crate::fit::{fit_tac, hanscheid, madsen, ModelFit};
use crate::organ::{local_deposition_gy, sphere_model};
use crate::voxel::{build_kernel, convolve, cumulative_dvh, dvh, DvhCurve, KernelInfo};
use crate::{DoseError, Nuclide, Result};
use glandseg_core::{geometry::GRID_TOLERANCE, LabelMap, Volume};
use serde::Serialize;
use std::path::Path;

/// A gland whose equivalent sphere is under 2 × 10 mm FWHM across (4.2 mL) gets a caveat.
pub const SMALL_GLAND_ML: f64 = 4.19;

/// The largest voxel-S-value kernel built (voxels): 4·10⁶, a 30 mm kernel on 0.4 mm voxels.
pub const MAX_KERNEL_VOXELS: f64 = 4e6;

/// Dose steps of each gland's cumulative DVH curve (`dvh` in `dose.json`, `dvh.png`).
pub const DVH_STEPS: usize = 100;

/// One activity image and when it was taken.
pub struct TimePoint {
    /// Hours after injection.
    pub time_h: f64,
    /// Activity concentration, Bq/mL, on the label map's grid.
    pub activity: Volume<f32>,
}

/// Settings of a dose computation.
#[derive(Clone, Debug, Serialize)]
pub struct DoseOptions {
    /// The nuclide.
    pub nuclide: Nuclide,
    /// Injected activity, MBq (for Gy/GBq).
    pub injected_mbq: Option<f64>,
    /// Tissue density, g/mL.
    pub density_g_ml: f64,
    /// Population effective half-life for a single time point (Madsen); without it a
    /// single time point uses Hänscheid's formula.
    pub population_t_eff_h: Option<f64>,
    /// The images are decay-corrected to the injection time: undo it first.
    pub decay_corrected: bool,
    /// Voxel-S-value kernel truncation radius, mm.
    pub kernel_truncation_mm: f64,
    /// Relative standard uncertainty of the activity calibration (quantitative SPECT
    /// calibration factor), %: common to every time point, so it scales the TIA.
    pub calibration_uncertainty_pct: Option<f64>,
    /// Relative standard uncertainty of the gland volume (segmentation), %: enters the
    /// dose through the mass.
    pub volume_uncertainty_pct: Option<f64>,
    /// Partial-volume correction: the imaging system's PSF FWHM (mm). With it the gland
    /// activities are corrected by the geometric transfer matrix ([`crate::pvc`]) and the
    /// uncorrected numbers are reported beside.
    pub pvc_fwhm_mm: Option<f64>,
    /// Width of the PVC surround region, mm (default 2 × FWHM).
    pub pvc_surround_mm: Option<f64>,
    /// Standard uncertainty of the PVC's FWHM, mm (default 1 mm): the corrected TIA at
    /// FWHM ± this gives `pvc_uncertainty_pct`, which enters `dose_uncertainty_pct`.
    pub pvc_fwhm_uncertainty_mm: Option<f64>,
    /// Partial-volume correction from a recovery curve measured on a sphere phantom
    /// ([`crate::recovery`]): each gland's activity divided by the curve's RC at its volume.
    /// Exclusive with `pvc_fwhm_mm`. (In `dose.json` once, as the report's `recovery_curve`.)
    #[serde(skip)]
    pub recovery_curve: Option<crate::recovery::RecoveryCurve>,
}

impl DoseOptions {
    /// Defaults: density 1.0 g/mL, kernel 30 mm, images not decay-corrected.
    pub fn new(nuclide: Nuclide) -> Self {
        DoseOptions {
            nuclide,
            injected_mbq: None,
            density_g_ml: 1.0,
            population_t_eff_h: None,
            decay_corrected: false,
            kernel_truncation_mm: 30.0,
            calibration_uncertainty_pct: None,
            volume_uncertainty_pct: None,
            pvc_fwhm_mm: None,
            pvc_surround_mm: None,
            pvc_fwhm_uncertainty_mm: None,
            recovery_curve: None,
        }
    }
}

/// Everything reported for one gland.
#[derive(Clone, Debug, Serialize)]
pub struct GlandDose {
    /// Label value.
    pub label: u8,
    /// Label name.
    pub name: String,
    /// Voxels in the gland.
    pub voxels: usize,
    /// Volume, mL.
    pub volume_ml: f64,
    /// Mass (volume × density), g.
    pub mass_g: f64,
    /// Activity in the gland at each time point, MBq.
    pub activity_mbq: Vec<f64>,
    /// The chosen model (`mono_exp`, `bi_exp_uptake`, `tri_exp`, `trapezoid`,
    /// `hanscheid`, `madsen`).
    pub model: String,
    /// Effective half-life of the terminal phase, h.
    pub t_eff_h: Option<f64>,
    /// Time-integrated activity, MBq·h.
    pub tia_mbq_h: f64,
    /// Trapezoid + physical tail TIA, for comparison (multi-point only).
    pub tia_trapezoid_mbq_h: Option<f64>,
    /// Relative uncertainty of TIA and dose from the fit covariance, %.
    pub uncertainty_pct: Option<f64>,
    /// Relative uncertainty of the organ dose, %: the fit's, the calibration's and the
    /// volume's combined in quadrature (treated as independent; see the module).
    pub dose_uncertainty_pct: Option<f64>,
    /// Organ-level dose, local electron deposition, Gy.
    pub dose_gy: f64,
    /// Organ-level dose, unit-density sphere model (electrons + photon self-dose), Gy.
    pub dose_gy_sphere: f64,
    /// Mean of the voxel dose map (VSV convolution) over the gland, Gy.
    pub dose_gy_voxel_mean: Option<f64>,
    /// Organ-level dose per injected GBq, Gy/GBq.
    pub dose_gy_per_gbq: Option<f64>,
    /// Minimum dose to the hottest 2 %, Gy.
    pub d2_gy: Option<f64>,
    /// Median voxel dose, Gy.
    pub d50_gy: Option<f64>,
    /// Minimum dose to 98 % of the gland, Gy.
    pub d98_gy: Option<f64>,
    /// Share of the gland with ≥ 20 Gy, %.
    pub v20gy_pct: Option<f64>,
    /// Partial-volume correction: the gland's own recovery coefficient (GTM w_ii, or the
    /// recovery curve at the gland's volume).
    pub recovery: Option<f64>,
    /// Partial-volume correction: relative uncertainty of the corrected TIA, %. GTM: from
    /// the FWHM's uncertainty (half the spread of the trapezoid TIA of the corrected
    /// activities at FWHM ± its uncertainty, relative to the TIA at the FWHM). Recovery
    /// curve: the curve's standard error at the gland's volume relative to its RC.
    pub pvc_uncertainty_pct: Option<f64>,
    /// Partial-volume correction: activity measured in the gland before correction, MBq.
    pub activity_mbq_uncorrected: Option<Vec<f64>>,
    /// Partial-volume correction: the TIA of the uncorrected activities, MBq·h.
    pub tia_mbq_h_uncorrected: Option<f64>,
    /// Partial-volume correction: the organ dose of the uncorrected activities, Gy.
    pub dose_gy_uncorrected: Option<f64>,
    /// Why the numbers may not hold (small gland / partial volume).
    pub caveat: Option<String>,
    /// Every fitted model with its AICc.
    pub fits: Vec<ModelFit>,
    /// The cumulative DVH of the voxel dose map over the gland ([`DVH_STEPS`] + 1 doses).
    pub dvh: Option<DvhCurve>,
}

/// The report of a dose computation.
#[derive(Clone, Debug, Serialize)]
pub struct DoseReport {
    /// Settings.
    pub options: DoseOptions,
    /// Time points, h after injection.
    pub times_h: Vec<f64>,
    /// The voxel kernel used.
    pub kernel: KernelInfo,
    /// Formulas, for the reader of the JSON.
    pub method: Vec<&'static str>,
    /// Per gland (labels present in the map only).
    pub glands: Vec<GlandDose>,
    /// Labels of the map with no voxel.
    pub absent: Vec<String>,
    /// The partial-volume correction's transfer matrix, when asked for.
    pub pvc: Option<crate::pvc::Gtm>,
    /// The recovery curve applied, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_curve: Option<crate::recovery::RecoveryCurve>,
    /// The input files, when the caller names them (for the JSON and `report.md`);
    /// [`compute_dose`] leaves it None.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Sources>,
}

/// The files a dose computation read, as the caller wants them shown.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sources {
    /// The label map.
    pub labels: Option<String>,
    /// The activity image of each time point, in the order of `times_h`.
    pub activity: Vec<String>,
}

/// The voxel box `[lo, hi)` the dose map is computed in: the bounding box of the map's
/// glands grown by the kernel radius (or by the partial-volume correction's surround and
/// twice the PSF's FWHM, if more), clipped to the grid; None without any gland voxel.
/// A caller with a large grid (a CT-grid label map) can crop the labels and resample the
/// activity images onto this box only, and embed the dose map back.
pub fn region_of_interest(
    labels: &Volume<u8>,
    map: &LabelMap,
    opt: &DoseOptions,
) -> Option<([usize; 3], [usize; 3])> {
    let g = labels.geometry();
    let (lo, hi) = labels.bbox_where(|&l| l != 0 && map.name(l).is_some())?;
    // The partial-volume correction needs its surround and the PSF's reach beyond it.
    let pvc = opt
        .pvc_fwhm_mm
        .map(|f| opt.pvc_surround_mm.unwrap_or(2.0 * f) + 2.0 * f)
        .unwrap_or(0.0);
    let margin = opt.kernel_truncation_mm.max(pvc);
    let r = [0, 1, 2].map(|a| (margin / g.spacing[a]).ceil().max(0.0) as usize);
    Some((
        [0, 1, 2].map(|a| lo[a].saturating_sub(r[a])),
        [0, 1, 2].map(|a| (hi[a] + r[a]).min(g.shape[a])),
    ))
}

fn check_times(tps: &[TimePoint]) -> Result<Vec<f64>> {
    let times: Vec<f64> = tps.iter().map(|t| t.time_h).collect();
    crate::fit::check_tac(&times, &vec![0.0; times.len()])?;
    Ok(times)
}

/// Computes the report and the dose map (Gy, f32, on the label grid).
pub fn compute_dose(
    labels: &Volume<u8>,
    map: &LabelMap,
    tps: &[TimePoint],
    opt: &DoseOptions,
) -> Result<(DoseReport, Volume<f32>)> {
    let times = check_times(tps)?;
    if !(opt.density_g_ml.is_finite() && opt.density_g_ml > 0.0) {
        return Err(DoseError::invalid(
            "density",
            format!("must be > 0 g/mL, got {}", opt.density_g_ml),
        ));
    }
    if let Some(a) = opt.injected_mbq {
        if !(a.is_finite() && a > 0.0) {
            return Err(DoseError::invalid(
                "injected_mbq",
                format!("must be > 0 MBq, got {a}"),
            ));
        }
    }
    if !(opt.kernel_truncation_mm.is_finite() && opt.kernel_truncation_mm > 0.0) {
        return Err(DoseError::invalid(
            "kernel_truncation_mm",
            format!("must be > 0 mm, got {}", opt.kernel_truncation_mm),
        ));
    }
    let kernel_voxels: f64 = labels
        .geometry()
        .spacing
        .iter()
        .map(|sp| 2.0 * (opt.kernel_truncation_mm / sp).floor() + 1.0)
        .product();
    if kernel_voxels > MAX_KERNEL_VOXELS {
        return Err(DoseError::invalid(
            "kernel_truncation_mm",
            format!(
                "a {} mm kernel on {:?} mm voxels has {kernel_voxels:.0} voxels (at most \
                 {MAX_KERNEL_VOXELS:.0}): use a smaller truncation radius",
                opt.kernel_truncation_mm,
                labels.geometry().spacing
            ),
        ));
    }
    for (field, v) in [
        (
            "calibration_uncertainty_pct",
            opt.calibration_uncertainty_pct,
        ),
        ("volume_uncertainty_pct", opt.volume_uncertainty_pct),
    ] {
        if let Some(v) = v {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(DoseError::invalid(
                    field,
                    format!("must be 0-100 %, got {v}"),
                ));
            }
        }
    }
    if let Some(curve) = &opt.recovery_curve {
        if opt.pvc_fwhm_mm.is_some() {
            return Err(DoseError::invalid(
                "recovery_curve",
                "give either a recovery curve or a PSF FWHM for the GTM (pvc_fwhm_mm), not both",
            ));
        }
        curve.check("recovery_curve")?;
    }
    let g = labels.geometry();
    for tp in tps {
        if !tp.activity.geometry().same_grid(g, GRID_TOLERANCE) {
            return Err(DoseError::invalid(
                "activity",
                format!(
                    "the image at {} h is not on the label map's grid; resample it first",
                    tp.time_h
                ),
            ));
        }
    }
    let nu = &opt.nuclide;
    let lp = nu.lambda_per_h();
    let vox_ml = g.voxel_volume_ml();
    let lab = labels.as_slice();
    let nvox = lab.len();
    // Activity per voxel (MBq) at each time, decay correction undone when asked.
    let act: Vec<Vec<f64>> = tps
        .iter()
        .map(|tp| {
            let f = vox_ml
                * 1e-6
                * if opt.decay_corrected {
                    (-lp * tp.time_h).exp()
                } else {
                    1.0
                };
            tp.activity
                .as_slice()
                .iter()
                .map(|&a| a as f64 * f)
                .collect()
        })
        .collect();
    // Per-voxel TIA shape.
    let single = times.len() == 1;
    let single_factor = |t: f64| -> Result<f64> {
        Ok(match opt.population_t_eff_h {
            Some(te) => madsen(t, 1.0, te)?.tia_mbq_h,
            None => hanscheid(t, 1.0)?.tia_mbq_h,
        })
    };
    let sf = if single {
        single_factor(times[0])?
    } else {
        0.0
    };
    let mut tia_vox: Vec<f64> = (0..nvox)
        .map(|v| {
            if single {
                return (act[0][v] * sf).max(0.0);
            }
            let mut s = 0.5 * times[0] * act[0][v];
            for i in 1..times.len() {
                s += 0.5 * (times[i] - times[i - 1]) * (act[i][v] + act[i - 1][v]);
            }
            (s + act[times.len() - 1][v] / lp).max(0.0)
        })
        .collect();

    let mut glands = Vec::new();
    let mut absent = Vec::new();
    let present: Vec<(u8, &str)> = map
        .foreground()
        .filter(|(value, name)| {
            let any = lab.contains(value);
            if !any {
                absent.push(name.to_string());
            }
            any
        })
        .collect();
    // Partial-volume correction: corrected activity (MBq) per gland and time point.
    let gtm = match opt.pvc_fwhm_mm {
        Some(fwhm) => {
            let values: Vec<u8> = present.iter().map(|p| p.0).collect();
            Some(crate::pvc::Gtm::build(
                labels,
                &values,
                fwhm,
                opt.pvc_surround_mm.unwrap_or(2.0 * fwhm),
            )?)
        }
        None => None,
    };
    // Each present gland's voxels, found once (the loops below and the curve use them).
    let gland_voxels: Vec<Vec<usize>> = present
        .iter()
        .map(|&(value, _)| (0..nvox).filter(|&v| lab[v] == value).collect())
        .collect();
    // Recovery curve: each gland's RC at its volume (and the curve's standard error).
    let curve_rc: Option<Vec<(f64, f64)>> = opt.recovery_curve.as_ref().map(|c| {
        gland_voxels
            .iter()
            .map(|idx| {
                let v = idx.len() as f64 * vox_ml;
                (c.at(v).max(0.01), c.standard_error(v))
            })
            .collect()
    });
    // GTM-corrected activities per time point and gland (the recovery curve is applied
    // per gland in the loop below: measured / RC).
    let corrected: Option<Vec<Vec<f64>>> = match &gtm {
        Some(gtm) => Some(gtm.corrected_activities(labels, &act)?),
        None => None,
    };
    // The corrected activities at FWHM ± its uncertainty, for pvc_uncertainty_pct.
    // (FWHM − δ, FWHM + δ): activity per time point and gland.
    type PerTime = Vec<Vec<f64>>;
    let spread: Option<(PerTime, PerTime)> = match &gtm {
        Some(gtm) => {
            let d = opt.pvc_fwhm_uncertainty_mm.unwrap_or(1.0);
            if !(d.is_finite() && d >= 0.0 && d < gtm.fwhm_mm) {
                return Err(DoseError::invalid(
                    "pvc_fwhm_uncertainty_mm",
                    format!(
                        "must be 0 or more and below the FWHM ({} mm), got {d}",
                        gtm.fwhm_mm
                    ),
                ));
            }
            let at = |f: f64| -> Result<Vec<Vec<f64>>> {
                crate::pvc::Gtm::build(labels, &gtm.labels, f, gtm.surround_mm)?
                    .corrected_activities(labels, &act)
            };
            Some((at(gtm.fwhm_mm - d)?, at(gtm.fwhm_mm + d)?))
        }
        None => None,
    };
    // Trapezoid + physical tail of one gland's activities (the spread's TIA measure).
    let trap_tia = |a: &[f64]| -> f64 {
        let mut s = 0.5 * times[0] * a[0];
        for i in 1..times.len() {
            s += 0.5 * (times[i] - times[i - 1]) * (a[i] + a[i - 1]);
        }
        s + a[times.len() - 1] / lp
    };
    for (n_gland, &(value, name)) in present.iter().enumerate() {
        let idx = &gland_voxels[n_gland];
        let field = |e: DoseError| match e {
            DoseError::Invalid { field, msg } => {
                DoseError::invalid(format!("{name}: {field}"), msg)
            }
            e => e,
        };
        let measured: Vec<f64> = act
            .iter()
            .map(|a| idx.iter().map(|&v| a[v]).sum())
            .collect();
        let activity: Vec<f64> = match (&corrected, &curve_rc) {
            (Some(c), _) => c.iter().map(|per_t| per_t[n_gland]).collect(),
            (None, Some(rc)) => measured.iter().map(|m| m / rc[n_gland].0).collect(),
            (None, None) => measured.clone(),
        };
        let tia_of = |activity: &[f64]| -> Result<(ModelFit, Vec<ModelFit>, Option<f64>)> {
            Ok(if single {
                let f = match opt.population_t_eff_h {
                    Some(te) => madsen(times[0], activity[0], te),
                    None => hanscheid(times[0], activity[0]),
                }
                .map_err(field)?;
                (f.clone(), vec![f], None)
            } else if activity.iter().all(|&a| a <= 0.0) {
                // Nothing to fit (the images miss the gland, or it took up nothing): TIA 0.
                let zero = vec![0.0; activity.len()];
                let t = crate::fit::trapezoid(&times, &zero, nu).map_err(field)?;
                (t.clone(), vec![t], Some(0.0))
            } else {
                let tf = fit_tac(&times, activity, nu).map_err(field)?;
                let mut all = tf.candidates.clone();
                all.push(tf.trapezoid.clone());
                (tf.chosen, all, Some(tf.trapezoid.tia_mbq_h))
            })
        };
        let (chosen, all, trap) = tia_of(&activity)?;
        // A partial-volume correction (GTM or the recovery curve) changed the activity:
        // the uncorrected figures are reported beside the corrected ones.
        let pv_corrected = corrected.is_some() || curve_rc.is_some();
        let uncorrected_tia = if pv_corrected {
            Some(tia_of(&measured)?.0.tia_mbq_h)
        } else {
            None
        };
        let tia = chosen.tia_mbq_h;
        // Rescale the voxel TIAs of this gland to the fitted TIA.
        let sum: f64 = idx.iter().map(|&v| tia_vox[v]).sum();
        if sum > 0.0 {
            let s = tia.max(0.0) / sum;
            for &v in idx {
                tia_vox[v] *= s;
            }
        }
        let volume_ml = idx.len() as f64 * vox_ml;
        let mass_g = volume_ml * opt.density_g_ml;
        let dose = local_deposition_gy(nu, tia, mass_g);
        let sphere = sphere_model(nu, mass_g, opt.density_g_ml);
        let mut caveats = Vec::new();
        if activity.iter().all(|&a| a <= 0.0) {
            caveats
                .push("no positive activity measured in the gland at any time point".to_string());
        }
        let recovery = gtm
            .as_ref()
            .and_then(|g| g.recovery(value))
            .or(curve_rc.as_ref().map(|c| c[n_gland].0));
        let pvc_pct = spread
            .as_ref()
            .and_then(|(lo, hi)| {
                let per = |c: &Vec<Vec<f64>>| c.iter().map(|t| t[n_gland]).collect::<Vec<f64>>();
                let mid = trap_tia(&activity);
                (mid > 0.0)
                    .then(|| 100.0 * (trap_tia(&per(hi)) - trap_tia(&per(lo))).abs() / (2.0 * mid))
            })
            .or(curve_rc
                .as_ref()
                .map(|c| 100.0 * c[n_gland].1 / c[n_gland].0));
        // Below the curve's smallest sphere the RC is extrapolated.
        let extrapolated = opt.recovery_curve.as_ref().and_then(|c| {
            let (vmin, _) = c.volume_range();
            (volume_ml < vmin).then_some(vmin)
        });
        if name.contains("lacrimal") || volume_ml < SMALL_GLAND_ML {
            caveats.push(match recovery {
                None => format!(
                    "{volume_ml:.2} mL is at or below SPECT resolution (equivalent sphere \
                     {:.1} mm across vs ~10-15 mm FWHM): partial-volume losses bias the \
                     activity and dose low (no recovery correction applied: see --pvc-fwhm-mm \
                     or --recovery-curve); treat as indicative only",
                    2.0 * sphere.radius_mm
                ),
                Some(rc) if gtm.is_some() => format!(
                    "{volume_ml:.2} mL is at or below SPECT resolution (equivalent sphere \
                     {:.1} mm across): its recovery coefficient is {rc:.2}, so the corrected \
                     value rests on the PSF and the outline being right (a 1 mm FWHM error \
                     moves it by ~15-20 %); the uncorrected value is given beside; treat both as \
                     indicative only",
                    2.0 * sphere.radius_mm
                ),
                Some(rc) => format!(
                    "{volume_ml:.2} mL is at or below SPECT resolution (equivalent sphere \
                     {:.1} mm across): its recovery coefficient from the sphere curve is \
                     {rc:.2}{}, so the corrected value assumes the gland recovers like a \
                     sphere of its volume and that its outline is right; the uncorrected value \
                     is given beside; treat both as indicative only",
                    2.0 * sphere.radius_mm,
                    extrapolated
                        .map(|v| format!(
                            " (extrapolated: the smallest sphere measured is {v:.2} mL)"
                        ))
                        .unwrap_or_default()
                ),
            });
        }
        let caveat = (!caveats.is_empty()).then(|| caveats.join("; "));
        glands.push(GlandDose {
            label: value,
            name: name.to_string(),
            voxels: idx.len(),
            volume_ml,
            mass_g,
            activity_mbq: activity,
            model: chosen.model.as_str().to_string(),
            t_eff_h: chosen.t_eff_h,
            tia_mbq_h: tia,
            tia_trapezoid_mbq_h: trap,
            uncertainty_pct: chosen.uncertainty_pct(),
            dose_uncertainty_pct: combined_uncertainty(&[
                chosen.uncertainty_pct(),
                opt.calibration_uncertainty_pct,
                opt.volume_uncertainty_pct,
                pvc_pct,
            ]),
            dose_gy: dose,
            dose_gy_sphere: tia * sphere.s_gy_per_mbq_h,
            dose_gy_voxel_mean: None,
            dose_gy_per_gbq: opt.injected_mbq.map(|a| dose / (a / 1000.0)),
            d2_gy: None,
            d50_gy: None,
            d98_gy: None,
            v20gy_pct: None,
            recovery,
            pvc_uncertainty_pct: pvc_pct,
            activity_mbq_uncorrected: pv_corrected.then(|| measured.clone()),
            tia_mbq_h_uncorrected: uncorrected_tia,
            dose_gy_uncorrected: uncorrected_tia.map(|t| local_deposition_gy(nu, t, mass_g)),
            caveat,
            fits: all,
            dvh: None,
        });
    }

    // Voxel dose in the glands' box grown by the kernel radius.
    let kernel = build_kernel(nu, g.spacing, opt.density_g_ml, opt.kernel_truncation_mm);
    let mut dose_map = vec![0f32; nvox];
    if let Some((lo, hi)) = region_of_interest(labels, map, opt) {
        let shape = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
        let [nx, ny, _] = g.shape;
        let at = |i: usize, j: usize, k: usize| i + nx * (j + ny * k);
        let mut sub = Vec::with_capacity(shape.iter().product());
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    sub.push(tia_vox[at(i, j, k)]);
                }
            }
        }
        let d = convolve(&sub, shape, &kernel);
        let mut n = 0;
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    // FFT round-off leaves ±1e-17 Gy where the dose is 0.
                    dose_map[at(i, j, k)] = d[n].max(0.0) as f32;
                    n += 1;
                }
            }
        }
    }
    for gd in &mut glands {
        let doses: Vec<f64> = (0..nvox)
            .filter(|&v| lab[v] == gd.label)
            .map(|v| dose_map[v] as f64)
            .collect();
        if let Some(h) = dvh(&doses) {
            gd.dose_gy_voxel_mean = Some(h.mean_gy);
            gd.d2_gy = Some(h.d2_gy);
            gd.d50_gy = Some(h.d50_gy);
            gd.d98_gy = Some(h.d98_gy);
            gd.v20gy_pct = Some(h.v20gy_pct);
        }
        gd.dvh = cumulative_dvh(&doses, DVH_STEPS);
    }
    let report = DoseReport {
        options: opt.clone(),
        times_h: times,
        kernel: kernel.info(nu, opt.density_g_ml),
        method: vec![
            "TIA (MBq h): AICc-chosen fit of mono_exp A0 e^(-l t), bi_exp_uptake A (e^(-l1 t) - e^(-l2 t)), tri_exp; rates >= physical decay; trapezoid from A(0)=0 + A(tn)/l_phys for comparison",
            "single time point: Hanscheid TIA = A(t) 2t/ln2; Madsen TIA = A(t) e^(l_eff t)/l_eff",
            "dose_gy = TIA * E_e[MeV] * 1.602e-13 J/MeV * 3.6e9 /(MBq h) / 1e-3 kg/g / mass_g (local electron deposition)",
            "dose_gy_sphere = TIA * (phi_e k_e + phi_g k_g) / mass_g, unit-density sphere, straight-line electrons, exp(-mu_en 3R/4) photons",
            "dose map: voxel TIA (per-voxel trapezoid, rescaled to the gland TIA) convolved (FFT) with a voxel-S-value kernel (local electrons + photon point kernel, truncated)",
            "uncertainty_pct: TIA standard deviation from the fit covariance (delta method) only",
            "dose_uncertainty_pct: sqrt(fit^2 + calibration^2 + volume^2 + pvc^2), components treated as independent (a simplified EANM 2018 propagation)",
            "pvc: geometric transfer matrix of the glands and a surround region, Gaussian PSF of pvc_fwhm_mm on the label grid; pvc_uncertainty_pct from the corrected TIA at FWHM -/+ pvc_fwhm_uncertainty_mm",
            "recovery curve (instead of the GTM): activity / RC(volume), RC(V) = a / (1 + (b/V)^c) fitted to sphere-phantom recoveries; pvc_uncertainty_pct = the curve's standard error at the gland's volume / RC",
        ],
        glands,
        absent,
        pvc: gtm,
        recovery_curve: opt.recovery_curve.clone(),
        sources: None,
    };
    let vol = Volume::from_vec(g.clone(), dose_map)?;
    Ok((report, vol))
}

/// √(fit² + calibration² + volume² + pvc²) over the components that are known (%); None
/// when none is. The calibration factor is common to all time points, so its relative
/// uncertainty carries into the TIA unchanged; the volume's enters through the mass; the
/// PVC's is the corrected TIA's sensitivity to the FWHM. Independence is assumed: the
/// EANM guidance (Gear et al. 2018) also correlates volume and recovered activity, which
/// this leaves out.
pub fn combined_uncertainty(parts_pct: &[Option<f64>]) -> Option<f64> {
    let parts: Vec<f64> = parts_pct.iter().flatten().copied().collect();
    (!parts.is_empty()).then(|| parts.iter().map(|p| p * p).sum::<f64>().sqrt())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.6}")).unwrap_or_default()
}

/// Writes `dose.json`, `dose.csv`, `tac.png`, `dvh.png` and `report.md` into `dir`, each
/// atomically.
pub fn write_outputs(dir: &Path, report: &DoseReport) -> Result<()> {
    glandseg_core::atomic::write_json(&dir.join("dose.json"), report)?;
    let mut s = String::from(
        "label,name,volume_ml,mass_g,model,t_eff_h,tia_mbq_h,tia_trapezoid_mbq_h,uncertainty_pct,dose_uncertainty_pct,\
         dose_gy,dose_gy_sphere,dose_gy_voxel_mean,dose_gy_per_gbq,d2_gy,d50_gy,d98_gy,v20gy_pct,\
         recovery,pvc_uncertainty_pct,tia_mbq_h_uncorrected,dose_gy_uncorrected,caveat\n",
    );
    for g in &report.glands {
        s.push_str(&format!(
            "{},{},{:.4},{:.4},{},{},{:.6},{},{},{},{:.6},{:.6},{},{},{},{},{},{},{},{},{},{},\"{}\"\n",
            g.label,
            g.name,
            g.volume_ml,
            g.mass_g,
            g.model,
            opt(g.t_eff_h),
            g.tia_mbq_h,
            opt(g.tia_trapezoid_mbq_h),
            opt(g.uncertainty_pct),
            opt(g.dose_uncertainty_pct),
            g.dose_gy,
            g.dose_gy_sphere,
            opt(g.dose_gy_voxel_mean),
            opt(g.dose_gy_per_gbq),
            opt(g.d2_gy),
            opt(g.d50_gy),
            opt(g.d98_gy),
            opt(g.v20gy_pct),
            opt(g.recovery),
            opt(g.pvc_uncertainty_pct),
            opt(g.tia_mbq_h_uncorrected),
            opt(g.dose_gy_uncorrected),
            g.caveat.clone().unwrap_or_default().replace('"', "'"),
        ));
    }
    glandseg_core::atomic::write_bytes(&dir.join("dose.csv"), s.as_bytes())?;
    glandseg_viz::save_png(&dir.join("tac.png"), &crate::plot::tac_plot(report))?;
    glandseg_viz::save_png(&dir.join("dvh.png"), &crate::plot::dvh_plot(report))?;
    glandseg_core::atomic::write_bytes(
        &dir.join("report.md"),
        crate::report::markdown(report).as_bytes(),
    )?;
    Ok(())
}
