//! The synthetic cohort: deterministic, anatomically sided, glands in their ranges.

use glandseg_core::LabelMap;
use glandseg_phantom::{generate_case, write_dataset, Fov, PhantomConfig};

fn cfg(seed: u64, scale: f64) -> PhantomConfig {
    PhantomConfig {
        seed,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale,
        style: Default::default(),
        style_from: None,
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
            // The label map's volume against the physiological range, atrophied glands of
            // older patients included. At scale 0.5 voxels are 2 x 2 x 3-6 mm, so a 0.5 mL
            // lacrimal gland is ~20 voxels: allow the discretisation error of one voxel
            // layer on small glands.
            let (lo, hi) = match g.name.split('_').next().unwrap() {
                "parotid" => (9.0, 35.0),
                "submandibular" => (3.8, 12.0),
                _ => (0.35, 1.2),
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
        let meta: glandseg_phantom::CaseMeta = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("meta/{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta.id, id);
        // A case is the same whatever the cohort size: the written file equals the case
        // generated on its own.
        let alone = generate_case(&cfg(1, 0.3), meta.index);
        assert_eq!(lab.as_slice(), alone.labels.as_slice());
        let worst = ct
            .as_slice()
            .iter()
            .zip(alone.ct.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 0.5 + 1e-3, "CT written as rounded int16: {worst}");
    }
}

/// Mean PET (channel on the CT grid) within `r` mm of a point given in the anatomical
/// frame (scaled by the body size), placed in the scanner by the case's recorded pose.
fn pet_mean_near(case: &glandseg_phantom::PhantomCase, frame: [f64; 3], r: f64) -> f64 {
    let m = &case.meta;
    let a = frame.map(|v| v * m.body_size);
    let rot = glandseg_phantom::shapes::rotation(m.head_rotation_deg);
    let w = glandseg_phantom::shapes::mat_vec(&rot, a);
    let w = [
        w[0] + m.head_shift_mm[0],
        w[1] + m.head_shift_mm[1],
        w[2] + m.head_shift_mm[2],
    ];
    let g = case.pet.geometry();
    let (mut sum, mut n) = (0.0, 0usize);
    for ((k, j, i), &v) in case.pet.data().indexed_iter() {
        let p = g.index_to_world([i as f64, j as f64, k as f64]);
        let d2: f64 = (0..3).map(|d| (p[d] - w[d]).powi(2)).sum();
        if d2 <= r * r {
            sum += v as f64;
            n += 1;
        }
    }
    assert!(n > 0, "{}: no voxel within {r} mm of {frame:?}", case.id);
    sum / n as f64
}

#[test]
fn glands_are_hotter_than_brain_and_muscle() {
    for seed in 10..13 {
        let case = generate_case(&cfg(seed, 0.5), 0);
        // Frame points: deep in the brain; the front of the tongue (muscle), far from the
        // tonsils and glands so that PSF spill-over does not reach it.
        let brain = pet_mean_near(&case, [0.0, 5.0, 70.0], 8.0);
        let tongue = pet_mean_near(&case, [0.0, -52.0, -40.0], 5.0);
        assert!(brain < 0.8, "{}: brain SUV {brain}", case.id);
        assert!(
            tongue > 0.2 && tongue < 1.5,
            "{}: tongue SUV {tongue}",
            case.id
        );
        for g in &case.meta.glands {
            // Low-uptake patients (after earlier therapy cycles) are part of the cohort:
            // their glands are still clearly above muscle, the small lacrimal glands less so
            // after partial-volume loss.
            let factor = if g.name.starts_with("lacrimal") {
                1.5
            } else {
                2.5
            };
            assert!(
                g.suv_max > factor * tongue.max(brain),
                "{}: {} SUVmax {} vs tongue {tongue}, brain {brain}",
                case.id,
                g.name,
                g.suv_max
            );
        }
    }
}

#[test]
fn left_glands_lie_on_the_patients_left_in_every_pose() {
    let map = LabelMap::default();
    let mut rotations = Vec::new();
    for seed in 20..26 {
        let fov = [Fov::Head, Fov::HeadNeck, Fov::HeadNeckTorso][seed as usize % 3];
        let c = PhantomConfig {
            seed,
            fov,
            cut_top: true,
            scale: 0.3,
            style: Default::default(),
            style_from: None,
        };
        let case = generate_case(&c, seed as usize);
        let m = &case.meta;
        rotations.push(m.head_rotation_deg[2]);
        for (l, r, stem) in map.lateral_pairs() {
            let gl = m.glands.iter().find(|g| g.label == l).unwrap();
            let gr = m.glands.iter().find(|g| g.label == r).unwrap();
            assert!(gl.voxels > 0 && gr.voxels > 0, "{}: {stem} empty", case.id);
            // Left of the head's midline (its shift), not just left of the partner.
            assert!(
                gl.centroid_lps[0] > m.head_shift_mm[0] + 10.0
                    && gr.centroid_lps[0] < m.head_shift_mm[0] - 10.0,
                "{} ({fov:?}): {stem} left x {} right x {} head x {}",
                case.id,
                gl.centroid_lps[0],
                gr.centroid_lps[0],
                m.head_shift_mm[0]
            );
        }
    }
    // The poses really differ (turns of both signs were drawn).
    assert!(rotations.iter().any(|&r| r > 2.0) && rotations.iter().any(|&r| r < -2.0));
}

#[test]
fn cut_top_moves_only_the_top_of_the_scan() {
    let on = |i| {
        generate_case(
            &PhantomConfig {
                cut_top: true,
                ..cfg(3, 0.3)
            },
            i,
        )
    };
    let cut = (0..30)
        .map(on)
        .find(|c| c.meta.top_cut)
        .expect("about 30 % of cases are cut: one of 30 must be");
    let index = cut.meta.index;
    let full = generate_case(&cfg(3, 0.3), index);
    assert!(!full.meta.top_cut);
    let (gc, gf) = (cut.ct.geometry(), full.ct.geometry());
    assert_eq!(gc.origin, gf.origin);
    assert_eq!(gc.spacing, gf.spacing);
    assert_eq!(gc.shape[..2], gf.shape[..2]);
    assert!(
        gc.shape[2] + 5 < gf.shape[2],
        "cut {} vs full {} slices",
        gc.shape[2],
        gf.shape[2]
    );
    // Below the cut, the same patient: identical labels and CT, slice for slice.
    let n = gc.shape[0] * gc.shape[1] * gc.shape[2];
    assert_eq!(cut.labels.as_slice(), &full.labels.as_slice()[..n]);
    assert_eq!(cut.ct.as_slice(), &full.ct.as_slice()[..n]);
    assert_eq!(cut.meta.glands.len(), 6);
}

#[test]
fn fields_of_view_extend_downward() {
    let make = |fov| {
        generate_case(
            &PhantomConfig {
                seed: 4,
                fov,
                cut_top: false,
                scale: 0.3,
                style: Default::default(),
                style_from: None,
            },
            2,
        )
    };
    let cases = [
        make(Fov::Head),
        make(Fov::HeadNeck),
        make(Fov::HeadNeckTorso),
    ];
    let bottom = |c: &glandseg_phantom::PhantomCase| c.ct.geometry().origin[2];
    assert!(bottom(&cases[0]) > bottom(&cases[1]) + 50.0);
    assert!(bottom(&cases[1]) > bottom(&cases[2]) + 100.0);
    // Lung-like HU (-870..-760): litres in the torso, next to nothing above it.
    let lung_ml = |c: &glandseg_phantom::PhantomCase| {
        // Inside the body: anterior of the head rest's foam cushion, when there is a table.
        let g = c.ct.geometry();
        let y_max = if c.meta.scan.table {
            c.meta.scan.table_y_mm - c.meta.scan.cushion_mm - 2.0
        } else {
            f64::INFINITY
        };
        c.ct.data()
            .indexed_iter()
            .filter(|((_, j, _), &v)| {
                (-870.0..-760.0).contains(&v) && g.origin[1] + *j as f64 * g.spacing[1] < y_max
            })
            .count() as f64
            * c.ct.geometry().voxel_volume_ml()
    };
    assert!(
        lung_ml(&cases[2]) > 800.0,
        "torso lungs {}",
        lung_ml(&cases[2])
    );
    // Without lungs, only airways, sinuses and partial-volume edges (sharpened by a
    // sharp reconstruction kernel) fall in the lung's HU range.
    assert!(
        lung_ml(&cases[1]) < 250.0,
        "neck {} {:?}",
        lung_ml(&cases[1]),
        cases[1].meta.scan
    );
    // Even the head-only field of view holds the parotid and submandibular glands whole
    // (nothing cut off at its bottom edge). Lacrimal glands are left out of this check:
    // at scale 0.3 they are ~10 voxels of 75 uL, so their count says nothing about a cut.
    for c in &cases {
        for g in c
            .meta
            .glands
            .iter()
            .filter(|g| !g.name.starts_with("lacrimal"))
        {
            let rel = (g.label_volume_ml - g.target_volume_ml).abs() / g.target_volume_ml;
            assert!(
                rel < 0.1,
                "{:?} {}: {} mL vs target {}",
                c.meta.fov,
                g.name,
                g.label_volume_ml,
                g.target_volume_ml
            );
        }
    }
}

#[test]
fn styles_and_scanner_draws_vary_as_recorded() {
    use glandseg_phantom::Style;
    let mixed = PhantomConfig {
        style: Style::Mixed,
        ..cfg(5, 0.3)
    };
    let cases: Vec<_> = (0..8).map(|i| generate_case(&mixed, i)).collect();
    let styles: Vec<Style> = cases.iter().map(|c| c.meta.style).collect();
    assert!(
        styles.contains(&Style::Classic) && styles.contains(&Style::Lobular),
        "a mixed cohort draws both styles: {styles:?}"
    );
    let map = LabelMap::default();
    for c in &cases {
        // Every style keeps the anatomy's rules: six sided glands.
        for (l, r, stem) in map.lateral_pairs() {
            let gl = c.meta.glands.iter().find(|g| g.label == l).unwrap();
            let gr = c.meta.glands.iter().find(|g| g.label == r).unwrap();
            assert!(gl.voxels > 0 && gr.voxels > 0, "{}: {stem} empty", c.id);
            assert!(
                gl.centroid_lps[0] > gr.centroid_lps[0] + 20.0,
                "{}: {stem}",
                c.id
            );
        }
        // A recorded table is in the image: shell voxels posterior of the head, denser than
        // air and foam. At this test's 3-7 mm voxels a 3-6 mm shell is partial-volume
        // averaged with the air around it (about -100 to +200 HU), hence the low bar.
        if c.meta.scan.table {
            let g = c.ct.geometry();
            let behind = c
                .ct
                .data()
                .indexed_iter()
                .filter(|((_, j, _), &v)| {
                    g.origin[1] + *j as f64 * g.spacing[1] > c.meta.scan.table_y_mm && v > -600.0
                })
                .count();
            assert!(
                behind > 50,
                "{}: table recorded but {behind} dense voxels behind the head",
                c.id
            );
        }
        assert!(["soft", "standard", "sharp"].contains(&c.meta.scan.ct_kernel.as_str()));
        assert!((4.0..=8.0).contains(&c.meta.pet_psf_fwhm_mm));
    }
    assert!(cases.iter().any(|c| c.meta.scan.table));
    // The same index in the classic and the lobular style: another gland shape, the same
    // patient's place in the cohort.
    let a = generate_case(
        &PhantomConfig {
            style: Style::Classic,
            ..cfg(5, 0.3)
        },
        1,
    );
    let b = generate_case(
        &PhantomConfig {
            style: Style::Lobular,
            ..cfg(5, 0.3)
        },
        1,
    );
    assert_ne!(a.labels.as_slice(), b.labels.as_slice());
    assert_eq!(b.meta.style, Style::Lobular);
    // A held-out set of another style after the training cases.
    let split = PhantomConfig {
        style: Style::Classic,
        style_from: Some((3, Style::Lobular)),
        ..cfg(5, 0.3)
    };
    assert_eq!(generate_case(&split, 2).meta.style, Style::Classic);
    assert_eq!(generate_case(&split, 3).meta.style, Style::Lobular);
}
