//! Where voxels are in the patient. A [`Geometry`] is the four things that place a grid in
//! the world — shape, spacing, origin and direction — in DICOM LPS millimetres. Every
//! volume carries one, so no stage ever has to guess how an array maps to the patient;
//! NIfTI's RAS and DICOM's per-slice positions are converted to this at the file edge.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub type Vec3 = [f64; 3];
/// Row-major 3x3 matrix: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

pub const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// `a · b`.
pub fn mat_mul(a: Mat3, b: Mat3) -> Mat3 {
    let mut c = [[0.0; 3]; 3];
    for r in 0..3 {
        for col in 0..3 {
            c[r][col] = (0..3).map(|x| a[r][x] * b[x][col]).sum();
        }
    }
    c
}

/// `aᵀ`.
pub fn transpose(a: Mat3) -> Mat3 {
    let mut t = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            t[c][r] = a[r][c];
        }
    }
    t
}

/// The rotation `Rz Ry Rx` by the given angles (radians) about the three axes: the
/// convention of training's spatial augmentation and of rigid registration.
pub fn rotation_zyx(angles: Vec3) -> Mat3 {
    let (s, c) = angles[0].sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]];
    let (s, c) = angles[1].sin_cos();
    let ry = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]];
    let (s, c) = angles[2].sin_cos();
    let rz = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]];
    mat_mul(rz, mat_mul(ry, rx))
}

/// A regular 3D grid in DICOM patient coordinates (LPS, mm).
///
/// `world = origin + direction · diag(spacing) · (i, j, k)`: column `c` of `direction` is
/// the unit world vector along voxel axis `c` (ITK's convention), `origin` is the world
/// position of the centre of voxel `(0, 0, 0)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Number of voxels along `(i, j, k)`.
    pub shape: [usize; 3],
    /// Voxel size along `(i, j, k)` in mm, all > 0.
    pub spacing: Vec3,
    /// World (LPS) position of voxel `(0, 0, 0)`'s centre.
    pub origin: Vec3,
    /// Columns are the unit LPS directions of the `i`, `j`, `k` axes.
    pub direction: Mat3,
}

/// Default tolerance for [`Geometry::same_grid`]: 1e-4 of a voxel in position, 1e-5 in
/// direction cosines — tight enough that resampling would change nothing, loose enough to
/// survive float32 round trips through NIfTI headers.
pub const GRID_TOLERANCE: f64 = 1e-4;

impl Geometry {
    /// An axis-aligned LPS grid (identity direction).
    pub fn new(shape: [usize; 3], spacing: Vec3, origin: Vec3) -> Self {
        Geometry {
            shape,
            spacing,
            origin,
            direction: IDENTITY,
        }
    }

    pub fn with_direction(mut self, direction: Mat3) -> Self {
        self.direction = direction;
        self
    }

    /// Checks the invariants a geometry read from a file must meet: positive finite
    /// spacing, finite origin, an orthonormal direction matrix and no empty axis.
    pub fn validate(&self) -> Result<()> {
        if self.shape.contains(&0) {
            return Err(Error::Geometry(format!(
                "empty axis in shape {:?}",
                self.shape
            )));
        }
        if !self.spacing.iter().all(|s| s.is_finite() && *s > 0.0) {
            return Err(Error::Geometry(format!(
                "spacing must be positive and finite, got {:?}",
                self.spacing
            )));
        }
        if !self.origin.iter().all(|o| o.is_finite()) {
            return Err(Error::Geometry(format!(
                "origin not finite: {:?}",
                self.origin
            )));
        }
        let d = &self.direction;
        for a in 0..3 {
            for b in 0..3 {
                let dot: f64 = (0..3).map(|r| d[r][a] * d[r][b]).sum();
                let want = if a == b { 1.0 } else { 0.0 };
                if !dot.is_finite() || (dot - want).abs() > 1e-3 {
                    return Err(Error::Geometry(format!(
                        "direction matrix is not orthonormal: {:?}",
                        self.direction
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn num_voxels(&self) -> usize {
        self.shape.iter().product()
    }

    /// Volume of one voxel in mL (= cm³).
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing.iter().product::<f64>() / 1000.0
    }

    /// Shape in ndarray order `[k, j, i]`.
    pub fn array_shape(&self) -> [usize; 3] {
        [self.shape[2], self.shape[1], self.shape[0]]
    }

    /// Continuous voxel index `(i, j, k)` -> world LPS mm.
    pub fn index_to_world(&self, ijk: Vec3) -> Vec3 {
        let mut p = self.origin;
        for (r, pr) in p.iter_mut().enumerate() {
            for c in 0..3 {
                *pr += self.direction[r][c] * self.spacing[c] * ijk[c];
            }
        }
        p
    }

    /// World LPS mm -> continuous voxel index `(i, j, k)`. The direction matrix is
    /// orthonormal, so its inverse is its transpose.
    pub fn world_to_index(&self, p: Vec3) -> Vec3 {
        let d = [
            p[0] - self.origin[0],
            p[1] - self.origin[1],
            p[2] - self.origin[2],
        ];
        let mut ijk = [0.0; 3];
        for c in 0..3 {
            let proj: f64 = (0..3).map(|r| self.direction[r][c] * d[r]).sum();
            ijk[c] = proj / self.spacing[c];
        }
        ijk
    }

    /// The 4x4 voxel-to-world matrix (LPS).
    pub fn affine(&self) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = self.direction[r][c] * self.spacing[c];
            }
            a[r][3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// Builds a geometry from a 4x4 voxel-to-world matrix (LPS). Column norms give the
    /// spacing; the direction is orthonormalised (Gram-Schmidt in axis order), because a
    /// sheared affine from a float32 header must not leak shear into resampling.
    pub fn from_affine(shape: [usize; 3], affine: &[[f64; 4]; 4]) -> Result<Self> {
        let mut spacing = [0.0; 3];
        let mut cols = [[0.0; 3]; 3];
        for c in 0..3 {
            let v = [affine[0][c], affine[1][c], affine[2][c]];
            let n = norm(v);
            if !(n.is_finite() && n > 0.0) {
                return Err(Error::Geometry(format!(
                    "affine column {c} has zero or non-finite length: {v:?}"
                )));
            }
            spacing[c] = n;
            cols[c] = [v[0] / n, v[1] / n, v[2] / n];
        }
        let cols = orthonormalize(cols)?;
        let mut direction = [[0.0; 3]; 3];
        for r in 0..3 {
            for c in 0..3 {
                direction[r][c] = cols[c][r];
            }
        }
        let g = Geometry {
            shape,
            spacing,
            origin: [affine[0][3], affine[1][3], affine[2][3]],
            direction,
        };
        g.validate()?;
        Ok(g)
    }

    /// True when both grids place every voxel at the same world point (within `tol` of a
    /// voxel) and have the same shape — only then may two arrays be combined voxel by voxel.
    pub fn same_grid(&self, other: &Geometry, tol: f64) -> bool {
        if self.shape != other.shape {
            return false;
        }
        for c in 0..3 {
            if (self.spacing[c] - other.spacing[c]).abs() > tol * self.spacing[c] {
                return false;
            }
            for r in 0..3 {
                if (self.direction[r][c] - other.direction[r][c]).abs() > tol.max(1e-5) {
                    return false;
                }
            }
        }
        let min_sp = self.spacing.iter().cloned().fold(f64::INFINITY, f64::min);
        let d = norm([
            self.origin[0] - other.origin[0],
            self.origin[1] - other.origin[1],
            self.origin[2] - other.origin[2],
        ]);
        d <= tol * min_sp
    }

    /// The grid of the sub-block `[lo, hi)` (voxel indices, exclusive upper bound).
    pub fn crop(&self, lo: [usize; 3], hi: [usize; 3]) -> Result<Geometry> {
        for a in 0..3 {
            if lo[a] >= hi[a] || hi[a] > self.shape[a] {
                return Err(Error::Shape(format!(
                    "crop [{lo:?}, {hi:?}) is empty or outside shape {:?}",
                    self.shape
                )));
            }
        }
        Ok(self.region(
            [lo[0] as isize, lo[1] as isize, lo[2] as isize],
            [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]],
        ))
    }

    /// The grid of a block of `size` voxels starting at voxel `start` (which may be
    /// negative or reach past the end: padding). Same spacing and direction.
    pub fn region(&self, start: [isize; 3], size: [usize; 3]) -> Geometry {
        let origin = self.index_to_world([start[0] as f64, start[1] as f64, start[2] as f64]);
        Geometry {
            shape: size,
            spacing: self.spacing,
            origin,
            direction: self.direction,
        }
    }

    /// The grid that covers the same field of view at a new spacing: voxel (0,0,0) stays
    /// where it is and the shape is `round(shape * old / new)`, as nnU-Net resamples.
    pub fn with_spacing(&self, spacing: Vec3) -> Geometry {
        let mut shape = [0; 3];
        for a in 0..3 {
            shape[a] =
                ((self.shape[a] as f64 * self.spacing[a] / spacing[a]).round() as usize).max(1);
        }
        Geometry {
            shape,
            spacing,
            origin: self.origin,
            direction: self.direction,
        }
    }

    /// World-space corners of the voxel-centre bounding box, for extents and overlaps.
    pub fn corners(&self) -> [Vec3; 8] {
        let mut out = [[0.0; 3]; 8];
        for (n, o) in out.iter_mut().enumerate() {
            let ijk = [
                if n & 1 == 0 {
                    0.0
                } else {
                    (self.shape[0] - 1) as f64
                },
                if n & 2 == 0 {
                    0.0
                } else {
                    (self.shape[1] - 1) as f64
                },
                if n & 4 == 0 {
                    0.0
                } else {
                    (self.shape[2] - 1) as f64
                },
            ];
            *o = self.index_to_world(ijk);
        }
        out
    }

    /// Three-letter orientation code of the voxel axes in the LPS world, e.g. `"LPS"` for
    /// an identity direction, `"RAS"` for i toward the right, j anterior, k superior (the
    /// letter names where each axis *points*, as ITK and 3D Slicer say it).
    pub fn orientation_code(&self) -> String {
        let mut s = String::new();
        for c in 0..3 {
            let col = [
                self.direction[0][c],
                self.direction[1][c],
                self.direction[2][c],
            ];
            let (mut best, mut r) = (0.0, 0);
            for (row, v) in col.iter().enumerate() {
                if v.abs() > best {
                    best = v.abs();
                    r = row;
                }
            }
            let pos = col[r] >= 0.0;
            s.push(match (r, pos) {
                (0, true) => 'L',
                (0, false) => 'R',
                (1, true) => 'P',
                (1, false) => 'A',
                (2, true) => 'S',
                _ => 'I',
            });
        }
        s
    }

    /// The voxel axis that runs most nearly along world axis `world_axis` (0 = x/LR,
    /// 1 = y/AP, 2 = z/SI), and whether it points the same way. Used by laterality-aware
    /// mirroring: "flip left-right" means flipping whichever voxel axis is the LR one.
    pub fn axis_along(&self, world_axis: usize) -> (usize, bool) {
        let row = self.direction[world_axis];
        let mut best = 0;
        for c in 1..3 {
            if row[c].abs() > row[best].abs() {
                best = c;
            }
        }
        (best, row[best] >= 0.0)
    }
}

pub fn norm(v: Vec3) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn orthonormalize(mut cols: [Vec3; 3]) -> Result<[Vec3; 3]> {
    for c in 0..3 {
        for p in 0..c {
            let dot: f64 = (0..3).map(|r| cols[c][r] * cols[p][r]).sum();
            for r in 0..3 {
                cols[c][r] -= dot * cols[p][r];
            }
        }
        let n = norm(cols[c]);
        if n < 1e-6 {
            return Err(Error::Geometry(
                "direction columns are (nearly) parallel: the affine is singular".into(),
            ));
        }
        for r in 0..3 {
            cols[c][r] /= n;
        }
    }
    Ok(cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        // 30 degrees about z, then axes swapped: a non-trivial orthonormal direction.
        let (s, c) = (30f64.to_radians().sin(), 30f64.to_radians().cos());
        Geometry {
            shape: [10, 20, 30],
            spacing: [0.8, 1.2, 2.5],
            origin: [-12.0, 40.0, 7.5],
            direction: [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn world_index_round_trip() {
        let g = oblique();
        g.validate().unwrap();
        for ijk in [[0.0, 0.0, 0.0], [3.5, 7.25, 29.0], [-1.0, 2.0, 3.0]] {
            let w = g.index_to_world(ijk);
            let back = g.world_to_index(w);
            for a in 0..3 {
                assert!((back[a] - ijk[a]).abs() < 1e-12);
            }
        }
        // One step along k moves 2.5 mm along +z (superior).
        let a = g.index_to_world([0.0, 0.0, 0.0]);
        let b = g.index_to_world([0.0, 0.0, 1.0]);
        assert!((b[2] - a[2] - 2.5).abs() < 1e-12);
    }

    #[test]
    fn affine_round_trip() {
        let g = oblique();
        let back = Geometry::from_affine(g.shape, &g.affine()).unwrap();
        assert!(g.same_grid(&back, 1e-9));
    }

    #[test]
    fn crop_keeps_world_positions() {
        let g = oblique();
        let c = g.crop([2, 3, 4], [8, 10, 20]).unwrap();
        assert_eq!(c.shape, [6, 7, 16]);
        let w_full = g.index_to_world([5.0, 6.0, 7.0]);
        let w_crop = c.index_to_world([3.0, 3.0, 3.0]);
        for a in 0..3 {
            assert!((w_full[a] - w_crop[a]).abs() < 1e-9);
        }
        assert!(g.crop([2, 3, 4], [2, 10, 20]).is_err());
        assert!(g.crop([0, 0, 0], [11, 1, 1]).is_err());
    }

    #[test]
    fn same_grid_tolerance() {
        let g = oblique();
        let mut h = g.clone();
        h.origin[0] += 1e-6;
        assert!(g.same_grid(&h, GRID_TOLERANCE));
        h.origin[0] += 0.1;
        assert!(!g.same_grid(&h, GRID_TOLERANCE));
        let mut s = g.clone();
        s.shape[0] += 1;
        assert!(!g.same_grid(&s, GRID_TOLERANCE));
    }

    #[test]
    fn orientation_codes() {
        assert_eq!(
            Geometry::new([1, 1, 1], [1.0; 3], [0.0; 3]).orientation_code(),
            "LPS"
        );
        let ras = Geometry::new([1, 1, 1], [1.0; 3], [0.0; 3]).with_direction([
            [-1.0, 0.0, 0.0],
            [0.0, -1.0, 0.0],
            [0.0, 0.0, 1.0],
        ]);
        assert_eq!(ras.orientation_code(), "RAS");
        assert_eq!(ras.axis_along(0), (0, false));
    }

    #[test]
    fn validate_rejects_bad_geometry() {
        let mut g = oblique();
        g.spacing[1] = 0.0;
        assert!(g.validate().is_err());
        let mut g = oblique();
        g.direction[0][0] = 2.0;
        assert!(g.validate().is_err());
        let mut g = oblique();
        g.origin[2] = f64::NAN;
        assert!(g.validate().is_err());
    }

    #[test]
    fn with_spacing_keeps_extent() {
        let g = Geometry::new([100, 100, 40], [1.0, 1.0, 3.0], [0.0; 3]);
        let h = g.with_spacing([2.0, 2.0, 2.0]);
        assert_eq!(h.shape, [50, 50, 60]);
    }
}
