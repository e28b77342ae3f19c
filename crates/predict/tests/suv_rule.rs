//! `predict`, `convert` and `info` read a DICOM study through one loader
//! (`glandseg_dicom::study`): for every PET file in shared/testdata they must give the same
//! SUVbw factor, or all refuse (issue #13).
//!
//! Each PET file becomes a 3-slice series whose slices carry different acquisition times
//! (as whole-body bed positions do), with the earliest time neither on the first slice in
//! file order nor on the first slice along the normal: the three old rules (first file,
//! first sorted slice, minimum over slices) then give three different factors.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use glandseg_core::{LabelMap, Volume};
use glandseg_dicom::{
    convert_studies, describe::describe, load_series, scan_folder, write_seg, NameMapping,
    SegOptions, SourceSeries,
};
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    glandseg_core::testdata::dir(env!("CARGO_MANIFEST_DIR"), "dicom").join("dicom")
}

fn text(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').to_string())
}

fn floats(obj: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_multi_float64().ok())
}

fn ds(v: &[f64]) -> PrimitiveValue {
    PrimitiveValue::from(
        v.iter()
            .map(|x| format!("{x:.6}"))
            .collect::<Vec<_>>()
            .join("\\"),
    )
}

fn tm(seconds: f64) -> String {
    let s = seconds.rem_euclid(86400.0);
    let whole = s.floor() as i64;
    format!(
        "{:02}{:02}{:02}.{:06}",
        whole / 3600,
        (whole / 60) % 60,
        whole % 60,
        ((s - whole as f64) * 1e6).round() as i64
    )
}

/// Writes `dir/p{0,1,2}.dcm` (a 3-slice PET series from `pet`), `dir/ct.dcm` (CT_small in
/// the PET's study and frame of reference) and `dir/seg.dcm` (a SEG on that CT).
fn build_study(pet: &Path, dir: &Path, n: usize) {
    let src = dicom_object::open_file(pet).unwrap();
    let iop = floats(&src, tags::IMAGE_ORIENTATION_PATIENT).filter(|v| v.len() == 6);
    let ipp = floats(&src, tags::IMAGE_POSITION_PATIENT).filter(|v| v.len() == 3);
    let series_time = text(&src, tags::SERIES_TIME).and_then(|t| glandseg_dicom::suv::parse_tm(&t));
    // Slice k (k along the normal) is scanned `earlier[k]` s before SeriesTime; k = 1 is the
    // earliest, and file p0 holds k = 2, p1 k = 0, p2 k = 1.
    let earlier = [0.0, 20.0, 10.0];
    for (file, k) in [(0, 2usize), (1, 0), (2, 1)] {
        let mut obj = src.clone();
        if let (Some(o), Some(p)) = (&iop, &ipp) {
            let nrm = [
                o[1] * o[5] - o[2] * o[4],
                o[2] * o[3] - o[0] * o[5],
                o[0] * o[4] - o[1] * o[3],
            ];
            let pos: Vec<f64> = (0..3).map(|a| p[a] + 2.0 * k as f64 * nrm[a]).collect();
            obj.put(DataElement::new(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                ds(&pos),
            ));
        }
        // Only the time moves (the date stays as the scanner wrote it), never past midnight.
        if let Some(t) = series_time.filter(|t| *t >= 600.0) {
            if text(&src, tags::ACQUISITION_DATE).is_none() {
                if let Some(d) = text(&src, tags::SERIES_DATE) {
                    obj.put(DataElement::new(
                        tags::ACQUISITION_DATE,
                        VR::DA,
                        PrimitiveValue::from(d),
                    ));
                }
            }
            obj.put(DataElement::new(
                tags::ACQUISITION_TIME,
                VR::TM,
                PrimitiveValue::from(tm(t - earlier[k])),
            ));
        }
        let uid = format!("1.2.826.0.1.3680043.10.543.{n}.{k}");
        obj.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid.clone()),
        ));
        obj.meta_mut().media_storage_sop_instance_uid = uid;
        obj.meta_mut().update_information_group_length();
        obj.write_to_file(dir.join(format!("p{file}.dcm"))).unwrap();
    }
    let mut ct = dicom_object::open_file(testdata().join("compressed/CT_small.dcm")).unwrap();
    for tag in [
        tags::FRAME_OF_REFERENCE_UID,
        tags::STUDY_INSTANCE_UID,
        tags::PATIENT_ID,
    ] {
        let v = text(&src, tag).unwrap_or_default();
        let vr = if tag == tags::PATIENT_ID {
            VR::LO
        } else {
            VR::UI
        };
        ct.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    }
    ct.write_to_file(dir.join("ct.dcm")).unwrap();
    let scan = scan_folder(&dir.join("ct.dcm")).unwrap();
    let ct_l = load_series(&scan.series[0]).unwrap();
    let g = ct_l.volume.geometry().clone();
    let mut labels = Volume::filled(g, 0u8);
    for j in 40..60 {
        for i in 40..60 {
            labels.set(i, j, 0, 1);
        }
    }
    write_seg(
        &dir.join("seg.dcm"),
        &labels,
        &LabelMap::default(),
        Some(&SourceSeries::from_loaded(&ct_l).unwrap()),
        &SegOptions::default(),
    )
    .unwrap();
}

#[test]
fn predict_convert_and_info_give_the_same_suv_for_every_pet_file() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(testdata().join("pet_suv"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 21);
    let tmp = tempfile::tempdir().unwrap();
    let (mut agreed, mut refused, mut differing_slices) = (0, 0, 0);
    for (n, pet) in files.iter().enumerate() {
        let name = pet.file_name().unwrap().to_string_lossy().to_string();
        let dir = tmp.path().join(format!("study{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        build_study(pet, &dir, n);

        let predicted = glandseg_predict::input::dicom_case(&dir);
        let converted = convert_studies(
            &dir,
            &NameMapping::default(),
            &tmp.path().join(format!("out{n}")),
            &|_| {},
        );
        let info = describe(&dir).unwrap();
        let info_pt: Vec<_> = info.series.iter().filter(|s| s.modality == "PT").collect();
        match predicted {
            Ok(case) => {
                // The factor predict applied, voxel by voxel.
                let scan = scan_folder(&dir).unwrap();
                let pt = scan.series.iter().find(|s| s.modality == "PT").unwrap();
                let raw = load_series(pt).unwrap().volume;
                let (i, v) = raw
                    .as_slice()
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                    .unwrap();
                let f_predict = case.images[1].as_slice()[i] as f64 / *v as f64;
                let summary = converted.unwrap_or_else(|e| panic!("{name}: convert: {e}"));
                assert_eq!(summary.cases.len(), 1, "{name}: {:?}", summary.skipped);
                let f_convert = summary.cases[0].suvbw_factor;
                assert!(
                    (f_predict - f_convert).abs() <= 1e-6 * f_convert,
                    "{name}: predict {f_predict} vs convert {f_convert}"
                );
                assert_eq!(info_pt.len(), 1, "{name}");
                let f_info = info_pt[0]
                    .suv
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name}: info: {:?}", info_pt[0].suv_error))
                    .suvbw;
                assert_eq!(f_info, f_convert, "{name}: info vs convert");
                if summary.cases[0]
                    .warnings
                    .iter()
                    .any(|w| w.contains("range from"))
                {
                    differing_slices += 1;
                }
                agreed += 1;
            }
            Err(e) => {
                assert!(
                    converted.is_err(),
                    "{name}: predict refused ({e}) but convert did not"
                );
                assert!(
                    info_pt.iter().all(|s| s.suv.is_none()),
                    "{name}: predict refused ({e}) but info gives an SUV"
                );
                eprintln!("{name}: refused by all: {e}");
                refused += 1;
            }
        }
    }
    eprintln!("{agreed} agreed, {refused} refused by all, {differing_slices} with differing slice factors");
    assert!(
        agreed >= 10 && differing_slices >= 5,
        "{agreed} {differing_slices}"
    );
}
