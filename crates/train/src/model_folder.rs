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
use crate::error::{Result, TrainError};
use crate::trainer::{network_config, BEST, FINAL, LATEST};
use burn::tensor::backend::Backend;
use glandseg_core::{atomic, LabelMap};
use glandseg_net::UNet;
use glandseg_plan::Plan;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelInfo {
    pub glandseg_version: String,
    pub channels: Vec<String>,
    pub labels: LabelMap,
    /// Every command that trained a fold of this model, in order.
    pub commands: Vec<String>,
}

pub struct ModelFolder {
    pub dir: PathBuf,
    pub plan: Plan,
    pub info: ModelInfo,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Input(format!("{}: {e}", path.display())))
}

impl ModelFolder {
    /// Creates the folder for `plan`, or reopens it when it was made with the same plan
    /// (a second fold, or a resumed run); records `command`.
    pub fn create(dir: &Path, plan: &Plan, command: &str) -> Result<ModelFolder> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let plan_path = dir.join("plans.json");
        if plan_path.exists() {
            let existing: Plan = read_json(&plan_path)?;
            if existing != *plan {
                return Err(TrainError::Input(format!(
                    "{} holds a different plan; train into a new model folder",
                    plan_path.display()
                )));
            }
        } else {
            atomic::write_json(&plan_path, plan)?;
        }
        let info_path = dir.join("model.json");
        let mut info = if info_path.exists() {
            read_json(&info_path)?
        } else {
            ModelInfo {
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

    pub fn open(dir: &Path) -> Result<ModelFolder> {
        if !dir.is_dir() {
            return Err(TrainError::Input(format!(
                "{}: not a model folder (no such directory)",
                dir.display()
            )));
        }
        Ok(ModelFolder {
            dir: dir.to_path_buf(),
            plan: read_json(&dir.join("plans.json"))?,
            info: read_json(&dir.join("model.json"))?,
        })
    }

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
            TrainError::Input(format!(
                "{}: no checkpoint for fold {fold}",
                self.fold_dir(fold).display()
            ))
        })?;
        let blocks = checkpoint::read(&path)?;
        let model = network_config(&self.plan).init::<B>(device);
        checkpoint::model_from_bytes(model, blocks.model, device, &path)
    }
}
