//! Postprocessing of a label map: each gland is one organ, so by default only its largest
//! connected component is kept (nnU-Net decides this per class on validation data; for
//! glands it is always right); optionally every component above a volume is kept instead.
//! And a laterality check, because a swapped left/right label is the one error a Dice
//! table hides and a dosimetry report must not.

use glandseg_core::{LabelMap, Volume};
use glandseg_ops::components::{keep_largest, remove_smaller_than};
use serde::Serialize;

#[derive(Clone, Debug)]
/// Which connected components of each gland survive postprocessing.
pub enum ComponentRule {
    /// Only the largest (a gland is one organ).
    LargestOnly,
    /// Every component at least this large, mL.
    AboveMl(f64),
    /// All of them (no filtering).
    KeepAll,
}

/// Applies `rule` to every foreground class of `labels`, in place.
pub fn filter_components(labels: &mut Volume<u8>, map: &LabelMap, rule: &ComponentRule) {
    if matches!(rule, ComponentRule::KeepAll) {
        return;
    }
    let voxel_ml = labels.geometry().voxel_volume_ml();
    for (v, _) in map.foreground() {
        let mask = labels.map(|&x| x == v);
        if !mask.as_slice().iter().any(|&b| b) {
            continue;
        }
        let kept = match rule {
            ComponentRule::LargestOnly => keep_largest(&mask),
            ComponentRule::AboveMl(ml) => {
                remove_smaller_than(&mask, (ml / voxel_ml).ceil() as usize)
            }
            ComponentRule::KeepAll => unreachable!("returned above"),
        };
        for (l, (&was, &keep)) in labels
            .as_slice_mut()
            .iter_mut()
            .zip(mask.as_slice().iter().zip(kept.as_slice()))
        {
            if was && !keep {
                *l = 0;
            }
        }
    }
}

/// One left/right pair as found in a prediction.
#[derive(Clone, Debug, Serialize)]
pub struct LateralityCheck {
    /// Name without the _left/_right suffix.
    pub stem: String,
    /// World x (LPS: larger = more to the patient's left) of each centroid, mm.
    pub left_x_mm: Option<f64>,
    /// World x of the right one's centroid, mm.
    pub right_x_mm: Option<f64>,
    /// True when each is on its own side (or one is missing).
    pub ok: bool,
    /// Why it is not (also a warning in the report).
    pub message: Option<String>,
}

fn centroid_x(labels: &Volume<u8>, v: u8) -> Option<f64> {
    let g = labels.geometry();
    let [ni, nj, _] = g.shape;
    let mut sum = [0.0; 3];
    let mut n = 0usize;
    for (idx, &l) in labels.as_slice().iter().enumerate() {
        if l == v {
            sum[0] += (idx % ni) as f64;
            sum[1] += ((idx / ni) % nj) as f64;
            sum[2] += (idx / (ni * nj)) as f64;
            n += 1;
        }
    }
    (n > 0).then(|| g.index_to_world(sum.map(|s| s / n as f64))[0])
}

/// The least left-right distance between the two glands of a pair for both to be on
/// their own sides: the closest pair, the submandibular glands, lie 50-70 mm apart.
pub const MIN_PAIR_SEPARATION_MM: f64 = 20.0;

/// `_left` must lie on the patient's left (+x in LPS) of its `_right` partner, and by at
/// least [`MIN_PAIR_SEPARATION_MM`]: two labels of a pair in one orbit (a confused
/// network's answer) are "left of" each other by a few millimetres.
pub fn check_laterality(labels: &Volume<u8>, map: &LabelMap) -> Vec<LateralityCheck> {
    map.lateral_pairs()
        .into_iter()
        .map(|(l, r, stem)| {
            let (lx, rx) = (centroid_x(labels, l), centroid_x(labels, r));
            let (ok, message) = match (lx, rx) {
                (Some(a), Some(b)) if a - b >= MIN_PAIR_SEPARATION_MM => (true, None),
                (Some(a), Some(b)) if a > b => (
                    false,
                    Some(format!(
                        "{stem}_left (x = {a:.1} mm) and {stem}_right (x = {b:.1} mm) lie only {:.1} mm apart left-right: both may be on one side",
                        a - b
                    )),
                ),
                (Some(a), Some(b)) => (
                    false,
                    Some(format!(
                        "{stem}_left (x = {a:.1} mm) is not on the patient's left of {stem}_right (x = {b:.1} mm): left and right may be swapped"
                    )),
                ),
                (None, None) => (true, Some(format!("neither {stem} gland was found"))),
                (None, _) => (true, Some(format!("{stem}_left was not found"))),
                (_, None) => (true, Some(format!("{stem}_right was not found"))),
            };
            LateralityCheck {
                stem,
                left_x_mm: lx,
                right_x_mm: rx,
                ok,
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    #[test]
    fn keeps_the_largest_piece_and_flags_swapped_sides() {
        // 3 mm along x: the pair's centroids lie 37.5 mm apart.
        let g = Geometry::new([20, 10, 10], [3.0, 1.0, 1.0], [0.0; 3]);
        let mut l = Volume::filled(g, 0u8);
        // parotid_left (1) big at high x, plus a stray voxel; parotid_right (2) at low x.
        for k in 2..6 {
            for j in 2..6 {
                for i in 14..18 {
                    l.set(i, j, k, 1);
                }
                for i in 2..5 {
                    l.set(i, j, k, 2);
                }
            }
        }
        l.set(8, 8, 8, 1);
        let map = LabelMap::default();
        filter_components(&mut l, &map, &ComponentRule::LargestOnly);
        assert_eq!(*l.get(8, 8, 8), 0);
        assert_eq!(l.as_slice().iter().filter(|&&v| v == 1).count(), 64);
        let c = check_laterality(&l, &map);
        assert!(c[0].ok, "{:?}", c[0]);
        // Swap the labels: the check must fail.
        let swapped = l.map(|&v| map.swap_table()[v as usize]);
        let c = check_laterality(&swapped, &map);
        assert!(!c[0].ok);
        assert!(c[0].message.as_ref().unwrap().contains("swapped"));
        // Both in one place (the right one moved next to the left one, 13.5 mm apart):
        // "left of" by a few millimetres is not each on its own side.
        let mut close = l.map(|&v| if v == 2 { 0 } else { v });
        for k in 2..6 {
            for j in 2..6 {
                for i in 10..13 {
                    close.set(i, j, k, 2);
                }
            }
        }
        let c = check_laterality(&close, &map);
        assert!(!c[0].ok, "{:?}", c[0]);
        assert!(
            c[0].message.as_ref().unwrap().contains("apart"),
            "{:?}",
            c[0]
        );
    }
}
