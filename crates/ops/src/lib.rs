//! Volume-to-volume operations on explicit grids: resampling onto any target geometry,
//! Gaussian filtering in millimetres, connected components, the exact Euclidean distance
//! transform and the morphology built on it, and rigid CT-to-CT registration. All of them are parallel over lines or
//! slices with rayon; none of them ever loses the geometry.

pub mod components;
pub mod distance;
pub mod filter;
pub mod flip;
mod lines;
pub mod morphology;
pub mod register;
pub mod resample;
