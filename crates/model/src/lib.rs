//! The trained model on disk, read by prediction and written by training, so that neither
//! stage depends on the other: the [`ModelFolder`] (plan, `model.json`, one folder per fold)
//! and the [`checkpoint`] file format.
//!
//! ```no_run
//! use glandseg_model::ModelFolder;
//! # fn main() -> Result<(), glandseg_model::ModelError> {
//! let folder = ModelFolder::open(std::path::Path::new("model"))?;
//! let device = Default::default();
//! for fold in folder.trained_folds() {
//!     let _net = folder.load_network::<glandseg_net::Cpu>(&fold, &device)?;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod folder;

pub use error::{ModelError, Result};
pub use folder::{ModelFolder, ModelInfo, BEST, FINAL, LATEST, MODEL_FORMAT_VERSION};

/// The fine stage's gland atlas inside its model folder (boxes for glands stage 1 missed).
pub const ATLAS_FILE: &str = "atlas.json";
