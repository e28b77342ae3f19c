use anyhow::{bail, Context, Result};
use clap::Args;
use glandseg_core::Volume;
use glandseg_predict::{ComponentRule, PredictOptions, Predictor};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Clone)]
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
    /// Outputs, comma-separated: nifti (always), dicom-seg, rtstruct. DICOM outputs
    /// reference the CT series when the input was DICOM.
    #[arg(long, value_delimiter = ',', default_value = "nifti", value_parser = ["nifti", "dicom-seg", "rtstruct"])]
    pub output_type: Vec<String>,
    /// Skip the review PNG.
    #[arg(long)]
    pub no_review: bool,
    #[arg(long)]
    pub quiet: bool,
}

/// One case to predict: its id and its channel volumes (CT first).
pub struct InputCase {
    pub id: String,
    pub images: Vec<Volume<f32>>,
    pub sources: Vec<PathBuf>,
    /// The CT series when the case came as DICOM: SEG/RTSTRUCT outputs reference it.
    pub dicom_ct: Option<glandseg_dicom::SourceSeries>,
}

fn strip_nifti(name: &str) -> Option<&str> {
    name.strip_suffix(".nii.gz")
        .or_else(|| name.strip_suffix(".nii"))
}

/// Cases in a folder, grouped by the `_XXXX` channel suffix.
fn nifti_cases(dir: &Path, channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let mut groups: BTreeMap<String, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let Some(stem) = strip_nifti(&name) else {
            continue;
        };
        let Some((case, ch)) = stem.rsplit_once('_') else {
            continue;
        };
        let Ok(ch) = ch.parse::<usize>() else {
            continue;
        };
        if ch.to_string().len() > 4 || stem.len() - case.len() != 5 {
            continue;
        }
        groups.entry(case.to_string()).or_default().insert(ch, p);
    }
    let mut out = Vec::new();
    for (case, chs) in groups {
        let paths: Vec<PathBuf> = (0..channels).filter_map(|c| chs.get(&c).cloned()).collect();
        if paths.len() != channels {
            bail!(
                "{}: case {case} has channels {:?}, the model needs _0000 to _{:04}",
                dir.display(),
                chs.keys().collect::<Vec<_>>(),
                channels - 1
            );
        }
        out.push((case, paths));
    }
    Ok(out)
}

/// CT + PET (SUVbw) of one DICOM study.
fn dicom_case(dir: &Path) -> Result<InputCase> {
    let scan = glandseg_dicom::scan_folder(dir)?;
    let ct = scan
        .series
        .iter()
        .filter(|s| s.modality == "CT")
        .max_by_key(|s| s.slices.len())
        .with_context(|| format!("{}: no CT series found", dir.display()))?;
    let pt = scan
        .series
        .iter()
        .filter(|s| s.modality == "PT" && s.frame_of_reference_uid == ct.frame_of_reference_uid)
        .max_by_key(|s| s.slices.len())
        .with_context(|| {
            format!(
                "{}: no PET series shares the CT's FrameOfReferenceUID {}",
                dir.display(),
                ct.frame_of_reference_uid
            )
        })?;
    let ct_loaded = glandseg_dicom::load_series(ct)?;
    let source = glandseg_dicom::SourceSeries::from_loaded(&ct_loaded)?;
    let ct_vol = ct_loaded.volume;
    let pet = glandseg_dicom::load_series(pt)?;
    let first = &pet.sorted[0].path;
    let f = glandseg_dicom::suv::suv_factors_of_file(first)
        .map_err(|e| anyhow::anyhow!("{}: SUV: {e}", first.display()))?;
    let suv = pet.volume.map(|v| (*v as f64 * f.suvbw) as f32);
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "case".into());
    Ok(InputCase {
        id,
        images: vec![ct_vol, suv],
        sources: vec![ct.slices[0].path.clone(), first.clone()],
        dicom_ct: Some(source),
    })
}

fn is_dicom_folder(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return false;
    };
    !rd.flatten().any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        strip_nifti(&n).is_some()
    })
}

pub fn gather(a: &PredictArgs, channels: usize) -> Result<Vec<(String, Vec<PathBuf>)>> {
    if let (Some(ct), Some(pet)) = (&a.ct, &a.pet) {
        let name = ct
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let id = strip_nifti(&name)
            .unwrap_or(&name)
            .trim_end_matches("_0000")
            .to_string();
        return Ok(vec![(id, vec![ct.clone(), pet.clone()])]);
    }
    let input = a
        .input
        .as_ref()
        .context("give --input (folder or file) or --ct and --pet")?;
    if input.is_file() {
        let dir = input.parent().unwrap_or(Path::new("."));
        let name = input
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let case = strip_nifti(&name)
            .and_then(|s| s.rsplit_once('_'))
            .map(|(c, _)| c.to_string())
            .with_context(|| format!("{}: expected CASE_0000.nii.gz naming", input.display()))?;
        return Ok(nifti_cases(dir, channels)?
            .into_iter()
            .filter(|(c, _)| *c == case)
            .collect());
    }
    nifti_cases(input, channels)
}

fn write_outputs(
    a: &PredictArgs,
    id: &str,
    images: &[Volume<f32>],
    pred: &glandseg_predict::Prediction,
    map: &glandseg_core::LabelMap,
) -> Result<()> {
    let case_dir = a.out.join(id);
    std::fs::create_dir_all(&case_dir)
        .with_context(|| format!("creating {}", case_dir.display()))?;
    glandseg_nifti::write_volume(&a.out.join(format!("{id}.nii.gz")), &pred.labels)?;
    // Statistics and the review picture read only the segmented region (labels are zero
    // outside it): on a whole-body scan, resampling the PET onto the whole CT grid was a
    // third of the prediction's time and a gigabyte of memory.
    let (lo, hi) = (pred.report.region_lo, pred.report.region_hi);
    let ct = images[0].crop(lo, hi)?;
    let labels = pred.labels.crop(lo, hi)?;
    let pet = images.get(1).map(|p| {
        if p.geometry().same_grid(images[0].geometry(), 1e-3) {
            p.crop(lo, hi)
        } else {
            Ok(glandseg_ops::resample::resample(
                p,
                ct.geometry(),
                glandseg_ops::resample::Interpolation::Linear,
                0.0,
            ))
        }
    });
    let pet = pet.transpose()?;
    let stats = glandseg_stats::gland_stats(&labels, map, Some(&ct), pet.as_ref(), a.dilate)?;
    glandseg_stats::write_stats(&case_dir, id, &stats)?;
    glandseg_core::atomic::write_json(&case_dir.join("prediction.json"), &pred.report)?;
    if a.per_gland_files {
        for (v, name) in map.foreground() {
            let m = pred.labels.map(|&x| u8::from(x == v));
            glandseg_nifti::write_volume(
                &case_dir.join("glands").join(format!("{name}.nii.gz")),
                &m,
            )?;
        }
    }
    if let Some(probs) = &pred.probabilities {
        for (c, p) in probs.iter().enumerate() {
            let name = map.name(c as u8).unwrap_or("unused");
            glandseg_nifti::write_volume(
                &case_dir
                    .join("probabilities")
                    .join(format!("{c:02}_{name}.nii.gz")),
                p,
            )?;
        }
    }
    if !a.no_review {
        let title = format!("{id}  predicted ({} fold(s))", pred.report.folds.len());
        let img = glandseg_viz::render_review(&ct, pet.as_ref(), &labels, map, &title);
        glandseg_viz::save_png(&case_dir.join("review.png"), &img)?;
    }
    Ok(())
}

/// DICOM-SEG and/or RTSTRUCT beside the NIfTI output, as asked.
fn write_dicom_outputs(
    a: &PredictArgs,
    case: &InputCase,
    labels: &Volume<u8>,
    map: &glandseg_core::LabelMap,
) -> Result<()> {
    let model_name = a
        .model
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    let case_dir = a.out.join(&case.id);
    if a.output_type.iter().any(|t| t == "dicom-seg") {
        let opts = glandseg_dicom::SegOptions {
            model_name: model_name.clone(),
            ..Default::default()
        };
        glandseg_dicom::write_seg(
            &case_dir.join("seg.dcm"),
            labels,
            map,
            case.dicom_ct.as_ref(),
            &opts,
        )
        .with_context(|| format!("writing the DICOM-SEG of {}", case.id))?;
    }
    if a.output_type.iter().any(|t| t == "rtstruct") {
        glandseg_dicom::write_rtstruct(
            &case_dir.join("rtstruct.dcm"),
            labels,
            map,
            case.dicom_ct.as_ref(),
            &glandseg_dicom::RtStructOptions::default(),
        )
        .with_context(|| format!("writing the RTSTRUCT of {}", case.id))?;
    }
    Ok(())
}

/// Predicts every input case; returns the ids written.
pub fn predict(a: &PredictArgs) -> Result<Vec<String>> {
    if let Some(d) = a.dilate {
        anyhow::ensure!(
            d > 0.0 && d <= 50.0,
            "--dilate must be between 0 and 50 mm, got {d}"
        );
    }
    anyhow::ensure!(
        a.step > 0.0 && a.step <= 1.0,
        "--step must be in (0, 1], got {}",
        a.step
    );
    let device = Default::default();
    let predictor = Predictor::<crate::InferBackend>::load(&a.model, &a.folds, device)
        .with_context(|| format!("loading the model from {}", a.model.display()))?;
    let plan = &predictor.folder.plan;
    let map = plan.labels.clone();
    let opts = PredictOptions {
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
        ..PredictOptions::default()
    };
    let dicom = a
        .input
        .as_ref()
        .filter(|p| p.is_dir() && a.ct.is_none() && is_dicom_folder(p));
    let cases: Vec<(String, Vec<PathBuf>)> = if dicom.is_some() {
        Vec::new()
    } else {
        let c = gather(a, plan.channels.len())?;
        if c.is_empty() {
            bail!("no input cases found");
        }
        c
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let total = if dicom.is_some() { 1 } else { cases.len() };
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template(
                "predict {prefix} [{bar:30}] {pos}/{len} tiles {elapsed} (ETA {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    };
    let mut done = Vec::new();
    for n in 0..total {
        let case = if let Some(dir) = dicom {
            dicom_case(dir)?
        } else {
            let (id, paths) = &cases[n];
            let images = paths
                .iter()
                .map(|p| glandseg_nifti::read_volume(p).map_err(anyhow::Error::from))
                .collect::<Result<Vec<_>>>()?;
            InputCase {
                id: id.clone(),
                images,
                sources: paths.clone(),
                dicom_ct: None,
            }
        };
        bar.set_prefix(format!("{} ({}/{total})", case.id, n + 1));
        let pred = predictor
            .predict(case.images.clone(), &opts, &bar)
            .with_context(|| format!("predicting {} ({})", case.id, case.sources[0].display()))?;
        for w in &pred.report.warnings {
            bar.suspend(|| eprintln!("warning: {}: {w}", case.id));
        }
        write_outputs(a, &case.id, &case.images, &pred, &map)?;
        write_dicom_outputs(a, &case, &pred.labels, &map)?;
        bar.suspend(|| {
            println!(
                "{}: {:.1} s, region {:?}..{:?}, written {}",
                case.id,
                pred.report.seconds,
                pred.report.region_lo,
                pred.report.region_hi,
                a.out.join(format!("{}.nii.gz", case.id)).display()
            )
        });
        done.push(case.id);
    }
    bar.finish_and_clear();
    Ok(done)
}

pub fn run(a: PredictArgs) -> Result<()> {
    predict(&a).map(|_| ())
}
