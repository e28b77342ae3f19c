//! The whole pipeline from the command line, small enough for two CPU cores: phantom ->
//! plan -> preprocess -> tiny training -> predict -> evaluate -> report (`glandseg demo`),
//! then the same model on the phantom's DICOM export, with a DICOM-SEG and an RTSTRUCT
//! written and read back. Asserts files, geometry and that metrics are computed, not
//! their values (a four-iteration model segments nothing well); and SIGTERM in the middle
//! of `predict` leaves only complete files.

mod common;
#[cfg(unix)]
use common::files_under;
use std::path::Path;
use std::process::Command;

fn glandseg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glandseg"))
}

fn run(args: &[&str], extra: &[&Path]) -> String {
    let o = glandseg().args(args).args(extra).output().unwrap();
    assert!(
        o.status.success(),
        "glandseg {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn demo_then_predict_on_dicom() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let stdout = run(
        &[
            "demo",
            "--train-cases",
            "2",
            "--test-cases",
            "1",
            "--scale",
            "0.3",
            "--iterations",
            "4",
            "--patch",
            "24",
            "24",
            "24",
            "--spacing",
            "4",
            "--stage1-channels",
            "on",
            "--quiet",
            "--out",
        ],
        &[&out],
    );
    assert!(stdout.contains("demo finished"), "{stdout}");
    let ds = out.join("Dataset001_GlandPhantom");
    let case = "GLAND_002";
    // The model folder holds what prediction needs.
    for f in [
        "plans.json",
        "model.json",
        "fold_all/checkpoint_final.ckpt",
        "fold_all/training_log.csv",
        "fold_all/progress.png",
    ] {
        assert!(out.join("model").join(f).is_file(), "model/{f}");
    }
    // Both stages of the cascade in the one model folder; plans.json describes both.
    for f in [
        "stage2/plans.json",
        "stage2/model.json",
        "stage2/atlas.json",
        "stage2/fold_all/checkpoint_final.ckpt",
    ] {
        assert!(out.join("model").join(f).is_file(), "model/{f}");
    }
    let plan: glandseg_plan::Plan =
        serde_json::from_slice(&std::fs::read(out.join("model/plans.json")).unwrap()).unwrap();
    let spec = plan.cascade.clone().expect("the demo's plan has a cascade");
    assert_eq!(spec.fine.labels.num_classes(), 4, "side-less fine classes");
    assert!(spec.fine.target_spacing[0] < plan.target_spacing[0]);
    // Stage 2 reads stage 1's probabilities (asked for above), one side-less prior per
    // gland type.
    assert_eq!(
        spec.fine.prior_channels,
        ["parotid", "submandibular", "lacrimal"],
        "stage 2's prior channels"
    );
    assert_eq!(spec.fine.input_channels(), 5);
    // Prediction on the CT's own grid, with its outputs.
    let pred = glandseg_nifti::read_labels(&out.join("predictions").join(format!("{case}.nii.gz")))
        .unwrap();
    let ct = glandseg_nifti::read_volume(&ds.join("imagesTs").join(format!("{case}_0000.nii.gz")))
        .unwrap();
    assert!(
        pred.geometry().same_grid(ct.geometry(), 1e-4),
        "prediction on the CT grid"
    );
    for f in [
        "stats.csv",
        "stats.json",
        "review.png",
        "prediction.json",
        "seg.dcm",
    ] {
        assert!(
            out.join("predictions").join(case).join(f).is_file(),
            "{case}/{f}"
        );
    }
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("predictions").join(case).join("prediction.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["laterality"].as_array().unwrap().len(), 3);
    // predict ran the cascade without a flag: one box entry per gland, inside the image.
    let boxes = report["cascade"]["boxes"]
        .as_array()
        .expect("cascade in prediction.json");
    assert_eq!(boxes.len(), 6, "{}", report["cascade"]);
    let shape = ct.shape();
    for b in boxes {
        if b["source"] != "none" {
            for a in 0..3 {
                let (lo, hi) = (b["lo"][a].as_u64().unwrap(), b["hi"][a].as_u64().unwrap());
                assert!(lo < hi && hi as usize <= shape[a], "{b}");
            }
        }
    }

    // The fine stage on its own, given the reference labels as stage 1's answer: it runs
    // in a box per gland, changes nothing outside the boxes, and every gland it writes
    // stays on its side (each box's gland label comes from stage 1, not the fine net).
    {
        use glandseg_predict::cascade::FineStage;
        let reference =
            glandseg_nifti::read_labels(&ds.join("labelsTs").join(format!("{case}.nii.gz")))
                .unwrap();
        let pet =
            glandseg_nifti::read_volume(&ds.join("imagesTs").join(format!("{case}_0001.nii.gz")))
                .unwrap();
        let fine = FineStage::<glandseg_net::Cpu>::load(
            &out.join("model").join(&spec.folder),
            &spec,
            vec!["all".into()],
            Default::default(),
        )
        .unwrap()
        .expect("a trained fine stage");
        let mut arg = reference.clone();
        let images = [ct.clone(), pet];
        let rep = fine
            .refine(
                &images,
                ([0; 3], shape),
                &mut arg,
                None,
                &glandseg_core::LabelMap::default(),
                &glandseg_predict::PredictOptions::default(),
                &glandseg_core::NoProgress,
            )
            .unwrap();
        assert_eq!(rep.boxes.len(), 6);
        assert!(rep.boxes.iter().all(|b| b.source == "stage1"), "{rep:?}");
        let [ni, nj, _] = shape;
        for (idx, (&x, &r)) in arg.as_slice().iter().zip(reference.as_slice()).enumerate() {
            if x == r {
                continue;
            }
            let p = [idx % ni, (idx / ni) % nj, idx / (ni * nj)];
            let inside = |v: u8| {
                rep.boxes
                    .iter()
                    .filter(|b| b.label == v)
                    .any(|b| (0..3).all(|a| p[a] >= b.lo[a] && p[a] < b.hi[a]))
            };
            assert!(
                inside(x) || inside(r),
                "voxel {p:?} changed outside every box"
            );
        }
    }
    // Metrics computed for every gland.
    let csv = std::fs::read_to_string(out.join("evaluation/metrics.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 6, "{csv}");
    for r in &rows {
        let dice: f64 = r.split(',').nth(3).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&dice), "{r}");
    }
    assert!(out.join("evaluation/boxplot_dice.png").is_file());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| parotid_left |")
            && md.contains("progress.png")
            && md.contains("## Cascade boxes")
            && md.contains("| GLAND_002 | lacrimal_left |"),
        "{md}"
    );

    // The phantom as DICOM, predicted with the same model, SEG + RTSTRUCT out.
    let phantom = dir.path().join("ph");
    run(
        &[
            "phantom", "--cases", "1", "--scale", "0.3", "--seed", "9", "--dicom", "--out",
        ],
        &[&phantom],
    );
    let dicom_case = phantom.join("dicom").join("GLAND_000");
    assert!(dicom_case.join("CT").is_dir() && dicom_case.join("PT").is_dir());
    let pout = dir.path().join("pred_dicom");
    run(
        &[
            "predict",
            "--quiet",
            "--output-type",
            "nifti,dicom-seg,rtstruct",
            "-m",
        ],
        &[
            &out.join("model"),
            Path::new("-i"),
            &dicom_case,
            Path::new("-o"),
            &pout,
        ],
    );
    let nifti = glandseg_nifti::read_labels(&pout.join("GLAND_000.nii.gz")).unwrap();
    let seg = glandseg_dicom::read_seg(&pout.join("GLAND_000").join("seg.dcm")).unwrap();
    let map = glandseg_core::LabelMap::default();
    let back = seg.labels_on(nifti.geometry(), &map).unwrap();
    assert!(
        back.as_slice() == nifti.as_slice(),
        "the SEG reads back bit-exact"
    );
    assert!(pout.join("GLAND_000").join("rtstruct.dcm").is_file());

    // The same prediction with burn's own layers (the path before the hand-written kernels,
    // GLANDSEG_BURN_KERNELS=1): per-class Dice >= 0.999 and nearly equal probabilities.
    let predict_nifti = |dest: &Path, burn: bool, precision: &str| {
        let mut cmd = glandseg();
        if burn {
            cmd.env("GLANDSEG_BURN_KERNELS", "1");
        }
        let o = cmd
            .args([
                "predict",
                "--quiet",
                "--save-probabilities",
                "--precision",
                precision,
            ])
            .arg("-m")
            .arg(out.join("model"))
            .arg("-i")
            .arg(&dicom_case)
            .arg("-o")
            .arg(dest)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let dice_per_class = |a: &Path, b: &Path, min: f64| {
        let a = glandseg_nifti::read_labels(&a.join("GLAND_000.nii.gz")).unwrap();
        let b = glandseg_nifti::read_labels(&b.join("GLAND_000.nii.gz")).unwrap();
        for class in 0..=6u8 {
            let (mut both, mut na, mut nb) = (0usize, 0usize, 0usize);
            for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
                na += usize::from(*x == class);
                nb += usize::from(*y == class);
                both += usize::from(*x == class && *y == class);
            }
            if na + nb > 0 {
                let dice = 2.0 * both as f64 / (na + nb) as f64;
                assert!(
                    dice >= min,
                    "class {class}: Dice {dice} ({na} vs {nb} voxels)"
                );
            }
        }
    };
    let (fast, before) = (dir.path().join("kernels"), dir.path().join("burn"));
    predict_nifti(&fast, false, "f32");
    predict_nifti(&before, true, "f32");
    dice_per_class(&fast, &before, 0.999);

    // bf16 (AMX) inference: labels within a Dice of 0.005 of f32 per class. Where the CPU
    // has no AMX the run is f32 and says so in a warning.
    let low = dir.path().join("bf16");
    predict_nifti(&low, false, "bf16");
    dice_per_class(&fast, &low, 0.995);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(low.join("GLAND_000").join("prediction.json")).unwrap(),
    )
    .unwrap();
    let ran = report["precision"].as_str().unwrap();
    let warned = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap_or("").contains("bf16"));
    assert!(
        (ran == "bf16" && !warned) || (ran == "f32" && warned),
        "precision {ran}, warnings {}",
        report["warnings"]
    );
    let probs = fast.join("GLAND_000").join("probabilities");
    let mut compared = 0;
    for entry in std::fs::read_dir(&probs).unwrap() {
        let name = entry.unwrap().file_name();
        let p = glandseg_nifti::read_volume(&probs.join(&name)).unwrap();
        let q = glandseg_nifti::read_volume(
            &before.join("GLAND_000").join("probabilities").join(&name),
        )
        .unwrap();
        let worst = p
            .as_slice()
            .iter()
            .zip(q.as_slice())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "{name:?}: probabilities differ by {worst}");
        compared += 1;
    }
    assert_eq!(compared, 7, "one probability map per class");

    #[cfg(unix)]
    sigterm_during_predict_leaves_only_complete_files(
        &out.join("model"),
        &ds.join("imagesTr"),
        dir.path(),
    );
}

/// SIGTERM while `predict` writes (issue #13): exit 128 + 15 with a message, no temporary
/// file left, and every output that is there is complete (each NIfTI reads). Prediction
/// on these small cases is quick, so a run that ends before a temporary file is seen is
/// retried with more to write.
#[cfg(unix)]
fn sigterm_during_predict_leaves_only_complete_files(model: &Path, images: &Path, dir: &Path) {
    let tmp = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".glandseg-tmp-"))
    };
    for attempt in 0..4 {
        let out = dir.join(format!("killed{attempt}"));
        let mut child = glandseg()
            .args(["predict", "--save-probabilities", "--tta-all-axes", "-i"])
            .arg(images)
            .arg("-m")
            .arg(model)
            .arg("-o")
            .arg(&out)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        let caught = loop {
            if files_under(&out).iter().any(|p| tmp(p)) {
                break true;
            }
            if child.try_wait().unwrap().is_some() {
                break false;
            }
            assert!(t.elapsed().as_secs() < 120, "no output started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if !caught {
            continue;
        }
        // SAFETY: sending a signal to our own child process.
        assert_eq!(
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let o = child.wait_with_output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            // It finished between the check and the signal: nothing to test this time.
            continue;
        }
        assert_eq!(o.status.code(), Some(128 + libc::SIGTERM), "{e}");
        assert!(e.contains("stopped by SIGTERM"), "{e}");
        let left = files_under(&out);
        assert!(
            !left.iter().any(|p| tmp(p)),
            "temporary files left: {left:?}"
        );
        for p in &left {
            if p.to_string_lossy().ends_with(".nii.gz") {
                glandseg_nifti::read_volume(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
        }
        return;
    }
    panic!("predict always finished before a temporary file was seen");
}
