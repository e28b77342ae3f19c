use glandseg_core::{Error, LabelMap, Result, Volume};
use glandseg_ops::distance::edt_mm;
use serde::Serialize;

/// All metrics for one class of one case.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub label: u8,
    pub name: String,
    pub dice: f64,
    pub iou: f64,
    /// Maximum symmetric Hausdorff distance, mm.
    pub hd: Option<f64>,
    pub hd95: Option<f64>,
    /// Average symmetric surface distance, mm.
    pub assd: Option<f64>,
    pub nsd_1mm: f64,
    pub nsd_2mm: f64,
    pub volume_pred_ml: f64,
    pub volume_ref_ml: f64,
    pub volume_diff_ml: f64,
    /// (pred - ref) / ref in %, `None` when the reference is empty.
    pub volume_diff_pct: Option<f64>,
}

fn surface(mask: &Volume<bool>) -> Volume<bool> {
    let [nx, ny, nz] = mask.geometry().shape;
    let m = mask.as_slice();
    let idx = |i: usize, j: usize, k: usize| i + nx * (j + ny * k);
    let mut out = vec![false; m.len()];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let p = idx(i, j, k);
                if !m[p] {
                    continue;
                }
                let border =
                    i == 0 || j == 0 || k == 0 || i + 1 == nx || j + 1 == ny || k + 1 == nz;
                out[p] = border
                    || !m[p - 1]
                    || !m[p + 1]
                    || !m[p - nx]
                    || !m[p + nx]
                    || !m[idx(i, j, k - 1)]
                    || !m[idx(i, j, k + 1)];
            }
        }
    }
    Volume::from_vec(mask.geometry().clone(), out).expect("same grid")
}

/// Distances from every surface voxel of `a` to the surface of `b`.
fn directed(sa: &Volume<bool>, sb: &Volume<bool>) -> Vec<f64> {
    let d = edt_mm(sb);
    sa.as_slice()
        .iter()
        .zip(d.as_slice())
        .filter(|(s, _)| **s)
        .map(|(_, d)| *d as f64)
        .collect()
}

/// numpy's default (linear) percentile of unsorted values.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 1 {
        return values[0];
    }
    let pos = q / 100.0 * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// Metrics for one pair of binary masks on the same grid.
pub fn compare_masks(
    pred: &Volume<bool>,
    reference: &Volume<bool>,
    label: u8,
    name: &str,
) -> ClassMetrics {
    let vox_ml = pred.geometry().voxel_volume_ml();
    let (mut inter, mut np, mut nr) = (0usize, 0usize, 0usize);
    for (p, r) in pred.as_slice().iter().zip(reference.as_slice()) {
        np += *p as usize;
        nr += *r as usize;
        inter += (*p && *r) as usize;
    }
    let (vp, vr) = (np as f64 * vox_ml, nr as f64 * vox_ml);
    let base = ClassMetrics {
        label,
        name: name.to_string(),
        dice: 0.0,
        iou: 0.0,
        hd: None,
        hd95: None,
        assd: None,
        nsd_1mm: 0.0,
        nsd_2mm: 0.0,
        volume_pred_ml: vp,
        volume_ref_ml: vr,
        volume_diff_ml: vp - vr,
        volume_diff_pct: (nr > 0).then(|| 100.0 * (vp - vr) / vr),
    };
    match (np, nr) {
        (0, 0) => ClassMetrics {
            dice: 1.0,
            iou: 1.0,
            hd: Some(0.0),
            hd95: Some(0.0),
            assd: Some(0.0),
            nsd_1mm: 1.0,
            nsd_2mm: 1.0,
            ..base
        },
        (0, _) | (_, 0) => base,
        _ => {
            let (sp, sr) = (surface(pred), surface(reference));
            let (dpr, drp) = rayon::join(|| directed(&sp, &sr), || directed(&sr, &sp));
            let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
            let nsd = |t: f64| {
                (dpr.iter().filter(|d| **d <= t).count() + drp.iter().filter(|d| **d <= t).count())
                    as f64
                    / (dpr.len() + drp.len()) as f64
            };
            let mut all: Vec<f64> = dpr.iter().chain(&drp).cloned().collect();
            ClassMetrics {
                dice: 2.0 * inter as f64 / (np + nr) as f64,
                iou: inter as f64 / (np + nr - inter) as f64,
                hd: Some(max(&dpr).max(max(&drp))),
                assd: Some(all.iter().sum::<f64>() / all.len() as f64),
                hd95: Some(percentile(&mut all, 95.0)),
                nsd_1mm: nsd(1.0),
                nsd_2mm: nsd(2.0),
                ..base
            }
        }
    }
}

/// Metrics for every foreground class of `labels`. The two label maps must share a grid.
pub fn compare(
    pred: &Volume<u8>,
    reference: &Volume<u8>,
    labels: &LabelMap,
) -> Result<Vec<ClassMetrics>> {
    if !pred.geometry().same_grid(
        reference.geometry(),
        glandseg_core::geometry::GRID_TOLERANCE,
    ) {
        return Err(Error::Geometry(format!(
            "prediction and reference are on different grids (prediction {:?} spacing {:?} origin {:?}; reference {:?} spacing {:?} origin {:?}); resample one onto the other first",
            pred.geometry().shape,
            pred.geometry().spacing,
            pred.geometry().origin,
            reference.geometry().shape,
            reference.geometry().spacing,
            reference.geometry().origin
        )));
    }
    Ok(labels
        .foreground()
        .map(|(v, name)| {
            compare_masks(&pred.map(|&x| x == v), &reference.map(|&x| x == v), v, name)
        })
        .collect())
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
        let m = compare_masks(&a, &b, 1, "x");
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
        let both = compare_masks(&e, &e, 1, "x");
        assert_eq!((both.dice, both.hd95), (1.0, Some(0.0)));
        let one = compare_masks(&e, &c, 1, "x");
        assert_eq!((one.dice, one.hd, one.nsd_2mm), (0.0, None, 0.0));
        assert_eq!(one.volume_diff_pct, Some(-100.0));
        let other = compare_masks(&c, &e, 1, "x");
        assert_eq!(other.volume_diff_pct, None);
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let mut v = vec![4.0, 1.0, 3.0, 2.0];
        assert!((percentile(&mut v, 95.0) - 3.85).abs() < 1e-12);
    }

    #[test]
    fn different_grids_are_refused() {
        let a = Volume::filled(Geometry::new([4, 4, 4], [1.0; 3], [0.0; 3]), 0u8);
        let b = Volume::filled(Geometry::new([4, 4, 4], [1.0; 3], [1.0, 0.0, 0.0]), 0u8);
        let e = compare(&a, &b, &LabelMap::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("different grids"), "{e}");
    }
}
