//! The first two stages of the pipeline, as nnU-Net shapes them: a *fingerprint* of the
//! dataset (what the data is: spacings, shapes, intensities under the labels, label
//! volumes, left/right pairs) and a *plan* derived from it by fixed rules (target spacing,
//! patch and batch size for a memory budget, network topology, per-channel
//! normalisation). Both are plain JSON a person can read and edit.

pub mod dataset;
pub mod fingerprint;
pub mod naming;
pub mod plan;
pub mod preprocess;

pub use dataset::{Case, Dataset};
pub use fingerprint::{fingerprint, ChannelStats, Fingerprint};
pub use plan::{make_plan, Normalization, Plan, PlanOptions, PlanOverrides, Preset, Stage};
