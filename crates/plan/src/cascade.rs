//! The coarse-to-fine cascade's plan: a second network that runs at the CT's own
//! resolution, but only in a box around each gland the first (coarse) stage found.
//!
//! Why two stages: a 0.5-1.2 mL lacrimal gland is 20-40 voxels at the 3 mm a network can
//! afford over the whole head on a CPU, and the coarse network resolves the big parotids
//! long before it separates such a small class from its neighbours. Inside a box around
//! one gland at about 1 mm the same gland is hundreds of voxels and a large share of every
//! patch. nnU-Net's cascade feeds the whole full-resolution image to stage 2; here stage 2
//! is cropped per gland, which is what makes 1 mm affordable on two cores.
//!
//! Laterality: the fine stage predicts side-less classes (parotid, submandibular,
//! lacrimal). Which side a box is on is decided by the coarse stage, which sees the whole
//! head (a 50 mm box around one lacrimal gland does not show the midline). So the fine
//! network may mirror freely, and left and right glands train one class together.
//!
//! A gland the coarse stage misses still gets a box, from a [`GlandAtlas`]: the mean
//! offsets between gland centroids in the training labels (in patient coordinates), so
//! the box comes from the glands that were found and the clinic's own anatomy.

use crate::plan::{topology, total_stride, Plan, Preset};
use crate::Fingerprint;
use glandseg_core::{LabelMap, Volume};
use serde::{Deserialize, Serialize};

/// Stage 2 of a cascade, stored in the coarse plan (`plans.json` describes both stages).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CascadePlan {
    /// The fine network's plan: side-less labels, fine spacing, its own patch and stages.
    pub fine: Box<Plan>,
    /// For each coarse label value, the fine class it belongs to (0 = none).
    pub fine_class_of: Vec<u8>,
    /// Margin around each gland's box, mm (covers stage 1's boundary error).
    pub margin_mm: f64,
    /// Folder of the fine stage's model inside the model folder.
    pub folder: String,
    /// Why the planner chose the cascade (or why it was forced).
    pub reason: String,
}

/// The stem of a label name without its side (`parotid_left` -> `parotid`).
pub fn stem(name: &str) -> &str {
    LabelMap::side_of(name).map(|(s, _)| s).unwrap_or(name)
}

/// The side-less label map of `labels` and the table from each coarse value to its fine
/// class, in order of first appearance.
pub fn sideless(labels: &LabelMap) -> (LabelMap, Vec<u8>) {
    let mut names: Vec<String> = Vec::new();
    let mut table = vec![0u8; labels.num_classes()];
    for (v, name) in labels.foreground() {
        let s = stem(name).to_string();
        let idx = match names.iter().position(|n| *n == s) {
            Some(i) => i,
            None => {
                names.push(s);
                names.len() - 1
            }
        };
        table[v as usize] = (idx + 1) as u8;
    }
    let mut entries = vec![(0u8, "background".to_string())];
    entries.extend(
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| ((i + 1) as u8, n)),
    );
    (
        LabelMap::new(entries).expect("distinct stems with values 1.."),
        table,
    )
}

/// Fine-stage spacing: nnU-Net's full-resolution rule on the fingerprint (median spacing,
/// the 10th percentile on a much coarser axis), never finer than `min_mm` in-plane (0.8 mm
/// is below any gland's boundary uncertainty and keeps boxes affordable).
pub fn fine_spacing(fp: &Fingerprint, min_mm: f64) -> [f64; 3] {
    let t = crate::plan::target_spacing(&fp.spacings, &fp.shapes_after_crop);
    t.map(|s| s.max(min_mm))
}

/// Patch edge in voxels along the finest axis for a preset (the others scaled to about the
/// same extent in mm): 48 for tiny, 64 for cpu, 96 for gpu.
fn patch_edge(preset: Preset) -> usize {
    match preset {
        Preset::Tiny => 48,
        Preset::Cpu => 64,
        Preset::Gpu => 96,
    }
}

/// The fine stage for `coarse`, at `spacing` (mm; from [`fine_spacing`] unless the user
/// chose one) with `patch` (voxels; from the preset unless given).
pub fn plan_cascade(
    coarse: &Plan,
    spacing: [f64; 3],
    patch: Option<[usize; 3]>,
    preset: Preset,
    stage1_channels: bool,
    reason: String,
) -> CascadePlan {
    let (labels, fine_class_of) = sideless(&coarse.labels);
    let prior_channels: Vec<String> = if stage1_channels {
        labels.foreground().map(|(_, n)| n.to_string()).collect()
    } else {
        Vec::new()
    };
    let min_sp = spacing.iter().cloned().fold(f64::INFINITY, f64::min);
    let edge = patch_edge(preset);
    let patch = patch.unwrap_or_else(|| {
        spacing.map(|s| ((edge as f64 * min_sp / s).round() as usize).clamp(16, edge))
    });
    let stages = topology(patch, spacing, preset);
    let t = total_stride(&stages);
    let patch = [0, 1, 2].map(|a| patch[a].div_ceil(t[a]) * t[a]);
    let mut options = coarse.options.clone();
    options.preset = preset;
    let fine = Plan {
        glandseg_version: coarse.glandseg_version.clone(),
        channels: coarse.channels.clone(),
        labels,
        lateral_pairs: Vec::new(),
        target_spacing: spacing,
        median_shape_at_target: patch,
        patch_size: patch,
        batch_size: 2,
        estimated_memory_gb: crate::plan::estimate_memory_gb(
            patch,
            &stages,
            2,
            coarse.channels.len() + prior_channels.len(),
        ),
        stages,
        normalization: coarse.normalization.clone(),
        options,
        cascade: None,
        label_source: Some(fine_class_of.clone()),
        crop_to_labels_mm: Some(30.0),
        prior_channels,
    };
    CascadePlan {
        fine: Box::new(fine),
        fine_class_of,
        margin_mm: 8.0,
        folder: "stage2".into(),
        reason,
    }
}

/// `plan` as the coarse stage of a cascade: at `coarse` spacing (stages re-derived, the
/// patch shrunk to the head at that spacing), with the fine stage at `fine`.
pub fn with_cascade(
    plan: &Plan,
    coarse: [f64; 3],
    fine: [f64; 3],
    preset: Preset,
    stage1_channels: bool,
    reason: String,
) -> Plan {
    let patch = [0, 1, 2].map(|a| {
        let at_coarse = (plan.median_shape_at_target[a] as f64 * plan.target_spacing[a] / coarse[a])
            .round() as usize;
        at_coarse.clamp(16, plan.patch_size[a].max(16))
    });
    let mut c = plan.with_overrides(&crate::PlanOverrides {
        spacing: Some(coarse),
        patch: Some(patch),
        batch: None,
        channels: None,
    });
    c.median_shape_at_target = [0, 1, 2].map(|a| {
        (plan.median_shape_at_target[a] as f64 * plan.target_spacing[a] / coarse[a]).round()
            as usize
    });
    c.cascade = Some(plan_cascade(
        &c,
        fine,
        None,
        preset,
        stage1_channels,
        reason,
    ));
    c
}

/// Whether a dataset needs the cascade: when the coarse spacing is at least 1.5 times the
/// fine one on some axis and the smallest gland is under 100 voxels at the coarse spacing
/// (too few for a network to outline; nnU-Net adds its cascade on size alone). Returns the
/// reason either way.
pub fn needs_cascade(fp: &Fingerprint, coarse_spacing: [f64; 3], fine: [f64; 3]) -> (bool, String) {
    let ratio = (0..3)
        .map(|a| coarse_spacing[a] / fine[a])
        .fold(0.0, f64::max);
    let voxel_ml = coarse_spacing.iter().product::<f64>() / 1000.0;
    let smallest = fp
        .label_volumes_ml
        .iter()
        .filter_map(|(name, v)| {
            let mut v: Vec<f64> = v.iter().cloned().filter(|x| *x > 0.0).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).map(|m| (name.clone(), *m))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match smallest {
        Some((name, ml)) => {
            let vox = ml / voxel_ml;
            let yes = ratio >= 1.5 && vox < 100.0;
            (
                yes,
                format!(
                    "smallest gland {name}: median {ml:.2} mL = {vox:.0} voxels at the coarse \
                     {:.1} mm; coarse/fine spacing ratio {ratio:.1}: {}",
                    coarse_spacing[0],
                    if yes {
                        "cascade (fine stage in boxes around each gland)"
                    } else {
                        "single stage"
                    }
                ),
            )
        }
        None => (false, "no labelled glands: single stage".into()),
    }
}

/// Where glands lie relative to each other in the training labels: the fallback box of a
/// gland the coarse stage missed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct GlandAtlas {
    /// Label values (coarse map), in the order of the tables below.
    pub labels: Vec<u8>,
    /// `offset_mm[a][b]`: mean LPS vector from gland a's centroid to gland b's, mm
    /// (None when never seen together).
    pub offset_mm: Vec<Vec<Option<[f64; 3]>>>,
    /// Standard deviation of each offset's length, mm.
    pub offset_sd_mm: Vec<Vec<Option<f64>>>,
    /// Largest half-extent of each gland along the LPS axes, mm.
    pub half_extent_mm: Vec<[f64; 3]>,
    /// Cases the atlas was built from.
    pub cases: usize,
    /// Per gland, per LPS axis: how far the mean layout fitted to a training case's other
    /// glands put the gland from where it was (mm; the larger of twice the RMS and the
    /// maximum over the cases, at least [`MIN_FIT_RESIDUAL_MM`]); None for a gland never
    /// fitted. It sizes the box of a gland placed by the fit: on the built-in phantom 2-5 mm,
    /// where the offsets' spread (which holds head pose too) was 10-25 mm. Empty in an
    /// atlas written before it existed (then the spread sizes the box).
    #[serde(default)]
    pub fit_residual_mm: Vec<Option<[f64; 3]>>,
}

/// The least per-axis fit residual a fitted box allows for (mm): a handful of training
/// cases can agree more closely than new anatomy will.
pub const MIN_FIT_RESIDUAL_MM: f64 = 3.0;

/// Where the atlas expects a gland stage 1 missed (LPS mm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expected {
    /// Expected centroid.
    pub centre: [f64; 3],
    /// Half-extent of the box the gland should lie in: its largest training half-extent
    /// grown by the fit's residual (three or more found glands) or by the offsets' spread.
    pub half_mm: [f64; 3],
    /// Half-extent of the wider box to search stage 1's probability in: the training
    /// half-extent grown by twice the offsets' spread, which allows for anatomy farther
    /// from the training layout than the fit's residual does.
    pub search_half_mm: [f64; 3],
}

/// Voxel box `[lo, hi)` of every label value present.
pub fn voxel_boxes(
    labels: &Volume<u8>,
) -> std::collections::BTreeMap<u8, ([usize; 3], [usize; 3])> {
    let n = labels.shape();
    let mut out: std::collections::BTreeMap<u8, ([usize; 3], [usize; 3])> = Default::default();
    for (idx, &v) in labels.as_slice().iter().enumerate() {
        if v == 0 {
            continue;
        }
        let p = [idx % n[0], (idx / n[0]) % n[1], idx / (n[0] * n[1])];
        let e = out.entry(v).or_insert((p, [p[0] + 1, p[1] + 1, p[2] + 1]));
        for a in 0..3 {
            e.0[a] = e.0[a].min(p[a]);
            e.1[a] = e.1[a].max(p[a] + 1);
        }
    }
    out
}

/// One gland in one label map: label value, centroid (LPS mm), LPS-axis half-extent (mm).
pub type GlandPosition = (u8, [f64; 3], [f64; 3]);

/// Running sums of one gland: coordinate sums, voxel count, LPS minimum and maximum.
type Extent = ([f64; 3], usize, [f64; 3], [f64; 3]);

/// One label map's glands: centroid (LPS mm) and LPS-axis half-extent (mm) per label value.
pub fn gland_positions(labels: &Volume<u8>) -> Vec<GlandPosition> {
    let g = labels.geometry();
    let [ni, nj, nk] = g.shape;
    let mut acc: std::collections::BTreeMap<u8, Extent> = Default::default();
    let data = labels.as_slice();
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let v = data[(k * nj + j) * ni + i];
                if v == 0 {
                    continue;
                }
                let w = g.index_to_world([i as f64, j as f64, k as f64]);
                let e = acc
                    .entry(v)
                    .or_insert(([0.0; 3], 0, [f64::MAX; 3], [f64::MIN; 3]));
                for a in 0..3 {
                    e.0[a] += w[a];
                    e.2[a] = e.2[a].min(w[a]);
                    e.3[a] = e.3[a].max(w[a]);
                }
                e.1 += 1;
            }
        }
    }
    acc.into_iter()
        .map(|(v, (s, n, lo, hi))| {
            let c = s.map(|x| x / n as f64);
            let half = [0, 1, 2].map(|a| {
                (hi[a] - lo[a]) / 2.0 + g.spacing.iter().cloned().fold(0.0, f64::max) / 2.0
            });
            (v, c, half)
        })
        .collect()
}

impl GlandAtlas {
    /// The atlas of a set of cases, each given as [`gland_positions`].
    pub fn build(label_values: &[u8], cases: &[Vec<GlandPosition>]) -> GlandAtlas {
        let n = label_values.len();
        let idx = |v: u8| label_values.iter().position(|&x| x == v);
        let mut sums = vec![vec![([0.0; 3], 0.0, 0usize); n]; n];
        let mut half = vec![[0.0f64; 3]; n];
        for case in cases {
            for &(va, ca, ha) in case {
                let Some(a) = idx(va) else { continue };
                for ax in 0..3 {
                    half[a][ax] = half[a][ax].max(ha[ax]);
                }
                for &(vb, cb, _) in case {
                    let Some(b) = idx(vb) else { continue };
                    if a == b {
                        continue;
                    }
                    let d = [cb[0] - ca[0], cb[1] - ca[1], cb[2] - ca[2]];
                    let s = &mut sums[a][b];
                    for ax in 0..3 {
                        s.0[ax] += d[ax];
                    }
                    s.1 += d.iter().map(|x| x * x).sum::<f64>();
                    s.2 += 1;
                }
            }
        }
        let mut offset = vec![vec![None; n]; n];
        let mut sd = vec![vec![None; n]; n];
        for a in 0..n {
            for b in 0..n {
                let (s, sq, c) = sums[a][b];
                if c == 0 {
                    continue;
                }
                let m = s.map(|x| x / c as f64);
                let mean_sq = sq / c as f64;
                let m2: f64 = m.iter().map(|x| x * x).sum();
                offset[a][b] = Some(m);
                sd[a][b] = Some((mean_sq - m2).max(0.0).sqrt());
            }
        }
        let mut atlas = GlandAtlas {
            labels: label_values.to_vec(),
            offset_mm: offset,
            offset_sd_mm: sd,
            half_extent_mm: half,
            cases: cases.len(),
            fit_residual_mm: Vec::new(),
        };
        atlas.fit_residual_mm = (0..n).map(|m| atlas.fit_residual(m, cases)).collect();
        atlas
    }

    /// Gland `m`'s per-axis residual of the fitted layout over `cases`, each case's gland
    /// left out and fitted from all its other glands (the case is still in the mean
    /// layout: with ten or more cases that bias is small; at prediction fewer glands may be
    /// found, e.g. both lacrimal glands missed, and the fit is then a little looser than
    /// this measures: on the cross-style sets every such gland still lay in its box).
    /// See [`GlandAtlas::fit_residual_mm`].
    fn fit_residual(&self, m: usize, cases: &[Vec<GlandPosition>]) -> Option<[f64; 3]> {
        let v = self.labels[m];
        let mut sq = [0.0f64; 3];
        let mut max = [0.0f64; 3];
        let mut n = 0usize;
        for case in cases {
            let Some(&(_, truth, _)) = case.iter().find(|g| g.0 == v) else {
                continue;
            };
            let others: Vec<(u8, [f64; 3])> = case
                .iter()
                .filter(|g| g.0 != v)
                .map(|&(w, c, _)| (w, c))
                .collect();
            let Some(p) = self.fitted_position(m, &others) else {
                continue;
            };
            for a in 0..3 {
                let d = (p[a] - truth[a]).abs();
                sq[a] += d * d;
                max[a] = max[a].max(d);
            }
            n += 1;
        }
        (n > 0).then(|| {
            [0, 1, 2].map(|a| {
                (2.0 * (sq[a] / n as f64).sqrt())
                    .max(max[a])
                    .max(MIN_FIT_RESIDUAL_MM)
            })
        })
    }

    /// Where gland `missing` should be given the glands that were `found` (value,
    /// centroid). With three or more found glands the atlas's mean layout is fitted to them
    /// by a rotation, a scale and a translation ([`similarity_fit`]): a head tilted or
    /// turned by 15 degrees moves a lacrimal gland 25 mm or more from where the parotids'
    /// mean offsets put it (measured on a phantom case: the offsets alone were 30 mm off),
    /// and a small head brings it closer; the box is then sized by the fit's residual in
    /// training. With fewer, the mean of each found gland's centroid plus its mean offset,
    /// sized by the offsets' spread. None when no found gland was ever seen with it.
    pub fn expected_box(&self, missing: u8, found: &[(u8, [f64; 3])]) -> Option<Expected> {
        let m = self.labels.iter().position(|&x| x == missing)?;
        // The found glands seen with `missing` in training, with their mean offset to it
        // and its spread.
        let seen: Vec<([f64; 3], [f64; 3], f64)> = found
            .iter()
            .filter_map(|&(v, c)| {
                let f = self.labels.iter().position(|&x| x == v)?;
                Some((c, self.offset_mm[f][m]?, self.offset_sd_mm[f][m]?))
            })
            .collect();
        let spread = seen.iter().map(|s| s.2).fold(0.0f64, f64::max);
        let search_half_mm = self.half_extent_mm[m].map(|h| h + 2.0 * spread);
        if let Some(centre) = self.fitted_position(m, found) {
            let half_mm = match self.fit_residual_mm.get(m).copied().flatten() {
                Some(r) => [0, 1, 2].map(|a| self.half_extent_mm[m][a] + r[a]),
                None => search_half_mm,
            };
            return Some(Expected {
                centre,
                half_mm,
                search_half_mm,
            });
        }
        if seen.is_empty() {
            return None;
        }
        let centre = [0, 1, 2]
            .map(|a| seen.iter().map(|(c, o, _)| c[a] + o[a]).sum::<f64>() / seen.len() as f64);
        Some(Expected {
            centre,
            half_mm: search_half_mm,
            search_half_mm,
        })
    }
}

impl GlandAtlas {
    /// The atlas's mean layout: each gland's mean offset from a reference gland (the first
    /// one seen with every other), None for a gland never seen with it.
    fn mean_layout(&self) -> Option<Vec<Option<[f64; 3]>>> {
        let n = self.labels.len();
        let r = (0..n).find(|&r| (0..n).all(|b| b == r || self.offset_mm[r][b].is_some()))?;
        Some(
            (0..n)
                .map(|b| {
                    if b == r {
                        Some([0.0; 3])
                    } else {
                        self.offset_mm[r][b]
                    }
                })
                .collect(),
        )
    }

    /// Gland `m`'s position from the mean layout fitted to the `found` glands by a
    /// similarity; None with fewer than three usable found glands or a degenerate fit.
    fn fitted_position(&self, m: usize, found: &[(u8, [f64; 3])]) -> Option<[f64; 3]> {
        let layout = self.mean_layout()?;
        let target = layout[m]?;
        let (from, to): (Vec<[f64; 3]>, Vec<[f64; 3]>) = found
            .iter()
            .filter_map(|&(v, c)| {
                let f = self.labels.iter().position(|&x| x == v)?;
                (f != m).then_some(())?;
                Some((layout[f]?, c))
            })
            .unzip();
        if from.len() < 3 {
            return None;
        }
        let t = similarity_fit(&from, &to)?;
        Some(t.apply(target))
    }
}

/// A similarity transform x -> scale * R x + t.
#[derive(Clone, Copy, Debug)]
pub struct Similarity {
    /// Rotation (row-major).
    pub rotation: [[f64; 3]; 3],
    /// Isotropic scale.
    pub scale: f64,
    /// Translation, mm.
    pub translation: [f64; 3],
}

impl Similarity {
    /// The transformed point.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        let r = &self.rotation;
        [0, 1, 2].map(|a| {
            self.scale * (r[a][0] * p[0] + r[a][1] * p[1] + r[a][2] * p[2]) + self.translation[a]
        })
    }
}

/// The least-squares similarity taking points `from` onto `to` (Horn 1987's unit
/// quaternion, Umeyama 1991's scale), the scale kept within 0.8-1.25 (heads differ in size
/// by less; a wider scale would come from a misplaced gland). None for fewer than three
/// points or points (nearly) on a line, where the rotation about that line is undefined.
/// Written by hand: a 4 x 4 symmetric eigenvector (Jacobi rotations) is all it needs, and
/// no linear-algebra crate is in the tree.
pub fn similarity_fit(from: &[[f64; 3]], to: &[[f64; 3]]) -> Option<Similarity> {
    let n = from.len();
    if n < 3 || to.len() != n {
        return None;
    }
    let mean = |p: &[[f64; 3]]| {
        let mut m = [0.0; 3];
        for q in p {
            for a in 0..3 {
                m[a] += q[a] / n as f64;
            }
        }
        m
    };
    let (ma, mb) = (mean(from), mean(to));
    let a: Vec<[f64; 3]> = from
        .iter()
        .map(|p| [0, 1, 2].map(|i| p[i] - ma[i]))
        .collect();
    let b: Vec<[f64; 3]> = to.iter().map(|p| [0, 1, 2].map(|i| p[i] - mb[i])).collect();
    // Cross-covariance S[i][j] = sum a_i b_j.
    let mut sm = [[0.0f64; 3]; 3];
    for (p, q) in a.iter().zip(&b) {
        for i in 0..3 {
            for j in 0..3 {
                sm[i][j] += p[i] * q[j];
            }
        }
    }
    let va: f64 = a.iter().flatten().map(|x| x * x).sum();
    let vb: f64 = b.iter().flatten().map(|x| x * x).sum();
    if va <= 1e-9 || vb <= 1e-9 {
        return None;
    }
    // Collinear points: the second moment has a single non-zero direction.
    let mut cov = [[0.0f64; 4]; 4];
    for p in &a {
        for i in 0..3 {
            for j in 0..3 {
                cov[i][j] += p[i] * p[j];
            }
        }
    }
    let (ev, _) = jacobi_eigen(cov);
    let mut e: Vec<f64> = ev[..3].to_vec();
    e.sort_by(|x, y| y.total_cmp(x));
    if e[1] < 1e-3 * e[0] {
        return None;
    }
    let [[sxx, sxy, sxz], [syx, syy, syz], [szx, szy, szz]] = sm;
    let nm = [
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ];
    let (vals, vecs) = jacobi_eigen(nm);
    let k = (0..4).max_by(|&i, &j| vals[i].total_cmp(&vals[j]))?;
    let q = [vecs[0][k], vecs[1][k], vecs[2][k], vecs[3][k]];
    let norm = q.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm.is_nan() || norm <= 0.0 {
        return None;
    }
    let [w, x, y, z] = q.map(|v| v / norm);
    let rotation = [
        [
            w * w + x * x - y * y - z * z,
            2.0 * (x * y - w * z),
            2.0 * (x * z + w * y),
        ],
        [
            2.0 * (x * y + w * z),
            w * w - x * x + y * y - z * z,
            2.0 * (y * z - w * x),
        ],
        [
            2.0 * (x * z - w * y),
            2.0 * (y * z + w * x),
            w * w - x * x - y * y + z * z,
        ],
    ];
    // Umeyama's scale: sum b . (R a) / sum |a|^2.
    let mut dot = 0.0;
    for (p, q) in a.iter().zip(&b) {
        for i in 0..3 {
            dot += q[i] * (0..3).map(|j| rotation[i][j] * p[j]).sum::<f64>();
        }
    }
    let scale = (dot / va).clamp(0.8, 1.25);
    let mut sim = Similarity {
        rotation,
        scale,
        translation: [0.0; 3],
    };
    let moved = sim.apply(ma);
    sim.translation = [0, 1, 2].map(|i| mb[i] - moved[i]);
    sim.rotation
        .iter()
        .flatten()
        .all(|v| v.is_finite())
        .then_some(sim)
}

/// Eigenvalues and eigenvectors (columns) of a symmetric 4 x 4 matrix by cyclic Jacobi
/// rotations.
fn jacobi_eigen(mut a: [[f64; 4]; 4]) -> ([f64; 4], [[f64; 4]; 4]) {
    let mut v = [[0.0; 4]; 4];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _ in 0..100 {
        let off: f64 = (0..4)
            .flat_map(|i| (0..4).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..4 {
            for q in p + 1..4 {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum().max(0.0).mul_add(2.0, -1.0)
                    / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..4 {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..4 {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ([a[0][0], a[1][1], a[2][2], a[3][3]], v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known similarity (20 degrees about the left-right axis, 10 about the vertical,
    /// scale 1.1, a shift) is recovered from four points, and a line of points is refused.
    #[test]
    fn similarity_fit_recovers_a_known_transform() {
        let rot = |ax: f64, az: f64| {
            let (sa, ca) = ax.to_radians().sin_cos();
            let (sz, cz) = az.to_radians().sin_cos();
            let rx = [[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]];
            let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
            let mut m = [[0.0; 3]; 3];
            for i in 0..3 {
                for j in 0..3 {
                    m[i][j] = (0..3).map(|k| rz[i][k] * rx[k][j]).sum();
                }
            }
            m
        };
        let truth = Similarity {
            rotation: rot(20.0, 10.0),
            scale: 1.1,
            translation: [5.0, -12.0, 30.0],
        };
        let from = [
            [55.0, 10.0, -20.0],
            [-55.0, 10.0, -20.0],
            [40.0, -20.0, -60.0],
            [-40.0, -20.0, -60.0],
        ];
        let to: Vec<[f64; 3]> = from.iter().map(|&p| truth.apply(p)).collect();
        let fit = similarity_fit(&from, &to).expect("a fit");
        assert!((fit.scale - 1.1).abs() < 1e-9, "{fit:?}");
        let lac = [45.0, -50.0, 60.0];
        let (a, b) = (fit.apply(lac), truth.apply(lac));
        for i in 0..3 {
            assert!((a[i] - b[i]).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        let line = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]];
        assert!(similarity_fit(&line, &line).is_none());
    }

    /// A made-up gland layout (LPS mm): parotids, submandibular glands, one lacrimal gland.
    const LAYOUT: [(u8, [f64; 3]); 5] = [
        (1, [55.0, 10.0, -20.0]),
        (2, [-55.0, 10.0, -20.0]),
        (3, [40.0, -20.0, -60.0]),
        (4, [-40.0, -20.0, -60.0]),
        (5, [45.0, -50.0, 60.0]),
    ];

    /// A tilted head: the fitted layout puts the missing lacrimal gland where it is, where
    /// the mean offsets alone miss it by more than 15 mm.
    #[test]
    fn atlas_follows_a_tilted_head() {
        let layout = LAYOUT;
        let cases: Vec<Vec<GlandPosition>> = (0..3)
            .map(|i| {
                layout
                    .iter()
                    .map(|&(v, c)| (v, [c[0] + i as f64, c[1], c[2]], [8.0; 3]))
                    .collect()
            })
            .collect();
        let atlas = GlandAtlas::build(&[1, 2, 3, 4, 5], &cases);
        // Nodding 15 degrees about the left-right (x) axis, then shifted.
        let (s, c) = 15f64.to_radians().sin_cos();
        let tilt = |p: [f64; 3]| [p[0] + 3.0, c * p[1] - s * p[2] + 4.0, s * p[1] + c * p[2]];
        let found: Vec<(u8, [f64; 3])> = layout[..4].iter().map(|&(v, p)| (v, tilt(p))).collect();
        let truth = tilt(layout[4].1);
        let got = atlas.expected_box(5, &found).unwrap().centre;
        let d = |p: [f64; 3]| {
            (0..3)
                .map(|i| (p[i] - truth[i]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        assert!(d(got) < 3.0, "fitted {got:?}, truth {truth:?}");
        // The mean offsets alone (two found glands: no fit).
        let two = atlas.expected_box(5, &found[..2]).unwrap().centre;
        assert!(d(two) > 15.0, "offsets alone {two:?}, truth {truth:?}");
    }

    /// Glands that vary about the layout: each one's left-out residual is what the fit
    /// missed it by in training, the fitted box covers every training gland, and it is
    /// tighter than the box the offsets' spread gives (which holds the head's pose).
    #[test]
    fn fit_residual_sizes_the_fitted_box() {
        let layout = LAYOUT;
        let cases: Vec<Vec<GlandPosition>> = (0..12)
            .map(|i| {
                // Pose: a nod of up to +-20 degrees and a shift; anatomy: each gland off
                // its place by up to ~5 mm (a fixed pseudo-random pattern).
                let (s, c) = ((i as f64 - 5.5) * 3.5f64).to_radians().sin_cos();
                layout
                    .iter()
                    .map(|&(v, p)| {
                        let j = |k: u32| ((i * 7 + v as usize * 3 + k as usize) % 11) as f64 - 5.0;
                        let q = [p[0] + j(0), p[1] + j(1), p[2] + j(2)];
                        let t = [q[0] + i as f64, c * q[1] - s * q[2], s * q[1] + c * q[2]];
                        (v, t, [8.0; 3])
                    })
                    .collect()
            })
            .collect();
        let atlas = GlandAtlas::build(&[1, 2, 3, 4, 5], &cases);
        let r = atlas.fit_residual_mm[4].expect("gland 5 fitted");
        assert!(
            r.iter().all(|&x| (MIN_FIT_RESIDUAL_MM..20.0).contains(&x)),
            "{r:?}"
        );
        for case in &cases {
            let found: Vec<(u8, [f64; 3])> = case[..4].iter().map(|g| (g.0, g.1)).collect();
            let e = atlas.expected_box(5, &found).unwrap();
            for a in 0..3 {
                assert!((e.centre[a] - case[4].1[a]).abs() <= r[a] + 1e-9);
                assert!(e.half_mm[a] < e.search_half_mm[a], "{e:?}");
            }
        }
        // An atlas from before the residual existed sizes the fitted box by the spread.
        let old = GlandAtlas {
            fit_residual_mm: Vec::new(),
            ..atlas.clone()
        };
        let found: Vec<(u8, [f64; 3])> = cases[0][..4].iter().map(|g| (g.0, g.1)).collect();
        let e = old.expected_box(5, &found).unwrap();
        assert_eq!(e.half_mm, e.search_half_mm);
    }

    #[test]
    fn sideless_merges_pairs_in_order() {
        let (m, t) = sideless(&LabelMap::default());
        assert_eq!(m.num_classes(), 4);
        assert_eq!(m.name(1), Some("parotid"));
        assert_eq!(m.name(3), Some("lacrimal"));
        assert_eq!(t, vec![0, 1, 1, 2, 2, 3, 3]);
        assert!(m.lateral_pairs().is_empty());
    }

    #[test]
    fn atlas_predicts_a_missing_partner() {
        // Two cases: gland 1 at x=+50, gland 2 at x=-50 (+-2 mm), gland 5 at (40, -60, 60).
        let cases = vec![
            vec![
                (1, [50.0, 0.0, 0.0], [10.0; 3]),
                (2, [-50.0, 0.0, 0.0], [10.0; 3]),
                (5, [40.0, -60.0, 60.0], [5.0; 3]),
            ],
            vec![
                (1, [52.0, 0.0, 0.0], [11.0; 3]),
                (2, [-48.0, 0.0, 0.0], [9.0; 3]),
                (5, [42.0, -60.0, 60.0], [6.0; 3]),
            ],
        ];
        let atlas = GlandAtlas::build(&[1, 2, 5], &cases);
        let e = atlas
            .expected_box(5, &[(1, [60.0, 10.0, 0.0]), (2, [-40.0, 10.0, 0.0])])
            .unwrap();
        let (c, h) = (e.centre, e.half_mm);
        assert!(
            (c[0] - 50.0).abs() < 1e-9 && (c[1] + 50.0).abs() < 1e-9,
            "{c:?}"
        );
        assert!((c[2] - 60.0).abs() < 1e-9);
        assert!(h[0] >= 6.0);
        assert!(atlas.expected_box(5, &[]).is_none());
    }
}
