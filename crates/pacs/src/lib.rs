//! glandseg as a DICOM node.
//!
//! - [`dicomweb`]: a DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store;
//!   HTTP Basic authentication, TLS for `https://`).
//! - [`multipart`]: `multipart/related` bodies, read as a stream (WADO-RS) and built
//!   (STOW-RS).
//! - [`study`]: which CT and PET series of a study to segment, decided from the server's
//!   metadata before anything is downloaded.
//! - [`orthanc`]: Orthanc's change feed (`StableStudy`).
//! - [`state`] and [`watch`]: the watcher that processes each new PET/CT study once and
//!   remembers it in a small JSON file written atomically.
//! - [`dimse`]: DICOM C-STORE sender (SCU) and receiver (SCP), for sites without DICOMweb.
//!
//! Segmenting is not done here: the caller (the `glandseg pacs` command) passes a
//! closure, so this crate needs no network model.

pub mod dicomweb;
pub mod dimse;
pub mod error;
pub mod multipart;
pub mod orthanc;
pub mod state;
pub mod study;
pub mod watch;

pub use dicomweb::{Credentials, DicomWeb, SeriesRow, Stored, StudyRow};
pub use error::{PacsError, Result};
pub use orthanc::Orthanc;
pub use state::{Outcome, StateFile, WatchState};
pub use study::{find_pet_ct, PetCt};
pub use watch::{watch, Feed, WatchOptions};
