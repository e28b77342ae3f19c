//! An nnU-Net raw dataset folder: `dataset.json`, `imagesTr/CASE_XXXX.nii.gz` per channel,
//! `labelsTr/CASE.nii.gz`. Reading it checks what nnU-Net checks and says which file and
//! field is wrong.

use glandseg_core::LabelMap;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// True for a channel named CT (any case): the one rule for "is this channel CT?", which
/// decides the body box by HU and the head-and-neck localisation.
pub fn is_ct_channel(name: &str) -> bool {
    name.eq_ignore_ascii_case("CT")
}

#[derive(Debug, thiserror::Error)]
/// A dataset folder that does not follow the nnU-Net raw layout (names the file).
pub enum DatasetError {
    /// The folder or a file in it is not as the layout requires.
    #[error("{path}: {msg}")]
    Invalid {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
}

fn invalid(path: &Path, msg: impl Into<String>) -> DatasetError {
    DatasetError::Invalid {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

#[derive(Clone, Debug)]
/// One training case: its channel images and its label map.
pub struct Case {
    /// Case id (the label file name without the ending).
    pub id: String,
    /// One image per channel, in channel order.
    pub images: Vec<PathBuf>,
    /// The label map.
    pub label: PathBuf,
}

#[derive(Clone, Debug)]
/// A dataset folder in the nnU-Net raw layout.
pub struct Dataset {
    /// The folder.
    pub root: PathBuf,
    /// Channel names in order (dataset.json "channel_names").
    pub channels: Vec<String>,
    /// The label map (dataset.json "labels").
    pub labels: LabelMap,
    /// File ending of every image (".nii.gz").
    pub file_ending: String,
    /// The cases with labels, sorted by id.
    pub cases: Vec<Case>,
}

impl Dataset {
    /// Reads dataset.json and lists the cases, checking that every channel file exists.
    pub fn open(root: &Path) -> Result<Dataset, DatasetError> {
        let dj = root.join("dataset.json");
        let text =
            std::fs::read_to_string(&dj).map_err(|e| invalid(&dj, format!("cannot read: {e}")))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| invalid(&dj, format!("not valid JSON: {e}")))?;
        let ch = v["channel_names"]
            .as_object()
            .or_else(|| v["modality"].as_object())
            .ok_or_else(|| {
                invalid(
                    &dj,
                    "field \"channel_names\" is missing (e.g. {\"0\": \"CT\", \"1\": \"PET\"})",
                )
            })?;
        let mut channels = vec![String::new(); ch.len()];
        for (k, name) in ch {
            let i: usize = k
                .parse()
                .map_err(|_| invalid(&dj, format!("channel_names key {k:?} is not a number")))?;
            if i >= channels.len() {
                return Err(invalid(
                    &dj,
                    format!("channel_names keys must be 0..{}", channels.len() - 1),
                ));
            }
            channels[i] = name.as_str().unwrap_or_default().to_string();
        }
        let labels = LabelMap::from_nnunet_labels(&v["labels"])
            .map_err(|e| invalid(&dj, format!("field \"labels\": {e}")))?;
        let file_ending = v["file_ending"].as_str().unwrap_or(".nii.gz").to_string();
        let label_dir = root.join("labelsTr");
        let entries = std::fs::read_dir(&label_dir)
            .map_err(|e| invalid(&label_dir, format!("cannot read folder: {e}")))?;
        let mut cases = Vec::new();
        for e in entries {
            let p = e.map_err(|e| invalid(&label_dir, e.to_string()))?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let Some(id) = name.strip_suffix(&file_ending) else {
                continue;
            };
            let images: Vec<PathBuf> = (0..channels.len())
                .map(|c| {
                    root.join("imagesTr")
                        .join(format!("{id}_{c:04}{file_ending}"))
                })
                .collect();
            if let Some(missing) = images.iter().find(|p| !p.is_file()) {
                return Err(invalid(
                    missing,
                    format!(
                        "image of case {id} is missing (every case needs one file per channel)"
                    ),
                ));
            }
            cases.push(Case {
                id: id.to_string(),
                images,
                label: p,
            });
        }
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        if cases.is_empty() {
            return Err(invalid(
                &label_dir,
                format!("no label files ending in {file_ending}"),
            ));
        }
        if let Some(n) = v["numTraining"].as_u64() {
            if n as usize != cases.len() {
                return Err(invalid(
                    &dj,
                    format!(
                        "numTraining is {n} but labelsTr holds {} cases",
                        cases.len()
                    ),
                ));
            }
        }
        Ok(Dataset {
            root: root.to_path_buf(),
            channels,
            labels,
            file_ending,
            cases,
        })
    }

    /// Index of the channel whose name says it is CT / PET (case-insensitive).
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
    }
}
