//! Training's error type.

use std::path::{Path, PathBuf};

/// Every error names the file or the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        #[source]
        /// What the OS said.
        source: std::io::Error,
    },
    #[error(transparent)]
    /// An error from the core types.
    Core(#[from] glandseg_core::Error),
    #[error(transparent)]
    /// A NIfTI input.
    Nifti(#[from] glandseg_nifti::NiftiError),
    #[error("{0}")]
    /// Inputs or settings that do not fit (the message says which).
    Input(String),
    #[error("{path}: {msg}")]
    /// A checkpoint that cannot be read or does not fit.
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    #[error(transparent)]
    /// The model folder or a checkpoint.
    Model(#[from] glandseg_model::ModelError),
    #[error(transparent)]
    /// The dataset folder.
    Dataset(#[from] glandseg_plan::dataset::DatasetError),
}

impl TrainError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Training's result.
pub type Result<T> = std::result::Result<T, TrainError>;
