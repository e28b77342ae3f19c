//! Training patches: where to cut them (foreground oversampling, rare classes on purpose)
//! and how to vary them (nnU-Net's augmentation pipeline, with one change that matters
//! for glands: a left-right mirror always swaps every `_left` label with its `_right`
//! partner, so laterality stays part of what the network learns instead of noise).
//!
//! Everything is drawn from an RNG the caller seeds per (iteration, sample): a batch is a
//! pure function of the seed and its position in the run, which is what makes a resumed
//! run identical to an unbroken one.

use crate::preprocess::CachedCase;
use glandseg_core::geometry::{mat_mul, rotation_zyx};
use glandseg_ops::flip::flip_blocks;
use rand::Rng;
use rand_distr::{Distribution, Normal};

/// How training mirrors left and right (`train --mirror`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum MirrorMode {
    /// Mirror and swap each `_left` label with its `_right` partner (the default).
    #[default]
    Swap,
    /// Mirror the image and labels as they are (nnU-Net's default; breaks laterality).
    Plain,
    /// No left-right mirroring.
    None,
}

impl MirrorMode {
    /// Sets the augmentation's mirror to this mode.
    pub fn apply(self, aug: &mut AugmentConfig) {
        match self {
            MirrorMode::Swap => aug.mirror_keeps_labels = false,
            MirrorMode::Plain => aug.mirror_keeps_labels = true,
            MirrorMode::None => aug.p_mirror_lr = 0.0,
        }
    }
}

/// Probabilities and ranges, defaults as nnU-Net's `get_training_transforms`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Probability of a random rotation.
    pub p_rotation: f64,
    /// Largest rotation, degrees.
    pub max_rotation_deg: f64,
    /// Probability of a random scaling.
    pub p_scale: f64,
    /// Scaling range (min, max).
    pub scale_range: (f64, f64),
    /// Smooth random displacement (off by default, as in nnU-Net v2).
    pub p_elastic: f64,
    /// Displacement magnitude, voxels.
    pub elastic_magnitude_vox: f64,
    /// Probability of the left-right mirror (with the label swap unless
    /// `mirror_keeps_labels`).
    pub p_mirror_lr: f64,
    /// Mirror left-right WITHOUT swapping `_left` and `_right` labels: nnU-Net's default,
    /// which teaches the network that a gland may be on either side. Only for the
    /// ablation that shows what it does; never the default.
    #[serde(default)]
    pub mirror_keeps_labels: bool,
    /// Also flip the other two axes (anterior-posterior, superior-inferior). Off by default:
    /// heads are not upside down in PET/CT, and a superior-inferior flip puts the lacrimal
    /// glands where submandibular glands belong.
    pub mirror_other_axes: bool,
    /// Probability of Gaussian noise.
    pub p_noise: f64,
    /// Probability of Gaussian blur.
    pub p_blur: f64,
    /// Probability of a brightness change.
    pub p_brightness: f64,
    /// Probability of a contrast change.
    pub p_contrast: f64,
    /// Probability of low-resolution simulation.
    pub p_lowres: f64,
    /// Probability of a gamma change.
    pub p_gamma: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            p_rotation: 0.2,
            max_rotation_deg: 30.0,
            p_scale: 0.2,
            scale_range: (0.7, 1.4),
            p_elastic: 0.0,
            elastic_magnitude_vox: 2.0,
            p_mirror_lr: 0.5,
            mirror_keeps_labels: false,
            mirror_other_axes: false,
            p_noise: 0.1,
            p_blur: 0.2,
            p_brightness: 0.15,
            p_contrast: 0.15,
            p_lowres: 0.25,
            p_gamma: 0.3,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all (validation patches, tests).
    pub fn none() -> Self {
        AugmentConfig {
            p_rotation: 0.0,
            p_scale: 0.0,
            p_elastic: 0.0,
            p_mirror_lr: 0.0,
            mirror_other_axes: false,
            p_noise: 0.0,
            p_blur: 0.0,
            p_brightness: 0.0,
            p_contrast: 0.0,
            p_lowres: 0.0,
            p_gamma: 0.0,
            ..AugmentConfig::default()
        }
    }
}

/// Cuts and augments patches of one size from cached cases.
#[derive(Clone, Debug)]
pub struct PatchSampler {
    /// Patch size along (i, j, k).
    pub patch: [usize; 3],
    /// The augmentation applied to each patch.
    pub augment: AugmentConfig,
    /// Label value -> its mirror partner (identity for unpaired labels).
    pub swap: [u8; 256],
    /// Value each channel takes outside the image (normalised air / zero uptake).
    pub fill: Vec<f32>,
    /// A cascade's fine stage: the label values whose degraded masks follow the image
    /// channels as stage-1 prior channels ([`crate::prior`]); empty for other plans.
    pub prior_values: Vec<u8>,
    /// How the prior channels are degraded.
    pub prior: crate::prior::PriorDegradation,
}

/// One patch: channels `[C, k, j, i]` (image channels, then any prior channels) and labels `[k, j, i]`, flattened.
pub struct Patch {
    /// Channels `[C, k, j, i]`, flattened.
    pub image: Vec<f32>,
    /// Labels `[k, j, i]`, flattened.
    pub labels: Vec<u8>,
    /// Whether the left-right mirror (with swap) was applied.
    pub mirrored: bool,
}

fn trilinear(data: &[f32], n: [usize; 3], p: [f64; 3], fill: f32) -> f32 {
    let mut base = [0isize; 3];
    let mut frac = [0f64; 3];
    for a in 0..3 {
        let f = p[a].floor();
        base[a] = f as isize;
        frac[a] = p[a] - f;
    }
    let at = |i: isize, j: isize, k: isize| -> f64 {
        if i < 0 || j < 0 || k < 0 || i >= n[0] as isize || j >= n[1] as isize || k >= n[2] as isize
        {
            fill as f64
        } else {
            data[(k as usize * n[1] + j as usize) * n[0] + i as usize] as f64
        }
    };
    if frac == [0.0; 3] {
        return at(base[0], base[1], base[2]) as f32;
    }
    let mut acc = 0.0;
    for dz in 0..2 {
        let wz = if dz == 0 { 1.0 - frac[2] } else { frac[2] };
        if wz == 0.0 {
            continue;
        }
        for dy in 0..2 {
            let wy = if dy == 0 { 1.0 - frac[1] } else { frac[1] };
            if wy == 0.0 {
                continue;
            }
            for dx in 0..2 {
                let wx = if dx == 0 { 1.0 - frac[0] } else { frac[0] };
                if wx == 0.0 {
                    continue;
                }
                acc += wx * wy * wz * at(base[0] + dx, base[1] + dy, base[2] + dz);
            }
        }
    }
    acc as f32
}

fn nearest(data: &[u8], n: [usize; 3], p: [f64; 3]) -> u8 {
    let mut idx = [0usize; 3];
    for a in 0..3 {
        let r = p[a].round();
        if r < 0.0 || r >= n[a] as f64 {
            return 0;
        }
        idx[a] = r as usize;
    }
    data[(idx[2] * n[1] + idx[1]) * n[0] + idx[0]]
}

impl PatchSampler {
    /// The sampler a plan trains with: its label swap table and its channels' outside values.
    pub fn for_plan(plan: &glandseg_plan::Plan, patch: [usize; 3], augment: AugmentConfig) -> Self {
        PatchSampler {
            patch,
            augment,
            swap: plan.labels.swap_table(),
            fill: crate::preprocess::outside_values(plan),
            prior_values: plan.prior_values(),
            prior: Default::default(),
        }
    }

    /// Where the patch centre goes: on a random voxel of a random class present in the
    /// case when `force_fg` (each class equally likely, so the small lacrimal glands are
    /// seen as often as the parotids), anywhere otherwise. The patch may reach past the
    /// image by up to half its size, as nnU-Net pads.
    fn centre<R: Rng>(&self, case: &CachedCase, force_fg: bool, rng: &mut R) -> [f64; 3] {
        let n = case.info.geometry.shape;
        if force_fg && !case.info.class_locations.is_empty() {
            let classes: Vec<&Vec<[usize; 3]>> = case
                .info
                .class_locations
                .values()
                .filter(|v| !v.is_empty())
                .collect();
            if !classes.is_empty() {
                let locs = classes[rng.random_range(0..classes.len())];
                let l = locs[rng.random_range(0..locs.len())];
                return [l[0] as f64, l[1] as f64, l[2] as f64];
            }
        }
        let mut c = [0.0; 3];
        for a in 0..3 {
            let half = (self.patch[a] / 2) as f64;
            let lo = half.min(n[a] as f64 / 2.0) - half / 2.0;
            let hi = (n[a] as f64 - half).max(n[a] as f64 / 2.0) + half / 2.0;
            c[a] = if hi > lo {
                rng.random_range(lo..hi).floor()
            } else {
                lo.floor()
            };
        }
        c
    }

    /// Cuts one (augmented) patch. `lr_axis` is the voxel axis closest to the patient's
    /// left-right direction (`Geometry::axis_along(0)`).
    pub fn sample<R: Rng>(
        &self,
        case: &CachedCase,
        force_fg: bool,
        lr_axis: usize,
        rng: &mut R,
    ) -> Patch {
        let centre = self.centre(case, force_fg, rng);
        self.sample_at(case, centre, lr_axis, rng)
    }

    /// A patch centred on a random voxel of label `value` (validation cycles through the
    /// labels so that every gland is scored every epoch); `None` when the case lacks it.
    pub fn sample_at_label<R: Rng>(
        &self,
        case: &CachedCase,
        value: u8,
        lr_axis: usize,
        rng: &mut R,
    ) -> Option<Patch> {
        let locs = case
            .info
            .class_locations
            .get(&value)
            .filter(|l| !l.is_empty())?;
        let l = locs[rng.random_range(0..locs.len())];
        Some(self.sample_at(case, [l[0] as f64, l[1] as f64, l[2] as f64], lr_axis, rng))
    }

    /// Cuts the (augmented) patch centred on voxel `centre` of the case.
    pub fn sample_at<R: Rng>(
        &self,
        case: &CachedCase,
        centre: [f64; 3],
        lr_axis: usize,
        rng: &mut R,
    ) -> Patch {
        let aug = &self.augment;
        let n = case.info.geometry.shape;
        let sp = case.info.geometry.spacing;
        let p = self.patch;

        // Spatial transform in mm (rotation and isotropic scale), expressed in voxels.
        let mut m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        if rng.random_bool(aug.p_rotation) {
            let r = aug.max_rotation_deg.to_radians();
            let rot = rotation_zyx([
                rng.random_range(-r..=r),
                rng.random_range(-r..=r),
                rng.random_range(-r..=r),
            ]);
            m = mat_mul(rot, m);
        }
        if rng.random_bool(aug.p_scale) {
            let s = rng.random_range(aug.scale_range.0..=aug.scale_range.1);
            for row in m.iter_mut() {
                for v in row.iter_mut() {
                    *v /= s;
                }
            }
        }
        // voxel offset d -> mm (diag sp) -> transform -> voxels (diag 1/sp)
        for r in 0..3 {
            for c in 0..3 {
                m[r][c] *= sp[c] / sp[r];
            }
        }
        // Elastic: a displacement field on a 4^3 control grid, trilinearly interpolated.
        let elastic: Option<Vec<f32>> = if rng.random_bool(aug.p_elastic) {
            let normal = Normal::new(0.0, aug.elastic_magnitude_vox).expect("finite sigma");
            Some((0..3 * 64).map(|_| normal.sample(rng) as f32).collect())
        } else {
            None
        };

        let vox = p[0] * p[1] * p[2];
        let channels = case.info.channels;
        let mut image = vec![0f32; channels * vox];
        let mut labels = vec![0u8; vox];
        let seg = case.labels();
        for k in 0..p[2] {
            for j in 0..p[1] {
                for i in 0..p[0] {
                    let d = [
                        i as f64 - (p[0] / 2) as f64,
                        j as f64 - (p[1] / 2) as f64,
                        k as f64 - (p[2] / 2) as f64,
                    ];
                    let mut src = [0.0; 3];
                    for a in 0..3 {
                        src[a] = centre[a] + (0..3).map(|b| m[a][b] * d[b]).sum::<f64>();
                    }
                    if let Some(field) = &elastic {
                        let q = [
                            i as f64 / p[0].max(2) as f64 * 3.0,
                            j as f64 / p[1].max(2) as f64 * 3.0,
                            k as f64 / p[2].max(2) as f64 * 3.0,
                        ];
                        for a in 0..3 {
                            src[a] +=
                                trilinear(&field[a * 64..(a + 1) * 64], [4, 4, 4], q, 0.0) as f64;
                        }
                    }
                    let o = (k * p[1] + j) * p[0] + i;
                    for c in 0..channels {
                        image[c * vox + o] = trilinear(case.channel(c), n, src, self.fill[c]);
                    }
                    labels[o] = nearest(seg, n, src);
                }
            }
        }

        let mut mirrored = false;
        if rng.random_bool(aug.p_mirror_lr) {
            flip_blocks(&mut image, p, lr_axis);
            flip_blocks(&mut labels, p, lr_axis);
            if !aug.mirror_keeps_labels {
                for l in labels.iter_mut() {
                    *l = self.swap[*l as usize];
                }
            }
            mirrored = true;
        }
        if aug.mirror_other_axes {
            for axis in (0..3).filter(|&a| a != lr_axis) {
                if rng.random_bool(0.5) {
                    flip_blocks(&mut image, p, axis);
                    flip_blocks(&mut labels, p, axis);
                }
            }
        }
        for c in 0..channels {
            intensity(&mut image[c * vox..(c + 1) * vox], p, aug, rng);
        }
        if !self.prior_values.is_empty() {
            // From the final labels, so mirrors and flips apply to the priors too.
            image.extend(crate::prior::prior_channels(
                &labels,
                p,
                sp,
                &self.prior_values,
                &self.prior,
                rng,
            ));
        }
        Patch {
            image,
            labels,
            mirrored,
        }
    }
}

/// Separable Gaussian along the three axes, sigma in voxels.
fn blur(x: &mut [f32], p: [usize; 3], sigma: f64) {
    blur_axes(x, p, [sigma; 3]);
}

/// Separable Gaussian with its own sigma (voxels) per axis, truncated at 3 sigma; the
/// kernel is renormalised at the block's edges.
pub(crate) fn blur_axes(x: &mut [f32], p: [usize; 3], sigma: [f64; 3]) {
    let stride = [1, p[0], p[0] * p[1]];
    for axis in 0..3 {
        let r = (3.0 * sigma[axis]).ceil() as isize;
        let w: Vec<f64> = (-r..=r)
            .map(|t| (-(t * t) as f64 / (2.0 * sigma[axis] * sigma[axis])).exp())
            .collect();
        let src = x.to_vec();
        let len = p[axis] as isize;
        for (o, v) in x.iter_mut().enumerate() {
            let pos = ((o / stride[axis]) % p[axis]) as isize;
            let (mut acc, mut norm) = (0.0, 0.0);
            for (t, wt) in (-r..=r).zip(&w) {
                let q = pos + t;
                if q >= 0 && q < len {
                    let idx = (o as isize + t * stride[axis] as isize) as usize;
                    acc += wt * src[idx] as f64;
                    norm += wt;
                }
            }
            *v = (acc / norm) as f32;
        }
    }
}

/// Simulated low resolution: nearest-neighbour down to `zoom` of the size, linear back up.
fn low_res(x: &mut [f32], p: [usize; 3], zoom: f64) {
    let q = p.map(|s| ((s as f64 * zoom).round() as usize).max(1));
    let mut coarse = vec![0f32; q[0] * q[1] * q[2]];
    for k in 0..q[2] {
        for j in 0..q[1] {
            for i in 0..q[0] {
                let si = ((i as f64 + 0.5) * p[0] as f64 / q[0] as f64) as usize;
                let sj = ((j as f64 + 0.5) * p[1] as f64 / q[1] as f64) as usize;
                let sk = ((k as f64 + 0.5) * p[2] as f64 / q[2] as f64) as usize;
                coarse[(k * q[1] + j) * q[0] + i] =
                    x[(sk.min(p[2] - 1) * p[1] + sj.min(p[1] - 1)) * p[0] + si.min(p[0] - 1)];
            }
        }
    }
    for k in 0..p[2] {
        for j in 0..p[1] {
            for i in 0..p[0] {
                let c = [
                    ((i as f64 + 0.5) * q[0] as f64 / p[0] as f64 - 0.5)
                        .clamp(0.0, (q[0] - 1) as f64),
                    ((j as f64 + 0.5) * q[1] as f64 / p[1] as f64 - 0.5)
                        .clamp(0.0, (q[1] - 1) as f64),
                    ((k as f64 + 0.5) * q[2] as f64 / p[2] as f64 - 0.5)
                        .clamp(0.0, (q[2] - 1) as f64),
                ];
                x[(k * p[1] + j) * p[0] + i] = trilinear(&coarse, q, c, 0.0);
            }
        }
    }
}

fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let s = (x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    (m, s)
}

fn intensity<R: Rng>(x: &mut [f32], p: [usize; 3], aug: &AugmentConfig, rng: &mut R) {
    if rng.random_bool(aug.p_noise) {
        let sigma = rng.random_range(0.0..0.1f64).sqrt();
        if sigma > 0.0 {
            let normal = Normal::new(0.0, sigma).expect("finite sigma");
            for v in x.iter_mut() {
                *v += normal.sample(rng) as f32;
            }
        }
    }
    if rng.random_bool(aug.p_blur) && rng.random_bool(0.5) {
        blur(x, p, rng.random_range(0.5..1.0));
    }
    if rng.random_bool(aug.p_brightness) {
        let f = rng.random_range(0.75..1.25f32);
        x.iter_mut().for_each(|v| *v *= f);
    }
    if rng.random_bool(aug.p_contrast) {
        let f = rng.random_range(0.75..1.25f64);
        let (m, _) = mean_std(x);
        let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, &v| {
            (a.0.min(v), a.1.max(v))
        });
        for v in x.iter_mut() {
            *v = (((*v as f64 - m) * f + m) as f32).clamp(lo, hi);
        }
    }
    if rng.random_bool(aug.p_lowres) && rng.random_bool(0.5) {
        low_res(x, p, rng.random_range(0.5..1.0));
    }
    // Gamma, retaining mean and std; sometimes on the inverted image (nnU-Net does both).
    // nnU-Net: p 0.1 inverted, p 0.3 plain; the inverted one scales with p_gamma too.
    for (p_this, invert) in [(aug.p_gamma / 3.0, true), (aug.p_gamma, false)] {
        if !rng.random_bool(p_this) {
            continue;
        }
        let gamma = if rng.random_bool(0.5) {
            rng.random_range(0.7..1.0)
        } else {
            rng.random_range(1.0..1.5)
        };
        if invert {
            x.iter_mut().for_each(|v| *v = -*v);
        }
        let (m, s) = mean_std(x);
        let (lo, hi) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, &v| {
            (a.0.min(v), a.1.max(v))
        });
        let range = (hi - lo) as f64 + 1e-7;
        for v in x.iter_mut() {
            *v = ((((*v - lo) as f64 / range).powf(gamma)) * range + lo as f64) as f32;
        }
        let (m2, s2) = mean_std(x);
        for v in x.iter_mut() {
            *v = (((*v as f64 - m2) / (s2 + 1e-8)) * s + m) as f32;
        }
        if invert {
            x.iter_mut().for_each(|v| *v = -*v);
        }
    }
}
