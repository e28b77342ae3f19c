//! Smooth implicit solids (signed distance functions, negative inside, in mm) and the
//! constructive geometry to combine them. Anatomy is built from these: an SDF gives
//! partial-volume edges for free (occupancy from the distance to the surface) and makes
//! random smooth deformation a matter of warping the query point.

use glandseg_core::{Mat3, Vec3};

#[derive(Clone, Debug)]
pub enum Shape {
    /// Centre, radii along the local axes, rotation (columns = local axes in the frame).
    Ellipsoid {
        c: Vec3,
        r: Vec3,
        rot: Mat3,
    },
    /// Segment a-b with radius r.
    Capsule {
        a: Vec3,
        b: Vec3,
        r: f64,
    },
    /// Points with `dot(n, p) >= d` (n unit): a half space, for cutting.
    HalfSpace {
        n: Vec3,
        d: f64,
    },
    Union(Vec<Shape>),
    /// First minus the others.
    Subtract(Box<Shape>, Vec<Shape>),
    Intersect(Box<Shape>, Box<Shape>),
    /// Grows (d > 0) or shrinks (d < 0) the surface by d mm.
    Offset(Box<Shape>, f64),
    /// Smooth random deformation: the query point is displaced by a sum of sinusoids.
    Warped(Box<Shape>, Warp),
}

/// A smooth displacement field `u(p) = Σ a_m sin(k_m · p + φ_m)`.
#[derive(Clone, Debug)]
pub struct Warp {
    pub terms: Vec<(Vec3, Vec3, f64)>, // (amplitude vector, wave vector, phase)
}

impl Warp {
    pub fn amplitude(&self) -> f64 {
        self.terms.iter().map(|(a, _, _)| norm(*a)).sum()
    }
    fn apply(&self, p: Vec3) -> Vec3 {
        let mut q = p;
        for (a, k, ph) in &self.terms {
            let s = (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + ph).sin();
            for d in 0..3 {
                q[d] += a[d] * s;
            }
        }
        q
    }
}

pub fn norm(v: Vec3) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

pub const I3: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

/// Rotation about x, then y, then z (degrees), as `Rz · Ry · Rx`.
pub fn rotation(deg: Vec3) -> Mat3 {
    let (a, b, c) = (
        deg[0].to_radians(),
        deg[1].to_radians(),
        deg[2].to_radians(),
    );
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, a.cos(), -a.sin()],
        [0.0, a.sin(), a.cos()],
    ];
    let ry = [
        [b.cos(), 0.0, b.sin()],
        [0.0, 1.0, 0.0],
        [-b.sin(), 0.0, b.cos()],
    ];
    let rz = [
        [c.cos(), -c.sin(), 0.0],
        [c.sin(), c.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    matmul(rz, matmul(ry, rx))
}

pub fn matmul(a: Mat3, b: Mat3) -> Mat3 {
    let mut m = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            m[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    m
}

pub fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    ]
}

pub fn mat_t_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

/// Axis-aligned box `[lo, hi]` in the anatomical frame.
pub type Aabb = (Vec3, Vec3);

impl Shape {
    pub fn ellipsoid(c: Vec3, r: Vec3) -> Shape {
        Shape::Ellipsoid { c, r, rot: I3 }
    }

    pub fn ellipsoid_rot(c: Vec3, r: Vec3, deg: Vec3) -> Shape {
        Shape::Ellipsoid {
            c,
            r,
            rot: rotation(deg),
        }
    }

    pub fn capsule(a: Vec3, b: Vec3, r: f64) -> Shape {
        Shape::Capsule { a, b, r }
    }

    /// Chain of capsules through `points`.
    pub fn tube(points: &[Vec3], r: f64) -> Shape {
        Shape::Union(
            points
                .windows(2)
                .map(|w| Shape::capsule(w[0], w[1], r))
                .collect(),
        )
    }

    pub fn offset(self, d: f64) -> Shape {
        Shape::Offset(Box::new(self), d)
    }

    pub fn minus(self, others: Vec<Shape>) -> Shape {
        Shape::Subtract(Box::new(self), others)
    }

    pub fn intersect(self, other: Shape) -> Shape {
        Shape::Intersect(Box::new(self), Box::new(other))
    }

    pub fn warped(self, w: Warp) -> Shape {
        Shape::Warped(Box::new(self), w)
    }

    /// Signed distance (approximate for ellipsoids and combinations), mm.
    pub fn sdf(&self, p: Vec3) -> f64 {
        match self {
            Shape::Ellipsoid { c, r, rot } => {
                let q = mat_t_vec(rot, [p[0] - c[0], p[1] - c[1], p[2] - c[2]]);
                // Quilez's ellipsoid bound: exact on the surface, smooth elsewhere.
                let k0 = norm([q[0] / r[0], q[1] / r[1], q[2] / r[2]]);
                let k1 = norm([
                    q[0] / (r[0] * r[0]),
                    q[1] / (r[1] * r[1]),
                    q[2] / (r[2] * r[2]),
                ]);
                if k1 == 0.0 {
                    -r[0].min(r[1]).min(r[2])
                } else {
                    k0 * (k0 - 1.0) / k1
                }
            }
            Shape::Capsule { a, b, r } => {
                let pa = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
                let ba = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
                let bb = ba[0] * ba[0] + ba[1] * ba[1] + ba[2] * ba[2];
                let h = if bb > 0.0 {
                    ((pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) / bb).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                norm([pa[0] - ba[0] * h, pa[1] - ba[1] * h, pa[2] - ba[2] * h]) - r
            }
            Shape::HalfSpace { n, d } => d - (n[0] * p[0] + n[1] * p[1] + n[2] * p[2]),
            Shape::Union(v) => v.iter().map(|s| s.sdf(p)).fold(f64::INFINITY, f64::min),
            Shape::Subtract(a, others) => {
                let mut d = a.sdf(p);
                for o in others {
                    d = d.max(-o.sdf(p));
                }
                d
            }
            Shape::Intersect(a, b) => a.sdf(p).max(b.sdf(p)),
            Shape::Offset(s, d) => s.sdf(p) - d,
            Shape::Warped(s, w) => s.sdf(w.apply(p)),
        }
    }

    /// A box that contains the solid (conservative).
    pub fn bounds(&self) -> Aabb {
        match self {
            Shape::Ellipsoid { c, r, rot } => {
                let mut e = [0.0; 3];
                for (d, ed) in e.iter_mut().enumerate() {
                    *ed = (0..3)
                        .map(|k| (rot[d][k] * r[k]).abs())
                        .sum::<f64>()
                        .min(r[0].max(r[1]).max(r[2]));
                }
                (
                    [c[0] - e[0], c[1] - e[1], c[2] - e[2]],
                    [c[0] + e[0], c[1] + e[1], c[2] + e[2]],
                )
            }
            Shape::Capsule { a, b, r } => {
                let mut lo = [0.0; 3];
                let mut hi = [0.0; 3];
                for d in 0..3 {
                    lo[d] = a[d].min(b[d]) - r;
                    hi[d] = a[d].max(b[d]) + r;
                }
                (lo, hi)
            }
            Shape::HalfSpace { .. } => ([-1e4; 3], [1e4; 3]),
            Shape::Union(v) => v
                .iter()
                .map(|s| s.bounds())
                .fold(([1e9; 3], [-1e9; 3]), |a, b| {
                    let mut lo = a.0;
                    let mut hi = a.1;
                    for d in 0..3 {
                        lo[d] = lo[d].min(b.0[d]);
                        hi[d] = hi[d].max(b.1[d]);
                    }
                    (lo, hi)
                }),
            Shape::Subtract(a, _) => a.bounds(),
            Shape::Intersect(a, b) => {
                let (x, y) = (a.bounds(), b.bounds());
                let mut lo = x.0;
                let mut hi = x.1;
                for d in 0..3 {
                    lo[d] = lo[d].max(y.0[d]);
                    hi[d] = hi[d].min(y.1[d]);
                }
                (lo, hi)
            }
            Shape::Offset(s, d) => {
                let (lo, hi) = s.bounds();
                let g = d.max(0.0);
                (
                    [lo[0] - g, lo[1] - g, lo[2] - g],
                    [hi[0] + g, hi[1] + g, hi[2] + g],
                )
            }
            Shape::Warped(s, w) => {
                let (lo, hi) = s.bounds();
                let g = w.amplitude() + 1.0;
                (
                    [lo[0] - g, lo[1] - g, lo[2] - g],
                    [hi[0] + g, hi[1] + g, hi[2] + g],
                )
            }
        }
    }

    /// Scales radii (not centres) of every ellipsoid and capsule by `f`, around each
    /// primitive's own centre: how a gland is grown or shrunk to hit a target volume.
    pub fn scaled_in_place(&self, f: f64) -> Shape {
        match self {
            Shape::Ellipsoid { c, r, rot } => Shape::Ellipsoid {
                c: *c,
                r: [r[0] * f, r[1] * f, r[2] * f],
                rot: *rot,
            },
            Shape::Capsule { a, b, r } => Shape::Capsule {
                a: *a,
                b: *b,
                r: r * f,
            },
            Shape::HalfSpace { .. } => self.clone(),
            Shape::Union(v) => Shape::Union(v.iter().map(|s| s.scaled_in_place(f)).collect()),
            Shape::Subtract(a, o) => Shape::Subtract(Box::new(a.scaled_in_place(f)), o.clone()),
            Shape::Intersect(a, b) => Shape::Intersect(Box::new(a.scaled_in_place(f)), b.clone()),
            Shape::Offset(s, d) => Shape::Offset(Box::new(s.scaled_in_place(f)), *d),
            Shape::Warped(s, w) => Shape::Warped(Box::new(s.scaled_in_place(f)), w.clone()),
        }
    }

    /// Volume (mL) inside the solid, counted on a regular grid of `step` mm. Slices are
    /// counted in parallel: gland calibration calls this a few times per gland and was
    /// the fixed cost that dominated small (test-sized) cases.
    pub fn volume_ml(&self, step: f64) -> f64 {
        use rayon::prelude::*;
        let (lo, hi) = self.bounds();
        let n: Vec<usize> = (0..3)
            .map(|d| ((hi[d] - lo[d]) / step).ceil() as usize + 1)
            .collect();
        let count: usize = (0..n[2])
            .into_par_iter()
            .map(|k| {
                let mut c = 0usize;
                for j in 0..n[1] {
                    for i in 0..n[0] {
                        let p = [
                            lo[0] + (i as f64 + 0.5) * step,
                            lo[1] + (j as f64 + 0.5) * step,
                            lo[2] + (k as f64 + 0.5) * step,
                        ];
                        if self.sdf(p) < 0.0 {
                            c += 1;
                        }
                    }
                }
                c
            })
            .sum();
        count as f64 * step.powi(3) / 1000.0
    }

    /// The primitives of `self` (unions flattened) whose boxes meet `bounds`: subtracting
    /// only these from a gland gives the same solid inside `bounds` with far fewer
    /// distance evaluations (the mandible is ~20 capsules, of which a parotid touches 3).
    pub fn parts_near(&self, bounds: &Aabb) -> Vec<Shape> {
        match self {
            Shape::Union(v) => v.iter().flat_map(|s| s.parts_near(bounds)).collect(),
            _ => {
                let (lo, hi) = self.bounds();
                let meets = (0..3).all(|d| lo[d] <= bounds.1[d] && hi[d] >= bounds.0[d]);
                if meets {
                    vec![self.clone()]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsoid_sdf_and_volume() {
        let e = Shape::ellipsoid_rot([1.0, 2.0, 3.0], [10.0, 6.0, 4.0], [10.0, 20.0, 30.0]);
        assert!(e.sdf([1.0, 2.0, 3.0]) < 0.0);
        assert!(e.sdf([30.0, 2.0, 3.0]) > 0.0);
        let exact = 4.0 / 3.0 * std::f64::consts::PI * 240.0 / 1000.0;
        let v = e.volume_ml(0.5);
        assert!((v - exact).abs() / exact < 0.02, "{v} vs {exact}");
        let v2 = e.scaled_in_place(2.0).volume_ml(0.5);
        assert!((v2 / v - 8.0).abs() < 0.2);
    }

    #[test]
    fn pruned_carving_gives_the_same_solid() {
        let gland = Shape::ellipsoid([0.0; 3], [10.0, 8.0, 6.0]);
        let far = Shape::capsule([100.0, 0.0, 0.0], [120.0, 0.0, 0.0], 3.0);
        let near = Shape::capsule([8.0, -20.0, 0.0], [8.0, 20.0, 0.0], 3.0);
        let carve = Shape::Union(vec![far, near]);
        let parts = carve.parts_near(&gland.bounds());
        assert_eq!(parts.len(), 1);
        let full = gland.clone().minus(vec![carve]).volume_ml(0.5);
        let pruned = gland.clone().minus(parts).volume_ml(0.5);
        assert_eq!(full, pruned);
        assert!(
            full < gland.volume_ml(0.5),
            "the near capsule cuts the gland"
        );
    }

    #[test]
    fn capsule_distance_is_exact() {
        let c = Shape::capsule([0.0; 3], [10.0, 0.0, 0.0], 2.0);
        assert!((c.sdf([5.0, 5.0, 0.0]) - 3.0).abs() < 1e-12);
        assert!((c.sdf([13.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
