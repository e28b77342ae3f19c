//! The image steps that training's cache and prediction share, so a model always sees at
//! prediction what it was trained on: every channel onto the first channel's grid, the body
//! box, resampling to the plan's spacing and the plan's normalisation.

use crate::Plan;
use glandseg_core::geometry::GRID_TOLERANCE;
use glandseg_core::{Geometry, Volume};
use glandseg_ops::resample::{resample, Interpolation};
use rayon::prelude::*;

/// The body box of a CT (the fingerprint's rule: HU > -500), or the whole grid for other
/// first channels or an all-air image, so a PET-only model still works.
pub fn body_box(first: &Volume<f32>, is_ct: bool) -> ([usize; 3], [usize; 3]) {
    let full = ([0; 3], first.shape());
    if !is_ct {
        return full;
    }
    crate::fingerprint::body_bbox(first, true).unwrap_or(full)
}

/// What each normalised channel reads outside the image (air, zero uptake): the plan's
/// normalisation of the lowest value, which the clip or the log maps onto its floor.
pub fn outside_values(plan: &Plan) -> Vec<f32> {
    plan.normalization
        .iter()
        .map(|n| n.apply(f32::MIN))
        .collect()
}

/// Brings the channels of one case onto the first channel's grid, crops to `crop`
/// (voxel box of the first channel's grid, exclusive upper bound), resamples to the plan's
/// spacing and normalises. Returns the cropped target grid and the channels, channel-major
/// in the volume's memory order.
pub fn preprocess_images(
    images: &[Volume<f32>],
    plan: &Plan,
    crop: ([usize; 3], [usize; 3]),
) -> glandseg_core::Result<(Geometry, Vec<f32>)> {
    let reference = images
        .first()
        .ok_or_else(|| glandseg_core::Error::Shape("no image channels".into()))?
        .geometry()
        .clone();
    let cropped = reference.crop(crop.0, crop.1)?;
    let target = cropped.with_spacing(plan.target_spacing);
    let n = target.num_voxels();
    let mut out = vec![0f32; n * images.len()];
    out.par_chunks_mut(n)
        .zip(images.par_iter().zip(&plan.normalization))
        .for_each(|(dst, (img, norm))| {
            // Outside the field of view reads as the image's minimum (air, zero uptake).
            let fill = img.min_max().map(|m| m.0 as f32).unwrap_or(0.0);
            let v = resample(img, &target, Interpolation::Linear, fill);
            for (d, s) in dst.iter_mut().zip(v.as_slice()) {
                *d = norm.apply(*s);
            }
        });
    Ok((target, out))
}

/// Every channel on the first channel's grid (PET often arrives on its own coarser grid).
pub fn onto_first_grid(images: Vec<Volume<f32>>) -> Vec<Volume<f32>> {
    let reference = images[0].geometry().clone();
    images
        .into_iter()
        .map(|v| {
            if v.geometry().same_grid(&reference, GRID_TOLERANCE) {
                v
            } else {
                let fill = v.min_max().map(|m| m.0 as f32).unwrap_or(0.0);
                resample(&v, &reference, Interpolation::Linear, fill)
            }
        })
        .collect()
}
