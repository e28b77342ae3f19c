//! `glandseg pacs` against a real Orthanc (with its DICOMweb plugin), started by `.ci/run`
//! (`.ci/orthanc.sh`) on 127.0.0.1 with basic authentication. Skipped, with the reason
//! printed, when `GLANDSEG_ORTHANC_URL` is unset; `GLANDSEG_REQUIRE_ORTHANC=1` (CI) turns
//! the skip into a failure.
//!
//! One test, in order (the tiny model is trained once):
//! 1. `pacs run` on a phantom PET/CT study uploaded with STOW-RS: Orthanc then holds a
//!    DICOM-SEG whose segments give back, bit for bit, the label map `glandseg predict`
//!    writes for the same DICOM folder; an RTSTRUCT with the same glands; the PDF table.
//! 2. Clear failures: wrong password (HTTP 401), unreachable server, a study without PET.
//! 3. A study whose CT is JPEG 2000 (re-encoded with pydicom + pylibjpeg-openjpeg):
//!    segmented exactly as the uncompressed original.
//! 4. `pacs watch`: a study without CT (skipped, logged) and a PET/CT study uploaded while
//!    it runs; the PET/CT study gets its SEG, one log line each; a restart with the same
//!    state file processes nothing again.
//! 5. C-STORE: dcmtk's `storescu` pushes a study to `glandseg pacs listen`, which
//!    segments it and pushes the results to Orthanc's DICOM port; `glandseg pacs send`
//!    pushes a file.

use glandseg_pacs::{Credentials, DicomWeb};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test; `GLANDSEG_BIN` runs another (e.g. a copy, where several work
/// trees share one target folder and another build may replace the file mid-test).
fn glandseg() -> Command {
    match std::env::var_os("GLANDSEG_BIN") {
        Some(b) => Command::new(b),
        None => Command::new(env!("CARGO_BIN_EXE_glandseg")),
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Runs a command expected to fail with exit status 1; returns its stderr.
fn run_fail(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{cmd:?} should fail with 1:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stderr).to_string()
}

struct Orthanc {
    url: String,
    user: String,
    password: String,
    dicom: Option<String>,
}

fn orthanc() -> Option<Orthanc> {
    let Ok(url) = std::env::var("GLANDSEG_ORTHANC_URL") else {
        assert!(
            std::env::var_os("GLANDSEG_REQUIRE_ORTHANC").is_none(),
            "GLANDSEG_REQUIRE_ORTHANC is set but GLANDSEG_ORTHANC_URL is not: start Orthanc with .ci/orthanc.sh"
        );
        eprintln!(
            "SKIP pacs test: GLANDSEG_ORTHANC_URL is unset (bash .ci/run starts an Orthanc and sets it)"
        );
        return None;
    };
    Some(Orthanc {
        url,
        user: std::env::var("GLANDSEG_ORTHANC_USER").unwrap_or_default(),
        password: std::env::var("GLANDSEG_ORTHANC_PASSWORD").unwrap_or_default(),
        dicom: std::env::var("GLANDSEG_ORTHANC_DICOM").ok(),
    })
}

impl Orthanc {
    fn client(&self) -> DicomWeb {
        DicomWeb::new(
            &self.url,
            Some(Credentials::new(&self.user, &self.password)),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    /// `glandseg pacs SUB --url .. --user ..` with the password in the environment.
    fn pacs(&self, sub: &str) -> Command {
        let mut c = glandseg();
        c.args(["pacs", sub, "--url", &self.url, "--user", &self.user])
            .env("GLANDSEG_PACS_PASSWORD", &self.password);
        c
    }
}

fn dicom_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(dicom_files(&p));
        } else if p.extension().is_some_and(|x| x == "dcm") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// StudyInstanceUID of the images in a folder.
fn study_of(dir: &Path) -> String {
    glandseg_dicom::patient_study_of(&dicom_files(dir)[0])
        .unwrap()
        .1
}

/// Uploads the CT and/or PET of a phantom case folder with STOW-RS.
fn upload(o: &Orthanc, case: &Path, parts: &[&str]) -> String {
    let study = study_of(case);
    let files: Vec<Vec<u8>> = parts
        .iter()
        .flat_map(|p| dicom_files(&case.join(p)))
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    o.client().store(&study, &files).unwrap();
    study
}

/// The series of `study` on the server with modality `m`.
fn series_with(o: &Orthanc, study: &str, m: &str) -> Vec<glandseg_pacs::SeriesRow> {
    o.client()
        .series_of(study)
        .unwrap()
        .into_iter()
        .filter(|s| s.modality == m)
        .collect()
}

/// Retrieves the single instance of the single `m` series of `study`.
fn fetch_one(o: &Orthanc, study: &str, m: &str, dir: &Path) -> PathBuf {
    let s = series_with(o, study, m);
    assert_eq!(s.len(), 1, "one {m} series in {study}: {s:?}");
    let files = o
        .client()
        .retrieve_series(study, &s[0].series_uid, &dir.join(m))
        .unwrap();
    assert_eq!(files.len(), 1);
    files[0].clone()
}

/// Checks that Orthanc holds, in `study`, a SEG that reads back as `expected` (a NIfTI
/// label map from `glandseg predict`), an RTSTRUCT and the PDF report.
fn check_results(o: &Orthanc, study: &str, expected: &Path, scratch: &Path) {
    let nifti = glandseg_nifti::read_labels(expected).unwrap();
    let seg = glandseg_dicom::read_seg(&fetch_one(o, study, "SEG", scratch)).unwrap();
    let map = glandseg_core::LabelMap::default();
    let back = seg.labels_on(nifti.geometry(), &map).unwrap();
    assert!(
        back.as_slice() == nifti.as_slice(),
        "study {study}: the SEG in Orthanc reads back bit for bit as the NIfTI prediction"
    );
    let rt = fetch_one(o, study, "RTSTRUCT", scratch);
    let rois = glandseg_dicom::read_rtstruct(&rt, nifti.geometry()).unwrap();
    assert_eq!(rois.len(), map.foreground().count(), "one ROI per gland");
    // Each ROI filled on the CT grid is its gland's voxels (the contours trace them).
    for roi in &rois {
        let v = map.value(&roi.name).expect("ROI named as the label map");
        let want = nifti.map(|&x| u8::from(x == v));
        let n = want.as_slice().iter().filter(|&&x| x == 1).count();
        if n > 0 {
            let d = glandseg_dicom::dice(&roi.mask, &want);
            assert!(d > 0.999, "ROI {}: Dice {d} with the label map", roi.name);
        } else {
            assert!(roi.mask.as_slice().iter().all(|&x| x == 0), "{}", roi.name);
        }
    }
    let pdf = fetch_one(o, study, "DOC", scratch);
    let doc = dicom_bytes_contain(&pdf, b"%PDF-1.4");
    assert!(doc, "the DOC instance encapsulates a PDF");
}

fn dicom_bytes_contain(path: &Path, needle: &[u8]) -> bool {
    let b = std::fs::read(path).unwrap();
    b.windows(needle.len()).any(|w| w == needle)
}

/// `glandseg predict` on a DICOM folder: the label map the PACS round trip must give.
fn predict_local(model: &Path, case: &Path, out: &Path) -> PathBuf {
    run_ok(
        glandseg()
            .args(["predict", "--quiet", "--no-review", "-m"])
            .arg(model)
            .arg("-i")
            .arg(case)
            .arg("-o")
            .arg(out),
    );
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    out.join(format!("{name}.nii.gz"))
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A child process killed when dropped (a failed assertion must not leave it running).
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a child's stdout lines on a thread into a shared log.
fn collect_lines(out: std::process::ChildStdout) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("  | {line}");
            l2.lock().unwrap().push(line);
        }
    });
    log
}

#[test]
fn pacs_round_trip_with_orthanc() {
    let Some(o) = orthanc() else { return };
    let t_all = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // A tiny model: 300 iterations at 4 mm (about 45 s of CPU) is the least that finds
    // some gland voxels, so that the bit-for-bit check compares more than empty maps.
    let demo = d.join("demo");
    run_ok(
        glandseg()
            .args([
                "demo",
                "--single-stage",
                "--train-cases",
                "2",
                "--test-cases",
                "1",
                "--scale",
                "0.3",
                "--iterations",
                "300",
                "--patch",
                "24",
                "24",
                "24",
                "--spacing",
                "4",
                "--quiet",
                "--out",
            ])
            .arg(&demo),
    );
    let model = demo.join("model");
    // Phantom studies as DICOM: 0 run, 1 without PET, 2 JPEG 2000, 3 watch, 4 PET only
    // (watch skips it), 5 C-STORE.
    let ph = d.join("ph");
    run_ok(
        glandseg()
            .args([
                "phantom", "--cases", "6", "--scale", "0.3", "--seed", "21", "--dicom", "--out",
            ])
            .arg(&ph),
    );
    let case = |i: usize| ph.join("dicom").join(format!("GLAND_{i:03}"));
    let scratch = d.join("scratch");
    let foreground = |p: &Path| {
        glandseg_nifti::read_labels(p)
            .unwrap()
            .as_slice()
            .iter()
            .filter(|&&v| v > 0)
            .count()
    };
    let mut found_any = 0;
    eprintln!(
        "model and phantom ready after {:.1} s",
        t_all.elapsed().as_secs_f64()
    );

    // 1. pacs run.
    let study0 = upload(&o, &case(0), &["CT", "PT"]);
    let expected0 = predict_local(&model, &case(0), &d.join("expected"));
    let t = Instant::now();
    let out = run_ok(o.pacs("run").args(["--study", &study0, "-m"]).arg(&model));
    eprintln!(
        "pacs run: {} ({:.1} s)",
        out.trim(),
        t.elapsed().as_secs_f64()
    );
    assert!(
        out.contains(&study0) && out.contains("SEG, RTSTRUCT and PDF report stored"),
        "{out}"
    );
    check_results(&o, &study0, &expected0, &scratch.join("0"));
    found_any += foreground(&expected0);

    // 2. Clear failures.
    let e = run_fail(
        o.pacs("run")
            .env("GLANDSEG_PACS_PASSWORD", "wrong")
            .args(["--study", &study0, "-m"])
            .arg(&model),
    );
    assert!(
        e.contains("401") && e.contains("credentials") && e.contains(&o.url),
        "{e}"
    );
    let e = run_fail(
        glandseg()
            .args([
                "pacs",
                "run",
                "--url",
                "http://127.0.0.1:1/dicom-web",
                "--study",
                &study0,
                "-m",
            ])
            .arg(&model),
    );
    assert!(
        e.contains("cannot reach") && e.contains("127.0.0.1:1"),
        "{e}"
    );
    let e = run_fail(
        glandseg()
            .args([
                "pacs", "run", "--url", &o.url, "--user", "glandseg", "--study", &study0, "-m",
            ])
            .arg(&model)
            .env_remove("GLANDSEG_PACS_PASSWORD"),
    );
    assert!(e.contains("GLANDSEG_PACS_PASSWORD"), "{e}");
    let study1 = upload(&o, &case(1), &["CT"]);
    let e = run_fail(o.pacs("run").args(["--study", &study1, "-m"]).arg(&model));
    assert!(e.contains(&study1) && e.contains("no PET series"), "{e}");
    let e = run_fail(
        o.pacs("run")
            .args(["--study", "1.2.3.4.5.6.7.8", "-m"])
            .arg(&model),
    );
    assert!(
        e.contains("1.2.3.4.5.6.7.8") && e.contains("not found"),
        "{e}"
    );

    // 3. A JPEG 2000 study (needs pydicom with pylibjpeg-openjpeg to make it).
    let j2k = d.join("j2k").join("GLAND_002");
    let made = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/j2k_study.py"
        ))
        .arg(case(2))
        .arg(&j2k)
        .output();
    match made {
        Ok(m) if m.status.success() => {
            let study2 = upload(&o, &j2k, &["CT", "PT"]);
            let expected2 = predict_local(&model, &case(2), &d.join("expected"));
            let out = run_ok(o.pacs("run").args(["--study", &study2, "-m"]).arg(&model));
            assert!(out.contains("stored"), "{out}");
            check_results(&o, &study2, &expected2, &scratch.join("2"));
            found_any += foreground(&expected2);
            eprintln!("JPEG 2000 study: segmented as its uncompressed original");
        }
        other => {
            assert!(
                std::env::var_os("GLANDSEG_REQUIRE_ORTHANC").is_none(),
                "scripts/j2k_study.py failed (pip install pydicom pylibjpeg pylibjpeg-openjpeg): {other:?}"
            );
            eprintln!("SKIP JPEG 2000 part: scripts/j2k_study.py failed: {other:?}");
        }
    }

    // 4. pacs watch (started once the studies above are stable: Orthanc's StableAge is 2 s
    // in .ci/orthanc.sh, and a watcher starts from the newest change).
    std::thread::sleep(Duration::from_secs(4));
    let state = d.join("watch-state.json");
    let mut child = Child(
        o.pacs("watch")
            .args(["--poll", "0.5", "--state"])
            .arg(&state)
            .arg("-m")
            .arg(&model)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let log = collect_lines(child.0.stdout.take().unwrap());
    wait_for("the watcher's state file", 30, || state.is_file());
    let study4 = upload(&o, &case(4), &["PT"]);
    let study3 = upload(&o, &case(3), &["CT", "PT"]);
    let uploaded = Instant::now();
    let expected3 = predict_local(&model, &case(3), &d.join("expected"));
    let line_for = |study: &str| {
        log.lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(&format!("study {study}:")))
            .cloned()
    };
    wait_for("the watcher to process the PET/CT study", 180, || {
        line_for(&study3).is_some() && line_for(&study4).is_some()
    });
    let done = line_for(&study3).unwrap();
    assert!(done.contains(": done: "), "{done}");
    let skipped = line_for(&study4).unwrap();
    assert!(
        skipped.contains("skipped") && skipped.contains("no CT"),
        "{skipped}"
    );
    eprintln!(
        "watch: SEG stored {:.1} s after the upload ended ({done})",
        uploaded.elapsed().as_secs_f64()
    );
    check_results(&o, &study3, &expected3, &scratch.join("3"));
    found_any += foreground(&expected3);
    // Our own results made Orthanc call the study stable again: still one SEG.
    std::thread::sleep(Duration::from_secs(4));
    drop(child);
    let again = run_ok(
        o.pacs("watch")
            .args(["--once", "--state"])
            .arg(&state)
            .arg("-m")
            .arg(&model),
    );
    assert!(
        !again.contains(&format!("study {study3}")),
        "a restart does not redo a study: {again}"
    );
    assert_eq!(series_with(&o, &study3, "SEG").len(), 1);
    let st: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(st["studies"][&study3]["outcome"], "done");
    assert_eq!(st["studies"][&study4]["outcome"], "skipped");

    // 5. C-STORE in and out.
    match (&o.dicom, which("storescu")) {
        (Some(orthanc_ae), true) => {
            let incoming = d.join("incoming");
            let mut listener = Child(
                glandseg()
                    .args([
                        "pacs",
                        "listen",
                        "--bind",
                        "127.0.0.1:0",
                        "--aet",
                        "GLANDSEG",
                        "--return-to",
                        orthanc_ae,
                        "--incoming",
                    ])
                    .arg(&incoming)
                    .arg("-m")
                    .arg(&model)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            );
            let log = collect_lines(listener.0.stdout.take().unwrap());
            wait_for("the listener's address", 30, || {
                log.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("listening on"))
            });
            let port = log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("listening on"))
                .and_then(|l| l.rsplit(':').next().map(|p| p.trim().to_string()))
                .unwrap();
            let study5 = study_of(&case(5));
            let expected5 = predict_local(&model, &case(5), &d.join("expected"));
            let mut cmd = Command::new("storescu");
            cmd.args([
                "-aet",
                "DCMTK",
                "-aec",
                "GLANDSEG",
                "+sd",
                "127.0.0.1",
                &port,
            ])
            .arg(case(5).join("CT"))
            .arg(case(5).join("PT"));
            run_ok(&mut cmd);
            wait_for("the listener to send results to Orthanc", 180, || {
                log.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(&format!("study {study5}:")))
            });
            let line = log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(&format!("study {study5}:")))
                .cloned()
                .unwrap();
            assert!(line.contains("done"), "{line}");
            check_results(&o, &study5, &expected5, &scratch.join("5"));
            found_any += foreground(&expected5);
            drop(listener);
            // pacs send: a file to Orthanc over C-STORE; a dead peer is named.
            let out = run_ok(
                glandseg()
                    .args(["pacs", "send", "--to", orthanc_ae])
                    .arg(case(1).join("PT")),
            );
            assert!(out.contains("stored"), "{out}");
            assert_eq!(series_with(&o, &study1, "PT").len(), 1);
            let e = run_fail(
                glandseg()
                    .args(["pacs", "send", "--to", "NOBODY@127.0.0.1:1"])
                    .arg(case(1).join("PT")),
            );
            assert!(e.contains("NOBODY@127.0.0.1:1"), "{e}");
        }
        _ => {
            assert!(
                std::env::var_os("GLANDSEG_REQUIRE_ORTHANC").is_none(),
                "C-STORE part needs GLANDSEG_ORTHANC_DICOM and dcmtk's storescu"
            );
            eprintln!("SKIP C-STORE part: GLANDSEG_ORTHANC_DICOM unset or no storescu (apt install dcmtk)");
        }
    }
    assert!(
        found_any > 0,
        "the tiny model found no gland voxel in any study: the SEG checks compared empty maps"
    );
    eprintln!(
        "pacs test done in {:.1} s ({found_any} gland voxels compared bit for bit)",
        t_all.elapsed().as_secs_f64()
    );
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
