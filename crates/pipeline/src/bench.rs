//! The project's performance yardstick (`glandseg bench`). Times one training step
//! (forward, Dice+CE with deep supervision, backward, optimiser step) and a sliding-window
//! inference over a 2-channel volume for the planned network, and prints JSON that
//! `scripts/bench_compare.py` sets beside PyTorch's numbers for the same network
//! (`scripts/bench_pytorch.py`).

use anyhow::Result;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor};
use glandseg_net::{DeepSupervisionLoss, NetAutodiffBackend, Precision, UNetConfig};
use glandseg_predict::sliding::{predict_probabilities, SlidingWindow, Tta};
use std::time::Instant;

/// What to time.
#[derive(Clone, Debug)]
pub struct BenchJob {
    /// Training patch (cubic), voxels.
    pub patch: usize,
    /// Patches per training step (and tiles per inference batch).
    pub batch: usize,
    /// Resolution stages of the U-Net.
    pub stages: usize,
    /// Network widths.
    pub preset: glandseg_plan::Preset,
    /// Output classes.
    pub classes: usize,
    /// Timed training steps (after one warm-up step).
    pub steps: usize,
    /// Edge of the cubic volume for the sliding-window inference (0: skip).
    pub infer_size: usize,
}

/// Times `job.steps` training steps (after a warm-up) on backend `B` and one sliding-window
/// inference on its inner backend (f32, and bf16 where the CPU has AMX); returns the JSON
/// that `scripts/bench_compare.py` reads.
pub fn run_bench<B: NetAutodiffBackend>(job: &BenchJob) -> Result<serde_json::Value> {
    let a = job;
    anyhow::ensure!(
        a.steps > 0 && a.batch > 0 && a.stages >= 2,
        "steps, batch >= 1, stages >= 2"
    );
    type I<B> = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
    let device = Default::default();
    let mut stages = glandseg_plan::plan::topology([a.patch; 3], [1.0; 3], a.preset);
    stages.truncate(a.stages);
    let cfg = UNetConfig {
        in_channels: 2,
        num_classes: a.classes,
        stages: stages.clone(),
    };
    let mut model = cfg.init::<B>(&device);
    let mut optim = AdamConfig::new().init();
    let ds = DeepSupervisionLoss::new(stages.len() - 1);
    let p = a.patch;
    let x = Tensor::<B, 5>::random(
        [a.batch, 2, p, p, p],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let labels: Vec<u8> = (0..a.batch * p * p * p)
        .map(|i| ((i / 997) % a.classes) as u8)
        .collect();
    let mut step_times = Vec::new();
    for s in 0..=a.steps {
        let t = Instant::now();
        let outs = model.forward_all(x.clone());
        let tg = glandseg_train::trainer::targets::<B>(
            &labels,
            a.batch,
            [p; 3],
            &stages,
            outs.len(),
            &device,
        );
        let loss = ds.loss(outs, tg);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        // Force the step to finish (the backend may run lazily).
        let _ = burn::module::Module::num_params(&model);
        if s > 0 {
            step_times.push(t.elapsed().as_secs_f64());
        }
    }
    let train_step = step_times.iter().sum::<f64>() / step_times.len() as f64;
    let mut infer = None;
    let mut infer_bf16 = None;
    if a.infer_size > 0 {
        let n = a.infer_size;
        let imodel = cfg.init::<I<B>>(&device);
        let image: Vec<f32> = (0..2 * n * n * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let window = SlidingWindow {
            patch: [p; 3],
            step: 0.5,
            batch: a.batch,
        };
        let run = |precision| {
            glandseg_net::with_precision(precision, || {
                let t = Instant::now();
                let probs = predict_probabilities(
                    std::slice::from_ref(&imodel),
                    &image,
                    [n; 3],
                    2,
                    a.classes,
                    &[0.0, 0.0],
                    &window,
                    &Tta::default(),
                    &device,
                    &glandseg_core::NoProgress,
                );
                (t.elapsed().as_secs_f64(), probs)
            })
        };
        let (seconds, probs) = run(Precision::F32);
        infer = Some(seconds);
        anyhow::ensure!(
            probs.iter().all(|v| v.is_finite()),
            "non-finite probabilities"
        );
        if Precision::Bf16.is_available() {
            let (seconds, low) = run(Precision::Bf16);
            anyhow::ensure!(
                low.iter().all(|v| v.is_finite()),
                "non-finite bf16 probabilities"
            );
            let worst = probs
                .iter()
                .zip(&low)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            infer_bf16 = Some(serde_json::json!({
                "seconds": seconds,
                "max_probability_difference": worst,
                "argmax_agreement": argmax_agreement(&probs, &low, a.classes),
            }));
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let out = serde_json::json!({
        "framework": "glandseg (burn 0.21 flex)",
        "threads": std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(threads),
        "patch": p,
        "batch": a.batch,
        "features": stages.iter().map(|s| s.features).collect::<Vec<_>>(),
        "classes": a.classes,
        "train_step_s": train_step,
        "train_step_min_s": step_times.iter().cloned().fold(f64::INFINITY, f64::min),
        "inference_s": infer,
        "inference_bf16": infer_bf16,
        "inference_size": a.infer_size,
    });
    Ok(out)
}

/// Share of voxels whose most probable class is the same in two `[class][voxel]` maps.
fn argmax_agreement(p: &[f32], q: &[f32], classes: usize) -> f64 {
    let n = p.len() / classes;
    let argmax = |m: &[f32], v: usize| {
        (0..classes)
            .max_by(|&i, &j| m[i * n + v].total_cmp(&m[j * n + v]))
            .unwrap_or(0)
    };
    let same = (0..n).filter(|&v| argmax(p, v) == argmax(q, v)).count();
    same as f64 / n.max(1) as f64
}
