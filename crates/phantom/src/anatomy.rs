//! The head-and-neck anatomy of one synthetic patient, as painted layers of implicit
//! solids. Frame: the patient's own LPS axes in mm (x to the patient's left, y posterior,
//! z superior), origin roughly at the level of the ear canals on the midline; the head
//! pose (rotation, shift) is applied later, when the layers are painted onto the grid.
//!
//! Tissue values are typical adult figures: CT in HU, PSMA PET activity as SUV (salivary
//! and lacrimal glands, tubarial glands and tonsils avid; brain very low).

use crate::shapes::{mat_vec, norm, rotation, Shape, Warp};
use crate::Style;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Left/right: patient's left is +x. `side` is +1 for left, -1 for right.
pub const SIDES: [(f64, &str); 2] = [(1.0, "left"), (-1.0, "right")];

#[derive(Clone, Debug)]
pub struct Layer {
    pub name: &'static str,
    pub shape: Shape,
    pub hu: f32,
    pub suv: f32,
    /// Label value painted where this layer wins (0 = clears a gland label there).
    pub label: u8,
    /// Relative amplitude of smooth uptake heterogeneity (0 = uniform).
    pub texture: f32,
    /// Placed in scanner (world) coordinates, not moved by the head pose: the table and
    /// head rest, the arms.
    pub world: bool,
}

/// Gland targets and per-case tissue properties, recorded in the case's metadata.
#[derive(Clone, Debug, Serialize)]
pub struct GlandTruth {
    pub name: String,
    pub label: u8,
    pub target_volume_ml: f64,
    pub shape_volume_ml: f64,
    pub suv: f32,
    pub hu: f32,
}

pub struct Anatomy {
    pub layers: Vec<Layer>,
    pub glands: Vec<GlandTruth>,
    /// The body's outline (frame): where the table must not cut.
    pub body: Shape,
    /// Highest z (frame) of the head, the vertex: the field of view's top when it is not cut.
    pub vertex_z: f64,
    pub parotid_fat_fraction: f64,
    /// Gland uptake relative to a typical first-cycle PSMA scan (1.0); low after earlier
    /// therapy cycles or with little PSMA expression.
    pub uptake_factor: f64,
    /// Gland volume factor of an older patient's atrophied glands (1.0 = none).
    pub atrophy: f64,
    /// Dental metal (fillings, crowns) in the frame: centre and radius, mm.
    pub metal: Vec<([f64; 3], f64)>,
}

fn u(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo..hi)
}

fn random_warp(rng: &mut ChaCha8Rng, amp: f64, wavelength: f64) -> Warp {
    let terms = (0..3)
        .map(|_| {
            let dir = [u(rng, -1.0, 1.0), u(rng, -1.0, 1.0), u(rng, -1.0, 1.0)];
            let n = norm(dir).max(1e-6);
            let kk = 2.0 * std::f64::consts::PI / (wavelength * u(rng, 0.7, 1.4));
            let a = [
                u(rng, -1.0, 1.0) * amp,
                u(rng, -1.0, 1.0) * amp,
                u(rng, -1.0, 1.0) * amp,
            ];
            (
                [a[0] / 1.7, a[1] / 1.7, a[2] / 1.7],
                [dir[0] / n * kk, dir[1] / n * kk, dir[2] / n * kk],
                u(rng, 0.0, 6.3),
            )
        })
        .collect();
    Warp { terms }
}

/// A gland built of lobules, as the lobular style builds them: `n` spheres scattered in
/// the ellipsoid envelope (centre `c`, radii `r`, rotation `deg`), each a fraction
/// `rel` of the envelope's smallest radius. Real salivary glands are lobulated; a union
/// of spheres gives a bumpy outline that no smooth warp of one ellipsoid produces.
fn lobules(rng: &mut ChaCha8Rng, c: [f64; 3], r: [f64; 3], deg: [f64; 3], n: usize) -> Shape {
    let rot = rotation(deg);
    let rmin = r[0].min(r[1]).min(r[2]);
    let mut parts = Vec::with_capacity(n);
    while parts.len() < n {
        let p = [u(rng, -1.0, 1.0), u(rng, -1.0, 1.0), u(rng, -1.0, 1.0)];
        if norm(p) > 1.0 {
            continue;
        }
        let q = mat_vec(
            &rot,
            [p[0] * r[0] * 0.7, p[1] * r[1] * 0.7, p[2] * r[2] * 0.7],
        );
        let rr = rmin * u(rng, 0.45, 0.75);
        parts.push(Shape::ellipsoid(
            [c[0] + q[0], c[1] + q[1], c[2] + q[2]],
            [rr, rr, rr],
        ));
    }
    Shape::Union(parts)
}

/// Scales the gland's radii so that its volume outside `carve` hits `target_ml`.
fn calibrate(shape: Shape, carve: &[Shape], target_ml: f64) -> (Shape, f64) {
    // Only the carving parts whose boxes meet the gland's current box can cut it, so each
    // step subtracts just those (the same solid, a fraction of the distance evaluations).
    let near = |s: &Shape| -> Vec<Shape> {
        let b = s.bounds();
        carve.iter().flat_map(|c| c.parts_near(&b)).collect()
    };
    let mut s = shape;
    for _ in 0..3 {
        let vol = s.clone().minus(near(&s)).volume_ml(1.0);
        if vol <= 0.0 {
            break;
        }
        let f = (target_ml / vol).cbrt();
        if (f - 1.0).abs() < 0.005 {
            break;
        }
        s = s.scaled_in_place(f);
    }
    let parts = near(&s);
    let s = s.minus(parts);
    let vol = s.volume_ml(0.7);
    (s, vol)
}

pub fn build(rng: &mut ChaCha8Rng, size: f64, torso: bool, style: Style) -> Anatomy {
    let sc = |v: [f64; 3]| [v[0] * size, v[1] * size, v[2] * size];
    let lobular = style == Style::Lobular;
    // Head shape beyond its overall size: width, depth and height vary by a few per cent
    // each (brachy- to dolichocephalic heads), more in the lobular style.
    let jit = if lobular { 0.09 } else { 0.05 };
    let hs = [
        1.0 + u(rng, -jit, jit),
        1.0 + u(rng, -jit, jit),
        1.0 + u(rng, -jit, jit),
    ];
    let mut layers: Vec<Layer> = Vec::new();
    let mut push = |name, shape, hu: f64, suv: f64, label, texture| {
        layers.push(Layer {
            name,
            shape,
            hu: hu as f32,
            suv: suv as f32,
            label,
            texture,
            world: false,
        })
    };

    // --- body outline: head, face, neck (and shoulders/chest) ---
    let head = Shape::ellipsoid(
        sc([0.0, 5.0, 40.0]),
        sc([72.0 * hs[0], 92.0 * hs[1], 84.0 * hs[2]]),
    );
    let face = Shape::ellipsoid(sc([0.0, -30.0, -22.0]), sc([62.0 * hs[0], 60.0, 58.0]));
    let chin = Shape::ellipsoid(sc([0.0, -52.0, -55.0]), sc([36.0, 26.0, 22.0]));
    let neck_r = u(rng, 0.88, 1.12) * 56.0 * size;
    let neck = Shape::capsule(sc([0.0, 12.0, -40.0]), sc([0.0, 8.0, -200.0]), neck_r);
    let mut body_parts = vec![head.clone(), face.clone(), chin, neck];
    if lobular {
        // The lobular style's head is built differently: an occipital bulge and broader
        // cheeks on top of the ellipsoids.
        body_parts.push(Shape::ellipsoid(
            sc([0.0, 45.0, 30.0]),
            sc([55.0 * hs[0], 52.0, 60.0]),
        ));
        body_parts.push(Shape::ellipsoid(
            sc([0.0, -15.0, -30.0]),
            sc([68.0 * hs[0], 45.0, 30.0]),
        ));
    }
    if torso {
        body_parts.push(Shape::ellipsoid(
            sc([0.0, 12.0, -260.0]),
            sc([185.0, 105.0, 95.0]),
        ));
        body_parts.push(Shape::capsule(
            sc([-150.0, 12.0, -215.0]),
            sc([150.0, 12.0, -215.0]),
            55.0 * size,
        ));
    }
    let body = Shape::Union(body_parts);
    let blood_suv = u(rng, 1.2, 2.0);
    let muscle_suv = u(rng, 0.5, 0.9);
    push("skin", body.clone(), 30.0, 0.4, 0, 0.0);
    // Fat thickness and density vary with the patient's build.
    let fat_hu = u(rng, -120.0, -80.0);
    push(
        "subcutaneous_fat",
        body.clone().offset(-2.0),
        fat_hu,
        0.25,
        0,
        0.0,
    );
    push(
        "soft_tissue",
        body.clone()
            .offset(-2.0 - u(rng, 3.0, if lobular { 14.0 } else { 10.0 })),
        u(rng, 25.0, 45.0),
        0.5,
        0,
        0.0,
    );

    // --- skull, brain ---
    let scalp = u(rng, 4.0, 8.0);
    let skull_outer = head.clone().offset(-scalp);
    let skull_inner = head.clone().offset(-scalp - u(rng, 5.0, 9.0));
    let base_cut = Shape::HalfSpace {
        n: [0.0, 0.0, 1.0],
        d: -8.0 * size,
    };
    // The orbits are openings in the skull's front: the eyes sit in them, not behind bone.
    let orbits: Vec<Shape> = SIDES
        .iter()
        .map(|(s, _)| Shape::ellipsoid(sc([s * 33.0, -66.0, 38.0]), sc([19.0, 26.0, 17.0])))
        .collect();
    let vault = skull_outer
        .clone()
        .minus(vec![skull_inner.clone()])
        .intersect(base_cut.clone());
    // Skull base: a bony floor under the brain's posterior two thirds.
    let base = skull_outer
        .clone()
        .intersect(Shape::HalfSpace {
            n: [0.0, 0.0, -1.0],
            d: 2.0 * size,
        })
        .intersect(base_cut.clone())
        .intersect(Shape::HalfSpace {
            n: [0.0, 1.0, 0.0],
            d: -35.0 * size,
        });
    push(
        "skull",
        Shape::Union(vec![vault, base]).minus(orbits.clone()),
        1100.0,
        0.3,
        0,
        0.0,
    );
    let brain_cut = Shape::HalfSpace {
        n: [0.0, 0.0, 1.0],
        d: -2.0 * size,
    };
    push(
        "brain",
        skull_inner
            .clone()
            .intersect(brain_cut)
            .minus(orbits.clone()),
        35.0,
        u(rng, 0.15, 0.35),
        0,
        0.0,
    );

    // --- maxilla, nasal cavity, sinuses ---
    push(
        "maxilla",
        Shape::ellipsoid(sc([0.0, -52.0, -2.0]), sc([34.0, 22.0, 16.0])),
        450.0,
        0.3,
        0,
        0.0,
    );
    let nasal = Shape::ellipsoid(sc([0.0, -62.0, 14.0]), sc([11.0, 22.0, 18.0]));
    push(
        "nasal_mucosa",
        nasal.clone(),
        40.0,
        u(rng, 1.5, 4.0),
        0,
        0.2,
    );
    push("nasal_air", nasal.offset(-3.0), -950.0, 0.0, 0, 0.0);
    for (s, _) in SIDES {
        push(
            "maxillary_sinus",
            Shape::ellipsoid(sc([s * 26.0, -50.0, 6.0]), sc([12.0, 14.0, 13.0])),
            -900.0,
            0.0,
            0,
            0.0,
        );
    }

    // --- orbits, eyes, lenses ---
    let mut lacrimal_shapes = Vec::new();
    for (s, _) in SIDES {
        let eye_c = sc([s * 32.0, -68.0, 38.0]);
        push(
            "orbit_fat",
            Shape::ellipsoid(sc([s * 33.0, -52.0, 39.0]), sc([19.0, 22.0, 17.0])),
            -90.0,
            0.2,
            0,
            0.0,
        );
        push(
            "eye",
            Shape::ellipsoid(eye_c, [12.0 * size, 12.0 * size, 12.0 * size]),
            10.0,
            0.3,
            0,
            0.0,
        );
        push(
            "lens",
            Shape::ellipsoid([eye_c[0], eye_c[1] - 9.5 * size, eye_c[2]], [4.5, 2.0, 4.5]),
            90.0,
            0.1,
            0,
            0.0,
        );
        // Lacrimal gland: upper outer orbit, above-lateral to the globe.
        let c = [
            s * 44.0 * size,
            -58.0 * size + u(rng, -2.0, 2.0),
            49.0 * size + u(rng, -1.5, 1.5),
        ];
        let shape = if lobular {
            lobules(rng, c, [9.0, 5.5, 3.5], [0.0, s * 25.0, s * -20.0], 5)
                .warped(random_warp(rng, 0.8, 15.0))
        } else {
            Shape::ellipsoid_rot(c, [9.0, 5.5, 3.5], [0.0, s * 25.0, s * -20.0])
                .warped(random_warp(rng, 1.0, 15.0))
        };
        lacrimal_shapes.push((s, shape, eye_c));
    }

    // --- mandible, teeth, oral cavity, tongue ---
    let mut mandible = Vec::new();
    let jaw_z = -48.0;
    for (s, _) in SIDES {
        // Ramus: from the angle up to the condyle in front of the ear.
        mandible.push(Shape::capsule(
            sc([s * 48.0, -2.0, jaw_z]),
            sc([s * 50.0, 4.0, -8.0]),
            6.5 * size,
        ));
        // Coronoid process.
        mandible.push(Shape::capsule(
            sc([s * 47.0, -6.0, -35.0]),
            sc([s * 44.0, -18.0, -12.0]),
            4.0 * size,
        ));
    }
    let body_pts: Vec<[f64; 3]> = (0..=12)
        .map(|t| {
            let a = -1.0 + t as f64 / 6.0; // -1 .. 1 around the arch
            sc([
                48.0 * a,
                -2.0 - 70.0 * (1.0 - a * a).sqrt(),
                jaw_z - 6.0 * (1.0 - a * a),
            ])
        })
        .collect();
    mandible.push(Shape::tube(&body_pts, 7.5 * size));
    let mandible = Shape::Union(mandible);
    push(
        "oral_cavity_air",
        Shape::ellipsoid(sc([0.0, -45.0, -28.0]), sc([20.0, 22.0, 4.0])),
        -900.0,
        0.0,
        0,
        0.0,
    );
    push(
        "tongue",
        Shape::ellipsoid(sc([0.0, -40.0, -38.0]), sc([22.0, 30.0, 13.0])),
        60.0,
        muscle_suv,
        0,
        0.0,
    );
    push("mandible", mandible.clone(), 1000.0, 0.3, 0, 0.0);
    for (z, r) in [(-16.0, 58.0), (-34.0, 60.0)] {
        let pts: Vec<[f64; 3]> = (0..=10)
            .map(|t| {
                let a = -0.8 + 1.6 * t as f64 / 10.0;
                sc([38.0 * a, -10.0 - r * (1.0 - a * a).sqrt(), z])
            })
            .collect();
        push("teeth", Shape::tube(&pts, 4.5 * size), 2600.0, 0.2, 0, 0.0);
    }
    // Dental metal (amalgam fillings, crowns) in about 45 % of adults: small, very dense
    // pieces on the tooth rows. The scanner turns them into streaks (added on the CT grid).
    let mut metal = Vec::new();
    if rng.random_bool(0.45) {
        for _ in 0..rng.random_range(1..=4) {
            let (z, r) = if rng.random_bool(0.5) {
                (-16.0, 58.0)
            } else {
                (-34.0, 60.0)
            };
            let a: f64 = u(rng, -0.8, 0.8);
            let c = sc([38.0 * a, -10.0 - r * (1.0 - a * a).sqrt(), z]);
            let rad = u(rng, 2.0, 3.5);
            push(
                "dental_metal",
                Shape::ellipsoid(c, [rad, rad, rad]),
                3000.0,
                0.2,
                0,
                0.0,
            );
            metal.push((c, rad));
        }
    }

    // --- muscles, vessels, spine, airway ---
    let mut masseters = Vec::new();
    for (s, _) in SIDES {
        let m = Shape::ellipsoid_rot(
            sc([s * 57.0, -12.0, -26.0]),
            sc([7.0, 15.0, 24.0]),
            [15.0, 0.0, 0.0],
        );
        masseters.push(m.clone());
        push("masseter", m, 55.0, muscle_suv, 0, 0.0);
        push(
            "scm",
            Shape::capsule(
                sc([s * 58.0, 28.0, -15.0]),
                sc([s * 14.0, -28.0, -165.0]),
                9.0 * size,
            ),
            50.0,
            muscle_suv,
            0,
            0.0,
        );
        push(
            "jugular",
            Shape::capsule(
                sc([s * 30.0, 8.0, -20.0]),
                sc([s * 22.0, 0.0, -190.0]),
                5.0 * size,
            ),
            40.0,
            blood_suv,
            0,
            0.0,
        );
        push(
            "carotid",
            Shape::capsule(
                sc([s * 22.0, -2.0, -25.0]),
                sc([s * 16.0, -8.0, -190.0]),
                3.5 * size,
            ),
            40.0,
            blood_suv,
            0,
            0.0,
        );
    }
    let airway = Shape::tube(
        &[
            sc([0.0, 6.0, 0.0]),
            sc([0.0, 10.0, -40.0]),
            sc([0.0, -6.0, -85.0]),
            sc([0.0, -14.0, -200.0]),
        ],
        8.0 * size,
    );
    push("airway", airway, -950.0, 0.0, 0, 0.0);
    let spine_bottom = if torso { -330.0 } else { -220.0 };
    let mut z = -12.0;
    while z > spine_bottom {
        let c = [0.0, 30.0 * size, z * size];
        push(
            "vertebra",
            Shape::capsule(
                [c[0], c[1], c[2] + 7.0 * size],
                [c[0], c[1], c[2] - 7.0 * size],
                10.0 * size,
            ),
            350.0,
            0.5,
            0,
            0.0,
        );
        push(
            "vertebral_arch",
            Shape::capsule(
                [c[0], c[1] + 16.0 * size, c[2]],
                [c[0], c[1] + 30.0 * size, c[2] - 4.0 * size],
                5.0 * size,
            ),
            800.0,
            0.3,
            0,
            0.0,
        );
        push(
            "disc",
            Shape::capsule(
                [c[0], c[1], c[2] - 8.0 * size],
                [c[0], c[1], c[2] - 9.5 * size],
                9.0 * size,
            ),
            90.0,
            0.3,
            0,
            0.0,
        );
        z -= 18.0;
    }
    push(
        "spinal_canal",
        Shape::capsule(
            sc([0.0, 44.0, 0.0]),
            sc([0.0, 44.0, spine_bottom]),
            6.0 * size,
        ),
        15.0,
        0.1,
        0,
        0.0,
    );
    if torso {
        for (s, _) in SIDES {
            push(
                "lung",
                Shape::ellipsoid(sc([s * 75.0, 15.0, -290.0]), sc([52.0, 68.0, 80.0])),
                -820.0,
                0.15,
                0,
                0.0,
            );
            push(
                "clavicle",
                Shape::capsule(
                    sc([s * 18.0, -30.0, -185.0]),
                    sc([s * 150.0, 5.0, -190.0]),
                    7.0 * size,
                ),
                900.0,
                0.3,
                0,
                0.0,
            );
            push(
                "humeral_head",
                Shape::ellipsoid(sc([s * 175.0, 10.0, -215.0]), sc([25.0, 25.0, 25.0])),
                700.0,
                0.4,
                0,
                0.0,
            );
        }
        push(
            "mediastinum_blood",
            Shape::ellipsoid(sc([0.0, -5.0, -300.0]), sc([45.0, 40.0, 50.0])),
            40.0,
            blood_suv,
            0,
            0.0,
        );
    }

    // --- distractors with PSMA uptake (not labelled) ---
    for (s, _) in SIDES {
        push(
            "palatine_tonsil",
            Shape::ellipsoid(sc([s * 13.0, -4.0, -36.0]), sc([6.0, 8.0, 11.0])),
            50.0,
            u(rng, 3.0, 7.0),
            0,
            0.2,
        );
        push(
            "tubarial_gland",
            Shape::ellipsoid_rot(
                sc([s * 19.0, 12.0, 6.0]),
                sc([5.0, 7.0, 12.0]),
                [20.0, 0.0, 0.0],
            ),
            45.0,
            u(rng, 4.0, 10.0),
            0,
            0.2,
        );
    }

    // --- the six glands ---
    // Age: about a third of the patients have atrophied, fattier glands.
    let atrophy = if rng.random_bool(0.3) {
        u(rng, 0.6, 0.9)
    } else {
        1.0
    };
    let parotid_fat = (u(rng, 0.1, 0.9) + if atrophy < 1.0 { 0.15 } else { 0.0 }).min(0.95);
    let parotid_hu = (40.0 - 140.0 * parotid_fat) as f32;
    let mut glands = Vec::new();
    let asym = |rng: &mut ChaCha8Rng| u(rng, 0.85, 1.15);
    let parotid_target = u(rng, 17.0, 32.0) * atrophy;
    let sub_target = u(rng, 6.8, 11.2) * atrophy;
    let lac_target = u(rng, 0.5, 1.1) * atrophy.sqrt();
    // True (unblurred) activity. The lacrimal gland is only 5-8 mm thick, so a 5-7 mm PSF
    // and 2-4 mm PET voxels recover about half of it: a true SUV of 8-15 shows as an SUVmax
    // of roughly 4-10 on the PET channel, as lacrimal glands read on real PSMA scans.
    //
    // Uptake varies far more between patients than within one: glands after earlier
    // Lu-177 cycles, or under low PSMA expression, show SUVmax near 3; young glands near
    // 25. One log-uniform factor per patient spans that range; the lacrimal glands follow
    // it more weakly (their partial-volume loss already keeps them low).
    let uptake = u(rng, 0.35f64.ln(), 1.5f64.ln()).exp();
    let gland_suv = [
        u(rng, 9.0, 17.0) * uptake,
        u(rng, 9.0, 17.0) * uptake,
        u(rng, 8.0, 15.0) * uptake.powf(0.6),
    ];
    for (s, side) in SIDES {
        // Parotid: superficial lobe over the ramus' posterior border in front of the ear,
        // a tail down toward the angle, and a deep lobe wrapping medially behind the ramus.
        let dz = u(rng, -4.0, 4.0);
        let dy = u(rng, -4.0, 4.0);
        let parotid = if lobular {
            let mut parts = vec![
                lobules(
                    rng,
                    sc([s * 55.0, 10.0 + dy, -18.0 + dz]),
                    sc([11.0, 17.0, 22.0]),
                    [0.0, s * 10.0, s * 8.0],
                    18,
                ),
                lobules(
                    rng,
                    sc([s * 52.0, 8.0 + dy, -40.0 + dz]),
                    sc([9.0, 11.0, 10.0]),
                    [0.0; 3],
                    6,
                ),
                lobules(
                    rng,
                    sc([s * 40.0, 12.0 + dy, -20.0 + dz]),
                    sc([8.0, 10.0, 14.0]),
                    [0.0, 0.0, s * -20.0],
                    7,
                ),
            ];
            // An accessory lobe along the parotid duct, over the masseter, in about a
            // fifth of people.
            if rng.random_bool(0.2) {
                parts.push(Shape::ellipsoid(
                    sc([s * 60.0, -14.0 + dy, -16.0 + dz]),
                    [5.0, 6.0, 4.0],
                ));
            }
            Shape::Union(parts).warped(random_warp(rng, 1.5, 30.0))
        } else {
            let sup = Shape::ellipsoid_rot(
                sc([s * 55.0, 10.0 + dy, -18.0 + dz]),
                sc([11.0, 17.0, 22.0]),
                [0.0, s * 10.0, s * 8.0],
            );
            let tail =
                Shape::ellipsoid(sc([s * 52.0, 8.0 + dy, -40.0 + dz]), sc([9.0, 11.0, 10.0]));
            let deep = Shape::ellipsoid_rot(
                sc([s * 40.0, 12.0 + dy, -20.0 + dz]),
                sc([8.0, 10.0, 14.0]),
                [0.0, 0.0, s * -20.0],
            );
            // Large smooth deformation, then a fine lobulation on top.
            let lobulation = u(rng, 0.3, 1.2);
            Shape::Union(vec![sup, tail, deep])
                .warped(random_warp(rng, 2.5, 35.0))
                .warped(random_warp(rng, lobulation, 10.0))
        };
        let mut carve = masseters.clone();
        carve.push(mandible.clone());
        let target = (parotid_target * asym(rng)).clamp(9.0, 34.5);
        let (shape, vol) = calibrate(parotid, &carve, target);
        let label = if s > 0.0 { 1 } else { 2 };
        glands.push(GlandTruth {
            name: format!("parotid_{side}"),
            label,
            target_volume_ml: target,
            shape_volume_ml: vol,
            suv: gland_suv[0] as f32 * u(rng, 0.9, 1.1) as f32,
            hu: parotid_hu,
        });
        push(
            "parotid",
            shape,
            parotid_hu as f64,
            glands.last().unwrap().suv as f64,
            label,
            0.15,
        );
    }
    for (s, side) in SIDES {
        // Submandibular: below the mandible's body, medial to the angle.
        let c = sc([
            s * 32.0,
            -14.0 + u(rng, -3.0, 3.0),
            -66.0 + u(rng, -3.0, 3.0),
        ]);
        let sub = if lobular {
            lobules(rng, c, sc([12.0, 17.0, 10.0]), [10.0, 0.0, s * 15.0], 12)
                .warped(random_warp(rng, 1.2, 25.0))
        } else {
            let lobulation = u(rng, 0.3, 1.0);
            Shape::ellipsoid_rot(c, sc([12.0, 17.0, 10.0]), [10.0, 0.0, s * 15.0])
                .warped(random_warp(rng, 1.8, 25.0))
                .warped(random_warp(rng, lobulation, 9.0))
        };
        let target = (sub_target * asym(rng)).clamp(3.8, 11.8);
        let (shape, vol) = calibrate(sub, std::slice::from_ref(&mandible), target);
        let label = if s > 0.0 { 3 } else { 4 };
        let hu = u(rng, 35.0, 65.0) as f32;
        glands.push(GlandTruth {
            name: format!("submandibular_{side}"),
            label,
            target_volume_ml: target,
            shape_volume_ml: vol,
            suv: gland_suv[1] as f32 * u(rng, 0.9, 1.1) as f32,
            hu,
        });
        push(
            "submandibular",
            shape,
            hu as f64,
            glands.last().unwrap().suv as f64,
            label,
            0.15,
        );
    }
    for (s, shape, eye_c) in lacrimal_shapes {
        let side = if s > 0.0 { "left" } else { "right" };
        let eye = Shape::ellipsoid(eye_c, [12.5 * size, 12.5 * size, 12.5 * size]);
        let target = (lac_target * asym(rng)).clamp(0.35, 1.18);
        let (shape, vol) = calibrate(shape, &[eye], target);
        let label = if s > 0.0 { 5 } else { 6 };
        glands.push(GlandTruth {
            name: format!("lacrimal_{side}"),
            label,
            target_volume_ml: target,
            shape_volume_ml: vol,
            suv: gland_suv[2] as f32 * u(rng, 0.9, 1.1) as f32,
            hu: 45.0,
        });
        push(
            "lacrimal",
            shape,
            45.0,
            glands.last().unwrap().suv as f64,
            label,
            0.1,
        );
    }

    // --- lymph-node lesions: a few, one near a gland ---
    let n_nodes = rng.random_range(2..=4);
    for n in 0..n_nodes {
        let s = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let c = if n == 0 {
            // Level II, just below/behind the parotid tail or beside the submandibular.
            if rng.random_bool(0.5) {
                sc([s * 44.0, 20.0, -58.0])
            } else {
                sc([s * 36.0, 2.0, -80.0])
            }
        } else {
            sc([
                s * u(rng, 20.0, 40.0),
                u(rng, -5.0, 25.0),
                u(rng, -140.0, -70.0),
            ])
        };
        let r = u(rng, 3.5, 7.0);
        push(
            "lymph_node",
            Shape::ellipsoid(c, [r, r * 0.8, r * 1.2]),
            40.0,
            u(rng, 5.0, 15.0),
            0,
            0.0,
        );
    }

    Anatomy {
        layers,
        glands,
        body,
        vertex_z: 40.0 * size + 84.0 * size * hs[2],
        parotid_fat_fraction: parotid_fat,
        uptake_factor: uptake,
        atrophy,
        metal,
    }
}
