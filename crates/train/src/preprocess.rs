//! Preprocessing, nnU-Net's stage between plan and train: every case is brought to the
//! plan's target spacing, cropped to the body and normalised once, and stored as raw
//! little-endian arrays that training memory-maps. The same image steps run again at
//! prediction time ([`preprocess_images`]), so a model always sees what it was trained on.

use crate::error::{Result, TrainError};
use glandseg_core::geometry::GRID_TOLERANCE;
use glandseg_core::Progress;
use glandseg_core::{atomic, Geometry, Volume};
use glandseg_ops::resample::{resample_labels, LabelInterpolation};
pub use glandseg_plan::preprocess::{body_box, onto_first_grid, outside_values, preprocess_images};
use glandseg_plan::{Dataset, Plan};
use memmap2::Mmap;
use rand::seq::IndexedRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// At most this many voxel positions are kept per class for foreground sampling
/// (nnU-Net keeps 10 000; small glands have fewer voxels than that anyway).
pub const MAX_CLASS_LOCATIONS: usize = 10_000;

/// What the cache knows about one case besides its arrays.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseInfo {
    /// Case id.
    pub id: String,
    /// The grid of the cached arrays (target spacing, cropped to the body).
    pub geometry: Geometry,
    /// The grid of the raw case (CT), to map predictions back.
    pub source_geometry: Geometry,
    /// Channels in the cached image array.
    pub channels: usize,
    /// Voxel positions `[i, j, k]` per label value present in the case.
    pub class_locations: BTreeMap<u8, Vec<[usize; 3]>>,
}

/// Fingerprint of the preprocessing settings: a cache made with other settings is redone.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct CacheManifest {
    target_spacing: [f64; 3],
    normalization: Vec<glandseg_plan::Normalization>,
    channels: Vec<String>,
    cases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label_source: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crop_to_labels_mm: Option<f64>,
}

/// Label map onto the preprocessed grid (one-hot linear, then argmax: smoother than
/// nearest when the spacing changes, and no class vanishes at a boundary).
pub fn preprocess_labels(labels: &Volume<u8>, target: &Geometry) -> Volume<u8> {
    resample_labels(labels, target, LabelInterpolation::LinearOneHot)
}

/// The box of every labelled voxel grown by `margin_mm` (clipped to the grid), or None for
/// an empty label map: a fine cascade stage trains on the neighbourhood of the glands only.
pub fn labels_box(labels: &Volume<u8>, margin_mm: f64) -> Option<([usize; 3], [usize; 3])> {
    let g = labels.geometry();
    let n = g.shape;
    let boxes = glandseg_plan::cascade::voxel_boxes(labels);
    let (mut lo, mut hi) = *boxes.values().next()?;
    for (l, h) in boxes.values() {
        for a in 0..3 {
            lo[a] = lo[a].min(l[a]);
            hi[a] = hi[a].max(h[a]);
        }
    }
    for a in 0..3 {
        let m = (margin_mm / g.spacing[a]).ceil() as usize;
        lo[a] = lo[a].saturating_sub(m);
        hi[a] = (hi[a] + m).min(n[a]);
    }
    Some((lo, hi))
}

fn class_locations(labels: &Volume<u8>, seed: u64) -> BTreeMap<u8, Vec<[usize; 3]>> {
    let [ni, nj, _] = labels.shape();
    let mut all: BTreeMap<u8, Vec<[usize; 3]>> = BTreeMap::new();
    for (n, &v) in labels.as_slice().iter().enumerate() {
        if v != 0 {
            all.entry(v)
                .or_default()
                .push([n % ni, (n / ni) % nj, n / (ni * nj)]);
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for locs in all.values_mut() {
        if locs.len() > MAX_CLASS_LOCATIONS {
            *locs = locs
                .choose_multiple(&mut rng, MAX_CLASS_LOCATIONS)
                .cloned()
                .collect();
        }
    }
    all
}

/// Preprocessed cases on disk: `CASE.json`, `CASE.f32` (channels), `CASE.u8` (labels).
pub struct Cache {
    /// The cache folder.
    pub dir: PathBuf,
    /// The cached cases.
    pub cases: Vec<CaseInfo>,
}

/// One memory-mapped case: the arrays are paged in as patches touch them, so a cohort of
/// whole-body cases never has to fit in RAM.
pub struct CachedCase {
    /// What the cache knows about the case.
    pub info: CaseInfo,
    images: Mmap,
    labels: Mmap,
}

impl CachedCase {
    /// All channels, channel-major.
    pub fn images(&self) -> &[f32] {
        bytemuck::cast_slice(&self.images[..])
    }
    /// Channel `c`.
    pub fn channel(&self, c: usize) -> &[f32] {
        let n = self.info.geometry.num_voxels();
        &self.images()[c * n..(c + 1) * n]
    }
    /// The labels.
    pub fn labels(&self) -> &[u8] {
        &self.labels[..]
    }
}

fn map_file(path: &Path, expect_bytes: usize) -> Result<Mmap> {
    let f = File::open(path).map_err(|e| TrainError::io(path, e))?;
    // SAFETY: the cache files are written once (atomically) and never modified in place;
    // a file replaced while mapped keeps the old inode alive.
    let m = unsafe { Mmap::map(&f) }.map_err(|e| TrainError::io(path, e))?;
    if m.len() != expect_bytes {
        return Err(TrainError::Input(format!(
            "{}: {} bytes, expected {expect_bytes} (stale or truncated cache; delete it to redo preprocessing)",
            path.display(),
            m.len()
        )));
    }
    Ok(m)
}

impl Cache {
    /// Memory-maps case number `idx`.
    pub fn open_case(&self, idx: usize) -> Result<CachedCase> {
        let info = self.cases[idx].clone();
        let n = info.geometry.num_voxels();
        let images = map_file(
            &self.dir.join(format!("{}.f32", info.id)),
            n * info.channels * 4,
        )?;
        let labels = map_file(&self.dir.join(format!("{}.u8", info.id)), n)?;
        Ok(CachedCase {
            info,
            images,
            labels,
        })
    }

    /// Index of case `id` in the cache.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.cases.iter().position(|c| c.id == id)
    }

    /// Preprocesses `ds` into `dir` (reusing an up-to-date cache), in parallel across
    /// cases; one case is in memory per worker thread, whatever the cohort size.
    pub fn build(ds: &Dataset, plan: &Plan, dir: &Path, progress: &dyn Progress) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let manifest = CacheManifest {
            target_spacing: plan.target_spacing,
            normalization: plan.normalization.clone(),
            channels: plan.channels.clone(),
            cases: ds.cases.iter().map(|c| c.id.clone()).collect(),
            label_source: plan.label_source.clone(),
            crop_to_labels_mm: plan.crop_to_labels_mm,
        };
        let manifest_path = dir.join("cache.json");
        if let Ok(bytes) = std::fs::read(&manifest_path) {
            if serde_json::from_slice::<CacheManifest>(&bytes)
                .ok()
                .as_ref()
                == Some(&manifest)
            {
                if let Ok(cache) = Cache::open(dir) {
                    return Ok(cache);
                }
            }
        }
        let is_ct = plan.first_channel_is_ct();
        progress.start("preprocess", ds.cases.len() as u64);
        let infos: Vec<CaseInfo> = ds
            .cases
            .par_iter()
            .enumerate()
            .map(|(n, case)| {
                let images: Vec<Volume<f32>> = case
                    .images
                    .iter()
                    .map(|p| glandseg_nifti::read_volume(p).map_err(TrainError::from))
                    .collect::<Result<_>>()?;
                let labels = glandseg_nifti::read_labels(&case.label)?;
                let source = images[0].geometry().clone();
                if !labels.geometry().same_grid(&source, GRID_TOLERANCE) {
                    return Err(TrainError::Input(format!(
                        "{}: label map is not on the grid of {}",
                        case.label.display(),
                        case.images[0].display()
                    )));
                }
                let images = onto_first_grid(images);
                let labels = match &plan.label_source {
                    Some(table) => labels.map(|&v| table.get(v as usize).copied().unwrap_or(0)),
                    None => labels,
                };
                let body = body_box(&images[0], is_ct);
                let crop = match plan.crop_to_labels_mm {
                    Some(mm) => labels_box(&labels, mm).unwrap_or(body),
                    None => body,
                };
                let (target, data) = preprocess_images(&images, plan, crop)?;
                let labels = preprocess_labels(&labels.crop(crop.0, crop.1)?, &target);
                let info = CaseInfo {
                    id: case.id.clone(),
                    geometry: target,
                    source_geometry: source,
                    channels: images.len(),
                    class_locations: class_locations(&labels, n as u64),
                };
                let p = dir.join(format!("{}.f32", case.id));
                atomic::write_bytes(&p, bytemuck::cast_slice(&data))?;
                atomic::write_bytes(&dir.join(format!("{}.u8", case.id)), labels.as_slice())?;
                atomic::write_json(&dir.join(format!("{}.json", case.id)), &info)?;
                progress.inc(1);
                progress.message(&case.id);
                Ok(info)
            })
            .collect::<Result<_>>()?;
        progress.finish();
        atomic::write_json(&manifest_path, &manifest)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            cases: infos,
        })
    }

    /// Opens an existing cache (its manifest lists the cases).
    pub fn open(dir: &Path) -> Result<Cache> {
        let mp = dir.join("cache.json");
        let bytes = std::fs::read(&mp).map_err(|e| TrainError::io(&mp, e))?;
        let m: CacheManifest = serde_json::from_slice(&bytes)
            .map_err(|e| TrainError::Input(format!("{}: {e}", mp.display())))?;
        let mut cases = Vec::new();
        for id in &m.cases {
            let p = dir.join(format!("{id}.json"));
            let b = std::fs::read(&p).map_err(|e| TrainError::io(&p, e))?;
            cases.push(
                serde_json::from_slice(&b)
                    .map_err(|e| TrainError::Input(format!("{}: {e}", p.display())))?,
            );
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            cases,
        })
    }
}
