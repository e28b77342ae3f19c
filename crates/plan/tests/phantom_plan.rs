//! Fingerprint and plan of a small synthetic cohort.

use glandseg_phantom::{write_dataset, Fov, PhantomConfig};
use glandseg_plan::{fingerprint, make_plan, Dataset, Normalization, PlanOptions};

#[test]
fn fingerprint_and_plan_of_the_phantom() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = PhantomConfig {
        seed: 5,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale: 0.3,
        style: Default::default(),
        style_from: None,
    };
    write_dataset(dir.path(), &cfg, 3, false, &|_| {}).unwrap();
    let ds = Dataset::open(dir.path()).unwrap();
    assert_eq!(ds.channels, vec!["CT", "PET"]);
    assert_eq!(ds.cases.len(), 3);
    let fp = fingerprint(&ds, 0).unwrap();
    assert_eq!(fp.spacings.len(), 3);
    // Foreground CT (glands: fatty parotid to soft-tissue submandibular) and PET (hot).
    let ct = &fp.channels[0];
    assert!(ct.p50 > -150.0 && ct.p50 < 100.0, "{ct:?}");
    let pet = &fp.channels[1];
    assert!(pet.p50 > 2.0, "{pet:?}");
    assert_eq!(fp.lateral_pairs.len(), 3);
    assert!(fp.label_volumes_ml["parotid_left"]
        .iter()
        .all(|v| *v > 10.0));
    // Body crop is smaller than the grid.
    let plan = make_plan(&fp, &ds.labels, &ds.channels, &PlanOptions::default());
    assert!(matches!(
        plan.normalization[1],
        Normalization::Log1pZscore { .. }
    ));
    assert!(plan.patch_size.iter().all(|&p| p >= 8));
    let json = serde_json::to_string_pretty(&plan).unwrap();
    let back: glandseg_plan::Plan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
    // A broken dataset names the file and field.
    std::fs::write(
        dir.path().join("dataset.json"),
        "{\"channel_names\": {\"0\": \"CT\"}, \"labels\": {\"a\": 1}}",
    )
    .unwrap();
    let e = Dataset::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("dataset.json") && e.contains("labels"), "{e}");
}
