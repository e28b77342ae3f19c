use anyhow::{Context, Result};
use clap::Args;
use glandseg_plan::{fingerprint, make_plan, Dataset, Plan, PlanOptions};
use glandseg_train::splits;
use glandseg_train::trainer::{effective_patch, OptimizerKind, TrainConfig, Trainer};
use glandseg_train::{AugmentConfig, Cache, ModelFolder};
use std::path::{Path, PathBuf};

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Dataset folder in the nnU-Net raw layout (dataset.json, imagesTr, labelsTr).
    pub dataset: PathBuf,
    /// Fold 0-4 of the 5-fold split (splits.json), or "all" to train on every case.
    #[arg(long, default_value = "0")]
    pub fold: String,
    /// Model folder (default: DATASET/model).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// plans.json to train (default: DATASET/plans/plans.json, made with default options
    /// when missing).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Preprocessed cache (default: DATASET/preprocessed).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    #[arg(long, default_value_t = 250)]
    pub iters_per_epoch: usize,
    /// Validation patches per epoch (cycling through cases and glands).
    #[arg(long, default_value_t = 24)]
    pub val_patches: usize,
    /// sgd (Nesterov, momentum 0.99) or adamw.
    #[arg(long, default_value = "sgd", value_parser = ["sgd", "adamw"])]
    pub optimizer: String,
    /// Initial learning rate (default 1e-2 for SGD, 1e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
    /// Override the plan's batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override the plan's patch size (i j k voxels).
    #[arg(long, num_args = 3)]
    pub patch: Option<Vec<usize>>,
    /// Resume from the fold's latest checkpoint.
    #[arg(long = "continue")]
    pub resume: bool,
    /// Train without data augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// Also mirror the anterior-posterior and superior-inferior axes.
    #[arg(long)]
    pub mirror_all_axes: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The plan to train: the given file, DATASET/plans/plans.json, or a new one.
pub fn load_or_make_plan(ds: &Dataset, dataset: &Path, explicit: Option<&Path>) -> Result<Plan> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dataset.join("plans").join("plans.json"));
    if path.is_file() {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        return serde_json::from_slice(&bytes)
            .with_context(|| format!("{}: not a glandseg plan", path.display()));
    }
    anyhow::ensure!(explicit.is_none(), "{}: no such plan file", path.display());
    eprintln!("no plan yet: fingerprinting and planning with default options (glandseg plan)");
    let fp = fingerprint(ds, 0)?;
    let plan = make_plan(&fp, &ds.labels, &ds.channels, &PlanOptions::default());
    glandseg_core::atomic::write_json(&path, &plan)?;
    Ok(plan)
}

pub fn config_of(a: &TrainArgs) -> Result<TrainConfig> {
    let optimizer = if a.optimizer == "adamw" {
        OptimizerKind::AdamW
    } else {
        OptimizerKind::Sgd
    };
    anyhow::ensure!(a.epochs > 0, "--epochs must be at least 1");
    anyhow::ensure!(
        a.iters_per_epoch > 0,
        "--iters-per-epoch must be at least 1"
    );
    let lr = a.lr.unwrap_or(if optimizer == OptimizerKind::Sgd {
        1e-2
    } else {
        1e-3
    });
    anyhow::ensure!(lr > 0.0 && lr.is_finite(), "--lr must be positive");
    if let Some(p) = &a.patch {
        anyhow::ensure!(
            p.iter().all(|&v| (4..=512).contains(&v)),
            "--patch must be 3 sizes between 4 and 512 voxels, got {p:?}"
        );
    }
    let mut augment = if a.no_augment {
        AugmentConfig::none()
    } else {
        AugmentConfig::default()
    };
    augment.mirror_other_axes = a.mirror_all_axes;
    Ok(TrainConfig {
        epochs: a.epochs,
        iters_per_epoch: a.iters_per_epoch,
        val_patches: a.val_patches,
        optimizer,
        lr,
        seed: a.seed,
        batch_size: a.batch_size,
        patch_size: a.patch.as_ref().map(|p| [p[0], p[1], p[2]]),
        augment,
        ..TrainConfig::default()
    })
}

/// Trains one fold (or "all"); returns the model folder.
pub fn train(a: &TrainArgs, command: &str) -> Result<PathBuf> {
    let ds = Dataset::open(&a.dataset)?;
    let mut plan = load_or_make_plan(&ds, &a.dataset, a.plan.as_deref())?;
    let cfg = config_of(a)?;
    // A patch override becomes the model's patch, so prediction tiles the same way.
    plan.patch_size = effective_patch(&plan, &cfg);
    if let Some(b) = cfg.batch_size {
        plan.batch_size = b;
    }
    let model_dir = a.model.clone().unwrap_or_else(|| a.dataset.join("model"));
    let folder = ModelFolder::create(&model_dir, &plan, command)?;
    let cache_dir = a
        .cache
        .clone()
        .unwrap_or_else(|| a.dataset.join("preprocessed"));
    let cache = Cache::build(&ds, &plan, &cache_dir, !a.quiet)
        .with_context(|| format!("preprocessing into {}", cache_dir.display()))?;
    let ids: Vec<String> = ds.cases.iter().map(|c| c.id.clone()).collect();
    let (train_cases, val_cases) = if a.fold == "all" {
        (ids.clone(), Vec::new())
    } else {
        let f: usize = a
            .fold
            .parse()
            .with_context(|| format!("--fold must be 0-4 or all, got {:?}", a.fold))?;
        let sp = splits::load_or_create(&model_dir.join("splits.json"), &ids, 12345)?;
        let s = sp
            .get(f)
            .with_context(|| format!("--fold {f}: splits.json has {} folds", sp.len()))?;
        (s.train.clone(), s.val.clone())
    };
    let trainer = Trainer {
        plan: &plan,
        cache: &cache,
        fold_dir: folder.fold_dir(&a.fold),
        fold: a.fold.clone(),
        train_cases,
        val_cases,
        config: cfg,
        progress: !a.quiet,
        stop_after_epochs: None,
    };
    let device = Default::default();
    let summary = trainer.run::<crate::TrainBackend>(&device, a.resume)?;
    if let Some(e) = summary.resumed_from_epoch {
        eprintln!("resumed after epoch {e}");
    }
    if let Some(last) = summary.state.log.last() {
        println!(
            "fold {}: {} epochs, last train loss {:.4}, val pseudo-Dice {:.3} (EMA {:.3}); model in {}",
            a.fold,
            summary.state.epochs_done,
            last.train_loss,
            last.mean_dice,
            last.ema_dice,
            model_dir.display()
        );
    }
    Ok(model_dir)
}

pub fn run(a: TrainArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    train(&a, &command.join(" ")).map(|_| ())
}
