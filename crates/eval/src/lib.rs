//! Segmentation metrics computed in world units on the images' own grids: overlap (Dice,
//! IoU), surface distances (Hausdorff, HD95, ASSD, normalised surface Dice) and volumes,
//! per class and case ([`metrics`]), summarised over a cohort ([`summary`]) and written as
//! CSV / JSON ([`report`]).
//!
//! Definitions follow MedPy 0.5 (`medpy.metric.binary`), which the tests cross-check
//! against on fixtures made by `tests/fixtures/make_fixtures.py`:
//! - surface of a mask = its voxels with a 6-neighbour outside the mask or outside the
//!   grid: `mask & !binary_erosion(mask, 6-connectivity, border_value=0)` ([`surface`]);
//! - directed distances = for every surface voxel of A, the exact Euclidean distance (mm,
//!   anisotropic spacing, `glandseg_ops::distance`) to the nearest surface voxel of B;
//! - HD = max over both directions; HD95 = 95th percentile (numpy's linear) of both
//!   directed lists pooled (MedPy `hd95`; MONAI's max-of-directed-percentiles is
//!   [`surface::SurfaceDistances::percentile_directed_max`]); ASSD = mean of the pooled
//!   lists (MedPy ≥ 0.5, MONAI, Heimann et al. 2009);
//! - surface Dice at tolerance t = (#A-surface within t of B + #B-surface within t of A) /
//!   (#A-surface + #B-surface), counted over surface voxels as MONAI does (not weighted
//!   by surfel area as DeepMind's `surface-distance`).
//!
//! Empty masks (MedPy 0.5.2's distance functions raise on them; with both empty its `dc`
//! gives NaN and its `jc` 1; so these are our conventions, stated here):
//! - both empty: Dice = IoU = surface Dice = 1, HD = HD95 = ASSD = 0 — nothing to find
//!   and nothing found, the best value (MONAI's `DiceMetric(ignore_empty=False)`, Metrics
//!   Reloaded). nnU-Net and `surface-distance` give NaN instead and drop the case from
//!   means; to do that here, filter on `volume_ref_ml == 0`.
//! - exactly one empty: Dice = IoU = surface Dice = 0; the distances are infinite (as in
//!   MONAI and `surface-distance`) and held as `None`, written JSON `null` / an empty CSV
//!   cell because JSON has no infinity; summaries count them as `undefined`.
//!
//! The stage's entry point is [`evaluate_folder`]:
//!
//! ```no_run
//! use std::path::Path;
//! # fn main() -> Result<(), glandseg_eval::EvalError> {
//! let map = glandseg_core::LabelMap::default();
//! let cases = glandseg_eval::evaluate_folder(
//!     Path::new("predictions"),
//!     Path::new("labelsTs"),
//!     &map,
//!     Path::new("evaluation"),
//!     &glandseg_core::NoProgress,
//! )?;
//! for s in glandseg_eval::summarise(&cases) {
//!     println!("{}: Dice {:?}", s.name, s.dice.mean);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod folder;
pub mod metrics;
pub mod report;
pub mod summary;
pub mod surface;

pub use folder::{evaluate_folder, EvalError};
pub use metrics::{compare, compare_masks, CaseMetrics, ClassMetrics};
pub use summary::{summarise, Summary};
pub use surface::{surface_distances, SurfaceDistances};
