//! What the dataset is, measured once: spacings and shapes (after cropping to the body),
//! intensity statistics of each channel inside the labelled glands (what normalisation must
//! preserve), label volumes, and the left/right label pairs.

use crate::dataset::{is_ct_channel, Dataset, DatasetError};
use glandseg_core::geometry::GRID_TOLERANCE;
use glandseg_core::Volume;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Foreground voxels sampled per case and channel (nnU-Net samples 10,000).
pub const SAMPLES_PER_CASE: usize = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
/// Intensity statistics of one channel over the foreground voxels.
pub struct ChannelStats {
    /// Channel name.
    pub name: String,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub std: f64,
    /// 0.5th percentile.
    pub p00_5: f64,
    /// Median.
    pub p50: f64,
    /// 99.5th percentile.
    pub p99_5: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// The same statistics of ln(1 + max(x, 0)): used for PET (SUV), see the plan.
    pub log1p_mean: f64,
    /// Standard deviation of ln(1 + max(x, 0)).
    pub log1p_std: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
/// What the dataset is: the facts the plan is derived from (fingerprint.json).
pub struct Fingerprint {
    /// Case ids, in dataset order.
    pub case_ids: Vec<String>,
    /// Voxel spacing of each case, mm.
    pub spacings: Vec<[f64; 3]>,
    /// Shapes after cropping to the body (voxels above the channel-0 background).
    pub shapes_after_crop: Vec<[usize; 3]>,
    /// Intensity statistics per channel.
    pub channels: Vec<ChannelStats>,
    /// Label name -> volume in mL per case.
    pub label_volumes_ml: BTreeMap<String, Vec<f64>>,
    /// (left name, right name) pairs read from the label names.
    pub lateral_pairs: Vec<(String, String)>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub(crate) fn channel_stats(name: &str, mut v: Vec<f64>) -> ChannelStats {
    v.retain(|x| x.is_finite());
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let logs: Vec<f64> = v.iter().map(|x| x.max(0.0).ln_1p()).collect();
    let lm = logs.iter().sum::<f64>() / n;
    let ls = (logs.iter().map(|x| (x - lm).powi(2)).sum::<f64>() / n).sqrt();
    ChannelStats {
        name: name.to_string(),
        mean,
        std,
        p00_5: percentile(&v, 0.5),
        p50: percentile(&v, 50.0),
        p99_5: percentile(&v, 99.5),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
        log1p_mean: lm,
        log1p_std: ls,
    }
}

/// The body box: voxels of the first channel above `threshold` (CT: -500 HU keeps the
/// body and drops air; any other first channel: above its minimum).
pub fn body_bbox(first_channel: &Volume<f32>, is_ct: bool) -> Option<([usize; 3], [usize; 3])> {
    let thr = if is_ct {
        -500.0
    } else {
        first_channel.min_max().map(|m| m.0 as f32).unwrap_or(0.0)
    };
    first_channel.bbox_where(|v| *v > thr)
}

struct CaseFacts {
    spacing: [f64; 3],
    shape: [usize; 3],
    samples: Vec<Vec<f64>>,
    volumes: Vec<(String, f64)>,
}

/// Fingerprints the dataset: spacings, body-cropped shapes, foreground intensities (sampled with `seed`), label volumes and left/right pairs.
pub fn fingerprint(ds: &Dataset, seed: u64) -> Result<Fingerprint, DatasetError> {
    let is_ct = ds.channels.first().is_some_and(|c| is_ct_channel(c));
    let facts: Vec<CaseFacts> = ds
        .cases
        .par_iter()
        .enumerate()
        .map(|(n, case)| -> Result<CaseFacts, DatasetError> {
            let err = |p: &std::path::Path, e: String| DatasetError::Invalid {
                path: p.to_path_buf(),
                msg: e,
            };
            let label = glandseg_nifti::read_labels(&case.label)
                .map_err(|e| err(&case.label, e.to_string()))?;
            let g = label.geometry().clone();
            let mut images = Vec::new();
            for p in &case.images {
                let img = glandseg_nifti::read_volume(p).map_err(|e| err(p, e.to_string()))?;
                if !img.geometry().same_grid(&g, GRID_TOLERANCE) {
                    return Err(err(
                        p,
                        format!(
                            "is not on the label map's grid ({:?} vs {:?})",
                            img.geometry().shape,
                            g.shape
                        ),
                    ));
                }
                images.push(img);
            }
            let shape = match body_bbox(&images[0], is_ct) {
                Some((lo, hi)) => [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]],
                None => g.shape,
            };
            let fg: Vec<usize> = label
                .as_slice()
                .iter()
                .enumerate()
                .filter(|(_, l)| **l > 0)
                .map(|(i, _)| i)
                .collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let picks: Vec<usize> = if fg.len() <= SAMPLES_PER_CASE {
                fg.clone()
            } else {
                (0..SAMPLES_PER_CASE)
                    .map(|_| fg[rng.random_range(0..fg.len())])
                    .collect()
            };
            let samples = images
                .iter()
                .map(|img| picks.iter().map(|&i| img.as_slice()[i] as f64).collect())
                .collect();
            let vox = g.voxel_volume_ml();
            let volumes = ds
                .labels
                .foreground()
                .map(|(v, name)| {
                    (
                        name.to_string(),
                        label.as_slice().iter().filter(|&&l| l == v).count() as f64 * vox,
                    )
                })
                .collect();
            Ok(CaseFacts {
                spacing: g.spacing,
                shape,
                samples,
                volumes,
            })
        })
        .collect::<Result<_, _>>()?;
    let mut label_volumes_ml: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for f in &facts {
        for (name, v) in &f.volumes {
            label_volumes_ml.entry(name.clone()).or_default().push(*v);
        }
    }
    let channels = ds
        .channels
        .iter()
        .enumerate()
        .map(|(c, name)| {
            channel_stats(
                name,
                facts
                    .iter()
                    .flat_map(|f| f.samples[c].iter().copied())
                    .collect(),
            )
        })
        .collect();
    Ok(Fingerprint {
        case_ids: ds.cases.iter().map(|c| c.id.clone()).collect(),
        spacings: facts.iter().map(|f| f.spacing).collect(),
        shapes_after_crop: facts.iter().map(|f| f.shape).collect(),
        channels,
        label_volumes_ml,
        lateral_pairs: ds
            .labels
            .lateral_pairs()
            .into_iter()
            .map(|(l, r, _)| {
                (
                    ds.labels.name(l).unwrap_or_default().to_string(),
                    ds.labels.name(r).unwrap_or_default().to_string(),
                )
            })
            .collect(),
    })
}
