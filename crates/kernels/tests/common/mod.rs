//! Helpers shared by the convolution tests.
#![allow(dead_code)]

use glandseg_kernels::conv::ConvGeometry;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// `n` values uniform in [-1, 1).
pub fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A geometry from its fields in order: batch, A, B, size, kernel, stride, padding.
pub fn geometry(
    batch: usize,
    a: usize,
    b: usize,
    in_size: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> ConvGeometry {
    ConvGeometry {
        batch,
        in_channels: a,
        out_channels: b,
        in_size,
        kernel,
        stride,
        padding,
    }
}
