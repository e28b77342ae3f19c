//! One error type for the core crate: every variant says what went wrong in words a user
//! can act on; I/O errors carry the path they happened on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("geometry: {0}")]
    Geometry(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("label map: {0}")]
    Labels(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
