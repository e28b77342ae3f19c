//! Partial-volume correction from a **measured recovery curve**: the recovery coefficient
//! (RC: measured / true mean concentration) of hot spheres of known volume in a sphere
//! phantom (the NEMA/IEC body phantom's six spheres, 0.52-26.5 mL), imaged and
//! reconstructed exactly as the patients are, fitted as a function of volume and applied to
//! each gland by its volume.
//!
//! Why beside the geometric transfer matrix ([`crate::pvc`]): the GTM needs the system's
//! PSF as a Gaussian of known FWHM, while an OSEM reconstruction with resolution recovery
//! has a PSF that is neither Gaussian nor shift-invariant (edge overshoot, count- and
//! iteration-dependent resolution). A sphere phantom measured on the site's own camera and
//! protocol captures what the reconstruction really does; that is how quantitative
//! Lu-177 SPECT sites calibrate (MIRD pamphlet 26; EANM/MIRD guidance on Lu-177 SPECT
//! quantification). Its own assumption is different: a gland recovers like a sphere of the
//! same volume. Elongated glands (the parotid) recover less than their sphere, so the
//! curve under-corrects them a little; the GTM, which uses the outline, does not.
//!
//! Measurement: each sphere's mean is taken over points on a sub-voxel lattice (at most
//! 1 mm, a third of the image's smallest spacing) inside the sphere's true outline, with
//! the image interpolated trilinearly (as the dose job samples activity on a finer label
//! grid). A nominal centre that is a few mm off (a phantom placed by hand) is refined by
//! the lattice shift that maximises the sphere's mean, within `refine_mm`; on noisy images
//! that search biases the mean up slightly, so it can be switched off (0).
//!
//! Curve: RC(V) = a / (1 + (b / V)^c), a three-parameter sigmoid in volume (RC → a for large
//! spheres, half of a at V = b), fitted by Levenberg-Marquardt on log-parameters; its
//! standard error at any volume comes from the fit's covariance (delta method), which
//! also grows where the curve is extrapolated below the smallest sphere (the lacrimal
//! glands, 0.2-1 mL, lie at or below the IEC set's 0.52 mL).

use crate::linalg::{invert, normal_equations, solve_linear};
use crate::{DoseError, Result};
use glandseg_core::{Geometry, Volume};
use glandseg_ops::filter::{fwhm_to_sigma, gaussian_blur_mm};
use glandseg_ops::resample::{resample, Interpolation};
use serde::{Deserialize, Serialize};

/// The NEMA NU-2 / IEC 61675-1 body phantom's sphere diameters, mm.
pub const IEC_DIAMETERS_MM: [f64; 6] = [10.0, 13.0, 17.0, 22.0, 28.0, 37.0];

/// A hot sphere in a phantom image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sphere {
    /// Name (e.g. `S10`).
    pub name: String,
    /// Centre, DICOM LPS, mm.
    pub centre_lps_mm: [f64; 3],
    /// Inner volume, mL.
    pub volume_ml: f64,
    /// True activity concentration at scan time, Bq/mL.
    pub bq_ml: f64,
}

impl Sphere {
    /// Diameter of the sphere, mm.
    pub fn diameter_mm(&self) -> f64 {
        2.0 * (3.0 * self.volume_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt()
    }
}

/// One sphere's measured recovery.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SphereMeasurement {
    /// The sphere's name.
    pub name: String,
    /// Its volume, mL.
    pub volume_ml: f64,
    /// Its diameter, mm.
    pub diameter_mm: f64,
    /// True concentration, Bq/mL.
    pub true_bq_ml: f64,
    /// Mean measured in the sphere's outline, Bq/mL.
    pub mean_bq_ml: f64,
    /// `mean_bq_ml / true_bq_ml`.
    pub rc: f64,
    /// The centre used (after refinement), LPS mm.
    pub centre_lps_mm: [f64; 3],
    /// How far refinement moved the centre, mm.
    pub shift_mm: f64,
}

/// A fitted recovery curve RC(V) = a / (1 + (b / V)^c).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecoveryCurve {
    /// The model, for the reader of the JSON.
    pub model: String,
    /// Plateau (RC of a large sphere).
    pub a: f64,
    /// Volume at half the plateau, mL.
    pub b_ml: f64,
    /// Steepness.
    pub c: f64,
    /// Covariance of (ln a, ln b, ln c).
    pub covariance: [[f64; 3]; 3],
    /// The measured points (volume mL, RC) it was fitted to.
    pub points: Vec<[f64; 2]>,
    /// What the points came from (image file, or the simulation's settings).
    pub source: String,
}

impl RecoveryCurve {
    /// RC at volume `v_ml`.
    pub fn at(&self, v_ml: f64) -> f64 {
        curve([self.a.ln(), self.b_ml.ln(), self.c.ln()], v_ml)
    }

    /// Standard error of RC at `v_ml` from the fit's covariance.
    pub fn standard_error(&self, v_ml: f64) -> f64 {
        let th = [self.a.ln(), self.b_ml.ln(), self.c.ln()];
        let g = gradient(th, v_ml);
        let mut var = 0.0;
        for p in 0..3 {
            for q in 0..3 {
                var += g[p] * self.covariance[p][q] * g[q];
            }
        }
        var.max(0.0).sqrt()
    }

    /// Smallest and largest volume measured, mL.
    pub fn volume_range(&self) -> (f64, f64) {
        let v = self.points.iter().map(|p| p[0]);
        (
            v.clone().fold(f64::INFINITY, f64::min),
            v.fold(0.0f64, f64::max),
        )
    }

    /// Checks a curve read from a file: finite positive parameters, a plausible plateau.
    pub fn check(&self, field: &str) -> Result<()> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !(ok(self.a) && self.a <= 2.0 && ok(self.b_ml) && ok(self.c) && self.c <= 20.0) {
            return Err(DoseError::invalid(
                field,
                format!(
                    "implausible curve parameters a {} (0-2), b_ml {} (> 0), c {} (0-20)",
                    self.a, self.b_ml, self.c
                ),
            ));
        }
        if self.covariance.iter().flatten().any(|v| !v.is_finite()) {
            return Err(DoseError::invalid(field, "covariance is not finite"));
        }
        Ok(())
    }

    /// Fits the curve to (volume mL, RC) points: at least 4 distinct volumes.
    pub fn fit(points: &[[f64; 2]], source: &str) -> Result<RecoveryCurve> {
        if points.len() < 4 {
            return Err(DoseError::invalid(
                "spheres",
                format!(
                    "{} spheres: the recovery curve has 3 parameters and needs at least 4",
                    points.len()
                ),
            ));
        }
        for p in points {
            if !(p[0].is_finite() && p[0] > 0.0 && p[1].is_finite() && p[1] > 0.0) {
                return Err(DoseError::invalid(
                    "spheres",
                    format!(
                        "volume {} mL with recovery {}: both must be positive",
                        p[0], p[1]
                    ),
                ));
            }
        }
        let cost = |th: [f64; 3]| -> f64 {
            points
                .iter()
                .map(|p| (curve(th, p[0]) - p[1]).powi(2))
                .sum()
        };
        // Start: plateau from the largest sphere, half-volume and slope from a small grid.
        let top = points.iter().map(|p| p[1]).fold(0.0f64, f64::max).max(1e-3);
        let mut best = ([top.ln(), 1f64.ln(), 1f64.ln()], f64::INFINITY);
        for &b in &[0.1, 0.3, 1.0, 3.0, 10.0] {
            for &c in &[0.5, 1.0, 2.0] {
                let th = [top.ln(), f64::ln(b), f64::ln(c)];
                let v = cost(th);
                if v < best.1 {
                    best = (th, v);
                }
            }
        }
        let (mut th, mut f) = best;
        let mut mu = 1e-3;
        for _ in 0..200 {
            let r: Vec<f64> = points.iter().map(|p| curve(th, p[0]) - p[1]).collect();
            let jac: Vec<Vec<f64>> = points.iter().map(|p| gradient(th, p[0]).to_vec()).collect();
            let (jtj, jtr) = normal_equations(&jac, &r);
            let mut improved = false;
            for _ in 0..20 {
                let mut a = jtj.clone();
                for d in 0..3 {
                    a[d][d] += mu * (1.0 + jtj[d][d]);
                }
                let Some(step) = solve_linear(a, jtr.clone()) else {
                    mu *= 10.0;
                    continue;
                };
                let cand = [th[0] - step[0], th[1] - step[1], th[2] - step[2]];
                let fc = cost(cand);
                if fc.is_finite() && fc < f {
                    let small = (f - fc) <= 1e-14 * f.max(1e-300);
                    th = cand;
                    f = fc;
                    mu = (mu / 3.0).max(1e-12);
                    improved = !small;
                    break;
                }
                mu *= 4.0;
            }
            if !improved {
                break;
            }
        }
        let n = points.len() as f64;
        let s2 = f / (n - 3.0).max(1.0);
        let jac: Vec<Vec<f64>> = points.iter().map(|p| gradient(th, p[0]).to_vec()).collect();
        let (jtj, _) = normal_equations(&jac, &vec![0.0; points.len()]);
        let covariance = invert(&jtj)
            .map(|inv| [0, 1, 2].map(|r| [0, 1, 2].map(|c| inv[r][c] * s2)))
            .ok_or_else(|| {
                DoseError::invalid(
                    "spheres",
                    "the recovery curve is not determined by these spheres (too few distinct volumes?)",
                )
            })?;
        let out = RecoveryCurve {
            model: "rc = a / (1 + (b_ml / volume_ml)^c)".into(),
            a: th[0].exp(),
            b_ml: th[1].exp(),
            c: th[2].exp(),
            covariance,
            points: points.to_vec(),
            source: source.to_string(),
        };
        out.check("spheres")?;
        Ok(out)
    }
}

/// The FWHM (mm) of the Gaussian PSF whose exact sphere recoveries
/// ([`gaussian_sphere_recovery`], plus the spill-in of a uniform `background_bq_ml`:
/// RC_measured = RC + (1 − RC)·B/C) best match the measured ones (least squares over
/// 1-40 mm); None when fewer than two spheres were measured. The GTM
/// (`dose --pvc-fwhm-mm`) corrects each gland for its own shape with it, which a
/// curve by volume cannot: it treats every gland as a sphere.
pub fn equivalent_fwhm(measured: &[SphereMeasurement], background_bq_ml: f64) -> Option<f64> {
    if measured.len() < 2 || !(background_bq_ml.is_finite() && background_bq_ml >= 0.0) {
        return None;
    }
    let cost = |fwhm: f64| -> f64 {
        measured
            .iter()
            .map(|m| {
                let rc = gaussian_sphere_recovery(m.diameter_mm, fwhm);
                let b = background_bq_ml / m.true_bq_ml;
                (rc + (1.0 - rc) * b - m.rc).powi(2)
            })
            .sum()
    };
    // Golden-section search on ln FWHM: the cost is unimodal in the FWHM (every sphere's
    // recovery falls monotonically as the PSF widens).
    let (mut lo, mut hi) = (1f64.ln(), 40f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut x1, mut x2) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut f1, mut f2) = (cost(x1.exp()), cost(x2.exp()));
    while hi - lo > 1e-5 {
        if f1 < f2 {
            hi = x2;
            x2 = x1;
            f2 = f1;
            x1 = hi - g * (hi - lo);
            f1 = cost(x1.exp());
        } else {
            lo = x1;
            x1 = x2;
            f1 = f2;
            x2 = lo + g * (hi - lo);
            f2 = cost(x2.exp());
        }
    }
    Some((0.5 * (lo + hi)).exp())
}

/// The curve drawn with its spheres (`recovery.png`).
pub fn plot(curve: &RecoveryCurve) -> image::RgbImage {
    crate::plot::recovery_plot(curve)
}

fn curve(th: [f64; 3], v: f64) -> f64 {
    let (a, b, c) = (th[0].exp(), th[1].exp(), th[2].exp());
    a / (1.0 + (b / v).powf(c))
}

/// d RC / d (ln a, ln b, ln c).
fn gradient(th: [f64; 3], v: f64) -> [f64; 3] {
    let (a, b, c) = (th[0].exp(), th[1].exp(), th[2].exp());
    let q = (b / v).powf(c);
    let d = 1.0 + q;
    let rc = a / d;
    // d/d ln b of q = c q; d/d ln c of q = q ln(b/v) c.
    [
        rc,
        -a * c * q / (d * d),
        -a * q * (b / v).ln() * c / (d * d),
    ]
}

/// Measures one sphere in `image` (Bq/mL), refining its centre within `refine_mm`.
pub fn measure_sphere(
    image: &Volume<f32>,
    sphere: &Sphere,
    refine_mm: f64,
) -> Result<SphereMeasurement> {
    let field = format!("sphere {}", sphere.name);
    if !(sphere.volume_ml.is_finite() && sphere.volume_ml > 0.0 && sphere.volume_ml < 5000.0) {
        return Err(DoseError::invalid(
            field,
            format!("volume {} mL (must be 0-5000)", sphere.volume_ml),
        ));
    }
    if !(sphere.bq_ml.is_finite() && sphere.bq_ml > 0.0) {
        return Err(DoseError::invalid(
            field,
            format!("true concentration {} Bq/mL (must be > 0)", sphere.bq_ml),
        ));
    }
    if !(refine_mm.is_finite() && (0.0..=30.0).contains(&refine_mm)) {
        return Err(DoseError::invalid(
            "refine_mm",
            format!("{refine_mm} (must be 0-30 mm)"),
        ));
    }
    let g = image.geometry();
    // At most 1 mm, at least 0.5 mm: finer adds nothing to a mean over hundreds of
    // points, and an image on a fine grid (a CT-like 0.5 mm) must not cost minutes.
    let step = (g.spacing.iter().cloned().fold(f64::INFINITY, f64::min) / 3.0).clamp(0.5, 1.0);
    let radius = sphere.diameter_mm() / 2.0;
    // A lattice around the nominal centre, along the image's axes, reaching radius +
    // refine_mm; sampled once, then every candidate centre is a lattice shift.
    let half = ((radius + refine_mm) / step).ceil() as usize;
    let n = 2 * half + 1;
    let d = g.direction;
    let origin = [0, 1, 2].map(|w| {
        sphere.centre_lps_mm[w] - (0..3).map(|a| d[w][a] * half as f64 * step).sum::<f64>()
    });
    let lattice = Geometry::new([n; 3], [step; 3], origin).with_direction(d);
    let sampled = resample(image, &lattice, Interpolation::Linear, f32::NAN);
    let vals = sampled.as_slice();
    let r_in = (radius / step).floor() as i64;
    let offsets: Vec<[i64; 3]> = {
        let mut v = Vec::new();
        for k in -r_in..=r_in {
            for j in -r_in..=r_in {
                for i in -r_in..=r_in {
                    let r2 = ((i * i + j * j + k * k) as f64) * step * step;
                    if r2 <= radius * radius {
                        v.push([i, j, k]);
                    }
                }
            }
        }
        v
    };
    let s_max = (refine_mm / step).floor() as i64;
    let mean_at = |s: [i64; 3]| -> Option<f64> {
        let mut sum = 0.0;
        for o in &offsets {
            let idx = [0, 1, 2].map(|a| (half as i64 + s[a] + o[a]) as usize);
            let v = vals[idx[0] + n * (idx[1] + n * idx[2])];
            if v.is_nan() {
                return None;
            }
            sum += v as f64;
        }
        Some(sum / offsets.len() as f64)
    };
    // Coarse to fine: candidate centres every `c` lattice steps (about 2 mm) over the
    // search ball, then every step within one coarse step of the best.
    let within = |s: [i64; 3]| {
        ((s[0] * s[0] + s[1] * s[1] + s[2] * s[2]) as f64) * step * step
            <= refine_mm * refine_mm + 1e-9
    };
    let search = |centre: [i64; 3], reach: i64, every: i64, best: &mut Option<([i64; 3], f64)>| {
        let mut k = -reach;
        while k <= reach {
            let mut j = -reach;
            while j <= reach {
                let mut i = -reach;
                while i <= reach {
                    let c = [centre[0] + i, centre[1] + j, centre[2] + k];
                    if within(c) {
                        if let Some(m) = mean_at(c) {
                            if best.is_none_or(|b| m > b.1) {
                                *best = Some((c, m));
                            }
                        }
                    }
                    i += every;
                }
                j += every;
            }
            k += every;
        }
    };
    let c = ((2.0 / step).round() as i64).max(1);
    let mut best: Option<([i64; 3], f64)> = None;
    search([0; 3], s_max, c, &mut best);
    if let Some((b, _)) = best {
        if c > 1 {
            search(b, c, 1, &mut best);
        }
    }
    let Some((s, mean)) = best else {
        return Err(DoseError::invalid(
            field,
            format!(
                "the sphere (centre {:?} mm, {:.1} mm across) is not inside the image",
                sphere.centre_lps_mm,
                sphere.diameter_mm()
            ),
        ));
    };
    let centre = lattice.index_to_world([0, 1, 2].map(|a| (half as i64 + s[a]) as f64));
    let shift = ((s[0] * s[0] + s[1] * s[1] + s[2] * s[2]) as f64).sqrt() * step;
    Ok(SphereMeasurement {
        name: sphere.name.clone(),
        volume_ml: sphere.volume_ml,
        diameter_mm: sphere.diameter_mm(),
        true_bq_ml: sphere.bq_ml,
        mean_bq_ml: mean,
        rc: mean / sphere.bq_ml,
        centre_lps_mm: centre,
        shift_mm: shift,
    })
}

/// A simulated sphere phantom: the IEC spheres (or `diameters_mm`) on a ring in a warm
/// cylinder (`background_ratio` × the spheres' concentration), blurred by a Gaussian PSF of
/// `fwhm_mm` and sampled on `voxel_mm` voxels. For a calibration without a phantom scan
/// (the curve then rests on the Gaussian, as the GTM does) and for tests.
pub fn simulate_phantom(
    diameters_mm: &[f64],
    fwhm_mm: f64,
    voxel_mm: f64,
    bq_ml: f64,
    background_ratio: f64,
) -> Result<(Volume<f32>, Vec<Sphere>)> {
    if !(fwhm_mm.is_finite() && (0.5..=40.0).contains(&fwhm_mm)) {
        return Err(DoseError::invalid(
            "fwhm_mm",
            format!("{fwhm_mm} (0.5-40 mm)"),
        ));
    }
    if !(voxel_mm.is_finite() && (1.0..=10.0).contains(&voxel_mm)) {
        return Err(DoseError::invalid(
            "voxel_mm",
            format!("{voxel_mm} (1-10 mm)"),
        ));
    }
    if !(background_ratio.is_finite() && (0.0..1.0).contains(&background_ratio)) {
        return Err(DoseError::invalid(
            "background_ratio",
            format!("{background_ratio} (0 to below 1)"),
        ));
    }
    if diameters_mm.is_empty() || diameters_mm.iter().any(|&d| !(d > 1.0 && d <= 60.0)) {
        return Err(DoseError::invalid(
            "diameters_mm",
            format!("{diameters_mm:?} (each 1-60 mm)"),
        ));
    }
    // The ring: centres 57 mm from the axis (the IEC phantom's), in one transverse plane.
    let ring = 57.0f64;
    let n = diameters_mm.len();
    let spheres: Vec<Sphere> = diameters_mm
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let phi = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
            Sphere {
                name: format!("S{d:.0}"),
                centre_lps_mm: [ring * phi.cos(), ring * phi.sin(), 0.0],
                volume_ml: std::f64::consts::PI * d * d * d / 6.0 / 1000.0,
                bq_ml,
            }
        })
        .collect();
    // A 1 mm (or finer) grid, spheres with partial-voxel occupancy from 4³ sub-samples.
    let fine = (voxel_mm / 2.0).min(1.0);
    let half_xy = ring + 40.0 + 2.0 * fwhm_mm;
    let half_z = 40.0 + 2.0 * fwhm_mm;
    let ext = [2.0 * half_xy, 2.0 * half_xy, 2.0 * half_z];
    let shape = ext.map(|e| (e / voxel_mm).ceil() as usize);
    let coarse = Geometry::new(
        shape,
        [voxel_mm; 3],
        [0, 1, 2].map(|a| -(shape[a] as f64 - 1.0) * voxel_mm / 2.0),
    );
    let fshape = ext.map(|e| (e / fine).ceil() as usize);
    let fgrid = Geometry::new(
        fshape,
        [fine; 3],
        [0, 1, 2].map(|a| -(fshape[a] as f64 - 1.0) * fine / 2.0),
    );
    let cyl_r = ring + 35.0;
    let mut vals = vec![0f32; fgrid.num_voxels()];
    let sub = 4;
    for (idx, v) in vals.iter_mut().enumerate() {
        let ijk = [
            idx % fshape[0],
            (idx / fshape[0]) % fshape[1],
            idx / (fshape[0] * fshape[1]),
        ];
        let p = fgrid.index_to_world(ijk.map(|x| x as f64));
        let mut c = if p[0] * p[0] + p[1] * p[1] <= cyl_r * cyl_r && p[2].abs() <= half_z - fwhm_mm
        {
            background_ratio * bq_ml
        } else {
            0.0
        };
        for s in &spheres {
            let r = s.diameter_mm() / 2.0;
            let d2: f64 = (0..3).map(|a| (p[a] - s.centre_lps_mm[a]).powi(2)).sum();
            let reach = r + fine;
            if d2 > reach * reach {
                continue;
            }
            let mut inside = 0;
            for a in 0..sub {
                for b in 0..sub {
                    for cc in 0..sub {
                        let o = [a, b, cc].map(|t| (t as f64 + 0.5) / sub as f64 - 0.5);
                        let q: f64 = (0..3)
                            .map(|ax| (p[ax] + o[ax] * fine - s.centre_lps_mm[ax]).powi(2))
                            .sum();
                        if q <= r * r {
                            inside += 1;
                        }
                    }
                }
            }
            let f = inside as f64 / (sub * sub * sub) as f64;
            c = c * (1.0 - f) + s.bq_ml * f;
        }
        *v = c as f32;
    }
    let phantom = Volume::from_vec(fgrid, vals)?;
    let blurred = gaussian_blur_mm(&phantom, [fwhm_to_sigma(fwhm_mm); 3]);
    // Onto the image voxels: point samples of the blurred image (the PSF stands for the
    // whole system, reconstruction included), as the dose phantom's SPECT is made.
    Ok((
        resample(&blurred, &coarse, Interpolation::Linear, 0.0),
        spheres,
    ))
}

/// The exact recovery of a uniform sphere of `diameter_mm` in a cold background blurred by
/// a Gaussian PSF of `fwhm_mm` (the mean of the blurred sphere over its own outline), from
/// the closed-form radial profile integrated numerically. The reference the measurement is
/// checked against.
pub fn gaussian_sphere_recovery(diameter_mm: f64, fwhm_mm: f64) -> f64 {
    let r0 = diameter_mm / 2.0;
    let s = fwhm_to_sigma(fwhm_mm);
    let k = std::f64::consts::SQRT_2 * s;
    let profile = |r: f64| -> f64 {
        let r = r.max(1e-9);
        0.5 * (libm::erf((r0 - r) / k) + libm::erf((r0 + r) / k))
            - s / (r * (2.0 * std::f64::consts::PI).sqrt())
                * ((-(r0 - r).powi(2) / (2.0 * s * s)).exp()
                    - (-(r0 + r).powi(2) / (2.0 * s * s)).exp())
    };
    // Simpson on r² f(r) over [0, R].
    let m = 2000;
    let h = r0 / m as f64;
    let mut acc = 0.0;
    for i in 0..=m {
        let r = i as f64 * h;
        let w = if i == 0 || i == m {
            1.0
        } else if i % 2 == 1 {
            4.0
        } else {
            2.0
        };
        acc += w * r * r * profile(r);
    }
    3.0 * acc * h / 3.0 / r0.powi(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analytic_recovery_has_the_right_limits() {
        // A huge sphere recovers fully, a tiny one hardly at all, and the curve rises.
        assert!((gaussian_sphere_recovery(2000.0, 10.0) - 1.0).abs() < 0.01);
        assert!(gaussian_sphere_recovery(2.0, 12.0) < 0.01);
        let mut last = 0.0;
        for d in IEC_DIAMETERS_MM {
            let rc = gaussian_sphere_recovery(d, 12.0);
            assert!(rc > last, "{d} mm: {rc}");
            last = rc;
        }
        // Independent check of one value by Monte Carlo.
        let (r0, fwhm) = (8.0f64, 8.0f64);
        let s = fwhm_to_sigma(fwhm);
        // Monte Carlo: a point inside the sphere, displaced by the PSF, lands inside with
        // probability RC (the PSF is symmetric, so this is the mean of the blurred sphere).
        let mut state = 12345u64;
        let mut uni = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (mut hit, mut tot) = (0u64, 0u64);
        while tot < 400_000 {
            let p = [0; 3].map(|_| (2.0 * uni() - 1.0) * r0);
            if p.iter().map(|v| v * v).sum::<f64>() > r0 * r0 {
                continue;
            }
            let g = [0; 3].map(|_| {
                let (u1, u2) = (uni().max(1e-300), uni());
                s * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            });
            let q: f64 = (0..3).map(|a| (p[a] + g[a]).powi(2)).sum();
            tot += 1;
            if q <= r0 * r0 {
                hit += 1;
            }
        }
        let mc = hit as f64 / tot as f64;
        let exact = gaussian_sphere_recovery(2.0 * r0, fwhm);
        assert!(
            (mc - exact).abs() < 0.004,
            "Monte Carlo {mc} vs closed form {exact}"
        );
    }

    #[test]
    fn curve_fit_recovers_its_parameters() {
        let truth = [0.95f64.ln(), 2.5f64.ln(), 1.3f64.ln()];
        let points: Vec<[f64; 2]> = [0.3, 0.52, 1.15, 2.57, 5.58, 11.5, 26.5]
            .iter()
            .map(|&v| [v, curve(truth, v)])
            .collect();
        let c = RecoveryCurve::fit(&points, "test").unwrap();
        assert!(
            (c.a - 0.95).abs() < 1e-4 && (c.b_ml - 2.5).abs() < 1e-3 && (c.c - 1.3).abs() < 1e-3,
            "{c:?}"
        );
        assert!(c.standard_error(1.0) < 1e-4);
        // Noisy points: the standard error grows away from the data.
        let noisy: Vec<[f64; 2]> = points
            .iter()
            .enumerate()
            .map(|(i, p)| [p[0], p[1] * (1.0 + if i % 2 == 0 { 0.02 } else { -0.02 })])
            .collect();
        let c = RecoveryCurve::fit(&noisy, "test").unwrap();
        let rel = |v: f64| c.standard_error(v) / c.at(v);
        assert!(
            rel(0.1) > rel(3.0),
            "relative standard error {} at 0.1 mL, {} at 3 mL",
            rel(0.1),
            rel(3.0)
        );
        assert!(RecoveryCurve::fit(&points[..3], "test").is_err());
    }

    #[test]
    fn measured_spheres_match_the_closed_form() {
        // Cold background, fine voxels: the measurement must equal the analytic recovery at
        // the image's effective resolution (the PSF and the voxels' own averaging and
        // interpolation: FWHM² + 8 ln2 · v²/6).
        let (fwhm, v) = (12.0f64, 2.0f64);
        let (img, spheres) = simulate_phantom(&IEC_DIAMETERS_MM, fwhm, v, 1000.0, 0.0).unwrap();
        let effective = (fwhm * fwhm + 8.0 * std::f64::consts::LN_2 * v * v / 6.0).sqrt();
        for s in &spheres {
            let m = measure_sphere(&img, s, 0.0).unwrap();
            let exact = gaussian_sphere_recovery(s.diameter_mm(), effective);
            assert!(
                (m.rc - exact).abs() < 0.004 + 0.02 * exact,
                "{}: {} vs {exact}",
                s.name,
                m.rc
            );
        }
        // The PSF is found again from the spheres alone.
        let ms: Vec<SphereMeasurement> = spheres
            .iter()
            .map(|s| measure_sphere(&img, s, 0.0).unwrap())
            .collect();
        let f = equivalent_fwhm(&ms, 0.0).unwrap();
        assert!(
            (f - effective).abs() < 0.25,
            "equivalent FWHM {f} vs {effective}"
        );
        // A centre given 3 mm off is found again.
        let mut off = spheres[3].clone();
        off.centre_lps_mm[0] += 3.0;
        let m = measure_sphere(&img, &off, 5.0).unwrap();
        let back = m.centre_lps_mm[0] - spheres[3].centre_lps_mm[0];
        assert!(back.abs() < 1.0, "refined centre {back} mm from the truth");
        // Outside the image: a clear error naming the sphere.
        let mut far = spheres[0].clone();
        far.centre_lps_mm = [900.0, 0.0, 0.0];
        let e = measure_sphere(&img, &far, 0.0).unwrap_err().to_string();
        assert!(e.contains("sphere S10") && e.contains("not inside"), "{e}");
    }
}
