//! Synthetic head-and-neck case shared by the export tests and the `export_demo` example:
//! six ellipsoid glands of realistic size on a 1 x 1 x 2 mm grid, with CT and PET values.

#![allow(dead_code)]

use glandseg_core::{Geometry, LabelMap, Volume};
use glandseg_dicom::{write_case_dicom, CaseDicom, PatientMeta};
use std::path::Path;

/// 160 x 160 x 60 voxels of 1 x 1 x 2 mm, centred on the head.
pub fn grid() -> Geometry {
    Geometry::new([160, 160, 60], [1.0, 1.0, 2.0], [-80.0, -90.0, -60.0])
}

/// (value, centre LPS mm, semi-axes mm): parotids ~30 mL, submandibulars ~7.5 mL,
/// lacrimals ~0.7 mL. +x is the patient's left.
pub const GLANDS: [(u8, [f64; 3], [f64; 3]); 6] = [
    (1, [55.0, 10.0, 0.0], [14.0, 17.0, 28.0]),
    (2, [-55.0, 10.0, 0.0], [14.0, 17.0, 28.0]),
    (3, [35.0, -20.0, -38.0], [12.0, 10.0, 12.0]),
    (4, [-35.0, -20.0, -38.0], [12.0, 10.0, 12.0]),
    (5, [30.0, -60.0, 45.0], [9.0, 5.0, 3.5]),
    (6, [-30.0, -60.0, 45.0], [9.0, 5.0, 3.5]),
];

pub fn labels(g: &Geometry) -> Volume<u8> {
    let mut v = Volume::filled(g.clone(), 0u8);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                for (value, c, r) in GLANDS {
                    let d: f64 = (0..3).map(|a| ((p[a] - c[a]) / r[a]).powi(2)).sum();
                    if d <= 1.0 {
                        v.set(i, j, k, value);
                    }
                }
            }
        }
    }
    v
}

/// CT in whole HU: air outside a head ellipse, soft tissue inside, glands by type.
pub fn ct(labels: &Volume<u8>) -> Volume<f32> {
    let g = labels.geometry().clone();
    let mut v = Volume::filled(g.clone(), -1000.0f32);
    for k in 0..g.shape[2] {
        for j in 0..g.shape[1] {
            for i in 0..g.shape[0] {
                let p = g.index_to_world([i as f64, j as f64, k as f64]);
                let head = (p[0] / 75.0).powi(2) + ((p[1] + 5.0) / 82.0).powi(2) <= 1.0;
                let hu = match *labels.get(i, j, k) {
                    1 | 2 => -60.0,
                    3 | 4 => 50.0,
                    5 | 6 => 35.0,
                    _ if head => 30.0 + ((i * 7 + j * 3 + k) % 11) as f32,
                    _ => -1000.0,
                };
                v.set(i, j, k, hu);
            }
        }
    }
    v
}

/// PET in SUV: background 0.3-0.8, glands 4-12.
pub fn pet(labels: &Volume<u8>) -> Volume<f32> {
    labels.map(|l| match *l {
        0 => 0.3,
        1 | 2 => 9.5,
        3 | 4 => 11.25,
        _ => 4.5,
    })
}

/// A 6-byte-magic NumPy `.npy` (v1.0) of the labels as uint8, shape (k, j, i) = the SEG's
/// (frame, row, column) order, for the Python cross-check.
pub fn npy_bytes(v: &Volume<u8>) -> Vec<u8> {
    let [ni, nj, nk] = v.geometry().shape;
    let mut header =
        format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({nk}, {nj}, {ni}), }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(v.as_slice());
    out
}

/// Writes the case as DICOM under `dir` plus `labels.npy` and `expected.json` (grid, map,
/// codes) for `scripts/check_dicom_export.py`.
pub fn write_export(dir: &Path) -> CaseDicom {
    let g = grid();
    let lab = labels(&g);
    let map = LabelMap::default();
    let case = write_case_dicom(
        dir,
        &ct(&lab),
        &pet(&lab),
        &lab,
        &map,
        &PatientMeta {
            scan_time_unix: Some(1_750_000_000.0),
            patient_sex: "M".into(),
            patient_height_m: Some(1.78),
            radiopharmaceutical: "Ga-68 PSMA-11".into(),
            radionuclide: "68Ga".into(),
            half_life_s: 4057.74,
            injected_dose_bq: 160e6,
            ..Default::default()
        },
    )
    .expect("write_case_dicom");
    std::fs::write(dir.join("labels.npy"), npy_bytes(&lab)).unwrap();
    // The same labels without a source series (new study and frame of reference), the
    // form `glandseg predict` writes for NIfTI input.
    glandseg_dicom::write_seg(
        &dir.join("standalone/seg.dcm"),
        &lab,
        &map,
        None,
        &Default::default(),
    )
    .expect("standalone SEG");
    glandseg_dicom::write_rtstruct(
        &dir.join("standalone/rtstruct.dcm"),
        &lab,
        &map,
        None,
        &Default::default(),
    )
    .expect("standalone RTSTRUCT");
    let segments: Vec<serde_json::Value> = map
        .foreground()
        .map(|(v, name)| {
            let c = glandseg_dicom::coding_for(name);
            serde_json::json!({
                "value": v,
                "label": name,
                "category": [c.category.value, c.category.scheme],
                "type": [c.property_type.value, c.property_type.scheme],
                "laterality": c.laterality.map(|l| vec![l.value, l.scheme]),
                "voxels": lab.as_slice().iter().filter(|x| **x == v).count(),
            })
        })
        .collect();
    let expected = serde_json::json!({
        "shape_ijk": g.shape,
        "spacing": g.spacing,
        "origin": g.origin,
        "direction": g.direction,
        "segments": segments,
        "ct_series_instance_uid": case.ct.series_instance_uid,
    });
    std::fs::write(
        dir.join("expected.json"),
        serde_json::to_vec_pretty(&expected).unwrap(),
    )
    .unwrap();
    case
}
