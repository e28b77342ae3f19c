//! Evaluation's entry point: a folder (or file) of predicted label maps against the
//! references with the same names, written as `metrics.csv`, `metrics.json` and one box
//! plot per metric. The command line and the demo both call [`evaluate_folder`].

use crate::report::{write_csv, write_json, CaseMetrics};
use glandseg_core::{LabelMap, Progress};
use glandseg_plan::naming::{case_of_label_file, is_nifti};
use std::path::{Path, PathBuf};

/// What can go wrong evaluating a folder; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Files missing or not paired.
    #[error("{0}")]
    Input(String),
    /// A label map that cannot be read.
    #[error(transparent)]
    Nifti(#[from] glandseg_nifti::NiftiError),
    /// Grids that differ, or an output that cannot be written.
    #[error(transparent)]
    Core(#[from] glandseg_core::Error),
    /// An error comparing one pair of files.
    #[error("{pair}: {source}")]
    Pair {
        /// "PRED vs REFERENCE".
        pair: String,
        /// The error.
        #[source]
        source: glandseg_core::Error,
    },
}

/// Case id, prediction and reference of every pair to compare.
pub fn pairs(pred: &Path, reference: &Path) -> Result<Vec<(String, PathBuf, PathBuf)>, EvalError> {
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
        return Ok(vec![(case_of_label_file(&name), pred.to_path_buf(), r)]);
    }
    let mut out = Vec::new();
    let read_err =
        |e: std::io::Error| EvalError::Input(format!("reading folder {}: {e}", pred.display()));
    for e in std::fs::read_dir(pred).map_err(read_err)? {
        let p = e.map_err(read_err)?.path();
        if !is_nifti(&p) {
            continue;
        }
        let name = p.file_name().expect("a file").to_string_lossy().to_string();
        let r = reference.join(&name);
        if !r.is_file() {
            return Err(EvalError::Input(format!(
                "{}: no reference with the same name ({} is missing)",
                p.display(),
                r.display()
            )));
        }
        out.push((case_of_label_file(&name), p, r));
    }
    out.sort();
    if out.is_empty() {
        return Err(EvalError::Input(format!(
            "{}: no .nii or .nii.gz label maps found",
            pred.display()
        )));
    }
    Ok(out)
}

/// Evaluates every predicted label map against its reference; writes metrics.csv,
/// metrics.json and one box plot per metric into `out`.
pub fn evaluate_folder(
    pred: &Path,
    reference: &Path,
    map: &LabelMap,
    out: &Path,
    progress: &dyn Progress,
) -> Result<Vec<CaseMetrics>, EvalError> {
    let pairs = pairs(pred, reference)?;
    progress.start("evaluate", pairs.len() as u64);
    let mut cases = Vec::new();
    for (case, p, r) in &pairs {
        progress.message(case);
        let pred = glandseg_nifti::read_labels(p)?;
        let refr = glandseg_nifti::read_labels(r)?;
        let classes = crate::compare(&pred, &refr, map).map_err(|source| EvalError::Pair {
            pair: format!("{} vs {}", p.display(), r.display()),
            source,
        })?;
        cases.push(CaseMetrics {
            case: case.clone(),
            classes,
        });
        progress.inc(1);
    }
    progress.finish();
    write_csv(&out.join("metrics.csv"), &cases)?;
    write_json(&out.join("metrics.json"), &cases)?;
    write_box_plots(out, &cases)?;
    Ok(cases)
}

/// One PNG per metric: a box per gland over the cases.
fn write_box_plots(out: &Path, cases: &[CaseMetrics]) -> Result<(), EvalError> {
    type Getter = fn(&crate::ClassMetrics) -> Option<f64>;
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
