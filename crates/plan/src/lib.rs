//! The first two stages of the pipeline, as nnU-Net shapes them: a *fingerprint* of the
//! dataset (what the data is: spacings, shapes, intensities under the labels, label
//! volumes, left/right pairs) and a *plan* derived from it by fixed rules (target spacing,
//! patch and batch size for a memory budget, network topology, per-channel
//! normalisation). Both are plain JSON a person can read and edit.
//!
//! The image steps that follow the plan ([`preprocess`]) live here too, so training and
//! prediction share them, as does nnU-Net's file naming ([`naming`]).
//!
//! ```no_run
//! use glandseg_plan::{fingerprint, make_plan, Dataset, PlanOptions};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ds = Dataset::open(std::path::Path::new("Dataset001_GlandPhantom"))?;
//! let fp = fingerprint(&ds, 0)?;
//! let plan = make_plan(&fp, &ds.labels, &ds.channels, &PlanOptions::default());
//! glandseg_core::atomic::write_json(&ds.root.join("plans").join("plans.json"), &plan)?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod cascade;
pub mod dataset;
pub mod fingerprint;
pub mod naming;
pub mod plan;
pub mod preprocess;

pub use cascade::{CascadePlan, GlandAtlas};
pub use dataset::{Case, Dataset};
pub use fingerprint::{fingerprint, ChannelStats, Fingerprint};
pub use plan::{make_plan, Normalization, Plan, PlanOptions, PlanOverrides, Preset, Stage};
