//! The exact Euclidean distance transform in millimetres. Surface distances (HD95, ASSD,
//! surface Dice) and ball-shaped morphology in mm all need exact distances on
//! anisotropic grids; a chamfer approximation would bias HD95 by up to ~8 %.
//!
//! Written by hand (Felzenszwalb & Huttenlocher's lower envelope of parabolas, one pass
//! per axis with that axis's spacing) because no maintained Rust crate offers an exact
//! anisotropic 3D EDT.

use crate::lines::for_each_line;
use glandseg_core::Volume;

/// 1D squared distance transform of sampled function `f` with sample spacing `h`:
/// `d[p] = min_q (h² (p - q)² + f[q])`.
fn dt_1d(f: &[f64], d: &mut [f64], h: f64, v: &mut Vec<usize>, z: &mut Vec<f64>) {
    let n = f.len();
    let h2 = h * h;
    v.clear();
    z.clear();
    // Skip leading infinite samples: they never lie on the envelope.
    let Some(first) = f.iter().position(|x| x.is_finite()) else {
        d.iter_mut().for_each(|x| *x = f64::INFINITY);
        return;
    };
    v.push(first);
    z.push(f64::NEG_INFINITY);
    z.push(f64::INFINITY);
    for q in first + 1..n {
        if !f[q].is_finite() {
            continue;
        }
        loop {
            let p = *v.last().unwrap();
            let s = ((f[q] + h2 * (q * q) as f64) - (f[p] + h2 * (p * p) as f64))
                / (2.0 * h2 * (q as f64 - p as f64));
            let kz = z.len() - 2;
            if s <= z[kz] {
                v.pop();
                z.pop();
                if v.is_empty() {
                    v.push(q);
                    *z.last_mut().unwrap() = f64::INFINITY;
                    break;
                }
                continue;
            }
            *z.last_mut().unwrap() = s;
            v.push(q);
            z.push(f64::INFINITY);
            break;
        }
    }
    let mut k = 0;
    for (p, dp) in d.iter_mut().enumerate() {
        while z[k + 1] < p as f64 {
            k += 1;
        }
        let q = v[k];
        *dp = h2 * (p as f64 - q as f64).powi(2) + f[q];
    }
}

/// Squared distance (mm²) from every voxel centre to the nearest `true` voxel centre;
/// infinity everywhere when the mask is empty.
pub fn edt_squared_mm(mask: &Volume<bool>) -> Volume<f64> {
    let g = mask.geometry().clone();
    let mut d: Volume<f64> = mask.map(|&m| if m { 0.0 } else { f64::INFINITY });
    for axis in 0..3 {
        let h = g.spacing[axis];
        for_each_line(d.as_slice_mut(), g.shape, axis, |inp, out| {
            let (mut v, mut z) = (Vec::new(), Vec::new());
            dt_1d(inp, out, h, &mut v, &mut z);
        });
    }
    d
}

/// Distance (mm) from every voxel centre to the nearest `true` voxel centre (0 on the
/// mask; infinity everywhere when the mask is empty).
pub fn edt_mm(mask: &Volume<bool>) -> Volume<f32> {
    edt_squared_mm(mask).map(|&x| x.sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_brute_force_on_random_anisotropic_masks() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for trial in 0..4 {
            let g = Geometry::new([9, 7, 6], [0.8, 1.3, 2.5], [0.0; 3]);
            let mut m = Volume::filled(g.clone(), false);
            let nset = 1 + trial * 3;
            let mut pts = Vec::new();
            for _ in 0..nset {
                let p = [
                    rng.random_range(0..9),
                    rng.random_range(0..7),
                    rng.random_range(0..6),
                ];
                m.set(p[0], p[1], p[2], true);
                pts.push(p);
            }
            let d = edt_mm(&m);
            for k in 0..6 {
                for j in 0..7 {
                    for i in 0..9 {
                        let bf = pts
                            .iter()
                            .map(|p| {
                                let dx = (i as f64 - p[0] as f64) * 0.8;
                                let dy = (j as f64 - p[1] as f64) * 1.3;
                                let dz = (k as f64 - p[2] as f64) * 2.5;
                                (dx * dx + dy * dy + dz * dz).sqrt()
                            })
                            .fold(f64::INFINITY, f64::min);
                        assert!(
                            (*d.get(i, j, k) as f64 - bf).abs() < 1e-4,
                            "({i},{j},{k}): {} vs {bf}",
                            d.get(i, j, k)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn empty_mask_is_infinite() {
        let g = Geometry::new([3, 3, 3], [1.0; 3], [0.0; 3]);
        let d = edt_mm(&Volume::filled(g, false));
        assert!(d.as_slice().iter().all(|x| x.is_infinite()));
    }
}
