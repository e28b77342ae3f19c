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
//!     scale: 0.5,
//!     train_minutes: 8.0,
//!     ..DemoJob::default()
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
