//! Prediction's entry point (nnU-Net's `predict_entry_point`): load the model, find the
//! cases, segment and write each one. The command line and the demo both call
//! [`predict_job`] with a typed [`PredictJob`].

use crate::error::{PredictError, Result};
use crate::export::{self, ExportOptions};
use crate::input::{self, Inputs};
use crate::{PredictOptions, Prediction, Predictor};
use glandseg_core::Progress;
use glandseg_net::NetBackend;
use std::path::PathBuf;

/// Everything one prediction run needs.
#[derive(Clone, Debug)]
pub struct PredictJob {
    /// The cases.
    pub inputs: Inputs,
    /// Model folder (from training).
    pub model: PathBuf,
    /// Output folder.
    pub out: PathBuf,
    /// Folds to ensemble (empty: every trained fold).
    pub folds: Vec<String>,
    /// How each case is segmented.
    pub options: PredictOptions,
    /// What is written besides the label maps (`model_name` defaults to the model
    /// folder's name when left empty).
    pub export: ExportOptions,
    /// Only this part of the sorted case list (a cluster array task); `None`: every case,
    /// and the cohort tables ([`crate::gather`]) are written at the end.
    pub shard: Option<Shard>,
}

/// Part `index` (0-based) of `count` equal parts of the sorted case list: cases
/// `index * n / count .. (index + 1) * n / count`, so the parts differ by at most one case
/// and together hold every case once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Which part, 0-based: 0 ..= count - 1.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl Shard {
    /// Checks `index < count`, `count >= 1`; `origin` names where the numbers came from.
    pub fn new(index: usize, count: usize, origin: &str) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(PredictError::Input(format!(
                "{origin}: shard {index}/{count}: the index is 0-based and must be below the count (0/{c} .. {l}/{c})",
                c = count.max(1),
                l = count.max(1) - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// `I/N` as on the command line (`--shard`), I 0-based.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            PredictError::Input(format!(
                "--shard: expected I/N with 0 <= I < N (I 0-based), got {s:?}"
            ))
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let i: usize = i.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n, "--shard")
    }

    /// The shard of a Slurm array task: `SLURM_ARRAY_TASK_COUNT` parts, this task's part
    /// `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP` (so `--array`
    /// may start at 0 or 1, or step); `None` outside an array job. `var` reads the
    /// environment (a parameter for tests).
    pub fn from_slurm(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT"))
        else {
            return Ok(None);
        };
        let num = |name: &str, v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                PredictError::Input(format!("{name}={v:?} is not a non-negative integer"))
            })
        };
        let id = num("SLURM_ARRAY_TASK_ID", &id)?;
        let count = num("SLURM_ARRAY_TASK_COUNT", &count)?;
        let min = match var("SLURM_ARRAY_TASK_MIN") {
            Some(m) => num("SLURM_ARRAY_TASK_MIN", &m)?,
            None => 0,
        };
        let step = match var("SLURM_ARRAY_TASK_STEP") {
            Some(m) => num("SLURM_ARRAY_TASK_STEP", &m)?.max(1),
            None => 1,
        };
        if id < min || (id - min) % step != 0 {
            return Err(PredictError::Input(format!(
                "SLURM_ARRAY_TASK_ID={id} is not in the array starting at SLURM_ARRAY_TASK_MIN={min} with step {step}"
            )));
        }
        Shard::new(
            (id - min) / step,
            count,
            "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT",
        )
        .map(Some)
    }

    /// The part of `n` sorted cases this shard takes.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        self.index * n / self.count..(self.index + 1) * n / self.count
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl PredictJob {
    /// Checks the settings a caller may get wrong, with the option's command-line name.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.export.dilate {
            if !(d > 0.0 && d <= 50.0) {
                return Err(PredictError::Input(format!(
                    "--dilate must be between 0 and 50 mm, got {d}"
                )));
            }
        }
        let step = self.options.step;
        if !(step > 0.0 && step <= 1.0) {
            return Err(PredictError::Input(format!(
                "--step must be in (0, 1], got {step}"
            )));
        }
        Ok(())
    }
}

/// One line on a written case: time, region segmented, label map file.
pub fn case_line(out: &std::path::Path, id: &str, pred: &Prediction) -> String {
    format!(
        "{id}: {:.1} s, region {:?}..{:?}, written {}",
        pred.report.seconds,
        pred.report.region_lo,
        pred.report.region_hi,
        export::labels_path(out, id).display()
    )
}

/// Predicts every case of `job` on backend `B` and writes its outputs; `on_case` hears of
/// each case once written (its id and prediction). Returns the ids written.
pub fn predict_job<B: NetBackend>(
    job: &PredictJob,
    device: B::Device,
    progress: &dyn Progress,
    mut on_case: impl FnMut(&str, &Prediction),
) -> Result<Vec<String>> {
    job.validate()?;
    let predictor = Predictor::<B>::load(&job.model, &job.folds, device)
        .map_err(|e| e.context(format!("loading the model from {}", job.model.display())))?;
    let plan = &predictor.folder.plan;
    let map = plan.labels.clone();
    let mut export = job.export.clone();
    if export.model_name.is_empty() {
        export.model_name = job
            .model
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
    }
    let mut cases = input::find_cases(&job.inputs, plan.channels.len())?;
    if let Some(shard) = job.shard {
        let all = cases.len();
        let r = shard.range(all);
        progress.note(&format!(
            "shard {shard} (0-based): cases {}..{} of {all} ({} case(s))",
            r.start + 1,
            r.end,
            r.len()
        ));
        cases = cases.drain(r).collect();
    }
    std::fs::create_dir_all(&job.out).map_err(|e| glandseg_core::Error::io(&job.out, e))?;
    let total = cases.len();
    let mut done = Vec::new();
    for (n, found) in cases.iter().enumerate() {
        let case = input::load_case(found)?;
        progress.message(&format!("{} ({}/{total})", case.id, n + 1));
        let pred = predictor
            .predict(&case.images, &job.options, progress)
            .map_err(|e| {
                e.context(format!(
                    "predicting {} ({})",
                    case.id,
                    case.sources[0].display()
                ))
            })?;
        for w in &pred.report.warnings {
            progress.note(&format!("warning: {}: {w}", case.id));
        }
        export::write_case(&job.out, &case, &pred, &map, &export)?;
        on_case(&case.id, &pred);
        done.push(case.id);
    }
    progress.finish();
    if job.shard.is_none_or(|s| s.count == 1) {
        // The cohort tables cover every case in the folder, earlier runs' too: a stale
        // case there must not turn this run's written cases into a failure.
        if let Err(e) = crate::gather::gather(&job.out, None) {
            progress.note(&format!(
                "warning: cohort tables not written (glandseg gather {}): {e}",
                job.out.display()
            ));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_the_sorted_cases_into_equal_parts() {
        for n in 0..12 {
            for count in 1..5 {
                let mut all = Vec::new();
                for index in 0..count {
                    let r = Shard::new(index, count, "t").unwrap().range(n);
                    assert!(r.len() == n / count || r.len() == n / count + 1);
                    all.extend(r);
                }
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        for bad in ["3/3", "1/0", "1", "a/3", "-1/3", "1/3/4"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--shard") && e.contains("0-based"), "{bad}: {e}");
        }
    }

    #[test]
    fn slurm_array_variables_give_a_zero_based_shard() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(Shard::from_slurm(env(&[])).unwrap(), None);
        let s = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 3 }), "--array=1-3");
        let s = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ]))
        .unwrap();
        assert_eq!(s, Some(Shard { index: 2, count: 3 }), "--array=0-4:2");
        let e = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("5/3"),
            "{e}"
        );
        let e = Shard::from_slurm(env(&[
            ("SLURM_ARRAY_TASK_ID", "x"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID=\"x\""), "{e}");
    }
}
