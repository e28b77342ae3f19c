use std::path::{Path, PathBuf};

/// Every error names the file or the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
    #[error(transparent)]
    Nifti(#[from] glandseg_nifti::NiftiError),
    #[error("{0}")]
    Input(String),
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Model(#[from] glandseg_model::ModelError),
    #[error(transparent)]
    Dataset(#[from] glandseg_plan::dataset::DatasetError),
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, TrainError>;
