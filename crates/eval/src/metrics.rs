//! Per-class comparison of a predicted and a reference label map on one grid.

use crate::surface::surface_distances;
use glandseg_core::{Error, LabelMap, Result, Volume};
use rayon::prelude::*;
use serde::Serialize;

/// All metrics for one class of one case. Distances are in mm; `None` (JSON `null`, an
/// empty CSV cell) stands for an infinite distance, which happens exactly when one of
/// the two masks is empty and the other is not (JSON has no infinity). Whether a mask
/// was empty reads from `volume_pred_ml` / `volume_ref_ml` being 0.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassMetrics {
    /// Label value.
    pub label: u8,
    /// Class name (from the label map).
    pub name: String,
    /// 2|P∩R| / (|P| + |R|); 1 when both are empty, 0 when one is.
    pub dice: f64,
    /// |P∩R| / |P∪R|; 1 when both are empty, 0 when one is.
    pub iou: f64,
    /// Maximum symmetric Hausdorff distance.
    pub hd: Option<f64>,
    /// 95th percentile of both directed surface-distance lists pooled (MedPy `hd95`);
    /// see [`crate::surface::SurfaceDistances::percentile_directed_max`] for MONAI's.
    pub hd95: Option<f64>,
    /// Average symmetric surface distance (mean of both lists pooled).
    pub assd: Option<f64>,
    /// Normalised surface Dice at 1 mm and 2 mm, counted over surface voxels.
    pub nsd_1mm: f64,
    /// Normalised surface Dice at 2 mm.
    pub nsd_2mm: f64,
    /// Predicted volume, mL.
    pub volume_pred_ml: f64,
    /// Reference volume, mL.
    pub volume_ref_ml: f64,
    /// Predicted minus reference volume.
    pub volume_diff_ml: f64,
    /// (pred - ref) / ref in %, `None` when the reference is empty.
    pub volume_diff_pct: Option<f64>,
}

/// The metrics of every class of one case, as the summary and the report files take them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CaseMetrics {
    /// Case id (file name without the NIfTI ending).
    pub case: String,
    /// One entry per foreground class, in label order.
    pub classes: Vec<ClassMetrics>,
}

/// Metrics for one pair of binary masks on the same grid (an error naming both grids
/// otherwise).
pub fn compare_masks(
    pred: &Volume<bool>,
    reference: &Volume<bool>,
    label: u8,
    name: &str,
) -> Result<ClassMetrics> {
    let distances = surface_distances(pred, reference)?;
    let vox_ml = pred.geometry().voxel_volume_ml();
    let (mut inter, mut np, mut nr) = (0usize, 0usize, 0usize);
    for (p, r) in pred.as_slice().iter().zip(reference.as_slice()) {
        np += *p as usize;
        nr += *r as usize;
        inter += (*p && *r) as usize;
    }
    let (vp, vr) = (np as f64 * vox_ml, nr as f64 * vox_ml);
    let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
    let (dice, iou, hd, hd95, assd, nsd_1mm, nsd_2mm) = if np + nr == 0 {
        // Nothing to find and nothing found: a perfect result (MONAI's DiceMetric with
        // ignore_empty=False, Metrics Reloaded's recommendation), not NaN.
        (1.0, 1.0, Some(0.0), Some(0.0), Some(0.0), 1.0, 1.0)
    } else {
        // With one mask empty the lists hold +inf (or nothing): `finite` turns the
        // distances into None and surface Dice comes out 0 on its own.
        (
            2.0 * inter as f64 / (np + nr) as f64,
            inter as f64 / (np + nr - inter) as f64,
            finite(distances.hausdorff()),
            finite(distances.hd95()),
            finite(distances.assd()),
            distances.surface_dice(1.0).unwrap_or(0.0),
            distances.surface_dice(2.0).unwrap_or(0.0),
        )
    };
    Ok(ClassMetrics {
        label,
        name: name.to_string(),
        dice,
        iou,
        hd,
        hd95,
        assd,
        nsd_1mm,
        nsd_2mm,
        volume_pred_ml: vp,
        volume_ref_ml: vr,
        volume_diff_ml: vp - vr,
        volume_diff_pct: (nr > 0).then(|| 100.0 * (vp - vr) / vr),
    })
}

/// Metrics for every foreground class of `labels`, in the map's order. The two label maps
/// must share a grid (shape, spacing, origin and direction within
/// `GRID_TOLERANCE`): metrics across grids would silently compare different places, so
/// this refuses and names both geometries; resample one onto the other first.
pub fn compare(
    pred: &Volume<u8>,
    reference: &Volume<u8>,
    labels: &LabelMap,
) -> Result<Vec<ClassMetrics>> {
    let (gp, gr) = (pred.geometry(), reference.geometry());
    if !gp.same_grid(gr, glandseg_core::geometry::GRID_TOLERANCE) {
        return Err(Error::Geometry(format!(
            "prediction and reference are on different grids (prediction shape {:?} spacing {:?} origin {:?} direction {:?}; reference shape {:?} spacing {:?} origin {:?} direction {:?}); resample one onto the other first",
            gp.shape, gp.spacing, gp.origin, gp.direction,
            gr.shape, gr.spacing, gr.origin, gr.direction
        )));
    }
    let classes: Vec<(u8, &str)> = labels.foreground().collect();
    classes
        .par_iter()
        .map(|&(v, name)| {
            compare_masks(&pred.map(|&x| x == v), &reference.map(|&x| x == v), v, name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glandseg_core::Geometry;

    fn cube(g: &Geometry, lo: [usize; 3], hi: [usize; 3]) -> Volume<bool> {
        let mut v = Volume::filled(g.clone(), false);
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    v.set(i, j, k, true);
                }
            }
        }
        v
    }

    #[test]
    fn shifted_cube_by_hand() {
        let g = Geometry::new([20, 20, 20], [1.0, 1.0, 2.0], [0.0; 3]);
        let a = cube(&g, [5, 5, 5], [10, 10, 10]);
        let b = cube(&g, [7, 5, 5], [12, 10, 10]);
        let m = compare_masks(&a, &b, 1, "x").unwrap();
        assert!((m.dice - 0.6).abs() < 1e-12);
        assert!((m.iou - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(m.hd, Some(2.0));
        assert!((m.volume_pred_ml - 0.25).abs() < 1e-12);
    }

    #[test]
    fn empty_cases_are_defined() {
        let g = Geometry::new([6, 6, 6], [1.0; 3], [0.0; 3]);
        let e = Volume::filled(g.clone(), false);
        let c = cube(&g, [1, 1, 1], [3, 3, 3]);
        let both = compare_masks(&e, &e, 1, "x").unwrap();
        assert_eq!((both.dice, both.hd95), (1.0, Some(0.0)));
        let one = compare_masks(&e, &c, 1, "x").unwrap();
        assert_eq!((one.dice, one.hd, one.nsd_2mm), (0.0, None, 0.0));
        assert_eq!(one.volume_diff_pct, Some(-100.0));
        let other = compare_masks(&c, &e, 1, "x").unwrap();
        assert_eq!(other.volume_diff_pct, None);
        assert_eq!((other.hd, other.hd95, other.assd), (None, None, None));
        assert_eq!((other.dice, other.iou, other.nsd_1mm), (0.0, 0.0, 0.0));
    }

    #[test]
    fn every_class_of_the_map_in_order_and_swapped_sides_score_zero() {
        // Left gland predicted on the right: laterality must not be forgiven.
        let g = Geometry::new([12, 6, 6], [1.0; 3], [0.0; 3]);
        let mut p = Volume::filled(g.clone(), 0u8);
        let mut r = Volume::filled(g.clone(), 0u8);
        for k in 1..4 {
            for j in 1..4 {
                for i in 1..4 {
                    r.set(i, j, k, 1);
                    p.set(i + 7, j, k, 1);
                    r.set(i + 7, j, k, 2);
                    p.set(i, j, k, 2);
                }
            }
        }
        let m = compare(&p, &r, &LabelMap::default()).unwrap();
        let labels: Vec<u8> = m.iter().map(|c| c.label).collect();
        assert_eq!(labels, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!((m[0].dice, m[1].dice), (0.0, 0.0));
        assert_eq!(m[0].hd, Some(7.0));
        assert_eq!((m[2].dice, m[2].hd95), (1.0, Some(0.0)));
    }

    #[test]
    fn different_grids_are_refused() {
        let a = Volume::filled(Geometry::new([4, 4, 4], [1.0; 3], [0.0; 3]), 0u8);
        let b = Volume::filled(Geometry::new([4, 4, 4], [1.0; 3], [1.0, 0.0, 0.0]), 0u8);
        let e = compare(&a, &b, &LabelMap::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("different grids"), "{e}");
        assert!(
            e.contains("[1.0, 0.0, 0.0]") && e.contains("[0.0, 0.0, 0.0]"),
            "{e}"
        );
    }
}
