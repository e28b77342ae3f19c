use anyhow::{bail, Context, Result};
use clap::Args;
use glandseg_eval::report::{summarise, write_csv, write_json, CaseMetrics};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

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

fn is_nifti(p: &Path) -> bool {
    let n = p.to_string_lossy();
    n.ends_with(".nii") || n.ends_with(".nii.gz")
}

fn pairs(pred: &Path, reference: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>> {
    if pred.is_file() {
        let name = pred
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let r = if reference.is_dir() {
            reference.join(&name)
        } else {
            reference.to_path_buf()
        };
        return Ok(vec![(
            name.trim_end_matches(".gz")
                .trim_end_matches(".nii")
                .to_string(),
            pred.to_path_buf(),
            r,
        )]);
    }
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(pred).with_context(|| format!("reading folder {}", pred.display()))?;
    for e in entries {
        let p = e?.path();
        if !is_nifti(&p) {
            continue;
        }
        let name = p.file_name().expect("a file").to_string_lossy().to_string();
        let r = reference.join(&name);
        if !r.is_file() {
            bail!(
                "{}: no reference with the same name ({} is missing)",
                p.display(),
                r.display()
            );
        }
        out.push((
            name.trim_end_matches(".gz")
                .trim_end_matches(".nii")
                .to_string(),
            p,
            r,
        ));
    }
    out.sort();
    if out.is_empty() {
        bail!("{}: no .nii or .nii.gz label maps found", pred.display());
    }
    Ok(out)
}

pub fn run(a: EvaluateArgs) -> Result<()> {
    let map = crate::label_map(a.labels.as_deref())?;
    let pairs = pairs(&a.pred, &a.reference)?;
    let bar = ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("evaluate [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut cases = Vec::new();
    for (case, p, r) in &pairs {
        bar.set_message(case.clone());
        let pred = glandseg_nifti::read_labels(p)?;
        let refr = glandseg_nifti::read_labels(r)?;
        let classes = glandseg_eval::compare(&pred, &refr, &map)
            .with_context(|| format!("{} vs {}", p.display(), r.display()))?;
        cases.push(CaseMetrics {
            case: case.clone(),
            classes,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    let out = a.out.clone().unwrap_or_else(|| {
        if a.pred.is_dir() {
            a.pred.join("evaluation")
        } else {
            a.pred.with_file_name("evaluation")
        }
    });
    write_csv(&out.join("metrics.csv"), &cases)?;
    write_json(&out.join("metrics.json"), &cases)?;
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
