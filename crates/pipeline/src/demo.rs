//! `glandseg demo` as a library call: the whole pipeline on the built-in synthetic cohort,
//! phantom -> plan -> preprocess -> train -> predict -> evaluate -> report, each stage through
//! its crate's entry point, sized to finish in minutes on a 2-core CPU.

use anyhow::{Context, Result};
use glandseg_core::{LabelMap, Progress};
use glandseg_eval::report::CaseMetrics;
use glandseg_net::NetAutodiffBackend;
use glandseg_phantom::{write_dataset, Fov, PhantomConfig, Style};
use glandseg_plan::naming::{channel_file, label_file};
use glandseg_plan::{fingerprint, make_plan, Dataset, PlanOptions, PlanOverrides, Preset};
use glandseg_predict::export::{ExportOptions, OutputType};
use glandseg_predict::input::Inputs;
use glandseg_predict::{predict_job, PredictJob, PredictOptions};
use glandseg_train::augment::MirrorMode;
use glandseg_train::{train_fold, OptimizerKind, TrainConfig, TrainJob};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The demo's settings (the command line's `glandseg demo` options).
#[derive(Clone, Debug)]
pub struct DemoJob {
    /// Output folder (dataset, model, predictions, evaluation, report.md).
    pub out: PathBuf,
    /// Training cases.
    pub train_cases: usize,
    /// Held-out cases, predicted and evaluated.
    pub test_cases: usize,
    /// Phantom resolution factor.
    pub scale: f64,
    /// Training time budget, minutes (the number of iterations is fitted to it).
    pub train_minutes: f64,
    /// Isotropic target spacing of the network, mm.
    pub spacing: f64,
    /// Patch size, voxels.
    pub patch: [usize; 3],
    /// Network widths.
    pub preset: Preset,
    /// Optimiser.
    pub optimizer: OptimizerKind,
    /// Initial learning rate (default: the optimiser's).
    pub lr: Option<f64>,
    /// Seed of the cohort and the training.
    pub seed: u64,
    /// Fixed number of training iterations instead of the time budget.
    pub iterations: Option<usize>,
    /// Train and predict a coarse-to-fine cascade (stage 2 at the data's own spacing in
    /// boxes around each gland); false: the single coarse stage.
    pub cascade: bool,
    /// Share of the training time that goes to stage 2 of the cascade.
    pub fine_share: f64,
    /// Stage 2 reads stage 1's probabilities as extra input channels.
    pub stage1_channels: bool,
    /// Phantom style of the training cohort (`mixed`: each case draws one).
    pub style: Style,
    /// Phantom style of the held-out cases (default: the training cohort's): train on
    /// one style, test on the other, and see the drop.
    pub test_style: Option<Style>,
    /// Input channels the network sees (default: all); the others are withheld.
    pub channels: Option<Vec<String>>,
    /// Left-right mirroring in training.
    pub mirror: MirrorMode,
    /// Test-time left-right mirroring (with the label swap) at prediction.
    pub tta: bool,
}

impl Default for DemoJob {
    /// The command line's defaults (`glandseg demo`).
    fn default() -> Self {
        DemoJob {
            out: "out/demo".into(),
            train_cases: 10,
            test_cases: 3,
            scale: 1.0,
            train_minutes: 6.0,
            spacing: 3.0,
            patch: [32; 3],
            preset: Preset::Tiny,
            optimizer: OptimizerKind::AdamW,
            lr: None,
            seed: 0,
            iterations: None,
            cascade: true,
            fine_share: 0.7,
            stage1_channels: false,
            style: Style::Mixed,
            test_style: None,
            channels: None,
            mirror: MirrorMode::Swap,
            tta: true,
        }
    }
}

/// What the demo produced.
pub struct DemoOutcome {
    /// The report (report.md).
    pub report: PathBuf,
    /// Held-out metrics per case.
    pub cases: Vec<CaseMetrics>,
    /// Wall time, minutes.
    pub minutes: f64,
}

fn stage(progress: &dyn Progress, n: usize, name: &str) {
    progress.note(&format!("== [{n}/6] {name}"));
}

/// Moves the last `test` cases of a freshly written cohort into imagesTs/labelsTs.
pub fn hold_out(ds_dir: &Path, ids: &[String], test: usize) -> Result<Vec<String>> {
    let held: Vec<String> = ids[ids.len() - test..].to_vec();
    for d in ["imagesTs", "labelsTs"] {
        std::fs::create_dir_all(ds_dir.join(d))?;
    }
    for id in &held {
        for c in 0..2 {
            let f = channel_file(id, c, ".nii.gz");
            std::fs::rename(
                ds_dir.join("imagesTr").join(&f),
                ds_dir.join("imagesTs").join(&f),
            )
            .with_context(|| format!("moving {f} to imagesTs"))?;
        }
        let f = label_file(id, ".nii.gz");
        std::fs::rename(
            ds_dir.join("labelsTr").join(&f),
            ds_dir.join("labelsTs").join(&f),
        )
        .with_context(|| format!("moving {f} to labelsTs"))?;
    }
    let dj = ds_dir.join("dataset.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&dj)?)?;
    v["numTraining"] = serde_json::json!(ids.len() - test);
    v["numTest"] = serde_json::json!(test);
    glandseg_core::atomic::write_json(&dj, &v)?;
    Ok(held)
}

/// Runs the demo, training on backend `B` and predicting on its inner backend. Stage
/// headers go to `progress` as notes; `print` receives the result lines (a trained fold, a
/// predicted case) that the command line prints on stdout.
pub fn run_demo<B: NetAutodiffBackend>(
    job: &DemoJob,
    progress: &dyn Progress,
    print: &dyn Fn(&str),
) -> Result<DemoOutcome> {
    anyhow::ensure!(job.train_cases >= 2, "--train-cases must be at least 2");
    anyhow::ensure!(job.test_cases >= 1, "--test-cases must be at least 1");
    anyhow::ensure!(
        job.spacing > 0.3 && job.spacing < 10.0,
        "--spacing must be in (0.3, 10) mm"
    );
    anyhow::ensure!(
        job.patch.iter().all(|&v| (8..=512).contains(&v)),
        "--patch must be 3 sizes between 8 and 512 voxels, got {:?}",
        job.patch
    );
    anyhow::ensure!(
        job.scale > 0.05 && job.scale <= 4.0,
        "--scale must be in (0.05, 4], got {}",
        job.scale
    );
    anyhow::ensure!(
        job.fine_share > 0.0 && job.fine_share < 1.0,
        "--fine-share must be between 0 and 1, got {}",
        job.fine_share
    );
    let t0 = Instant::now();
    let mut timings: Vec<(&str, f64)> = Vec::new();
    std::fs::create_dir_all(&job.out).with_context(|| format!("creating {}", job.out.display()))?;
    let ds_dir = job.out.join("Dataset001_GlandPhantom");

    // 1. Cohort.
    stage(progress, 1, "synthetic PET/CT cohort");
    let t = Instant::now();
    let total = job.train_cases + job.test_cases;
    if ds_dir.exists() {
        std::fs::remove_dir_all(&ds_dir)
            .with_context(|| format!("clearing {}", ds_dir.display()))?;
    }
    progress.start("phantom", total as u64);
    let cfg = PhantomConfig {
        seed: job.seed,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale: job.scale,
        style: job.style,
        style_from: job.test_style.map(|s| (job.train_cases, s)),
    };
    write_dataset(&ds_dir, &cfg, total, false, &|_| progress.inc(1))?;
    progress.finish();
    let ids: Vec<String> = (0..total).map(glandseg_phantom::case_id).collect();
    let held = hold_out(&ds_dir, &ids, job.test_cases)?;
    timings.push(("phantom", t.elapsed().as_secs_f64()));

    // 2. Plan.
    stage(progress, 2, "fingerprint and plan");
    let t = Instant::now();
    let ds = Dataset::open(&ds_dir)?;
    let fp = fingerprint(&ds, job.seed)?;
    let plan = make_plan(
        &fp,
        &ds.labels,
        &ds.channels,
        &PlanOptions {
            budget_gb: 2.0,
            preset: job.preset,
        },
    );
    // The demo's own choices: a coarse isotropic grid and a small patch, so that a
    // network learns the glands within minutes on two cores.
    let plan = plan.with_overrides(&PlanOverrides {
        spacing: Some([job.spacing; 3]),
        patch: Some([job.patch[0], job.patch[1], job.patch[2]]),
        batch: Some(2),
        channels: None,
    });
    let mut plan = plan;
    if let Some(keep) = &job.channels {
        for k in keep {
            anyhow::ensure!(
                plan.channels.iter().any(|c| c.eq_ignore_ascii_case(k)),
                "--channels: the cohort has no channel {k:?} (its channels: {})",
                plan.channels.join(", ")
            );
        }
    }
    if job.cascade {
        let fine = glandseg_plan::cascade::fine_spacing(&fp, 0.8);
        let (_, reason) = glandseg_plan::cascade::needs_cascade(&fp, [job.spacing; 3], fine);
        plan.cascade = Some(glandseg_plan::cascade::plan_cascade(
            &plan,
            fine,
            None,
            job.preset,
            job.stage1_channels,
            reason,
        ));
    }
    if let Some(keep) = &job.channels {
        plan.withhold_channels(keep);
    }
    glandseg_core::atomic::write_json(&ds_dir.join("plans").join("plans.json"), &plan)?;
    timings.push(("plan", t.elapsed().as_secs_f64()));
    progress.note(&format!(
        "   spacing {:.1} mm, patch {:?}, {} stages, features {:?}",
        job.spacing,
        plan.patch_size,
        plan.stages.len(),
        plan.stages.iter().map(|s| s.features).collect::<Vec<_>>()
    ));

    // 3+4. Preprocess and train (fold "all": every training case).
    stage(progress, 3, "preprocess and train");
    let t = Instant::now();
    let model_dir = job.out.join("model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)?;
    }
    let mut config = TrainConfig {
        val_patches: 12,
        seed: job.seed,
        ..TrainConfig::checked(1, 1, job.optimizer, job.lr)?
    };
    job.mirror.apply(&mut config.augment);
    let stage1_minutes = if job.cascade {
        job.train_minutes * (1.0 - job.fine_share)
    } else {
        job.train_minutes
    };
    let iterations = match job.iterations {
        Some(n) => n.max(1),
        None => {
            let cache =
                glandseg_train::Cache::build(&ds, &plan, &ds_dir.join("preprocessed"), progress)?;
            let secs = glandseg_train::trainer::seconds_per_iteration::<B>(
                &plan,
                &cache,
                &config,
                &Default::default(),
                7,
            )?;
            let n = ((stage1_minutes * 60.0) / (secs * 1.15)).floor().max(10.0) as usize;
            progress.note(&format!(
                "   {secs:.2} s per iteration: {n} iterations fit {stage1_minutes:.1} min"
            ));
            n
        }
    };
    config.iters_per_epoch = iterations.clamp(1, 25);
    config.epochs = iterations.div_ceil(config.iters_per_epoch);
    let command = format!(
        "glandseg demo --out {} --train-cases {} --test-cases {} --scale {} --spacing {} --seed {} --style {}{}",
        job.out.display(),
        job.train_cases,
        job.test_cases,
        job.scale,
        job.spacing,
        job.seed,
        job.style,
        job.test_style
            .map(|s| format!(" --test-style {s}"))
            .unwrap_or_default()
    );
    let train = TrainJob {
        dataset: ds_dir.clone(),
        fold: "all".into(),
        model_dir: Some(model_dir.clone()),
        plan: None,
        cache: None,
        overrides: PlanOverrides::default(),
        config,
        resume: false,
        command,
    };
    let out = train_fold::<B>(&train, &Default::default(), progress)?;
    if let Some(line) = out.summary_line() {
        print(&line);
    }
    if let Some(cascade) = &plan.cascade {
        let fine_plan = &cascade.fine;
        progress.note(&format!(
            "   stage 2: {:.2} x {:.2} x {:.2} mm, patch {:?}, in boxes around each gland",
            fine_plan.target_spacing[0],
            fine_plan.target_spacing[1],
            fine_plan.target_spacing[2],
            fine_plan.patch_size
        ));
        let mut fine_config = train.config.clone();
        fine_config.oversample_foreground = 1.0;
        let iterations = match job.iterations {
            Some(n) => n.max(1),
            None => {
                let cache = glandseg_train::Cache::build(
                    &ds,
                    fine_plan,
                    &ds_dir.join("preprocessed_stage2"),
                    progress,
                )?;
                let secs = glandseg_train::trainer::seconds_per_iteration::<B>(
                    fine_plan,
                    &cache,
                    &fine_config,
                    &Default::default(),
                    7,
                )?;
                let minutes = job.train_minutes * job.fine_share;
                let n = ((minutes * 60.0) / (secs * 1.15)).floor().max(10.0) as usize;
                progress.note(&format!(
                    "   stage 2: {secs:.2} s per iteration: {n} iterations fit {minutes:.1} min"
                ));
                n
            }
        };
        fine_config.iters_per_epoch = iterations.clamp(1, 25);
        fine_config.epochs = iterations.div_ceil(fine_config.iters_per_epoch);
        let fine_job = TrainJob {
            config: fine_config,
            command: format!("{} (stage 2)", train.command),
            ..train.clone()
        };
        let out = glandseg_train::train_fine_stage::<B>(&fine_job, &Default::default(), progress)?;
        if let Some(line) = out.summary_line() {
            print(&format!("stage 2 {line}"));
        }
    }
    timings.push(("preprocess + train", t.elapsed().as_secs_f64()));

    // 5. Predict the held-out cases.
    stage(progress, 4, "predict held-out cases");
    let t = Instant::now();
    let pred_dir = job.out.join("predictions");
    let predict = PredictJob {
        inputs: Inputs::Folder(ds_dir.join("imagesTs")),
        model: model_dir.clone(),
        out: pred_dir.clone(),
        folds: Vec::new(),
        options: PredictOptions {
            mirror_lr: job.tta,
            ..PredictOptions::default()
        },
        export: ExportOptions {
            outputs: vec![OutputType::Nifti, OutputType::DicomSeg],
            ..ExportOptions::default()
        },
        shard: None,
    };
    predict_job::<B::InnerBackend>(&predict, Default::default(), progress, |id, pred| {
        print(&glandseg_predict::job::case_line(&pred_dir, id, pred))
    })?;
    timings.push(("predict", t.elapsed().as_secs_f64()));

    // 6. Evaluate and report.
    stage(progress, 5, "evaluate");
    let t = Instant::now();
    let map = LabelMap::default();
    let eval_dir = job.out.join("evaluation");
    let cases = glandseg_eval::evaluate_folder(
        &pred_dir,
        &ds_dir.join("labelsTs"),
        &map,
        &eval_dir,
        progress,
    )?;
    timings.push(("evaluate", t.elapsed().as_secs_f64()));
    stage(progress, 6, "report");
    let report = write_report(
        job, &ds_dir, &model_dir, &pred_dir, &eval_dir, &held, &cases, &timings, t0,
    )?;
    Ok(DemoOutcome {
        report,
        cases,
        minutes: t0.elapsed().as_secs_f64() / 60.0,
    })
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    a: &DemoJob,
    ds_dir: &Path,
    model_dir: &Path,
    pred_dir: &Path,
    eval_dir: &Path,
    held: &[String],
    cases: &[glandseg_eval::report::CaseMetrics],
    timings: &[(&str, f64)],
    t0: Instant,
) -> Result<PathBuf> {
    let rel = |p: &Path| {
        p.strip_prefix(&a.out)
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    };
    let mut md = String::new();
    let _ = writeln!(md, "# glandseg demo report\n");
    let _ = writeln!(
        md,
        "Synthetic head-and-neck PSMA PET/CT cohort (phantom scale {}), {} training cases, {} held-out cases; glandseg {}; {} CPU threads.\n",
        a.scale,
        a.train_cases,
        a.test_cases,
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let _ = writeln!(
        md,
        "Phantom style: training {}, held-out {}. Channels: {}. Mirroring in training: {:?}; test-time mirroring: {}.\n",
        a.style,
        a.test_style.unwrap_or(a.style),
        a.channels
            .as_ref()
            .map(|c| c.join("+"))
            .unwrap_or_else(|| "all".into()),
        a.mirror,
        if a.tta { "on" } else { "off" }
    );
    let _ = writeln!(
        md,
        "Dataset: `{}`  \nModel: `{}`  \nPredictions: `{}`\n",
        rel(ds_dir),
        rel(model_dir),
        rel(pred_dir)
    );
    let _ = writeln!(md, "## Held-out metrics (mean ± std over cases)\n");
    let _ = writeln!(
        md,
        "| gland | Dice | HD95 (mm) | ASSD (mm) | NSD 2 mm | volume diff (%) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    let ms = |s: &glandseg_eval::report::Stat| match (s.mean, s.std) {
        (Some(m), Some(sd)) => format!("{m:.3} ± {sd:.3}"),
        (Some(m), None) => format!("{m:.3}"),
        _ => "-".into(),
    };
    for s in &glandseg_eval::report::summarise(cases) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            s.name,
            ms(&s.dice),
            ms(&s.hd95),
            ms(&s.assd),
            ms(&s.nsd_2mm),
            ms(&s.volume_diff_pct)
        );
    }
    let _ = writeln!(
        md,
        "\nPer case: `{}`; box plots: `{}`.\n",
        rel(&eval_dir.join("metrics.csv")),
        rel(eval_dir)
    );
    let _ = writeln!(
        md,
        "![Dice per gland]({})\n",
        rel(&eval_dir.join("boxplot_dice.png"))
    );
    let _ = writeln!(
        md,
        "## Training\n\n![training curve]({})\n",
        rel(&model_dir.join("fold_all").join("progress.png"))
    );
    let stage2 = model_dir.join("stage2");
    if stage2.join("fold_all").join("progress.png").is_file() {
        let _ = writeln!(
            md,
            "Stage 2 of the cascade (the fine network in a box around each gland):\n\n![stage 2 training curve]({})\n",
            rel(&stage2.join("fold_all").join("progress.png"))
        );
        let _ = writeln!(
            md,
            "## Cascade boxes per held-out case\n\nWhere each gland's stage-2 box came from (`stage1`: the coarse network found the gland; `stage1-peak`: its argmax missed the gland, the box is centred on its probability peak; `atlas`: placed from the other glands; `none`: no box) and its voxels on the CT grid before -> after stage 2.\n\n| case | gland | box from | voxels |\n|---|---|---|---|"
        );
        for id in held {
            let Ok(bytes) = std::fs::read(pred_dir.join(id).join("prediction.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            for b in v["cascade"]["boxes"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    md,
                    "| {id} | {} | {} | {} -> {} |",
                    b["name"].as_str().unwrap_or("?"),
                    b["source"].as_str().unwrap_or("?"),
                    b["voxels_stage1"],
                    b["voxels_stage2"]
                );
            }
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "## Review images (predicted outlines over CT and PET)\n"
    );
    for id in held {
        let _ = writeln!(
            md,
            "### {id}\n\n![{id}]({})\n",
            rel(&pred_dir.join(id).join("review.png"))
        );
        let _ = writeln!(
            md,
            "Uptake table: `{}`\n",
            rel(&pred_dir.join(id).join("stats.csv"))
        );
    }
    let _ = writeln!(md, "## Time per stage\n\n| stage | seconds |\n|---|---|");
    for (n, s) in timings {
        let _ = writeln!(md, "| {n} | {s:.1} |");
    }
    let _ = writeln!(md, "| total | {:.1} |", t0.elapsed().as_secs_f64());
    let path = a.out.join("report.md");
    glandseg_core::atomic::write_bytes(&path, md.as_bytes())?;
    Ok(path)
}
