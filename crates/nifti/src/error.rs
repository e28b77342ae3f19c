use std::path::PathBuf;

/// Every error names the file and what is wrong with it, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Core {
        path: PathBuf,
        #[source]
        source: glandseg_core::Error,
    },
}

impl NiftiError {
    pub(crate) fn invalid(path: &std::path::Path, msg: impl Into<String>) -> Self {
        NiftiError::Invalid {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
}
