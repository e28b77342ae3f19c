//! The network: nnU-Net's PlainConvUNet written with burn, generic over the backend so the
//! same code trains on CPU (`flex`, the default) and GPU (`cuda` feature).
//!
//! Per stage: 2 x (conv, InstanceNorm with affine, LeakyReLU 0.01); downsampling by a
//! strided convolution, upsampling by a transposed convolution, skip connections by
//! concatenation; a 1x1x1 segmentation head at every decoder resolution for deep
//! supervision. burn has no 3D pooling or interpolation and none is needed: deep-supervision
//! targets are label maps downsampled on the CPU ([`loss::downsample_labels`]).
//!
//! Tensors are `[batch, channel, k, j, i]` (D, H, W = the volume's k, j, i), so a
//! `Volume`'s memory order maps onto a tensor without a transpose.

pub mod backend;
pub mod loss;
pub mod model;

pub use backend::{with_precision, NetAutodiffBackend, NetBackend, Precision};
pub use loss::{dice_ce_loss, downsample_labels, DeepSupervisionLoss};
pub use model::{UNet, UNetConfig};

/// The default CPU backend.
pub type Cpu = burn::backend::Flex;
/// The CPU backend with automatic differentiation, for training.
pub type CpuAutodiff = burn::backend::Autodiff<burn::backend::Flex>;
