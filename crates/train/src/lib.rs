//! Training, as nnU-Net's stages after the plan: *preprocess* the dataset into a cache at
//! the planned spacing, *sample* patches with foreground oversampling and laterality-aware
//! augmentation, and *train* the planned U-Net with checkpoints that survive a kill.
//! Everything is generic over burn's backend (`flex` on CPU by default, `cuda` optional).

pub mod augment;
pub mod checkpoint;
pub mod error;
pub mod job;
pub mod model_folder;
pub mod preprocess;
pub mod splits;
pub mod trainer;

pub use augment::{AugmentConfig, PatchSampler};
pub use error::{Result, TrainError};
pub use job::{train_fold, TrainJob, TrainOutcome};
pub use model_folder::{ModelFolder, ModelInfo};
pub use preprocess::{preprocess_images, Cache};
pub use trainer::{OptimizerKind, TrainConfig, TrainState, TrainSummary, Trainer};
