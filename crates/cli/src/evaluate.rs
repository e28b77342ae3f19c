//! `glandseg evaluate`: `glandseg_eval::evaluate_folder` and a summary table.

use anyhow::Result;
use clap::Args;
use glandseg_eval::report::summarise;
use std::path::PathBuf;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Predicted label map, or a folder of them (`CASE.nii.gz`).
    pred: PathBuf,
    /// Reference label map, or a folder with the same file names.
    reference: PathBuf,
    /// Output folder for metrics.csv and metrics.json (default: beside the prediction).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// A dataset.json whose "labels" name the classes (default: glandseg's label map).
    #[arg(long)]
    labels: Option<PathBuf>,
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let map = crate::label_map(a.labels.as_deref())?;
    let out = a.out.clone().unwrap_or_else(|| {
        if a.pred.is_dir() {
            a.pred.join("evaluation")
        } else {
            a.pred.with_file_name("evaluation")
        }
    });
    evaluate_and_print(&a.pred, &a.reference, &map, &out, false)
}

/// Evaluates `pred` against `reference` into `out` and prints the summary per class.
pub(crate) fn evaluate_and_print(
    pred: &std::path::Path,
    reference: &std::path::Path,
    map: &glandseg_core::LabelMap,
    out: &std::path::Path,
    quiet: bool,
) -> Result<()> {
    let bars = crate::progress::Bars::new(quiet);
    let cases = glandseg_eval::evaluate_folder(pred, reference, map, out, &bars)?;
    let f = |s: &glandseg_eval::report::Stat| {
        s.mean
            .map(|m| format!("{m:.3}"))
            .unwrap_or_else(|| "-".into())
    };
    println!("{} case(s); metrics in {}", cases.len(), out.display());
    println!(
        "{:<22} {:>7} {:>9} {:>9} {:>9} {:>8}",
        "class (mean)", "Dice", "HD95 mm", "ASSD mm", "NSD 2mm", "dV %"
    );
    for s in summarise(&cases) {
        println!(
            "{:<22} {:>7} {:>9} {:>9} {:>9} {:>8}",
            s.name,
            f(&s.dice),
            f(&s.hd95),
            f(&s.assd),
            f(&s.nsd_2mm),
            f(&s.volume_diff_pct)
        );
    }
    Ok(())
}
