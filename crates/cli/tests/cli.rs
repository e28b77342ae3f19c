//! The command line as a user runs it.

use std::process::Command;

fn glandseg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glandseg"))
}

#[test]
fn phantom_writes_a_dataset_that_info_reads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let o = glandseg()
        .args([
            "phantom",
            "--cases",
            "2",
            "--scale",
            "0.35",
            "--preview",
            "--native",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("parotid_left"), "{stdout}");
    assert!(out.join("dataset.json").is_file());
    for case in ["GLAND_000", "GLAND_001"] {
        for f in [
            format!("imagesTr/{case}_0000.nii.gz"),
            format!("imagesTr/{case}_0001.nii.gz"),
            format!("labelsTr/{case}.nii.gz"),
            format!("pet_native/{case}.nii.gz"),
            format!("preview/{case}.png"),
            format!("meta/{case}.json"),
        ] {
            assert!(out.join(&f).is_file(), "missing {f}");
        }
        // A real PNG (its signature), not just a file with the name.
        let png = std::fs::read(out.join(format!("preview/{case}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }
    assert_eq!(std::fs::read_dir(out.join("labelsTr")).unwrap().count(), 2);
    assert_eq!(std::fs::read_dir(out.join("imagesTr")).unwrap().count(), 4);
    let o = glandseg()
        .args(["info", "--json"])
        .arg(out.join("labelsTr/GLAND_000.nii.gz"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("meta/GLAND_000.json")).unwrap()).unwrap();
    assert_eq!(j["shape"], meta["ct_shape"]);
    assert_eq!(j["datatype"], "uint8");
    assert_eq!(j["max"], 6.0);
    assert_eq!(j["format_version"], 1);
    let o = glandseg()
        .arg("info")
        .arg(out.join("imagesTr/GLAND_000_0000.nii.gz"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("int16") && text.contains("spacing"), "{text}");
}

#[test]
fn errors_name_the_file_and_fail() {
    let o = glandseg()
        .args(["info", "/nonexistent/scan.nii.gz"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("/nonexistent/scan.nii.gz"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    assert_eq!(e.matches("No such file").count(), 1, "cause said once: {e}");
    // A file that is neither NIfTI nor DICOM fails instead of reporting an empty study.
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("notes.txt");
    std::fs::write(&txt, "not an image").unwrap();
    let o = glandseg().arg("info").arg(&txt).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("notes.txt") && e.contains("neither"), "{e}");
    // A truncated NIfTI is an error naming the file, not a panic.
    let bad = dir.path().join("cut.nii.gz");
    std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2]).unwrap();
    let o = glandseg().arg("info").arg(&bad).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cut.nii.gz") && !e.contains("panicked"), "{e}");
    let o = glandseg()
        .args(["phantom", "--cases", "0", "--out", "/tmp/x"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = glandseg()
        .args(["phantom", "--fov", "whole-body", "--out", "/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn evaluate_writes_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    let o = glandseg()
        .args(["phantom", "--cases", "1", "--scale", "0.3", "--out"])
        .arg(&ds)
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = dir.path().join("eval");
    let o = glandseg()
        .arg("evaluate")
        .arg(ds.join("labelsTr"))
        .arg(ds.join("labelsTr"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    let row = csv.lines().nth(1).unwrap();
    assert!(
        row.starts_with("GLAND_000,1,parotid_left,1.000000,1.000000,0.000000,0.000000"),
        "{row}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(j["summary"]["classes"][0]["dice"]["mean"], 1.0);
    // A reference on another grid is refused with both files named.
    let ds2 = dir.path().join("ds2");
    glandseg()
        .args(["phantom", "--cases", "2", "--scale", "0.3", "--out"])
        .arg(&ds2)
        .output()
        .unwrap();
    let o = glandseg()
        .arg("evaluate")
        .arg(ds2.join("labelsTr/GLAND_001.nii.gz"))
        .arg(ds.join("labelsTr/GLAND_000.nii.gz"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("different grids"));
}

#[test]
fn stats_on_a_phantom_case() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    assert!(glandseg()
        .args(["phantom", "--cases", "1", "--scale", "0.4", "--native", "--out"])
        .arg(&ds)
        .output()
        .unwrap()
        .status
        .success());
    let out = dir.path().join("stats");
    let o = glandseg()
        .arg("stats")
        .arg("--labels")
        .arg(ds.join("labelsTr/GLAND_000.nii.gz"))
        .arg("--pet")
        .arg(ds.join("pet_native/GLAND_000.nii.gz"))
        .arg("--ct")
        .arg(ds.join("imagesTr/GLAND_000_0000.nii.gz"))
        .args(["--dilate", "3", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resampling"));
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("stats.json")).unwrap()).unwrap();
    let p = &j["glands"][0];
    assert_eq!(p["name"], "parotid_left");
    let (mean, max, peak) = (
        p["suv_mean"].as_f64().unwrap(),
        p["suv_max"].as_f64().unwrap(),
        p["suv_peak"].as_f64().unwrap(),
    );
    assert!(
        mean > 2.0 && max >= peak && peak >= mean * 0.8,
        "{mean} {max} {peak}"
    );
    assert!(p["dilated"]["volume_ml"].as_f64().unwrap() > p["volume_ml"].as_f64().unwrap());
    assert!(out.join("stats.csv").is_file());
}

#[test]
fn info_reads_dicom_folders_and_pet_suv() {
    let td =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/dicom");
    assert!(td.is_dir(), "test data missing at {}", td.display());
    let o = glandseg()
        .args(["info", "--json"])
        .arg(td.join("ct_series"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["kind"], "dicom");
    assert_eq!(j["series"][0]["shape"], serde_json::json!([512, 512, 20]));
    assert_eq!(j["series"][0]["spacing_mm"][2], 2.0);
    let o = glandseg()
        .args(["info", "--json"])
        .arg(td.join("pet_suv/ge_acrin_nsclc_fdg_pet_ACRIN-NSCLC-FDG-PET-196_023.dcm"))
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["series"][0]["suv_error"]
        .as_str()
        .unwrap()
        .contains("PatientWeight"));
}

#[test]
fn phantom_dicom_converts_back_to_a_training_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ph = dir.path().join("ph");
    let o = glandseg()
        .args([
            "phantom", "--cases", "2", "--scale", "0.3", "--seed", "5", "--dicom", "--out",
        ])
        .arg(&ph)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ds = dir.path().join("converted");
    let o = glandseg()
        .arg("convert")
        .arg(ph.join("dicom"))
        .arg("-o")
        .arg(&ds)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 case(s)"), "{stdout}");
    // The converted labels equal the phantom's own, case by case (same CT grid, SEG exact).
    let mut converted: Vec<_> = std::fs::read_dir(ds.join("labelsTr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    converted.sort();
    assert_eq!(converted.len(), 2);
    for (n, p) in converted.iter().enumerate() {
        let ours = glandseg_nifti::read_labels(p).unwrap();
        let orig =
            glandseg_nifti::read_labels(&ph.join(format!("labelsTr/GLAND_{n:03}.nii.gz"))).unwrap();
        assert!(ours.geometry().same_grid(orig.geometry(), 1e-3));
        assert!(
            ours.as_slice() == orig.as_slice(),
            "{} equals the phantom's labels",
            p.display()
        );
    }
    let o = glandseg().arg("plan").arg(&ds).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
