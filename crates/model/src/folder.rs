//! The model folder: everything prediction needs and nothing more.
//!
//! ```text
//! MODEL/
//!   plans.json         the plan (spacing, patch, network, normalisation, label map)
//!   model.json         glandseg version, channels, labels, the exact training commands
//!   splits.json        the cross-validation split the folds were trained on
//!   fold_F/checkpoint_final.ckpt   (or _best / _latest while training runs)
//!   fold_F/training_log.csv, fold_F/progress.png
//! ```

use crate::checkpoint;
use crate::error::{ModelError, Result};
use burn::tensor::backend::Backend;
use glandseg_core::{atomic, LabelMap};
use glandseg_net::{UNet, UNetConfig};
use glandseg_plan::Plan;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The checkpoint a running training updates every epoch.
pub const LATEST: &str = "checkpoint_latest.ckpt";
/// The checkpoint with the best validation pseudo-Dice (EMA) so far.
pub const BEST: &str = "checkpoint_best.ckpt";
/// The checkpoint written when a fold's training ends.
pub const FINAL: &str = "checkpoint_final.ckpt";

/// The model folder format this glandseg writes and reads (`model.json`'s
/// `format_version`; a folder without one is version 1, the format before the field).
pub const MODEL_FORMAT_VERSION: u32 = 1;

fn format_version_1() -> u32 {
    1
}

/// `model.json`: what a person or a later glandseg needs to know about the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The model folder format ([`MODEL_FORMAT_VERSION`] when written by this glandseg).
    #[serde(default = "format_version_1")]
    pub format_version: u32,
    /// The glandseg that made the folder.
    pub glandseg_version: String,
    /// Input channels, in order (CT first).
    pub channels: Vec<String>,
    /// The label map the network predicts.
    pub labels: LabelMap,
    /// Every command that trained a fold of this model, in order.
    pub commands: Vec<String>,
}

/// An opened (or created) model folder.
pub struct ModelFolder {
    /// The folder.
    pub dir: PathBuf,
    /// Its `plans.json`: the network and the preprocessing every fold shares.
    pub plan: Plan,
    /// Its `model.json`.
    pub info: ModelInfo,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        // A folder from another glandseg reads as valid JSON with fields missing or
        // unknown: say which glandseg wrote it.
        let by = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["glandseg_version"].as_str().map(str::to_string))
            .map(|v| {
                format!(
                    " (written by glandseg {v}; this is glandseg {})",
                    env!("CARGO_PKG_VERSION")
                )
            })
            .unwrap_or_default();
        ModelError::Input(format!(
            "{}: not a model file this glandseg can read{by}: {e}",
            path.display()
        ))
    })
}

/// Reads `model.json`, refusing a format newer than this glandseg's.
fn read_info(path: &Path) -> Result<ModelInfo> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
        if let Some(f) = v.get("format_version") {
            let version = f.as_u64().filter(|n| *n >= 1);
            if version.is_none_or(|n| n > MODEL_FORMAT_VERSION as u64) {
                return Err(ModelError::Input(format!(
                    "{}: model folder format_version {f}, this glandseg ({}) reads version {MODEL_FORMAT_VERSION}{}; \
                     use the glandseg that trained the model, or retrain",
                    path.display(),
                    env!("CARGO_PKG_VERSION"),
                    v["glandseg_version"]
                        .as_str()
                        .map(|g| format!(" (the folder was written by glandseg {g})"))
                        .unwrap_or_default()
                )));
            }
        }
    }
    read_json(path)
}

/// Reads `plans.json` and checks it ([`Plan::check`]).
fn read_plan(path: &Path) -> Result<Plan> {
    let plan: Plan = read_json(path)?;
    plan.check()
        .map_err(|e| ModelError::Input(format!("{}: {e}", path.display())))?;
    Ok(plan)
}

impl ModelFolder {
    /// Creates the folder for `plan`, or reopens it when it was made with the same plan
    /// (a second fold, or a resumed run); records `command`.
    pub fn create(dir: &Path, plan: &Plan, command: &str) -> Result<ModelFolder> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let plan_path = dir.join("plans.json");
        if plan_path.exists() {
            let existing: Plan = read_plan(&plan_path)?;
            if existing != *plan {
                return Err(ModelError::Input(format!(
                    "{} holds a different plan; train into a new model folder",
                    plan_path.display()
                )));
            }
        } else {
            atomic::write_json(&plan_path, plan)?;
        }
        let info_path = dir.join("model.json");
        let mut info = if info_path.exists() {
            read_info(&info_path)?
        } else {
            ModelInfo {
                format_version: MODEL_FORMAT_VERSION,
                glandseg_version: env!("CARGO_PKG_VERSION").into(),
                channels: plan.channels.clone(),
                labels: plan.labels.clone(),
                commands: Vec::new(),
            }
        };
        info.commands.push(command.to_string());
        atomic::write_json(&info_path, &info)?;
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            plan: plan.clone(),
            info,
        })
    }

    /// Opens a folder written by training (reads `plans.json` and `model.json`).
    pub fn open(dir: &Path) -> Result<ModelFolder> {
        if !dir.is_dir() {
            return Err(ModelError::Input(format!(
                "{}: not a model folder (no such directory)",
                dir.display()
            )));
        }
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            plan: read_plan(&dir.join("plans.json"))?,
            info: read_info(&dir.join("model.json"))?,
        })
    }

    /// The folder of one fold (`fold_0`, ..., `fold_all`).
    pub fn fold_dir(&self, fold: &str) -> PathBuf {
        self.dir.join(format!("fold_{fold}"))
    }

    /// Folds with weights, sorted by name.
    pub fn trained_folds(&self) -> Vec<String> {
        let mut folds: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let fold = name.strip_prefix("fold_")?.to_string();
                self.checkpoint_of(&fold).map(|_| fold)
            })
            .collect();
        folds.sort();
        folds
    }

    /// The weights prediction uses: final, else best, else latest.
    pub fn checkpoint_of(&self, fold: &str) -> Option<PathBuf> {
        let d = self.fold_dir(fold);
        [FINAL, BEST, LATEST]
            .iter()
            .map(|n| d.join(n))
            .find(|p| p.is_file())
    }

    /// The trained network of one fold, on `device`.
    pub fn load_network<B: Backend>(&self, fold: &str, device: &B::Device) -> Result<UNet<B>> {
        let path = self.checkpoint_of(fold).ok_or_else(|| {
            ModelError::Input(format!(
                "{}: no checkpoint for fold {fold}",
                self.fold_dir(fold).display()
            ))
        })?;
        let blocks = checkpoint::read(&path)?;
        let model = UNetConfig::from_plan(&self.plan).init::<B>(device);
        checkpoint::model_from_bytes(model, blocks.model, blocks.version, device, &path)
    }
}
