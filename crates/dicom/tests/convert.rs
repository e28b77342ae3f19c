//! `convert_studies` end to end on synthetic studies written with `write_case_dicom`: one
//! study delivering its contours as a SEG (default label names and an unmapped segment), one as an RTSTRUCT with
//! clinical names and an extra unmapped ROI, one without PET, and a stray text file.

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_dicom::{
    convert_studies, dice, write_case_dicom, NameMapping, PatientMeta, SegmentationKind,
};
use glandseg_ops::resample::{resample, Interpolation};
use std::path::Path;
use std::sync::Mutex;

/// 64 x 64 x 30 voxels of 2 x 2 x 3 mm centred on the origin.
fn ct_grid() -> Geometry {
    Geometry::new([64, 64, 30], [2.0, 2.0, 3.0], [-63.0, -63.0, -43.5])
}

/// The PET on a coarser grid over the same field of view, as scanners reconstruct it.
fn pet_grid() -> Geometry {
    Geometry::new([32, 32, 15], [4.0, 4.0, 6.0], [-62.0, -62.0, -42.0])
}

/// (value, centre LPS mm, semi-axes mm); value 7 is a structure outside the label map.
const STRUCTURES: [(u8, [f64; 3], [f64; 3]); 7] = [
    (1, [40.0, 5.0, 5.0], [11.0, 13.0, 18.0]),
    (2, [-40.0, 5.0, 5.0], [11.0, 13.0, 18.0]),
    (3, [25.0, -20.0, -25.0], [8.0, 7.0, 8.0]),
    (4, [-25.0, -20.0, -25.0], [8.0, 7.0, 8.0]),
    (5, [25.0, -45.0, 30.0], [8.0, 5.0, 5.0]),
    (6, [-25.0, -45.0, 30.0], [8.0, 5.0, 5.0]),
    (7, [0.0, 30.0, 0.0], [5.0, 5.0, 30.0]),
];

fn labels(g: &Geometry, with_extra: bool) -> Volume<u8> {
    let mut v = Volume::filled(g.clone(), 0u8);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                for (value, c, r) in STRUCTURES {
                    let d: f64 = (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum();
                    if d <= 1.0 && (value < 7 || with_extra) {
                        v.set(i, j, k, value);
                    }
                }
            }
        }
    }
    v
}

fn ct(labels: &Volume<u8>) -> Volume<f32> {
    let g = labels.geometry().clone();
    let mut v = Volume::filled(g.clone(), -1000.0f32);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let hu = match *labels.get(i, j, k) {
                    1 | 2 => -60.0,
                    3 | 4 => 50.0,
                    5 | 6 => 35.0,
                    7 => 40.0,
                    _ => 20.0 + ((i * 7 + j * 3 + k) % 11) as f32,
                };
                v.set(i, j, k, hu);
            }
        }
    }
    v
}

/// A smooth SUV field (0.3 to about 9), so that trilinear resampling is well defined.
fn pet(g: &Geometry) -> Volume<f32> {
    let mut v = Volume::filled(g.clone(), 0f32);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                let mut suv = 0.3;
                for (_, c, _) in &STRUCTURES[..6] {
                    let d2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                    suv += 8.0 * (-d2 / (2.0 * 12.0f64.powi(2))).exp();
                }
                v.set(i, j, k, suv as f32);
            }
        }
    }
    v
}

/// Clinical names for the RTSTRUCT study (7 is not a gland).
fn clinic_map() -> LabelMap {
    LabelMap::new(vec![
        (0, "background".into()),
        (1, "Parotid_L".into()),
        (2, "PAROTID RIGHT".into()),
        (3, "Glnd_Submand_L".into()),
        (4, "Right submandibular".into()),
        (5, "Glnd_Lacrimal_L".into()),
        (6, "lacrimal gland right".into()),
        (7, "Spinal_Cord".into()),
    ])
    .unwrap()
}

fn meta(id: &str) -> PatientMeta {
    PatientMeta {
        patient_id: id.into(),
        scan_time_unix: Some(1_750_000_000.0),
        ..Default::default()
    }
}

fn case_files(out: &Path, id: &str) -> [std::path::PathBuf; 3] {
    [
        out.join("imagesTr").join(format!("{id}_0000.nii.gz")),
        out.join("imagesTr").join(format!("{id}_0001.nii.gz")),
        out.join("labelsTr").join(format!("{id}.nii.gz")),
    ]
}

#[test]
fn studies_to_nnunet_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("Dataset501_Glands");
    let g = ct_grid();
    let pet_orig = pet(&pet_grid());

    // Study A: SEG with the label map's own names plus an unmapped segment; the RTSTRUCT
    // removed.
    let mut entries = LabelMap::default().entries().to_vec();
    entries.push((7, "Spinal_Cord".into()));
    let map_a = LabelMap::new(entries).unwrap();
    let lab_a = labels(&g, true);
    let ct_a = ct(&lab_a);
    let a = write_case_dicom(
        &input.join("a"),
        &ct_a,
        &pet_orig,
        &lab_a,
        &map_a,
        &meta("PAT-001"),
    )
    .unwrap();
    std::fs::remove_file(&a.rtstruct.path).unwrap();

    // Study B: RTSTRUCT with clinical names and an unmapped ROI; the SEG removed.
    let lab_b = labels(&g, true);
    let ct_b = ct(&lab_b);
    let b = write_case_dicom(
        &input.join("b"),
        &ct_b,
        &pet_orig,
        &lab_b,
        &clinic_map(),
        &meta("PAT 002/b"),
    )
    .unwrap();
    std::fs::remove_file(&b.seg.path).unwrap();

    // Study C: no PET.
    let c = write_case_dicom(
        &input.join("c"),
        &ct_a,
        &pet_orig,
        &lab_a,
        &map_a,
        &meta("PAT-003"),
    )
    .unwrap();
    std::fs::remove_dir_all(&c.pet_dir).unwrap();
    std::fs::remove_file(&c.rtstruct.path).unwrap();

    std::fs::write(input.join("notes.txt"), "not DICOM").unwrap();

    let messages = Mutex::new(Vec::<String>::new());
    let log = |m: &str| messages.lock().unwrap().push(m.to_string());
    let summary = convert_studies(&input, &NameMapping::default(), &out, &log).unwrap();
    assert!(!messages.lock().unwrap().is_empty());

    // Summary: two cases, study C skipped for its PET, the stray file.
    assert_eq!(summary.cases.len(), 2, "{summary:#?}");
    let by_patient = |p: &str| summary.cases.iter().find(|c| c.patient_id == p).unwrap();
    let (ca, cb) = (by_patient("PAT-001"), by_patient("PAT 002/b"));
    assert!(ca.case_id.starts_with("PAT-001_"), "{}", ca.case_id);
    assert!(cb.case_id.starts_with("PAT_002_b_"), "{}", cb.case_id);
    for c in [ca, cb] {
        assert!(c
            .case_id
            .chars()
            .all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '-'));
    }
    assert_eq!(ca.segmentation_kind, SegmentationKind::Seg);
    assert_eq!(ca.segmentation, a.seg.path);
    assert_eq!(ca.unmapped, ["Spinal_Cord"]);
    assert_eq!(cb.segmentation_kind, SegmentationKind::RtStruct);
    assert_eq!(cb.segmentation, b.rtstruct.path);
    assert_eq!(cb.unmapped, ["Spinal_Cord"]);
    assert_eq!(summary.overlap_voxels(), 0);
    assert_eq!(summary.skipped.len(), 1, "{:#?}", summary.skipped);
    assert_eq!(summary.skipped[0].patient_id, "PAT-003");
    assert!(
        summary.skipped[0].reason.contains("no PET"),
        "{}",
        summary.skipped[0].reason
    );
    assert_eq!(summary.ignored_files.len(), 1);
    assert!(summary.ignored_files[0].0.ends_with("notes.txt"));
    // Study C's SEG was left over.
    assert_eq!(
        summary.unused_segmentations,
        std::slice::from_ref(&c.seg.path)
    );
    for c in [ca, cb] {
        let factor = meta("x").suvbw_factor();
        assert!((c.suvbw_factor / factor - 1.0).abs() < 1e-9);
    }

    // dataset.json and the file list.
    let ds: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(
        ds,
        serde_json::json!({
            "channel_names": {"0": "CT", "1": "PET"},
            "labels": {"background": 0, "parotid_left": 1, "parotid_right": 2,
                       "submandibular_left": 3, "submandibular_right": 4,
                       "lacrimal_left": 5, "lacrimal_right": 6},
            "numTraining": 2,
            "file_ending": ".nii.gz",
        })
    );
    let mut names: Vec<String> = ["imagesTr", "labelsTr"]
        .iter()
        .flat_map(|d| std::fs::read_dir(out.join(d)).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = [ca, cb]
        .iter()
        .flat_map(|c| {
            case_files(&out, &c.case_id).map(|p| p.file_name().unwrap().to_string_lossy().into())
        })
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(out.join("conversion.json").is_file());

    // Volumes: CT grid everywhere, CT exact, PET = the original resampled, labels.
    let pet_expected = resample(&pet_orig, &g, Interpolation::Linear, 0.0);
    for (c, ct_orig, lab_orig) in [(ca, &ct_a, &lab_a), (cb, &ct_b, &lab_b)] {
        let [ct_p, pet_p, lab_p] = case_files(&out, &c.case_id);
        let ct_back = glandseg_nifti::read_volume(&ct_p).unwrap();
        let pet_back = glandseg_nifti::read_volume(&pet_p).unwrap();
        let lab_back = glandseg_nifti::read_labels(&lab_p).unwrap();
        for v in [ct_back.geometry(), pet_back.geometry(), lab_back.geometry()] {
            assert!(v.same_grid(&g, 1e-3), "{v:?} vs {g:?}");
        }
        assert_eq!(ct_back.as_slice(), ct_orig.as_slice());
        let max_err = pet_back
            .as_slice()
            .iter()
            .zip(pet_expected.as_slice())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        // Bq/mL stored as int16 with a per-slice slope: about 1e-4 of the slice maximum.
        assert!(max_err < 2e-3, "PET relative error {max_err}");
        let inside = pet_back.as_slice().iter().filter(|v| **v > 0.0).count();
        assert!(inside > g.num_voxels() / 2);

        if c.segmentation_kind == SegmentationKind::Seg {
            let want = lab_orig.map(|x| if *x == 7 { 0 } else { *x });
            assert_eq!(lab_back.as_slice(), want.as_slice());
        } else {
            for v in 1..=6u8 {
                let want = lab_orig.map(|x| (*x == v) as u8);
                let got = lab_back.map(|x| (*x == v) as u8);
                let d = dice(&want, &got);
                assert!(d >= 0.97, "label {v}: Dice {d}");
            }
            assert!(!lab_back.as_slice().contains(&7));
        }
        for (name, n) in &c.voxels {
            assert!(*n > 0, "{name} empty in {}", c.case_id);
        }
    }

    // Converting again into the same folder is refused (stale cases would mix in).
    let again = convert_studies(&input, &NameMapping::default(), &out, &|_| {}).unwrap_err();
    assert!(again.to_string().contains("imagesTr"), "{again}");

    // A folder with nothing convertible names the input and every reason.
    let only_c = tmp.path().join("only_c");
    std::fs::rename(input.join("c"), &only_c).unwrap();
    let none = convert_studies(
        &only_c,
        &NameMapping::default(),
        &tmp.path().join("o2"),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(none.contains("only_c") && none.contains("no PET"), "{none}");
}

#[test]
fn name_mapping_spellings() {
    let m = NameMapping::default();
    for (name, value) in [
        ("Parotid_L", Some(1)),
        ("PAROTID LEFT", Some(1)),
        ("left parotid", Some(1)),
        ("Lt Parotid Gland", Some(1)),
        ("parotid_left", Some(1)),
        ("Parotid_R", Some(2)),
        ("Right Parotid", Some(2)),
        ("Glnd_Submand_L", Some(3)),
        ("submandibular gland right", Some(4)),
        ("Glnd_Lacrimal_L", Some(5)),
        ("Glnd_Lacrimal_R", Some(6)),
        ("lacrimal_right", Some(6)),
        ("Spinal_Cord", None),
        ("Parotid", None),
        ("Parotids", None),
        ("background", None),
    ] {
        assert_eq!(m.value(name), value, "{name}");
    }
    assert_eq!(m.target("GLND_LACRIMAL_R"), Some("lacrimal_right"));
}

#[test]
fn name_mapping_files() {
    let tmp = tempfile::tempdir().unwrap();
    // A user's own map: the built-in spellings apply to the glands it has.
    let good = tmp.path().join("mapping.json");
    std::fs::write(
        &good,
        r#"{"labels": {"background": 0, "parotid_left": 1, "parotid_right": 2, "tumour": 3},
            "names": {"GTV_Primary": "tumour", "Parotis links": "parotid_left"}}"#,
    )
    .unwrap();
    let m = NameMapping::from_json_file(&good).unwrap();
    assert_eq!(m.value("gtv primary"), Some(3));
    assert_eq!(m.value("PAROTIS LINKS"), Some(1));
    assert_eq!(m.value("Parotid_R"), Some(2));
    assert_eq!(m.value("Glnd_Submand_L"), None);
    assert_eq!(m.label_map().num_classes(), 4);

    // Only names: the default map.
    let names_only = tmp.path().join("names.json");
    std::fs::write(&names_only, r#"{"names": {"PG_li": "parotid_left"}}"#).unwrap();
    let m = NameMapping::from_json_file(&names_only).unwrap();
    assert_eq!(m.value("pg li"), Some(1));
    assert_eq!(m.value("Glnd_Lacrimal_R"), Some(6));

    // An unknown target: the error names the file and the name.
    let bad = tmp.path().join("bad_mapping.json");
    std::fs::write(
        &bad,
        r#"{"labels": {"background": 0, "parotid_left": 1},
            "names": {"Parotid_M": "parotid_middle"}}"#,
    )
    .unwrap();
    let e = NameMapping::from_json_file(&bad).unwrap_err().to_string();
    assert!(
        e.contains("bad_mapping.json") && e.contains("parotid_middle"),
        "{e}"
    );

    // Broken JSON and a missing file name the file too.
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{").unwrap();
    let e = NameMapping::from_json_file(&broken)
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.json") && e.contains("JSON"), "{e}");
    let e = NameMapping::from_json_file(&tmp.path().join("missing.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.json"), "{e}");
}

/// Makes every frame of segment `into` also cover the pixels of segment `from` on the same
/// slice (BINARY frames of 64 x 64 are whole bytes, so frames can be OR-ed bytewise).
fn overlay_segment(path: &Path, from: &str, into: &str) {
    let seg = glandseg_dicom::read_seg(path).unwrap();
    let number = |l: &str| seg.segments.iter().find(|s| s.label == l).unwrap().number;
    let (nf, ni) = (number(from), number(into));
    let mut obj = dicom_object::open_file(path).unwrap();
    let el = obj
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .clone();
    let mut bytes = el.to_bytes().unwrap().to_vec();
    let [c, r, _] = seg.labels.geometry().shape;
    let pb = c * r / 8;
    for (fi, a) in seg.frames.iter().enumerate() {
        if a.segment != ni {
            continue;
        }
        if let Some(fj) = seg
            .frames
            .iter()
            .position(|b| b.segment == nf && b.k == a.k)
        {
            for x in 0..pb {
                bytes[fi * pb + x] |= bytes[fj * pb + x];
            }
        }
    }
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::PIXEL_DATA,
        el.vr(),
        dicom_core::PrimitiveValue::from(bytes),
    ));
    obj.write_to_file(path).unwrap();
}

/// Overlapping SEG segments: between two mapped glands the higher segment wins and the
/// voxels are counted; an unmapped segment (a spinal cord here) never erases a gland.
#[test]
fn seg_overlaps() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    let g = ct_grid();
    let mut entries = LabelMap::default().entries().to_vec();
    entries.push((7, "Spinal_Cord".into()));
    let map = LabelMap::new(entries).unwrap();
    let lab = labels(&g, true);
    let case = write_case_dicom(
        &input,
        &ct(&lab),
        &pet(&pet_grid()),
        &lab,
        &map,
        &meta("OVERLAP"),
    )
    .unwrap();
    std::fs::remove_file(&case.rtstruct.path).unwrap();
    overlay_segment(&case.seg.path, "parotid_left", "parotid_right");
    overlay_segment(&case.seg.path, "submandibular_left", "Spinal_Cord");

    let summary = convert_studies(&input, &NameMapping::default(), &out, &|_| {}).unwrap();
    assert_eq!(summary.cases.len(), 1);
    let c = &summary.cases[0];
    assert_eq!(c.unmapped, ["Spinal_Cord"]);

    // Expected: parotid_left becomes parotid_right on the slices where parotid_right has
    // a frame; everything else as drawn, the spinal cord dropped.
    let [_, _, nk] = g.shape;
    let has_right: Vec<bool> = (0..nk)
        .map(|k| {
            let plane = g.shape[0] * g.shape[1];
            lab.as_slice()[k * plane..(k + 1) * plane].contains(&2)
        })
        .collect();
    let mut want = lab.map(|x| if *x == 7 { 0 } else { *x });
    let mut moved = 0;
    for k in 0..nk {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                if *want.get(i, j, k) == 1 && has_right[k] {
                    want.set(i, j, k, 2);
                    moved += 1;
                }
            }
        }
    }
    assert!(moved > 0);
    assert_eq!(c.overlap_voxels, moved);
    let back =
        glandseg_nifti::read_labels(&out.join("labelsTr").join(format!("{}.nii.gz", c.case_id)))
            .unwrap();
    assert_eq!(back.as_slice(), want.as_slice());
    // The submandibular gland under the spinal-cord frames is intact.
    let sub = |v: &Volume<u8>| v.as_slice().iter().filter(|x| **x == 3).count();
    assert_eq!(sub(&back), sub(&lab));
}
