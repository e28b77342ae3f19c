//! Resampling onto any target grid. Both grids are affine maps of voxel indices, so the
//! source index of a target voxel is itself affine in the target index: it is computed
//! once per row and stepped along it, never via a per-voxel world transform.
//!
//! Out-of-field convention: a target point is inside the source when its continuous index
//! lies within [-0.5, n - 0.5] on every axis (inside the source voxels' extent); there the
//! image is interpolated with edge values repeated, elsewhere it is `fill`.

use crate::lines::for_each_line;
use glandseg_core::{Geometry, Volume};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Nearest,
    /// Trilinear.
    Linear,
    /// Cubic B-spline with the interpolating prefilter (Unser 1993), mirror boundaries.
    BSpline3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelInterpolation {
    Nearest,
    /// Trilinear interpolation of every label's one-hot channel, then argmax (ties go to
    /// the lower label). Smoother boundaries and better-kept volumes than nearest when the
    /// spacing changes.
    LinearOneHot,
}

/// `src_index = m · target_index + b`.
struct IndexMap {
    m: [[f64; 3]; 3],
    b: [f64; 3],
}

impl IndexMap {
    fn new(src: &Geometry, dst: &Geometry) -> Self {
        let mut m = [[0.0; 3]; 3];
        let mut b = [0.0; 3];
        let d0 = [
            dst.origin[0] - src.origin[0],
            dst.origin[1] - src.origin[1],
            dst.origin[2] - src.origin[2],
        ];
        for r in 0..3 {
            // Row r of diag(1/src.sp) · src.D^T.
            for c in 0..3 {
                let mut acc = 0.0;
                for w in 0..3 {
                    acc += src.direction[w][r] * dst.direction[w][c];
                }
                m[r][c] = acc * dst.spacing[c] / src.spacing[r];
            }
            b[r] = (0..3).map(|w| src.direction[w][r] * d0[w]).sum::<f64>() / src.spacing[r];
        }
        IndexMap { m, b }
    }

    fn row_start(&self, j: usize, k: usize) -> [f64; 3] {
        let mut p = self.b;
        for r in 0..3 {
            p[r] += self.m[r][1] * j as f64 + self.m[r][2] * k as f64;
        }
        p
    }

    fn step(&self) -> [f64; 3] {
        [self.m[0][0], self.m[1][0], self.m[2][0]]
    }
}

fn inside(p: [f64; 3], n: [usize; 3]) -> bool {
    (0..3).all(|a| p[a] >= -0.5 && p[a] <= n[a] as f64 - 0.5)
}

/// Runs `sample(src_index) -> value` for every target voxel, rows in parallel.
fn map_grid<U, F>(src: &Geometry, target: &Geometry, sample: F) -> Vec<U>
where
    U: Copy + Send + Default,
    F: Fn([f64; 3]) -> U + Sync,
{
    let map = IndexMap::new(src, target);
    let step = map.step();
    let [nx, ny, _] = target.shape;
    let mut out = vec![U::default(); target.num_voxels()];
    out.par_chunks_mut(nx).enumerate().for_each(|(row, o)| {
        let (j, k) = (row % ny, row / ny);
        let mut p = map.row_start(j, k);
        for v in o.iter_mut() {
            *v = sample(p);
            for a in 0..3 {
                p[a] += step[a];
            }
        }
    });
    out
}

fn trilinear(data: &[f32], n: [usize; 3], p: [f64; 3]) -> f32 {
    let mut i0 = [0usize; 3];
    let mut f = [0f32; 3];
    for a in 0..3 {
        let x = p[a].clamp(0.0, (n[a] - 1) as f64);
        let fl = x.floor();
        i0[a] = (fl as usize).min(n[a].saturating_sub(2));
        f[a] = (x - i0[a] as f64) as f32;
        if n[a] == 1 {
            i0[a] = 0;
            f[a] = 0.0;
        }
    }
    let (sx, sy) = (1, n[0]);
    let sz = n[0] * n[1];
    let base = i0[0] + i0[1] * sy + i0[2] * sz;
    let dx = if n[0] > 1 { sx } else { 0 };
    let dy = if n[1] > 1 { sy } else { 0 };
    let dz = if n[2] > 1 { sz } else { 0 };
    let c = |o: usize| data[base + o];
    let c00 = c(0) * (1.0 - f[0]) + c(dx) * f[0];
    let c10 = c(dy) * (1.0 - f[0]) + c(dy + dx) * f[0];
    let c01 = c(dz) * (1.0 - f[0]) + c(dz + dx) * f[0];
    let c11 = c(dz + dy) * (1.0 - f[0]) + c(dz + dy + dx) * f[0];
    let c0 = c00 * (1.0 - f[1]) + c10 * f[1];
    let c1 = c01 * (1.0 - f[1]) + c11 * f[1];
    c0 * (1.0 - f[2]) + c1 * f[2]
}

fn nearest_index(p: [f64; 3], n: [usize; 3]) -> usize {
    let mut idx = [0usize; 3];
    for a in 0..3 {
        idx[a] = (p[a].round().max(0.0) as usize).min(n[a] - 1);
    }
    idx[0] + n[0] * (idx[1] + n[1] * idx[2])
}

/// In-place cubic B-spline prefilter along one line (Unser's recursive filter, pole
/// sqrt(3) - 2, mirror-symmetric boundaries). Written by hand: no maintained Rust crate
/// offers B-spline interpolation of 3D grids.
fn bspline_prefilter_line(c: &mut [f64]) {
    let n = c.len();
    if n < 2 {
        return;
    }
    let z = 3f64.sqrt() - 2.0;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    // Causal initialisation for mirror-symmetric boundaries: a truncated sum where the
    // pole's powers die out within the line, the exact closed form otherwise.
    let horizon = ((1e-10f64).ln() / z.abs().ln()).ceil() as usize;
    if horizon < n {
        let mut zn = z;
        let mut sum = c[0];
        for v in c.iter().take(horizon).skip(1) {
            sum += zn * v;
            zn *= z;
        }
        c[0] = sum;
    } else {
        let iz = 1.0 / z;
        let mut zn = z;
        let mut z2n = z.powi(n as i32 - 1);
        let mut sum = c[0] + z2n * c[n - 1];
        z2n = z2n * z2n * iz;
        for v in c.iter().take(n - 1).skip(1) {
            sum += (zn + z2n) * v;
            zn *= z;
            z2n *= iz;
        }
        c[0] = sum / (1.0 - zn * zn);
    }
    for k in 1..n {
        c[k] += z * c[k - 1];
    }
    c[n - 1] = (z / (z * z - 1.0)) * (z * c[n - 2] + c[n - 1]);
    for k in (0..n - 1).rev() {
        c[k] = z * (c[k + 1] - c[k]);
    }
}

fn bspline_coefficients(src: &Volume<f32>) -> Vec<f32> {
    let shape = src.geometry().shape;
    let mut c: Vec<f32> = src.as_slice().to_vec();
    for axis in 0..3 {
        for_each_line(&mut c, shape, axis, |inp, out| {
            let mut line: Vec<f64> = inp.iter().map(|&x| x as f64).collect();
            bspline_prefilter_line(&mut line);
            for (o, v) in out.iter_mut().zip(line) {
                *o = v as f32;
            }
        });
    }
    c
}

fn mirror(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let mut m = i.rem_euclid(period);
    if m >= n as isize {
        m = period - m;
    }
    m as usize
}

fn bspline_weights(t: f64) -> [f64; 4] {
    // t in [0, 1): weights of the samples at floor-1 .. floor+2.
    let t2 = t * t;
    let t3 = t2 * t;
    [
        (1.0 - t).powi(3) / 6.0,
        (3.0 * t3 - 6.0 * t2 + 4.0) / 6.0,
        (-3.0 * t3 + 3.0 * t2 + 3.0 * t + 1.0) / 6.0,
        t3 / 6.0,
    ]
}

fn bspline_sample(c: &[f32], n: [usize; 3], p: [f64; 3]) -> f32 {
    let mut idx = [[0usize; 4]; 3];
    let mut w = [[0f64; 4]; 3];
    for a in 0..3 {
        let x = p[a].clamp(0.0, (n[a] - 1) as f64);
        let fl = x.floor();
        w[a] = bspline_weights(x - fl);
        for t in 0..4 {
            idx[a][t] = mirror(fl as isize - 1 + t as isize, n[a]);
        }
    }
    let mut acc = 0.0;
    for (tz, wz) in w[2].iter().enumerate() {
        let oz = idx[2][tz] * n[0] * n[1];
        for (ty, wy) in w[1].iter().enumerate() {
            let oy = oz + idx[1][ty] * n[0];
            let mut row = 0.0;
            for (tx, wx) in w[0].iter().enumerate() {
                row += wx * c[oy + idx[0][tx]] as f64;
            }
            acc += wz * wy * row;
        }
    }
    acc as f32
}

/// Resamples an image onto `target` (any spacing, origin, direction).
pub fn resample(
    src: &Volume<f32>,
    target: &Geometry,
    interp: Interpolation,
    fill: f32,
) -> Volume<f32> {
    let g = src.geometry();
    let n = g.shape;
    let data = src.as_slice();
    let values = match interp {
        Interpolation::Nearest => map_grid(g, target, |p| {
            if inside(p, n) {
                data[nearest_index(p, n)]
            } else {
                fill
            }
        }),
        Interpolation::Linear => map_grid(g, target, |p| {
            if inside(p, n) {
                trilinear(data, n, p)
            } else {
                fill
            }
        }),
        Interpolation::BSpline3 => {
            let c = bspline_coefficients(src);
            map_grid(g, target, |p| {
                if inside(p, n) {
                    bspline_sample(&c, n, p)
                } else {
                    fill
                }
            })
        }
    };
    Volume::from_vec(target.clone(), values).expect("output sized from the target grid")
}

/// Resamples a label map onto `target`; outside the source field of view is background.
pub fn resample_labels(
    src: &Volume<u8>,
    target: &Geometry,
    interp: LabelInterpolation,
) -> Volume<u8> {
    let g = src.geometry();
    let n = g.shape;
    let data = src.as_slice();
    let values = match interp {
        LabelInterpolation::Nearest => map_grid(g, target, |p| {
            if inside(p, n) {
                data[nearest_index(p, n)]
            } else {
                0
            }
        }),
        LabelInterpolation::LinearOneHot => map_grid(g, target, |p| {
            if !inside(p, n) {
                return 0;
            }
            // The 8 trilinear neighbours and weights; the one-hot argmax only needs the
            // summed weight per distinct label among them.
            let mut i0 = [0usize; 3];
            let mut f = [0f64; 3];
            for a in 0..3 {
                let x = p[a].clamp(0.0, (n[a] - 1) as f64);
                i0[a] = (x.floor() as usize).min(n[a].saturating_sub(2));
                f[a] = if n[a] == 1 { 0.0 } else { x - i0[a] as f64 };
            }
            let mut labels = [0u8; 8];
            let mut weights = [0f64; 8];
            let mut used = 0;
            for corner in 0..8 {
                let d = [corner & 1, (corner >> 1) & 1, (corner >> 2) & 1];
                let mut w = 1.0;
                let mut idx = [0usize; 3];
                for a in 0..3 {
                    w *= if d[a] == 1 { f[a] } else { 1.0 - f[a] };
                    idx[a] = (i0[a] + d[a]).min(n[a] - 1);
                }
                let l = data[idx[0] + n[0] * (idx[1] + n[1] * idx[2])];
                match labels[..used].iter().position(|&x| x == l) {
                    Some(s) => weights[s] += w,
                    None => {
                        labels[used] = l;
                        weights[used] = w;
                        used += 1;
                    }
                }
            }
            let mut best = 0;
            for s in 1..used {
                if weights[s] > weights[best] + 1e-12
                    || ((weights[s] - weights[best]).abs() <= 1e-12 && labels[s] < labels[best])
                {
                    best = s;
                }
            }
            labels[best]
        }),
    };
    Volume::from_vec(target.clone(), values).expect("output sized from the target grid")
}

/// Resamples an image to a new spacing over the same field of view (nnU-Net's rule, see
/// `Geometry::with_spacing`).
pub fn resample_to_spacing(
    src: &Volume<f32>,
    spacing: [f64; 3],
    interp: Interpolation,
) -> Volume<f32> {
    let target = src.geometry().with_spacing(spacing);
    resample(src, &target, interp, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(g: &Geometry, f: impl Fn([f64; 3]) -> f64) -> Volume<f32> {
        let mut v = Volume::filled(g.clone(), 0.0f32);
        let [nx, ny, nz] = g.shape;
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    let w = g.index_to_world([i as f64, j as f64, k as f64]);
                    v.set(i, j, k, f(w) as f32);
                }
            }
        }
        v
    }

    fn rot_z(deg: f64) -> [[f64; 3]; 3] {
        let (s, c) = (deg.to_radians().sin(), deg.to_radians().cos());
        [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
    }

    #[test]
    fn linear_ramp_stays_a_ramp_on_an_oblique_grid() {
        let lin = |w: [f64; 3]| 2.0 * w[0] - 0.5 * w[1] + 1.5 * w[2] + 7.0;
        // Large enough that the target stays > 3 voxels from the source's edges, where the
        // B-spline's mirror boundary bends a ramp.
        let src_g = Geometry::new([44, 40, 24], [1.0, 1.2, 2.0], [-22.0, -24.0, -24.0]);
        let src = ramp(&src_g, lin);
        let dst_g = Geometry::new([12, 12, 12], [1.3, 0.9, 1.7], [-6.0, -5.0, -8.0])
            .with_direction(rot_z(20.0));
        for interp in [Interpolation::Linear, Interpolation::BSpline3] {
            let out = resample(&src, &dst_g, interp, -999.0);
            let want = ramp(&dst_g, lin);
            for (a, b) in out.as_slice().iter().zip(want.as_slice()) {
                assert!(
                    (a - b).abs() < 1e-3 * b.abs().max(1.0),
                    "{interp:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn same_grid_is_identity() {
        let g =
            Geometry::new([7, 6, 5], [0.7, 0.8, 3.0], [1.0, 2.0, 3.0]).with_direction(rot_z(33.0));
        let n = g.num_voxels();
        let v = Volume::from_vec(
            g.clone(),
            (0..n).map(|x| ((x * 7919) % 101) as f32).collect(),
        )
        .unwrap();
        for interp in [
            Interpolation::Nearest,
            Interpolation::Linear,
            Interpolation::BSpline3,
        ] {
            let out = resample(&v, &g, interp, 0.0);
            for (a, b) in out.as_slice().iter().zip(v.as_slice()) {
                assert!((a - b).abs() < 1e-3, "{interp:?}");
            }
        }
    }

    #[test]
    fn bspline_beats_linear_on_a_quadratic() {
        let q = |w: [f64; 3]| 0.05 * w[0] * w[0] + 0.03 * w[1] * w[1];
        let src_g = Geometry::new([24, 24, 6], [2.0, 2.0, 2.0], [-24.0, -24.0, 0.0]);
        let src = ramp(&src_g, q);
        let dst_g = Geometry::new([20, 20, 3], [1.7, 1.7, 2.0], [-17.0, -17.0, 2.0]);
        let want = ramp(&dst_g, q);
        let err = |interp| {
            let out = resample(&src, &dst_g, interp, 0.0);
            out.as_slice()
                .iter()
                .zip(want.as_slice())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max)
        };
        let (e_lin, e_bs) = (err(Interpolation::Linear), err(Interpolation::BSpline3));
        assert!(e_bs < 0.5 * e_lin, "bspline {e_bs} vs linear {e_lin}");
    }

    fn sphere_labels(g: &Geometry, c: [f64; 3], r: f64) -> Volume<u8> {
        let v = ramp(g, |w| {
            let d = ((w[0] - c[0]).powi(2) + (w[1] - c[1]).powi(2) + (w[2] - c[2]).powi(2)).sqrt();
            if d <= r {
                3.0
            } else {
                0.0
            }
        });
        v.map(|x| *x as u8)
    }

    #[test]
    fn sphere_keeps_its_volume() {
        let r = 12.0;
        let src_g = Geometry::new([64, 64, 32], [0.6, 0.6, 1.2], [-19.0, -19.0, -19.0]);
        let src = sphere_labels(&src_g, [0.0; 3], r);
        // A rotated target grid centred on the sphere, so it covers all of it.
        let dir = rot_z(25.0);
        let (n, sp) = ([30usize, 30, 16], [1.4, 1.4, 2.5]);
        let mut origin = [0.0; 3];
        for r in 0..3 {
            for c in 0..3 {
                origin[r] -= dir[r][c] * sp[c] * (n[c] as f64 - 1.0) / 2.0;
            }
        }
        let dst_g = Geometry::new(n, sp, origin).with_direction(dir);
        let out = resample_labels(&src, &dst_g, LabelInterpolation::LinearOneHot);
        let vol = out.as_slice().iter().filter(|&&x| x == 3).count() as f64
            * dst_g.voxel_volume_ml()
            * 1000.0;
        let exact = 4.0 / 3.0 * std::f64::consts::PI * r.powi(3);
        assert!((vol - exact).abs() / exact < 0.02, "{vol} vs {exact}");
        assert!(out.as_slice().iter().all(|&x| x == 0 || x == 3));
    }

    #[test]
    fn flipped_x_target_keeps_the_patients_left_on_the_left() {
        // A blob at the patient's left (+x LPS) stays at +x after resampling onto a grid
        // whose i axis points to the patient's right.
        let src_g = Geometry::new([20, 10, 10], [1.0; 3], [-10.0, -5.0, -5.0]);
        let mut src = Volume::filled(src_g, 0u8);
        for i in 15..18 {
            src.set(i, 5, 5, 1);
        }
        let dst_g = Geometry::new([20, 10, 10], [1.0; 3], [9.0, -5.0, -5.0]).with_direction([
            [-1.0, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
        ]);
        let out = resample_labels(&src, &dst_g, LabelInterpolation::Nearest);
        let (lo, hi) = out.bbox_nonzero().unwrap();
        for i in lo[0]..hi[0] {
            let w = dst_g.index_to_world([i as f64, 5.0, 5.0]);
            assert!(w[0] >= 5.0 && w[0] <= 7.0, "x = {}", w[0]);
        }
        assert_eq!(hi[0] - lo[0], 3);
    }

    #[test]
    fn outside_is_fill() {
        let g = Geometry::new([4, 4, 4], [1.0; 3], [0.0; 3]);
        let v = Volume::filled(g.clone(), 5.0f32);
        let far = Geometry::new([2, 2, 2], [1.0; 3], [100.0, 0.0, 0.0]);
        let out = resample(&v, &far, Interpolation::Linear, -1.0);
        assert!(out.as_slice().iter().all(|&x| x == -1.0));
    }
}
