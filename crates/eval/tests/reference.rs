//! glandseg-eval against MedPy on the fixtures made by `tests/fixtures/make_fixtures.py`
//! (anisotropic and oblique grids, shifted / deformed / noisy / touching / one-voxel /
//! one-slice masks, classes and whole cases with an empty prediction or reference):
//! Dice, IoU and surface Dice within 1e-4, distances within 0.05 mm, surface-voxel counts
//! exact. The largest difference seen per metric is printed (`--nocapture`).

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_eval::{compare, surface_distances};
use serde_json::Value;
use std::collections::BTreeMap;

fn decode(rle: &Value, g: &Geometry) -> Volume<u8> {
    let mut v = Vec::with_capacity(g.num_voxels());
    for pair in rle.as_array().expect("rle is an array") {
        let (val, n) = (
            pair[0].as_u64().expect("value") as u8,
            pair[1].as_u64().expect("count") as usize,
        );
        v.extend(std::iter::repeat_n(val, n));
    }
    Volume::from_vec(g.clone(), v).expect("rle covers the grid")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Largest |ours - reference| per metric, and how many values were compared.
#[derive(Default)]
struct Worst(BTreeMap<&'static str, (f64, usize)>);

impl Worst {
    fn check(
        &mut self,
        what: &str,
        metric: &'static str,
        ours: Option<f64>,
        want: &Value,
        tol: f64,
    ) {
        let e = self.0.entry(metric).or_insert((0.0, 0));
        e.1 += 1;
        match (ours, want.as_f64()) {
            (Some(a), Some(b)) => {
                let d = (a - b).abs();
                assert!(
                    d <= tol,
                    "{what}: {metric} {a} vs MedPy {b} (tolerance {tol})"
                );
                e.0 = e.0.max(d);
            }
            (None, None) => {}
            (a, b) => panic!("{what}: {metric} {a:?} vs MedPy {b:?}"),
        }
    }
}

#[test]
fn matches_medpy() {
    let fx: Value =
        serde_json::from_str(include_str!("fixtures/metrics_fixtures.json")).expect("fixture JSON");
    let map = LabelMap::default();
    let mut worst = Worst::default();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    for case in cases {
        let shape: Vec<usize> = numbers(&case["shape"])
            .iter()
            .map(|x| *x as usize)
            .collect();
        let sp = numbers(&case["spacing"]);
        let rows: Vec<Vec<f64>> = case["direction"]
            .as_array()
            .expect("direction")
            .iter()
            .map(numbers)
            .collect();
        let direction = [0, 1, 2].map(|r| [0, 1, 2].map(|c| rows[r][c]));
        let g = Geometry::new(
            [shape[0], shape[1], shape[2]],
            [sp[0], sp[1], sp[2]],
            [-12.5, 30.0, 4.0],
        )
        .with_direction(direction);
        let pred = decode(&case["pred"], &g);
        let refr = decode(&case["ref"], &g);
        let got = compare(&pred, &refr, &map).expect("same grid");
        assert_eq!(got.len(), 6);
        for m in &got {
            let e = &case["expected"][m.label.to_string()];
            let what = format!("{} {}", case["name"], m.name);
            for (k, v) in [
                ("dice", m.dice),
                ("iou", m.iou),
                ("nsd_1mm", m.nsd_1mm),
                ("nsd_2mm", m.nsd_2mm),
            ] {
                worst.check(&what, k, Some(v), &e[k], 1e-4);
            }
            for (k, v) in [("hd", m.hd), ("hd95", m.hd95), ("assd", m.assd)] {
                worst.check(&what, k, v, &e[k], 0.05);
            }
            for (k, v) in [
                ("volume_pred_ml", m.volume_pred_ml),
                ("volume_ref_ml", m.volume_ref_ml),
            ] {
                worst.check(&what, k, Some(v), &e[k], 1e-9);
            }
            // The surface layer: voxel counts (exact), directed means (MedPy asd) and
            // MONAI's max-of-directed HD95 from MedPy's own directed lists.
            let (p, r) = (pred.map(|&x| x == m.label), refr.map(|&x| x == m.label));
            let d = surface_distances(&p, &r).expect("same grid");
            assert_eq!(
                d.a_to_b.len() as u64,
                e["n_surface_pred"].as_u64().unwrap(),
                "{what}"
            );
            assert_eq!(
                d.b_to_a.len() as u64,
                e["n_surface_ref"].as_u64().unwrap(),
                "{what}"
            );
            if e.get("asd_pred_ref").is_some() {
                worst.check(
                    &what,
                    "asd_pred_ref",
                    d.mean_a_to_b(),
                    &e["asd_pred_ref"],
                    0.05,
                );
                worst.check(
                    &what,
                    "asd_ref_pred",
                    d.mean_b_to_a(),
                    &e["asd_ref_pred"],
                    0.05,
                );
                worst.check(
                    &what,
                    "hd95_directed_max",
                    d.percentile_directed_max(95.0),
                    &e["hd95_directed_max"],
                    0.05,
                );
            }
        }
    }
    eprintln!("reference: {}", fx["reference"]);
    let mut total = 0;
    for (metric, (d, n)) in &worst.0 {
        eprintln!("  {metric:<18} {n:>3} values, max |diff| {d:.3e}");
        total += n;
    }
    assert!(total >= 300, "only {total} values compared");
}
