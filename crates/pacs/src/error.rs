//! One error type for the PACS side: every message names the server URL, the study or
//! the file, and what went wrong, in words a site's administrator can act on.

/// An error talking to a PACS or handling what it sent.
#[derive(Debug, thiserror::Error)]
pub enum PacsError {
    /// The server could not be reached or answered with an error.
    #[error("{url}: {msg}")]
    Server {
        /// The URL (or DICOM address) asked.
        url: String,
        /// What happened.
        msg: String,
    },
    /// The study cannot be processed (no PET, no shared frame of reference, ...).
    #[error("study {study}: {msg}")]
    Study {
        /// StudyInstanceUID.
        study: String,
        /// Why.
        msg: String,
    },
    /// The study is not a PET/CT study glandseg can segment (no PET, no CT, no shared
    /// frame of reference): a watcher skips it rather than failing.
    #[error("study {study}: {msg}")]
    NotPetCt {
        /// StudyInstanceUID.
        study: String,
        /// Why.
        msg: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A usage error (bad option value).
    #[error("{0}")]
    Usage(String),
}

/// Result with [`PacsError`].
pub type Result<T> = std::result::Result<T, PacsError>;

impl PacsError {
    /// A server error for `url`.
    pub fn server(url: impl Into<String>, msg: impl Into<String>) -> Self {
        PacsError::Server {
            url: url.into(),
            msg: msg.into(),
        }
    }
    /// A study error.
    pub fn study(study: impl Into<String>, msg: impl Into<String>) -> Self {
        PacsError::Study {
            study: study.into(),
            msg: msg.into(),
        }
    }
    /// A file error.
    pub fn file(path: impl Into<std::path::PathBuf>, msg: impl ToString) -> Self {
        PacsError::File {
            path: path.into(),
            msg: msg.to_string(),
        }
    }
}
