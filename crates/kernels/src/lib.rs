//! CPU kernels for the layers where a training step spends its time, written against plain
//! `f32` slices so they can be tested without a tensor library and plugged into burn as a
//! backend extension (see `glandseg-net`'s `backend` module).
//!
//! Written by hand because no maintained crate offers 3D convolution forward/backward or a
//! fused normalisation on the CPU at the speed we need: burn-flex's convolution builds an
//! im2col copy per tile and computes the weight gradient as a convolution with the output
//! gradient as a (huge) kernel. Matrix products go to the `gemm` crate.

pub mod conv;
mod layout;
pub mod loss;
pub mod norm;
