//! The model crate's error: every variant names the file at fault.

use std::path::{Path, PathBuf};

/// What can go wrong reading or writing a model folder or a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// An error from the core types (atomic writes).
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
    /// A folder or file that is not what it should be (the message says why).
    #[error("{0}")]
    Input(String),
    /// A checkpoint that cannot be read or does not fit the planned network.
    #[error("{path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
}

impl ModelError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The model crate's result.
pub type Result<T> = std::result::Result<T, ModelError>;
