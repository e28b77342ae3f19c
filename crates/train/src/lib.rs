//! Training, as nnU-Net's stages after the plan: *preprocess* the dataset into a cache at
//! the planned spacing, *sample* patches with foreground oversampling and laterality-aware
//! augmentation, and *train* the planned U-Net with checkpoints that survive a kill.
//! Everything is generic over burn's backend (`flex` on CPU by default, `cuda` optional).
//!
//! The stage's entry point is [`train_fold`]: a typed [`TrainJob`] in, a model folder out
//! (which prediction reads through `glandseg-model`, without this crate).
//!
//! ```no_run
//! use glandseg_train::{train_fold, TrainConfig, TrainJob};
//! # fn main() -> Result<(), glandseg_train::TrainError> {
//! let job = TrainJob {
//!     dataset: "Dataset001_GlandPhantom".into(),
//!     fold: "all".into(),
//!     model_dir: None,
//!     plan: None,
//!     cache: None,
//!     overrides: Default::default(),
//!     config: TrainConfig::default(),
//!     resume: false,
//!     command: "example".into(),
//! };
//! let device = Default::default();
//! let out = train_fold::<glandseg_net::CpuAutodiff>(&job, &device, &glandseg_core::NoProgress)?;
//! println!("model in {}", out.model_dir.display());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod augment;
pub mod checkpoint;
pub mod error;
pub mod job;
pub mod model_folder;
pub mod preprocess;
pub mod prior;
pub mod splits;
pub mod trainer;

pub use augment::{AugmentConfig, PatchSampler};
pub use error::{Result, TrainError};
pub use glandseg_model::ATLAS_FILE;
pub use job::{prepare, train_fine_stage, train_fold, TrainJob, TrainOutcome};
pub use model_folder::{ModelFolder, ModelInfo};
pub use preprocess::{preprocess_images, Cache};
pub use trainer::{OptimizerKind, TrainConfig, TrainState, TrainSummary, Trainer};
