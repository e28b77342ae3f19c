//! `glandseg gather`: the cohort tables of a prediction folder that cluster array tasks
//! filled shard by shard (`glandseg predict --shard`), optionally with the evaluation.

use anyhow::Result;
use clap::Args;
use glandseg_plan::naming::parse_channel_file;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct GatherArgs {
    /// The prediction folder (OUT of `glandseg predict`).
    pub out: PathBuf,
    /// The input folder the cases came from: every case in it must have been predicted
    /// (a failed array task is an error naming the missing cases).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Reference label maps (CASE.nii.gz): also evaluate into OUT/evaluation.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// A dataset.json whose "labels" name the classes (default: glandseg's label map).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The case ids of the NIfTI cases in an input folder (`CASE_XXXX.nii.gz`), sorted.
pub(crate) fn input_case_ids(dir: &Path) -> Result<Vec<String>> {
    let mut ids = BTreeSet::new();
    let rd = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading input folder {}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some((case, _)) = parse_channel_file(&name) {
            ids.insert(case.to_string());
        }
    }
    Ok(ids.into_iter().collect())
}

pub fn run(a: GatherArgs) -> Result<()> {
    anyhow::ensure!(
        a.out.is_dir(),
        "prediction folder {}: not a folder",
        a.out.display()
    );
    let expect = a.input.as_deref().map(input_case_ids).transpose()?;
    let g = glandseg_predict::gather::gather(&a.out, expect.as_deref())?;
    println!(
        "{} case(s), {} gland row(s): {}",
        g.cases.len(),
        g.rows,
        a.out.join("stats.csv").display()
    );
    if let Some(gt) = &a.gt {
        let map = crate::label_map(a.labels.as_deref())?;
        crate::evaluate::evaluate_and_print(&a.out, gt, &map, &a.out.join("evaluation"), a.quiet)?;
    }
    Ok(())
}
