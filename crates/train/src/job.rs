//! Training's entry point (nnU-Net's `run_training_entry`): one fold of one dataset, from
//! the raw folder to a model folder, with every setting in a typed [`TrainJob`]. The
//! command line and the demo both call [`train_fold`]; plan overrides are applied here, so
//! the model folder's plan always tiles prediction as training sampled patches.

use crate::error::{Result, TrainError};
use crate::preprocess::Cache;
use crate::splits;
use crate::trainer::{TrainConfig, TrainSummary, Trainer};
use glandseg_core::Progress;
use glandseg_model::ModelFolder;
use glandseg_net::NetAutodiffBackend;
use glandseg_plan::{fingerprint, make_plan, Dataset, Plan, PlanOptions, PlanOverrides};
use std::path::{Path, PathBuf};

/// Seed of the 5-fold split written to `splits.json` (fixed: every fold of a model must
/// come from the same split).
pub const SPLIT_SEED: u64 = 12345;

/// One fold to train.
#[derive(Clone, Debug)]
pub struct TrainJob {
    /// Dataset folder in the nnU-Net raw layout.
    pub dataset: PathBuf,
    /// Fold "0".."4" of the 5-fold split, or "all" (every case, no validation split).
    pub fold: String,
    /// Model folder (default: DATASET/model).
    pub model_dir: Option<PathBuf>,
    /// plans.json to train (default: DATASET/plans/plans.json, made when missing).
    pub plan: Option<PathBuf>,
    /// Preprocessed cache (default: DATASET/preprocessed).
    pub cache: Option<PathBuf>,
    /// Changes to the plan (patch, batch); written into the model folder's plan.
    pub overrides: PlanOverrides,
    /// The optimisation settings.
    pub config: TrainConfig,
    /// Resume from the fold's latest checkpoint.
    pub resume: bool,
    /// The command recorded in model.json.
    pub command: String,
}

/// What [`train_fold`] did.
pub struct TrainOutcome {
    /// The model folder.
    pub model_dir: PathBuf,
    /// The run's state and whether it was resumed.
    pub summary: TrainSummary,
}

impl TrainOutcome {
    /// One line on the finished fold: epochs, last losses and pseudo-Dice, model folder.
    pub fn summary_line(&self) -> Option<String> {
        let state = &self.summary.state;
        let last = state.log.last()?;
        Some(format!(
            "fold {}: {} epochs, last train loss {:.4}, val pseudo-Dice {:.3} (EMA {:.3}); model in {}",
            state.fold,
            state.epochs_done,
            last.train_loss,
            last.mean_dice,
            last.ema_dice,
            self.model_dir.display()
        ))
    }
}

/// The plan to train: `explicit`, else DATASET/plans/plans.json, else a new one with
/// default options (written there; `progress` is told).
pub fn load_or_make_plan(
    ds: &Dataset,
    explicit: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Plan> {
    let path = explicit
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ds.root.join("plans").join("plans.json"));
    if path.is_file() {
        let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
        return serde_json::from_slice(&bytes).map_err(|e| {
            TrainError::Input(format!("{}: not a glandseg plan: {e}", path.display()))
        });
    }
    if explicit.is_some() {
        return Err(TrainError::Input(format!(
            "{}: no such plan file",
            path.display()
        )));
    }
    progress.note("no plan yet: fingerprinting and planning with default options (glandseg plan)");
    let fp = fingerprint(ds, 0)?;
    let plan = make_plan(&fp, &ds.labels, &ds.channels, &PlanOptions::default());
    glandseg_core::atomic::write_json(&path, &plan)?;
    Ok(plan)
}

/// `--channels` must name the plan's channels: a typo would otherwise withhold a channel
/// silently.
fn check_channels(plan: &glandseg_plan::Plan, o: &PlanOverrides) -> Result<()> {
    let Some(keep) = &o.channels else {
        return Ok(());
    };
    for k in keep {
        if !plan.channels.iter().any(|c| c.eq_ignore_ascii_case(k)) {
            return Err(TrainError::Input(format!(
                "--channels: the dataset has no channel {k:?} (its channels: {})",
                plan.channels.join(", ")
            )));
        }
    }
    if keep.is_empty() {
        return Err(TrainError::Input(
            "--channels: name at least one channel".into(),
        ));
    }
    Ok(())
}

/// Trains one fold: plan (loaded or made, overrides applied), model folder, preprocessed
/// cache, split, then the training loop on backend `B`.
pub fn train_fold<B: NetAutodiffBackend>(
    job: &TrainJob,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<TrainOutcome> {
    let ds = Dataset::open(&job.dataset)?;
    let plan = load_or_make_plan(&ds, job.plan.as_deref(), progress)?;
    check_channels(&plan, &job.overrides)?;
    // The overrides become the model's plan, so prediction tiles the same way.
    let plan = plan.with_overrides(&job.overrides);
    let model_dir = job
        .model_dir
        .clone()
        .unwrap_or_else(|| job.dataset.join("model"));
    let folder = ModelFolder::create(&model_dir, &plan, &job.command)?;
    let summary = run_fold::<B>(
        job,
        &ds,
        &plan,
        &folder,
        &model_dir,
        "preprocessed",
        None,
        device,
        progress,
    )?;
    Ok(TrainOutcome { model_dir, summary })
}

/// Everything before the training loop, once for all folds: the plan (loaded or made),
/// the model folder, the preprocessed cache and `splits.json`. A cluster's fold jobs run
/// after it, so they do not all preprocess the same dataset at once.
pub fn prepare(job: &TrainJob, progress: &dyn Progress) -> Result<PathBuf> {
    let ds = Dataset::open(&job.dataset)?;
    let plan = load_or_make_plan(&ds, job.plan.as_deref(), progress)?;
    check_channels(&plan, &job.overrides)?;
    let plan = plan.with_overrides(&job.overrides);
    let model_dir = job
        .model_dir
        .clone()
        .unwrap_or_else(|| job.dataset.join("model"));
    ModelFolder::create(&model_dir, &plan, &job.command)?;
    let cache_dir = job
        .cache
        .clone()
        .unwrap_or_else(|| job.dataset.join("preprocessed"));
    Cache::build(&ds, &plan, &cache_dir, progress).map_err(|e| {
        TrainError::Input(format!("preprocessing into {}: {e}", cache_dir.display()))
    })?;
    if job.fold != "all" {
        fold_cases(&ds, &job.fold, &model_dir)?;
    }
    progress.finish();
    Ok(model_dir)
}

/// Cache, split and training loop of one fold of `plan` into `folder` (the cache in
/// `job.cache` or `DATASET/<cache_name>`; `oversample` overrides the foreground share).
#[allow(clippy::too_many_arguments)]
fn run_fold<B: NetAutodiffBackend>(
    job: &TrainJob,
    ds: &Dataset,
    plan: &Plan,
    folder: &ModelFolder,
    model_dir: &Path,
    cache_name: &str,
    oversample: Option<f64>,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<TrainSummary> {
    let cache_dir = job
        .cache
        .clone()
        .unwrap_or_else(|| job.dataset.join(cache_name));
    let cache = Cache::build(ds, plan, &cache_dir, progress).map_err(|e| {
        TrainError::Input(format!("preprocessing into {}: {e}", cache_dir.display()))
    })?;
    let (train_cases, val_cases) = fold_cases(ds, &job.fold, model_dir)?;
    let mut config = job.config.clone();
    config.patch_size = job.overrides.patch;
    config.batch_size = job.overrides.batch;
    if let Some(o) = oversample {
        config.oversample_foreground = o;
    }
    let trainer = Trainer {
        plan,
        cache: &cache,
        fold_dir: folder.fold_dir(&job.fold),
        fold: job.fold.clone(),
        train_cases,
        val_cases,
        config,
        progress,
        stop_after_epochs: None,
    };
    trainer.run::<B>(device, job.resume)
}

/// The training and validation cases of `fold` ("all": every case, no validation).
fn fold_cases(ds: &Dataset, fold: &str, model_dir: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let ids: Vec<String> = ds.cases.iter().map(|c| c.id.clone()).collect();
    if fold == "all" {
        return Ok((ids, Vec::new()));
    }
    let f: usize = fold
        .parse()
        .map_err(|_| TrainError::Input(format!("--fold must be 0-4 or all, got {fold:?}")))?;
    let sp = splits::load_or_create(&model_dir.join("splits.json"), &ids, SPLIT_SEED)?;
    let s = sp.get(f).ok_or_else(|| {
        TrainError::Input(format!("--fold {f}: splits.json has {} folds", sp.len()))
    })?;
    Ok((s.train.clone(), s.val.clone()))
}

/// Trains the fine stage of a cascade (nnU-Net's `3d_cascade_fullres`, cropped per gland)
/// into `MODEL/<cascade.folder>`: the model folder's plan must describe the cascade
/// (`glandseg plan --cascade`). Also writes the gland atlas (`atlas.json`) that gives a
/// box to a gland the coarse stage misses. Patches are all centred on a gland voxel, as
/// prediction only runs the fine network in boxes around glands.
pub fn train_fine_stage<B: NetAutodiffBackend>(
    job: &TrainJob,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<TrainOutcome> {
    let ds = Dataset::open(&job.dataset)?;
    let model_dir = job
        .model_dir
        .clone()
        .unwrap_or_else(|| job.dataset.join("model"));
    let coarse = ModelFolder::open(&model_dir)?;
    let cascade = coarse.plan.cascade.clone().ok_or_else(|| {
        TrainError::Input(format!(
            "{}: the plan has no cascade stage (make one with `glandseg plan --cascade`, then train stage 1 with it)",
            model_dir.join("plans.json").display()
        ))
    })?;
    let plan = cascade.fine.with_overrides(&job.overrides);
    let dir = model_dir.join(&cascade.folder);
    let folder = ModelFolder::create(&dir, &plan, &job.command)?;
    let atlas_path = dir.join(crate::ATLAS_FILE);
    if !atlas_path.is_file() {
        progress.note("gland atlas from the training labels");
        // The fold's training cases only: its validation cases stay unseen.
        let (train_ids, _) = fold_cases(&ds, &job.fold, &model_dir)?;
        let cases = ds
            .cases
            .iter()
            .filter(|c| train_ids.contains(&c.id))
            .map(|c| {
                glandseg_nifti::read_labels(&c.label)
                    .map(|l| glandseg_plan::cascade::gland_positions(&l))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let values: Vec<u8> = coarse.plan.labels.foreground().map(|(v, _)| v).collect();
        let atlas = glandseg_plan::GlandAtlas::build(&values, &cases);
        glandseg_core::atomic::write_json(&atlas_path, &atlas)?;
    }
    // All patches on a gland: prediction only shows the fine network boxes around glands.
    let summary = run_fold::<B>(
        job,
        &ds,
        &plan,
        &folder,
        &model_dir,
        "preprocessed_stage2",
        Some(1.0),
        device,
        progress,
    )?;
    Ok(TrainOutcome {
        model_dir: dir,
        summary,
    })
}
