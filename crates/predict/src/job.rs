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
    let cases = input::find_cases(&job.inputs, plan.channels.len())?;
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
    Ok(done)
}
