//! `glandseg demo`: the whole pipeline on the built-in synthetic cohort, as a new user's
//! first command (`glandseg_pipeline::demo::run_demo`), with a bar per stage and the
//! held-out metrics at the end.

use crate::progress::Bars;
use anyhow::Result;
use clap::Args;
use glandseg_pipeline::demo::{run_demo, DemoJob};
use glandseg_plan::Preset;
use glandseg_train::OptimizerKind;
use std::path::PathBuf;

#[derive(Args)]
pub struct DemoArgs {
    /// Output folder (dataset, model, predictions, evaluation, report.md).
    #[arg(long, short, default_value = "out/demo")]
    pub out: PathBuf,
    /// Training cases.
    #[arg(long, default_value_t = 10)]
    pub train_cases: usize,
    /// Held-out cases, predicted and evaluated.
    #[arg(long, default_value_t = 3)]
    pub test_cases: usize,
    /// Phantom resolution factor (1.0 = a scanner's CT voxels; 0.5 = twice as large per
    /// axis). The cascade's fine stage works at this resolution.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Training time budget in minutes, both stages together (the number of iterations
    /// is fitted to it).
    #[arg(long, default_value_t = 6.0)]
    pub train_minutes: f64,
    /// Target spacing of the network, mm (isotropic); coarser trains faster.
    #[arg(long, default_value_t = 3.0)]
    pub spacing: f64,
    /// Patch size (i j k voxels).
    #[arg(long, num_args = 3, default_values_t = [32, 32, 32])]
    pub patch: Vec<usize>,
    /// Network widths: tiny (8..64 features), cpu (16..128) or gpu (32..320).
    #[arg(long, default_value = "tiny", value_enum)]
    pub preset: Preset,
    /// Optimiser: adamw (lr 1e-3) or sgd (nnU-Net's: Nesterov 0.99, lr 1e-2, poly decay).
    /// AdamW is the demo's default because the demo trains only a few hundred iterations:
    /// measured on the phantom (3 mm, 32^3 patches), SGD still predicted nothing but
    /// background after 375 iterations, while AdamW outlined the parotids after 200.
    #[arg(long, default_value = "adamw", value_enum)]
    pub optimizer: OptimizerKind,
    /// Initial learning rate (default 1e-2 for SGD, 1e-3 for AdamW).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Random seed of the cohort and the training.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fixed number of training iterations instead of the time budget (tests).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Train and predict the coarse stage alone (no cascade: faster, but the lacrimal
    /// glands are too small for it).
    #[arg(long)]
    pub single_stage: bool,
    /// Share of --train-minutes that goes to the cascade's fine stage (stage 2 draws the
    /// outlines; stage 1 only has to place the boxes, and a lacrimal gland its argmax misses
    /// is boxed at its probability peak).
    #[arg(long, default_value_t = 0.7)]
    pub fine_share: f64,
    /// Whether stage 2 reads stage 1's probabilities as extra input channels: on or off
    /// (measured: no gain in the demo's budget, so off by default).
    #[arg(long, default_value = "off", value_parser = ["on", "off"])]
    pub stage1_channels: String,
    /// Phantom style of the training cohort: classic, lobular, or mixed (each case draws
    /// one; the default, a domain-randomised cohort).
    #[arg(long, default_value = "mixed")]
    pub style: glandseg_phantom::Style,
    /// Phantom style of the held-out cases (default: as --style). Train on one style and
    /// test on the other to measure how the model holds on anatomy it never saw.
    #[arg(long)]
    pub test_style: Option<glandseg_phantom::Style>,
    /// Input channels the network sees, comma-separated (ct, pet; default both).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Left-right mirroring in training: swap (with the label swap), plain or none.
    #[arg(long, default_value = "swap", value_enum)]
    pub mirror: glandseg_train::augment::MirrorMode,
    /// No test-time mirroring at prediction.
    #[arg(long)]
    pub no_tta: bool,
    /// Hide the progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: DemoArgs) -> Result<()> {
    anyhow::ensure!(a.patch.len() == 3, "--patch takes 3 sizes");
    let job = DemoJob {
        out: a.out,
        train_cases: a.train_cases,
        test_cases: a.test_cases,
        scale: a.scale,
        train_minutes: a.train_minutes,
        spacing: a.spacing,
        patch: [a.patch[0], a.patch[1], a.patch[2]],
        preset: a.preset,
        optimizer: a.optimizer,
        lr: a.lr,
        seed: a.seed,
        iterations: a.iterations,
        cascade: !a.single_stage,
        fine_share: a.fine_share,
        stage1_channels: a.stage1_channels == "on",
        style: a.style,
        test_style: a.test_style,
        channels: a.channels,
        mirror: a.mirror,
        tta: !a.no_tta,
    };
    let bars = Bars::new(a.quiet);
    let outcome =
        run_demo::<crate::TrainBackend>(&job, &bars, &|line| bars.suspend(|| println!("{line}")))?;
    let summary = glandseg_eval::report::summarise(&outcome.cases);
    println!();
    println!(
        "{:<22} {:>7} {:>9}",
        "gland (held-out mean)", "Dice", "HD95 mm"
    );
    for s in &summary {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        println!("{:<22} {:>7} {:>9}", s.name, f(s.dice.mean), f(s.hd95.mean));
    }
    println!(
        "demo finished in {:.1} min; report: {}",
        outcome.minutes,
        outcome.report.display()
    );
    Ok(())
}
