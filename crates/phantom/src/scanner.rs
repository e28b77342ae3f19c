//! What the scanner and the room add to a patient: the table and head rest under the head,
//! arms raised beside it, the CT's reconstruction kernel and noise texture, streaks from
//! dental metal. These vary between sites far more than anatomy does, and a network that
//! has only ever seen one table and one noise texture learns them as part of "head" — the
//! domain randomisation of the cohort draws them per case.

use crate::anatomy::Layer;
use crate::shapes::Shape;
use glandseg_core::{Geometry, Volume};
use glandseg_ops::filter::gaussian_blur_mm;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The scanner and patient draws of one case, recorded in its metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScanFacts {
    /// A table (curved carbon-fibre head rest on a flat couch) lies under the head.
    pub table: bool,
    /// World y (LPS, mm) of the head rest's inner surface.
    pub table_y_mm: f64,
    /// Foam cushion thickness between head and head rest, mm.
    pub cushion_mm: f64,
    /// Arms raised above the head (whole-body PET position), partly in the field of view.
    pub arms_up: bool,
    /// Pieces of dental metal (each makes streaks across its slices).
    pub dental_metal: usize,
    /// CT reconstruction kernel: "soft", "standard" or "sharp".
    pub ct_kernel: String,
    /// In-plane correlation (Gaussian sigma, mm) of the CT noise: its texture.
    pub ct_noise_correlation_mm: f64,
    /// Gland uptake factor of the patient (1 = typical).
    pub uptake_factor: f64,
    /// Gland volume factor from atrophy (1 = none).
    pub gland_atrophy: f64,
    /// Fraction of the PET's PSF in a wide tail (0 = Gaussian).
    pub pet_psf_tail: f64,
    /// Post-reconstruction filter of the PET noise on its own grid, FWHM mm (0 = none).
    pub pet_noise_filter_mm: f64,
}

fn u(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    rng.random_range(lo..hi)
}

fn world_layer(name: &'static str, shape: Shape, hu: f64, suv: f64) -> Layer {
    Layer {
        name,
        shape,
        hu: hu as f32,
        suv: suv as f32,
        label: 0,
        texture: 0.0,
        world: true,
    }
}

/// The table, head rest and cushion under a head whose most posterior point lies at world
/// y `back_y`, centred on world x `cx`, over world z `z_lo..z_hi`. Returns the layers
/// (painted before the patient) and the far edge of the couch (world y) that the field of
/// view must reach.
pub fn table_layers(
    rng: &mut ChaCha8Rng,
    back_y: f64,
    cx: f64,
    z_lo: f64,
    z_hi: f64,
    facts: &mut ScanFacts,
) -> (Vec<Layer>, f64) {
    let cushion = u(rng, 0.0, 12.0);
    let shell = u(rng, 3.0, 6.0);
    let radius = u(rng, 120.0, 220.0);
    let inner = back_y + cushion;
    // Centre of curvature of the trough, anterior of the head rest.
    let cy = inner - radius;
    let along = |r: f64| Shape::capsule([cx, cy, z_lo - 400.0], [cx, cy, z_hi + 400.0], r);
    let posterior = Shape::HalfSpace {
        n: [0.0, 1.0, 0.0],
        d: cy + 0.55 * radius,
    };
    let shell_shape = along(radius + shell)
        .minus(vec![along(radius)])
        .intersect(posterior.clone());
    let cushion_shape = along(radius)
        .minus(vec![along(radius - cushion.max(0.5))])
        .intersect(posterior);
    // The flat couch under the head rest: a carbon-fibre sandwich (two skins over foam).
    let gap = u(rng, 5.0, 30.0);
    let couch_top = inner + shell + gap;
    let couch_thick = u(rng, 12.0, 25.0);
    let slab = |y0: f64, y1: f64| {
        Shape::HalfSpace {
            n: [0.0, 1.0, 0.0],
            d: y0,
        }
        .intersect(Shape::HalfSpace {
            n: [0.0, -1.0, 0.0],
            d: -y1,
        })
        .intersect(Shape::HalfSpace {
            n: [1.0, 0.0, 0.0],
            d: cx - 230.0,
        })
        .intersect(Shape::HalfSpace {
            n: [-1.0, 0.0, 0.0],
            d: -(cx + 230.0),
        })
    };
    let skin_hu = u(rng, 150.0, 450.0);
    let layers = vec![
        world_layer(
            "couch_core",
            slab(couch_top, couch_top + couch_thick),
            u(rng, -960.0, -900.0),
            0.0,
        ),
        world_layer("couch_skin", slab(couch_top, couch_top + 2.0), skin_hu, 0.0),
        world_layer(
            "couch_skin",
            slab(couch_top + couch_thick - 2.0, couch_top + couch_thick),
            skin_hu,
            0.0,
        ),
        world_layer("head_rest", shell_shape, u(rng, 100.0, 400.0), 0.0),
        world_layer("cushion", cushion_shape, u(rng, -960.0, -880.0), 0.0),
    ];
    facts.table = true;
    facts.table_y_mm = inner;
    facts.cushion_mm = cushion;
    (layers, couch_top + couch_thick)
}

/// Arms raised above the head, as patients lie for whole-body PET: upper arms beside the
/// head (fat, muscle, humerus), entering the field of view from the side.
pub fn arm_layers(rng: &mut ChaCha8Rng, shift: [f64; 3], muscle_suv: f64) -> Vec<Layer> {
    let mut layers = Vec::new();
    for s in [1.0, -1.0] {
        let x = shift[0] + s * u(rng, 100.0, 135.0);
        let y = shift[1] + u(rng, -20.0, 40.0);
        let a = [x, y, shift[2] - 80.0];
        let b = [x + s * u(rng, -20.0, 20.0), y, shift[2] + 260.0];
        let r = u(rng, 38.0, 50.0);
        layers.push(world_layer(
            "arm_fat",
            Shape::capsule(a, b, r),
            -100.0,
            0.25,
        ));
        layers.push(world_layer(
            "arm_muscle",
            Shape::capsule(a, b, r - u(rng, 6.0, 14.0)),
            55.0,
            muscle_suv,
        ));
        layers.push(world_layer(
            "humerus",
            Shape::capsule(a, b, u(rng, 9.0, 12.0)),
            800.0,
            0.3,
        ));
    }
    layers
}

/// The reconstruction kernel's effect on the CT image: a soft kernel blurs in-plane, a
/// sharp one enhances edges (an unsharp mask). Applied before the noise, as in a scanner
/// the kernel shapes both but the noise texture is drawn separately.
pub fn apply_kernel(ct: &Volume<f32>, kernel: &str, rng: &mut ChaCha8Rng) -> Option<Volume<f32>> {
    match kernel {
        "soft" => {
            let s = u(rng, 0.3, 0.8);
            Some(gaussian_blur_mm(ct, [s, s, 0.0]))
        }
        "sharp" => {
            let amount = u(rng, 0.3, 0.9) as f32;
            let blurred = gaussian_blur_mm(ct, [0.9, 0.9, 0.0]);
            let mut out = ct.clone();
            out.as_slice_mut()
                .par_iter_mut()
                .zip(blurred.as_slice().par_iter())
                .for_each(|(v, b)| *v = (*v + amount * (*v - b)).max(-1024.0));
            Some(out)
        }
        _ => None,
    }
}

/// Adds CT noise of standard deviation `sigma` HU with an in-plane correlation of
/// `corr_mm` (Gaussian sigma): white noise low-pass filtered, rescaled to `sigma`. Real
/// CT noise is correlated (its power spectrum is set by the kernel); white noise alone is
/// a texture no scanner makes.
pub fn add_noise(ct: &mut Volume<f32>, sigma: f64, corr_mm: f64, seed: u64, index: usize) {
    let g = ct.geometry().clone();
    let slice = g.shape[0] * g.shape[1];
    let mut noise = vec![0f32; ct.as_slice().len()];
    noise.par_chunks_mut(slice).enumerate().for_each(|(k, s)| {
        let mut r = crate::case_rng(seed ^ 0x005e_edc7, index, 16 + k as u64);
        for v in s.iter_mut() {
            let n: f64 = StandardNormal.sample(&mut r);
            *v = n as f32;
        }
    });
    let spacing = g.spacing;
    let mut noise = Volume::from_vec(g, noise).expect("grid-sized");
    // The filter's variance gain, measured on a fixed 96 x 96 patch of white noise at the
    // same spacing: the same for every field of view of the case (a scan cut at the top
    // must get the same noise below the cut).
    let mut gain = 1.0f64;
    if corr_mm > 0.05 {
        noise = gaussian_blur_mm(&noise, [corr_mm, corr_mm, 0.0]);
        let mut r = crate::case_rng(seed ^ 0x5ca1_ab1e, index, 5);
        let probe: Vec<f32> = (0..96 * 96)
            .map(|_| {
                let n: f64 = StandardNormal.sample(&mut r);
                n as f32
            })
            .collect();
        let pg = Geometry::new([96, 96, 1], spacing, [0.0; 3]);
        let probe = gaussian_blur_mm(
            &Volume::from_vec(pg, probe).expect("probe-sized"),
            [corr_mm, corr_mm, 0.0],
        );
        // Away from the probe's clamped borders.
        let (mut sum, mut n) = (0.0f64, 0usize);
        for j in 16..80 {
            for i in 16..80 {
                let v = probe.as_slice()[i + 96 * j] as f64;
                sum += v * v;
                n += 1;
            }
        }
        gain = (sum / n as f64).sqrt().max(1e-6);
    }
    let f = (sigma / gain) as f32;
    ct.as_slice_mut()
        .par_iter_mut()
        .zip(noise.as_slice().par_iter())
        .for_each(|(v, n)| *v = (*v + f * n).max(-1024.0));
}

/// Streak artefacts from dental metal: bright and dark lines through each piece, in the
/// slices it occupies, fading with distance, as filtered back-projection makes them from
/// photon starvation and beam hardening. `metal` holds world centres and radii.
pub fn add_metal_streaks(ct: &mut Volume<f32>, metal: &[([f64; 3], f64)], rng: &mut ChaCha8Rng) {
    let g: Geometry = ct.geometry().clone();
    let [nx, ny, _] = g.shape;
    for &(c, rad) in metal {
        let n_streaks = rng.random_range(6..=14);
        let streaks: Vec<(f64, f64)> = (0..n_streaks)
            .map(|_| {
                let sign = if rng.random_bool(0.6) { -1.0 } else { 1.0 };
                (
                    u(rng, 0.0, std::f64::consts::PI),
                    sign * u(rng, 150.0, 700.0),
                )
            })
            .collect();
        let reach = u(rng, 40.0, 90.0);
        let kc = (c[2] - g.origin[2]) / g.spacing[2];
        let kr = (rad * 1.5) / g.spacing[2];
        let k0 = (kc - kr).floor().max(0.0) as usize;
        let k1 = ((kc + kr).ceil().max(0.0) as usize + 1).min(g.shape[2]);
        for k in k0..k1 {
            let dz = (g.origin[2] + k as f64 * g.spacing[2] - c[2]) / (rad * 1.5);
            let wz = (-dz * dz * 2.0).exp();
            if wz < 0.05 {
                continue;
            }
            let slice = &mut ct.as_slice_mut()[k * nx * ny..(k + 1) * nx * ny];
            slice.par_chunks_mut(nx).enumerate().for_each(|(j, row)| {
                let y = g.origin[1] + j as f64 * g.spacing[1] - c[1];
                for (i, v) in row.iter_mut().enumerate() {
                    let x = g.origin[0] + i as f64 * g.spacing[0] - c[0];
                    let r = (x * x + y * y).sqrt();
                    if r < rad || r > 3.0 * reach {
                        continue;
                    }
                    let theta = y.atan2(x);
                    let mut add = 0.0;
                    for &(t, a) in &streaks {
                        // Distance of the pixel from the line through the metal at angle t.
                        let d = r * (theta - t).sin().abs();
                        add += a * (-d * d / 2.0).exp();
                    }
                    *v = (*v + (add * wz * (-r / reach).exp()) as f32).max(-1024.0);
                }
            });
        }
    }
}
