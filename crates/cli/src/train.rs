//! `glandseg train`: the arguments as a [`TrainJob`], then `glandseg_train::train_fold`.

use anyhow::Result;
use clap::Args;
use glandseg_plan::PlanOverrides;
use glandseg_train::{AugmentConfig, OptimizerKind, TrainConfig, TrainJob};
use std::path::PathBuf;

#[derive(Args)]
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
    /// Epochs to train.
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Training iterations (batches) per epoch.
    #[arg(long, default_value_t = 250)]
    pub iters_per_epoch: usize,
    /// Validation patches per epoch (cycling through cases and glands).
    #[arg(long, default_value_t = 24)]
    pub val_patches: usize,
    /// sgd (Nesterov, momentum 0.99) or adamw.
    #[arg(long, default_value = "sgd", value_enum)]
    pub optimizer: OptimizerKind,
    /// Initial learning rate (default 1e-2 for SGD, 1e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of the initial weights and of every batch.
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
    /// Left-right mirroring: swap (mirror and swap each left label with its right
    /// partner), plain (mirror only: nnU-Net's default, which breaks laterality; for
    /// ablations) or none.
    #[arg(long, default_value = "swap", value_enum)]
    pub mirror: glandseg_train::augment::MirrorMode,
    /// Input channels the network sees, comma-separated (e.g. `ct`, `pet`, `ct,pet`);
    /// the others are withheld (set to 0). Default: all.
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Which stage of a cascade to train: 1 (the coarse network, or the only one) or 2
    /// (the fine network in boxes around the glands; needs stage 1's model folder).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stage: u8,
    /// Only plan, preprocess and write the model folder and splits.json, then stop (a
    /// cluster's first job, before the fold jobs; see `glandseg slurm train`).
    #[arg(long)]
    pub prepare_only: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn job_of(a: TrainArgs, command: String) -> Result<TrainJob> {
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
    a.mirror.apply(&mut augment);
    let config = TrainConfig {
        val_patches: a.val_patches,
        seed: a.seed,
        augment,
        ..TrainConfig::checked(a.epochs, a.iters_per_epoch, a.optimizer, a.lr)?
    };
    Ok(TrainJob {
        dataset: a.dataset,
        fold: a.fold,
        model_dir: a.model,
        plan: a.plan,
        cache: a.cache,
        overrides: PlanOverrides {
            spacing: None,
            patch: a.patch.map(|p| [p[0], p[1], p[2]]),
            batch: a.batch_size,
            channels: a.channels,
        },
        config,
        resume: a.resume,
        command,
    })
}

/// Trains one fold with bars (hidden when `quiet`) and reports it.
fn train(job: &TrainJob, stage: u8, quiet: bool) -> Result<()> {
    let bars = crate::progress::Bars::new(quiet);
    let out = if stage == 2 {
        glandseg_train::train_fine_stage::<crate::TrainBackend>(job, &Default::default(), &bars)?
    } else {
        glandseg_train::train_fold::<crate::TrainBackend>(job, &Default::default(), &bars)?
    };
    if let Some(e) = out.summary.resumed_from_epoch {
        eprintln!("resumed after epoch {e}");
    }
    if let Some(line) = out.summary_line() {
        println!("{line}");
    }
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    let command: Vec<String> = std::env::args().collect();
    let (quiet, stage, prepare_only) = (a.quiet, a.stage, a.prepare_only);
    let job = job_of(a, command.join(" "))?;
    if prepare_only {
        let bars = crate::progress::Bars::new(quiet);
        let dir = glandseg_train::prepare(&job, &bars)?;
        println!("prepared {} (plan, cache, splits)", dir.display());
        return Ok(());
    }
    train(&job, stage, quiet)
}
