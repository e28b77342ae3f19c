//! Cohort runs split over a cluster, and the 3D Slicer output:
//!
//! - `predict --shard I/N` (and the Slurm array variables) over three parts, then
//!   `glandseg gather`, give byte-equal label maps, seg.nrrd files and cohort tables to a
//!   single `glandseg predict` run;
//! - `CASE.seg.nrrd` holds the NIfTI's labels on the NIfTI's grid with Slicer's segment
//!   fields, and pynrrd + slicerio read it (`GLANDSEG_REQUIRE_SLICERIO=1` makes a missing
//!   pynrrd/slicerio a failure instead of a skip; CI sets it);
//! - `glandseg slurm predict|train` scripts, and, when `GLANDSEG_SLURM=1` says a Slurm
//!   cluster is up (CI starts one: scripts/slurm_local.sh), a real 3-task array run
//!   whose gathered outputs equal the single run, and the training scripts run end to end.
//!
//! The model: 60 AdamW iterations of the tiny preset at 4 mm on five 0.3-scale phantom
//! cases (about 15 s), enough to find the parotid and submandibular glands.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The binary under test; `GLANDSEG_EXE` may name a copy of it (where several checkouts
/// share one target folder, another one's build can replace target/debug/glandseg while
/// these tests run).
fn glandseg() -> Command {
    Command::new(
        std::env::var_os("GLANDSEG_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_glandseg").into()),
    )
}

fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

struct Fixture {
    dir: PathBuf,
    ds: PathBuf,
    model: PathBuf,
    single: PathBuf,
}

/// Phantom, tiny model and a single-process prediction, once for every test here.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let ds = dir.join("ds");
        run(glandseg()
            .args([
                "phantom", "--cases", "5", "--scale", "0.3", "--seed", "3", "--out",
            ])
            .arg(&ds));
        run(glandseg()
            .args([
                "plan",
                "--preset",
                "tiny",
                "--cascade",
                "off",
                "--coarse-spacing",
                "4",
            ])
            .arg(&ds));
        let model = dir.join("model");
        run(glandseg()
            .arg("train")
            .arg(&ds)
            .args(["--fold", "all", "--epochs", "1", "--iters-per-epoch", "60"])
            .args([
                "--val-patches",
                "1",
                "--patch",
                "24",
                "24",
                "24",
                "--no-augment",
            ])
            .args(["--optimizer", "adamw", "--lr", "0.003", "--quiet", "-m"])
            .arg(&model));
        let single = dir.join("single");
        run(glandseg()
            .args([
                "predict",
                "--quiet",
                "--output-type",
                "nifti,seg-nrrd",
                "-i",
            ])
            .arg(ds.join("imagesTr"))
            .arg("-m")
            .arg(&model)
            .arg("-o")
            .arg(&single));
        Fixture {
            dir,
            ds,
            model,
            single,
        }
    })
}

const CASES: [&str; 5] = [
    "GLAND_000",
    "GLAND_001",
    "GLAND_002",
    "GLAND_003",
    "GLAND_004",
];

/// Label maps, seg.nrrd files and the cohort tables of `b` are byte-equal to `a`'s.
fn assert_same_outputs(a: &Path, b: &Path) {
    let mut files: Vec<String> = vec!["stats.csv".into(), "stats.json".into()];
    for c in CASES {
        files.push(format!("{c}.nii.gz"));
        files.push(format!("{c}.seg.nrrd"));
        files.push(format!("{c}/stats.csv"));
    }
    for f in files {
        let (x, y) = (std::fs::read(a.join(&f)), std::fs::read(b.join(&f)));
        assert!(
            x.is_ok() && x.as_ref().ok() == y.as_ref().ok(),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Whether the Python cross-check can run; a failure when CI asks for it.
fn python_has(modules: &str, require_var: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        let required = std::env::var(require_var).is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{require_var}=1 but `python3 -c 'import {modules}'` fails"
        );
        eprintln!("skipping the Python cross-check: python3 cannot import {modules}");
    }
    ok
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(name)
}

#[test]
fn shards_then_gather_equal_a_single_run() {
    let f = fixture();
    let out = f.dir.join("sharded");
    let predict = |cmd: &mut Command, extra: &[&str]| {
        run(cmd
            .args(["predict", "--quiet", "--output-type", "seg-nrrd", "-i"])
            .arg(f.ds.join("imagesTr"))
            .arg("-m")
            .arg(&f.model)
            .arg("-o")
            .arg(&out)
            .args(extra))
    };
    // Part 0 by flag; part 1 as task 2 of an `--array=1-3`; part 2 as task 2 of `0-2`.
    predict(&mut glandseg(), &["--shard", "0/3"]);
    predict(
        glandseg()
            .env("SLURM_ARRAY_TASK_ID", "2")
            .env("SLURM_ARRAY_TASK_COUNT", "3")
            .env("SLURM_ARRAY_TASK_MIN", "1"),
        &[],
    );
    // Before the last part, gather names the cases still missing.
    let o = glandseg()
        .arg("gather")
        .arg(&out)
        .arg("-i")
        .arg(f.ds.join("imagesTr"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("2 of 5") && err.contains("GLAND_003, GLAND_004"),
        "{err}"
    );
    predict(
        glandseg()
            .env("SLURM_ARRAY_TASK_ID", "2")
            .env("SLURM_ARRAY_TASK_COUNT", "3"),
        &[],
    );
    // Shards alone leave the cohort tables to gather.
    assert!(!out.join("stats.csv").exists());
    let said = run(glandseg()
        .arg("gather")
        .arg(&out)
        .arg("-i")
        .arg(f.ds.join("imagesTr")));
    assert!(said.contains("5 case(s), 30 gland row(s)"), "{said}");
    assert_same_outputs(&f.single, &out);
    let csv = std::fs::read_to_string(out.join("stats.csv")).unwrap();
    let found = csv
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(3).is_some_and(|v| v != "0"))
        .count();
    assert!(found >= 10, "the model finds glands:\n{csv}");
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(index.contains("GLAND_004/review.png"), "{index}");

    // Bad shards: the message says what is wrong and that I is 0-based.
    for (args, env, want) in [
        (vec!["--shard", "3/3"], vec![], "--shard"),
        (vec!["--shard", "x"], vec![], "--shard"),
        (
            vec![],
            vec![
                ("SLURM_ARRAY_TASK_ID", "7"),
                ("SLURM_ARRAY_TASK_COUNT", "3"),
            ],
            "SLURM_ARRAY_TASK_ID",
        ),
    ] {
        let o = glandseg()
            .envs(env)
            .args(["predict", "-i"])
            .arg(f.ds.join("imagesTr"))
            .arg("-m")
            .arg(&f.model)
            .arg("-o")
            .arg(f.dir.join("bad"))
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.code() == Some(1) && err.contains(want) && err.contains("0-based"),
            "{err}"
        );
    }
}

#[test]
fn seg_nrrd_holds_the_labels_on_the_nifti_grid() {
    let f = fixture();
    let map = glandseg_core::LabelMap::default();
    for c in CASES {
        let nifti = glandseg_nifti::read_labels(&f.single.join(format!("{c}.nii.gz"))).unwrap();
        let seg =
            glandseg_predict::seg_nrrd::read_seg_nrrd(&f.single.join(format!("{c}.seg.nrrd")))
                .unwrap();
        assert_eq!(seg.labels.as_slice(), nifti.as_slice(), "{c}");
        assert!(
            seg.labels
                .geometry()
                .same_grid(nifti.geometry(), glandseg_core::geometry::GRID_TOLERANCE),
            "{c}: {:?} vs {:?}",
            seg.labels.geometry(),
            nifti.geometry()
        );
        let fields = &seg.fields;
        assert_eq!(fields["space"], "left-posterior-superior");
        assert_eq!(fields["encoding"], "gzip");
        for (n, (value, name)) in map.foreground().enumerate() {
            assert_eq!(fields[&format!("Segment{n}_Name")], name);
            assert_eq!(fields[&format!("Segment{n}_LabelValue")], value.to_string());
            assert_eq!(fields[&format!("Segment{n}_Layer")], "0");
            assert!(fields[&format!("Segment{n}_Tags")].contains("TerminologyEntry:"));
        }
    }
    // The reference labels as a seg.nrrd too (every gland present), for the read-back.
    let gt = f.dir.join("gt_segnrrd");
    std::fs::create_dir_all(&gt).unwrap();
    for c in ["GLAND_000", "GLAND_001"] {
        let src = f.ds.join("labelsTr").join(format!("{c}.nii.gz"));
        std::fs::copy(&src, gt.join(format!("{c}.nii.gz"))).unwrap();
        let labels = glandseg_nifti::read_labels(&src).unwrap();
        glandseg_predict::seg_nrrd::write_seg_nrrd(
            &gt.join(format!("{c}.seg.nrrd")),
            &labels,
            &map,
        )
        .unwrap();
    }
    if python_has("nrrd, slicerio, nibabel", "GLANDSEG_REQUIRE_SLICERIO") {
        for dir in [&f.single, &gt] {
            let o = Command::new("python3")
                .arg(script("check_seg_nrrd.py"))
                .arg(dir)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "check_seg_nrrd.py {}:\n{}{}",
                dir.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

#[test]
fn slurm_scripts_for_training_and_prediction() {
    let f = fixture();
    let scripts = f.dir.join("train_scripts");
    let said = run(glandseg()
        .args(["slurm", "train"])
        .arg(&f.ds)
        .arg("-m")
        .arg(f.dir.join("cv model"))
        .arg("--scripts")
        .arg(&scripts)
        .args(["--test-images"])
        .arg(f.ds.join("imagesTr"))
        .args([
            "--stage2",
            "--partition",
            "gpu",
            "--setup",
            "module load cuda",
        ])
        .args(["--", "--epochs", "300"]));
    assert!(said.contains("5 fold(s)"), "{said}");
    let train = std::fs::read_to_string(scripts.join("train.sbatch")).unwrap();
    for want in [
        "#SBATCH --array=0,1,2,3,4",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --partition=gpu",
        "module load cuda",
        "--fold \"$fold\" $resume --quiet --epochs 300",
        "--stage 2",
        "'",
    ] {
        assert!(
            train.contains(want),
            "train.sbatch lacks {want:?}:\n{train}"
        );
    }
    let prep = std::fs::read_to_string(scripts.join("prepare.sbatch")).unwrap();
    assert!(prep.contains("--prepare-only"), "{prep}");
    let fin = std::fs::read_to_string(scripts.join("final.sbatch")).unwrap();
    assert!(
        fin.contains("predict --quiet")
            && fin.contains("--folds 0,1,2,3,4")
            && fin.contains(" gather "),
        "{fin}"
    );
    let submit = std::fs::read_to_string(scripts.join("submit.sh")).unwrap();
    assert_eq!(
        submit.matches("--dependency=afterok:$prev").count(),
        2,
        "{submit}"
    );
    // Options the scripts set themselves are refused after `--`.
    let o = glandseg()
        .args(["slurm", "train"])
        .arg(&f.ds)
        .args(["--scripts"])
        .arg(&scripts)
        .args(["--", "--fold", "2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fold after `--`"));
    // --prepare-only: plan, cache, splits, and no training.
    let m = f.dir.join("prepared");
    run(glandseg()
        .arg("train")
        .arg(&f.ds)
        .args(["--prepare-only", "--fold", "0", "--quiet", "-m"])
        .arg(&m));
    assert!(m.join("splits.json").is_file() && m.join("plans.json").is_file());
    assert!(!m.join("fold_0").join("checkpoint_final.ckpt").exists());
    assert!(f.ds.join("preprocessed").join("cache.json").is_file());
}

/// Runs `bash submit.sh --wait`: returns when the last job ended, failing with the job
/// logs when it did not succeed.
fn submit_and_wait(scripts: &Path) {
    let o = Command::new("bash")
        .arg(scripts.join("submit.sh"))
        .arg("--wait")
        .output()
        .unwrap();
    if !o.status.success() {
        let mut logs = String::new();
        for e in std::fs::read_dir(scripts.join("logs")).unwrap().flatten() {
            logs.push_str(&format!(
                "--- {}\n{}\n",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            ));
        }
        panic!(
            "submit.sh --wait failed:\n{}{}\n{logs}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

fn slurm_up() -> bool {
    if std::env::var("GLANDSEG_SLURM").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!(
        "skipping: no Slurm cluster (GLANDSEG_SLURM=1 is set by .ci/run after scripts/slurm_local.sh starts one)"
    );
    false
}

#[test]
fn slurm_array_prediction_equals_a_single_run() {
    if !slurm_up() {
        return;
    }
    let f = fixture();
    let out = f.dir.join("slurm_out");
    let t = std::time::Instant::now();
    run(glandseg()
        .args(["slurm", "predict", "--tasks", "3", "--cpus-per-task", "1"])
        .args(["--mem", "1G", "--time", "00:10:00", "-i"])
        .arg(f.ds.join("imagesTr"))
        .arg("-m")
        .arg(&f.model)
        .arg("-o")
        .arg(&out)
        .arg("--gt")
        .arg(f.ds.join("labelsTr"))
        .args(["--", "--output-type", "seg-nrrd"]));
    submit_and_wait(&out.join("slurm"));
    eprintln!(
        "Slurm: 3-task prediction array + gather job: {:.1} s wall",
        t.elapsed().as_secs_f64()
    );
    let logs: Vec<String> = std::fs::read_dir(out.join("slurm/logs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        logs.iter().filter(|l| l.starts_with("predict_")).count(),
        3,
        "{logs:?}"
    );
    for n in 0..3 {
        let log = logs
            .iter()
            .find(|l| l.starts_with("predict_") && l.ends_with(&format!("_{n}.out")))
            .unwrap();
        let text = std::fs::read_to_string(out.join("slurm/logs").join(log)).unwrap();
        assert!(text.contains(&format!("shard {n}/3")), "{log}: {text}");
    }
    assert_same_outputs(&f.single, &out);
    assert!(out.join("evaluation").join("metrics.csv").is_file());
}

#[test]
fn slurm_training_array_then_final_job() {
    if !slurm_up() {
        return;
    }
    let f = fixture();
    let model = f.dir.join("slurm_model");
    let pred = f.dir.join("slurm_test_pred");
    let t = std::time::Instant::now();
    run(glandseg()
        .args(["slurm", "train"])
        .arg(&f.ds)
        .arg("-m")
        .arg(&model)
        .args([
            "--folds",
            "0,1",
            "--gpus",
            "0",
            "--cpus-per-task",
            "1",
            "--mem",
            "1G",
        ])
        .args(["--time", "00:10:00", "--test-images"])
        .arg(f.ds.join("imagesTr"))
        .arg("--gt")
        .arg(f.ds.join("labelsTr"))
        .arg("--pred-out")
        .arg(&pred)
        .args([
            "--",
            "--epochs",
            "1",
            "--iters-per-epoch",
            "2",
            "--val-patches",
            "1",
        ])
        .args(["--patch", "24", "24", "24", "--no-augment"]));
    submit_and_wait(&model.join("slurm"));
    eprintln!(
        "Slurm: prepare + 2-fold training array + final job: {:.1} s wall",
        t.elapsed().as_secs_f64()
    );
    for fold in ["fold_0", "fold_1"] {
        assert!(model.join(fold).join("checkpoint_final.ckpt").is_file());
    }
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(pred.join("GLAND_000").join("prediction.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["folds"].as_array().unwrap().len(), 2, "{report}");
    assert!(pred.join("stats.csv").is_file());
    assert!(pred.join("evaluation").join("metrics.csv").is_file());
}

/// `chromium` on PATH, or why the review page test is skipped (a failure when
/// `GLANDSEG_REQUIRE_CHROMIUM=1`, which CI sets).
fn chromium_or_skip(page: &Path) -> Option<PathBuf> {
    let required = std::env::var("GLANDSEG_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
    if !page.is_file() {
        assert!(
            !required,
            "{} not written: niivue missing? (bash scripts/fetch_niivue.sh)",
            page.display()
        );
        eprintln!("skipping: no review.html (niivue not fetched: bash scripts/fetch_niivue.sh)");
        return None;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !required,
            "GLANDSEG_REQUIRE_CHROMIUM=1 but no chromium on PATH"
        );
        eprintln!("skipping: no chromium on PATH (apt-get install chromium)");
    }
    found
}

/// Pixels of `img` within `tol` (per channel) of `rgb`.
fn count_colour(img: &image::RgbImage, rgb: [u8; 3], tol: i32) -> usize {
    img.pixels()
        .filter(|p| (0..3).all(|c| (p.0[c] as i32 - rgb[c] as i32).abs() <= tol))
        .count()
}

#[test]
fn review_page_loads_in_headless_chromium_and_shows_the_glands() {
    let f = fixture();
    let case = "GLAND_001";
    let page = f.single.join(case).join("review.html");
    let Some(chromium) = chromium_or_skip(&page) else {
        return;
    };
    let html = std::fs::read_to_string(&page).unwrap();
    let size = html.len();
    eprintln!("{case}/review.html: {:.2} MB", size as f64 / 1e6);
    assert!(size < 3_000_000, "review.html is {size} bytes");
    assert!(
        !html.contains("http://") && !html.contains("https://niivue.com\""),
        "no network references"
    );
    for must in [
        "<td class=\"n\">",
        "parotid_left",
        "data-ras=",
        "review.png",
    ] {
        assert!(html.contains(must), "page lacks {must:?}");
    }
    let profile = tempfile::tempdir().unwrap();
    let shot = f.dir.join(format!("{case}_review.png"));
    let t = std::time::Instant::now();
    let o = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--enable-logging=stderr",
            "--v=0",
            "--hide-scrollbars",
            "--window-size=1400,700",
            "--virtual-time-budget=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!("chromium: {:.1} s", t.elapsed().as_secs_f64());
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(
        o.status.success() && shot.is_file(),
        "chromium failed:\n{log}"
    );
    assert!(
        console.iter().any(|l| l.contains("glandseg-review: ready")),
        "the page never said ready; console:\n{}\nlog:\n{log}",
        console.join("\n")
    );
    let errors: Vec<&&str> = console
        .iter()
        .filter(|l| {
            l.contains(":ERROR:") || l.contains("glandseg-review: error") || l.contains("Uncaught")
        })
        .collect();
    assert!(errors.is_empty(), "console errors:\n{errors:#?}");
    // The screenshot: the glands' colours (the DICOM-SEG palette, which neither the grey
    // CT nor the hot PET map produce) in the views, for every gland the model found.
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (1400, 700));
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.single.join(case).join("stats.json")).unwrap())
            .unwrap();
    let view = image::imageops::crop_imm(&img, 0, 0, 1400 - 460, 700).to_image();
    let mut seen = 0;
    for g in stats["glands"].as_array().unwrap() {
        let label = g["label"].as_u64().unwrap() as u8;
        if g["voxels"].as_u64().unwrap() == 0 || !matches!(label, 2 | 4) {
            continue;
        }
        // parotid_right (green) and submandibular_right (blue): colours the hot map and
        // the crosshair never make.
        let rgb = glandseg_dicom::seg::label_colour(label);
        let n = count_colour(&view, rgb, 40);
        eprintln!("{}: {n} pixels of rgb{rgb:?}", g["name"]);
        assert!(
            n >= 30,
            "{}: {n} pixels of its colour in the views",
            g["name"]
        );
        seen += 1;
    }
    assert!(
        seen >= 1,
        "no right parotid or submandibular gland found to look for"
    );
    // Dark background with a grey CT: most of the views are neither black nor white.
    let lit = view
        .pixels()
        .filter(|p| p.0.iter().any(|&c| c > 40))
        .count();
    assert!(
        lit > (view.width() * view.height()) as usize / 10,
        "the views are mostly empty ({lit} lit pixels)"
    );
}
