//! `glandseg bench`: `glandseg_pipeline::bench::run_bench` and its JSON (the yardstick that
//! `scripts/bench_compare.py` sets beside PyTorch's numbers for the same network).

use anyhow::Result;
use clap::Args;
use glandseg_pipeline::bench::{run_bench, BenchJob};

#[derive(Args)]
pub struct BenchArgs {
    /// Training patch (cubic), voxels.
    #[arg(long, default_value_t = 64)]
    patch: usize,
    /// Patches per training step.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Resolution stages of the U-Net (features 16, 32, 64, 128 with the cpu preset).
    #[arg(long, default_value_t = 4)]
    stages: usize,
    /// Network widths.
    #[arg(long, default_value = "cpu", value_enum)]
    preset: glandseg_plan::Preset,
    /// Output classes.
    #[arg(long, default_value_t = 7)]
    classes: usize,
    /// Timed training steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Edge of the cubic volume for the sliding-window inference (0: skip).
    #[arg(long, default_value_t = 128)]
    infer_size: usize,
    /// Print JSON only.
    #[arg(long)]
    json: bool,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let out = run_bench::<crate::TrainBackend>(&BenchJob {
        patch: a.patch,
        batch: a.batch,
        stages: a.stages,
        preset: a.preset,
        classes: a.classes,
        steps: a.steps,
        infer_size: a.infer_size,
    })?;
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
