//! `glandseg info`: what glandseg reads from a file, for a person (`nib-ls`-like) or a
//! script (`--json`, stable fields documented in the README). The descriptions are the
//! NIfTI and DICOM crates' own.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// A NIfTI file (.nii or .nii.gz), a DICOM file, or a folder of DICOM files.
    path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<()> {
    let is_nifti = glandseg_plan::naming::is_nifti(&a.path);
    if a.path.is_dir() || (a.path.is_file() && !is_nifti) {
        // The DICOM crate's errors name the file already.
        let info = glandseg_dicom::describe::describe(&a.path)?;
        return show(&info, a.json);
    }
    let info = glandseg_nifti::describe::describe(&a.path)
        .with_context(|| format!("reading {}", a.path.display()))?;
    show(&info, a.json)
}

fn show(info: &(impl serde::Serialize + std::fmt::Display), json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(info)?);
    } else {
        print!("{info}");
    }
    Ok(())
}
