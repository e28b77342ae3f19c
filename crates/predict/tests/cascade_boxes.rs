//! The cascade's boxes on phantom anatomy: every gland's box covers the reference gland,
//! a gland the coarse stage missed still gets a box from the atlas (built from other
//! cases) or, tighter, from stage 1's probability peak inside the atlas's box, left
//! boxes stay on the patient's left, and a gland stage 1 put on the wrong side is treated
//! as missed.

use glandseg_core::{LabelMap, Volume};
use glandseg_phantom::{generate_case, Fov, PhantomConfig};
use glandseg_plan::cascade::{gland_positions, plan_cascade};
use glandseg_plan::GlandAtlas;
use glandseg_predict::cascade::{plan_boxes, voxel_boxes};

fn cfg() -> PhantomConfig {
    PhantomConfig {
        seed: 3,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale: 0.4,
        style: Default::default(),
        style_from: None,
    }
}

fn covered(labels: &Volume<u8>, value: u8, lo: [usize; 3], hi: [usize; 3]) -> f64 {
    let [ni, nj, _] = labels.shape();
    let (mut inside, mut all) = (0usize, 0usize);
    for (idx, &v) in labels.as_slice().iter().enumerate() {
        if v == value {
            let p = [idx % ni, (idx / ni) % nj, idx / (ni * nj)];
            all += 1;
            if (0..3).all(|a| p[a] >= lo[a] && p[a] < hi[a]) {
                inside += 1;
            }
        }
    }
    inside as f64 / all.max(1) as f64
}

#[test]
fn boxes_cover_the_glands_and_a_missed_gland_is_placed_by_the_atlas() {
    let map = LabelMap::default();
    // Atlas from three other cases.
    let atlas_cases: Vec<_> = (0..3)
        .map(|i| gland_positions(&generate_case(&cfg(), i).labels))
        .collect();
    let values: Vec<u8> = map.foreground().map(|(v, _)| v).collect();
    let atlas = GlandAtlas::build(&values, &atlas_cases);
    assert_eq!(atlas.cases, 3);

    let case = generate_case(&cfg(), 5);
    let truth = case.labels.clone();
    // A coarse plan only for the cascade's settings (margin, class table, tile).
    let coarse: glandseg_plan::Plan = {
        let mut p: glandseg_plan::Plan = serde_json::from_value(serde_json::json!({
            "glandseg_version": "test",
            "channels": ["CT", "PET"],
            "labels": map,
            "lateral_pairs": [],
            "target_spacing": [3.0, 3.0, 3.0],
            "median_shape_at_target": [32, 32, 32],
            "patch_size": [32, 32, 32],
            "batch_size": 2,
            "stages": [],
            "normalization": [],
            "options": {"budget_gb": 1.0, "preset": "tiny"},
            "estimated_memory_gb": 0.1
        }))
        .unwrap();
        p.labels = map.clone();
        p
    };
    let spec = plan_cascade(
        &coarse,
        [1.0; 3],
        Some([16, 16, 16]),
        glandseg_plan::Preset::Tiny,
        false,
        "test".into(),
    );
    let tile = [16.0; 3];

    // Stage 1 perfect: each box holds its whole gland.
    let boxes = plan_boxes(&truth, &map, &spec, &atlas, tile, None);
    assert_eq!(boxes.len(), 6);
    let n = truth.shape();
    for b in &boxes {
        assert_eq!(b.source, "stage1", "{}", b.name);
        assert!(
            (0..3).all(|a| b.lo[a] < b.hi[a] && b.hi[a] <= n[a]),
            "{b:?}"
        );
        assert_eq!(covered(&truth, b.label, b.lo, b.hi), 1.0, "{}", b.name);
        // At least one fine tile (16 mm) along every axis, where the grid allows.
        for a in 0..3 {
            let mm = (b.hi[a] - b.lo[a]) as f64 * truth.geometry().spacing[a];
            assert!(mm >= 16.0 - 1e-9 || b.hi[a] - b.lo[a] == n[a], "{b:?}");
        }
    }

    // Stage 1 missed the left lacrimal gland: the atlas places a box over it.
    let lac_left = map.value("lacrimal_left").unwrap();
    let lac_right = map.value("lacrimal_right").unwrap();
    let missed = truth.map(|&v| if v == lac_left { 0 } else { v });
    let boxes = plan_boxes(&missed, &map, &spec, &atlas, tile, None);
    let b = boxes.iter().find(|b| b.label == lac_left).unwrap();
    assert_eq!(b.source, "atlas");
    let cover = covered(&truth, lac_left, b.lo, b.hi);
    assert!(
        cover >= 0.9,
        "atlas box holds {cover:.2} of the missed gland: {b:?}"
    );
    // Laterality: the left gland's box centre lies on the patient's left (+x in LPS) of
    // the right gland's reference centroid.
    let g = truth.geometry();
    let centre = |lo: [usize; 3], hi: [usize; 3]| {
        g.index_to_world([0, 1, 2].map(|a| (lo[a] + hi[a]) as f64 / 2.0 - 0.5))
    };
    let right = voxel_boxes(&truth)[&lac_right];
    assert!(centre(b.lo, b.hi)[0] > centre(right.0, right.1)[0]);

    // Stage 1's argmax missed both lacrimal glands, but its probabilities peak on them
    // (weakly, 0.1-0.3, and under the wrong side's class for the left gland, as a
    // short-trained coarse network gives): each box is centred on its own side's peak
    // and holds the gland, not its partner.
    let no_lac = truth.map(|&v| {
        if v == lac_left || v == lac_right {
            0
        } else {
            v
        }
    });
    let classes = map.num_classes();
    let nv = truth.geometry().num_voxels();
    let mut probs = vec![0f32; classes * nv];
    for (idx, &v) in truth.as_slice().iter().enumerate() {
        // Left gland scored as "right", right gland as "right": only the sum is sided.
        // The partner's peak is the stronger one: the left box must not move onto it.
        if v == lac_left {
            probs[lac_right as usize * nv + idx] = 0.1;
        } else if v == lac_right {
            probs[lac_right as usize * nv + idx] = 0.3;
        }
    }
    let stage1 = (truth.geometry().clone(), probs);
    let atlas_only = plan_boxes(&no_lac, &map, &spec, &atlas, tile, None);
    let peaked = plan_boxes(&no_lac, &map, &spec, &atlas, tile, Some(&stage1));
    for (value, other) in [(lac_left, lac_right), (lac_right, lac_left)] {
        let a = atlas_only.iter().find(|b| b.label == value).unwrap();
        let b = peaked.iter().find(|b| b.label == value).unwrap();
        assert_eq!(a.source, "atlas");
        assert_eq!(b.source, "stage1-peak", "{b:?}");
        let cover = covered(&truth, value, b.lo, b.hi);
        assert!(
            cover >= 0.9,
            "peak box holds {cover:.2} of the gland: {b:?}"
        );
        assert_eq!(
            covered(&truth, other, b.lo, b.hi),
            0.0,
            "{b:?} holds the partner"
        );
        // The atlas's own box (the fitted layout, sized by its residual in training) holds
        // the gland too, and is much smaller than the region the peak was searched in.
        assert!(covered(&truth, value, a.lo, a.hi) >= 0.9, "{a:?}");
        let found: Vec<(u8, [f64; 3])> = gland_positions(&no_lac)
            .into_iter()
            .map(|(v, c, _)| (v, c))
            .collect();
        let e = atlas.expected_box(value, &found).unwrap();
        let vol = |h: [f64; 3]| h.iter().product::<f64>();
        assert!(
            vol(e.half_mm) * 4.0 < vol(e.search_half_mm),
            "fitted box {e:?} not tighter than the search region"
        );
        let expected = b.expected_lps.expect("the peak");
        let truth_centre = gland_positions(&truth)
            .into_iter()
            .find(|p| p.0 == value)
            .unwrap()
            .1;
        let d: f64 = (0..3)
            .map(|x| (expected[x] - truth_centre[x]).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(d < 15.0, "peak {expected:?} is {d:.1} mm from the gland");
    }
    // A peak under the threshold is noise: the atlas's box stays.
    let faint = (
        stage1.0.clone(),
        stage1.1.iter().map(|p| p * 0.05).collect::<Vec<f32>>(),
    );
    let boxes = plan_boxes(&no_lac, &map, &spec, &atlas, tile, Some(&faint));
    assert!(boxes
        .iter()
        .filter(|b| b.label == lac_left || b.label == lac_right)
        .all(|b| b.source == "atlas"));

    // Stage 1 confused the sides: its left lacrimal label sits on half of the right
    // lacrimal gland (the true left gland unlabelled). That is no find: the left box comes
    // from the left half of the head, from the probability peak or else the atlas, and
    // holds the left gland, not the right one.
    let mut confused = truth.clone();
    let mut flip = false;
    for v in confused.as_slice_mut() {
        if *v == lac_left {
            *v = 0;
        } else if *v == lac_right {
            if flip {
                *v = lac_left;
            }
            flip = !flip;
        }
    }
    for (probs, source) in [(None, "atlas"), (Some(&stage1), "stage1-peak")] {
        let boxes = plan_boxes(&confused, &map, &spec, &atlas, tile, probs);
        let b = boxes.iter().find(|b| b.label == lac_left).unwrap();
        assert_eq!(b.source, source, "{b:?}");
        let cover = covered(&truth, lac_left, b.lo, b.hi);
        assert!(
            cover >= 0.9,
            "box holds {cover:.2} of the left gland: {b:?}"
        );
        assert_eq!(covered(&truth, lac_right, b.lo, b.hi), 0.0, "{b:?}");
        let r = boxes.iter().find(|b| b.label == lac_right).unwrap();
        assert_eq!(r.source, "stage1");
    }

    // Stage 1 found only the upper half of the left parotid (a fatty, low-uptake gland
    // seen in part): the box still holds the gland, grown to the atlas's extent.
    let par_left = map.value("parotid_left").unwrap();
    let ks: Vec<usize> = truth
        .data()
        .indexed_iter()
        .filter(|(_, &v)| v == par_left)
        .map(|((k, _, _), _)| k)
        .collect();
    let mid = (ks.iter().min().unwrap() + ks.iter().max().unwrap()) / 2;
    let part = {
        let mut p = truth.clone();
        for ((k, j, i), v) in truth.data().indexed_iter() {
            if *v == par_left && k < mid {
                p.set(i, j, k, 0);
            }
        }
        p
    };
    let boxes = plan_boxes(&part, &map, &spec, &atlas, tile, None);
    let b = boxes.iter().find(|b| b.label == par_left).unwrap();
    assert_eq!(b.source, "stage1");
    let cover = covered(&truth, par_left, b.lo, b.hi);
    assert!(
        cover >= 0.95,
        "box of a half-found parotid holds {cover:.2} of it: {b:?}"
    );

    // Nothing found at all: no box can be placed, and none is invented.
    let empty = truth.map(|_| 0u8);
    let boxes = plan_boxes(&empty, &map, &spec, &atlas, tile, None);
    assert!(boxes.iter().all(|b| b.source == "none"));
}
