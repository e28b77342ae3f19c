//! The types every glandseg stage shares: a [`Volume`] is voxels plus the [`Geometry`]
//! that places them in the patient, a [`LabelMap`] names label values and knows which
//! ones are left/right partners, and [`atomic`] writes files so that a crash never leaves
//! a half-written output where a good one was.
//!
//! Conventions (see `shared/LABELS.md`): world coordinates are DICOM patient coordinates
//! (LPS, millimetres). Voxel indices are `(i, j, k)` with `i` fastest in memory; the
//! ndarray behind a volume is indexed `[k, j, i]`, as SimpleITK's `GetArrayFromImage`
//! and a burn tensor `[D, H, W]` are, so the memory layout is the NIfTI/DICOM one.

pub mod atomic;
pub mod error;
pub mod geometry;
pub mod labels;
pub mod panics;
pub mod progress;
pub mod testdata;
pub mod volume;

pub use error::{Error, Result};
pub use geometry::{Geometry, Mat3, Vec3};
pub use labels::{LabelMap, Side};
pub use progress::{NoProgress, Progress};
pub use volume::Volume;
