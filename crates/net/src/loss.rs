//! Dice + cross-entropy, nnU-Net's default: the cross-entropy trains every voxel, the soft
//! Dice (foreground classes, computed over the whole batch) keeps small structures such as
//! the lacrimal glands from being drowned by background.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::backend::NetBackend;

/// One-hot `[N, C, D, H, W]` from labels `[N, D, H, W]`.
fn one_hot<B: Backend>(labels: Tensor<B, 4, Int>, classes: usize) -> Tensor<B, 5> {
    let parts: Vec<Tensor<B, 5>> = (0..classes)
        .map(|c| labels.clone().equal_elem(c as i64).float().unsqueeze_dim(1))
        .collect();
    Tensor::cat(parts, 1)
}

/// Mean cross-entropy plus (1 - mean soft Dice over the foreground classes); the fused
/// kernel where the backend has one ([`crate::backend::dice_ce`]), else [`dice_ce_reference`].
pub fn dice_ce_loss<B: NetBackend>(
    logits: Tensor<B, 5>,
    labels: Tensor<B, 4, Int>,
) -> Tensor<B, 1> {
    if B::has_kernels() {
        crate::backend::dice_ce(logits, labels)
    } else {
        dice_ce_reference(logits, labels)
    }
}

/// The loss written with burn's tensor operations.
pub fn dice_ce_reference<B: Backend>(
    logits: Tensor<B, 5>,
    labels: Tensor<B, 4, Int>,
) -> Tensor<B, 1> {
    let [_, c, _, _, _] = logits.dims();
    let target = one_hot(labels, c);
    let logp = log_softmax(logits.clone(), 1);
    let ce = (target.clone() * logp).sum_dim(1).mean().neg();
    let p = softmax(logits, 1);
    // Sum over batch and space: [C].
    // Space first, then batch: every reduction runs over contiguous memory (a swap_dims
    // first made burn-flex walk the whole tensor with a strided iterator, forward and back).
    let sum = |t: Tensor<B, 5>| t.flatten::<3>(2, 4).sum_dim(2).sum_dim(0).reshape([c]);
    let inter = sum(p.clone() * target.clone());
    let denom = sum(p) + sum(target);
    let dice = (inter * 2.0 + 1e-5) / (denom + 1e-5);
    let fg = dice.narrow(0, 1, c - 1).mean();
    ce + fg.neg() + 1.0
}

/// Label map `[n, d, h, w]` (u8) downsampled by taking every `stride`-th voxel — the
/// deep-supervision target of a decoder stage (nnU-Net uses nearest-neighbour too).
pub fn downsample_labels(
    labels: &[u8],
    shape: [usize; 4],
    stride: [usize; 3],
) -> (Vec<u8>, [usize; 4]) {
    let [n, d, h, w] = shape;
    let out = [
        n,
        d.div_ceil(stride[0]),
        h.div_ceil(stride[1]),
        w.div_ceil(stride[2]),
    ];
    let mut v = Vec::with_capacity(out.iter().product());
    for b in 0..n {
        for z in (0..d).step_by(stride[0]) {
            for y in (0..h).step_by(stride[1]) {
                for x in (0..w).step_by(stride[2]) {
                    v.push(labels[((b * d + z) * h + y) * w + x]);
                }
            }
        }
    }
    (v, out)
}

/// Deep supervision weights as nnU-Net sets them: 1/2^i per resolution, the coarsest
/// dropped, normalised to sum to 1.
pub struct DeepSupervisionLoss {
    pub weights: Vec<f32>,
}

impl DeepSupervisionLoss {
    pub fn new(levels: usize) -> Self {
        let mut w: Vec<f32> = (0..levels).map(|i| 1.0 / (1u32 << i) as f32).collect();
        if levels > 1 {
            *w.last_mut().expect("non-empty") = 0.0;
        }
        let s: f32 = w.iter().sum();
        DeepSupervisionLoss {
            weights: w.into_iter().map(|x| x / s).collect(),
        }
    }

    pub fn loss<B: NetBackend>(
        &self,
        outputs: Vec<Tensor<B, 5>>,
        targets: Vec<Tensor<B, 4, Int>>,
    ) -> Tensor<B, 1> {
        let mut total: Option<Tensor<B, 1>> = None;
        for ((o, t), w) in outputs.into_iter().zip(targets).zip(&self.weights) {
            if *w == 0.0 {
                continue;
            }
            let l = dice_ce_loss(o, t) * *w;
            total = Some(match total {
                Some(x) => x + l,
                None => l,
            });
        }
        total.expect("at least one supervised level")
    }
}
