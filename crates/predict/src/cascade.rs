//! The cascade's second stage at prediction: a box around every gland the coarse stage
//! found (or, for a gland it missed, where the gland atlas expects it from the glands it
//! did find), the fine network over each box at its own spacing, and its side-less class
//! written back as the box's gland. Why the stages split the work this way is in
//! [`glandseg_plan::cascade`].

use crate::localize::Region;
use crate::{PredictOptions, Predictor, Result};
use glandseg_core::{Geometry, LabelMap, Progress, Volume};
use glandseg_net::NetBackend;
use glandseg_ops::components::{label_components, Connectivity};
use glandseg_plan::cascade::gland_positions;
pub use glandseg_plan::cascade::voxel_boxes;
use glandseg_plan::{CascadePlan, GlandAtlas};
use serde::Serialize;
use std::path::Path;

/// The fine stage of a cascade, loaded.
pub struct FineStage<B: NetBackend> {
    /// The fine network (its own model folder, side-less labels).
    pub predictor: Predictor<B>,
    /// The cascade as planned (margin, class table).
    pub spec: CascadePlan,
    /// Where glands lie relative to each other in the training labels.
    pub atlas: GlandAtlas,
}

/// One gland's box in a prediction.
#[derive(Clone, Debug, Serialize)]
pub struct GlandBox {
    /// Coarse label value.
    pub label: u8,
    /// Its name.
    pub name: String,
    /// "stage1" (the coarse stage found it), "stage1-peak" (its argmax missed the gland,
    /// but its probability of the gland peaks inside the atlas's box: the box is centred
    /// there), "atlas" (placed from the other glands), or "none" (no box: nothing to place
    /// it from).
    pub source: String,
    /// Voxel box on the CT grid, `[lo, hi)`.
    pub lo: [usize; 3],
    /// Exclusive upper corner.
    pub hi: [usize; 3],
    /// The gland's voxels (CT grid) after stage 1 and after stage 2.
    pub voxels_stage1: usize,
    /// After the fine stage.
    pub voxels_stage2: usize,
    /// Where the gland is expected (LPS mm), for a box stage 1's argmax did not give: the
    /// atlas's expectation, or stage 1's probability peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_lps: Option<[f64; 3]>,
}

/// What the fine stage did.
#[derive(Clone, Debug, Serialize)]
pub struct CascadeReport {
    /// The fine network's spacing, mm.
    pub fine_spacing_mm: [f64; 3],
    /// One entry per gland.
    pub boxes: Vec<GlandBox>,
    /// Glands stage 1's argmax missed that still got a box (its probability peak or the
    /// atlas).
    pub placed_by_atlas: usize,
    /// Wall time of the fine stage, s.
    pub seconds: f64,
}

impl<B: NetBackend> FineStage<B> {
    /// Loads the fine stage from `dir`, or None when it holds no trained fold yet.
    pub fn load(
        dir: &Path,
        spec: &CascadePlan,
        folds: Vec<String>,
        device: B::Device,
    ) -> Result<Option<Self>> {
        if folds.is_empty() {
            return Ok(None);
        }
        let predictor = Predictor::<B>::load(dir, &folds, device)?;
        let atlas_path = dir.join(glandseg_model::ATLAS_FILE);
        let atlas: GlandAtlas = match std::fs::read(&atlas_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                crate::PredictError::Input(format!("{}: {e}", atlas_path.display()))
            })?,
            Err(_) => GlandAtlas::default(),
        };
        Ok(Some(FineStage {
            predictor,
            spec: spec.clone(),
            atlas,
        }))
    }

    /// Whether the fine network reads stage 1's probabilities as extra channels.
    pub fn reads_priors(&self) -> bool {
        !self.predictor.folder.plan.prior_channels.is_empty()
    }

    /// Refines `arg` (coarse labels on the CT grid's `region`) gland by gland. `stage1`
    /// holds stage 1's probabilities on its network grid, which a fine network with prior
    /// channels reads (without them its priors are zero, as for a gland stage 1 missed).
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &self,
        images: &[Volume<f32>],
        region: Region,
        arg: &mut Volume<u8>,
        stage1: Option<&(Geometry, Vec<f32>)>,
        labels: &LabelMap,
        opts: &PredictOptions,
        progress: &dyn Progress,
    ) -> Result<CascadeReport> {
        let started = std::time::Instant::now();
        let fine_plan = &self.predictor.folder.plan;
        let priors = match (self.reads_priors(), stage1) {
            (false, _) => Vec::new(),
            (true, Some((grid, probs))) => stage1_priors(
                grid,
                probs,
                &self.spec.fine_class_of,
                &fine_plan.prior_values(),
            )?,
            // One zero voxel reads as zero everywhere (0 is also the fill outside it).
            (true, None) => {
                let one = images[0].geometry().crop([0; 3], [1; 3])?;
                vec![Volume::filled(one, 0f32); fine_plan.prior_channels.len()]
            }
        };
        let tile_mm =
            [0, 1, 2].map(|a| fine_plan.patch_size[a] as f64 * fine_plan.target_spacing[a]);
        let planned = plan_boxes(arg, labels, &self.spec, &self.atlas, tile_mm, stage1);
        let mut report = Vec::new();
        let mut placed = 0;
        let fine_opts = PredictOptions {
            keep_probabilities: false,
            ..opts.clone()
        };
        for b in planned {
            let before = arg.as_slice().iter().filter(|&&x| x == b.label).count();
            if b.source == "none" {
                report.push(GlandBox {
                    lo: [0; 3],
                    hi: [0; 3],
                    voxels_stage1: before,
                    voxels_stage2: before,
                    ..b
                });
                continue;
            }
            if b.source != "stage1" {
                placed += 1;
            }
            let (lo, hi) = (b.lo, b.hi);
            let class = self.spec.fine_class_of[b.label as usize];
            let ct_box = (
                [0, 1, 2].map(|a| lo[a] + region.0[a]),
                [0, 1, 2].map(|a| hi[a] + region.0[a]),
            );
            let mut warnings = Vec::new();
            let fine = self
                .predictor
                .region_argmax(
                    images,
                    ct_box,
                    &priors,
                    &fine_opts,
                    false,
                    &mut warnings,
                    progress,
                )?
                .labels;
            // The gland is one component of its class in the box (a box can graze the
            // partner gland): the one that overlaps stage 1's gland most; in a box the atlas
            // placed (stage 1 saw nothing), the one nearest where the atlas expects it.
            let [bi, bj, _] = fine.shape();
            let stage1: Vec<bool> = (0..fine.as_slice().len())
                .map(|idx| {
                    let (i, j, k) = (idx % bi, (idx / bi) % bj, idx / (bi * bj));
                    *arg.get(lo[0] + i, lo[1] + j, lo[2] + k) == b.label
                })
                .collect();
            let mask = choose_component(&fine.map(|&c| c == class), &stage1, b.expected_lps);
            if mask.as_slice().iter().any(|&m| m) {
                for x in arg.as_slice_mut().iter_mut() {
                    if *x == b.label {
                        *x = 0;
                    }
                }
                for (idx, &m) in mask.as_slice().iter().enumerate() {
                    if m {
                        let (i, j, k) = (idx % bi, (idx / bi) % bj, idx / (bi * bj));
                        arg.set(lo[0] + i, lo[1] + j, lo[2] + k, b.label);
                    }
                }
            }
            let after = arg.as_slice().iter().filter(|&&x| x == b.label).count();
            report.push(GlandBox {
                lo: ct_box.0,
                hi: ct_box.1,
                voxels_stage1: before,
                voxels_stage2: after,
                ..b
            });
        }
        Ok(CascadeReport {
            fine_spacing_mm: fine_plan.target_spacing,
            boxes: report,
            placed_by_atlas: placed,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The fine stage's prior channels from stage 1's probabilities (`probs`,
/// `[classes, k, j, i]` on stage 1's network grid `grid`): for each fine class in
/// `prior_values`, the sum of the probabilities of the coarse classes `fine_class_of` maps
/// onto it (left and right together: the fine stage is side-less).
pub fn stage1_priors(
    grid: &Geometry,
    probs: &[f32],
    fine_class_of: &[u8],
    prior_values: &[u8],
) -> Result<Vec<Volume<f32>>> {
    let n = grid.num_voxels();
    let coarse_classes = probs.len() / n.max(1);
    prior_values
        .iter()
        .map(|&fv| {
            let mut sum = vec![0f32; n];
            for c in (0..coarse_classes).filter(|&c| fine_class_of.get(c) == Some(&fv)) {
                for (s, &p) in sum.iter_mut().zip(&probs[c * n..(c + 1) * n]) {
                    *s += p;
                }
            }
            Ok(Volume::from_vec(grid.clone(), sum)?)
        })
        .collect()
}

/// The box of every gland with a fine class, on the grid of `arg` (the coarse labels):
/// the gland's own box where stage 1 found it, else where the atlas expects it from the
/// glands that were found; grown by the cascade's margin and to at least one fine tile
/// (`tile_mm`), clipped to the grid. Boxes are `[lo, hi)` on `arg`'s grid; the voxel
/// counts are left at 0 for the caller.
///
/// A gland the argmax missed is first looked for in stage 1's probabilities (`stage1`:
/// `[classes, k, j, i]` on its network grid): where the gland's side-less probability
/// (left and right summed: the side comes from the atlas's box, which the found glands
/// place on the right side of the head) peaks inside the atlas's box at
/// [`PEAK_MIN_PROBABILITY`] or more, the box is centred on that peak and sized by the
/// atlas's largest extent of the gland. Why: a short-trained 3 mm network rarely lets a
/// 0.6 mL lacrimal gland win the argmax (24 voxels against the background), but its
/// probability of the gland still peaks on it: measured on the demo's held-out cases, a
/// peak of 0.07-0.17 within 1.5-7 voxels of the true centre in 5 of 6 lacrimal glands
/// whose argmax was empty (the sixth peaked on its partner: hence the side-less sum
/// inside the side's box). The peak is searched in the atlas's wide box (the offsets'
/// spread: [`glandseg_plan::cascade::Expected::search_half_mm`]); with no peak the
/// gland's box is the atlas's tight one (the fitted layout's residual in training), as
/// the wide box held other avid structures that stage 2 took for the gland.
pub fn plan_boxes(
    arg: &Volume<u8>,
    labels: &LabelMap,
    spec: &CascadePlan,
    atlas: &GlandAtlas,
    tile_mm: [f64; 3],
    stage1: Option<&(Geometry, Vec<f32>)>,
) -> Vec<GlandBox> {
    let g = arg.geometry();
    let n = g.shape;
    let min_extent: [usize; 3] = [0, 1, 2].map(|a| (tile_mm[a] / g.spacing[a]).ceil() as usize);
    let margin: [usize; 3] = [0, 1, 2].map(|a| (spec.margin_mm / g.spacing[a]).ceil() as usize);
    let mut boxes_found = voxel_boxes(arg);
    let mut found: Vec<(u8, [f64; 3])> = gland_positions(arg)
        .into_iter()
        .map(|(v, c, _)| (v, c))
        .collect();
    let midline = midline_x(labels, &found);
    // A sided gland whose stage-1 voxels lie on the other half of the head is stage 1
    // confusing the sides, not a find: measured in a default demo, stage 1 put both
    // lacrimal labels in the right orbit, both boxes went there and stage 2 outlined the
    // right gland twice (left lacrimal Dice 0). Such a gland is treated as missed, so its
    // box comes from its own side (the probability peak or the atlas), and the found
    // glands the atlas is fitted to exclude it.
    let wrong_side: Vec<u8> = found
        .iter()
        .filter(|(v, c)| {
            let name = labels.name(*v).unwrap_or_default();
            side_half(name, midline).is_some_and(|(m, left)| (c[0] > m) != left)
        })
        .map(|(v, _)| *v)
        .collect();
    found.retain(|(v, _)| !wrong_side.contains(v));
    boxes_found.retain(|v, _| !wrong_side.contains(v));
    let mut out = Vec::new();
    for (v, name) in labels.foreground() {
        let class = spec.fine_class_of.get(v as usize).copied().unwrap_or(0);
        if class == 0 {
            continue;
        }
        let mut expected = None;
        let (core, source) = match boxes_found.get(&v) {
            // A stage-1 gland larger than any seen in training (a weak or confused coarse
            // network) is cut to 1.5 times the atlas's largest extent around its centroid,
            // so one box cannot swallow the other side's gland.
            Some(b) => (
                Some(limit_to_atlas(
                    g,
                    grow_to_atlas(g, *b, v, &found, atlas),
                    v,
                    &found,
                    atlas,
                )),
                "stage1",
            ),
            None => match atlas.expected_box(v, &found) {
                Some(e) => match stage1.and_then(|s| {
                    probability_peak(
                        s,
                        &spec.fine_class_of,
                        class,
                        (e.centre, e.search_half_mm),
                        side_half(name, midline),
                        PEAK_MIN_PROBABILITY,
                    )
                }) {
                    Some((peak, grid_mm)) => {
                        expected = Some(peak);
                        let m = atlas.labels.iter().position(|&x| x == v);
                        let half = m
                            .map(|m| atlas.half_extent_mm[m])
                            .filter(|h| h.iter().all(|&x| x > 0.0))
                            .unwrap_or(e.half_mm)
                            .map(|x| x + grid_mm);
                        (world_box(g, peak, half), "stage1-peak")
                    }
                    None => {
                        expected = Some(e.centre);
                        (world_box(g, e.centre, e.half_mm), "atlas")
                    }
                },
                None => (None, "none"),
            },
        };
        let mut entry = GlandBox {
            label: v,
            name: name.to_string(),
            source: if core.is_some() { source } else { "none" }.into(),
            lo: [0; 3],
            hi: [0; 3],
            voxels_stage1: 0,
            voxels_stage2: 0,
            expected_lps: expected,
        };
        if let Some((lo0, hi0)) = core {
            for a in 0..3 {
                let mut l = lo0[a].saturating_sub(margin[a]);
                let mut h = (hi0[a] + margin[a]).min(n[a]);
                if h - l < min_extent[a] {
                    let grow = min_extent[a] - (h - l);
                    l = l.saturating_sub(grow / 2 + grow % 2);
                    h = (l + min_extent[a]).min(n[a]);
                    l = h.saturating_sub(min_extent[a]);
                }
                entry.lo[a] = l;
                entry.hi[a] = h.max(l + 1);
            }
        }
        out.push(entry);
    }
    out
}

/// The least stage-1 probability peak that places a missed gland's box (see
/// [`plan_boxes`]): below it the peak is noise and the atlas's box is used.
pub const PEAK_MIN_PROBABILITY: f32 = 0.02;

/// The head's mid-sagittal plane as an LPS x: the median over the lateral pairs stage 1
/// found both of, each on its own side, of their centroids' mean x; None when there is no
/// such pair. A pair counts only when its left gland lies at least
/// [`MIN_PAIR_SEPARATION_MM`](crate::postprocess::MIN_PAIR_SEPARATION_MM) to the patient's left of its right one: a confused stage 1
/// can put both labels of a pair in one orbit, and their mid-point is then not the head's.
fn midline_x(labels: &LabelMap, found: &[(u8, [f64; 3])]) -> Option<f64> {
    let at = |v: u8| found.iter().find(|(x, _)| *x == v).map(|(_, c)| c[0]);
    let mut mids: Vec<f64> = labels
        .lateral_pairs()
        .into_iter()
        .filter_map(|(l, r, _)| {
            let (xl, xr) = (at(l)?, at(r)?);
            (xl - xr >= crate::postprocess::MIN_PAIR_SEPARATION_MM).then_some(0.5 * (xl + xr))
        })
        .collect();
    mids.sort_by(f64::total_cmp);
    let n = mids.len();
    (n > 0).then(|| 0.5 * (mids[(n - 1) / 2] + mids[n / 2]))
}

/// The half of the head a sided gland lies in: LPS x above the midline for a `_left`
/// gland (+x is the patient's left), below for a `_right` one; None for a side-less
/// label or an unknown midline.
fn side_half(name: &str, midline: Option<f64>) -> Option<(f64, bool)> {
    let m = midline?;
    match LabelMap::side_of(name)?.1 {
        glandseg_core::labels::Side::Left => Some((m, true)),
        glandseg_core::labels::Side::Right => Some((m, false)),
    }
}

/// Where fine class `class`'s probability (the sum over the coarse classes
/// `fine_class_of` maps onto it) peaks on stage 1's grid inside the LPS box
/// `(centre, half)` and, when `side` is given as `(midline x, left)`, on that side of the
/// head's midline (a wide box can reach the partner gland, whose peak is in the side-less
/// sum too): the peak's LPS position and the grid's largest spacing (the peak's own
/// uncertainty), or None when the peak is under `min_p` or the box misses the grid.
pub fn probability_peak(
    stage1: &(Geometry, Vec<f32>),
    fine_class_of: &[u8],
    class: u8,
    (centre, half): ([f64; 3], [f64; 3]),
    side: Option<(f64, bool)>,
    min_p: f32,
) -> Option<([f64; 3], f64)> {
    let (grid, probs) = stage1;
    let n = grid.num_voxels();
    if n == 0 || probs.len() % n != 0 {
        return None;
    }
    let classes: Vec<usize> = (0..probs.len() / n)
        .filter(|&c| c > 0 && fine_class_of.get(c) == Some(&class))
        .collect();
    if classes.is_empty() {
        return None;
    }
    let (lo, hi) = world_box(grid, centre, half)?;
    let [ni, nj, _] = grid.shape;
    let mut best: Option<(f32, [usize; 3])> = None;
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            for i in lo[0]..hi[0] {
                if let Some((mid, left)) = side {
                    let x = grid.index_to_world([i as f64, j as f64, k as f64])[0];
                    if (x > mid) != left {
                        continue;
                    }
                }
                let idx = (k * nj + j) * ni + i;
                let p: f32 = classes.iter().map(|&c| probs[c * n + idx]).sum();
                if p.is_finite() && best.is_none_or(|(b, _)| p > b) {
                    best = Some((p, [i, j, k]));
                }
            }
        }
    }
    let (p, at) = best?;
    (p >= min_p).then(|| {
        (
            grid.index_to_world(at.map(|x| x as f64)),
            grid.spacing.iter().cloned().fold(0.0, f64::max),
        )
    })
}

/// The voxel box of `factor` times the atlas's largest half-extent of gland `v` around its
/// stage-1 centroid; None when the atlas does not know the gland or stage 1 did not find it.
fn atlas_extent_box(
    g: &glandseg_core::Geometry,
    v: u8,
    found: &[(u8, [f64; 3])],
    atlas: &GlandAtlas,
    factor: f64,
) -> Option<([usize; 3], [usize; 3])> {
    let m = atlas.labels.iter().position(|&x| x == v)?;
    let half = atlas.half_extent_mm[m];
    let &(_, centre) = found.iter().find(|(x, _)| *x == v)?;
    if half.iter().any(|&h| h <= 0.0) {
        return None;
    }
    world_box(g, centre, half.map(|h| factor * h))
}

/// `found_box` of gland `v` grown to hold the atlas's largest half-extent of that gland
/// around the stage-1 centroid. A coarse network that found only part of a gland (a
/// fatty, low-uptake parotid) would otherwise give a box that cuts the gland, and stage
/// 2 can only outline what its box holds.
fn grow_to_atlas(
    g: &glandseg_core::Geometry,
    found_box: ([usize; 3], [usize; 3]),
    v: u8,
    found: &[(u8, [f64; 3])],
    atlas: &GlandAtlas,
) -> ([usize; 3], [usize; 3]) {
    let Some((lo, hi)) = atlas_extent_box(g, v, found, atlas, 1.0) else {
        return found_box;
    };
    let mut out = found_box;
    for a in 0..3 {
        out.0[a] = out.0[a].min(lo[a]);
        out.1[a] = out.1[a].max(hi[a]);
    }
    out
}

/// `found_box` of gland `v` intersected with 1.5 times the atlas's largest half-extent of
/// that gland around its centroid (unchanged when the atlas does not know the gland).
fn limit_to_atlas(
    g: &glandseg_core::Geometry,
    found_box: ([usize; 3], [usize; 3]),
    v: u8,
    found: &[(u8, [f64; 3])],
    atlas: &GlandAtlas,
) -> ([usize; 3], [usize; 3]) {
    let Some((lo, hi)) = atlas_extent_box(g, v, found, atlas, 1.5) else {
        return found_box;
    };
    let mut out = found_box;
    for a in 0..3 {
        out.0[a] = out.0[a].max(lo[a]);
        out.1[a] = out.1[a].min(hi[a]);
        if out.1[a] <= out.0[a] {
            return (lo, hi);
        }
    }
    out
}

/// The components of `mask` (26-connected) that overlap `prior` (stage 1's gland): a
/// lobulated gland the fine network outlines in two or more pieces keeps all of them,
/// while a piece of the partner gland or another structure the box grazes, which stage 1
/// did not call this gland, is dropped. With no overlap at all, the one component whose
/// centroid lies nearest `near` (LPS mm) when given (among those of at least a tenth of
/// the largest's size), else the largest. An atlas box is large (the atlas's spread between patients) and can hold
/// another avid structure (a tubarial gland, the top of a parotid) that the fine network
/// takes for the missing gland; the atlas's expected centre is the better guide there
/// than size (measured: 3 of 6 atlas-placed lacrimal glands went to a structure 65-95 mm
/// away when the largest component won).
pub fn choose_component(
    mask: &Volume<bool>,
    prior: &[bool],
    near: Option<[f64; 3]>,
) -> Volume<bool> {
    let comps = label_components(mask, Connectivity::TwentySix);
    let n = comps.count();
    if n == 0 {
        return mask.clone();
    }
    let mut overlap = vec![0usize; n + 1];
    let mut size = vec![0usize; n + 1];
    for (idx, &c) in comps.labels.as_slice().iter().enumerate() {
        if c > 0 {
            size[c as usize] += 1;
            if prior[idx] {
                overlap[c as usize] += 1;
            }
        }
    }
    let any_overlap = overlap.iter().any(|&o| o > 0);
    let best = match near {
        Some(target) if !any_overlap => {
            let g = mask.geometry();
            let mut sum = vec![[0.0f64; 3]; n + 1];
            for ((k, j, i), &c) in comps.labels.data().indexed_iter() {
                if c > 0 {
                    let s = &mut sum[c as usize];
                    s[0] += i as f64;
                    s[1] += j as f64;
                    s[2] += k as f64;
                }
            }
            let dist = |c: usize| {
                let m = sum[c].map(|v| v / size[c].max(1) as f64);
                let w = g.index_to_world(m);
                (0..3).map(|a| (w[a] - target[a]).powi(2)).sum::<f64>()
            };
            // Specks (under a tenth of the largest component) are noise, not a gland.
            let largest = size.iter().copied().max().unwrap_or(0);
            (1..=n)
                .filter(|&c| size[c] > 0 && size[c] * 10 >= largest)
                .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                .unwrap_or(1)
        }
        _ if any_overlap => return comps.labels.map(|&c| c > 0 && overlap[c as usize] > 0),
        _ => (1..=n).max_by_key(|&c| size[c]).unwrap_or(1),
    } as u32;
    comps.labels.map(|&c| c == best)
}

/// The voxel box of `grid` holding the LPS box `centre +- half` (mm), or None when it lies
/// outside the grid.
fn world_box(
    grid: &glandseg_core::Geometry,
    centre: [f64; 3],
    half: [f64; 3],
) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let w = [0, 1, 2].map(|a| {
            if corner >> a & 1 == 1 {
                centre[a] + half[a]
            } else {
                centre[a] - half[a]
            }
        });
        let p = grid.world_to_index(w);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    let n = grid.shape;
    let mut l = [0usize; 3];
    let mut h = [0usize; 3];
    for a in 0..3 {
        let a_lo = lo[a].floor().max(0.0);
        let a_hi = (hi[a].ceil() + 1.0).min(n[a] as f64);
        if a_hi <= a_lo {
            return None;
        }
        l[a] = a_lo as usize;
        h[a] = a_hi as usize;
    }
    Some((l, h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn stage1_priors_sum_left_and_right_per_fine_class() {
        let g = Geometry::new([2, 1, 1], [3.0; 3], [0.0; 3]);
        // Coarse classes: background, parotid L, parotid R, lacrimal L (fine 0, 1, 1, 2).
        let probs = [
            0.1, 0.5, // background
            0.6, 0.0, // parotid_left
            0.2, 0.1, // parotid_right
            0.1, 0.4, // lacrimal_left
        ];
        let pr = stage1_priors(&g, &probs, &[0, 1, 1, 2], &[1, 2]).unwrap();
        assert_eq!(pr.len(), 2);
        assert!((pr[0].as_slice()[0] - 0.8).abs() < 1e-6);
        assert!((pr[0].as_slice()[1] - 0.1).abs() < 1e-6);
        assert_eq!(pr[1].as_slice(), &[0.1, 0.4]);
        assert_eq!(pr[1].geometry(), &g);
        // A fine class no coarse class maps onto reads zero.
        let none = stage1_priors(&g, &probs, &[0, 1, 1, 2], &[3]).unwrap();
        assert_eq!(none[0].as_slice(), &[0.0, 0.0]);
    }

    #[test]
    fn world_box_maps_mm_to_voxels_and_clips() {
        let g = Geometry::new([20, 20, 20], [2.0, 2.0, 2.0], [0.0; 3]);
        let (lo, hi) = world_box(&g, [10.0, 10.0, 10.0], [4.0, 4.0, 4.0]).unwrap();
        assert_eq!(lo, [3, 3, 3]);
        assert_eq!(hi, [8, 8, 8]);
        assert!(world_box(&g, [-100.0, 10.0, 10.0], [4.0; 3]).is_none());
        let (lo, hi) = world_box(&g, [0.0, 0.0, 0.0], [100.0; 3]).unwrap();
        assert_eq!((lo, hi), ([0; 3], [20; 3]));
    }

    #[test]
    fn boxes_of_each_label() {
        let g = Geometry::new([8, 8, 8], [1.0; 3], [0.0; 3]);
        let mut v = Volume::filled(g, 0u8);
        v.set(1, 2, 3, 5);
        v.set(4, 2, 6, 5);
        v.set(7, 7, 7, 1);
        let b = voxel_boxes(&v);
        assert_eq!(b[&5], ([1, 2, 3], [5, 3, 7]));
        assert_eq!(b[&1], ([7, 7, 7], [8, 8, 8]));
    }

    #[test]
    fn a_placed_box_keeps_the_component_nearest_the_atlas_centre() {
        // Two blobs of the class: a large one at the box's far end (another avid
        // structure) and a small one where the atlas expects the gland.
        let g = Geometry::new([30, 10, 10], [2.0; 3], [100.0, 0.0, 0.0]);
        let mut m = Volume::filled(g, false);
        for i in 0..6 {
            for j in 2..6 {
                for k in 2..6 {
                    m.set(22 + i, j, k, true);
                }
            }
        }
        for j in 3..5 {
            for k in 3..5 {
                m.set(4, j, k, true);
                m.set(5, j, k, true);
                m.set(6, j, k, true);
            }
        }
        // A speck nearer still is noise, not the gland.
        m.set(1, 8, 8, true);
        let none = vec![false; m.as_slice().len()];
        let near_small = [106.0, 12.0, 12.0];
        let picked = choose_component(&m, &none, Some(near_small));
        assert!(*picked.get(4, 3, 3) && !*picked.get(24, 3, 3));
        // Without an expected centre (or with stage-1 overlap), size / overlap decide.
        let picked = choose_component(&m, &none, None);
        assert!(!*picked.get(4, 3, 3) && *picked.get(24, 3, 3));
        let mut prior = none.clone();
        prior[24 + 30 * (3 + 10 * 3)] = true;
        let picked = choose_component(&m, &prior, Some(near_small));
        assert!(*picked.get(24, 3, 3) && !*picked.get(4, 3, 3) && !*picked.get(1, 8, 8));
        // A gland in two pieces, both where stage 1 saw it: both kept, the rest not.
        prior[5 + 30 * (3 + 10 * 3)] = true;
        let picked = choose_component(&m, &prior, None);
        assert!(*picked.get(24, 3, 3) && *picked.get(4, 3, 3) && !*picked.get(1, 8, 8));
    }
}
