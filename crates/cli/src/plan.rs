use anyhow::{Context, Result};
use clap::Args;
use glandseg_plan::{fingerprint, make_plan, Dataset, PlanOptions, Preset};
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    /// Dataset folder in the nnU-Net raw layout (dataset.json, imagesTr, labelsTr).
    dataset: PathBuf,
    /// Output folder for fingerprint.json and plans.json (default: DATASET/plans).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Memory the training may use, GB.
    #[arg(long, default_value_t = 4.0)]
    budget_gb: f64,
    /// Network widths: tiny (8..64 features), cpu (16..128) or gpu (32..320, as nnU-Net).
    #[arg(long, default_value = "cpu", value_enum)]
    preset: Preset,
    /// Seed of the foreground intensity sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: PlanArgs) -> Result<()> {
    anyhow::ensure!(a.budget_gb > 0.05, "--budget-gb must be positive");
    let ds = Dataset::open(&a.dataset)?;
    eprintln!("fingerprinting {} cases ...", ds.cases.len());
    let fp = fingerprint(&ds, a.seed)?;
    let plan = make_plan(
        &fp,
        &ds.labels,
        &ds.channels,
        &PlanOptions {
            budget_gb: a.budget_gb,
            preset: a.preset,
        },
    );
    let out = a.out.clone().unwrap_or_else(|| a.dataset.join("plans"));
    glandseg_core::atomic::write_json(&out.join("fingerprint.json"), &fp)
        .context("writing fingerprint.json")?;
    glandseg_core::atomic::write_json(&out.join("plans.json"), &plan)
        .context("writing plans.json")?;
    println!(
        "target spacing {:.3} x {:.3} x {:.3} mm; median shape there {:?}",
        plan.target_spacing[0],
        plan.target_spacing[1],
        plan.target_spacing[2],
        plan.median_shape_at_target
    );
    println!(
        "patch {:?}, batch {}, {} stages (features {:?}), ~{:.2} GB per step",
        plan.patch_size,
        plan.batch_size,
        plan.stages.len(),
        plan.stages.iter().map(|s| s.features).collect::<Vec<_>>(),
        plan.estimated_memory_gb
    );
    println!("written: {}", out.join("plans.json").display());
    Ok(())
}
