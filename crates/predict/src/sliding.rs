//! Sliding-window inference as nnU-Net does it: tiles of the training patch size at a
//! step of half a tile, each tile's softmax weighted by a Gaussian (sigma 1/8 of the tile)
//! so that tile borders, where the network sees least context, count least; tiles run in
//! batches; the probabilities of several folds and of mirrored inputs are averaged.
//!
//! Test-time mirroring along the left-right axis flips the output back AND swaps every
//! `_left` class with its `_right` partner: the mirrored input shows a left parotid where
//! the right one was, so its prediction must be relabelled before it is averaged in.

use burn::tensor::{Tensor, TensorData};
use glandseg_core::Progress;
use glandseg_net::{NetBackend, UNet};
use glandseg_ops::flip::flip_blocks;

#[derive(Clone, Debug)]
/// How an image is tiled.
pub struct SlidingWindow {
    /// Tile size along (i, j, k).
    pub patch: [usize; 3],
    /// Step as a fraction of the tile (0.5 = half a tile).
    pub step: f64,
    /// Tiles per forward pass.
    pub batch: usize,
}

/// Tile start positions along one axis (nnU-Net's `compute_steps_for_sliding_window`):
/// the fewest tiles at the target step that cover the axis, spread evenly.
pub fn tile_starts(size: usize, tile: usize, step: f64) -> Vec<usize> {
    if size <= tile {
        return vec![0];
    }
    let target = (tile as f64 * step).max(1.0);
    let n = ((size - tile) as f64 / target).ceil() as usize + 1;
    let actual = (size - tile) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| (actual * i as f64).round() as usize)
        .collect()
}

/// Gaussian importance map over a tile, `[k, j, i]` order, peak 1, never 0.
pub fn gaussian_importance(patch: [usize; 3], sigma_scale: f64) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let s = (n as f64 * sigma_scale).max(1e-3);
        (0..n)
            .map(|x| (-((x as f64 - c).powi(2)) / (2.0 * s * s)).exp())
            .collect()
    };
    let (gi, gj, gk) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w = Vec::with_capacity(patch.iter().product());
    for &a in &gk {
        for &b in &gj {
            for &c in &gi {
                w.push((a * b * c) as f32);
            }
        }
    }
    let max = w.iter().cloned().fold(0.0f32, f32::max);
    let mut min_nonzero = f32::INFINITY;
    for v in w.iter_mut() {
        *v /= max;
        if *v > 0.0 {
            min_nonzero = min_nonzero.min(*v);
        }
    }
    for v in w.iter_mut() {
        if *v <= 0.0 {
            *v = min_nonzero;
        }
    }
    w
}

/// Test-time augmentation settings.
#[derive(Clone, Debug, Default)]
pub struct Tta {
    /// Mirror left-right (with the class swap).
    pub mirror_lr: bool,
    /// Also mirror the other two axes (only useful for models trained with those flips).
    pub mirror_other_axes: bool,
    /// Voxel axis of the patient's left-right direction.
    pub lr_axis: usize,
    /// Class -> mirror partner class.
    pub swap: Vec<usize>,
}

impl Tta {
    /// Variants to run: the voxel axis flipped (none for the plain input), and whether
    /// the classes swap.
    fn variants(&self) -> Vec<(Option<usize>, bool)> {
        let mut v = vec![(None, false)];
        if self.mirror_lr {
            v.push((Some(self.lr_axis), true));
        }
        if self.mirror_other_axes {
            for a in (0..3).filter(|&a| a != self.lr_axis) {
                v.push((Some(a), false));
            }
        }
        v
    }
}

/// Probabilities `[classes, k, j, i]` over an image `[channels, k, j, i]` of `shape` (i, j,
/// k), averaged over `models` and the TTA variants. `fill` pads channels where the image is
/// smaller than a tile.
#[allow(clippy::too_many_arguments)]
pub fn predict_probabilities<B: NetBackend>(
    models: &[UNet<B>],
    image: &[f32],
    shape: [usize; 3],
    channels: usize,
    classes: usize,
    fill: &[f32],
    window: &SlidingWindow,
    tta: &Tta,
    device: &B::Device,
    progress: &dyn Progress,
) -> Vec<f32> {
    // Pad up to one tile where the image is smaller.
    let p = window.patch;
    let padded = [0, 1, 2].map(|a| shape[a].max(p[a]));
    let n_pad = padded[0] * padded[1] * padded[2];
    let mut img = vec![0f32; channels * n_pad];
    let n = shape[0] * shape[1] * shape[2];
    for c in 0..channels {
        let dst = &mut img[c * n_pad..(c + 1) * n_pad];
        dst.fill(fill[c]);
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                let s = (k * shape[1] + j) * shape[0];
                let d = (k * padded[1] + j) * padded[0];
                dst[d..d + shape[0]].copy_from_slice(&image[c * n + s..c * n + s + shape[0]]);
            }
        }
    }
    let starts: Vec<[usize; 3]> = {
        let (si, sj, sk) = (
            tile_starts(padded[0], p[0], window.step),
            tile_starts(padded[1], p[1], window.step),
            tile_starts(padded[2], p[2], window.step),
        );
        let mut v = Vec::new();
        for &k in &sk {
            for &j in &sj {
                for &i in &si {
                    v.push([i, j, k]);
                }
            }
        }
        v
    };
    let weight = gaussian_importance(p, 1.0 / 8.0);
    let tile_vox = p[0] * p[1] * p[2];
    let mut acc = vec![0f32; classes * n_pad];
    let mut wsum = vec![0f32; n_pad];
    let variants = tta.variants();
    let swap_idx: Vec<i64> = (0..classes)
        .map(|c| tta.swap.get(c).copied().unwrap_or(c) as i64)
        .collect();
    progress.start("predict", starts.len() as u64);
    for chunk in starts.chunks(window.batch.max(1)) {
        let nb = chunk.len();
        let mut batch = vec![0f32; nb * channels * tile_vox];
        for (b, s) in chunk.iter().enumerate() {
            for c in 0..channels {
                for k in 0..p[2] {
                    for j in 0..p[1] {
                        let src =
                            c * n_pad + ((s[2] + k) * padded[1] + s[1] + j) * padded[0] + s[0];
                        let dst = (b * channels + c) * tile_vox + (k * p[1] + j) * p[0];
                        batch[dst..dst + p[0]].copy_from_slice(&img[src..src + p[0]]);
                    }
                }
            }
        }
        // Softmax, flips and the class swap run here on plain slices (burn-flex walks a
        // channel-axis softmax or a flip with a strided iterator, tile after tile).
        let mut prob = vec![0f32; nb * classes * tile_vox];
        let mut count = 0.0f32;
        for model in models {
            for (axis, swap) in &variants {
                let mut input = batch.clone();
                if let Some(a) = axis {
                    flip_blocks(&mut input, p, *a);
                }
                let x = Tensor::<B, 5>::from_data(
                    TensorData::new(input, [nb, channels, p[2], p[1], p[0]]),
                    device,
                );
                let mut out: Vec<f32> = model
                    .forward(x)
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .expect("f32 tensor data");
                softmax_classes(&mut out, nb, classes, tile_vox);
                if let Some(a) = axis {
                    flip_blocks(&mut out, p, *a);
                }
                for b in 0..nb {
                    for c in 0..classes {
                        let from = if *swap { swap_idx[c] as usize } else { c };
                        let src = &out[(b * classes + from) * tile_vox..][..tile_vox];
                        let dst = &mut prob[(b * classes + c) * tile_vox..][..tile_vox];
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d += v);
                    }
                }
                count += 1.0;
            }
        }
        let inv = 1.0 / count;
        for (b, s) in chunk.iter().enumerate() {
            for k in 0..p[2] {
                for j in 0..p[1] {
                    let t0 = (k * p[1] + j) * p[0];
                    let o0 = ((s[2] + k) * padded[1] + s[1] + j) * padded[0] + s[0];
                    let w = &weight[t0..t0 + p[0]];
                    wsum[o0..o0 + p[0]]
                        .iter_mut()
                        .zip(w)
                        .for_each(|(d, w)| *d += w);
                    for c in 0..classes {
                        let src = &prob[(b * classes + c) * tile_vox + t0..][..p[0]];
                        let dst = &mut acc[c * n_pad + o0..][..p[0]];
                        for ((d, v), w) in dst.iter_mut().zip(src).zip(w) {
                            *d += w * v * inv;
                        }
                    }
                }
            }
        }
        progress.inc(nb as u64);
    }
    // Normalise and cut the padding off.
    let mut out = vec![0f32; classes * n];
    for c in 0..classes {
        for k in 0..shape[2] {
            for j in 0..shape[1] {
                for i in 0..shape[0] {
                    let o = (k * padded[1] + j) * padded[0] + i;
                    out[c * n + (k * shape[1] + j) * shape[0] + i] =
                        acc[c * n_pad + o] / wsum[o].max(1e-12);
                }
            }
        }
    }
    out
}

/// Softmax over the class axis of `[nb][classes][tv]`, in place.
fn softmax_classes(x: &mut [f32], nb: usize, classes: usize, tv: usize) {
    let mut m = vec![0f32; tv];
    let mut sum = vec![0f32; tv];
    for tile in x.chunks_exact_mut(classes * tv).take(nb) {
        m.fill(f32::NEG_INFINITY);
        for row in tile.chunks_exact(tv) {
            m.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
        }
        sum.fill(0.0);
        for row in tile.chunks_exact_mut(tv) {
            for ((v, m), s) in row.iter_mut().zip(&m).zip(sum.iter_mut()) {
                *v = (*v - m).exp();
                *s += *v;
            }
        }
        for row in tile.chunks_exact_mut(tv) {
            row.iter_mut().zip(&sum).for_each(|(v, s)| *v /= s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_over_classes() {
        // 2 tiles x 3 classes x 4 voxels.
        let mut x: Vec<f32> = (0..24).map(|v| ((v * 7) % 5) as f32 - 2.0).collect();
        let orig = x.clone();
        softmax_classes(&mut x, 2, 3, 4);
        for b in 0..2 {
            for t in 0..4 {
                let z: Vec<f32> = (0..3).map(|c| orig[(b * 3 + c) * 4 + t]).collect();
                let m = z.iter().cloned().fold(f32::MIN, f32::max);
                let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
                let s: f32 = e.iter().sum();
                for c in 0..3 {
                    assert!((x[(b * 3 + c) * 4 + t] - e[c] / s).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn tiles_cover_the_axis_at_half_steps() {
        assert_eq!(tile_starts(64, 64, 0.5), vec![0]);
        assert_eq!(tile_starts(40, 64, 0.5), vec![0]);
        assert_eq!(tile_starts(128, 64, 0.5), vec![0, 32, 64]);
        let s = tile_starts(100, 64, 0.5);
        assert_eq!(*s.first().unwrap(), 0);
        assert_eq!(*s.last().unwrap(), 36, "the last tile ends at the edge");
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 32));
    }

    #[test]
    fn gaussian_peaks_in_the_middle_and_never_vanishes() {
        let w = gaussian_importance([9, 9, 9], 1.0 / 8.0);
        let centre = (4 * 9 + 4) * 9 + 4;
        assert_eq!(w[centre], 1.0);
        assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0));
        assert!(w[0] < w[centre] * 1e-3, "the corner weighs little");
    }
}
