//! Bad input at the command line (issue #13): an output folder that cannot be written, a
//! model folder from another glandseg, and SIGTERM in the middle of `convert`. Each fails
//! with a message naming the path, a non-zero exit and no half-written file.

mod common;
use common::files_under;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn glandseg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glandseg"))
}

fn phantom(dir: &Path, cases: &str, scale: &str, dicom: bool) -> PathBuf {
    let ds = dir.join("ds");
    let mut c = glandseg();
    c.args(["phantom", "--cases", cases, "--scale", scale, "--out"])
        .arg(&ds);
    if dicom {
        c.arg("--dicom");
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    ds
}

fn failed_naming(o: &Output, words: &[&str]) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    for w in words {
        assert!(e.contains(w), "{w:?} not in: {e}");
    }
    e
}

#[test]
fn unwritable_output_folder_is_named_before_any_work() {
    // A path whose parent is a file (a read-only folder would do for a normal user, but
    // not for root, who may write anywhere).
    let dir = tempfile::tempdir().unwrap();
    let ds = phantom(dir.path(), "1", "0.3", true);
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "a file, not a folder").unwrap();
    let bad = file.join("out");
    let bad_s = bad.display().to_string();

    let o = glandseg()
        .args(["stats", "--labels"])
        .arg(ds.join("labelsTr/GLAND_000.nii.gz"))
        .arg("--pet")
        .arg(ds.join("imagesTr/GLAND_000_0001.nii.gz"))
        .arg("-o")
        .arg(&bad)
        .output()
        .unwrap();
    failed_naming(&o, &[&bad_s, "output folder", "cannot create it"]);

    let o = glandseg()
        .arg("convert")
        .arg(ds.join("dicom"))
        .arg("-o")
        .arg(&bad)
        .output()
        .unwrap();
    failed_naming(&o, &[&bad_s, "output folder", "cannot create it"]);

    // predict checks its output folder before it loads the model (minutes of work for a
    // real one): a missing model is not even looked at.
    let o = glandseg()
        .args(["predict", "-i"])
        .arg(ds.join("imagesTr"))
        .arg("-m")
        .arg(dir.path().join("no-model"))
        .arg("-o")
        .arg(&bad)
        .output()
        .unwrap();
    failed_naming(&o, &[&bad_s, "output folder"]);

    // An output "folder" that is an existing file.
    let o = glandseg()
        .arg("convert")
        .arg(ds.join("dicom"))
        .arg("-o")
        .arg(&file)
        .output()
        .unwrap();
    failed_naming(&o, &["notes.txt", "is not a folder"]);

    // Nothing was written anywhere: the temp dir holds the dataset and the file only.
    assert_eq!(std::fs::read(&file).unwrap(), b"a file, not a folder");
    let top: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(top.len(), 2, "{top:?}");
}

#[test]
fn model_folder_from_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ds = phantom(dir.path(), "1", "0.3", false);
    let model = dir.path().join("model");
    let o = glandseg()
        .arg("plan")
        .arg(&ds)
        .args(["--preset", "tiny", "--cascade", "off", "-o"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plans: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("plans.json")).unwrap()).unwrap();
    let info = serde_json::json!({
        "format_version": 1,
        "glandseg_version": "0.1.0",
        "channels": ["CT", "PET"],
        "labels": plans["labels"],
        "commands": ["glandseg train (hand-made for this test)"],
    });
    let predict = |out: &Path| {
        glandseg()
            .args(["predict", "-i"])
            .arg(ds.join("imagesTr"))
            .arg("-m")
            .arg(&model)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };
    let write = |name: &str, v: &serde_json::Value| {
        std::fs::write(model.join(name), serde_json::to_vec_pretty(v).unwrap()).unwrap()
    };

    // A future model folder format, written by a later glandseg.
    let mut future = info.clone();
    future["format_version"] = 2.into();
    future["glandseg_version"] = "9.0.0".into();
    write("model.json", &future);
    let out = dir.path().join("pred1");
    let e = failed_naming(
        &predict(&out),
        &["model.json", "format_version 2", "9.0.0", "reads version 1"],
    );
    assert!(files_under(&out).is_empty(), "{e}");

    // model.json without a field this glandseg needs (an older or another program's).
    let mut missing = info.clone();
    missing.as_object_mut().unwrap().remove("labels");
    write("model.json", &missing);
    failed_naming(
        &predict(&dir.path().join("pred2")),
        &["model.json", "missing field `labels`", "glandseg 0.1.0"],
    );

    // plans.json from another version: a field renamed away, then a network of no stages.
    write("model.json", &info);
    let mut p = plans.clone();
    p.as_object_mut().unwrap().remove("stages");
    write("plans.json", &p);
    failed_naming(
        &predict(&dir.path().join("pred3")),
        &["plans.json", "missing field `stages`"],
    );
    let mut p = plans.clone();
    p["stages"] = serde_json::json!([]);
    write("plans.json", &p);
    failed_naming(
        &predict(&dir.path().join("pred4")),
        &["plans.json", "\"stages\" holds 0 stages"],
    );
}

#[cfg(unix)]
#[test]
fn sigterm_during_convert_leaves_only_complete_files() {
    let dir = tempfile::tempdir().unwrap();
    // Two cases at 0.7 scale: a couple of seconds of conversion, most of it writing
    // compressed NIfTI files.
    let ds = phantom(dir.path(), "2", "0.7", true);
    let out = dir.path().join("converted");
    let mut child = glandseg()
        .arg("convert")
        .arg(ds.join("dicom"))
        .arg("-o")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until an output is being written (a temporary file exists), then stop it.
    let t = std::time::Instant::now();
    let tmp = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".glandseg-tmp-"))
    };
    loop {
        if files_under(&out).iter().any(|p| tmp(p)) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "convert ended before it was stopped"
        );
        assert!(t.elapsed().as_secs() < 120, "no output started");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // SAFETY: sending a signal to our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{e}");
    assert!(e.contains("stopped by SIGTERM"), "{e}");
    let left = files_under(&out);
    assert!(
        !left.iter().any(|p| tmp(p)),
        "temporary files left: {left:?}"
    );
    // What is there is complete: every NIfTI reads, and there is no dataset.json yet, so
    // nobody trains on a half dataset (a second convert refuses the non-empty folder).
    for p in &left {
        if p.to_string_lossy().ends_with(".nii.gz") {
            glandseg_nifti::read_volume(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    assert!(!out.join("dataset.json").exists());
    let again = glandseg()
        .arg("convert")
        .arg(ds.join("dicom"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    if !left.is_empty() {
        failed_naming(&again, &["is not empty"]);
    }
}

/// A full disk, simulated with a file-size limit (RLIMIT_FSIZE: a write past it fails with
/// EFBIG, as a write to a full disk fails with ENOSPC; mounting a small tmpfs needs
/// privileges a test does not have). `convert` must stop with the file named, exit 1 and
/// leave neither a temporary nor a truncated file.
#[cfg(unix)]
#[test]
fn full_disk_during_convert_names_the_file_and_leaves_no_partial_output() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let ds = phantom(dir.path(), "1", "0.5", true);
    let out = dir.path().join("converted");
    let mut c = glandseg();
    c.arg("convert").arg(ds.join("dicom")).arg("-o").arg(&out);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            // Ignored dispositions survive exec: the write fails instead of SIGXFSZ killing.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 48 * 1024,
                rlim_max: 48 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().unwrap();
    let e = failed_naming(&o, &["converted"]);
    assert!(
        e.contains("File too large") || e.contains("file too large"),
        "the cause is not named: {e}"
    );
    let left = files_under(&out);
    assert!(
        !left.iter().any(|p| p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".glandseg-tmp-"))),
        "temporary files left: {left:?}"
    );
    for p in &left {
        if p.to_string_lossy().ends_with(".nii.gz") {
            glandseg_nifti::read_volume(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
    assert!(!out.join("dataset.json").exists());
}
