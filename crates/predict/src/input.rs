//! Finding and loading the cases to predict: NIfTI files named as in the nnU-Net layout
//! (`CASE_0000.nii.gz` = CT, `CASE_0001.nii.gz` = PET), one CT + PET pair, or a DICOM
//! study folder (a CT and a PET series sharing a frame of reference; PET to SUVbw).

use crate::error::{PredictError, Result};
use glandseg_core::Volume;
use glandseg_plan::naming::{parse_channel_file, strip_nifti};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the user pointed prediction at.
#[derive(Clone, Debug)]
pub enum Inputs {
    /// A folder of NIfTI cases, one such file (its case), or a DICOM study folder.
    Folder(PathBuf),
    /// The CT and PET of a single case, NIfTI.
    Pair {
        /// CT (HU).
        ct: PathBuf,
        /// PET (SUV), on any grid.
        pet: PathBuf,
    },
}

/// A case found, not yet read.
#[derive(Clone, Debug)]
pub enum FoundCase {
    /// NIfTI channel files, in channel order.
    Nifti {
        /// Case id (the output's name).
        id: String,
        /// One file per channel.
        paths: Vec<PathBuf>,
    },
    /// A DICOM study folder.
    Dicom(PathBuf),
}

/// One case to predict: its id and its channel volumes (CT first).
pub struct InputCase {
    /// Case id (the output's name).
    pub id: String,
    /// Channel volumes, CT first, each on its own grid.
    pub images: Vec<Volume<f32>>,
    /// The file each channel came from (for messages).
    pub sources: Vec<PathBuf>,
    /// The CT series when the case came as DICOM: SEG/RTSTRUCT outputs reference it.
    pub dicom_ct: Option<glandseg_dicom::SourceSeries>,
}

/// Cases in a folder, grouped by the `_XXXX` channel suffix.
fn nifti_cases(dir: &Path, channels: usize) -> Result<Vec<FoundCase>> {
    let mut groups: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PredictError::Input(format!("reading folder {}: {e}", dir.display())))?;
    for e in entries {
        let p = e
            .map_err(|e| PredictError::Input(format!("reading folder {}: {e}", dir.display())))?
            .path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some((case, ch)) = parse_channel_file(&name) else {
            continue;
        };
        groups.entry(case.to_string()).or_default().insert(ch, p);
    }
    let mut out = Vec::new();
    for (case, chs) in groups {
        let paths: Vec<PathBuf> = (0..channels).filter_map(|c| chs.get(&c).cloned()).collect();
        if paths.len() != channels {
            return Err(PredictError::Input(format!(
                "{}: case {case} has channels {:?}, the model needs _0000 to _{:04}",
                dir.display(),
                chs.keys().collect::<Vec<_>>(),
                channels - 1
            )));
        }
        out.push(FoundCase::Nifti { id: case, paths });
    }
    Ok(out)
}

/// True for a folder without NIfTI files (taken as a DICOM study).
pub fn is_dicom_folder(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    !rd.flatten().any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        strip_nifti(&n).is_some()
    })
}

/// The cases `inputs` holds for a model of `channels` channels; an error when there are
/// none.
pub fn find_cases(inputs: &Inputs, channels: usize) -> Result<Vec<FoundCase>> {
    let found = match inputs {
        Inputs::Pair { ct, pet } => {
            let name = ct
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let id = strip_nifti(&name)
                .unwrap_or(&name)
                .trim_end_matches("_0000")
                .to_string();
            vec![FoundCase::Nifti {
                id,
                paths: vec![ct.clone(), pet.clone()],
            }]
        }
        Inputs::Folder(input) if input.is_dir() && is_dicom_folder(input) => {
            return Ok(vec![FoundCase::Dicom(input.clone())]);
        }
        Inputs::Folder(input) if input.is_file() => {
            let dir = input.parent().unwrap_or(Path::new("."));
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let case = strip_nifti(&name)
                .and_then(|s| s.rsplit_once('_'))
                .map(|(c, _)| c.to_string())
                .ok_or_else(|| {
                    PredictError::Input(format!(
                        "{}: expected CASE_0000.nii.gz naming",
                        input.display()
                    ))
                })?;
            nifti_cases(dir, channels)?
                .into_iter()
                .filter(|c| matches!(c, FoundCase::Nifti { id, .. } if *id == case))
                .collect()
        }
        Inputs::Folder(input) => nifti_cases(input, channels)?,
    };
    if found.is_empty() {
        return Err(PredictError::Input("no input cases found".into()));
    }
    Ok(found)
}

/// Reads a found case's volumes.
pub fn load_case(found: &FoundCase) -> Result<InputCase> {
    match found {
        FoundCase::Dicom(dir) => dicom_case(dir),
        FoundCase::Nifti { id, paths } => {
            let images = paths
                .iter()
                .map(|p| glandseg_nifti::read_volume(p).map_err(PredictError::from))
                .collect::<Result<Vec<_>>>()?;
            Ok(InputCase {
                id: id.clone(),
                images,
                sources: paths.clone(),
                dicom_ct: None,
            })
        }
    }
}

/// CT + PET (SUVbw) of one DICOM study, through the study loader `convert` and `info`
/// use too ([`glandseg_dicom::study`]: same series choice, same QIBA series SUV factor).
pub fn dicom_case(dir: &Path) -> Result<InputCase> {
    let study = glandseg_dicom::load_study(dir)?;
    let source = glandseg_dicom::SourceSeries::from_loaded(&study.ct)?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "case".into());
    let sources = vec![study.ct.sorted[0].path.clone(), study.suv.slice.clone()];
    Ok(InputCase {
        id,
        images: vec![study.ct.volume, study.pet_suv],
        sources,
        dicom_ct: Some(source),
    })
}
