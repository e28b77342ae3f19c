//! Jobs that span several stages, each one library call over the stages' entry points:
//! the [`demo`] (phantom -> plan -> train -> predict -> evaluate -> report), the phantom
//! [`cohort`] with its DICOM export and review images, and the benchmark ([`mod@bench`]). The command
//! line only parses arguments into these jobs and prints what they return.
//!
//! ```no_run
//! use glandseg_pipeline::demo::{run_demo, DemoJob};
//! # fn main() -> anyhow::Result<()> {
//! let job = DemoJob {
//!     out: "out/demo".into(),
//!     train_cases: 10,
//!     test_cases: 3,
//!     scale: 0.5,
//!     train_minutes: 8.0,
//!     spacing: 3.0,
//!     patch: [32; 3],
//!     preset: glandseg_plan::Preset::Tiny,
//!     optimizer: glandseg_train::OptimizerKind::AdamW,
//!     lr: None,
//!     seed: 0,
//!     iterations: None,
//!     cascade: true,
//!     fine_share: 0.5,
//! };
//! let outcome = run_demo::<glandseg_net::CpuAutodiff>(&job, &glandseg_core::NoProgress, &|l| {
//!     println!("{l}")
//! })?;
//! println!("report: {}", outcome.report.display());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bench;
pub mod cohort;
pub mod demo;
