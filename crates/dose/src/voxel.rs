//! Voxel-level absorbed dose: local deposition and voxel-S-value (VSV) kernel convolution,
//! and dose-volume histogram metrics.
//!
//! **Kernel.** No published Lu-177 voxel-S-value table is available offline here, so the
//! kernel is built from two approximations, for any (anisotropic) voxel size:
//!
//! - electrons: all electron energy is deposited in the source voxel (Lu-177's mean beta
//!   range, 0.23 mm, is far below a SPECT voxel): S_e(0) = k_e / m_voxel;
//! - photons: a point kernel with exponential energy absorption (the "μ_en
//!   approximation", standing in for scatter build-up): the fraction of the photon energy
//!   absorbed per mm³ at distance r is μ_en·e^(−μ_en r)/(4πr²), which integrates to 1 over
//!   all space. Each target voxel's value is its average over 4³ sub-points of the voxel
//!   (7³ within two voxels of the source); the source voxel itself gets the sphere
//!   model's photon fraction for its mass ([`crate::organ::photon_fraction`]).
//!
//! The kernel is truncated at a radius (default 30 mm): photons carry the energy they
//! would deposit beyond it out of the calculation (for Lu-177, 1 − e^(−0.0029·30) = 8 % of
//! the photon energy is kept within 30 mm, i.e. the kernel holds E_e + 0.08·E_γ), so a
//! large uniform region's dose lies between the local-deposition value and that plus the
//! kept photon share.
//!
//! **Convolution.** Linear (zero-padded) 3D convolution by FFT (`rustfft`), on a region
//! of the grid only (the glands' bounding box plus the kernel radius), so a whole-body
//! grid is never transformed.

use crate::organ::photon_fraction;
use crate::Nuclide;
use rustfft::num_complex::Complex;
use rustfft::FftPlanner;
use serde::Serialize;

/// A voxel-S-value kernel: Gy in each voxel per MBq·h in the centre voxel.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// Half-size along (i, j, k) in voxels: the kernel has 2r+1 voxels per axis.
    pub radius: [usize; 3],
    /// Values, `i` fastest.
    pub values: Vec<f64>,
    /// Voxel size, mm.
    pub spacing: [f64; 3],
    /// Truncation radius, mm.
    pub truncation_mm: f64,
}

impl Kernel {
    /// Side lengths (2r+1).
    pub fn size(&self) -> [usize; 3] {
        [
            2 * self.radius[0] + 1,
            2 * self.radius[1] + 1,
            2 * self.radius[2] + 1,
        ]
    }

    /// Value at offset (di, dj, dk) from the source voxel; 0 outside the kernel.
    pub fn at(&self, d: [isize; 3]) -> f64 {
        let s = self.size();
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let v = d[a] + self.radius[a] as isize;
            if v < 0 || v >= s[a] as isize {
                return 0.0;
            }
            idx[a] = v as usize;
        }
        self.values[idx[0] + s[0] * (idx[1] + s[1] * idx[2])]
    }
}

/// What the kernel holds, for the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KernelInfo {
    /// Truncation radius, mm.
    pub truncation_mm: f64,
    /// Voxel size, mm.
    pub spacing_mm: [f64; 3],
    /// Kernel voxels per axis.
    pub size: [usize; 3],
    /// Σ kernel × voxel mass / k_total: the share of the emitted energy the kernel keeps.
    pub energy_kept: f64,
    /// How the kernel was built.
    pub method: &'static str,
}

/// Builds the Lu-177-style kernel (see the module) for a voxel size and tissue density.
pub fn build_kernel(
    nuclide: &Nuclide,
    spacing: [f64; 3],
    density_g_ml: f64,
    truncation_mm: f64,
) -> Kernel {
    let radius = [0, 1, 2].map(|a| (truncation_mm / spacing[a]).floor().max(0.0) as usize);
    let size = radius.map(|r| 2 * r + 1);
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    let m_vox = voxel_ml * density_g_ml;
    let rho_g_mm3 = density_g_ml / 1000.0;
    let mu = nuclide.photon_mu_en_per_mm;
    let kg = nuclide.photon_gy_g_per_mbq_h();
    let ke = nuclide.electron_gy_g_per_mbq_h();
    let mut values = vec![0.0; size[0] * size[1] * size[2]];
    let max_sp = spacing.iter().cloned().fold(0.0, f64::max);
    for k in 0..size[2] {
        for j in 0..size[1] {
            for i in 0..size[0] {
                let d = [
                    i as f64 - radius[0] as f64,
                    j as f64 - radius[1] as f64,
                    k as f64 - radius[2] as f64,
                ];
                let c = [d[0] * spacing[0], d[1] * spacing[1], d[2] * spacing[2]];
                let rc = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                if rc > truncation_mm {
                    continue;
                }
                let v = if rc == 0.0 {
                    let r_eq = (3.0 * voxel_ml * 1000.0 / (4.0 * std::f64::consts::PI)).cbrt();
                    (ke + kg * photon_fraction(r_eq, mu)) / m_vox
                } else if kg == 0.0 {
                    0.0
                } else {
                    // Average of the point kernel over sub-points of the target voxel.
                    let n = if rc <= 2.0 * max_sp { 7 } else { 4 };
                    let mut acc = 0.0;
                    for a in 0..n {
                        for b in 0..n {
                            for e in 0..n {
                                let o = |q: usize, ax: usize| {
                                    ((q as f64 + 0.5) / n as f64 - 0.5) * spacing[ax]
                                };
                                let p = [c[0] + o(a, 0), c[1] + o(b, 1), c[2] + o(e, 2)];
                                let r2 = p[0] * p[0] + p[1] * p[1] + p[2] * p[2];
                                let r = r2.sqrt();
                                acc += mu * (-mu * r).exp() / (4.0 * std::f64::consts::PI * r2);
                            }
                        }
                    }
                    // Fraction per mm³ → Gy: k_γ (Gy·g) × fraction/mm³ / ρ (g/mm³).
                    kg * acc / (n * n * n) as f64 / rho_g_mm3
                };
                values[i + size[0] * (j + size[1] * k)] = v;
            }
        }
    }
    Kernel {
        radius,
        values,
        spacing,
        truncation_mm,
    }
}

impl Kernel {
    /// Report entry: the share of all emitted energy (electrons + photons) it deposits.
    pub fn info(&self, nuclide: &Nuclide, density_g_ml: f64) -> KernelInfo {
        let m_vox = self.spacing.iter().product::<f64>() / 1000.0 * density_g_ml;
        let total = nuclide.electron_gy_g_per_mbq_h() + nuclide.photon_gy_g_per_mbq_h();
        KernelInfo {
            truncation_mm: self.truncation_mm,
            spacing_mm: self.spacing,
            size: self.size(),
            energy_kept: self.values.iter().sum::<f64>() * m_vox / total,
            method: "electrons: local deposition in the source voxel; photons: point kernel \
                     mu_en*exp(-mu_en r)/(4 pi r^2) averaged over each voxel, truncated",
        }
    }
}

/// An FFT-friendly length ≥ n (factors 2, 3, 5 only).
fn smooth_len(n: usize) -> usize {
    let mut m = n.max(1);
    loop {
        let mut x = m;
        for p in [2, 3, 5] {
            while x / p * p == x {
                x /= p;
            }
        }
        if x == 1 {
            return m;
        }
        m += 1;
    }
}

/// In-place FFT along every axis of a complex volume `[n0, n1, n2]` (axis 0 fastest).
fn fft3(buf: &mut [Complex<f64>], n: [usize; 3], planner: &mut FftPlanner<f64>, inverse: bool) {
    for axis in 0..3 {
        let len = n[axis];
        if len == 1 {
            continue;
        }
        let fft = if inverse {
            planner.plan_fft_inverse(len)
        } else {
            planner.plan_fft_forward(len)
        };
        let stride = match axis {
            0 => 1,
            1 => n[0],
            _ => n[0] * n[1],
        };
        if axis == 0 {
            fft.process(buf);
            continue;
        }
        let mut line = vec![Complex::new(0.0, 0.0); len];
        let outer = buf.len() / len;
        for o in 0..outer {
            // Start of line o: the index with this axis' coordinate 0.
            let base = if axis == 1 {
                (o % n[0]) + (o / n[0]) * n[0] * n[1]
            } else {
                o
            };
            for (q, l) in line.iter_mut().enumerate() {
                *l = buf[base + q * stride];
            }
            fft.process(&mut line);
            for (q, l) in line.iter().enumerate() {
                buf[base + q * stride] = *l;
            }
        }
    }
}

/// Linear 3D convolution of `tia` (MBq·h per voxel, shape `[nx, ny, nz]`, `i` fastest)
/// with `kernel`, same shape out: the dose (Gy) in each voxel.
pub fn convolve(tia: &[f64], shape: [usize; 3], kernel: &Kernel) -> Vec<f64> {
    assert_eq!(tia.len(), shape.iter().product::<usize>());
    let n = [0, 1, 2].map(|a| smooth_len(shape[a] + kernel.radius[a]));
    let total = n[0] * n[1] * n[2];
    let zero = Complex::new(0.0, 0.0);
    let mut x = vec![zero; total];
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            let src = shape[0] * (j + shape[1] * k);
            let dst = n[0] * (j + n[1] * k);
            for i in 0..shape[0] {
                x[dst + i] = Complex::new(tia[src + i], 0.0);
            }
        }
    }
    let mut h = vec![zero; total];
    let ks = kernel.size();
    for k in 0..ks[2] {
        for j in 0..ks[1] {
            for i in 0..ks[0] {
                let v = kernel.values[i + ks[0] * (j + ks[1] * k)];
                if v == 0.0 {
                    continue;
                }
                let w = |q: usize, a: usize| {
                    (q as isize - kernel.radius[a] as isize).rem_euclid(n[a] as isize) as usize
                };
                h[w(i, 0) + n[0] * (w(j, 1) + n[1] * w(k, 2))] = Complex::new(v, 0.0);
            }
        }
    }
    let mut planner = FftPlanner::new();
    fft3(&mut x, n, &mut planner, false);
    fft3(&mut h, n, &mut planner, false);
    for (a, b) in x.iter_mut().zip(&h) {
        *a *= b;
    }
    fft3(&mut x, n, &mut planner, true);
    let scale = 1.0 / total as f64;
    let mut out = vec![0.0; tia.len()];
    for k in 0..shape[2] {
        for j in 0..shape[1] {
            let src = n[0] * (j + n[1] * k);
            let dst = shape[0] * (j + shape[1] * k);
            for i in 0..shape[0] {
                out[dst + i] = x[src + i].re * scale;
            }
        }
    }
    out
}

/// Local deposition: electron energy only, each voxel's TIA in that voxel (Gy).
pub fn local_deposition(tia: &[f64], nuclide: &Nuclide, voxel_mass_g: f64) -> Vec<f64> {
    let k = nuclide.electron_gy_g_per_mbq_h() / voxel_mass_g;
    tia.iter().map(|t| t * k).collect()
}

/// Dose-volume histogram metrics of one gland (voxels of equal volume).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Dvh {
    /// Mean dose, Gy.
    pub mean_gy: f64,
    /// Minimum dose to the hottest 2 % of the volume, Gy.
    pub d2_gy: f64,
    /// Median dose, Gy.
    pub d50_gy: f64,
    /// Minimum dose to 98 % of the volume, Gy.
    pub d98_gy: f64,
    /// Share of the volume receiving at least 20 Gy, %.
    pub v20gy_pct: f64,
}

/// DVH metrics of `doses` (Gy); None when empty. D_x is the dose that x % of the volume
/// receives or exceeds (linear interpolation between sorted voxel doses).
pub fn dvh(doses: &[f64]) -> Option<Dvh> {
    if doses.is_empty() {
        return None;
    }
    let mut s = doses.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        let pos = p * (s.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
    };
    Some(Dvh {
        mean_gy: s.iter().sum::<f64>() / s.len() as f64,
        d2_gy: q(0.98),
        d50_gy: q(0.5),
        d98_gy: q(0.02),
        v20gy_pct: 100.0 * s.iter().filter(|&&d| d >= 20.0).count() as f64 / s.len() as f64,
    })
}

/// A cumulative dose-volume histogram: the share of a gland's volume receiving at least
/// each dose.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DvhCurve {
    /// Doses, Gy, increasing from 0 to the gland's maximum voxel dose.
    pub dose_gy: Vec<f64>,
    /// Share of the volume with a dose ≥ `dose_gy[i]`, %, non-increasing from 100.
    pub volume_pct: Vec<f64>,
}

/// The cumulative DVH of `doses` (Gy, voxels of equal volume) at `steps` + 1 equally
/// spaced doses from 0 to the maximum; None when empty. A gland at 0 Gy everywhere gives
/// the single point (0 Gy, 100 %).
pub fn cumulative_dvh(doses: &[f64], steps: usize) -> Option<DvhCurve> {
    let mut s: Vec<f64> = doses.iter().copied().filter(|d| d.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let max = s[s.len() - 1].max(0.0);
    let n = if max > 0.0 { steps.max(1) } else { 0 };
    let mut dose_gy = Vec::with_capacity(n + 1);
    let mut volume_pct = Vec::with_capacity(n + 1);
    for i in 0..=n {
        let d = if i == n {
            max
        } else {
            max * i as f64 / n as f64
        };
        // Voxels with a dose ≥ d: those from the first one not below d.
        let below = s.partition_point(|&x| x < d);
        dose_gy.push(d);
        volume_pct.push(100.0 * (s.len() - below) as f64 / s.len() as f64);
    }
    Some(DvhCurve {
        dose_gy,
        volume_pct,
    })
}
