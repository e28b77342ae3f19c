//! nnU-Net's planning rules, written out so that each one can be tested on made-up
//! fingerprints:
//!
//! - target spacing = median spacing per axis; on an anisotropic axis (spacing > 3x the
//!   others and, in voxels, < 1/3 of the others' median size) the 10th percentile instead,
//!   so thin-slice cases are not thrown away;
//! - topology: downsample an axis while it stays >= 4 voxels and its spacing is within 2x
//!   of the finest current spacing; kernel 3 on axes within 2x of the finest spacing, else
//!   1; features 32 * 2^i capped at 320 (GPU) or 16 * 2^i capped at 128 (CPU preset), or
//!   8 * 2^i capped at 64 ("tiny", the demo's minutes-on-two-cores network);
//! - patch size: start from the median shape at the target spacing and shrink the axis that
//!   is largest relative to that median until the estimated training memory fits the
//!   budget; every axis divisible by its total downsampling;
//! - batch size: as many as fit the budget, at least 2, at most what covers 5 % of the
//!   dataset's voxels per step;
//! - normalisation: CT clipped to the foreground 0.5-99.5 percentiles, then z-scored with
//!   the foreground mean and std; PET (SUV) as ln(1 + SUV) clipped the same way, then
//!   z-scored: uptake is heavy-tailed (glands 10-20, background < 1), and the log keeps
//!   both ends apart instead of squashing the background to one value.

use crate::fingerprint::Fingerprint;
use glandseg_core::LabelMap;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "scheme", rename_all = "snake_case")]
/// Per-channel intensity normalisation, fitted on the foreground by the fingerprint.
pub enum Normalization {
    /// clip to [lo, hi], then (x - mean) / std.
    ClipZscore {
        /// Lower clip (foreground 0.5th percentile).
        lo: f64,
        /// Upper clip (foreground 99.5th percentile).
        hi: f64,
        /// Foreground mean.
        mean: f64,
        /// Foreground standard deviation.
        std: f64,
    },
    /// y = ln(1 + max(x, 0)), clip y to [0, hi], then (y - mean) / std.
    Log1pZscore {
        /// Upper clip of y.
        hi: f64,
        /// Foreground mean of y.
        mean: f64,
        /// Foreground standard deviation of y.
        std: f64,
    },
    /// The channel is withheld from the network: 0 everywhere (`train --channels`, the
    /// CT-only / PET-only ablations). The network keeps its inputs, so a model trained
    /// without a channel has the same shape and predicts through the same code.
    Off,
}

impl Normalization {
    /// The normalised value of `x`.
    pub fn apply(&self, x: f32) -> f32 {
        match *self {
            Normalization::ClipZscore { lo, hi, mean, std } => {
                ((x as f64).clamp(lo, hi) - mean) as f32 / std.max(1e-8) as f32
            }
            Normalization::Log1pZscore { hi, mean, std } => {
                (((x as f64).max(0.0).ln_1p()).min(hi) - mean) as f32 / std.max(1e-8) as f32
            }
            Normalization::Off => 0.0,
        }
    }
}

/// One resolution level of the U-Net.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stage {
    /// Feature channels of the stage's convolutions.
    pub features: usize,
    /// Convolution kernel per axis (i, j, k).
    pub kernel: [usize; 3],
    /// Downsampling stride into this stage (1 for the first).
    pub stride: [usize; 3],
}

/// The network's widths: a closed set, so that a misspelt preset is an error (on the
/// command line, a usage error) instead of quietly becoming another network.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// 8 * 2^i features capped at 64: the demo's minutes-on-two-cores network.
    Tiny,
    /// 16 * 2^i features capped at 128: a network a CPU trains in hours.
    #[default]
    Cpu,
    /// 32 * 2^i features capped at 320: nnU-Net's widths.
    Gpu,
}

impl Preset {
    /// Features of the first stage and the cap of every later one.
    pub fn widths(self) -> (usize, usize) {
        match self {
            Preset::Gpu => (32, 320),
            Preset::Tiny => (8, 64),
            Preset::Cpu => (16, 128),
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Tiny => "tiny",
            Preset::Cpu => "cpu",
            Preset::Gpu => "gpu",
        })
    }
}

/// What the planner may choose within: the memory budget and the network's widths.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PlanOptions {
    /// Memory the training may use, GB (CPU RAM or GPU memory).
    pub budget_gb: f64,
    /// The network's widths.
    pub preset: Preset,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            budget_gb: 4.0,
            preset: Preset::Cpu,
        }
    }
}

/// Changes to a made plan (a quick run's coarse grid, small patch or batch). Applied with
/// [`Plan::with_overrides`], which keeps what depends on them consistent, so the model
/// folder's plan tiles prediction exactly as training sampled patches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanOverrides {
    /// Isotropic or per-axis target spacing, mm: the topology is re-derived for it.
    pub spacing: Option<[f64; 3]>,
    /// Patch size, voxels: rounded up to the network's total stride.
    pub patch: Option<[usize; 3]>,
    /// Patches per training step.
    pub batch: Option<usize>,
    /// The input channels the network may see (names as in `channels`, case-insensitive);
    /// the others are withheld ([`Normalization::Off`]), in both stages of a cascade.
    pub channels: Option<Vec<String>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
/// The training plan (plans.json): everything the network, the preprocessing and the prediction tiling follow.
pub struct Plan {
    /// The glandseg that made the plan.
    pub glandseg_version: String,
    /// Input channels in order (CT first).
    pub channels: Vec<String>,
    /// The label map the network predicts.
    pub labels: LabelMap,
    /// (left, right) label name pairs, swapped by mirroring.
    pub lateral_pairs: Vec<(String, String)>,
    /// Spacing every case is resampled to, mm.
    pub target_spacing: [f64; 3],
    /// Median body-cropped shape at the target spacing, voxels.
    pub median_shape_at_target: [usize; 3],
    /// Training patch and prediction tile, voxels (i, j, k).
    pub patch_size: [usize; 3],
    /// Patches per training step.
    pub batch_size: usize,
    /// The U-Net's stages, finest first.
    pub stages: Vec<Stage>,
    /// One normalisation per channel.
    pub normalization: Vec<Normalization>,
    /// The options the plan was made with.
    pub options: PlanOptions,
    /// Estimated training memory of one step, GB.
    pub estimated_memory_gb: f64,
    /// Stage 2 of a coarse-to-fine cascade (absent: single stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<crate::cascade::CascadePlan>,
    /// The dataset's label values mapped to this plan's (a fine stage's side-less
    /// classes); absent: the dataset's values as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_source: Option<Vec<u8>>,
    /// Training crop: the labels' box grown by this many mm instead of the body box (a
    /// fine stage only ever sees boxes around glands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop_to_labels_mm: Option<f64>,
    /// A cascade's fine stage only: the classes (this plan's names) whose coarse-stage
    /// probability the network reads as extra input channels after the image channels,
    /// in this order. In training they are made from the labels, degraded the way a
    /// coarse stage errs (`glandseg_train::prior`); at prediction they are
    /// stage 1's probabilities. Empty: the images alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior_channels: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Median spacing, with nnU-Net's rule for anisotropic axes.
pub fn target_spacing(spacings: &[[f64; 3]], shapes: &[[usize; 3]]) -> [f64; 3] {
    let mut t = [0.0; 3];
    let mut size = [0.0; 3];
    for a in 0..3 {
        t[a] = median(spacings.iter().map(|s| s[a]).collect());
        size[a] = median(shapes.iter().map(|s| s[a] as f64).collect());
    }
    let worst = (0..3).max_by(|&a, &b| t[a].total_cmp(&t[b])).unwrap_or(2);
    let others: Vec<usize> = (0..3).filter(|&a| a != worst).collect();
    let max_other_sp = others.iter().map(|&a| t[a]).fold(0.0, f64::max);
    let min_other_size = others
        .iter()
        .map(|&a| size[a])
        .fold(f64::INFINITY, f64::min);
    if t[worst] > 3.0 * max_other_sp && size[worst] * 3.0 < min_other_size {
        let p10 = percentile(spacings.iter().map(|s| s[worst]).collect(), 10.0);
        t[worst] = if p10 < max_other_sp {
            max_other_sp + 1e-5
        } else {
            p10
        };
    }
    t
}

/// Stages for a patch at `spacing`: strides and kernels by nnU-Net's rules.
pub fn topology(patch: [usize; 3], spacing: [f64; 3], preset: Preset) -> Vec<Stage> {
    let (base, cap) = preset.widths();
    let mut stages = Vec::new();
    let mut sp = spacing;
    let mut size = patch.map(|p| p as f64);
    let mut stride = [1usize; 3];
    for i in 0..7 {
        let min_sp = sp.iter().cloned().fold(f64::INFINITY, f64::min);
        let kernel = [0, 1, 2].map(|a| if sp[a] <= 2.0 * min_sp { 3 } else { 1 });
        stages.push(Stage {
            features: (base << i).min(cap),
            kernel,
            stride,
        });
        // Which axes can go down once more?
        let next = [0, 1, 2].map(|a| {
            if size[a] / 2.0 >= 4.0 && sp[a] <= 2.0 * min_sp {
                2
            } else {
                1
            }
        });
        if next == [1, 1, 1] {
            break;
        }
        for a in 0..3 {
            size[a] /= next[a] as f64;
            sp[a] *= next[a] as f64;
        }
        stride = next;
    }
    stages
}

impl Plan {
    /// Checks what a plan read from disk must satisfy before a network is built from it
    /// or an image resampled with it (a hand-edited or damaged `plans.json` otherwise
    /// panics, or asks for terabytes): the message names the field and its value.
    pub fn check(&self) -> Result<(), String> {
        let n = self.channels.len();
        if n == 0 || n > 16 {
            return Err(format!("\"channels\" holds {n} names; 1 to 16 expected"));
        }
        if self.normalization.len() != n {
            return Err(format!(
                "\"normalization\" has {} entries for {n} channels",
                self.normalization.len()
            ));
        }
        if let Err(e) = LabelMap::new(self.labels.entries().to_vec()) {
            return Err(format!("\"labels\": {e}"));
        }
        if self.labels.num_classes() < 2 {
            return Err("\"labels\" names no class besides the background".into());
        }
        if !(1..=8).contains(&self.stages.len()) {
            return Err(format!(
                "\"stages\" holds {} stages; 1 to 8 expected",
                self.stages.len()
            ));
        }
        for (i, st) in self.stages.iter().enumerate() {
            if !(1..=1024).contains(&st.features) {
                return Err(format!(
                    "stage {i}: features {} (1 to 1024 expected)",
                    st.features
                ));
            }
            if st.kernel.iter().any(|k| k % 2 == 0 || *k > 7) {
                return Err(format!(
                    "stage {i}: kernel {:?} (odd sizes up to 7 expected)",
                    st.kernel
                ));
            }
            if st.stride.iter().any(|s| !(1..=4).contains(s)) || (i == 0 && st.stride != [1, 1, 1])
            {
                return Err(format!("stage {i}: stride {:?}", st.stride));
            }
        }
        let total: [usize; 3] =
            std::array::from_fn(|a| self.stages.iter().map(|s| s.stride[a]).product());
        for a in 0..3 {
            let p = self.patch_size[a];
            if p == 0 || p > 1024 || !p.is_multiple_of(total[a]) {
                return Err(format!(
                    "\"patch_size\" {:?}: every axis 1 to 1024 voxels and divisible by the network's total stride {total:?}",
                    self.patch_size
                ));
            }
        }
        if self.patch_size.iter().product::<usize>() > 512 * 512 * 512 {
            return Err(format!("\"patch_size\" {:?} is too large", self.patch_size));
        }
        if !(1..=4096).contains(&self.batch_size) {
            return Err(format!(
                "\"batch_size\" {} (1 to 4096 expected)",
                self.batch_size
            ));
        }
        if self
            .target_spacing
            .iter()
            .any(|s| !(s.is_finite() && *s > 1e-3 && *s < 1e3))
        {
            return Err(format!(
                "\"target_spacing\" {:?} (positive mm expected)",
                self.target_spacing
            ));
        }
        if let Some(l) = &self.label_source {
            if l.iter().any(|v| *v as usize >= self.labels.num_classes()) {
                return Err(format!(
                    "\"label_source\" {l:?} names a class the plan lacks"
                ));
            }
        }
        if self.prior_channels.len() > 16 {
            return Err(format!(
                "\"prior_channels\" holds {} names; at most 16",
                self.prior_channels.len()
            ));
        }
        for name in &self.prior_channels {
            if self.labels.value(name).is_none_or(|v| v == 0) {
                return Err(format!(
                    "\"prior_channels\" names {name:?}, which is not one of the plan's glands"
                ));
            }
        }
        if let Some(c) = &self.cascade {
            c.fine
                .check()
                .map_err(|e| format!("\"cascade\".fine: {e}"))?;
            if c.fine_class_of.len() != self.labels.num_classes()
                || c.fine_class_of
                    .iter()
                    .any(|v| *v as usize >= c.fine.labels.num_classes())
            {
                return Err(format!(
                    "\"cascade\".fine_class_of {:?} does not map this plan's {} classes onto the fine plan's {}",
                    c.fine_class_of,
                    self.labels.num_classes(),
                    c.fine.labels.num_classes()
                ));
            }
            if !(c.margin_mm.is_finite() && (0.0..=200.0).contains(&c.margin_mm)) {
                return Err(format!("\"cascade\".margin_mm {}", c.margin_mm));
            }
            let f = std::path::Path::new(&c.folder);
            if c.folder.is_empty()
                || f.is_absolute()
                || f.components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(format!(
                    "\"cascade\".folder {:?} must be a folder name inside the model folder",
                    c.folder
                ));
            }
        }
        Ok(())
    }

    /// The network's input channels: the image channels, then the prior channels.
    pub fn input_channels(&self) -> usize {
        self.channels.len() + self.prior_channels.len()
    }

    /// The label value of every prior channel, in order.
    pub fn prior_values(&self) -> Vec<u8> {
        self.prior_channels
            .iter()
            .filter_map(|n| self.labels.value(n))
            .collect()
    }

    /// True when the first channel is CT: only then is the body found by its HU and the
    /// head-and-neck region localised (a PET-only model uses the whole grid).
    pub fn first_channel_is_ct(&self) -> bool {
        self.channels
            .first()
            .is_some_and(|c| crate::dataset::is_ct_channel(c))
    }

    /// The plan with `o` applied. A new spacing re-derives the stages (kernels and strides
    /// follow the spacing) for the new or current patch; the patch is then rounded up to
    /// the network's total stride, as training rounds it. The memory estimate stays the
    /// planner's (it documents the planned patch; a plan that is equal stays equal).
    pub fn with_overrides(&self, o: &PlanOverrides) -> Plan {
        let mut plan = self.clone();
        if let Some(p) = o.patch {
            plan.patch_size = p;
        }
        if let Some(s) = o.spacing {
            plan.target_spacing = s;
            plan.stages = topology(plan.patch_size, s, plan.options.preset);
        }
        let t = total_stride(&plan.stages);
        plan.patch_size = [0, 1, 2].map(|a| plan.patch_size[a].div_ceil(t[a]) * t[a]);
        if let Some(b) = o.batch {
            plan.batch_size = b;
        }
        if let Some(keep) = &o.channels {
            plan.withhold_channels(keep);
        }
        plan
    }

    /// Withholds every channel not named in `keep` (case-insensitive), here and in the
    /// cascade's fine stage.
    pub fn withhold_channels(&mut self, keep: &[String]) {
        for (c, name) in self.channels.iter().enumerate() {
            if !keep.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                if let Some(n) = self.normalization.get_mut(c) {
                    *n = Normalization::Off;
                }
            }
        }
        if let Some(cascade) = &mut self.cascade {
            cascade.fine.withhold_channels(keep);
        }
    }

    /// The channels the network sees (not withheld).
    pub fn used_channels(&self) -> Vec<String> {
        self.channels
            .iter()
            .zip(&self.normalization)
            .filter(|(_, n)| !matches!(n, Normalization::Off))
            .map(|(c, _)| c.clone())
            .collect()
    }
}

/// Total downsampling factor per axis.
pub fn total_stride(stages: &[Stage]) -> [usize; 3] {
    let mut t = [1; 3];
    for s in stages {
        for a in 0..3 {
            t[a] *= s.stride[a];
        }
    }
    t
}

/// Training memory (GB) of one step: activations kept for the backward pass of every
/// conv/norm/activation in encoder and decoder, plus the weights with optimiser state.
/// A conservative model (measured against burn's flex backend later), not a promise.
pub fn estimate_memory_gb(
    patch: [usize; 3],
    stages: &[Stage],
    batch: usize,
    channels: usize,
) -> f64 {
    let mut vox = (patch[0] * patch[1] * patch[2]) as f64;
    let mut act = vox * channels as f64;
    let mut params = 0.0;
    let mut prev = channels as f64;
    for s in stages {
        vox /= (s.stride[0] * s.stride[1] * s.stride[2]) as f64;
        let f = s.features as f64;
        // encoder: 2 x (conv, norm, act) = 6 tensors; decoder about the same plus the skip.
        act += vox * f * 13.0;
        let k = (s.kernel[0] * s.kernel[1] * s.kernel[2]) as f64;
        params += k * (prev * f + f * f) * 2.0;
        prev = f;
    }
    (act * batch as f64 * 4.0 + params * 4.0 * 4.0) / 1e9
}

/// The plan for a fingerprinted dataset, by nnU-Net's rules (see the module docs).
pub fn make_plan(
    fp: &Fingerprint,
    labels: &LabelMap,
    channels: &[String],
    opts: &PlanOptions,
) -> Plan {
    let spacing = target_spacing(&fp.spacings, &fp.shapes_after_crop);
    let mut med = [0usize; 3];
    for a in 0..3 {
        med[a] = median(
            fp.spacings
                .iter()
                .zip(&fp.shapes_after_crop)
                .map(|(s, n)| n[a] as f64 * s[a] / spacing[a])
                .collect(),
        )
        .round()
        .max(8.0) as usize;
    }
    // Patch: start at the median shape (capped at 256 per axis), shrink the axis largest
    // relative to the median until batch 2 fits the budget.
    let mut patch = med.map(|m| m.min(256));
    let fit = |patch: [usize; 3]| -> (Vec<Stage>, [usize; 3]) {
        let stages = topology(patch, spacing, opts.preset);
        let t = total_stride(&stages);
        let p = [0, 1, 2].map(|a| patch[a].div_ceil(t[a]) * t[a]);
        (stages, p)
    };
    let (mut stages, mut padded) = fit(patch);
    let mut guard = 0;
    while estimate_memory_gb(padded, &stages, 2, channels.len()) > opts.budget_gb && guard < 200 {
        let a = (0..3)
            .max_by(|&a, &b| {
                (patch[a] as f64 / med[a] as f64).total_cmp(&(patch[b] as f64 / med[b] as f64))
            })
            .unwrap_or(0);
        let t = total_stride(&stages);
        patch[a] = patch[a].saturating_sub(t[a].max(4)).max(8);
        (stages, padded) = fit(patch);
        guard += 1;
    }
    let per_sample = estimate_memory_gb(padded, &stages, 1, channels.len());
    let fit_batch = (opts.budget_gb / per_sample).floor().max(2.0) as usize;
    let dataset_vox: f64 = fp
        .spacings
        .iter()
        .zip(&fp.shapes_after_crop)
        .map(|(s, n)| {
            (0..3)
                .map(|a| n[a] as f64 * s[a] / spacing[a])
                .product::<f64>()
        })
        .sum();
    let cover = ((0.05 * dataset_vox) / (padded.iter().product::<usize>() as f64))
        .floor()
        .max(2.0) as usize;
    let batch_size = fit_batch.min(cover).max(2);
    let normalization = fp
        .channels
        .iter()
        .map(|c| {
            if c.name.eq_ignore_ascii_case("PET")
                || c.name.eq_ignore_ascii_case("PT")
                || c.name.to_ascii_lowercase().contains("suv")
            {
                Normalization::Log1pZscore {
                    hi: c.p99_5.max(0.0).ln_1p(),
                    mean: c.log1p_mean,
                    std: c.log1p_std.max(1e-6),
                }
            } else {
                Normalization::ClipZscore {
                    lo: c.p00_5,
                    hi: c.p99_5,
                    mean: c.mean,
                    std: c.std.max(1e-6),
                }
            }
        })
        .collect();
    Plan {
        glandseg_version: env!("CARGO_PKG_VERSION").into(),
        channels: channels.to_vec(),
        labels: labels.clone(),
        lateral_pairs: fp.lateral_pairs.clone(),
        target_spacing: spacing,
        median_shape_at_target: med,
        patch_size: padded,
        batch_size,
        estimated_memory_gb: estimate_memory_gb(padded, &stages, batch_size, channels.len()),
        stages,
        normalization,
        options: opts.clone(),
        cascade: None,
        label_source: None,
        crop_to_labels_mm: None,
        prior_channels: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_plan() -> Plan {
        let stages = topology([64, 64, 32], [1.0, 1.0, 2.0], Preset::Tiny);
        Plan {
            glandseg_version: "test".into(),
            channels: vec!["CT".into(), "PET".into()],
            labels: LabelMap::default(),
            lateral_pairs: vec![],
            target_spacing: [1.0, 1.0, 2.0],
            median_shape_at_target: [64, 64, 32],
            patch_size: [64, 64, 32],
            batch_size: 2,
            stages,
            normalization: vec![
                Normalization::ClipZscore {
                    lo: -150.0,
                    hi: 200.0,
                    mean: 40.0,
                    std: 60.0,
                },
                Normalization::Log1pZscore {
                    hi: 3.0,
                    mean: 1.0,
                    std: 0.5,
                },
            ],
            options: PlanOptions {
                budget_gb: 1.0,
                preset: Preset::Tiny,
            },
            estimated_memory_gb: 0.5,
            cascade: None,
            label_source: None,
            crop_to_labels_mm: None,
            prior_channels: Vec::new(),
        }
    }

    #[test]
    fn overrides_keep_patch_and_network_consistent() {
        let plan = small_plan();
        assert!(plan.first_channel_is_ct());
        assert_eq!(plan.with_overrides(&PlanOverrides::default()), plan);
        // A patch alone keeps the stages and is rounded up to their total stride.
        let p = plan.with_overrides(&PlanOverrides {
            patch: Some([30, 30, 30]),
            batch: Some(4),
            channels: None,
            ..Default::default()
        });
        let t = total_stride(&plan.stages);
        assert_eq!(p.stages, plan.stages);
        assert_eq!(p.batch_size, 4);
        for a in 0..3 {
            assert_eq!(p.patch_size[a] % t[a], 0);
            assert!(p.patch_size[a] >= 30 && p.patch_size[a] < 30 + t[a]);
        }
        // A new spacing re-derives the stages for it, as the demo's coarse grid needs.
        let s = plan.with_overrides(&PlanOverrides {
            spacing: Some([4.0; 3]),
            patch: Some([24; 3]),
            batch: None,
            channels: None,
        });
        assert_eq!(s.target_spacing, [4.0; 3]);
        assert_eq!(s.stages, topology([24; 3], [4.0; 3], Preset::Tiny));
        assert_eq!(s.patch_size, [24; 3]);
        // Withholding a channel (the CT-only / PET-only ablations) zeroes it, nothing else.
        let w = plan.with_overrides(&PlanOverrides {
            channels: Some(vec!["pet".into()]),
            ..Default::default()
        });
        assert_eq!(w.used_channels(), vec![plan.channels[1].clone()]);
        assert_eq!(w.normalization[0].apply(500.0), 0.0);
        assert_eq!(w.normalization[0].apply(-80.0), 0.0);
        assert_eq!(w.normalization[1], plan.normalization[1]);
        assert_eq!(w.stages, plan.stages);
    }

    #[test]
    fn an_unknown_preset_is_an_error_not_cpu() {
        let mut v = serde_json::to_value(small_plan()).unwrap();
        assert_eq!(v["options"]["preset"], "tiny");
        v["options"]["preset"] = "huge".into();
        assert!(serde_json::from_value::<Plan>(v).is_err());
    }

    #[test]
    fn median_spacing_for_isotropic_data() {
        let sp = vec![[1.0, 1.0, 2.0], [0.8, 0.8, 1.5], [1.2, 1.2, 3.0]];
        let sh = vec![[200, 200, 120]; 3];
        assert_eq!(target_spacing(&sp, &sh), [1.0, 1.0, 2.0]);
    }

    #[test]
    fn anisotropic_axis_takes_the_10th_percentile() {
        // 5 mm slices in most cases, one at 4 mm: thin in voxels too.
        let sp = vec![
            [0.7, 0.7, 5.0],
            [0.7, 0.7, 5.0],
            [0.7, 0.7, 4.0],
            [0.7, 0.7, 5.0],
            [0.7, 0.7, 5.0],
        ];
        let sh = vec![[512, 512, 40]; 5];
        let t = target_spacing(&sp, &sh);
        assert!((t[2] - 4.4).abs() < 1e-9, "{t:?}");
        // Not anisotropic in voxels (many slices): plain median.
        let sh = vec![[512, 512, 400]; 5];
        assert_eq!(target_spacing(&sp, &sh)[2], 5.0);
    }

    #[test]
    fn topology_stops_at_4_voxels_and_skips_coarse_axes() {
        let st = topology([128, 128, 32], [1.0, 1.0, 3.0], Preset::Cpu);
        // k is 3x coarser: kernel 1 and no downsampling there until i/j catch up.
        assert_eq!(st[0].kernel, [3, 3, 1]);
        assert_eq!(st[1].stride, [2, 2, 1]);
        assert_eq!(st[2].stride, [2, 2, 2]);
        let t = total_stride(&st);
        for a in 0..3 {
            assert!([128, 128, 32][a] / t[a] >= 4, "{t:?}");
        }
        assert_eq!(st.last().unwrap().features, 128);
        assert_eq!(topology([64; 3], [1.0; 3], Preset::Gpu)[1].features, 64);
    }

    #[test]
    fn patch_shrinks_to_fit_the_budget_and_stays_divisible() {
        let fp = crate::fingerprint::Fingerprint {
            case_ids: vec!["a".into(); 10],
            spacings: vec![[1.0, 1.0, 2.0]; 10],
            shapes_after_crop: vec![[200, 220, 150]; 10],
            channels: vec![
                crate::fingerprint::channel_stats("CT", vec![-50.0, 0.0, 40.0, 60.0]),
                crate::fingerprint::channel_stats("PET", vec![5.0, 10.0, 15.0]),
            ],
            label_volumes_ml: Default::default(),
            lateral_pairs: vec![],
        };
        let ch = vec!["CT".to_string(), "PET".to_string()];
        let small = make_plan(
            &fp,
            &LabelMap::default(),
            &ch,
            &PlanOptions {
                budget_gb: 0.5,
                preset: Preset::Cpu,
            },
        );
        let big = make_plan(
            &fp,
            &LabelMap::default(),
            &ch,
            &PlanOptions {
                budget_gb: 8.0,
                preset: Preset::Cpu,
            },
        );
        assert!(
            small.patch_size.iter().product::<usize>() < big.patch_size.iter().product::<usize>()
        );
        assert!(
            small.estimated_memory_gb <= 0.5 * 1.5,
            "{}",
            small.estimated_memory_gb
        );
        for p in [&small, &big] {
            let t = total_stride(&p.stages);
            for a in 0..3 {
                assert_eq!(p.patch_size[a] % t[a], 0);
            }
            assert!(p.batch_size >= 2);
        }
        assert!(matches!(
            small.normalization[0],
            Normalization::ClipZscore { .. }
        ));
        assert!(matches!(
            small.normalization[1],
            Normalization::Log1pZscore { .. }
        ));
        // CT outside the clip range saturates; PET log keeps order.
        let n = &small.normalization[0];
        assert_eq!(n.apply(5000.0), n.apply(60.0));
        let p = &small.normalization[1];
        assert!(p.apply(1.0) < p.apply(8.0));
    }
}
