//! The synthetic cohort: deterministic, anatomically sided, glands in their ranges.

use glandseg_core::LabelMap;
use glandseg_phantom::{generate_case, write_dataset, Fov, PhantomConfig};

fn cfg(seed: u64, scale: f64) -> PhantomConfig {
    PhantomConfig {
        seed,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale,
    }
}

#[test]
fn deterministic_from_seed_and_index() {
    let a = generate_case(&cfg(7, 0.3), 1);
    let b = generate_case(&cfg(7, 0.3), 1);
    assert_eq!(a.ct.as_slice(), b.ct.as_slice());
    assert_eq!(a.pet.as_slice(), b.pet.as_slice());
    assert_eq!(a.labels.as_slice(), b.labels.as_slice());
    let c = generate_case(&cfg(8, 0.3), 1);
    assert_ne!(a.labels.as_slice(), c.labels.as_slice());
    let d = generate_case(&cfg(7, 0.3), 2);
    assert_ne!(a.ct.as_slice(), d.ct.as_slice());
}

#[test]
fn glands_are_present_sided_and_sized() {
    let map = LabelMap::default();
    for seed in 0..3 {
        let case = generate_case(&cfg(seed, 0.5), seed as usize);
        let m = &case.meta;
        for g in &m.glands {
            assert!(g.voxels > 0, "{}: {} is empty", case.id, g.name);
            // The label map's volume against the physiological range. At scale 0.5 voxels
            // are 2 x 2 x 3-6 mm, so a 0.5 mL lacrimal gland is ~20 voxels: allow the
            // discretisation error of one voxel layer on small glands.
            let (lo, hi) = match g.name.split('_').next().unwrap() {
                "parotid" => (15.0, 35.0),
                "submandibular" => (6.0, 12.0),
                _ => (0.4, 1.2),
            };
            let slack = if lo < 1.0 { 0.35 } else { 0.08 };
            assert!(
                g.label_volume_ml >= lo * (1.0 - slack) && g.label_volume_ml <= hi * (1.0 + slack),
                "{}: {} volume {} mL outside {lo}-{hi}",
                case.id,
                g.name,
                g.label_volume_ml
            );
            assert!(g.target_volume_ml >= lo && g.target_volume_ml <= hi);
        }
        // Laterality: every _left centroid lies at larger LPS x than its _right partner.
        for (l, r, stem) in map.lateral_pairs() {
            let gl = m.glands.iter().find(|g| g.label == l).unwrap();
            let gr = m.glands.iter().find(|g| g.label == r).unwrap();
            assert!(
                gl.centroid_lps[0] > gr.centroid_lps[0] + 20.0,
                "{stem}: left x {} vs right x {}",
                gl.centroid_lps[0],
                gr.centroid_lps[0]
            );
        }
        // PET on the CT grid; native PET coarser.
        assert!(case.pet.geometry().same_grid(case.ct.geometry(), 1e-9));
        assert!(case.pet_native.geometry().spacing[0] > case.ct.geometry().spacing[0]);
        // Uptake: glands hot, brain and muscle not; parotid fatty on CT.
        let parotid = m.glands.iter().find(|g| g.name == "parotid_left").unwrap();
        assert!(parotid.suv_max > 5.0, "parotid SUVmax {}", parotid.suv_max);
        assert!(
            parotid.ct_hu_mean > -110.0 && parotid.ct_hu_mean < 40.0,
            "parotid HU {}",
            parotid.ct_hu_mean
        );
        let sub = m
            .glands
            .iter()
            .find(|g| g.name == "submandibular_left")
            .unwrap();
        assert!(
            sub.ct_hu_mean > 15.0 && sub.ct_hu_mean < 85.0,
            "submandibular HU {}",
            sub.ct_hu_mean
        );
        // Brain (high, midline) is cold.
        let g = case.ct.geometry();
        let mut brain = Vec::new();
        for ((k, j, i), &hu) in case.ct.data().indexed_iter() {
            let w = g.index_to_world([i as f64, j as f64, k as f64]);
            let rel = [
                w[0] - m.head_shift_mm[0],
                w[1] - m.head_shift_mm[1],
                w[2] - m.head_shift_mm[2],
            ];
            if rel[0].abs() < 20.0
                && rel[1].abs() < 20.0
                && rel[2] > 60.0
                && rel[2] < 80.0
                && (20.0..50.0).contains(&hu)
            {
                brain.push(*case.pet.get(i, j, k));
            }
        }
        if !brain.is_empty() {
            let mean = brain.iter().sum::<f32>() / brain.len() as f32;
            assert!(mean < 1.5, "brain SUV {mean}");
        }
    }
}

#[test]
fn writes_the_nnunet_layout() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let s = write_dataset(dir.path(), &cfg(1, 0.3), 2, true, &|_| {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(n.into_inner(), 2);
    assert_eq!(s.cases, 2);
    let ds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("dataset.json")).unwrap()).unwrap();
    assert_eq!(ds["numTraining"], 2);
    assert_eq!(ds["labels"]["parotid_left"], 1);
    for id in ["GLAND_000", "GLAND_001"] {
        let ct =
            glandseg_nifti::read_volume(&dir.path().join(format!("imagesTr/{id}_0000.nii.gz")))
                .unwrap();
        let pet =
            glandseg_nifti::read_volume(&dir.path().join(format!("imagesTr/{id}_0001.nii.gz")))
                .unwrap();
        let lab =
            glandseg_nifti::read_labels(&dir.path().join(format!("labelsTr/{id}.nii.gz"))).unwrap();
        assert!(ct.geometry().same_grid(pet.geometry(), 1e-4));
        assert!(ct.geometry().same_grid(lab.geometry(), 1e-4));
        assert!(lab.as_slice().contains(&6));
        assert!(dir.path().join(format!("pet_native/{id}.nii.gz")).exists());
        assert!(dir.path().join(format!("meta/{id}.json")).exists());
    }
}
