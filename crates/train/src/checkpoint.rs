//! Checkpoints: the format lives in `glandseg-model` (prediction reads it without this
//! crate); training writes it through these re-exports.

pub use glandseg_model::checkpoint::*;
