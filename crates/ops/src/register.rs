//! Rigid registration of one CT onto another (six parameters: three translations, three
//! rotations about the fixed region's centre), for bringing the SPECT/CT time points of a
//! dosimetry study onto the CT the glands were outlined on.
//!
//! Why rigid and CT to CT: each SPECT/CT time point comes with its own low-dose CT in the
//! SPECT's frame, and between visits the patient's head moves as a whole (the skull and
//! the glands beside it barely deform), so a rigid transform found on the CTs carries the
//! activity image along. The metric is the normalised cross-correlation of HU in the
//! overlap (a low-dose CT's offset and noise do not bias it), on a two-level pyramid (4 mm,
//! then 2 mm), optimised by a pattern search (Hooke and Jeeves: try a step up and down each
//! parameter, keep what improves, halve the steps when nothing does). Written here because
//! the Rust crates that register images (none well kept for 3D medical volumes) would
//! bring their own image types; the search is about fifty lines over our `resample`, which
//! already maps any grid to any other.
//!
//! The transform is applied by changing the moving image's geometry (origin and
//! direction), not its voxels: [`Rigid::move_geometry`] gives the grid on which the moving
//! image's voxels lie in the fixed image's space, and `resample` does the rest, once.

use crate::resample::{resample, Interpolation};
use glandseg_core::geometry::{mat_mul, rotation_zyx, transpose, Mat3};
use glandseg_core::{Geometry, Volume};
use serde::{Deserialize, Serialize};

/// A rigid transform from fixed to moving world coordinates (LPS mm):
/// `x_moving = R (x_fixed - centre) + centre + translation`, `R = Rz Ry Rx`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rigid {
    /// Translation, mm.
    pub translation_mm: [f64; 3],
    /// Rotations about the L, P and S axes, degrees.
    pub rotation_deg: [f64; 3],
    /// Centre of rotation (LPS mm).
    pub centre_mm: [f64; 3],
}

impl Rigid {
    /// No motion about `centre_mm`.
    pub fn identity(centre_mm: [f64; 3]) -> Self {
        Rigid {
            translation_mm: [0.0; 3],
            rotation_deg: [0.0; 3],
            centre_mm,
        }
    }

    /// The rotation matrix `R`.
    pub fn rotation(&self) -> Mat3 {
        rotation_zyx(self.rotation_deg.map(f64::to_radians))
    }

    /// Maps a fixed-space point to the moving image's space.
    pub fn apply(&self, x: [f64; 3]) -> [f64; 3] {
        let r = self.rotation();
        let d = [0, 1, 2].map(|a| x[a] - self.centre_mm[a]);
        [0, 1, 2].map(|a| {
            (0..3).map(|b| r[a][b] * d[b]).sum::<f64>() + self.centre_mm[a] + self.translation_mm[a]
        })
    }

    /// The grid of an image in the moving space (`g`) as it lies in the fixed space: a
    /// voxel at moving-world `w` sits at fixed-world `T^-1(w) = R^T (w - centre -
    /// translation) + centre`. Resampling the moving image with this geometry onto a
    /// fixed grid pulls it into the fixed space.
    pub fn move_geometry(&self, g: &Geometry) -> Geometry {
        let rt = transpose(self.rotation());
        let d = [0, 1, 2].map(|a| g.origin[a] - self.centre_mm[a] - self.translation_mm[a]);
        let mut moved = g.clone();
        moved.origin =
            [0, 1, 2].map(|a| (0..3).map(|b| rt[a][b] * d[b]).sum::<f64>() + self.centre_mm[a]);
        moved.direction = mat_mul(rt, g.direction);
        moved
    }

    /// The largest displacement (mm) the transform gives a point within `radius_mm` of the
    /// centre: the translation plus the rotation's arc at that radius (a summary for logs).
    pub fn max_displacement_mm(&self, radius_mm: f64) -> f64 {
        let t = self
            .translation_mm
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        let r = self.rotation();
        // Rotation angle from the trace.
        let cos = ((r[0][0] + r[1][1] + r[2][2] - 1.0) / 2.0).clamp(-1.0, 1.0);
        t + cos.acos() * radius_mm
    }
}

/// Settings of [`register_rigid`].
#[derive(Clone, Debug)]
pub struct RigidOptions {
    /// Pyramid spacings, coarse first, mm.
    pub levels_mm: Vec<f64>,
    /// HU window the metric sees (metal streaks and air beyond it are clipped).
    pub hu_window: (f32, f32),
    /// First step of the search at the coarsest level: mm and degrees.
    pub initial_step: (f64, f64),
    /// The search stops at a level when its steps are below this fraction of the level's
    /// spacing.
    pub min_step_fraction: f64,
    /// Largest translation (mm) and rotation (degrees) accepted: beyond them the search
    /// has found another anatomy, and the result is refused.
    pub max_translation_mm: f64,
    /// Largest rotation about any axis, degrees.
    pub max_rotation_deg: f64,
}

impl Default for RigidOptions {
    fn default() -> Self {
        RigidOptions {
            levels_mm: vec![4.0, 2.0],
            hu_window: (-300.0, 1500.0),
            initial_step: (4.0, 4.0),
            min_step_fraction: 0.05,
            max_translation_mm: 60.0,
            max_rotation_deg: 30.0,
        }
    }
}

/// What [`register_rigid`] found.
#[derive(Clone, Debug, Serialize)]
pub struct RigidResult {
    /// Fixed -> moving.
    pub transform: Rigid,
    /// Normalised cross-correlation at the finest level before and after.
    pub ncc_before: f64,
    /// After the search.
    pub ncc_after: f64,
    /// Metric evaluations, all levels.
    pub evaluations: usize,
}

/// Normalised cross-correlation of `a` and `b` over the voxels where `b` is not NaN.
fn ncc(a: &[f32], b: &[f32]) -> f64 {
    let (mut n, mut sa, mut sb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        if !y.is_nan() {
            n += 1.0;
            sa += x as f64;
            sb += y as f64;
        }
    }
    if n < 8.0 {
        return -1.0;
    }
    let (ma, mb) = (sa / n, sb / n);
    let (mut sab, mut saa, mut sbb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        if !y.is_nan() {
            let (da, db) = (x as f64 - ma, y as f64 - mb);
            sab += da * db;
            saa += da * da;
            sbb += db * db;
        }
    }
    if saa <= 0.0 || sbb <= 0.0 {
        return -1.0;
    }
    // Overlap counts: a transform that slides the moving image half out of view must not
    // win on the few voxels left.
    let overlap = n / a.len() as f64;
    sab / (saa * sbb).sqrt() * overlap.min(1.0)
}

/// The voxel box of `g` (`[lo, hi)`, clipped) holding the world points `pts` grown by
/// `margin_mm`; None when it is empty.
fn box_near(g: &Geometry, pts: &[[f64; 3]], margin_mm: f64) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for p in pts {
        let idx = g.world_to_index(*p);
        for a in 0..3 {
            lo[a] = lo[a].min(idx[a]);
            hi[a] = hi[a].max(idx[a]);
        }
    }
    let l = [0, 1, 2].map(|a| (lo[a] - margin_mm / g.spacing[a]).floor().max(0.0));
    let h =
        [0, 1, 2].map(|a| ((hi[a] + margin_mm / g.spacing[a]).ceil() + 1.0).min(g.shape[a] as f64));
    if (0..3).any(|a| l[a] >= h[a] || l[a].is_nan() || h[a].is_nan()) {
        return None;
    }
    Some((l.map(|x| x as usize), h.map(|x| x as usize)))
}

/// The part of `v` within `margin_mm` of the box spanned by `corners` (world); all of `v`
/// when that part is empty (no overlap: the metric then says so).
fn crop_near(v: &Volume<f32>, corners: &[[f64; 3]; 8], margin_mm: f64) -> Volume<f32> {
    match box_near(v.geometry(), corners, margin_mm) {
        Some((lo, hi)) => v.crop(lo, hi).unwrap_or_else(|_| v.clone()),
        None => v.clone(),
    }
}

/// The voxels of grid `full` that lie within the field of `part` (a crop of the image
/// `full` resamples): a sub-grid with the same sample points.
fn cut_to(full: &Geometry, part: &Geometry) -> Geometry {
    match box_near(full, &part.corners(), 0.0) {
        Some((lo, hi)) => full.crop(lo, hi).unwrap_or_else(|_| full.clone()),
        None => full.clone(),
    }
}

fn clip(v: &Volume<f32>, w: (f32, f32)) -> Volume<f32> {
    v.map(|&x| x.clamp(w.0, w.1))
}

/// Registers `moving` (a CT) onto `fixed` (a CT) within `region` (a voxel box of
/// `fixed`'s grid, `[lo, hi)`: the part that matters, e.g. the glands grown by a few
/// centimetres). Returns the fixed -> moving transform. Errors (as text naming the
/// problem) when the images do not overlap or the search ends beyond the plausible
/// motion in `opts`.
pub fn register_rigid(
    fixed: &Volume<f32>,
    moving: &Volume<f32>,
    region: ([usize; 3], [usize; 3]),
    opts: &RigidOptions,
) -> Result<RigidResult, String> {
    let fixed_region = fixed
        .geometry()
        .crop(region.0, region.1)
        .map_err(|e| format!("registration region: {e}"))?;
    let centre = {
        let n = fixed_region.shape;
        fixed_region.index_to_world([0, 1, 2].map(|a| (n[a] as f64 - 1.0) / 2.0))
    };
    // Only what the metric can reach is clipped and blurred at each level: the region
    // grown by the blur's kernel and the interpolation (fixed), and by the largest motion
    // accepted as well (moving). A whole-body reference CT is not processed whole.
    let coarsest = opts.levels_mm.iter().cloned().fold(0.0f64, f64::max);
    let reach = |g: &Geometry| {
        let sp = g.spacing.iter().cloned().fold(0.0f64, f64::max);
        3.5 * coarsest / 2.0 + 2.0 * sp + coarsest.max(sp)
    };
    let corners = fixed_region.corners();
    let half_diagonal = {
        let (a, b) = (corners[0], corners[7]);
        (0..3).map(|i| (a[i] - b[i]).powi(2)).sum::<f64>().sqrt() / 2.0
    };
    let motion = opts.max_translation_mm
        + 2.0 * half_diagonal * (opts.max_rotation_deg.to_radians() / 2.0).sin().abs();
    let fixed_c = clip(
        &crop_near(fixed, &corners, reach(fixed.geometry())),
        opts.hu_window,
    );
    let moving_part = crop_near(moving, &corners, reach(moving.geometry()) + motion);
    let moving_c = clip(&moving_part, opts.hu_window);
    let mut t = Rigid::identity(centre);
    let mut evaluations = 0;
    let (mut step_mm, mut step_deg) = opts.initial_step;
    let mut first_last = (f64::NAN, f64::NAN);
    for (level, &sp) in opts.levels_mm.iter().enumerate() {
        // Smooth before sampling down (half the level's spacing as sigma), so the coarse
        // level sees anatomy, not noise.
        let sigma = [sp / 2.0; 3];
        let grid = fixed_region.with_spacing([0, 1, 2].map(|a| sp.max(fixed_region.spacing[a])));
        let f = resample(
            &crate::filter::gaussian_blur_mm(&fixed_c, sigma),
            &grid,
            Interpolation::Linear,
            opts.hu_window.0,
        );
        // The level's grid of the whole moving image, cut to the part kept: the same
        // sample points as without the cut.
        let m_full = moving
            .geometry()
            .with_spacing([0, 1, 2].map(|a| sp.max(moving.geometry().spacing[a])));
        let m_grid = cut_to(&m_full, moving_part.geometry());
        let mut m = resample(
            &crate::filter::gaussian_blur_mm(&moving_c, sigma),
            &m_grid,
            Interpolation::Linear,
            opts.hu_window.0,
        );
        let fvals = f.as_slice();
        let mut cost = |t: &Rigid| -> f64 {
            evaluations += 1;
            m.set_geometry(t.move_geometry(&m_grid))
                .expect("the same shape");
            let pulled = resample(&m, &grid, Interpolation::Linear, f32::NAN);
            -ncc(fvals, pulled.as_slice())
        };
        let mut best = cost(&t);
        if level + 1 == opts.levels_mm.len() {
            first_last.0 = -best;
        }
        let min_mm = opts.min_step_fraction * sp;
        while step_mm >= min_mm {
            let mut improved = false;
            for p in 0..6 {
                for sign in [1.0, -1.0] {
                    let mut c = t;
                    if p < 3 {
                        c.translation_mm[p] += sign * step_mm;
                    } else {
                        c.rotation_deg[p - 3] += sign * step_deg;
                    }
                    let v = cost(&c);
                    if v < best {
                        best = v;
                        t = c;
                        improved = true;
                        break;
                    }
                }
            }
            if !improved {
                step_mm /= 2.0;
                step_deg /= 2.0;
            }
        }
        first_last.1 = -best;
        // The next level starts where this one's steps ended, a little wider.
        step_mm = (step_mm * 4.0).max(sp / 2.0);
        step_deg = (step_deg * 4.0).max(0.5);
    }
    if t.translation_mm
        .iter()
        .any(|x| x.abs() > opts.max_translation_mm)
        || t.rotation_deg
            .iter()
            .any(|x| x.abs() > opts.max_rotation_deg)
    {
        return Err(format!(
            "the rigid registration ended at a translation of {:.1?} mm and a rotation of \
             {:.1?} degrees, beyond the {} mm / {} degrees a patient moves between time \
             points: the CTs may not show the same anatomy",
            t.translation_mm, t.rotation_deg, opts.max_translation_mm, opts.max_rotation_deg
        ));
    }
    if first_last.1.is_nan() || first_last.1 <= 0.0 {
        return Err(format!(
            "the CTs hardly overlap or do not correlate (normalised cross-correlation {:.3})",
            first_last.1
        ));
    }
    Ok(RigidResult {
        transform: t,
        ncc_before: first_last.0,
        ncc_after: first_last.1,
        evaluations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The moving image's level grid cut to a crop keeps the whole grid's sample points,
    /// and covers the crop.
    #[test]
    fn cut_grid_keeps_the_sample_points() {
        let g = Geometry::new([100, 90, 80], [0.9, 0.9, 2.5], [-40.0, -30.0, -100.0]);
        let full = g.with_spacing([4.0, 4.0, 4.0]);
        let part = g.crop([20, 10, 5], [70, 60, 50]).unwrap();
        let cut = cut_to(&full, &part);
        for a in 0..3 {
            let steps = (cut.origin[a] - full.origin[a]) / full.spacing[a];
            assert!((steps - steps.round()).abs() < 1e-9, "axis {a}: {steps}");
            assert!(cut.shape[a] < full.shape[a]);
        }
        let (lo, hi) = (part.corners()[0], part.corners()[7]);
        let (clo, chi) = (cut.corners()[0], cut.corners()[7]);
        for a in 0..3 {
            assert!(clo[a] <= lo[a] + 1e-9 && chi[a] >= hi[a] - 1e-9, "axis {a}");
        }
        // No overlap: the whole grid (the metric then reports it).
        let far = Geometry::new([5, 5, 5], [1.0; 3], [900.0, 0.0, 0.0]);
        assert_eq!(cut_to(&full, &far).shape, full.shape);
    }

    /// A head-like CT: an ellipsoid of soft tissue with a bone shell and two dense
    /// off-centre blobs (so every rotation shows), in air.
    fn head(g: &Geometry, t: &Rigid) -> Volume<f32> {
        let mut v = Volume::filled(g.clone(), -1000f32);
        let [nx, ny, nz] = g.shape;
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    // The image shows the anatomy moved by t (x_moving = T(x_fixed)): what
                    // lies at point y is the unmoved anatomy at T^-1(y).
                    let y = g.index_to_world([i as f64, j as f64, k as f64]);
                    let x = inverse(t, y);
                    let e = (x[0] / 60.0).powi(2) + (x[1] / 75.0).powi(2) + (x[2] / 70.0).powi(2);
                    let mut hu = if e < 0.8 {
                        40.0
                    } else if e < 1.0 {
                        900.0
                    } else {
                        -1000.0
                    };
                    for (c, r, val) in [
                        ([25.0, -20.0, 10.0], 10.0, 600.0),
                        ([-30.0, 25.0, -20.0], 8.0, 300.0),
                    ] {
                        let d2: f64 = (0..3).map(|a| (x[a] - c[a]).powi(2)).sum();
                        if d2 < r * r {
                            hu = val;
                        }
                    }
                    v.set(i, j, k, hu as f32);
                }
            }
        }
        v
    }

    fn inverse(t: &Rigid, y: [f64; 3]) -> [f64; 3] {
        let r = t.rotation();
        let d = [0, 1, 2].map(|a| y[a] - t.centre_mm[a] - t.translation_mm[a]);
        [0, 1, 2].map(|a| (0..3).map(|b| r[b][a] * d[b]).sum::<f64>() + t.centre_mm[a])
    }

    #[test]
    fn move_geometry_places_each_voxel_at_the_inverse_transform() {
        let g = Geometry::new([5, 6, 7], [1.5, 2.0, 2.5], [-3.0, 4.0, 10.0]);
        let t = Rigid {
            translation_mm: [3.0, -2.0, 5.0],
            rotation_deg: [4.0, -7.0, 10.0],
            centre_mm: [1.0, 2.0, 3.0],
        };
        let moved = t.move_geometry(&g);
        for ijk in [[0.0, 0.0, 0.0], [4.0, 5.0, 6.0], [2.0, 1.0, 3.0]] {
            let w = g.index_to_world(ijk);
            let w_fixed = moved.index_to_world(ijk);
            let back = t.apply(w_fixed);
            for a in 0..3 {
                assert!((back[a] - w[a]).abs() < 1e-9, "{back:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn recovers_a_known_head_motion() {
        let g = Geometry::new([64, 64, 48], [3.0, 3.0, 3.5], [-96.0, -96.0, -84.0]);
        let truth = Rigid {
            translation_mm: [4.0, -3.0, 2.5],
            rotation_deg: [2.0, -3.0, 4.0],
            centre_mm: [0.0; 3],
        };
        let fixed = head(&g, &Rigid::identity([0.0; 3]));
        let moving = head(&g, &truth);
        let n = g.shape;
        let r = register_rigid(
            &fixed,
            &moving,
            ([4, 4, 4], [n[0] - 4, n[1] - 4, n[2] - 4]),
            &Default::default(),
        )
        .unwrap();
        assert!(r.ncc_after > r.ncc_before, "{r:?}");
        // Compare as point maps over the head (the centre of rotation differs).
        for p in [
            [0.0, 0.0, 0.0],
            [50.0, 0.0, 0.0],
            [0.0, 60.0, 30.0],
            [-40.0, -40.0, -40.0],
        ] {
            let want = truth.apply(p);
            let got = r.transform.apply(p);
            let err: f64 = (0..3)
                .map(|a| (want[a] - got[a]).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(err < 1.0, "point {p:?}: {err:.2} mm off ({r:?})");
        }
    }

    #[test]
    fn refuses_images_that_do_not_overlap() {
        let g = Geometry::new([16, 16, 16], [4.0; 3], [0.0; 3]);
        let fixed = head(&g, &Rigid::identity([0.0; 3]));
        let far = Geometry::new([16, 16, 16], [4.0; 3], [5000.0, 0.0, 0.0]);
        let moving = head(&far, &Rigid::identity([0.0; 3]));
        assert!(register_rigid(&fixed, &moving, ([0; 3], [16; 3]), &Default::default()).is_err());
    }
}
