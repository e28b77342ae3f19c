//! Prediction, nnU-Net's last stages: preprocess a new case exactly as the training data
//! was, run the network over it in Gaussian-weighted sliding windows (folds ensembled,
//! optionally mirrored with the left/right class swap), bring the probabilities back onto
//! the CT's own grid, take the argmax, and postprocess. The head-and-neck region is found
//! first ([`localize`]), so only that part of a long scan is resampled and segmented.
//!
//! The stage's entry point is [`job::predict_job`] (cases found by [`input`], outputs
//! written by [`export`]); [`Predictor`] is the model in memory for callers that bring
//! their own volumes. It needs the model folder and the shared preprocessing, not the
//! training crate.
//!
//! ```no_run
//! use glandseg_predict::{export, input, PredictOptions, Predictor};
//! # fn main() -> Result<(), glandseg_predict::PredictError> {
//! let model = std::path::Path::new("model");
//! let predictor = Predictor::<glandseg_net::Cpu>::load(model, &[], Default::default())?;
//! let plan = &predictor.folder.plan;
//! let inputs = input::Inputs::Folder("imagesTs".into());
//! for found in input::find_cases(&inputs, plan.channels.len())? {
//!     let case = input::load_case(&found)?;
//!     let pred = predictor.predict(&case.images, &PredictOptions::default(), &glandseg_core::NoProgress)?;
//!     export::write_case(
//!         std::path::Path::new("predictions"),
//!         &case,
//!         &pred,
//!         &plan.labels,
//!         &export::ExportOptions::default(),
//!     )?;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod cascade;
pub mod error;
pub mod export;
pub mod gather;
pub mod input;
pub mod job;
pub mod localize;
pub mod postprocess;
pub mod review_html;
pub mod seg_nrrd;
pub mod sliding;

pub use error::{PredictError, Result};
use glandseg_core::{Geometry, Progress, Volume};
pub use glandseg_model::ModelFolder;
use glandseg_net::{NetBackend, Precision, UNet};
use glandseg_ops::resample::{resample, Interpolation};
use glandseg_plan::preprocess::{body_box, outside_values, preprocess_images};
pub use job::{predict_job, PredictJob};
pub use postprocess::{ComponentRule, LateralityCheck};
use serde::Serialize;
pub use sliding::{SlidingWindow, Tta};

/// How a case is segmented.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    /// Sliding-window step as a fraction of the tile.
    pub step: f64,
    /// Tiles per forward pass.
    pub batch: usize,
    /// Test-time mirroring along the left-right axis (with the left/right class swap).
    pub mirror_lr: bool,
    /// Test-time mirroring along the other two axes as well.
    pub mirror_other_axes: bool,
    /// Segment only the head-and-neck region found first (CT models).
    pub localize: bool,
    /// Height of the head-and-neck region below the top of the body, mm.
    pub region_mm: f64,
    /// Which connected components of each gland are kept.
    pub components: ComponentRule,
    /// Return each class's probability map on the CT grid too.
    pub keep_probabilities: bool,
    /// Arithmetic of the network's convolutions (bf16 on CPUs with AMX).
    pub precision: Precision,
    /// Run the cascade's fine stage where the model has one (false: stage 1 alone).
    pub cascade: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        PredictOptions {
            step: 0.5,
            batch: 2,
            mirror_lr: true,
            mirror_other_axes: false,
            localize: true,
            region_mm: 250.0,
            components: ComponentRule::LargestOnly,
            keep_probabilities: false,
            precision: Precision::F32,
            cascade: true,
        }
    }
}

/// What a prediction found besides the label map.
#[derive(Clone, Debug, Serialize)]
pub struct PredictionReport {
    /// Voxel box of the CT grid that was segmented.
    pub region_lo: [usize; 3],
    /// Exclusive upper corner of that box.
    pub region_hi: [usize; 3],
    /// Shape of the region at the network's spacing (what the tiles cover).
    pub tiles_shape: [usize; 3],
    /// Folds ensembled.
    pub folds: Vec<String>,
    /// Mirrored variants averaged per fold (1 = none).
    pub tta_variants: usize,
    /// The convolutions' arithmetic that ran: "f32", or "bf16" where it was asked for and
    /// the CPU has AMX.
    pub precision: String,
    /// Per left/right pair: were both found on their own side?
    pub laterality: Vec<LateralityCheck>,
    /// What a reader of the result should know (also in `prediction.json`).
    pub warnings: Vec<String>,
    /// Wall time of the prediction.
    pub seconds: f64,
    /// The cascade's fine stage: one box per gland, where it came from, and the time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cascade: Option<cascade::CascadeReport>,
}

/// A segmented case.
pub struct Prediction {
    /// Labels on the CT's grid.
    pub labels: Volume<u8>,
    /// Per-class probabilities on the CT's grid (when asked for), background first.
    pub probabilities: Option<Vec<Volume<f32>>>,
    /// What else was found and done.
    pub report: PredictionReport,
}

/// A loaded model: the plan and one network per fold.
pub struct Predictor<B: NetBackend> {
    /// The model folder (its plan says how to preprocess and tile).
    pub folder: ModelFolder,
    /// The folds loaded, in ensemble order.
    pub folds: Vec<String>,
    models: Vec<UNet<B>>,
    device: B::Device,
    /// The cascade's fine stage, when the plan has one and it was trained.
    fine: Option<Box<cascade::FineStage<B>>>,
    /// Remarks made while loading (e.g. a planned but untrained fine stage), repeated in
    /// every prediction's warnings.
    notes: Vec<String>,
}

/// What the network gives over one box of the CT grid ([`Predictor::region_argmax`]).
pub struct RegionLabels {
    /// The argmax on the box of the CT grid.
    pub labels: Volume<u8>,
    /// Per-class probabilities there (empty unless asked for).
    pub probabilities: Vec<Volume<f32>>,
    /// Shape of the network's grid over the box.
    pub tiles_shape: [usize; 3],
    /// The arithmetic that ran.
    pub precision: Precision,
    /// The probabilities on the network's own grid, `[classes, k, j, i]` (when asked for:
    /// a cascade's fine stage reads stage 1's as its prior channels).
    pub network: Option<(Geometry, Vec<f32>)>,
}

/// The folds of the fine stage to load: the coarse stage's folds where the fine stage
/// has them all, else every fold it has.
fn folds_for_fine(fine_dir: &std::path::Path, coarse: &[String]) -> Vec<String> {
    let have: Vec<String> = ModelFolder::open(fine_dir)
        .map(|f| f.trained_folds())
        .unwrap_or_default();
    if coarse.iter().all(|f| have.contains(f)) {
        coarse.to_vec()
    } else {
        have
    }
}

impl<B: NetBackend> Predictor<B> {
    /// Loads `folds` (all trained folds when empty) from a model folder.
    pub fn load(dir: &std::path::Path, folds: &[String], device: B::Device) -> Result<Self> {
        let folder = ModelFolder::open(dir)?;
        let folds: Vec<String> = if folds.is_empty() {
            folder.trained_folds()
        } else {
            folds.to_vec()
        };
        if folds.is_empty() {
            return Err(PredictError::Input(format!(
                "{}: no trained fold (no fold_*/checkpoint_*.ckpt)",
                dir.display()
            )));
        }
        let models = folds
            .iter()
            .map(|f| folder.load_network::<B>(f, &device))
            .collect::<glandseg_model::Result<Vec<_>>>()?;
        let mut notes = Vec::new();
        let fine = match &folder.plan.cascade {
            Some(spec) => {
                let fine_dir = dir.join(&spec.folder);
                match cascade::FineStage::load(
                    &fine_dir,
                    spec,
                    folds_for_fine(&fine_dir, &folds),
                    device.clone(),
                )? {
                    Some(f) => Some(Box::new(f)),
                    None => {
                        notes.push(format!(
                            "the plan has a cascade but {} holds no trained fine stage: single stage only",
                            fine_dir.display()
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Predictor {
            folder,
            folds,
            models,
            device,
            fine,
            notes,
        })
    }

    /// The same model without its cascade's fine stage (the coarse network alone), to
    /// measure what the second stage adds or to predict faster.
    pub fn single_stage(mut self) -> Self {
        self.fine = None;
        self
    }

    /// Whether prediction runs both stages of a cascade.
    pub fn is_cascade(&self) -> bool {
        self.fine.is_some()
    }

    /// Segments one case. `images` are the plan's channels in order (CT first); other
    /// channels may be on their own grids (resampled straight onto the network's grid).
    /// Borrowed: a caller keeps its whole-body CT for the outputs without a copy.
    pub fn predict(
        &self,
        images: &[Volume<f32>],
        opts: &PredictOptions,
        progress: &dyn Progress,
    ) -> Result<Prediction> {
        let started = std::time::Instant::now();
        let plan = &self.folder.plan;
        if images.len() != plan.channels.len() {
            return Err(PredictError::Input(format!(
                "the model reads {} channels ({}), {} were given",
                plan.channels.len(),
                plan.channels.join(", "),
                images.len()
            )));
        }
        // Other channels stay on their own grids: `preprocess_images` resamples each one
        // straight onto the network's grid (one interpolation, and no whole-CT-grid copy
        // of a whole-body PET).
        let ct_grid = images[0].geometry().clone();
        let is_ct = plan.first_channel_is_ct();
        let mut warnings = self.notes.clone();
        let region = if opts.localize && is_ct {
            localize::head_neck_region(&images[0], opts.region_mm, 20.0)
        } else {
            let body = body_box(&images[0], is_ct);
            if opts.localize && !is_ct {
                warnings.push("first channel is not CT: no head-and-neck localisation".into());
            }
            body
        };
        let fine = self.fine.as_ref().filter(|_| opts.cascade);
        // Stage 1's probabilities on its grid: the fine stage's prior channels read them, and
        // a gland the argmax missed is looked for at their peak.
        let wants_priors = fine.is_some();
        let RegionLabels {
            labels: mut arg,
            probabilities: kept,
            tiles_shape,
            precision,
            network,
        } = self.region_argmax(
            images,
            region,
            &[],
            opts,
            wants_priors,
            &mut warnings,
            progress,
        )?;
        // Components and laterality on the region (everything outside it is background),
        // not on a whole-body grid.
        postprocess::filter_components(&mut arg, &plan.labels, &opts.components);
        let cascade = match fine {
            Some(fine) => Some(fine.refine(
                images,
                region,
                &mut arg,
                network.as_ref(),
                &plan.labels,
                opts,
                progress,
            )?),
            None => None,
        };
        let laterality = postprocess::check_laterality(&arg, &plan.labels);
        let labels = place(&arg, &ct_grid, region.0, 0u8);
        for l in &laterality {
            if let Some(m) = &l.message {
                warnings.push(m.clone());
            }
        }
        let probabilities = opts.keep_probabilities.then(|| {
            kept.iter()
                .enumerate()
                .map(|(c, v)| place(v, &ct_grid, region.0, if c == 0 { 1.0 } else { 0.0 }))
                .collect()
        });
        Ok(Prediction {
            labels,
            probabilities,
            report: PredictionReport {
                region_lo: region.0,
                region_hi: region.1,
                tiles_shape,
                folds: self.folds.clone(),
                tta_variants: 1 + opts.mirror_lr as usize + 2 * opts.mirror_other_axes as usize,
                precision: precision.to_string(),
                laterality,
                warnings,
                seconds: started.elapsed().as_secs_f64(),
                cascade,
            },
        })
    }

    /// The network's argmax over a voxel box of the first image's grid (and, when asked,
    /// the probabilities there): the plan's preprocessing of the box, sliding windows
    /// with test-time mirroring, probabilities resampled back onto the box of the CT grid.
    /// Returns the labels, the probabilities, the network grid's shape and the precision
    /// that ran. `priors` are the plan's prior channels (a cascade's fine stage: stage 1's
    /// probabilities, on any grid; resampled linearly, 0 outside); `keep_network` returns
    /// the probabilities on the network's grid as well.
    #[allow(clippy::too_many_arguments)]
    pub fn region_argmax(
        &self,
        images: &[Volume<f32>],
        region: localize::Region,
        priors: &[Volume<f32>],
        opts: &PredictOptions,
        keep_network: bool,
        warnings: &mut Vec<String>,
        progress: &dyn Progress,
    ) -> Result<RegionLabels> {
        let plan = &self.folder.plan;
        let ct_grid = images[0].geometry().clone();
        if priors.len() != plan.prior_channels.len() {
            return Err(PredictError::Input(format!(
                "the model reads {} prior channels ({}), {} were given",
                plan.prior_channels.len(),
                plan.prior_channels.join(", "),
                priors.len()
            )));
        }
        let (target, mut data) = preprocess_images(images, plan, region)?;
        for prior in priors {
            data.extend_from_slice(resample(prior, &target, Interpolation::Linear, 0.0).as_slice());
        }
        let classes = plan.labels.num_classes();
        let mut fill = outside_values(plan);
        fill.resize(plan.input_channels(), 0.0);
        let window = SlidingWindow {
            patch: plan.patch_size,
            step: opts.step,
            batch: opts.batch,
        };
        let swap_table = plan.labels.swap_table();
        let tta = Tta {
            mirror_lr: opts.mirror_lr,
            mirror_other_axes: opts.mirror_other_axes,
            lr_axis: target.axis_along(0).0,
            swap: (0..classes).map(|c| swap_table[c] as usize).collect(),
        };
        let precision = if opts.precision.is_available() && B::has_kernels() {
            opts.precision
        } else {
            if opts.precision != Precision::F32 {
                warnings.push(format!(
                    "{} asked for, but this backend or CPU cannot run it (needs AMX-BF16): ran f32",
                    opts.precision
                ));
            }
            Precision::F32
        };
        let probs = glandseg_net::with_precision(precision, || {
            sliding::predict_probabilities(
                &self.models,
                &data,
                target.shape,
                plan.input_channels(),
                classes,
                &fill,
                &window,
                &tta,
                &self.device,
                progress,
            )
        });
        drop(data);
        // Back to the CT grid: probabilities resampled linearly, then the argmax.
        let region_grid = ct_grid.crop(region.0, region.1)?;
        let n_target = target.num_voxels();
        let mut best = Volume::filled(region_grid.clone(), f32::NEG_INFINITY);
        let mut arg = Volume::filled(region_grid.clone(), 0u8);
        let mut kept = Vec::new();
        for c in 0..classes {
            let v = Volume::from_vec(
                target.clone(),
                probs[c * n_target..(c + 1) * n_target].to_vec(),
            )?;
            let fill = if c == 0 { 1.0 } else { 0.0 };
            let on_ct = resample(&v, &region_grid, Interpolation::Linear, fill);
            for ((b, a), &p) in best
                .as_slice_mut()
                .iter_mut()
                .zip(arg.as_slice_mut())
                .zip(on_ct.as_slice())
            {
                if p > *b {
                    *b = p;
                    *a = c as u8;
                }
            }
            if opts.keep_probabilities {
                kept.push(on_ct);
            }
        }
        Ok(RegionLabels {
            labels: arg,
            probabilities: kept,
            tiles_shape: target.shape,
            precision,
            network: keep_network.then(|| (target.clone(), probs)),
        })
    }
}

/// `part` (a box of `grid` starting at `lo`) written into a full volume on `grid`.
fn place<T: Clone + Copy>(part: &Volume<T>, grid: &Geometry, lo: [usize; 3], fill: T) -> Volume<T> {
    let mut full = Volume::filled(grid.clone(), fill);
    let [pi, pj, pk] = part.shape();
    for k in 0..pk {
        for j in 0..pj {
            for i in 0..pi {
                full.set(lo[0] + i, lo[1] + j, lo[2] + k, *part.get(i, j, k));
            }
        }
    }
    full
}
