//! The network on a tiny problem: shapes, finite loss and gradients, and a loss that falls.

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use glandseg_net::{downsample_labels, CpuAutodiff, DeepSupervisionLoss, UNetConfig};
use glandseg_plan::plan::topology;

type B = CpuAutodiff;

/// Two channels; class 1 where a bright blob is on the left half, class 2 on the right.
fn batch(n: usize, s: usize) -> (Vec<f32>, Vec<u8>) {
    let mut x = vec![0f32; n * 2 * s * s * s];
    let mut y = vec![0u8; n * s * s * s];
    for b in 0..n {
        let c = [
            s as f32 * (0.3 + 0.4 * b as f32),
            s as f32 / 2.0,
            s as f32 / 2.0,
        ];
        for z in 0..s {
            for v in 0..s {
                for u in 0..s {
                    let d = ((u as f32 - c[0]).powi(2)
                        + (v as f32 - c[1]).powi(2)
                        + (z as f32 - c[2]).powi(2))
                    .sqrt();
                    let inside = d < s as f32 / 4.0;
                    let vox = (z * s + v) * s + u;
                    x[(b * 2) * s * s * s + vox] =
                        if inside { 1.0 } else { 0.0 } + 0.1 * ((vox * 7919 % 13) as f32 / 13.0);
                    x[(b * 2 + 1) * s * s * s + vox] = if inside { 2.0 } else { 0.2 };
                    if inside {
                        y[b * s * s * s + vox] = if (u as f32) < s as f32 / 2.0 { 1 } else { 2 };
                    }
                }
            }
        }
    }
    (x, y)
}

#[test]
fn forward_shapes_and_falling_loss() {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 7);
    let s = 16;
    let stages = topology([s, s, s], [1.0; 3], glandseg_plan::Preset::Cpu);
    assert_eq!(stages.len(), 3);
    let cfg = UNetConfig {
        in_channels: 2,
        num_classes: 3,
        stages: stages.clone(),
    };
    let mut model = cfg.init::<B>(&device);
    let (xv, yv) = batch(2, s);
    let x = Tensor::<B, 5>::from_data(TensorData::new(xv, [2, 2, s, s, s]), &device);
    let outs = model.forward_all(x.clone());
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].dims(), [2, 3, s, s, s]);
    assert_eq!(outs[1].dims(), [2, 3, s / 2, s / 2, s / 2]);
    let ds = DeepSupervisionLoss::new(outs.len());
    let targets: Vec<Tensor<B, 4, Int>> = [1usize, 2]
        .iter()
        .map(|&f| {
            let (v, shape) = downsample_labels(&yv, [2, s, s, s], [f, f, f]);
            Tensor::<B, 4, Int>::from_data(
                TensorData::new(v.into_iter().map(|l| l as i64).collect::<Vec<_>>(), shape),
                &device,
            )
        })
        .collect();
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = ds.loss(model.forward_all(x.clone()), targets.clone());
        let value: f32 = loss.clone().into_scalar();
        assert!(value.is_finite());
        losses.push(value);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    eprintln!("loss {:.4} -> {:.4}", losses[0], losses[losses.len() - 1]);
    assert!(
        losses[losses.len() - 1] < 0.6 * losses[0],
        "loss did not fall: {losses:?}"
    );
    // Inference on the inner (non-autodiff) backend gives the same shape.
    let valid = model.valid();
    let xi = Tensor::<glandseg_net::Cpu, 5>::from_data(x.into_data(), &device);
    assert_eq!(valid.forward(xi).dims(), [2, 3, s, s, s]);
}
