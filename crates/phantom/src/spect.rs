//! Quantitative SPECT/CT time series of a phantom case, for checking gland dosimetry
//! (`glandseg dose`) end to end (issue #14): the case's CT and labels, and SPECT activity
//! images at several times after a therapy injection (Lu-177 PSMA by default), with known
//! kinetics per gland, so that the true time-integrated activity (TIA) and absorbed dose
//! of every gland are known exactly.
//!
//! How the images are made, per time point t (h after injection):
//!
//! 1. **Truth on the CT grid.** Each gland holds its activity A_g(t) spread evenly over its
//!    label voxels (so the truth is defined on the same voxels `dose` measures on):
//!    A_g(t) = f_g·A_inj·(e^(−λ_eff t) − e^(−λ_up t)), λ = ln2/T (effective half-lives,
//!    physical decay included), with a per-gland amplitude f_g (a fraction of the injected
//!    activity, drawn per gland as a concentration × the gland's label volume × the
//!    patient's uptake factor), T_eff and an uptake half-life T_up. Everything else holds
//!    the PET phantom's non-gland tissue uptake (the anatomy painted again without the
//!    glands, in SUV) × A_inj/weight × r(t), r(t) = 0.3·e^(−ln2 t/4 h) + 0.2·e^(−ln2 t/60 h)
//!    (blood-pool wash-out, slow soft-tissue clearance).
//! 2. **Resolution.** A Gaussian PSF of FWHM 10-15 mm (drawn per case unless given), as a
//!    Lu-177 SPECT with a medium-energy collimator and OSEM with resolution recovery has.
//! 3. **Grid.** Sampled on the SPECT's own isotropic grid (4.8 mm unless given: a 128²
//!    matrix over a 614 mm field of view), aligned with the CT's field of view. CT and
//!    SPECT share one frame of reference and the patient does not move between time
//!    points (the time points are registered by construction: `dose` does no registration).
//! 4. **Noise.** Counts per voxel N = C·A_voxel·T_acq (C the system's calibration factor
//!    in counts per second per MBq, T_acq the acquisition time); reconstructed noise
//!    N + k·√N·ε, ε ~ N(0, 1), k = 2 (OSEM amplifies Poisson noise), clamped at 0 (OSEM
//!    images are non-negative). Then back to activity with the same C and T_acq.
//!
//! **Units written**: the NIfTI images hold **Bq/mL at the scan time** (calibrated with C,
//! not decay-corrected): `glandseg dose --activity HOURS=PATH` reads them as they are. The
//! calibration factor C (cps/MBq) and T_acq are recorded in the metadata, as is every
//! gland's truth: kinetics, activity at each time point, TIA (MBq·h, analytic) and the
//! local-deposition dose (Gy) on the label mask (mass = label volume × 1 g/mL).

use crate::{case_rng, PhantomCase};
use glandseg_core::{Geometry, Volume};
use glandseg_ops::filter::{fwhm_to_sigma, gaussian_blur_mm};
use glandseg_ops::resample::{resample, Interpolation};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::f64::consts::LN_2;

/// Reconstruction noise amplification over Poisson (see the module).
pub const NOISE_AMPLIFICATION: f64 = 2.0;

/// How the SPECT series is acquired.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpectConfig {
    /// Hours after injection, strictly increasing.
    pub timepoints_h: Vec<f64>,
    /// Nuclide name (`Lu-177`; any nuclide `glandseg-dose` knows).
    pub nuclide: String,
    /// Physical half-life of the nuclide, h (every effective half-life is at most this).
    pub half_life_h: f64,
    /// Electron energy per decay, MeV (for the true local-deposition dose).
    pub electron_mev: f64,
    /// Injected activity, MBq.
    pub injected_mbq: f64,
    /// PSF FWHM in mm; None: drawn per case from 10-15 mm.
    pub fwhm_mm: Option<f64>,
    /// SPECT voxel size, mm (isotropic).
    pub voxel_mm: f64,
    /// System calibration factor, counts per second per MBq.
    pub calibration_cps_per_mbq: f64,
    /// Acquisition time per time point, s.
    pub acquisition_s: f64,
    /// Add counting noise.
    pub noise: bool,
}

impl SpectConfig {
    /// Lu-177 (T½ 6.647 d, 0.147924 MeV electrons per decay, ICRP-107), 7400 MBq, 4.8 mm
    /// voxels, 9.3 cps/MBq (a dual-head camera, medium-energy collimator, 208 keV ±10 %),
    /// 30 min per time point, noise on.
    pub fn lu177(timepoints_h: Vec<f64>) -> Self {
        SpectConfig {
            timepoints_h,
            nuclide: "Lu-177".into(),
            half_life_h: 6.647 * 24.0,
            electron_mev: 0.147924,
            injected_mbq: 7400.0,
            fwhm_mm: None,
            voxel_mm: 4.8,
            calibration_cps_per_mbq: 9.3,
            acquisition_s: 1800.0,
            noise: true,
        }
    }

    /// Checks the settings; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        if self.timepoints_h.is_empty() {
            return Err("--timepoints: give at least one time in hours".into());
        }
        for w in self.timepoints_h.windows(2) {
            if w[1] <= w[0] {
                return Err(format!(
                    "--timepoints: {} h after {} h: times must be strictly increasing",
                    w[1], w[0]
                ));
            }
        }
        if let Some(t) = self
            .timepoints_h
            .iter()
            .find(|t| !(t.is_finite() && **t > 0.0 && **t <= 24.0 * 365.0))
        {
            return Err(format!("--timepoints: {t} h is not a time after injection"));
        }
        let pos = |v: f64| v.is_finite() && v > 0.0;
        if !pos(self.injected_mbq) {
            return Err(format!("--injected-mbq: {} must be > 0", self.injected_mbq));
        }
        if !(self.voxel_mm.is_finite() && (1.0..=20.0).contains(&self.voxel_mm)) {
            return Err(format!(
                "--spect-voxel-mm: {} must be 1-20 mm",
                self.voxel_mm
            ));
        }
        if let Some(f) = self.fwhm_mm {
            if !(f.is_finite() && (1.0..=40.0).contains(&f)) {
                return Err(format!("--spect-fwhm-mm: {f} must be 1-40 mm"));
            }
        }
        if !pos(self.calibration_cps_per_mbq) || !pos(self.acquisition_s) {
            return Err("calibration factor and acquisition time must be > 0".into());
        }
        Ok(())
    }
}

/// One gland's kinetics and its truth.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GlandKinetics {
    pub name: String,
    pub label: u8,
    /// Amplitude f of A(t) = f·A_inj·(e^(−λ_eff t) − e^(−λ_up t)), fraction of injected.
    pub uptake_fraction: f64,
    /// Effective (clearance) half-life, h.
    pub t_eff_h: f64,
    /// Uptake half-life, h.
    pub t_uptake_h: f64,
    /// Label volume on the CT grid, mL (the activity fills exactly these voxels).
    pub label_volume_ml: f64,
    /// label_volume_ml × 1 g/mL.
    pub mass_g: f64,
    /// True activity in the gland at each time point, MBq.
    pub activity_mbq: Vec<f64>,
    /// True time-integrated activity, MBq·h: f·A_inj·(1/λ_eff − 1/λ_up).
    pub true_tia_mbq_h: f64,
    /// True local-deposition absorbed dose, Gy: TIA × E_e × 1.602e-13 × 3.6e9 / 1e-3 / mass.
    pub true_dose_gy: f64,
}

impl GlandKinetics {
    fn activity(&self, injected_mbq: f64, t: f64) -> f64 {
        let (le, lu) = (LN_2 / self.t_eff_h, LN_2 / self.t_uptake_h);
        self.uptake_fraction * injected_mbq * ((-le * t).exp() - (-lu * t).exp())
    }
}

/// The SPECT series' acquisition facts and the truth, in the case's metadata (`spect`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpectMeta {
    pub nuclide: String,
    /// Physical half-life, h.
    pub half_life_h: f64,
    pub injected_mbq: f64,
    pub timepoints_h: Vec<f64>,
    /// FWHM of the Gaussian PSF applied to the truth, mm.
    pub psf_fwhm_mm: f64,
    /// The resolution the images show once resampled (trilinear) onto a finer grid, as
    /// `glandseg dose` does onto the label map's: the PSF combined with the linear
    /// interpolation between SPECT voxels (a triangle of variance v²/6 per axis),
    /// √(FWHM² + 8 ln2 · v²/6). This, not `psf_fwhm_mm`, is what a line-source measurement
    /// in the resampled images gives, and what `dose --pvc-fwhm-mm` must be told.
    pub effective_fwhm_mm: f64,
    pub spacing_mm: [f64; 3],
    pub shape: [usize; 3],
    pub origin_lps_mm: [f64; 3],
    /// What the image values are.
    pub units: String,
    pub calibration_cps_per_mbq: f64,
    pub acquisition_s: f64,
    pub noise: bool,
    pub noise_amplification: f64,
    /// r(t) of the non-gland tissue: (weight, half-life h) per exponential.
    pub background_kinetics: Vec<(f64, f64)>,
    /// Image files per time point (relative to the dataset folder), when written.
    #[serde(default)]
    pub files: Vec<String>,
    pub glands: Vec<GlandKinetics>,
}

/// A case's SPECT images (Bq/mL at scan time, on the SPECT grid), one per time point.
pub struct SpectSeries {
    pub images: Vec<Volume<f32>>,
    pub meta: SpectMeta,
}

/// r(t) of the non-gland tissue: (weight, effective half-life h).
const BACKGROUND: [(f64, f64); 2] = [(0.3, 4.0), (0.2, 60.0)];

/// Per-gland draws: (concentration range in fraction of injected per mL, T_eff range h,
/// T_uptake range h). Lu-177 PSMA: parotid ~0.55 Gy/GBq, submandibular ~0.5 Gy/GBq,
/// lacrimal 0.4-3.8 Gy/GBq in the literature; T_eff ~30-45 h.
fn kinetics_range(name: &str) -> ([f64; 2], [f64; 2], [f64; 2]) {
    if name.starts_with("parotid") {
        ([0.9e-4, 1.3e-4], [35.0, 45.0], [1.0, 3.0])
    } else if name.starts_with("submandibular") {
        ([1.0e-4, 1.4e-4], [30.0, 40.0], [1.0, 3.0])
    } else {
        ([3.0e-4, 5.0e-4], [25.0, 35.0], [0.5, 2.0])
    }
}

/// Builds the SPECT series of a case: `background` is the non-gland uptake (SUV) on the CT
/// grid from [`crate::generate_case_inner`].
pub(crate) fn spect_series(
    case: &PhantomCase,
    background: &Volume<f32>,
    cfg: &crate::PhantomConfig,
    sc: &SpectConfig,
) -> SpectSeries {
    let m = &case.meta;
    let mut rng = case_rng(cfg.seed, m.index, 11);
    let fwhm = sc.fwhm_mm.unwrap_or_else(|| rng.random_range(10.0..15.0));
    let ct_grid = case.labels.geometry().clone();
    let k_e = sc.electron_mev * 1.602_176_634e-13 * 3.6e9 / 1e-3;
    let lp = LN_2 / sc.half_life_h;
    let glands: Vec<GlandKinetics> = m
        .glands
        .iter()
        .map(|g| {
            let (conc, teff, tup) = kinetics_range(&g.name);
            let c = rng.random_range(conc[0]..conc[1]) * m.scan.uptake_factor.max(0.1);
            // Effective half-lives never exceed the physical one.
            let t_eff = rng
                .random_range(teff[0]..teff[1])
                .min(sc.half_life_h * 0.999);
            let t_up = rng.random_range(tup[0]..tup[1]);
            let f = c * g.label_volume_ml;
            let mut k = GlandKinetics {
                name: g.name.clone(),
                label: g.label,
                uptake_fraction: f,
                t_eff_h: t_eff,
                t_uptake_h: t_up,
                label_volume_ml: g.label_volume_ml,
                mass_g: g.label_volume_ml,
                activity_mbq: Vec::new(),
                true_tia_mbq_h: f * sc.injected_mbq * (t_eff - t_up) / LN_2,
                true_dose_gy: 0.0,
            };
            k.activity_mbq = sc
                .timepoints_h
                .iter()
                .map(|&t| k.activity(sc.injected_mbq, t))
                .collect();
            k.true_dose_gy = if k.mass_g > 0.0 {
                k.true_tia_mbq_h * k_e / k.mass_g
            } else {
                0.0
            };
            k
        })
        .collect();
    debug_assert!(glands.iter().all(|g| g.t_eff_h * lp < LN_2));

    // The SPECT grid: isotropic voxels over the CT's field of view, voxel edges aligned.
    let sp = ct_grid.spacing;
    let ext = [0, 1, 2].map(|a| ct_grid.shape[a] as f64 * sp[a]);
    let v = sc.voxel_mm;
    let shape = ext.map(|e| (e / v).ceil().max(2.0) as usize);
    let grid = Geometry::new(
        shape,
        [v, v, v],
        [0, 1, 2].map(|a| ct_grid.origin[a] - sp[a] / 2.0 + v / 2.0),
    );
    // Blur is linear: blur each component (one indicator per gland, the background) once
    // and combine them per time point on the SPECT grid.
    let sigma = fwhm_to_sigma(fwhm);
    let on_spect = |v: &Volume<f32>| {
        let b = gaussian_blur_mm(v, [sigma; 3]);
        resample(&b, &grid, Interpolation::Linear, 0.0)
    };
    let lab = case.labels.as_slice();
    let parts: Vec<(Volume<f32>, f64)> = glands
        .iter()
        .filter(|g| g.label_volume_ml > 0.0)
        .map(|g| {
            let ind = Volume::from_vec(
                ct_grid.clone(),
                lab.iter()
                    .map(|&l| if l == g.label { 1f32 } else { 0.0 })
                    .collect(),
            )
            .expect("grid-sized");
            (on_spect(&ind), g.label_volume_ml)
        })
        .collect();
    // Non-gland uptake, zero inside the gland labels (their activity is the gland's).
    let bg_ct = Volume::from_vec(
        ct_grid.clone(),
        background
            .as_slice()
            .iter()
            .zip(lab)
            .map(|(&b, &l)| {
                if l != 0 && m.glands.iter().any(|g| g.label == l) {
                    0.0
                } else {
                    b.max(0.0)
                }
            })
            .collect(),
    )
    .expect("grid-sized");
    let bg = on_spect(&bg_ct);
    // SUV → MBq/mL at r(t) = 1: A_inj / weight (g).
    let bg_scale = sc.injected_mbq / (m.patient_weight_kg * 1000.0);
    let spect_vox_ml = grid.voxel_volume_ml();
    let counts_per_mbq = sc.calibration_cps_per_mbq * sc.acquisition_s;
    let images: Vec<Volume<f32>> = sc
        .timepoints_h
        .iter()
        .enumerate()
        .map(|(n, &t)| {
            let r: f64 = BACKGROUND
                .iter()
                .map(|(w, th)| w * (-LN_2 * t / th).exp())
                .sum();
            // MBq/mL per component.
            let gl: Vec<f64> = glands
                .iter()
                .filter(|g| g.label_volume_ml > 0.0)
                .map(|g| g.activity_mbq[n] / g.label_volume_ml)
                .collect();
            let mut noise_rng = case_rng(cfg.seed ^ 0x5bec_7001, m.index, 32 + n as u64);
            let data: Vec<f32> = (0..grid.num_voxels())
                .map(|v| {
                    let mut mbq_ml = bg.as_slice()[v] as f64 * bg_scale * r;
                    for ((p, _), c) in parts.iter().zip(&gl) {
                        mbq_ml += p.as_slice()[v] as f64 * c;
                    }
                    let mut x = mbq_ml.max(0.0);
                    if sc.noise {
                        let counts = x * spect_vox_ml * counts_per_mbq;
                        let e: f64 = StandardNormal.sample(&mut noise_rng);
                        let noisy = (counts + NOISE_AMPLIFICATION * counts.sqrt() * e).max(0.0);
                        x = noisy / (spect_vox_ml * counts_per_mbq);
                    }
                    (x * 1e6) as f32
                })
                .collect();
            Volume::from_vec(grid.clone(), data).expect("grid-sized")
        })
        .collect();
    SpectSeries {
        images,
        meta: SpectMeta {
            nuclide: sc.nuclide.clone(),
            half_life_h: sc.half_life_h,
            injected_mbq: sc.injected_mbq,
            timepoints_h: sc.timepoints_h.clone(),
            psf_fwhm_mm: fwhm,
            effective_fwhm_mm: (fwhm * fwhm + 8.0 * LN_2 * sc.voxel_mm * sc.voxel_mm / 6.0).sqrt(),
            spacing_mm: grid.spacing,
            shape: grid.shape,
            origin_lps_mm: grid.origin,
            units: "Bq/mL at the scan time (calibrated with calibration_cps_per_mbq, not \
                    decay-corrected)"
                .into(),
            calibration_cps_per_mbq: sc.calibration_cps_per_mbq,
            acquisition_s: sc.acquisition_s,
            noise: sc.noise,
            noise_amplification: NOISE_AMPLIFICATION,
            background_kinetics: BACKGROUND.to_vec(),
            files: Vec::new(),
            glands,
        },
    }
}

/// File name of time point `t` h: `spect_024h.nii.gz` (`spect_002.5h.nii.gz` for a
/// fractional hour).
pub fn image_name(t: f64) -> String {
    if (t - t.round()).abs() < 1e-9 {
        format!("spect_{:03}h.nii.gz", t.round() as i64)
    } else {
        format!("spect_{t:05.1}h.nii.gz")
    }
}
