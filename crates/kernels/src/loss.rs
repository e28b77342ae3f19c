//! nnU-Net's Dice + cross-entropy loss and its gradient with respect to the logits, in two
//! passes over memory.
//!
//! The same loss written with burn's tensor operations (`glandseg-net`'s `loss` module, the
//! reference the tests compare against) broadcasts along the channel axis a dozen times
//! forward and back, and burn-flex walks every broadcast with a strided iterator: about a
//! tenth of a training step. Here the softmax, both sums and the gradient are computed per
//! voxel with the classes in registers.

use rayon::prelude::*;

const EPS: f64 = 1e-5;

/// Loss value and its gradient with respect to the logits (same layout as the logits).
#[derive(Debug, Clone)]
pub struct DiceCe {
    pub loss: f32,
    pub grad: Vec<f32>,
}

/// Mean cross-entropy + (1 - mean soft Dice over classes 1..c), the Dice summed over the
/// batch and space. `logits` is `[n][c][spatial]`, `labels` `[n][spatial]` class indices.
///
/// # Panics
/// When the lengths do not match `n`, `c`, `spatial`, when `c < 2`, or when a label is not
/// a class index (callers check their labels).
pub fn dice_ce(logits: &[f32], labels: &[u8], n: usize, c: usize, spatial: usize) -> DiceCe {
    assert!(
        c >= 2,
        "dice_ce: {c} classes (needs background and one more)"
    );
    assert_eq!(logits.len(), n * c * spatial, "dice_ce: logits length");
    assert_eq!(labels.len(), n * spatial, "dice_ce: labels length");
    assert!(
        labels.iter().all(|&l| (l as usize) < c),
        "dice_ce: a label is not below the class count {c}"
    );
    let chunk = 4096;
    // Pass 1: probabilities into `grad`, and per-class sums.
    let mut grad = vec![0f32; logits.len()];
    #[derive(Clone)]
    struct Sums {
        ce: f64,
        inter: Vec<f64>,
        psum: Vec<f64>,
        tsum: Vec<f64>,
    }
    let zero = Sums {
        ce: 0.0,
        inter: vec![0.0; c],
        psum: vec![0.0; c],
        tsum: vec![0.0; c],
    };
    let blocks: Vec<(usize, usize)> = (0..n)
        .flat_map(|b| (0..spatial).step_by(chunk).map(move |s0| (b, s0)))
        .collect();
    // Each block writes the probabilities of its own voxels only.
    let base = SendPtr(grad.as_mut_ptr());
    let sums = {
        blocks
            .par_iter()
            .map(|&(b, s0)| {
                let mut acc = zero.clone();
                let len = chunk.min(spatial - s0);
                let z = &logits[b * c * spatial..][..c * spatial];
                let t = &labels[b * spatial + s0..][..len];
                let mut p = vec![0f32; c];
                let mut out = vec![0f32; c * len];
                for (v, &label) in t.iter().enumerate() {
                    let mut m = f32::NEG_INFINITY;
                    for k in 0..c {
                        m = m.max(z[k * spatial + s0 + v]);
                    }
                    let mut sum = 0f32;
                    for k in 0..c {
                        p[k] = (z[k * spatial + s0 + v] - m).exp();
                        sum += p[k];
                    }
                    let inv = 1.0 / sum;
                    let label = label as usize;
                    acc.ce -= (z[label * spatial + s0 + v] - m - sum.ln()) as f64;
                    for k in 0..c {
                        let pk = p[k] * inv;
                        out[k * len + v] = pk;
                        acc.psum[k] += pk as f64;
                    }
                    acc.inter[label] += (p[label] * inv) as f64;
                    acc.tsum[label] += 1.0;
                }
                // SAFETY: block (b, s0) alone writes voxels s0..s0+len of sample b.
                let dst = base.at(b * c * spatial);
                for k in 0..c {
                    for v in 0..len {
                        unsafe { *dst.add(k * spatial + s0 + v) = out[k * len + v] };
                    }
                }
                acc
            })
            .collect::<Vec<Sums>>()
            // Blocks added in a fixed order: the loss and its gradient are bit-identical
            // whatever the thread count (training must reproduce itself).
            .into_iter()
            .fold(zero.clone(), |mut x, y| {
                x.ce += y.ce;
                for k in 0..c {
                    x.inter[k] += y.inter[k];
                    x.psum[k] += y.psum[k];
                    x.tsum[k] += y.tsum[k];
                }
                x
            })
    };
    let voxels = (n * spatial) as f64;
    let fg = (c - 1) as f64;
    let mut dice_mean = 0.0;
    // dL/dp_k(v) = a_k * [t(v) == k] + b_k for k >= 1 (0 for the background).
    let mut coef_a = vec![0f32; c];
    let mut coef_b = vec![0f32; c];
    for k in 1..c {
        let denom = sums.psum[k] + sums.tsum[k] + EPS;
        let num = 2.0 * sums.inter[k] + EPS;
        dice_mean += num / denom / fg;
        coef_a[k] = (-2.0 / fg / denom) as f32;
        coef_b[k] = (num / fg / (denom * denom)) as f32;
    }
    let loss = sums.ce / voxels + 1.0 - dice_mean;
    let inv_voxels = (1.0 / voxels) as f32;
    // Pass 2: through the softmax, plus the cross-entropy's (p - onehot) / voxels.
    grad.par_chunks_mut(c * spatial)
        .zip(labels.par_chunks(spatial))
        .for_each(|(g, t)| {
            let mut gk = vec![0f32; c];
            for (v, &label) in t.iter().enumerate() {
                let label = label as usize;
                let mut dot = 0f32;
                for k in 0..c {
                    let p = g[k * spatial + v];
                    gk[k] = coef_b[k] + if k == label { coef_a[k] } else { 0.0 };
                    dot += p * gk[k];
                }
                for k in 0..c {
                    let p = g[k * spatial + v];
                    let onehot = if k == label { 1.0 } else { 0.0 };
                    g[k * spatial + v] = p * (gk[k] - dot) + (p - onehot) * inv_voxels;
                }
            }
        });
    DiceCe {
        loss: loss as f32,
        grad,
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets stay inside the buffer the pointer came from (sample starts).
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: used only to write disjoint voxel ranges from rayon tasks (see `dice_ce`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
