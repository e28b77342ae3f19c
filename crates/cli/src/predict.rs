//! `glandseg predict`: the arguments as a [`PredictJob`], then `glandseg_predict`'s entry
//! point.

use anyhow::Result;
use clap::Args;
use glandseg_predict::export::{ExportOptions, OutputType};
use glandseg_predict::input::Inputs;
use glandseg_predict::job::Shard;
use glandseg_predict::{ComponentRule, PredictJob, PredictOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictArgs {
    /// A folder of cases named as in the nnU-Net layout (CASE_0000.nii.gz = CT,
    /// CASE_0001.nii.gz = PET, ...), one such file, or a DICOM folder holding one study
    /// (a CT and a PET series with the same FrameOfReferenceUID; PET converted to SUVbw).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// CT of a single case (NIfTI, HU), instead of --input.
    #[arg(long, requires = "pet")]
    pub ct: Option<PathBuf>,
    /// PET of a single case (NIfTI, SUV), on any grid: resampled onto the CT's.
    #[arg(long)]
    pub pet: Option<PathBuf>,
    /// Model folder (from `glandseg train`).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Output folder: CASE.nii.gz label maps, CASE/ with stats, review image, report.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Folds to ensemble, comma-separated (default: every trained fold).
    #[arg(long, value_delimiter = ',')]
    pub folds: Vec<String>,
    /// Sliding-window step as a fraction of the tile.
    #[arg(long, default_value_t = 0.5)]
    pub step: f64,
    /// Turn off the left-right test-time mirroring (with label swap).
    #[arg(long)]
    pub no_tta: bool,
    /// Arithmetic of the network's convolutions: f32, or bf16 (on CPUs with AMX, e.g. Intel
    /// Xeon 4th generation and later: several times faster convolutions, labels within a
    /// Dice of 0.005 of f32 on the phantom; runs f32 with a warning elsewhere).
    #[arg(long, default_value = "f32")]
    pub precision: glandseg_net::Precision,
    /// Also mirror the other two axes at test time.
    #[arg(long)]
    pub tta_all_axes: bool,
    /// Segment the whole scan instead of the head-and-neck region found first.
    #[arg(long)]
    pub no_localize: bool,
    /// Run only the coarse stage of a cascade model (faster; the fine stage is what finds
    /// the small lacrimal glands).
    #[arg(long)]
    pub single_stage: bool,
    /// Keep every component of a gland at least this large (mL) instead of the largest.
    #[arg(long)]
    pub min_component_ml: Option<f64>,
    /// Write each class's probability map (NIfTI, f32) into CASE/probabilities/.
    #[arg(long)]
    pub save_probabilities: bool,
    /// Also write one mask file per gland into CASE/glands/.
    #[arg(long)]
    pub per_gland_files: bool,
    /// Also measure uptake in glands grown by this many mm (PET spill-out).
    #[arg(long)]
    pub dilate: Option<f64>,
    /// Outputs, comma-separated or repeated: nifti (always), dicom-seg, rtstruct,
    /// seg-nrrd (3D Slicer segmentation, OUT/CASE.seg.nrrd). DICOM outputs reference the
    /// CT series when the input was DICOM.
    #[arg(long, value_delimiter = ',', default_value = "nifti", value_enum)]
    pub output_type: Vec<OutputType>,
    /// Skip the review PNG.
    #[arg(long)]
    pub no_review: bool,
    /// Predict only part I of N equal parts of the sorted case list, I 0-based
    /// (0/N .. N-1/N): a cluster array task. Without it, inside a Slurm array job, the
    /// part comes from SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) and
    /// SLURM_ARRAY_TASK_COUNT. A sharded run leaves the cohort tables to `glandseg gather`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// The job the arguments describe.
fn job_of(a: PredictArgs) -> Result<PredictJob> {
    let inputs = match (a.ct, a.pet, a.input) {
        (Some(ct), Some(pet), _) => Inputs::Pair { ct, pet },
        (_, _, Some(input)) => Inputs::Folder(input),
        _ => anyhow::bail!("give --input (folder or file) or --ct and --pet"),
    };
    let shard = match &a.shard {
        Some(s) => Some(Shard::parse(s)?),
        None => Shard::from_slurm(|k| std::env::var(k).ok())?,
    };
    Ok(PredictJob {
        shard,
        inputs,
        model: a.model,
        out: a.out,
        folds: a.folds,
        options: PredictOptions {
            step: a.step,
            mirror_lr: !a.no_tta,
            mirror_other_axes: a.tta_all_axes,
            localize: !a.no_localize,
            components: match a.min_component_ml {
                Some(ml) => ComponentRule::AboveMl(ml),
                None => ComponentRule::LargestOnly,
            },
            keep_probabilities: a.save_probabilities,
            precision: a.precision,
            cascade: !a.single_stage,
            ..PredictOptions::default()
        },
        export: ExportOptions {
            per_gland_files: a.per_gland_files,
            dilate: a.dilate,
            review: !a.no_review,
            outputs: a.output_type,
            model_name: String::new(),
        },
    })
}

/// Runs a prediction job with bars (hidden when `quiet`), one line per case on stdout.
fn predict(job: &PredictJob, quiet: bool) -> Result<()> {
    let bars = crate::progress::Bars::new(quiet);
    glandseg_predict::predict_job::<crate::InferBackend>(
        job,
        Default::default(),
        &bars,
        |id, p| bars.suspend(|| println!("{}", glandseg_predict::job::case_line(&job.out, id, p))),
    )?;
    Ok(())
}

pub fn run(a: PredictArgs) -> Result<()> {
    let quiet = a.quiet;
    let job = job_of(a)?;
    job.validate()?;
    crate::output_folder(&job.out)?;
    predict(&job, quiet)
}
