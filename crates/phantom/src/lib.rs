//! The built-in synthetic head-and-neck PSMA PET/CT cohort: glandseg's default dataset, so
//! that the whole pipeline (train, predict, evaluate) runs on a fresh machine without
//! patient data. Every case is deterministic from `(seed, index)`.
//!
//! How a case is made: the anatomy ([`anatomy`]) is a stack of implicit solids in the
//! patient's frame; a random head pose places it in the scanner; the solids are painted
//! onto the CT grid with partial-volume edges (CT in HU, true PET activity in SUV, labels);
//! CT noise is added; the activity is blurred by the scanner's PSF, moved by a small
//! PET-to-CT misregistration, sampled on the PET's own coarser grid, given signal-dependent
//! noise, and finally resampled back onto the CT grid as the dataset's PET channel.

pub mod anatomy;
pub mod scanner;
pub mod shapes;
pub mod spect;

use glandseg_core::{atomic, Geometry, LabelMap, Volume};
use glandseg_ops::filter::{fwhm_to_sigma, gaussian_blur_mm};
use glandseg_ops::resample::{resample, Interpolation};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use shapes::{mat_t_vec, mat_vec, matmul, rotation};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Field of view of the scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fov {
    /// Vertex to just below the mandible.
    Head,
    /// Down to the lower neck (about C7).
    HeadNeck,
    /// Adds the shoulders and the upper chest.
    HeadNeckTorso,
}

impl std::str::FromStr for Fov {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "head" => Ok(Fov::Head),
            "head-neck" => Ok(Fov::HeadNeck),
            "head-neck-torso" => Ok(Fov::HeadNeckTorso),
            _ => Err(format!(
                "unknown field of view {s:?}: use head, head-neck or head-neck-torso"
            )),
        }
    }
}

/// How the phantom is built. Two styles built differently, so that a model trained on one
/// can be tested on the other: the drop between them is a stand-in for the drop from a
/// phantom to a patient (or to another group's phantom), and training on both is a form
/// of domain randomisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    /// Glands as smoothly warped ellipsoids with a fine lobulation; white PET noise on the
    /// PET's own grid; a Gaussian PSF.
    #[default]
    Classic,
    /// Glands as clusters of lobules (unions of spheres), accessory parotid lobes, a
    /// differently built head; post-filtered (correlated) PET noise and a PSF with
    /// long tails; more correlated CT noise.
    Lobular,
    /// Each case draws one of the two styles (half each): the training cohort for a model
    /// that must hold on anatomy it never saw.
    Mixed,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "classic" | "a" => Ok(Style::Classic),
            "lobular" | "b" => Ok(Style::Lobular),
            "mixed" => Ok(Style::Mixed),
            _ => Err(format!(
                "unknown phantom style {s:?}: use classic, lobular or mixed"
            )),
        }
    }
}

impl std::fmt::Display for Style {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Style::Classic => "classic",
            Style::Lobular => "lobular",
            Style::Mixed => "mixed",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhantomConfig {
    pub seed: u64,
    pub fov: Fov,
    /// Cut the top of the skull off in about 30 % of the cases, as many scans do.
    pub cut_top: bool,
    /// 1.0 = scanner-like resolution (CT 0.8-1.2 mm in-plane, 1.5-3 mm slices; PET 2-4 mm).
    /// Smaller values make coarser, smaller volumes (spacing divided by `scale`) for fast
    /// tests and quick experiments.
    pub scale: f64,
    /// How the cases are built.
    #[serde(default)]
    pub style: Style,
    /// Cases from this index on are built in this style instead: a held-out set of
    /// another style after the training cases (`demo --test-style`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style_from: Option<(usize, Style)>,
}

impl Default for PhantomConfig {
    fn default() -> Self {
        PhantomConfig {
            seed: 0,
            fov: Fov::HeadNeck,
            cut_top: false,
            scale: 1.0,
            style: Style::Classic,
            style_from: None,
        }
    }
}

/// Everything about a case that is not an image: the ground truth a physicist would
/// check, and the acquisition facts a DICOM writer needs to turn SUV back into Bq/mL.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseMeta {
    pub id: String,
    pub seed: u64,
    pub index: usize,
    pub fov: Fov,
    pub ct_spacing_mm: [f64; 3],
    pub ct_shape: [usize; 3],
    pub pet_spacing_mm: [f64; 3],
    pub pet_shape: [usize; 3],
    pub head_rotation_deg: [f64; 3],
    pub head_shift_mm: [f64; 3],
    pub body_size: f64,
    pub top_cut: bool,
    pub ct_noise_sigma_hu: f64,
    pub parotid_fat_fraction: f64,
    pub pet_psf_fwhm_mm: f64,
    pub pet_noise_factor: f64,
    pub pet_misregistration_shift_mm: [f64; 3],
    pub pet_misregistration_rotation_deg: [f64; 3],
    pub patient_weight_kg: f64,
    pub patient_height_m: f64,
    pub patient_sex: String,
    pub radiopharmaceutical: String,
    pub radionuclide: String,
    pub half_life_s: f64,
    pub injected_activity_mbq: f64,
    pub uptake_time_min: f64,
    /// The style this case was built in (classic or lobular).
    #[serde(default)]
    pub style: Style,
    /// Scanner and patient draws of the domain randomisation.
    #[serde(default)]
    pub scan: scanner::ScanFacts,
    pub glands: Vec<GlandMeasure>,
    /// The SPECT time series' truth (kinetics, TIA and dose per gland), when written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spect: Option<spect::SpectMeta>,
}

/// One gland: what was asked for and what the label map and PET channel actually hold.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GlandMeasure {
    pub name: String,
    pub label: u8,
    pub target_volume_ml: f64,
    pub label_volume_ml: f64,
    pub voxels: usize,
    pub true_suv: f32,
    pub ct_hu_mean: f64,
    pub suv_mean: f64,
    pub suv_max: f64,
    /// Centroid in world LPS mm.
    pub centroid_lps: [f64; 3],
}

pub struct PhantomCase {
    pub id: String,
    /// HU.
    pub ct: Volume<f32>,
    /// SUVbw on the CT grid (the dataset's channel 1).
    pub pet: Volume<f32>,
    /// SUVbw on the PET's own grid, as the scanner gives it.
    pub pet_native: Volume<f32>,
    pub labels: Volume<u8>,
    pub meta: CaseMeta,
    /// The SPECT time series for dosimetry (`phantom --timepoints`), when asked for.
    pub spect: Option<spect::SpectSeries>,
}

pub fn case_id(index: usize) -> String {
    format!("GLAND_{index:03}")
}

/// Per-case random stream: the same case whatever the cohort size or thread count.
pub(crate) fn case_rng(seed: u64, index: usize, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(((index as u64) << 8) | stream);
    r
}

struct Pose {
    rot: [[f64; 3]; 3],
    shift: [f64; 3],
}

impl Pose {
    fn to_frame(&self, w: [f64; 3]) -> [f64; 3] {
        mat_t_vec(
            &self.rot,
            [
                w[0] - self.shift[0],
                w[1] - self.shift[1],
                w[2] - self.shift[2],
            ],
        )
    }
    fn to_world(&self, a: [f64; 3]) -> [f64; 3] {
        let r = mat_vec(&self.rot, a);
        [
            r[0] + self.shift[0],
            r[1] + self.shift[1],
            r[2] + self.shift[2],
        ]
    }
}

/// Paints every layer onto the CT grid: HU, true activity (SUV) and labels.
fn paint(
    layers: &[anatomy::Layer],
    pose: &Pose,
    grid: &Geometry,
    texture: &shapes::Warp,
) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let [nx, ny, nz] = grid.shape;
    let sp = grid.spacing;
    let soft = (sp[0] + sp[1] + sp[2]) / 3.0;
    // World index box of each layer (grid is axis-aligned LPS).
    let boxes: Vec<[[usize; 2]; 3]> = layers
        .iter()
        .map(|l| {
            let (lo, hi) = l.shape.bounds();
            let mut wlo = [f64::INFINITY; 3];
            let mut whi = [f64::NEG_INFINITY; 3];
            for c in 0..8 {
                let a = [
                    if c & 1 == 0 { lo[0] } else { hi[0] },
                    if c & 2 == 0 { lo[1] } else { hi[1] },
                    if c & 4 == 0 { lo[2] } else { hi[2] },
                ];
                let w = pose.to_world(a);
                for d in 0..3 {
                    wlo[d] = wlo[d].min(w[d]);
                    whi[d] = whi[d].max(w[d]);
                }
            }
            let mut b = [[0usize; 2]; 3];
            for d in 0..3 {
                let i0 = ((wlo[d] - soft - grid.origin[d]) / sp[d]).floor().max(0.0);
                let i1 = ((whi[d] + soft - grid.origin[d]) / sp[d]).ceil() + 1.0;
                b[d] = [
                    (i0 as usize).min(grid.shape[d]),
                    (i1.max(0.0) as usize).min(grid.shape[d]),
                ];
            }
            b
        })
        .collect();
    let n_slice = nx * ny;
    let mut ct = vec![-1000f32; nx * ny * nz];
    let mut act = vec![0f32; nx * ny * nz];
    let mut lab = vec![0u8; nx * ny * nz];
    ct.par_chunks_mut(n_slice)
        .zip(act.par_chunks_mut(n_slice))
        .zip(lab.par_chunks_mut(n_slice))
        .enumerate()
        .for_each(|(k, ((ct, act), lab))| {
            for (layer, b) in layers.iter().zip(&boxes) {
                if k < b[2][0] || k >= b[2][1] {
                    continue;
                }
                for j in b[1][0]..b[1][1] {
                    for i in b[0][0]..b[0][1] {
                        let w = [
                            grid.origin[0] + i as f64 * sp[0],
                            grid.origin[1] + j as f64 * sp[1],
                            grid.origin[2] + k as f64 * sp[2],
                        ];
                        let a = if layer.world { w } else { pose.to_frame(w) };
                        let d = layer.shape.sdf(a);
                        let occ = (0.5 - d / soft).clamp(0.0, 1.0) as f32;
                        if occ <= 0.0 {
                            continue;
                        }
                        let p = i + nx * j;
                        let mut suv = layer.suv;
                        if layer.texture > 0.0 {
                            let t: f64 = texture
                                .terms
                                .iter()
                                .map(|(amp, kv, ph)| {
                                    amp[0] * (kv[0] * a[0] + kv[1] * a[1] + kv[2] * a[2] + ph).sin()
                                })
                                .sum();
                            suv *= 1.0 + layer.texture * t.clamp(-1.0, 1.0) as f32;
                        }
                        ct[p] = ct[p] * (1.0 - occ) + layer.hu * occ;
                        act[p] = act[p] * (1.0 - occ) + suv * occ;
                        if occ >= 0.5 {
                            lab[p] = layer.label;
                        }
                    }
                }
            }
        });
    (ct, act, lab)
}

/// The case's style: a mixed cohort draws one per case from its own stream, so that the
/// rest of the case does not depend on the choice of mixing.
fn case_style(cfg: &PhantomConfig, index: usize) -> Style {
    let style = match cfg.style_from {
        Some((from, s)) if index >= from => s,
        _ => cfg.style,
    };
    match style {
        Style::Mixed => {
            if case_rng(cfg.seed, index, 7).random_bool(0.5) {
                Style::Lobular
            } else {
                Style::Classic
            }
        }
        s => s,
    }
}

/// Generates case `index` of the cohort.
pub fn generate_case(cfg: &PhantomConfig, index: usize) -> PhantomCase {
    generate_case_inner(cfg, index, false).0
}

/// Generates case `index` and, with `background`, the true activity (SUV) of everything
/// but the glands on the CT grid (the anatomy painted again without the gland layers):
/// what a SPECT time series ([`spect`]) gives its own, non-gland kinetics.
pub(crate) fn generate_case_inner(
    cfg: &PhantomConfig,
    index: usize,
    background: bool,
) -> (PhantomCase, Option<Volume<f32>>) {
    let mut rng = case_rng(cfg.seed, index, 0);
    let style = case_style(cfg, index);
    let lobular = style == Style::Lobular;
    let u = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| rng.random_range(lo..hi);
    let scale = cfg.scale.clamp(0.05, 4.0);
    let size = u(&mut rng, 0.85, 1.15);
    let torso = cfg.fov == Fov::HeadNeckTorso;
    let anat = anatomy::build(&mut rng, size, torso, style);
    // Scanner and room draws come from their own stream: adding one does not reshuffle
    // the anatomy or the pose.
    let mut srng = case_rng(cfg.seed, index, 3);
    let mut facts = scanner::ScanFacts {
        uptake_factor: anat.uptake_factor,
        gland_atrophy: anat.atrophy,
        dental_metal: anat.metal.len(),
        ..Default::default()
    };

    // Pose: nodding (about x) up to 15 degrees, tilt and turn less; shift up to 20 mm.
    let rot_deg = [
        u(&mut rng, -15.0, 15.0),
        u(&mut rng, -8.0, 8.0),
        u(&mut rng, -10.0, 10.0),
    ];
    let shift = [
        u(&mut rng, -20.0, 20.0),
        u(&mut rng, -20.0, 20.0),
        u(&mut rng, -20.0, 20.0),
    ];
    let pose = Pose {
        rot: rotation(rot_deg),
        shift,
    };

    // CT grid: axis-aligned LPS, sized to the field of view (before the pose).
    let inplane = u(&mut rng, 0.8, 1.2) / scale;
    let thick = u(&mut rng, 1.5, 3.0) / scale;
    let half_x = if torso { 230.0 } else { 105.0 };
    // Both draws happen whether or not `cut_top` is set, so that switching it on changes
    // only where the scan's top lies, not the rest of the case.
    // The cut lies above the orbits (a scan planned for the glands keeps the lacrimal
    // glands), below the vertex.
    let (cut_drawn, cut_z) = (rng.random_bool(0.3), u(&mut rng, 78.0, 100.0));
    let top_cut = cfg.cut_top && cut_drawn;
    let z_top = if top_cut { cut_z } else { anat.vertex_z + 25.0 };
    // The scan range follows the head's height, as a technologist sets it from the scout
    // view: a head shifted down by 20 mm must not lose its submandibular glands below the
    // field of view. In-plane the head stays off-centre by its shift.
    let z_bottom = shift[2]
        + match cfg.fov {
            Fov::Head => -100.0,
            Fov::HeadNeck => -185.0,
            Fov::HeadNeckTorso => -340.0,
        };
    let z_top = z_top + shift[2];

    // The room: a table under the head in most scans, arms raised in some.
    let mut world_layers = Vec::new();
    let (y0, mut y1) = (-125.0, 125.0);
    if srng.random_bool(0.8) {
        // Where the head rests, over the whole head whether or not the scan is cut.
        let full_top = anat.vertex_z + 25.0 + shift[2];
        let back = posterior_extent(&anat.body, &pose, z_bottom, full_top);
        let (layers, far) =
            scanner::table_layers(&mut srng, back, shift[0], z_bottom, z_top, &mut facts);
        world_layers.extend(layers);
        // The reconstructed field of view takes in the table, as it does on a scanner.
        y1 = f64::max(y1, (far + 5.0).min(200.0));
    }
    if srng.random_bool(0.25) {
        facts.arms_up = true;
        world_layers.extend(scanner::arm_layers(&mut srng, shift, 0.7));
    }
    let shape = [
        ((2.0 * half_x) / inplane).round() as usize,
        ((y1 - y0) / inplane).round() as usize,
        ((z_top - z_bottom) / thick).round().max(4.0) as usize,
    ];
    let ct_grid = Geometry::new(shape, [inplane, inplane, thick], [-half_x, y0, z_bottom]);

    let texture = shapes::Warp {
        terms: (0..4)
            .map(|_| {
                let d = [
                    u(&mut rng, -1.0, 1.0),
                    u(&mut rng, -1.0, 1.0),
                    u(&mut rng, -1.0, 1.0),
                ];
                let n = shapes::norm(d).max(1e-6);
                let k = 2.0 * std::f64::consts::PI / u(&mut rng, 8.0, 16.0);
                (
                    [0.5, 0.0, 0.0],
                    [d[0] / n * k, d[1] / n * k, d[2] / n * k],
                    u(&mut rng, 0.0, 6.3),
                )
            })
            .collect(),
    };
    let layers: Vec<anatomy::Layer> = world_layers
        .into_iter()
        .chain(anat.layers.iter().cloned())
        .collect();
    let (ct, act, lab) = paint(&layers, &pose, &ct_grid, &texture);
    let background = background.then(|| {
        let rest: Vec<anatomy::Layer> = layers.iter().filter(|l| l.label == 0).cloned().collect();
        let (_, bg, _) = paint(&rest, &pose, &ct_grid, &texture);
        Volume::from_vec(ct_grid.clone(), bg).expect("grid-sized")
    });
    drop(layers);
    let ct_sigma = u(&mut rng, 10.0, 30.0);
    let mut ct = Volume::from_vec(ct_grid.clone(), ct).expect("grid-sized");
    // Scanner look: kernel, metal streaks, noise texture.
    facts.ct_kernel = ["soft", "standard", "sharp"][srng.random_range(0..3)].to_string();
    if let Some(k) = scanner::apply_kernel(&ct, &facts.ct_kernel, &mut srng) {
        ct = k;
    }
    let metal_world: Vec<([f64; 3], f64)> = anat
        .metal
        .iter()
        .map(|(c, r)| (pose.to_world(*c), *r))
        .collect();
    scanner::add_metal_streaks(&mut ct, &metal_world, &mut srng);
    facts.ct_noise_correlation_mm = if lobular {
        u(&mut srng, 0.6, 1.6)
    } else {
        u(&mut srng, 0.0, 1.0)
    };
    let ct_sigma = ct_sigma * u(&mut srng, 0.8, 1.2);
    scanner::add_noise(
        &mut ct,
        ct_sigma,
        facts.ct_noise_correlation_mm,
        cfg.seed,
        index,
    );
    let labels = Volume::from_vec(ct_grid.clone(), lab).expect("grid-sized");
    let activity = Volume::from_vec(ct_grid.clone(), act).expect("grid-sized");

    // PET: PSF blur, misregistration, native grid, noise, back onto the CT grid.
    // PET resolution from 4 mm (a digital PET with resolution modelling) to 8 mm (an
    // older scanner, or a strong post-filter). The lobular style adds the long tails of a
    // real PSF (scatter, positron range of Ga-68) as a second, wide Gaussian.
    let fwhm = 4.0 + 4.0 * u(&mut rng, 0.0, 1.0);
    let s = fwhm_to_sigma(fwhm);
    let mut blurred = gaussian_blur_mm(&activity, [s, s, s]);
    if lobular {
        facts.pet_psf_tail = u(&mut srng, 0.1, 0.3);
        let t = fwhm_to_sigma(fwhm * 2.5);
        let wide = gaussian_blur_mm(&activity, [t, t, t]);
        let f = facts.pet_psf_tail as f32;
        blurred
            .as_slice_mut()
            .par_iter_mut()
            .zip(wide.as_slice().par_iter())
            .for_each(|(v, w)| *v = (1.0 - f) * *v + f * w);
    }
    drop(activity);
    let mis_rot = [
        u(&mut rng, -1.2, 1.2),
        u(&mut rng, -1.2, 1.2),
        u(&mut rng, -1.2, 1.2),
    ];
    let mut mis_shift = [
        u(&mut rng, -1.0, 1.0),
        u(&mut rng, -1.0, 1.0),
        u(&mut rng, -1.0, 1.0),
    ];
    let len = shapes::norm(mis_shift).max(1e-9);
    // PET/CT misregistration up to 5 mm (patient motion between the two scans).
    let want = u(&mut rng, 0.0, 5.0);
    mis_shift.iter_mut().for_each(|v| *v *= want / len);
    let mis_rot = mis_rot.map(|v| v * 2.5);
    let (mis_rot, mis_shift) = limit_rotation(mis_rot, mis_shift, 3.0);
    let moved = {
        // Move the activity rigidly about the head's origin: the PET sees the patient
        // slightly elsewhere than the CT did.
        let r = rotation(mis_rot);
        let (g, data) = blurred.into_parts();
        let rel = [
            g.origin[0] - shift[0],
            g.origin[1] - shift[1],
            g.origin[2] - shift[2],
        ];
        let ro = mat_vec(&r, rel);
        let mut g2 = g.clone();
        g2.origin = [
            ro[0] + shift[0] + mis_shift[0],
            ro[1] + shift[1] + mis_shift[1],
            ro[2] + shift[2] + mis_shift[2],
        ];
        g2.direction = matmul(r, g.direction);
        Volume::new(g2, data).expect("same shape")
    };
    let pet_inplane = u(&mut rng, 2.0, 4.0) / scale;
    let pet_thick = u(&mut rng, 2.0, 4.0) / scale;
    let ext = [
        shape[0] as f64 * inplane,
        shape[1] as f64 * inplane,
        shape[2] as f64 * thick,
    ];
    let pet_shape = [
        (ext[0] / pet_inplane).ceil() as usize,
        (ext[1] / pet_inplane).ceil() as usize,
        (ext[2] / pet_thick).ceil().max(2.0) as usize,
    ];
    let pet_grid = Geometry::new(
        pet_shape,
        [pet_inplane, pet_inplane, pet_thick],
        [
            ct_grid.origin[0] - inplane / 2.0 + pet_inplane / 2.0,
            ct_grid.origin[1] - inplane / 2.0 + pet_inplane / 2.0,
            ct_grid.origin[2] - thick / 2.0 + pet_thick / 2.0,
        ],
    );
    let mut pet_native = resample(&moved, &pet_grid, Interpolation::Linear, 0.0);
    drop(moved);
    let noise_c = u(&mut rng, 0.1, 0.45);
    {
        let slice = pet_shape[0] * pet_shape[1];
        let seed = cfg.seed;
        pet_native
            .as_slice_mut()
            .par_chunks_mut(slice)
            .enumerate()
            .for_each(|(k, s)| {
                let mut r = case_rng(seed ^ 0x09e7_0001, index, 16 + k as u64);
                for v in s.iter_mut() {
                    let n: f64 = StandardNormal.sample(&mut r);
                    let x = v.max(0.0) as f64;
                    *v = (x + n * noise_c * x.sqrt()).max(0.0) as f32;
                }
            });
    }
    if lobular {
        // Post-reconstruction filter: the noise of an iterative reconstruction is
        // correlated over a few voxels, not white.
        facts.pet_noise_filter_mm = u(&mut srng, 2.0, 5.0);
        let f = fwhm_to_sigma(facts.pet_noise_filter_mm);
        pet_native = gaussian_blur_mm(&pet_native, [f, f, f]);
    }
    let pet = resample(&pet_native, &ct_grid, Interpolation::Linear, 0.0);

    let weight = 78.0 * size.powi(3) * u(&mut rng, 0.85, 1.2);
    let height = 1.75 * size * u(&mut rng, 0.95, 1.05);
    let sex = if rng.random_bool(0.85) { "M" } else { "F" };
    let (tracer, nuclide, half_life, activity_mbq) = if rng.random_bool(0.5) {
        ("Ga-68 PSMA-11", "68Ga", 4057.74, u(&mut rng, 120.0, 220.0))
    } else {
        ("F-18 PSMA-1007", "18F", 6586.2, u(&mut rng, 200.0, 330.0))
    };
    let uptake = u(&mut rng, 55.0, 90.0);

    let glands = measure_glands(&anat.glands, &ct, &pet, &labels);
    let meta = CaseMeta {
        id: case_id(index),
        seed: cfg.seed,
        index,
        fov: cfg.fov,
        ct_spacing_mm: ct_grid.spacing,
        ct_shape: ct_grid.shape,
        pet_spacing_mm: pet_grid.spacing,
        pet_shape: pet_grid.shape,
        head_rotation_deg: rot_deg,
        head_shift_mm: shift,
        body_size: size,
        top_cut,
        ct_noise_sigma_hu: ct_sigma,
        parotid_fat_fraction: anat.parotid_fat_fraction,
        pet_psf_fwhm_mm: fwhm,
        pet_noise_factor: noise_c,
        pet_misregistration_shift_mm: mis_shift,
        pet_misregistration_rotation_deg: mis_rot,
        patient_weight_kg: weight,
        patient_height_m: height,
        patient_sex: sex.into(),
        radiopharmaceutical: tracer.into(),
        radionuclide: nuclide.into(),
        half_life_s: half_life,
        injected_activity_mbq: activity_mbq,
        uptake_time_min: uptake,
        style,
        scan: facts,
        glands,
        spect: None,
    };
    (
        PhantomCase {
            id: case_id(index),
            ct,
            pet,
            pet_native,
            labels,
            meta,
            spect: None,
        },
        background,
    )
}

/// The most posterior world y of the body between world heights `z_lo` and `z_hi`: where
/// the head rests on the table. Sampled on a 3 mm grid of the body's frame box.
fn posterior_extent(body: &shapes::Shape, pose: &Pose, z_lo: f64, z_hi: f64) -> f64 {
    let (lo, hi) = body.bounds();
    let step = 3.0;
    let n: Vec<usize> = (0..3)
        .map(|d| ((hi[d] - lo[d]) / step).ceil().max(1.0) as usize)
        .collect();
    (0..n[2])
        .into_par_iter()
        .map(|k| {
            let mut best = f64::NEG_INFINITY;
            for j in 0..n[1] {
                for i in 0..n[0] {
                    let a = [
                        lo[0] + i as f64 * step,
                        lo[1] + j as f64 * step,
                        lo[2] + k as f64 * step,
                    ];
                    let w = pose.to_world(a);
                    if w[2] < z_lo || w[2] > z_hi || w[1] <= best {
                        continue;
                    }
                    if body.sdf(a) < 0.0 {
                        best = w[1];
                    }
                }
            }
            best
        })
        .reduce(|| f64::NEG_INFINITY, f64::max)
        .max(0.0)
}

/// Keeps the misregistration rotation within `max_deg` in total.
fn limit_rotation(rot: [f64; 3], shift: [f64; 3], max_deg: f64) -> ([f64; 3], [f64; 3]) {
    let n = shapes::norm(rot);
    if n > max_deg {
        (
            [
                rot[0] * max_deg / n,
                rot[1] * max_deg / n,
                rot[2] * max_deg / n,
            ],
            shift,
        )
    } else {
        (rot, shift)
    }
}

fn measure_glands(
    truth: &[anatomy::GlandTruth],
    ct: &Volume<f32>,
    pet: &Volume<f32>,
    labels: &Volume<u8>,
) -> Vec<GlandMeasure> {
    let g = labels.geometry();
    truth
        .iter()
        .map(|t| {
            let (mut n, mut hu, mut suv, mut max) = (0usize, 0.0f64, 0.0f64, f64::NEG_INFINITY);
            let mut c = [0.0f64; 3];
            for ((k, j, i), &l) in labels.data().indexed_iter() {
                if l != t.label {
                    continue;
                }
                n += 1;
                hu += *ct.get(i, j, k) as f64;
                let s = *pet.get(i, j, k) as f64;
                suv += s;
                max = max.max(s);
                c[0] += i as f64;
                c[1] += j as f64;
                c[2] += k as f64;
            }
            let nn = n.max(1) as f64;
            GlandMeasure {
                name: t.name.clone(),
                label: t.label,
                target_volume_ml: t.target_volume_ml,
                label_volume_ml: n as f64 * g.voxel_volume_ml(),
                voxels: n,
                true_suv: t.suv,
                ct_hu_mean: hu / nn,
                suv_mean: suv / nn,
                suv_max: if n > 0 { max } else { 0.0 },
                centroid_lps: g.index_to_world([c[0] / nn, c[1] / nn, c[2] / nn]),
            }
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    #[error(transparent)]
    Nifti(#[from] glandseg_nifti::NiftiError),
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// Ranges over the cohort, per gland, for the summary a user sees at the end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DatasetSummary {
    pub cases: usize,
    pub folder: PathBuf,
    /// name -> (min, max) label volume mL
    pub volume_ml: BTreeMap<String, (f64, f64)>,
    /// name -> (min, max) SUVmax on the PET channel
    pub suv_max: BTreeMap<String, (f64, f64)>,
}

/// Writes the cohort in the nnU-Net raw layout (see `shared/LABELS.md`): `dataset.json`,
/// `imagesTr/GLAND_000_0000.nii.gz` (CT, int16 HU), `imagesTr/GLAND_000_0001.nii.gz` (PET
/// SUV on the CT grid), `labelsTr/GLAND_000.nii.gz`, `meta/GLAND_000.json`, and with
/// `native` `pet_native/GLAND_000.nii.gz`. Cases are generated in parallel and written as
/// they finish, so memory holds a case per thread, not the cohort. `dataset.json` comes
/// last: a folder without it is an interrupted run.
pub fn write_dataset(
    out: &Path,
    cfg: &PhantomConfig,
    cases: usize,
    native: bool,
    on_case_done: &(dyn Fn(&PhantomCase) + Sync),
) -> Result<DatasetSummary, PhantomError> {
    write_dataset_with(out, cfg, cases, native, None, on_case_done)
}

/// [`write_dataset`], and with `spect` also each case's SPECT time series for dosimetry
/// ([`spect`]): `spect/GLAND_000/spect_024h.nii.gz` (Bq/mL at scan time, on the SPECT's
/// own grid) per time point, the truth in `meta/GLAND_000.json` under `spect`.
pub fn write_dataset_with(
    out: &Path,
    cfg: &PhantomConfig,
    cases: usize,
    native: bool,
    spect: Option<&spect::SpectConfig>,
    on_case_done: &(dyn Fn(&PhantomCase) + Sync),
) -> Result<DatasetSummary, PhantomError> {
    for sub in ["imagesTr", "labelsTr", "meta"].iter().chain(if native {
        &["pet_native"][..]
    } else {
        &[][..]
    }) {
        let d = out.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| PhantomError::Io(d.clone(), e))?;
    }
    let metas: Vec<CaseMeta> = (0..cases)
        .into_par_iter()
        .map(|i| -> Result<CaseMeta, PhantomError> {
            let (mut case, background) = generate_case_inner(cfg, i, spect.is_some());
            if let (Some(sc), Some(bg)) = (spect, background) {
                let mut series = spect::spect_series(&case, &bg, cfg, sc);
                let dir = out.join("spect").join(&case.id);
                std::fs::create_dir_all(&dir).map_err(|e| PhantomError::Io(dir.clone(), e))?;
                for (t, img) in sc.timepoints_h.iter().zip(&series.images) {
                    let name = spect::image_name(*t);
                    glandseg_nifti::write_volume(&dir.join(&name), img)?;
                    series.meta.files.push(format!("spect/{}/{name}", case.id));
                }
                case.meta.spect = Some(series.meta.clone());
                case.spect = Some(series);
            }
            let id = &case.id;
            glandseg_nifti::write_ct_i16(
                &out.join(format!("imagesTr/{id}_0000.nii.gz")),
                &case.ct,
            )?;
            glandseg_nifti::write_volume(
                &out.join(format!("imagesTr/{id}_0001.nii.gz")),
                &case.pet,
            )?;
            glandseg_nifti::write_volume(&out.join(format!("labelsTr/{id}.nii.gz")), &case.labels)?;
            if native {
                glandseg_nifti::write_volume(
                    &out.join(format!("pet_native/{id}.nii.gz")),
                    &case.pet_native,
                )?;
            }
            atomic::write_json(&out.join(format!("meta/{id}.json")), &case.meta)?;
            on_case_done(&case);
            Ok(case.meta)
        })
        .collect::<Result<_, _>>()?;
    let labels = LabelMap::default();
    let dataset = serde_json::json!({
        "name": "glandseg synthetic head-and-neck PSMA PET/CT",
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": labels.to_nnunet_labels(),
        "numTraining": cases,
        "file_ending": ".nii.gz",
        "glandseg_phantom": {
            "version": env!("CARGO_PKG_VERSION"),
            "seed": cfg.seed,
            "fov": cfg.fov,
            "cut_top": cfg.cut_top,
            "scale": cfg.scale,
            "style": cfg.style,
            "style_from": cfg.style_from,
            "pet_units": "SUVbw (g/mL)",
            "ct_units": "HU",
            "native_pet": native,
            "spect": spect,
        }
    });
    atomic::write_json(&out.join("dataset.json"), &dataset)?;
    let mut summary = DatasetSummary {
        cases,
        folder: out.to_path_buf(),
        ..Default::default()
    };
    for m in &metas {
        for g in &m.glands {
            let v = summary
                .volume_ml
                .entry(g.name.clone())
                .or_insert((f64::INFINITY, f64::NEG_INFINITY));
            *v = (v.0.min(g.label_volume_ml), v.1.max(g.label_volume_ml));
            let s = summary
                .suv_max
                .entry(g.name.clone())
                .or_insert((f64::INFINITY, f64::NEG_INFINITY));
            *s = (s.0.min(g.suv_max), s.1.max(g.suv_max));
        }
    }
    Ok(summary)
}
