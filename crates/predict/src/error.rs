//! Prediction's own error: a wrong input is a prediction error, not a training one.

/// What can go wrong predicting a case or writing its outputs; every variant names the
/// file or the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    /// Inputs that do not fit the model or each other (channel count, missing files).
    #[error("{0}")]
    Input(String),
    /// The model folder or a checkpoint.
    #[error(transparent)]
    Model(#[from] glandseg_model::ModelError),
    /// Geometry, shapes, labels or a file written.
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
    /// A NIfTI input or output.
    #[error(transparent)]
    Nifti(#[from] glandseg_nifti::NiftiError),
    /// A DICOM input or output.
    #[error(transparent)]
    Dicom(#[from] glandseg_dicom::DicomError),
    /// An error with what was being done when it happened ("predicting CASE (file)").
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: Box<PredictError>,
    },
}

impl PredictError {
    /// Wraps the error with what was being done.
    pub fn context(self, context: impl Into<String>) -> Self {
        PredictError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }
}

/// Prediction's result.
pub type Result<T> = std::result::Result<T, PredictError>;
