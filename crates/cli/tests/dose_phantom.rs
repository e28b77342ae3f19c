//! Dosimetry end to end on the phantom (issue #14): `glandseg phantom --timepoints` writes a
//! Lu-177 SPECT/CT time series with known kinetics per gland (12 mm FWHM, 4.8 mm voxels,
//! counting noise); `glandseg dose` with the partial-volume correction must give each
//! parotid and submandibular gland's true TIA within 5 % and dose within 10 %; lacrimal
//! glands carry the partial-volume caveat with the uncorrected value beside the corrected.

use std::path::Path;
use std::process::Command;

fn glandseg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glandseg"))
}

fn run(args: &[String]) -> String {
    let o = glandseg().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{args:?}\n{text}");
    text
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Writes one phantom case with its SPECT series; returns its metadata.
fn phantom(dir: &Path, seed: u64) -> serde_json::Value {
    run(&[
        "phantom".into(),
        "--out".into(),
        s(dir),
        "--cases".into(),
        "1".into(),
        "--seed".into(),
        seed.to_string(),
        "--scale".into(),
        "0.5".into(),
        "--style".into(),
        "classic".into(),
        "--timepoints".into(),
        "4,24,48,96,168".into(),
        "--nuclide".into(),
        "Lu-177".into(),
        "--spect-fwhm-mm".into(),
        "12".into(),
    ]);
    serde_json::from_slice(&std::fs::read(dir.join("meta/GLAND_000.json")).unwrap()).unwrap()
}

/// The SPECT time points (h) of a phantom's metadata.
fn timepoints(spect: &serde_json::Value) -> Vec<f64> {
    spect["timepoints_h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect()
}

/// The SPECT images of a phantom's metadata, in time order.
fn spect_files(data: &Path, spect: &serde_json::Value) -> Vec<String> {
    spect["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(&data.join(f.as_str().unwrap())))
        .collect()
}

/// `glandseg dose` on the phantom's labels with one --activity per time point.
fn dose_args(
    data: &Path,
    out: &Path,
    times: &[f64],
    files: &[String],
    extra: &[String],
) -> Vec<String> {
    let mut args = vec![
        "dose".to_string(),
        "--labels".into(),
        s(&data.join("labelsTr/GLAND_000.nii.gz")),
        "--nuclide".into(),
        "Lu-177".into(),
        "-o".into(),
        s(out),
    ];
    for (t, f) in times.iter().zip(files) {
        args.push("--activity".into());
        args.push(format!("{t}={f}"));
    }
    args.extend_from_slice(extra);
    args
}

#[test]
fn phantom_timepoints_to_dose_recovers_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let meta = phantom(&data, 3);
    let sp = &meta["spect"];
    assert_eq!(sp["nuclide"], "Lu-177");
    assert_eq!(sp["psf_fwhm_mm"].as_f64().unwrap(), 12.0);
    // The resolution of the images on the label grid: the PSF and the trilinear
    // interpolation between 4.8 mm SPECT voxels (12.86 mm).
    let fwhm = sp["effective_fwhm_mm"].as_f64().unwrap();
    assert!((fwhm - 12.86).abs() < 0.01, "{fwhm}");
    let times = timepoints(sp);
    assert_eq!(times, vec![4.0, 24.0, 48.0, 96.0, 168.0]);
    let out = dir.path().join("dose");
    let args = dose_args(
        &data,
        &out,
        &times,
        &spect_files(&data, sp),
        &[
            "--injected-mbq".into(),
            "7400".into(),
            "--pvc-fwhm-mm".into(),
            format!("{fwhm}"),
        ],
    );
    let text = run(&args);
    println!("{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dose.json")).unwrap()).unwrap();
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>7} {:>10} {:>8} {:>8} {:>7} {:>6} {:>10} {:>8}  model",
        "gland",
        "mass g",
        "TIA true",
        "TIA",
        "err %",
        "TIA raw",
        "D true",
        "D Gy",
        "err %",
        "RC",
        "D raw",
        "Dvox"
    );
    for truth in sp["glands"].as_array().unwrap() {
        let name = truth["name"].as_str().unwrap();
        let r = json["glands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing in dose.json"));
        let (tt, dt) = (
            truth["true_tia_mbq_h"].as_f64().unwrap(),
            truth["true_dose_gy"].as_f64().unwrap(),
        );
        let (tia, dose) = (
            r["tia_mbq_h"].as_f64().unwrap(),
            r["dose_gy"].as_f64().unwrap(),
        );
        let raw = r["tia_mbq_h_uncorrected"].as_f64().unwrap();
        let eps_t = 100.0 * (tia / tt - 1.0);
        let eps_d = 100.0 * (dose / dt - 1.0);
        println!(
            "{name:<20} {:>8.2} {tt:>10.1} {tia:>10.1} {eps_t:>+7.1} {raw:>10.1} {dt:>8.3} {dose:>8.3} {eps_d:>+7.1} {:>6.2} {:>10.3} {:>8.3}  {}",
            r["mass_g"].as_f64().unwrap(),
            r["recovery"].as_f64().unwrap(),
            r["dose_gy_uncorrected"].as_f64().unwrap(),
            r["dose_gy_voxel_mean"].as_f64().unwrap(),
            r["model"].as_str().unwrap(),
        );
        // The mass is the label's: the same voxels the truth was put in.
        let mass = r["mass_g"].as_f64().unwrap();
        assert!((mass / truth["mass_g"].as_f64().unwrap() - 1.0).abs() < 1e-6);
        if name.starts_with("lacrimal") {
            let caveat = r["caveat"].as_str().unwrap();
            assert!(
                caveat.contains("SPECT resolution") && caveat.contains("recovery coefficient"),
                "{caveat}"
            );
            assert!(r["dose_gy_uncorrected"].as_f64().unwrap() < dose);
            continue;
        }
        assert!(eps_t.abs() < 5.0, "{name}: TIA {tia} vs true {tt}");
        assert!(eps_d.abs() < 10.0, "{name}: dose {dose} vs true {dt}");
        // Without the correction the blur costs more than the tolerance.
        assert!(raw < tia, "{name}: uncorrected {raw} >= corrected {tia}");
        // The FWHM's 1 mm uncertainty is the largest term of the salivary glands' budget,
        // and it covers the error actually made.
        let pvc = r["pvc_uncertainty_pct"].as_f64().unwrap();
        let du = r["dose_uncertainty_pct"].as_f64().unwrap();
        println!("{name}: pvc_uncertainty_pct {pvc:.1}, dose_uncertainty_pct {du:.1}");
        assert!(pvc > 2.0 && pvc < 15.0 && du >= pvc, "{name}: {pvc} {du}");
        assert!(
            eps_d.abs() < 2.0 * du,
            "{name}: error {eps_d:+.1} % vs +-{du:.1} %"
        );
    }
    let csv = std::fs::read_to_string(out.join("dose.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    for col in [
        "recovery",
        "pvc_uncertainty_pct",
        "tia_mbq_h_uncorrected",
        "dose_gy_uncorrected",
    ] {
        assert!(header.split(',').any(|c| c == col), "{col} not in {header}");
    }
}

/// True when pydicom can be imported; otherwise prints why the cross-check is skipped, or
/// panics when `GLANDSEG_REQUIRE_PYDICOM=1` asks for it (CI).
fn pydicom_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pydicom, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let required = std::env::var("GLANDSEG_REQUIRE_PYDICOM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "GLANDSEG_REQUIRE_PYDICOM=1 but pydicom cannot be imported"
        );
        eprintln!("note: python3 with pydicom not found; RTDOSE/NM cross-check skipped");
    }
    ok
}

/// The phantom's NM objects as input: times and injected activity from the headers (no
/// HOURS=, no --injected-mbq), Bq/mL from the Real World Value Mapping; the dose map as
/// RTDOSE in the CT's frame of reference; pydicom reads both back.
#[test]
fn dicom_nm_in_rtdose_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    run(&[
        "phantom".into(),
        "--out".into(),
        s(&data),
        "--cases".into(),
        "1".into(),
        "--seed".into(),
        "3".into(),
        "--scale".into(),
        "0.5".into(),
        "--style".into(),
        "classic".into(),
        "--timepoints".into(),
        "4,24,48,96,168".into(),
        "--spect-fwhm-mm".into(),
        "12".into(),
        "--dicom".into(),
    ]);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("meta/GLAND_000.json")).unwrap()).unwrap();
    let sp = &meta["spect"];
    let nm = data.join("dicom/GLAND_000/NM");
    let out = dir.path().join("dose");
    // Given out of order on purpose: header times are sorted.
    let mut args = vec![
        "dose".to_string(),
        "--labels".into(),
        s(&data.join("labelsTr/GLAND_000.nii.gz")),
        "--pvc-fwhm-mm".into(),
        format!("{}", sp["effective_fwhm_mm"].as_f64().unwrap()),
        "--ct-dicom".into(),
        s(&data.join("dicom/GLAND_000/CT")),
        "-o".into(),
        s(&out),
    ];
    for h in [24, 4, 48, 168, 96] {
        args.push("--activity".into());
        args.push(s(&nm.join(format!("spect_{h:03}h.dcm"))));
    }
    let text = run(&args);
    println!("{text}");
    assert!(text.contains("Real World Value Mapping"), "{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dose.json")).unwrap()).unwrap();
    let times: Vec<f64> = json["times_h"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_f64().unwrap())
        .collect();
    for (t, want) in times.iter().zip([4.0, 24.0, 48.0, 96.0, 168.0]) {
        assert!((t - want).abs() < 1e-6, "{times:?}");
    }
    assert_eq!(json["options"]["injected_mbq"].as_f64(), Some(7400.0));
    for truth in sp["glands"].as_array().unwrap() {
        let name = truth["name"].as_str().unwrap();
        if name.starts_with("lacrimal") {
            continue;
        }
        let r = json["glands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap();
        let e = r["tia_mbq_h"].as_f64().unwrap() / truth["true_tia_mbq_h"].as_f64().unwrap() - 1.0;
        assert!(e.abs() < 0.05, "{name}: {e:+.3} from DICOM");
        assert!(r["dose_gy_per_gbq"].as_f64().unwrap() > 0.0);
    }
    assert!(out.join("rtdose.dcm").exists());
    // Bad input through the DICOM path: the header's half-life is Lu-177's, not Y-90's; two
    // files at the same time.
    let mut bad = args.clone();
    bad.extend(["--nuclide".into(), "Y-90".into()]);
    let o = glandseg().args(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("--nuclide") && err.contains("(0018,1075)"),
        "{err}"
    );
    let mut dup = args[..args.len() - 2].to_vec();
    dup.extend(["--activity".into(), s(&nm.join("spect_004h.dcm"))]);
    let o = glandseg().args(&dup).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("both at"), "{err}");
    if pydicom_available() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_dose_dicom.py");
        let o = Command::new("python3")
            .arg(script)
            .arg(nm.join("spect_024h.dcm"))
            .arg(data.join("dicom/GLAND_000/CT"))
            .arg(out.join("rtdose.dcm"))
            .arg(out.join("dose.json"))
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("{said}");
        assert!(o.status.success(), "{said}");
        let v: serde_json::Value = serde_json::from_str(said.lines().next().unwrap()).unwrap();
        assert!((v["nm_hours"].as_f64().unwrap() - 24.0).abs() < 1e-6, "{v}");
    }
}

/// Dose per gland from dose.json, by name.
fn doses(out: &Path) -> Vec<(String, f64)> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dose.json")).unwrap()).unwrap();
    json["glands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["tia_mbq_h"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn time_points_where_the_patient_moved_are_registered_back() {
    use glandseg_ops::register::Rigid;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let meta = phantom(&data, 3);
    let sp = &meta["spect"];
    let times = timepoints(sp);
    let files = spect_files(&data, sp);
    let ct_path = data.join("imagesTr/GLAND_000_0000.nii.gz");
    let ct = glandseg_nifti::read_volume(&ct_path).unwrap();
    // At 24 h and 96 h the patient lay differently: the SPECT and its CT (one frame) moved
    // together by a rigid motion of up to ~9 mm at the glands.
    let centre = ct
        .geometry()
        .index_to_world(ct.shape().map(|n| n as f64 / 2.0));
    let motions = [
        (1usize, [6.0, -4.0, 5.0], [3.0, -2.0, 4.0]),
        (3, [-5.0, 3.0, -4.0], [-2.0, 3.0, -3.0]),
    ];
    let moved = dir.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    let mut moved_files = files.clone();
    let mut ct_args = Vec::new();
    for (idx, t, r) in motions {
        let motion = Rigid {
            translation_mm: t,
            rotation_deg: r,
            centre_mm: centre,
        };
        let mut c = ct.clone();
        c.set_geometry(motion.move_geometry(ct.geometry())).unwrap();
        let c_path = moved.join(format!("ct_{idx}.nii.gz"));
        glandseg_nifti::write_volume(&c_path, &c).unwrap();
        let mut a = glandseg_nifti::read_volume(Path::new(&files[idx])).unwrap();
        let g = motion.move_geometry(a.geometry());
        a.set_geometry(g).unwrap();
        let a_path = moved.join(format!("spect_{idx}.nii.gz"));
        glandseg_nifti::write_volume(&a_path, &a).unwrap();
        moved_files[idx] = s(&a_path);
        ct_args.push("--ct".to_string());
        ct_args.push(format!("{}={}", times[idx], s(&c_path)));
    }
    let dose = |out: &Path, files: &[String], extra: &[String]| {
        run(&dose_args(&data, out, &times, files, extra))
    };
    let (still, unregistered, registered) = (
        dir.path().join("still"),
        dir.path().join("unregistered"),
        dir.path().join("registered"),
    );
    dose(&still, &files, &[]);
    dose(&unregistered, &moved_files, &[]);
    let mut extra = vec!["--reference-ct".to_string(), s(&ct_path)];
    extra.extend(ct_args);
    let text = dose(&registered, &moved_files, &extra);
    assert!(text.contains("registered onto"), "{text}");
    let reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registered.join("registration.json")).unwrap())
            .unwrap();
    assert_eq!(reg.as_array().unwrap().len(), 2, "{reg}");
    for r in reg.as_array().unwrap() {
        println!("{r}");
        assert!(
            r["ncc_after"].as_f64().unwrap() > r["ncc_before"].as_f64().unwrap(),
            "{r}"
        );
    }
    let (a, b, c) = (doses(&still), doses(&unregistered), doses(&registered));
    println!(
        "{:<20} {:>10} {:>12} {:>10}",
        "gland", "TIA still", "unregistered", "registered"
    );
    let mut worst_unreg: f64 = 0.0;
    for ((name, ta), ((_, tb), (_, tc))) in a.iter().zip(b.iter().zip(&c)) {
        let (eb, ec) = (100.0 * (tb / ta - 1.0), 100.0 * (tc / ta - 1.0));
        println!("{name:<20} {ta:>10.1} {eb:>+11.1}% {ec:>+9.1}%");
        worst_unreg = worst_unreg.max(eb.abs());
        // The salivary glands' TIA comes back within 3 % of the unmoved study's.
        if !name.starts_with("lacrimal") {
            assert!(
                ec.abs() < 3.0,
                "{name}: registered TIA {tc} vs {ta} unmoved"
            );
        }
    }
    // Without registration the motion costs more than that.
    assert!(worst_unreg > 5.0, "the motion changed no TIA by 5 %: {b:?}");
}

/// `glandseg recovery` on a simulated sphere phantom of the dose phantom's SPECT
/// resolution: the spheres give back the PSF, which corrects the phantom's glands through
/// the GTM; the curve by volume corrects them too, but less (glands are not spheres); a
/// sphere table and image read from files give the same curve; bad tables and curve files
/// are named.
#[test]
fn sphere_phantom_calibrates_the_partial_volume_correction() {
    let dir = tempfile::tempdir().unwrap();
    let rc = dir.path().join("rc");
    let text = run(&[
        "recovery".into(),
        "--simulate-fwhm-mm".into(),
        "12".into(),
        "-o".into(),
        s(&rc),
    ]);
    println!("{text}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rc.join("recovery.json")).unwrap()).unwrap();
    let data = dir.path().join("data");
    let meta = phantom(&data, 3);
    let sp = &meta["spect"];
    let effective = sp["effective_fwhm_mm"].as_f64().unwrap();
    let fwhm = json["equivalent_fwhm_mm"].as_f64().unwrap();
    assert!(
        (fwhm - effective).abs() < 0.3,
        "spheres: {fwhm} mm, images: {effective} mm"
    );
    assert_eq!(json["spheres"].as_array().unwrap().len(), 6);
    assert!(rc.join("recovery.png").exists() && rc.join("recovery.csv").exists());

    let (times, files) = (timepoints(sp), spect_files(&data, sp));
    let truth = |name: &str| -> f64 {
        sp["glands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()["true_tia_mbq_h"]
            .as_f64()
            .unwrap()
    };
    let dose = |name: &str, extra: &[String]| -> serde_json::Value {
        let out = dir.path().join(name);
        run(&dose_args(&data, &out, &times, &files, extra));
        serde_json::from_slice(&std::fs::read(out.join("dose.json")).unwrap()).unwrap()
    };
    // The GTM at the FWHM the spheres gave: salivary glands within 5 % of the true TIA.
    let gtm = dose("gtm", &["--pvc-fwhm-mm".into(), format!("{fwhm}")]);
    let curve = dose(
        "curve",
        &["--recovery-curve".into(), s(&rc.join("recovery.json"))],
    );
    assert!(curve["recovery_curve"]["points"].as_array().unwrap().len() == 6);
    println!(
        "{:<20} {:>8} {:>8} {:>8}",
        "gland", "raw %", "GTM %", "curve %"
    );
    for (g, c) in gtm["glands"]
        .as_array()
        .unwrap()
        .iter()
        .zip(curve["glands"].as_array().unwrap())
    {
        let name = g["name"].as_str().unwrap();
        let t = truth(name);
        let err = |v: &serde_json::Value| 100.0 * (v.as_f64().unwrap() / t - 1.0);
        let (raw, eg, ec) = (
            err(&c["tia_mbq_h_uncorrected"]),
            err(&g["tia_mbq_h"]),
            err(&c["tia_mbq_h"]),
        );
        println!("{name:<20} {raw:>+8.1} {eg:>+8.1} {ec:>+8.1}");
        if !name.starts_with("lacrimal") {
            assert!(eg.abs() < 5.0, "{name}: GTM TIA {eg:+.1} %");
        } else {
            assert!(
                c["caveat"].as_str().unwrap().contains("sphere curve"),
                "{c}"
            );
        }
        // The curve corrects in the right direction, and never past the truth here (the
        // glands recover less than their spheres).
        assert!(
            ec > raw + 5.0 && ec < 2.0,
            "{name}: raw {raw:+.1} %, curve {ec:+.1} %"
        );
        let r = c["recovery"].as_f64().unwrap();
        assert!(r > 0.05 && r < 1.0, "{name}: RC {r}");
    }

    // The same phantom from files: the written image and sphere table give the same curve.
    let again = dir.path().join("again");
    run(&[
        "recovery".into(),
        "--image".into(),
        s(&rc.join("spheres.nii.gz")),
        "--spheres".into(),
        s(&rc.join("spheres.csv")),
        "--background-bq-ml".into(),
        "10000".into(),
        "-o".into(),
        s(&again),
    ]);
    let j2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("recovery.json")).unwrap()).unwrap();
    for (x, y) in json["spheres"]
        .as_array()
        .unwrap()
        .iter()
        .zip(j2["spheres"].as_array().unwrap())
    {
        let (x, y) = (x["rc"].as_f64().unwrap(), y["rc"].as_f64().unwrap());
        assert!((x - y).abs() < 2e-3, "{x} vs {y}");
    }
    assert!((j2["equivalent_fwhm_mm"].as_f64().unwrap() - fwhm).abs() < 0.05);

    // Bad input: a table with a broken number, a curve file that is not one, both PVCs.
    let table = dir.path().join("bad.csv");
    let good = std::fs::read_to_string(rc.join("spheres.csv")).unwrap();
    std::fs::write(&table, good.replacen(",0.000,", ",zero,", 1)).unwrap();
    let o = glandseg()
        .args(["recovery", "--image"])
        .arg(rc.join("spheres.nii.gz"))
        .arg("--spheres")
        .arg(&table)
        .arg("-o")
        .arg(dir.path().join("bad"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.csv line 2") && e.contains("\"zero\""),
        "{e}"
    );
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"curve\": 3}").unwrap();
    let o = glandseg()
        .args(dose_args(
            &data,
            &dir.path().join("x"),
            &times,
            &files,
            &["--recovery-curve".into(), s(&broken)],
        ))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("broken.json"), "{e}");
    let o = glandseg()
        .args(dose_args(
            &data,
            &dir.path().join("y"),
            &times,
            &files,
            &[
                "--recovery-curve".into(),
                s(&rc.join("recovery.json")),
                "--pvc-fwhm-mm".into(),
                "12".into(),
            ],
        ))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--pvc-fwhm-mm"), "{e}");
}
