//! Segmentation metrics computed in world units on the images' own grids: overlap (Dice,
//! IoU), surface distances (Hausdorff, HD95, ASSD, normalised surface Dice) and volumes.
//!
//! Definitions follow MedPy (`medpy.metric.binary`), which the tests cross-check against:
//! - surface of a mask = its voxels with a 6-neighbour outside the mask (or outside the
//!   grid): `mask & ~binary_erosion(mask, 6-connectivity)`;
//! - directed distances = for every surface voxel of A, the exact Euclidean distance (mm,
//!   anisotropic spacing) to the nearest surface voxel of B;
//! - HD = max over both directions; HD95 = 95th percentile (linear interpolation, as
//!   numpy) of both directed distance sets pooled; ASSD = mean of the pooled distances
//!   (Heimann et al. 2009; MedPy and MONAI do the same, so a gland with a long surface
//!   weighs in by its surface, not by half);
//! - surface Dice at tolerance t = (#A-surface within t of B + #B-surface within t of A) /
//!   (#A-surface + #B-surface), counted over surface voxels.
//!
//! Empty masks: both empty -> Dice = IoU = surface Dice = 1, distances 0 (nothing to
//! miss); exactly one empty -> Dice = IoU = surface Dice = 0 and distances undefined
//! (`None`, written as JSON null) — no finite number would be honest.

pub mod metrics;
pub mod report;

pub use metrics::{compare, compare_masks, ClassMetrics};
