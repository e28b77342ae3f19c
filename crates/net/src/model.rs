use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{InstanceNorm, InstanceNormConfig, LeakyRelu, LeakyReluConfig, PaddingConfig3d};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use glandseg_plan::Stage;

use crate::backend::{self, NetBackend};

/// conv -> InstanceNorm(affine) -> LeakyReLU(0.01).
#[derive(Module, Debug)]
pub struct ConvNormAct<B: Backend> {
    conv: Conv3d<B>,
    norm: InstanceNorm<B>,
    act: LeakyRelu,
}

/// Plan axes are (i, j, k); burn's are (D, H, W) = (k, j, i).
fn dhw(v: [usize; 3]) -> [usize; 3] {
    [v[2], v[1], v[0]]
}

impl<B: Backend> ConvNormAct<B> {
    fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        device: &B::Device,
    ) -> Self {
        let k = dhw(kernel);
        let conv = Conv3dConfig::new([cin, cout], k)
            .with_stride(dhw(stride))
            .with_padding(PaddingConfig3d::Explicit(k[0] / 2, k[1] / 2, k[2] / 2))
            .with_bias(true)
            .init(device);
        ConvNormAct {
            conv,
            norm: InstanceNormConfig::new(cout)
                .with_affine(true)
                .with_epsilon(1e-5)
                .init(device),
            act: LeakyReluConfig::new().with_negative_slope(0.01).init(),
        }
    }
}

impl<B: NetBackend> ConvNormAct<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        if B::has_kernels() {
            backend::norm_leaky(&self.norm, &self.act, backend::conv3d(&self.conv, x))
        } else {
            self.act.forward(self.norm.forward(self.conv.forward(x)))
        }
    }
}

/// Two ConvNormAct; the first may downsample.
#[derive(Module, Debug)]
pub struct StageBlock<B: Backend> {
    a: ConvNormAct<B>,
    b: ConvNormAct<B>,
}

impl<B: Backend> StageBlock<B> {
    fn new(
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        device: &B::Device,
    ) -> Self {
        StageBlock {
            a: ConvNormAct::new(cin, cout, kernel, stride, device),
            b: ConvNormAct::new(cout, cout, kernel, [1, 1, 1], device),
        }
    }
}

impl<B: NetBackend> StageBlock<B> {
    fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        self.b.forward(self.a.forward(x))
    }
}

#[derive(Debug, Clone)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub num_classes: usize,
    pub stages: Vec<Stage>,
}

#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    encoder: Vec<StageBlock<B>>,
    up: Vec<ConvTranspose3d<B>>,
    decoder: Vec<StageBlock<B>>,
    /// One 1x1x1 head per decoder stage, finest first.
    heads: Vec<Conv3d<B>>,
}

impl UNetConfig {
    /// The network a plan describes (channels in, classes out, its stages): training and
    /// prediction build it from the same plan, so a checkpoint always fits.
    pub fn from_plan(plan: &glandseg_plan::Plan) -> Self {
        UNetConfig {
            in_channels: plan.input_channels(),
            num_classes: plan.labels.num_classes(),
            stages: plan.stages.clone(),
        }
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet<B> {
        let s = &self.stages;
        let mut encoder = Vec::new();
        let mut cin = self.in_channels;
        for st in s {
            encoder.push(StageBlock::new(
                cin,
                st.features,
                st.kernel,
                st.stride,
                device,
            ));
            cin = st.features;
        }
        // Decoder from the second-deepest stage up to the first.
        let (mut up, mut decoder, mut heads) = (Vec::new(), Vec::new(), Vec::new());
        for lvl in (0..s.len() - 1).rev() {
            let below = s[lvl + 1].features;
            let f = s[lvl].features;
            let stride = dhw(s[lvl + 1].stride);
            up.push(
                ConvTranspose3dConfig::new([below, f], stride)
                    .with_stride(stride)
                    .init(device),
            );
            decoder.push(StageBlock::new(2 * f, f, s[lvl].kernel, [1, 1, 1], device));
            heads.push(Conv3dConfig::new([f, self.num_classes], [1, 1, 1]).init(device));
        }
        UNet {
            encoder,
            up,
            decoder,
            heads,
        }
    }
}

impl<B: Backend> UNet<B> {
    /// Sets every output head's bias so that a fresh network says "background" with
    /// probability `p_background` everywhere and splits the rest evenly among the
    /// glands (the prior-probability initialisation of Lin et al., 2017).
    ///
    /// Why: with the default (zero) bias every class starts at 1/C in every voxel. For a
    /// gland of a few hundred voxels in a patch of 10^5, the batch soft Dice's denominator
    /// is then that spread-out probability mass (about 10^5 / C), so its gradient is
    /// ~1000 times weaker than the same gland's true-positive term deserves; the network
    /// learns the big glands first and, within a CPU budget, never lets the smallest
    /// class win the argmax (measured: lacrimal pseudo-Dice 0 while parotids reached
    /// 0.8). Starting from a confident background the foreground mass is small from the
    /// first step and every class's Dice term pulls at full strength.
    pub fn with_background_prior(self, p_background: f64) -> Self {
        let p = p_background.clamp(1e-6, 1.0 - 1e-6);
        let c = self.heads.first().map(|h| h.weight.dims()[0]).unwrap_or(2);
        let fg = (1.0 - p) / (c.max(2) - 1) as f64;
        let prior: Vec<f64> = (0..c).map(|k| if k == 0 { p } else { fg }).collect();
        self.with_class_prior(&prior)
    }

    /// Sets every output head's bias to the log of each class's share (`prior`, one entry
    /// per output class; floored at 1e-5 and renormalised), so that a fresh network
    /// predicts those shares everywhere. [`UNet::with_background_prior`] is the case of a
    /// fixed background share; training uses that one (measured shares of the training
    /// patches did not train better: see `glandseg_train::trainer::class_prior`).
    pub fn with_class_prior(mut self, prior: &[f64]) -> Self {
        for head in self.heads.iter_mut() {
            let Some(bias) = head.bias.take() else {
                continue;
            };
            // Same parameter id (the optimiser's state and checkpoints are keyed by it).
            let (id, t, mapper) = bias.consume();
            let c = t.dims()[0];
            let floored: Vec<f64> = (0..c)
                .map(|k| prior.get(k).copied().unwrap_or(0.0).max(1e-5))
                .collect();
            let total: f64 = floored.iter().sum();
            let values: Vec<f32> = floored.iter().map(|p| (p / total).ln() as f32).collect();
            let value = Tensor::from_data(burn::tensor::TensorData::new(values, [c]), &t.device());
            head.bias = Some(burn::module::Param::from_mapped_value(
                id,
                value.require_grad(),
                mapper,
            ));
        }
        self
    }
}

impl<B: NetBackend> UNet<B> {
    /// Logits at every decoder resolution, finest (full resolution) first.
    pub fn forward_all(&self, x: Tensor<B, 5>) -> Vec<Tensor<B, 5>> {
        let mut skips = Vec::new();
        let mut h = x;
        for (n, e) in self.encoder.iter().enumerate() {
            h = e.forward(h);
            if n + 1 < self.encoder.len() {
                skips.push(h.clone());
            }
        }
        let mut outs = Vec::new();
        for ((up, dec), head) in self.up.iter().zip(&self.decoder).zip(&self.heads) {
            let skip = skips.pop().expect("one skip per decoder stage");
            let (up, head) = (
                |x| {
                    if B::has_kernels() {
                        backend::conv_transpose3d(up, x)
                    } else {
                        up.forward(x)
                    }
                },
                |x| {
                    if B::has_kernels() {
                        backend::conv3d(head, x)
                    } else {
                        head.forward(x)
                    }
                },
            );
            h = dec.forward(backend::cat_channels(up(h), skip));
            outs.push(head(h.clone()));
        }
        outs.reverse();
        outs
    }

    /// Full-resolution logits only (inference).
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        self.forward_all(x).swap_remove(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> UNet<crate::Cpu> {
        let plan_stages =
            glandseg_plan::plan::topology([16, 16, 16], [1.0; 3], glandseg_plan::Preset::Tiny);
        UNetConfig {
            in_channels: 2,
            num_classes: 4,
            stages: plan_stages,
        }
        .init(&Default::default())
    }

    fn biases(n: &UNet<crate::Cpu>) -> Vec<Vec<f32>> {
        n.heads
            .iter()
            .map(|h| {
                h.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn class_prior_sets_every_head_to_the_log_shares() {
        let n = net().with_class_prior(&[6.0, 3.0, 1.0, 0.0]);
        let b = biases(&n);
        assert!(b.len() > 1, "deep supervision heads");
        for head in &b {
            let p: Vec<f64> = head.iter().map(|&x| (x as f64).exp()).collect();
            // Shares renormalised, the empty class floored (never -inf).
            assert!(
                (p[0] - 0.6).abs() < 1e-4 && (p[1] - 0.3).abs() < 1e-4,
                "{p:?}"
            );
            assert!(head[3].is_finite() && p[3] < 1e-4, "{p:?}");
        }
    }

    #[test]
    fn background_prior_splits_the_rest_evenly() {
        let b = biases(&net().with_background_prior(0.99));
        for head in &b {
            let p: Vec<f64> = head.iter().map(|&x| (x as f64).exp()).collect();
            assert!((p[0] - 0.99).abs() < 1e-5);
            assert!(
                p[1..].iter().all(|&q| (q - 0.01 / 3.0).abs() < 1e-6),
                "{p:?}"
            );
        }
    }
}
