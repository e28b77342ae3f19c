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
    /// Coarse-to-fine cascade: stage 1 at --coarse-spacing over the head, stage 2 at the
    /// data's own spacing in a box around each gland. "auto" picks it when the smallest
    /// gland is under 100 voxels at the coarse spacing.
    #[arg(long, default_value = "off", value_parser = ["off", "on", "auto"])]
    cascade: String,
    /// Stage 1's isotropic spacing in a cascade, mm.
    #[arg(long, default_value_t = 3.0)]
    coarse_spacing: f64,
    /// Stage 2's isotropic spacing, mm (default: the data's median spacing, at least 0.8).
    #[arg(long)]
    fine_spacing: Option<f64>,
    /// Whether stage 2 reads stage 1's probabilities as extra input channels (nnU-Net's
    /// cascade feeds its stage 1's segmentation the same way): on or off. Off by default:
    /// on the phantom, in a short CPU budget, they did not help (README, cascade section).
    #[arg(long, default_value = "off", value_parser = ["on", "off"])]
    stage1_channels: String,
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
    let plan = if a.cascade == "off" {
        plan
    } else {
        anyhow::ensure!(
            a.coarse_spacing > 0.1,
            "--coarse-spacing must be above 0.1 mm"
        );
        let fine = match a.fine_spacing {
            Some(s) => {
                anyhow::ensure!(s > 0.1, "--fine-spacing must be above 0.1 mm");
                [s; 3]
            }
            None => glandseg_plan::cascade::fine_spacing(&fp, 0.8),
        };
        let coarse = [a.coarse_spacing; 3];
        let (needed, reason) = glandseg_plan::cascade::needs_cascade(&fp, coarse, fine);
        println!("cascade: {reason}");
        if a.cascade == "on" || needed {
            glandseg_plan::cascade::with_cascade(
                &plan,
                coarse,
                fine,
                a.preset,
                a.stage1_channels == "on",
                reason,
            )
        } else {
            plan
        }
    };
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
    if let Some(c) = &plan.cascade {
        println!(
            "stage 2: {:.2} x {:.2} x {:.2} mm, patch {:?}, classes {:?}, in boxes around each gland (+{} mm); train it with `glandseg train --stage 2` after stage 1",
            c.fine.target_spacing[0],
            c.fine.target_spacing[1],
            c.fine.target_spacing[2],
            c.fine.patch_size,
            c.fine.labels.foreground().map(|(_, n)| n.to_string()).collect::<Vec<_>>(),
            c.margin_mm
        );
    }
    println!("written: {}", out.join("plans.json").display());
    Ok(())
}
