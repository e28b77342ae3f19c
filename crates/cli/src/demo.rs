//! `glandseg demo`: the whole pipeline on the built-in synthetic cohort, as a new user's
//! first command. phantom -> plan -> preprocess -> train -> predict -> evaluate -> report,
//! each stage with its own progress bar, sized to finish in minutes on a 2-core CPU.

use crate::progress::Bars;
use anyhow::{Context, Result};
use clap::Args;
use glandseg_core::{LabelMap, Progress};
use glandseg_phantom::{write_dataset, Fov, PhantomConfig};
use glandseg_plan::naming::{channel_file, label_file};
use glandseg_plan::{fingerprint, make_plan, Dataset, PlanOptions, PlanOverrides, Preset};
use glandseg_predict::export::{ExportOptions, OutputType};
use glandseg_predict::input::Inputs;
use glandseg_predict::{PredictJob, PredictOptions};
use glandseg_train::{OptimizerKind, TrainJob};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder (dataset, model, predictions, evaluation, report.md).
    #[arg(long, short, default_value = "out/demo")]
    pub out: PathBuf,
    /// Training cases.
    #[arg(long, default_value_t = 10)]
    pub train_cases: usize,
    /// Held-out cases, predicted and evaluated.
    #[arg(long, default_value_t = 3)]
    pub test_cases: usize,
    /// Phantom resolution factor (0.5 = voxels twice as large per axis as a scanner's).
    #[arg(long, default_value_t = 0.5)]
    pub scale: f64,
    /// Training time budget in minutes (the number of iterations is fitted to it).
    #[arg(long, default_value_t = 8.0)]
    pub train_minutes: f64,
    /// Target spacing of the network, mm (isotropic); coarser trains faster.
    #[arg(long, default_value_t = 3.0)]
    pub spacing: f64,
    /// Patch size (i j k voxels).
    #[arg(long, num_args = 3, default_values_t = [32, 32, 32])]
    pub patch: Vec<usize>,
    /// Network widths: tiny (8..64 features), cpu (16..128) or gpu (32..320).
    #[arg(long, default_value = "tiny", value_enum)]
    pub preset: Preset,
    /// Optimiser: adamw (lr 1e-3) or sgd (nnU-Net's: Nesterov 0.99, lr 1e-2, poly decay).
    /// AdamW is the demo's default because the demo trains only a few hundred iterations:
    /// measured on the phantom (3 mm, 32^3 patches), SGD still predicted nothing but
    /// background after 375 iterations, while AdamW outlined the parotids after 200.
    #[arg(long, default_value = "adamw", value_enum)]
    pub optimizer: OptimizerKind,
    /// Initial learning rate (default 1e-2 for SGD, 1e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Random seed of the cohort and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fixed number of training iterations instead of the time budget (tests).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

fn stage(n: usize, name: &str) {
    eprintln!("== [{n}/6] {name}");
}

/// Moves the last `test` cases of a freshly written cohort into imagesTs/labelsTs.
fn hold_out(ds_dir: &Path, ids: &[String], test: usize) -> Result<Vec<String>> {
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

pub fn run(a: DemoArgs) -> Result<()> {
    anyhow::ensure!(a.train_cases >= 2, "--train-cases must be at least 2");
    anyhow::ensure!(a.test_cases >= 1, "--test-cases must be at least 1");
    anyhow::ensure!(
        a.spacing > 0.3 && a.spacing < 10.0,
        "--spacing must be in (0.3, 10) mm"
    );
    anyhow::ensure!(
        a.patch.iter().all(|&v| (8..=512).contains(&v)),
        "--patch must be 3 sizes between 8 and 512 voxels, got {:?}",
        a.patch
    );
    anyhow::ensure!(
        a.scale > 0.05 && a.scale <= 4.0,
        "--scale must be in (0.05, 4], got {}",
        a.scale
    );
    let t0 = Instant::now();
    let mut timings: Vec<(&str, f64)> = Vec::new();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let ds_dir = a.out.join("Dataset001_GlandPhantom");

    // 1. Cohort.
    stage(1, "synthetic PET/CT cohort");
    let t = Instant::now();
    let total = a.train_cases + a.test_cases;
    if ds_dir.exists() {
        std::fs::remove_dir_all(&ds_dir)
            .with_context(|| format!("clearing {}", ds_dir.display()))?;
    }
    let bars = Bars::new(a.quiet);
    bars.start("phantom", total as u64);
    let cfg = PhantomConfig {
        seed: a.seed,
        fov: Fov::HeadNeck,
        cut_top: false,
        scale: a.scale,
    };
    write_dataset(&ds_dir, &cfg, total, false, &|_| bars.inc(1))?;
    bars.finish();
    let ids: Vec<String> = (0..total).map(glandseg_phantom::case_id).collect();
    let held = hold_out(&ds_dir, &ids, a.test_cases)?;
    timings.push(("phantom", t.elapsed().as_secs_f64()));

    // 2. Plan.
    stage(2, "fingerprint and plan");
    let t = Instant::now();
    let ds = Dataset::open(&ds_dir)?;
    let fp = fingerprint(&ds, a.seed)?;
    let plan = make_plan(
        &fp,
        &ds.labels,
        &ds.channels,
        &PlanOptions {
            budget_gb: 2.0,
            preset: a.preset,
        },
    );
    // The demo's own choices: a coarse isotropic grid and a small patch, so that a
    // network learns the glands within minutes on two cores.
    let plan = plan.with_overrides(&PlanOverrides {
        spacing: Some([a.spacing; 3]),
        patch: Some([a.patch[0], a.patch[1], a.patch[2]]),
        batch: Some(2),
    });
    glandseg_core::atomic::write_json(&ds_dir.join("plans").join("plans.json"), &plan)?;
    timings.push(("plan", t.elapsed().as_secs_f64()));
    eprintln!(
        "   spacing {:.1} mm, patch {:?}, {} stages, features {:?}",
        a.spacing,
        plan.patch_size,
        plan.stages.len(),
        plan.stages.iter().map(|s| s.features).collect::<Vec<_>>()
    );

    // 3+4. Preprocess and train (fold "all": every training case).
    stage(3, "preprocess and train");
    let t = Instant::now();
    let model_dir = a.out.join("model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir)?;
    }
    let mut config = glandseg_train::TrainConfig {
        val_patches: 12,
        seed: a.seed,
        ..crate::train::checked_config(1, 1, a.optimizer, a.lr)?
    };
    let iterations = match a.iterations {
        Some(n) => n.max(1),
        None => {
            let cache =
                glandseg_train::Cache::build(&ds, &plan, &ds_dir.join("preprocessed"), &bars)?;
            let secs = glandseg_train::trainer::seconds_per_iteration::<crate::TrainBackend>(
                &plan,
                &cache,
                &config,
                &Default::default(),
                3,
            )?;
            let n = ((a.train_minutes * 60.0) / (secs * 1.15)).floor().max(10.0) as usize;
            eprintln!(
                "   {secs:.2} s per iteration: {n} iterations fit {:.1} min",
                a.train_minutes
            );
            n
        }
    };
    config.iters_per_epoch = iterations.clamp(1, 25);
    config.epochs = iterations.div_ceil(config.iters_per_epoch);
    let command = format!(
        "glandseg demo --out {} --train-cases {} --test-cases {} --scale {} --spacing {} --seed {}",
        a.out.display(),
        a.train_cases,
        a.test_cases,
        a.scale,
        a.spacing,
        a.seed
    );
    let job = TrainJob {
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
    crate::train::train(&job, a.quiet)?;
    timings.push(("preprocess + train", t.elapsed().as_secs_f64()));

    // 5. Predict the held-out cases.
    stage(4, "predict held-out cases");
    let t = Instant::now();
    let pred_dir = a.out.join("predictions");
    let job = PredictJob {
        inputs: Inputs::Folder(ds_dir.join("imagesTs")),
        model: model_dir.clone(),
        out: pred_dir.clone(),
        folds: Vec::new(),
        options: PredictOptions::default(),
        export: ExportOptions {
            outputs: vec![OutputType::Nifti, OutputType::DicomSeg],
            ..ExportOptions::default()
        },
    };
    crate::predict::predict(&job, a.quiet)?;
    timings.push(("predict", t.elapsed().as_secs_f64()));

    // 6. Evaluate and report.
    stage(5, "evaluate");
    let t = Instant::now();
    let map = LabelMap::default();
    let eval_dir = a.out.join("evaluation");
    let cases = glandseg_eval::evaluate_folder(
        &pred_dir,
        &ds_dir.join("labelsTs"),
        &map,
        &eval_dir,
        &Bars::new(a.quiet),
    )?;
    timings.push(("evaluate", t.elapsed().as_secs_f64()));
    stage(6, "report");
    let report = write_report(
        &a, &ds_dir, &model_dir, &pred_dir, &eval_dir, &held, &cases, &timings, t0,
    )?;
    let summary = glandseg_eval::report::summarise(&cases);
    println!();
    println!(
        "{:<22} {:>7} {:>9}",
        "gland (held-out mean)", "Dice", "HD95 mm"
    );
    for s in &summary {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        println!("{:<22} {:>7} {:>9}", s.name, f(s.dice.mean), f(s.hd95.mean));
    }
    println!(
        "demo finished in {:.1} min; report: {}",
        t0.elapsed().as_secs_f64() / 60.0,
        report.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    a: &DemoArgs,
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
