use anyhow::{Context, Result};
use clap::Args;
use glandseg_dicom::{convert_studies, NameMapping};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args)]
pub struct ConvertArgs {
    /// Folder of DICOM studies (CT + PET series and a DICOM-SEG or RTSTRUCT per study).
    input: PathBuf,
    /// Output: a new nnU-Net raw dataset folder (dataset.json, imagesTr, labelsTr).
    #[arg(long, short)]
    out: PathBuf,
    /// JSON mapping the clinic's segment/ROI names to label names:
    /// {"labels": {"background": 0, "parotid_left": 1, ...}, "names": {"Parotid_L": "parotid_left"}}.
    /// Without it, glandseg's label map and common spellings (TG-263 and plain English).
    #[arg(long)]
    mapping: Option<PathBuf>,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let mapping = match &a.mapping {
        Some(p) => NameMapping::from_json_file(p)?,
        None => NameMapping::default(),
    };
    crate::output_folder(&a.out)?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} convert {elapsed} {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let summary = convert_studies(&a.input, &mapping, &a.out, &|m| {
        bar.set_message(m.to_string())
    })
    .with_context(|| format!("converting {}", a.input.display()))?;
    bar.finish_and_clear();
    println!(
        "{} case(s) written to {}",
        summary.cases.len(),
        a.out.display()
    );
    for c in &summary.cases {
        println!(
            "  {}: {:?} {}{}",
            c.case_id,
            c.segmentation_kind,
            c.segmentation.display(),
            if c.unmapped.is_empty() {
                String::new()
            } else {
                format!(" (unmapped: {})", c.unmapped.join(", "))
            }
        );
    }
    for s in &summary.skipped {
        println!(
            "  skipped study {} ({}): {}",
            s.study_instance_uid, s.patient_id, s.reason
        );
    }
    Ok(())
}
