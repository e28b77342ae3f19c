//! The training loop, nnU-Net's recipe: epochs of a fixed number of iterations, Dice + CE
//! with deep supervision, SGD with Nesterov momentum 0.99 and poly learning-rate decay (or
//! AdamW), gradient norm clipped at 12, a pseudo-Dice per class on validation patches
//! after every epoch, an exponential moving average of it to pick the best checkpoint.
//!
//! Batches are built on a separate thread, running ahead of the network, from an RNG
//! seeded by (seed, fold, iteration): together with the checkpointed optimiser state this
//! makes `--continue` after a kill give the same weights as an unbroken run.

use crate::augment::{AugmentConfig, PatchSampler};
use crate::checkpoint::{self, CheckpointBlocks};
use crate::error::{Result, TrainError};
use crate::preprocess::{Cache, CachedCase};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer, Sgd, SgdConfig};
use burn::record::Recorder;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use glandseg_core::atomic;
use glandseg_core::Progress;
use glandseg_net::{downsample_labels, DeepSupervisionLoss, NetAutodiffBackend, UNet, UNetConfig};
use glandseg_plan::Plan;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The optimiser: a closed set shared with the command line.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// nnU-Net's: SGD with Nesterov momentum 0.99, poly learning-rate decay.
    Sgd,
    /// AdamW: learns faster in a short run (the demo's few hundred iterations).
    #[cfg_attr(feature = "clap", value(name = "adamw"))]
    AdamW,
}

impl OptimizerKind {
    /// The initial learning rate when none is given: nnU-Net's 1e-2 for SGD, 1e-3 for AdamW.
    pub fn default_lr(self) -> f64 {
        match self {
            OptimizerKind::Sgd => 1e-2,
            OptimizerKind::AdamW => 1e-3,
        }
    }
}

impl std::fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::AdamW => "adamw",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
/// The optimisation settings of one run (stored in every checkpoint).
pub struct TrainConfig {
    /// Epochs to train.
    pub epochs: usize,
    /// Iterations (batches) per epoch.
    pub iters_per_epoch: usize,
    /// Validation patches per epoch (fixed for the whole run).
    pub val_patches: usize,
    /// The optimiser.
    pub optimizer: OptimizerKind,
    /// Initial learning rate (nnU-Net: 1e-2 for SGD; 1e-3 is a sane AdamW start).
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Seed of the initial weights and of every batch.
    pub seed: u64,
    /// Share of each batch forced to contain foreground.
    pub oversample_foreground: f64,
    /// Overrides of the plan (e.g. a smaller patch for a quick run).
    pub batch_size: Option<usize>,
    /// Patch override (rounded up to the network's stride).
    pub patch_size: Option<[usize; 3]>,
    /// Augmentation of training patches.
    pub augment: AugmentConfig,
    /// Batches prepared ahead of the network.
    pub prefetch: usize,
}

impl TrainConfig {
    /// The default settings with these, checked: at least one epoch of at least one
    /// iteration, a positive learning rate (the optimiser's default when `None`). The
    /// messages name the command-line options.
    pub fn checked(
        epochs: usize,
        iters_per_epoch: usize,
        optimizer: OptimizerKind,
        lr: Option<f64>,
    ) -> Result<TrainConfig> {
        let input = |m: &str| Err(TrainError::Input(m.into()));
        if epochs == 0 {
            return input("--epochs must be at least 1");
        }
        if iters_per_epoch == 0 {
            return input("--iters-per-epoch must be at least 1");
        }
        let lr = lr.unwrap_or(optimizer.default_lr());
        if !(lr > 0.0 && lr.is_finite()) {
            return input("--lr must be positive");
        }
        Ok(TrainConfig {
            epochs,
            iters_per_epoch,
            optimizer,
            lr,
            ..TrainConfig::default()
        })
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            iters_per_epoch: 250,
            val_patches: 24,
            optimizer: OptimizerKind::Sgd,
            lr: 1e-2,
            weight_decay: 3e-5,
            seed: 12345,
            oversample_foreground: 0.33,
            batch_size: None,
            patch_size: None,
            augment: AugmentConfig::default(),
            prefetch: 2,
        }
    }
}

/// One row of `training_log.csv`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch number (from 0).
    pub epoch: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Pseudo-Dice per foreground class (label order), NaN when the class never appeared.
    #[serde(with = "nan_as_null")]
    pub dice: Vec<f64>,
    /// Mean pseudo-Dice over the classes.
    pub mean_dice: f64,
    /// Exponential moving average of the mean pseudo-Dice (picks the best checkpoint).
    pub ema_dice: f64,
    /// Wall time of the epoch.
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
/// The state of a run, saved in every checkpoint so a run resumes exactly.
pub struct TrainState {
    /// The fold ("0".."4" or "all").
    pub fold: String,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Best EMA pseudo-Dice so far.
    #[serde(deserialize_with = "null_as_neg_infinity")]
    pub best_ema: f64,
    /// One row per epoch.
    pub log: Vec<EpochLog>,
    /// The run's settings.
    pub config: TrainConfig,
    /// Training case ids.
    pub train_cases: Vec<String>,
    /// Validation case ids.
    pub val_cases: Vec<String>,
}

/// The optimiser behind one type, so a run can pick SGD or AdamW at run time.
pub enum Optim<B: NetAutodiffBackend> {
    /// SGD with Nesterov momentum.
    Sgd(OptimizerAdaptor<Sgd<B::InnerBackend>, UNet<B>, B>),
    /// AdamW.
    AdamW(OptimizerAdaptor<AdamW, UNet<B>, B>),
}

impl<B: NetAutodiffBackend> Optim<B> {
    /// The optimiser `cfg` asks for, with gradient clipping.
    pub fn new(cfg: &TrainConfig) -> Self {
        let clip = burn::grad_clipping::GradientClippingConfig::Norm(12.0);
        match cfg.optimizer {
            OptimizerKind::Sgd => Optim::Sgd(
                SgdConfig::new()
                    .with_momentum(Some(
                        MomentumConfig::new()
                            .with_momentum(0.99)
                            .with_dampening(0.0)
                            .with_nesterov(true),
                    ))
                    .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
                    .with_gradient_clipping(Some(clip))
                    .init(),
            ),
            OptimizerKind::AdamW => Optim::AdamW(
                AdamWConfig::new()
                    .with_weight_decay(cfg.weight_decay as f32)
                    .with_grad_clipping(Some(clip))
                    .init(),
            ),
        }
    }

    fn step(&mut self, lr: f64, model: UNet<B>, grads: GradientsParams) -> UNet<B> {
        match self {
            Optim::Sgd(o) => o.step(lr, model, grads),
            Optim::AdamW(o) => o.step(lr, model, grads),
        }
    }

    fn to_bytes(&self) -> Result<Vec<u8>> {
        let r = checkpoint::recorder();
        match self {
            Optim::Sgd(o) => Recorder::<B>::record(&r, o.to_record(), ()),
            Optim::AdamW(o) => Recorder::<B>::record(&r, o.to_record(), ()),
        }
        .map_err(|e| TrainError::Input(format!("serialising the optimiser: {e}")))
    }

    fn load_bytes(self, bytes: Vec<u8>, device: &B::Device, path: &Path) -> Result<Self> {
        let err = |e: String| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("optimiser state does not fit this run (optimizer changed?): {e}"),
        };
        Ok(match self {
            Optim::Sgd(o) => Optim::Sgd(restore(o, &bytes, device).map_err(err)?),
            Optim::AdamW(o) => Optim::AdamW(restore(o, &bytes, device).map_err(err)?),
        })
    }
}

/// An optimiser with its state from a checkpoint's block, decoded with an allocation limit
/// and burn's assertions caught: a damaged block is an error, never an abort (see
/// `checkpoint::load_record`).
fn restore<B: NetAutodiffBackend, O: Optimizer<UNet<B>, B>>(
    o: O,
    bytes: &[u8],
    device: &B::Device,
) -> std::result::Result<O, String> {
    let record = checkpoint::load_record::<B, O::Record>(bytes, device)?;
    glandseg_core::panics::quietly(|| o.load_record(record))
}

/// A batch as the network takes it.
pub struct Batch {
    /// Channels `[n, C, k, j, i]`, flattened.
    pub image: Vec<f32>,
    /// Labels `[n, k, j, i]`, flattened.
    pub labels: Vec<u8>,
    /// Patches in the batch.
    pub n: usize,
}

/// The RNG of sample `s` of iteration `t` (validation uses `t = u64::MAX - s`).
fn sample_rng(seed: u64, fold: &str, t: u64, s: u64) -> rand_chacha::ChaCha8Rng {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in fold.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let mixed = seed
        .wrapping_mul(0x9E3779B97F4A7C15)
        .wrapping_add(h)
        .wrapping_add(t.wrapping_mul(0xBF58476D1CE4E5B9))
        .wrapping_add(s.wrapping_mul(0x94D049BB133111EB));
    rand_chacha::ChaCha8Rng::seed_from_u64(mixed)
}

/// Builds batch `t`: sample `s` is forced to hold foreground when it is in the last
/// `oversample` share of the batch (nnU-Net's rule; with 2 samples, one of them).
pub fn make_batch(
    cases: &[CachedCase],
    sampler: &PatchSampler,
    batch: usize,
    oversample: f64,
    seed: u64,
    fold: &str,
    t: u64,
) -> Batch {
    use rayon::prelude::*;
    let first_forced = (batch as f64 * (1.0 - oversample)).round() as usize;
    let patches: Vec<_> = (0..batch)
        .into_par_iter()
        .map(|s| {
            let mut rng = sample_rng(seed, fold, t, s as u64);
            let case = &cases[rng.random_range(0..cases.len())];
            let lr_axis = case.info.geometry.axis_along(0).0;
            sampler.sample(case, s >= first_forced, lr_axis, &mut rng)
        })
        .collect();
    let mut image = Vec::with_capacity(patches.iter().map(|p| p.image.len()).sum());
    let mut labels = Vec::new();
    for p in &patches {
        image.extend_from_slice(&p.image);
        labels.extend_from_slice(&p.labels);
    }
    Batch {
        image,
        labels,
        n: batch,
    }
}

/// Deep-supervision targets: the label patch at each decoder resolution, finest first.
pub fn targets<B: Backend>(
    labels: &[u8],
    n: usize,
    patch: [usize; 3],
    plan_stages: &[glandseg_plan::Stage],
    levels: usize,
    device: &B::Device,
) -> Vec<Tensor<B, 4, Int>> {
    let shape = [n, patch[2], patch[1], patch[0]];
    let mut stride = [1usize; 3];
    let mut out = Vec::new();
    for l in 0..levels {
        if l > 0 {
            let s = plan_stages[l].stride;
            stride = [stride[0] * s[2], stride[1] * s[1], stride[2] * s[0]];
        }
        let (v, sh) = downsample_labels(labels, shape, stride);
        out.push(Tensor::<B, 4, Int>::from_data(
            TensorData::new(v.into_iter().map(|x| x as i64).collect::<Vec<_>>(), sh),
            device,
        ));
    }
    out
}

/// Background probability of a fresh network's output when no training patches are at
/// hand to measure the class shares ([`UNet::with_background_prior`]).
pub const BACKGROUND_PRIOR: f64 = 0.99;

/// Batches drawn to measure the class shares of the training patches.
const PRIOR_BATCHES: u64 = 16;

/// Each class's share of the voxels in training batches drawn exactly as training draws
/// them (same sampler, oversampling and augmentation; iteration numbers far from any
/// training or validation draw). Logged at the start of training: a class whose share is
/// tiny is the one a short run may never learn (see [`BACKGROUND_PRIOR`]).
///
/// Measured, not used: a network started from these shares ([`UNet::with_class_prior`];
/// fine stage: background 0.94, parotid 0.028, submandibular 0.033, lacrimal 0.0016
/// instead of 0.99 / 0.0033 each) did not beat the fixed prior on the demo cohort at 700
/// iterations per stage (held-out mean Dice 0.722 against 0.779; parotid volumes -17 %
/// against -23 %, one lacrimal gland lost), so [`seeded_network`] keeps the fixed one.
pub fn class_prior(
    cases: &[CachedCase],
    sampler: &PatchSampler,
    batch: usize,
    oversample: f64,
    seed: u64,
    fold: &str,
    classes: usize,
) -> Vec<f64> {
    let mut counts = vec![0u64; classes.max(1)];
    for i in 0..PRIOR_BATCHES {
        let b = make_batch(
            cases,
            sampler,
            batch,
            oversample,
            seed,
            fold,
            (u64::MAX / 2) + i,
        );
        for &l in &b.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.iter().map(|&c| c as f64 / total).collect()
}

/// A freshly initialised network, the same for the same seed. burn's backends seed one
/// process-wide RNG and initialise parameters lazily (on first use), so the seed, the
/// construction and a touch of every parameter happen under one lock: runs in parallel
/// threads of one process (tests, a fold ensemble) then cannot interleave their draws.
pub fn seeded_network<B: Backend>(plan: &Plan, seed: u64, device: &B::Device) -> UNet<B> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    B::seed(device, seed);
    let model: UNet<B> = network_config(plan)
        .init(device)
        .with_background_prior(BACKGROUND_PRIOR);
    let _ = crate::checkpoint::weight_values(&model);
    model
}

/// The planned network's configuration (built in `glandseg-net` from the plan).
pub fn network_config(plan: &Plan) -> UNetConfig {
    UNetConfig::from_plan(plan)
}

/// Patch size actually used: the override rounded up to the network's total stride.
pub fn effective_patch(plan: &Plan, cfg: &TrainConfig) -> [usize; 3] {
    let t = glandseg_plan::plan::total_stride(&plan.stages);
    let p = cfg.patch_size.unwrap_or(plan.patch_size);
    [0, 1, 2].map(|a| p[a].div_ceil(t[a]) * t[a])
}

/// Everything a run writes lives in `fold_dir`.
pub struct Trainer<'a> {
    /// The plan (network, patch, normalisation).
    pub plan: &'a Plan,
    /// The preprocessed cases.
    pub cache: &'a Cache,
    /// Where checkpoints and logs go.
    pub fold_dir: PathBuf,
    /// The fold ("0".."4" or "all").
    pub fold: String,
    /// Training case ids.
    pub train_cases: Vec<String>,
    /// Validation case ids (empty: validate on training patches).
    pub val_cases: Vec<String>,
    /// The optimisation settings.
    pub config: TrainConfig,
    /// Where the iterations are reported ([`glandseg_core::NoProgress`] for none).
    pub progress: &'a dyn Progress,
    /// Stop (as a kill would) once this many epochs are done in this call; the next run
    /// with `resume` continues. For tests and for training in time slices.
    pub stop_after_epochs: Option<usize>,
}

/// Outcome of a run.
pub struct TrainSummary {
    /// The run's state at the end.
    pub state: TrainState,
    /// The epoch a resumed run started after.
    pub resumed_from_epoch: Option<usize>,
}

pub use glandseg_model::{BEST, FINAL, LATEST};

impl Trainer<'_> {
    fn open_cases(&self, ids: &[String]) -> Result<Vec<CachedCase>> {
        ids.iter()
            .map(|id| {
                let idx = self.cache.index_of(id).ok_or_else(|| {
                    TrainError::Input(format!(
                        "case {id} is in the split but not in the preprocessed cache {}",
                        self.cache.dir.display()
                    ))
                })?;
                self.cache.open_case(idx)
            })
            .collect()
    }

    /// Trains (or resumes with `resume`) until `config.epochs` epochs are done.
    pub fn run<B: NetAutodiffBackend>(
        &self,
        device: &B::Device,
        resume: bool,
    ) -> Result<TrainSummary> {
        std::fs::create_dir_all(&self.fold_dir).map_err(|e| TrainError::io(&self.fold_dir, e))?;
        let latest = self.fold_dir.join(LATEST);
        let cfg = &self.config;
        let plan = self.plan;
        let mut model: UNet<B> = seeded_network(plan, cfg.seed, device);
        let mut optim = Optim::<B>::new(cfg);
        let mut state = TrainState {
            fold: self.fold.clone(),
            epochs_done: 0,
            best_ema: f64::NEG_INFINITY,
            log: Vec::new(),
            config: cfg.clone(),
            train_cases: self.train_cases.clone(),
            val_cases: self.val_cases.clone(),
        };
        let mut resumed_from_epoch = None;
        if latest.exists() {
            if !resume {
                return Err(TrainError::Input(format!(
                    "{} exists: pass --continue to resume that run, or remove the folder to start over",
                    latest.display()
                )));
            }
            let blocks = checkpoint::read(&latest)?;
            let saved: TrainState =
                serde_json::from_slice(&blocks.state_json).map_err(|e| TrainError::Checkpoint {
                    path: latest.clone(),
                    msg: format!("run state: {e}"),
                })?;
            model =
                checkpoint::model_from_bytes(model, blocks.model, blocks.version, device, &latest)?;
            optim = optim.load_bytes(blocks.optim, device, &latest)?;
            // The saved settings win, except the number of epochs (a run may be extended).
            let epochs = cfg.epochs;
            state = saved;
            state.config.epochs = epochs;
            resumed_from_epoch = Some(state.epochs_done);
        }
        let cfg = state.config.clone();
        let train = self.open_cases(&state.train_cases)?;
        let val = if state.val_cases.is_empty() {
            // `--fold all`: validate on (unaugmented patches of) the training cases.
            self.open_cases(&state.train_cases)?
        } else {
            self.open_cases(&state.val_cases)?
        };
        if train.is_empty() {
            return Err(TrainError::Input("no training cases in this fold".into()));
        }
        let patch = effective_patch(plan, &cfg);
        let batch = cfg.batch_size.unwrap_or(plan.batch_size).max(1);
        let sampler = PatchSampler::for_plan(plan, patch, cfg.augment.clone());
        let val_sampler = PatchSampler {
            augment: AugmentConfig::none(),
            ..sampler.clone()
        };
        if resumed_from_epoch.is_none() {
            let prior = class_prior(
                &train,
                &sampler,
                batch,
                cfg.oversample_foreground,
                cfg.seed,
                &state.fold,
                plan.labels.num_classes(),
            );
            let shares: Vec<String> = plan
                .labels
                .entries()
                .iter()
                .map(|(v, name)| format!("{name} {:.4}", prior.get(*v as usize).unwrap_or(&0.0)))
                .collect();
            self.progress.note(&format!(
                "   class shares in training patches: {}",
                shares.join(", ")
            ));
        }
        let levels = plan.stages.len() - 1;
        let ds = DeepSupervisionLoss::new(levels.max(1));
        let classes = plan.labels.num_classes();
        let total = (cfg.epochs * cfg.iters_per_epoch) as u64;
        let bar = self.progress;
        bar.start("train", total);
        bar.set_position((state.epochs_done * cfg.iters_per_epoch) as u64);

        let start_t = (state.epochs_done * cfg.iters_per_epoch) as u64;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Batch)>(cfg.prefetch.max(1));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let fold = state.fold.clone();
        std::thread::scope(|scope| -> Result<()> {
            let producer = {
                let (train, sampler, fold, stop) = (&train, &sampler, &fold, &stop);
                let tx = tx.clone();
                scope.spawn(move || {
                    for t in start_t..total {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let b = make_batch(
                            train,
                            sampler,
                            batch,
                            cfg.oversample_foreground,
                            cfg.seed,
                            fold,
                            t,
                        );
                        if tx.send((t, b)).is_err() {
                            break;
                        }
                    }
                })
            };
            drop(tx);
            let result = (|| -> Result<()> {
                let first_epoch = state.epochs_done;
                for epoch in state.epochs_done..cfg.epochs {
                    if self
                        .stop_after_epochs
                        .is_some_and(|n| epoch - first_epoch >= n)
                    {
                        break;
                    }
                    let started = std::time::Instant::now();
                    let lr = cfg.lr * (1.0 - epoch as f64 / cfg.epochs as f64).powf(0.9);
                    let mut loss_sum = 0.0;
                    for _ in 0..cfg.iters_per_epoch {
                        let (_, b) = rx.recv().map_err(|_| {
                            TrainError::Input("the batch thread stopped unexpectedly".into())
                        })?;
                        let (next, value) =
                            train_step(model, &mut optim, &ds, b, plan, patch, lr, device);
                        model = next;
                        if !value.is_finite() {
                            return Err(TrainError::Input(format!(
                                "training loss became {value} in epoch {epoch}; lower the learning rate (--lr)"
                            )));
                        }
                        loss_sum += value;
                        bar.inc(1);
                    }
                    let train_loss = loss_sum / cfg.iters_per_epoch as f64;
                    let (val_loss, dice) = validate::<B>(
                        &model.valid(),
                        &val,
                        &val_sampler,
                        &cfg,
                        &fold,
                        plan,
                        patch,
                        classes,
                        device,
                    );
                    let present: Vec<f64> =
                        dice.iter().cloned().filter(|d| d.is_finite()).collect();
                    let mean_dice = if present.is_empty() {
                        0.0
                    } else {
                        present.iter().sum::<f64>() / present.len() as f64
                    };
                    let ema = match state.log.last() {
                        Some(prev) => 0.9 * prev.ema_dice + 0.1 * mean_dice,
                        None => mean_dice,
                    };
                    state.log.push(EpochLog {
                        epoch,
                        lr,
                        train_loss,
                        val_loss,
                        dice,
                        mean_dice,
                        ema_dice: ema,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    state.epochs_done = epoch + 1;
                    bar.message(&format!(
                        "epoch {}/{} loss {train_loss:.3} val Dice {mean_dice:.3}",
                        epoch + 1,
                        cfg.epochs
                    ));
                    let blocks = CheckpointBlocks::new(
                        serde_json::to_vec_pretty(&state).expect("state serialises"),
                        checkpoint::model_to_bytes(&model)?,
                        optim.to_bytes()?,
                    );
                    if ema > state.best_ema {
                        state.best_ema = ema;
                        checkpoint::write(&self.fold_dir.join(BEST), &blocks)?;
                    }
                    let blocks = CheckpointBlocks {
                        state_json: serde_json::to_vec_pretty(&state).expect("state serialises"),
                        ..blocks
                    };
                    checkpoint::write(&latest, &blocks)?;
                    write_log(&self.fold_dir, &state, &plan.labels)?;
                    if state.epochs_done == cfg.epochs {
                        checkpoint::write(&self.fold_dir.join(FINAL), &blocks)?;
                    }
                }
                Ok(())
            })();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            // Unblock the producer if it waits on a full channel.
            while rx.try_recv().is_ok() {}
            drop(rx);
            let _ = producer.join();
            result
        })?;
        bar.finish();
        Ok(TrainSummary {
            state,
            resumed_from_epoch,
        })
    }
}

/// Pseudo-Dice per foreground class over all validation patches (TP, FP, FN summed first,
/// as nnU-Net does), and the mean validation loss.
#[allow(clippy::too_many_arguments)]
fn validate<B: NetAutodiffBackend>(
    model: &UNet<B::InnerBackend>,
    val: &[CachedCase],
    sampler: &PatchSampler,
    cfg: &TrainConfig,
    fold: &str,
    plan: &Plan,
    patch: [usize; 3],
    classes: usize,
    device: &B::Device,
) -> (f64, Vec<f64>) {
    let mut tp = vec![0u64; classes];
    let mut fp = vec![0u64; classes];
    let mut fneg = vec![0u64; classes];
    let mut loss_sum = 0.0;
    let n = cfg.val_patches.max(1);
    // Patch s: label s mod 6-ish (every gland in turn), case (s / labels) mod cases, so that
    // a handful of patches already scores every gland (random patches would mostly hold
    // background and leave the small glands unscored).
    let labels_per_case = plan.labels.num_classes().saturating_sub(1).max(1);
    for s in 0..n {
        let mut rng = sample_rng(cfg.seed, fold, u64::MAX - 1, s as u64);
        let case = &val[(s / labels_per_case) % val.len()];
        let lr_axis = case.info.geometry.axis_along(0).0;
        let present: Vec<u8> = case.info.class_locations.keys().copied().collect();
        let p = if present.is_empty() {
            sampler.sample(case, false, lr_axis, &mut rng)
        } else {
            let value = present[(s % labels_per_case) % present.len()];
            sampler
                .sample_at_label(case, value, lr_axis, &mut rng)
                .expect("label listed as present")
        };
        let x = Tensor::<B::InnerBackend, 5>::from_data(
            TensorData::new(
                p.image,
                [1, plan.input_channels(), patch[2], patch[1], patch[0]],
            ),
            device,
        );
        let logits = model.forward(x);
        let t = targets::<B::InnerBackend>(&p.labels, 1, patch, &plan.stages, 1, device);
        let l: f64 = glandseg_net::dice_ce_loss(logits.clone(), t[0].clone())
            .into_scalar()
            .elem::<f64>();
        loss_sum += l;
        let pred: Vec<i64> = logits.argmax(1).into_data().iter::<i64>().collect();
        for (pr, &gt) in pred.iter().zip(&p.labels) {
            let (pr, gt) = (*pr as usize, gt as usize);
            if pr == gt {
                tp[gt] += 1;
            } else {
                fp[pr] += 1;
                fneg[gt] += 1;
            }
        }
    }
    let dice = (1..classes)
        .map(|c| {
            let d = 2 * tp[c] + fp[c] + fneg[c];
            if 2 * tp[c] + fneg[c] == 0 && fp[c] == 0 || d == 0 {
                f64::NAN
            } else {
                2.0 * tp[c] as f64 / d as f64
            }
        })
        .collect();
    (loss_sum / n as f64, dice)
}

fn write_log(dir: &Path, state: &TrainState, labels: &glandseg_core::LabelMap) -> Result<()> {
    let names: Vec<String> = (1..labels.num_classes())
        .map(|v| labels.name(v as u8).unwrap_or("unused").to_string())
        .collect();
    let mut csv = String::from("epoch,lr,train_loss,val_loss,mean_dice,ema_dice,seconds");
    for n in &names {
        csv.push_str(&format!(",dice_{n}"));
    }
    csv.push('\n');
    for r in &state.log {
        csv.push_str(&format!(
            "{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.2}",
            r.epoch + 1,
            r.lr,
            r.train_loss,
            r.val_loss,
            r.mean_dice,
            r.ema_dice,
            r.seconds
        ));
        for d in &r.dice {
            if d.is_finite() {
                csv.push_str(&format!(",{d:.6}"));
            } else {
                csv.push(',');
            }
        }
        csv.push('\n');
    }
    atomic::write_bytes(&dir.join("training_log.csv"), csv.as_bytes())?;
    let x: Vec<f64> = state.log.iter().map(|r| (r.epoch + 1) as f64).collect();
    let series = vec![
        glandseg_viz::chart::Series {
            name: "train loss".into(),
            values: state.log.iter().map(|r| r.train_loss).collect(),
            axis: glandseg_viz::chart::Axis::Left,
        },
        glandseg_viz::chart::Series {
            name: "val loss".into(),
            values: state.log.iter().map(|r| r.val_loss).collect(),
            axis: glandseg_viz::chart::Axis::Left,
        },
        glandseg_viz::chart::Series {
            name: "pseudo-Dice (EMA)".into(),
            values: state.log.iter().map(|r| r.ema_dice).collect(),
            axis: glandseg_viz::chart::Axis::Right,
        },
    ];
    let img = glandseg_viz::chart::line_chart(
        &format!("training fold {}", state.fold),
        "epoch",
        &x,
        &series,
        ("loss", "Dice"),
    );
    glandseg_viz::save_png(&dir.join("progress.png"), &img)?;
    Ok(())
}

/// One optimiser step on a batch; returns the updated network and the loss before it.
#[allow(clippy::too_many_arguments)]
fn train_step<B: NetAutodiffBackend>(
    model: UNet<B>,
    optim: &mut Optim<B>,
    ds: &DeepSupervisionLoss,
    b: Batch,
    plan: &Plan,
    patch: [usize; 3],
    lr: f64,
    device: &B::Device,
) -> (UNet<B>, f64) {
    let x = Tensor::<B, 5>::from_data(
        TensorData::new(
            b.image,
            [b.n, plan.input_channels(), patch[2], patch[1], patch[0]],
        ),
        device,
    );
    let outs = model.forward_all(x);
    let tg = targets::<B>(&b.labels, b.n, patch, &plan.stages, outs.len(), device);
    let loss = ds.loss(outs, tg);
    let value = loss.clone().into_scalar().elem::<f64>();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), value)
}

/// Wall time of one training iteration (batch preparation + forward + backward + step) of
/// the planned network, the median of `steps` after one warm-up iteration: what `glandseg
/// demo` fits its iteration count to.
pub fn seconds_per_iteration<B: NetAutodiffBackend>(
    plan: &Plan,
    cache: &Cache,
    cfg: &TrainConfig,
    device: &B::Device,
    steps: usize,
) -> Result<f64> {
    let cases: Vec<CachedCase> = (0..cache.cases.len())
        .map(|i| cache.open_case(i))
        .collect::<Result<_>>()?;
    if cases.is_empty() {
        return Err(TrainError::Input("the cache holds no cases".into()));
    }
    let patch = effective_patch(plan, cfg);
    let batch = cfg.batch_size.unwrap_or(plan.batch_size).max(1);
    let sampler = PatchSampler::for_plan(plan, patch, cfg.augment.clone());
    let mut model: UNet<B> = network_config(plan).init(device);
    let mut optim = Optim::<B>::new(cfg);
    let ds = DeepSupervisionLoss::new((plan.stages.len() - 1).max(1));
    let mut times = Vec::with_capacity(steps);
    for t in 0..=steps {
        let started = std::time::Instant::now();
        let b = make_batch(
            &cases,
            &sampler,
            batch,
            cfg.oversample_foreground,
            cfg.seed,
            "timing",
            t as u64,
        );
        model = train_step(model, &mut optim, &ds, b, plan, patch, cfg.lr, device).0;
        if t > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    // The median: one slow step (a costly augmentation, another process waking up) moved
    // the mean of three by half, and the demo's iteration count with it.
    times.sort_by(f64::total_cmp);
    Ok(times.get(times.len() / 2).copied().unwrap_or(0.0))
}

/// JSON has no NaN: serde_json writes it (a gland absent from every validation patch and
/// never predicted) as `null`, which must read back as NaN, or a resumed run cannot load
/// its own checkpoint.
mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
    }
}

/// The best EMA starts at minus infinity, which JSON writes as `null`.
fn null_as_neg_infinity<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
}
