//! Every real NIfTI file in shared/testdata against the values nibabel computed for it
//! (the JSON sidecar beside each file).

use glandseg_nifti::{read_labels, read_nifti, read_volume};
use serde_json::Value;
use std::path::PathBuf;

fn testdata() -> PathBuf {
    glandseg_core::testdata::dir(env!("CARGO_MANIFEST_DIR"), "nifti")
}

fn nifti_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(testdata().join("nifti"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".json"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 9,
        "expected the 9 NIfTI fixtures, found {}",
        v.len()
    );
    v
}

fn sidecar(p: &std::path::Path) -> Value {
    let s = std::fs::read_to_string(format!("{}.json", p.display())).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1.0)
}

#[test]
fn every_file_matches_its_sidecar() {
    for path in nifti_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let sc = sidecar(&path);
        let img = read_nifti(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = &img.header;
        assert_eq!(
            h.version as u64,
            sc["nifti_version"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            h.datatype_code as i64,
            sc["datatype_code"].as_i64().unwrap(),
            "{name}"
        );
        let shape: Vec<usize> = sc["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(&img.geometry.shape[..], &shape[..3], "{name}: shape");
        let nvol: usize = shape[3..].iter().product();
        assert_eq!(h.num_volumes(), nvol, "{name}");
        assert_eq!(
            serde_json::to_value(h.transform).unwrap().as_str().unwrap(),
            sc["affine_source"].as_str().unwrap(),
            "{name}: transform"
        );
        // Geometry in LPS equals nibabel's affine with x and y negated.
        let lps = img.geometry.affine();
        for r in 0..4 {
            for c in 0..4 {
                let want = f(&sc["affine_lps"][r][c]);
                assert!(
                    (lps[r][c] - want).abs() < 1e-4,
                    "{name}: affine_lps[{r}][{c}] {} vs {want}",
                    lps[r][c]
                );
            }
        }
        // The qform we compute matches nibabel's, where the file has one.
        if h.qform_code > 0 {
            let q = glandseg_nifti_qform(&img);
            for r in 0..3 {
                for c in 0..4 {
                    let want = f(&sc["qform_ras"][r][c]);
                    assert!(
                        (q[r][c] - want).abs() < 1e-4,
                        "{name}: qform[{r}][{c}] {} vs {want}",
                        q[r][c]
                    );
                }
            }
        }
        for s in sc["samples"].as_array().unwrap() {
            let idx: Vec<usize> = s["index"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let t = idx.get(3).copied().unwrap_or(0);
            let got = img.at(idx[0], idx[1], idx[2], t).unwrap() as f64;
            let want = f(&s["value"]);
            assert!(
                close(got, want, 1e-6),
                "{name}: sample {idx:?} {got} vs {want}"
            );
        }
        let st = &sc["stats"];
        let nv = img.geometry.num_voxels();
        let vol0 = &img.data[..nv];
        let sum: f64 = vol0.iter().map(|&x| x as f64).sum();
        let min = vol0.iter().cloned().fold(f32::INFINITY, f32::min) as f64;
        let max = vol0.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        assert_eq!(nv as u64, st["count"].as_u64().unwrap(), "{name}: count");
        assert!(
            close(sum, f(&st["sum"]), 1e-6),
            "{name}: sum {sum} vs {}",
            st["sum"]
        );
        assert!(close(min, f(&st["min"]), 1e-6), "{name}: min");
        assert!(close(max, f(&st["max"]), 1e-6), "{name}: max");
    }
}

/// The qform as a RAS matrix, recomputed from the header fields through the public
/// geometry: only possible by reading the header info.
fn glandseg_nifti_qform(img: &glandseg_nifti::NiftiImage) -> [[f64; 4]; 4] {
    glandseg_nifti::qform_affine_of(&img.header)
}

#[test]
fn four_d_files_are_refused_as_3d_volumes() {
    let p = testdata().join("nifti/functional.nii");
    let e = read_volume(&p).unwrap_err().to_string();
    assert!(
        e.contains("functional.nii") && e.contains("20 volumes"),
        "{e}"
    );
}

#[test]
fn label_maps_read_as_u8() {
    let p = testdata().join("nifti/example_seg.nii.gz");
    let v = read_labels(&p).unwrap();
    assert_eq!(v.as_slice().iter().map(|&x| x as u64).sum::<u64>(), 2734697);
    // A CT is not a label map: the error names the file.
    let ct = testdata().join("nifti/example_ct_sm.nii.gz");
    let e = read_labels(&ct).unwrap_err().to_string();
    assert!(
        e.contains("example_ct_sm.nii.gz") && e.contains("not a label map"),
        "{e}"
    );
}

#[test]
fn bad_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(testdata().join("nifti/anatomical.nii")).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.nii", vec![]),
        ("short.nii", good[..100].to_vec()),
        ("truncated.nii", good[..good.len() - 10].to_vec()),
        (
            "garbage.nii",
            (0..5000u32)
                .map(|i| (i.wrapping_mul(2654435761u32) >> 13) as u8)
                .collect(),
        ),
        ("badgz.nii.gz", vec![0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7]),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let e = read_nifti(&p).unwrap_err().to_string();
        assert!(
            e.contains(name),
            "{name}: error does not name the file: {e}"
        );
    }
    let missing = dir.path().join("missing.nii");
    assert!(read_nifti(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.nii"));
    // Corrupt single header fields of a good file.
    let mut bad_dt = good.clone();
    bad_dt[70..72].copy_from_slice(&128i16.to_be_bytes());
    let p = dir.path().join("rgb.nii");
    std::fs::write(&p, &bad_dt).unwrap();
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("datatype 128"), "{e}");
    let mut bad_pix = good.clone();
    bad_pix[80..84].copy_from_slice(&0f32.to_be_bytes());
    let p = dir.path().join("pix.nii");
    std::fs::write(&p, &bad_pix).unwrap();
    let e = read_nifti(&p).unwrap_err().to_string();
    assert!(e.contains("pixdim[1]"), "{e}");
}
