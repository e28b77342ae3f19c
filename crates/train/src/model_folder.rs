//! The model folder lives in `glandseg-model` (prediction opens it without this crate);
//! re-exported here for training's callers.

pub use glandseg_model::folder::*;
