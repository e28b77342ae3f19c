//! Gaussian smoothing with the width given in millimetres, so the same call blurs a
//! 0.8 mm CT and a 4 mm PET by the same physical amount (a scanner's point-spread
//! function, an augmentation's blur).

use crate::lines::for_each_line;
use glandseg_core::Volume;

/// FWHM (mm) -> Gaussian sigma (mm).
pub fn fwhm_to_sigma(fwhm_mm: f64) -> f64 {
    fwhm_mm / (8.0 * std::f64::consts::LN_2).sqrt()
}

fn kernel(sigma_vox: f64) -> Vec<f32> {
    let r = (3.5 * sigma_vox).ceil().max(1.0) as i64;
    let mut k: Vec<f64> = (-r..=r)
        .map(|x| (-(x as f64).powi(2) / (2.0 * sigma_vox * sigma_vox)).exp())
        .collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    k.into_iter().map(|v| v as f32).collect()
}

/// Separable Gaussian blur with `sigma_mm` per voxel axis (i, j, k). Borders repeat the
/// edge voxel. A sigma below 1 % of a voxel leaves that axis untouched.
pub fn gaussian_blur_mm(vol: &Volume<f32>, sigma_mm: [f64; 3]) -> Volume<f32> {
    let mut out = vol.clone();
    let shape = vol.geometry().shape;
    for axis in 0..3 {
        let sv = sigma_mm[axis] / vol.geometry().spacing[axis];
        if sv.is_nan() || sv <= 0.01 || shape[axis] < 2 {
            continue;
        }
        let k = kernel(sv);
        let r = (k.len() / 2) as isize;
        let n = shape[axis] as isize;
        for_each_line(out.as_slice_mut(), shape, axis, |inp, o| {
            for (p, ov) in o.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for (t, w) in k.iter().enumerate() {
                    let q = (p as isize + t as isize - r).clamp(0, n - 1) as usize;
                    acc += w * inp[q];
                }
                *ov = acc;
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn constant_stays_constant() {
        let g = Geometry::new([9, 8, 7], [0.8, 1.0, 2.5], [0.0; 3]);
        let v = Volume::filled(g, 3.5f32);
        let b = gaussian_blur_mm(&v, [2.0, 2.0, 2.0]);
        assert!(b.as_slice().iter().all(|x| (x - 3.5).abs() < 1e-5));
    }

    #[test]
    fn delta_keeps_mass_and_has_sigma_squared_variance() {
        let g = Geometry::new([41, 41, 41], [0.5, 0.5, 1.0], [0.0; 3]);
        let mut v = Volume::filled(g, 0.0f32);
        v.set(20, 20, 20, 1.0);
        let sigma = 2.0;
        let b = gaussian_blur_mm(&v, [sigma; 3]);
        let sum: f64 = b.as_slice().iter().map(|&x| x as f64).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
        // Second moment along each axis in mm.
        let sp = [0.5, 0.5, 1.0];
        for axis in 0..3 {
            let mut m2 = 0.0;
            for ((k, j, i), x) in b.data().indexed_iter() {
                let idx = [i, j, k][axis] as f64 - 20.0;
                m2 += *x as f64 * (idx * sp[axis]).powi(2);
            }
            assert!(
                (m2 - sigma * sigma).abs() < 0.05 * sigma * sigma,
                "axis {axis}: {m2}"
            );
        }
    }

    #[test]
    fn fwhm_conversion() {
        assert!((fwhm_to_sigma(2.354_820_045) - 1.0).abs() < 1e-6);
    }
}
