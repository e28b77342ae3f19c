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

/// Evaluates every predicted label map against its reference; writes metrics.csv,
/// metrics.json and one box plot per metric into `out`.
pub fn evaluate(
    pred: &Path,
    reference: &Path,
    map: &glandseg_core::LabelMap,
    out: &Path,
    quiet: bool,
) -> Result<Vec<CaseMetrics>> {
    let pairs = pairs(pred, reference)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(pairs.len() as u64)
    };
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
        let classes = glandseg_eval::compare(&pred, &refr, map)
            .with_context(|| format!("{} vs {}", p.display(), r.display()))?;
        cases.push(CaseMetrics {
            case: case.clone(),
            classes,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_csv(&out.join("metrics.csv"), &cases)?;
    write_json(&out.join("metrics.json"), &cases)?;
    write_box_plots(out, &cases)?;
    Ok(cases)
}

/// One PNG per metric: a box per gland over the cases.
fn write_box_plots(out: &Path, cases: &[CaseMetrics]) -> Result<()> {
    type Getter = fn(&glandseg_eval::ClassMetrics) -> Option<f64>;
    let metrics: [(&str, &str, Getter); 5] = [
        ("dice", "Dice", |m| Some(m.dice)),
        ("hd95", "HD95 (mm)", |m| m.hd95),
        ("assd", "ASSD (mm)", |m| m.assd),
        ("nsd_2mm", "surface Dice at 2 mm", |m| Some(m.nsd_2mm)),
        ("volume_diff_pct", "volume difference (%)", |m| {
            m.volume_diff_pct
        }),
    ];
    let names: Vec<(u8, String)> = cases
        .first()
        .map(|c| {
            c.classes
                .iter()
                .map(|m| (m.label, m.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (file, title, get) in metrics {
        let groups: Vec<(String, Vec<f64>)> = names
            .iter()
            .map(|(label, name)| {
                let v = cases
                    .iter()
                    .filter_map(|c| c.classes.iter().find(|m| m.label == *label))
                    .filter_map(get)
                    .collect();
                (name.clone(), v)
            })
            .collect();
        let img = glandseg_viz::chart::box_plot(
            &format!("{title}, {} case(s)", cases.len()),
            title,
            &groups,
        );
        glandseg_viz::save_png(&out.join(format!("boxplot_{file}.png")), &img)?;
    }
    Ok(())
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
    let cases = evaluate(&a.pred, &a.reference, &map, &out, false)?;
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
