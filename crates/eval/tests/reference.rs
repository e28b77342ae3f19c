//! glandseg-eval against MedPy on fixtures made by `tests/fixtures/make_fixtures.py`:
//! Dice/IoU within 1e-4, distances within 0.05 mm.

use glandseg_core::{Geometry, LabelMap, Volume};
use serde_json::Value;

fn decode(rle: &Value, g: &Geometry) -> Volume<u8> {
    let mut v = Vec::with_capacity(g.num_voxels());
    for pair in rle.as_array().unwrap() {
        let (val, n) = (
            pair[0].as_u64().unwrap() as u8,
            pair[1].as_u64().unwrap() as usize,
        );
        v.extend(std::iter::repeat_n(val, n));
    }
    Volume::from_vec(g.clone(), v).unwrap()
}

#[test]
fn matches_medpy() {
    let text = include_str!("fixtures/metrics_fixtures.json");
    let fx: Value = serde_json::from_str(text).unwrap();
    let map = LabelMap::default();
    let mut checked = 0;
    let mut worst = [0.0f64; 2];
    for case in fx["cases"].as_array().unwrap() {
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        let sp: Vec<f64> = case["spacing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let g = Geometry::new(
            [shape[0], shape[1], shape[2]],
            [sp[0], sp[1], sp[2]],
            [0.0; 3],
        );
        let pred = decode(&case["pred"], &g);
        let refr = decode(&case["ref"], &g);
        let got = glandseg_eval::compare(&pred, &refr, &map).unwrap();
        for m in &got {
            let e = &case["expected"][m.label.to_string()];
            let name = format!("{} {}", case["name"], m.name);
            for (k, v, tol) in [
                ("dice", m.dice, 1e-4),
                ("iou", m.iou, 1e-4),
                ("nsd_1mm", m.nsd_1mm, 1e-4),
                ("nsd_2mm", m.nsd_2mm, 1e-4),
            ] {
                let want = e[k].as_f64().unwrap();
                assert!((v - want).abs() <= tol, "{name}: {k} {v} vs medpy {want}");
                worst[0] = worst[0].max((v - want).abs());
                checked += 1;
            }
            for (k, v) in [("hd", m.hd), ("hd95", m.hd95), ("assd", m.assd)] {
                match (v, e[k].as_f64()) {
                    (Some(a), Some(b)) => {
                        assert!((a - b).abs() <= 0.05, "{name}: {k} {a} vs medpy {b}");
                        if (a - b).abs() > 1e-3 {
                            eprintln!("{name}: {k} {a} vs medpy {b}");
                        }
                        worst[1] = worst[1].max((a - b).abs());
                    }
                    (None, None) => {}
                    (a, b) => panic!("{name}: {k} {a:?} vs medpy {b:?}"),
                }
                checked += 1;
            }
        }
    }
    eprintln!(
        "checked {checked} values against {}; max |diff| overlap {:.2e}, distance {:.2e} mm",
        fx["reference"], worst[0], worst[1]
    );
    assert!(checked >= 80);
}
