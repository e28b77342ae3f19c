//! Gland dosimetry for radioligand therapy (issue #14): from activity images at several
//! times after injection and a gland label map to time-integrated activity (TIA) and
//! absorbed dose per gland.
//!
//! - [`nuclide`]: decay data (ICRP-107) of the therapy nuclides: half-life, mean electron
//!   and photon energy emitted per decay.
//! - [`fit`]: time-activity curves (TAC) per gland: mono-, bi- (with uptake) and
//!   tri-exponential least-squares fits chosen by AICc, trapezoid + physical-decay tail,
//!   and the single-time-point methods of Hänscheid and Madsen. TIA in MBq·h.
//! - [`organ`]: organ-level absorbed dose: local energy deposition and the unit-density
//!   sphere model.
//! - [`voxel`]: voxel-level dose: local deposition and voxel-S-value kernel convolution
//!   (FFT), dose-volume histogram metrics.
//! - [`pvc`]: partial-volume correction of the gland activities (geometric transfer
//!   matrix with the SPECT's PSF).
//! - [`recovery`]: partial-volume correction from a recovery curve measured on a sphere
//!   phantom (RC as a function of volume), and the simulated phantom and closed form that
//!   check it.
//! - [`job`]: the whole computation over a label map and activity images on its grid, and
//!   its outputs (`dose.json`, `dose.csv`, the TAC and DVH plots, `report.md`).
//! - [`report`]: `report.md`, the short human-readable report.
//!
//! Units: time in hours, activity in MBq (images in Bq/mL), TIA in MBq·h, mass in g,
//! absorbed dose in Gy.

#![warn(missing_docs)]

pub mod fit;
pub mod job;
mod linalg;
pub mod nuclide;
pub mod organ;
mod plot;
pub mod pvc;
pub mod recovery;
pub mod report;
pub mod voxel;

pub use fit::{fit_tac, hanscheid, madsen, Model, ModelFit, TacFit};
pub use job::{
    compute_dose, write_outputs, DoseOptions, DoseReport, GlandDose, Sources, TimePoint,
};
pub use nuclide::Nuclide;

/// What went wrong, naming the input field (or file) a user has to fix.
#[derive(Debug, thiserror::Error)]
pub enum DoseError {
    /// An input value is unusable; `field` names it (`times`, `--activity`, ...).
    #[error("{field}: {msg}")]
    Invalid {
        /// The input field or file.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A nuclide that is not in the table.
    #[error("nuclide: unknown nuclide {0:?} (known: {known})", known = nuclide::known_names())]
    UnknownNuclide(String),
    /// An error from glandseg-core (geometry, I/O).
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
}

impl DoseError {
    pub(crate) fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Self {
        DoseError::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// Result with [`DoseError`].
pub type Result<T> = std::result::Result<T, DoseError>;
