//! DICOM export: SEG and RTSTRUCT round trips on a synthetic gland label map, the
//! third-party SEG/RTSTRUCT fixtures against their pydicom sidecars, a whole case as
//! CT + PET + SEG + RTSTRUCT read back through the series loader, and errors on bad files.

mod common;

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_dicom::suv::suv_factors_of_file;
use glandseg_dicom::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    glandseg_core::testdata::dir(env!("CARGO_MANIFEST_DIR"), "dicom/seg")
}

fn json(p: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn rot_z(deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}

#[test]
fn seg_round_trip_is_bit_exact_with_codes() {
    let dir = tempfile::tempdir().unwrap();
    let g = common::grid();
    let lab = common::labels(&g);
    let map = LabelMap::default();
    let out = dir.path().join("seg.dcm");
    let opts = SegOptions {
        model_name: "test-model".into(),
        ..Default::default()
    };
    let w = write_seg(&out, &lab, &map, None, &opts).unwrap();
    let seg = read_seg(&out).unwrap();
    // Only frames with foreground: one per (label, slice holding it).
    let plane = g.shape[0] * g.shape[1];
    let expected_frames: usize = map
        .foreground()
        .map(|(v, _)| {
            (0..g.shape[2])
                .filter(|k| lab.as_slice()[k * plane..(k + 1) * plane].contains(&v))
                .count()
        })
        .sum();
    assert_eq!(w.items, expected_frames);
    assert_eq!(seg.frames.len(), expected_frames);
    assert!(seg.warnings.is_empty(), "{:?}", seg.warnings);
    let back = seg.labels_on(&g, &map).unwrap();
    assert_eq!(
        back.as_slice(),
        lab.as_slice(),
        "SEG round trip is not bit-exact"
    );
    // Codes.
    let names: Vec<&str> = seg.segments.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(names, map.foreground().map(|f| f.1).collect::<Vec<_>>());
    let p = &seg.segments[0];
    assert_eq!(p.algorithm_type, "AUTOMATIC");
    assert_eq!(p.category.as_ref().unwrap().value, "123037004");
    assert_eq!(p.property_type.as_ref().unwrap().value, "45289007");
    assert_eq!(p.modifier.as_ref().unwrap().value, "7771000");
    assert_eq!(seg.segments[1].modifier.as_ref().unwrap().value, "24028007");
    assert_eq!(
        seg.segments[2].property_type.as_ref().unwrap().value,
        "54019009"
    );
    assert_eq!(
        seg.segments[4].property_type.as_ref().unwrap().value,
        "13561001"
    );
    assert_eq!(
        seg.frame_of_reference_uid.as_deref(),
        Some(w.frame_of_reference_uid.as_str())
    );
}

#[test]
fn seg_round_trip_oblique_odd_sizes_and_unknown_labels() {
    // 13 x 7 pixels: frames are not byte-aligned, which tests the contiguous bit packing.
    let g =
        Geometry::new([13, 7, 5], [0.7, 1.3, 2.5], [10.0, -20.0, 33.0]).with_direction(rot_z(30.0));
    let mut lab = Volume::filled(g.clone(), 0u8);
    for (n, v) in lab.as_slice_mut().iter_mut().enumerate() {
        *v = [0u8, 0, 1, 0, 7, 2, 0, 0, 7][(n * 7 + n / 5) % 9];
    }
    for j in 0..7 {
        for i in 0..13 {
            lab.set(i, j, 3, 0); // an empty slice in the middle
        }
    }
    let map = LabelMap::new(vec![
        (0, "background".into()),
        (1, "tumour".into()),
        (2, "parotid_left".into()),
        (7, "brainstem".into()),
    ])
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.dcm");
    write_seg(&out, &lab, &map, None, &SegOptions::default()).unwrap();
    let seg = read_seg(&out).unwrap();
    assert_eq!(seg.labels_on(&g, &map).unwrap().as_slice(), lab.as_slice());
    // A map that lacks a segment's name: an error naming the file and the segment.
    let e = seg
        .labels_on(&g, &LabelMap::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("s.dcm") && e.contains("tumour"), "{e}");
    let t = &seg.segments[0];
    assert_eq!(t.label, "tumour");
    assert_eq!(t.category.as_ref().unwrap().meaning, "Tissue");
    assert!(t.modifier.is_none());
}

#[test]
fn rtstruct_round_trip_dice_per_gland() {
    let dir = tempfile::tempdir().unwrap();
    let g = common::grid();
    let lab = common::labels(&g);
    let map = LabelMap::default();
    let out = dir.path().join("rt.dcm");
    let w = write_rtstruct(&out, &lab, &map, None, &RtStructOptions::default()).unwrap();
    assert!(w.items > 0);
    let rt = read_rtstruct_contours(&out).unwrap();
    assert_eq!(
        rt.frame_of_reference_uid.as_deref(),
        Some(w.frame_of_reference_uid.as_str())
    );
    assert!(rt
        .rois
        .iter()
        .all(|r| r.interpreted_type.as_deref() == Some("ORGAN") && r.colour.is_some()));
    let masks = read_rtstruct(&out, &g).unwrap();
    assert_eq!(masks.len(), 6);
    for (value, name) in map.foreground() {
        let m = masks.iter().find(|m| m.name == name).unwrap();
        assert_eq!(m.contours_off_grid, 0);
        let truth = lab.map(|v| (*v == value) as u8);
        let d = dice(&m.mask, &truth);
        assert!(d >= 0.97, "{name}: Dice {d}");
        // The contours trace voxel outlines, so the fill is exact.
        assert_eq!(d, 1.0, "{name}");
    }
}

#[test]
fn third_party_seg_matches_sidecars() {
    let td = testdata();
    for file in ["liver.dcm", "liver_1frame.dcm"] {
        let sc = json(td.join(format!("dicom/seg/{file}.json")));
        let seg = read_seg(&td.join("dicom/seg").join(file)).unwrap();
        assert_eq!(seg.segments.len(), sc["segments"].as_array().unwrap().len());
        for (s, e) in seg.segments.iter().zip(sc["segments"].as_array().unwrap()) {
            assert_eq!(s.number as u64, e["segment_number"].as_u64().unwrap());
            assert_eq!(s.label, e["segment_label"].as_str().unwrap());
            assert_eq!(
                s.algorithm_type,
                e["segment_algorithm_type"].as_str().unwrap()
            );
            assert_eq!(
                s.category.as_ref().unwrap().meaning,
                e["category"].as_str().unwrap()
            );
            assert_eq!(
                s.property_type.as_ref().unwrap().meaning,
                e["type"].as_str().unwrap()
            );
        }
        assert_eq!(
            seg.frames.len() as u64,
            sc["number_of_frames_decoded"].as_u64().unwrap(),
            "{file}"
        );
        for (f, e) in seg.frames.iter().zip(sc["frames"].as_array().unwrap()) {
            assert_eq!(
                f.foreground as u64,
                e["foreground_pixels"].as_u64().unwrap(),
                "{file}"
            );
            assert_eq!(
                f.segment as u64,
                e["referenced_segment_number"].as_u64().unwrap()
            );
            assert_eq!(
                f.source_sop_instance_uid.as_deref(),
                e["referenced_sop_instance_uid"].as_str()
            );
            for a in 0..3 {
                assert!(
                    (f.position[a] - e["image_position_patient"][a].as_f64().unwrap()).abs() < 1e-6
                );
            }
        }
        let total: usize = seg.labels.as_slice().iter().filter(|v| **v != 0).count();
        assert_eq!(
            total as u64,
            sc["total_foreground_pixels"].as_u64().unwrap(),
            "{file}"
        );
        // Samples are [frame, row, column]; frame f is slice k = f here (1 mm apart, 1 mm step).
        for s in sc["samples"].as_array().unwrap() {
            let ix: Vec<usize> = s["index"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let k = seg.frames[ix[0]].k;
            assert_eq!(
                *seg.labels.get(ix[2], ix[1], k) as u64,
                s["value"].as_u64().unwrap(),
                "{file} {s}"
            );
        }
        assert_eq!(
            seg.frame_of_reference_uid.as_deref(),
            sc["frame_of_reference_uid"].as_str()
        );
        if file == "liver_1frame.dcm" {
            // NumberOfFrames missing, 3 functional-group items for 1 frame: both reported.
            assert_eq!(seg.warnings.len(), 2, "{:?}", seg.warnings);
        }
    }
}

#[test]
fn third_party_rtstruct_matches_sidecar() {
    let td = testdata();
    let sc = json(td.join("dicom/seg/rtss.dcm.json"));
    let path = td.join("dicom/seg/rtss.dcm");
    let rt = read_rtstruct_contours(&path).unwrap();
    assert_eq!(
        rt.structure_set_label.as_deref(),
        sc["structure_set_label"].as_str()
    );
    assert_eq!(rt.rois.len() as u64, sc["roi_count"].as_u64().unwrap());
    for (r, e) in rt.rois.iter().zip(sc["rois"].as_array().unwrap()) {
        assert_eq!(r.number as u64, e["roi_number"].as_u64().unwrap());
        assert_eq!(r.name, e["roi_name"].as_str().unwrap());
        assert_eq!(
            r.interpreted_type.as_deref(),
            e["rt_roi_interpreted_type"].as_str()
        );
        assert_eq!(
            r.contours.len() as u64,
            e["contour_count"].as_u64().unwrap(),
            "{}",
            r.name
        );
        let pts: usize = r.contours.iter().map(|c| c.points.len()).sum();
        assert_eq!(
            pts as u64,
            e["points_total"].as_u64().unwrap(),
            "{}",
            r.name
        );
        let col: Vec<u64> = e["roi_display_color"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(r.colour.map(|c| c.map(|x| x as u64).to_vec()), Some(col));
    }
    // Rasterise on the plane of ct.0.dcm (the only CT slice we have): BODY has 4 contours
    // there and fills a large part of the 512 x 512 slice.
    let ct = scan_folder(&td.join("dicom/seg/ct.0.dcm")).unwrap();
    let ct = load_series(&ct.series[0]).unwrap();
    let grid = ct.volume.geometry().clone();
    let masks = read_rtstruct(&path, &grid).unwrap();
    let body = masks.iter().find(|m| m.name == "BODY").unwrap();
    let n = body.mask.as_slice().iter().filter(|v| **v != 0).count();
    assert!(n > 20_000 && n < 262_144, "BODY fills {n} pixels");
    assert_eq!(body.contours_off_grid, 141 - 4);
    // Inside the body the CT is tissue, not air.
    let mean_inside: f64 = ct
        .volume
        .as_slice()
        .iter()
        .zip(body.mask.as_slice())
        .filter(|(_, m)| **m != 0)
        .map(|(v, _)| *v as f64)
        .sum::<f64>()
        / n as f64;
    assert!(mean_inside > -300.0, "mean HU inside BODY {mean_inside}");
}

fn assert_err_names(r: Result<impl std::fmt::Debug, DicomError>, path: &Path, what: &str) {
    let e = r.expect_err("bad input must be an error").to_string();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains(what), "{e} (expected to mention {what})");
}

#[test]
fn bad_files_are_errors_naming_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let g = Geometry::new([9, 8, 4], [1.0, 1.0, 2.0], [0.0; 3]);
    let mut lab = Volume::filled(g.clone(), 0u8);
    lab.set(3, 3, 1, 1);
    lab.set(4, 3, 2, 2);
    let map = LabelMap::default();
    let seg = dir.path().join("seg.dcm");
    let rt = dir.path().join("rt.dcm");
    write_seg(&seg, &lab, &map, None, &SegOptions::default()).unwrap();
    write_rtstruct(&rt, &lab, &map, None, &RtStructOptions::default()).unwrap();

    // Truncated: pixel data cut short.
    let bytes = std::fs::read(&seg).unwrap();
    let cut = dir.path().join("cut.dcm");
    std::fs::write(&cut, &bytes[..bytes.len() - 6]).unwrap();
    // The error names the file and the element where the data ran out (PixelData).
    assert_err_names(read_seg(&cut), &cut, "(7FE0,0010)");
    let half = dir.path().join("half.dcm");
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    // Cut elsewhere: dicom-rs names the element, or the byte position of an item header.
    assert_err_names(read_seg(&half), &half, "truncated: it ends at byte");
    let rt_bytes = std::fs::read(&rt).unwrap();
    let rt_half = dir.path().join("rt_half.dcm");
    std::fs::write(&rt_half, &rt_bytes[..rt_bytes.len() * 2 / 3]).unwrap();
    assert_err_names(
        read_rtstruct(&rt_half, &g),
        &rt_half,
        "truncated: it ends at byte",
    );
    // Garbage.
    let junk = dir.path().join("junk.dcm");
    std::fs::write(
        &junk,
        (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_err_names(read_seg(&junk), &junk, "DICOM");
    assert_err_names(read_rtstruct(&junk, &g), &junk, "DICOM");
    // Missing file.
    let none = dir.path().join("none.dcm");
    assert_err_names(read_seg(&none), &none, "no such file");
    // Wrong kind of object: each reader names SOPClassUID.
    assert_err_names(read_seg(&rt), &rt, "SOPClassUID");
    assert_err_names(read_rtstruct(&seg, &g), &seg, "SOPClassUID");
    // Frame count beyond the pixel data: a SEG whose NumberOfFrames lies.
    let mut obj = dicom_object::open_file(&seg).unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::NUMBER_OF_FRAMES,
        dicom_core::VR::IS,
        dicom_core::PrimitiveValue::from("9"),
    ));
    let lying = dir.path().join("lying.dcm");
    obj.write_to_file(&lying).unwrap();
    assert_err_names(read_seg(&lying), &lying, "NumberOfFrames");
    // Writer: labels not in the map, source of the wrong length.
    lab.set(0, 0, 0, 9);
    assert_err_names(
        write_seg(&seg, &lab, &map, None, &SegOptions::default()),
        &seg,
        "value 9",
    );
}

#[test]
fn case_as_dicom_reads_back() {
    // Small grid so the test stays fast: oblique-free, odd sizes, non-zero origin.
    let g = Geometry::new([37, 29, 11], [1.2, 0.9, 2.5], [-20.0, -13.5, 40.25]);
    let mut lab = Volume::filled(g.clone(), 0u8);
    let mut ct = Volume::filled(g.clone(), 0.0f32);
    let mut pet = Volume::filled(g.clone(), 0.0f32);
    for k in 0..11 {
        for j in 0..29 {
            for i in 0..37 {
                let v = if (i as i64 - 10).pow(2) + (j as i64 - 12).pow(2) < 30
                    && (2..8).contains(&k)
                {
                    1
                } else if (i as i64 - 27).pow(2) + (j as i64 - 15).pow(2) < 12 && k > 3 {
                    6
                } else {
                    0
                };
                lab.set(i, j, k, v);
                ct.set(
                    i,
                    j,
                    k,
                    ((i * 37 + j * 11 + k * 101) % 2500) as f32 - 1024.0,
                );
                pet.set(
                    i,
                    j,
                    k,
                    0.05 + ((i * 13 + j * 7 + k * 3) % 97) as f32 * 0.13,
                );
            }
        }
    }
    let map = LabelMap::default();
    let meta = PatientMeta {
        weight_kg: 81.5,
        injected_dose_bq: 187e6,
        half_life_s: 4062.6,
        injection_to_scan_s: 3300.0,
        patient_sex: "F".into(),
        patient_height_m: Some(1.68),
        radiopharmaceutical: "Ga-68 PSMA-11".into(),
        radionuclide: "68Ga".into(),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let case = write_case_dicom(dir.path(), &ct, &pet, &lab, &map, &meta).unwrap();

    let scan = scan_folder(&case.ct_dir).unwrap();
    assert_eq!(scan.series.len(), 1);
    assert!(scan.skipped.is_empty(), "{:?}", scan.skipped);
    let ct_back = load_series(&scan.series[0]).unwrap();
    assert!(
        ct_back.volume.geometry().same_grid(&g, 1e-4),
        "{:?}",
        ct_back.volume.geometry()
    );
    assert_eq!(ct_back.volume.as_slice(), ct.as_slice(), "CT HU not exact");
    assert_eq!(ct_back.info.modality, "CT");

    let scan = scan_folder(&case.pet_dir).unwrap();
    let pet_back = load_series(&scan.series[0]).unwrap();
    assert!(pet_back.volume.geometry().same_grid(&g, 1e-4));
    assert_eq!(
        pet_back.info.frame_of_reference_uid,
        ct_back.info.frame_of_reference_uid
    );
    assert_eq!(
        pet_back.info.study_instance_uid,
        ct_back.info.study_instance_uid
    );
    let f = suv_factors_of_file(&pet_back.sorted[0].path).unwrap();
    assert!((f.suvbw / meta.suvbw_factor() - 1.0).abs() < 1e-9, "{f:?}");
    // Sex and height reach the header: SUVlbm is computable.
    assert!(f.suvlbm_james.is_some() && f.suvbsa.is_some(), "{f:?}");
    // int16 per-slice scaling: error at most half a step of the slice maximum (12.6 SUV
    // here), which is within 1e-3 relative for every value above 0.2 SUV.
    for (a, b) in pet_back.volume.as_slice().iter().zip(pet.as_slice()) {
        let suv = *a as f64 * f.suvbw;
        let b = *b as f64;
        assert!(
            (suv - b).abs() <= (1e-3 * b).max(12.7 / 65534.0),
            "{suv} vs {b}"
        );
        if b > 0.2 {
            assert!((suv - b).abs() <= 1e-3 * b);
        }
    }

    // SEG and RTSTRUCT reference the CT and come back exactly.
    let source = SourceSeries::from_loaded(&ct_back).unwrap();
    assert_eq!(source, case.ct);
    let seg = read_seg(&case.seg.path).unwrap();
    assert_eq!(seg.labels_on(&g, &map).unwrap().as_slice(), lab.as_slice());
    // Each frame's source image is the CT slice at the frame's position.
    for fr in &seg.frames {
        let k = g.world_to_index(fr.position)[2].round() as usize;
        assert_eq!(
            fr.source_sop_instance_uid.as_deref(),
            Some(source.sop_instance_uids[k].as_str())
        );
    }
    assert_eq!(
        seg.frame_of_reference_uid.as_deref(),
        Some(source.frame_of_reference_uid.as_str())
    );
    let masks = read_rtstruct(&case.rtstruct.path, &g).unwrap();
    for (value, name) in map.foreground() {
        let m = masks.iter().find(|m| m.name == name).unwrap();
        assert_eq!(
            dice(&m.mask, &lab.map(|v| (*v == value) as u8)),
            1.0,
            "{name}"
        );
    }
    let rt = read_rtstruct_contours(&case.rtstruct.path).unwrap();
    assert!(rt.rois[0]
        .contours
        .iter()
        .all(|c| c.referenced_sop_instance_uid.is_some()));
    // The SEG and RTSTRUCT do not disturb a scan of the whole case folder.
    let all = scan_folder(dir.path()).unwrap();
    assert_eq!(all.series.len(), 2);
}
