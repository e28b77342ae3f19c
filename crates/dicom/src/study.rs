//! One PET/CT study loader for every command (`convert`, `predict`, `info`), so that the
//! same folder always gives the same CT, the same PET and the same SUVs.
//!
//! - **Series choice** ([`pair_candidates`]): CT series by slice count (most first), then
//!   SeriesInstanceUID; for each CT the PET series in its frame of reference, by slice
//!   count, then SeriesInstanceUID. A scout or a MIP has few slices. `predict` and
//!   [`load_study`] take the first pair; `convert` takes the first pair that also has a
//!   SEG/RTSTRUCT in the CT's frame of reference.
//! - **SUV** ([`series_suv`]): QIBA's one factor per series, from the earliest scan
//!   reference time over its slices. Each slice's header gives its own reference time
//!   (SeriesTime, or its acquisition time when the series is derived); the earliest time
//!   means the least decayed dose, i.e. the smallest factor, so the series factor is the
//!   minimum over all slices, whatever their file or slice order.

use crate::series::{load_series, scan_folder, DicomError, LoadedSeries, SeriesInfo};
use crate::suv::{suv_factors_of_file, SuvFactors};
use glandseg_core::Volume;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The SUV factor of a whole PET series.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SeriesSuv {
    /// The factors of the slice with the smallest SUVbw factor (the series factor), with
    /// its derivation.
    pub factors: SuvFactors,
    /// The slice they came from.
    pub slice: PathBuf,
    /// Largest per-slice SUVbw factor (equal to `factors.suvbw` when every slice agrees).
    pub max_suvbw: f64,
    /// Set when the slices' factors differ (per-slice acquisition times).
    pub warning: Option<String>,
}

/// SUV factors of a PET series: every slice's header is read; any slice that cannot give
/// a factor makes the series fail (the error names the file).
pub fn series_suv(pet: &SeriesInfo) -> Result<SeriesSuv, String> {
    use rayon::prelude::*;
    if pet.slices.is_empty() {
        return Err(format!("series {}: has no slices", pet.series_instance_uid));
    }
    let all: Vec<(PathBuf, SuvFactors)> = pet
        .slices
        .par_iter()
        .map(|s| suv_factors_of_file(&s.path).map(|f| (s.path.clone(), f)))
        .collect::<Result<_, _>>()?;
    // Smallest factor; ties go to the first file name, so the choice never depends on
    // the order files were listed in.
    let (slice, mut factors) = all
        .iter()
        .min_by(|a, b| a.1.suvbw.total_cmp(&b.1.suvbw).then(a.0.cmp(&b.0)))
        .cloned()
        .expect("at least one slice");
    let max_suvbw = all.iter().map(|a| a.1.suvbw).fold(f64::MIN, f64::max);
    if !(factors.suvbw.is_finite() && factors.suvbw > 0.0) {
        return Err(format!(
            "{}: SUVbw factor {} is not a positive number",
            slice.display(),
            factors.suvbw
        ));
    }
    let warning = (max_suvbw - factors.suvbw > 1e-6 * max_suvbw).then(|| {
        format!(
            "PET series {}: SUVbw factors of its slices range from {} to {max_suvbw} (per-slice acquisition times); used the earliest time's factor {}",
            pet.series_instance_uid, factors.suvbw, factors.suvbw
        )
    });
    factors.derivation.push(format!(
        "series factor: the smallest of its {} slices' factors (QIBA: earliest scan time), from {}",
        all.len(),
        slice.display()
    ));
    Ok(SeriesSuv {
        factors,
        slice,
        max_suvbw,
        warning,
    })
}

/// (CT, PET) pairs in a frame of reference, best first (rules in the module docs), with
/// why there is none.
pub fn pair_candidates<'a>(
    series: &[&'a SeriesInfo],
) -> Result<Vec<(&'a SeriesInfo, &'a SeriesInfo)>, String> {
    let by_size = |m: &str| {
        let mut v: Vec<&'a SeriesInfo> =
            series.iter().copied().filter(|s| s.modality == m).collect();
        v.sort_by(|a, b| {
            b.slices
                .len()
                .cmp(&a.slices.len())
                .then(a.series_instance_uid.cmp(&b.series_instance_uid))
        });
        v
    };
    let cts = by_size("CT");
    let pets = by_size("PT");
    if cts.is_empty() {
        return Err("no CT series (modality CT)".into());
    }
    if pets.is_empty() {
        return Err("no PET series (modality PT)".into());
    }
    let pairs: Vec<_> = cts
        .iter()
        .flat_map(|ct| {
            pets.iter()
                .filter(|p| p.frame_of_reference_uid == ct.frame_of_reference_uid)
                .map(move |p| (*ct, *p))
        })
        .collect();
    if pairs.is_empty() {
        return Err(format!(
            "no PET series shares a CT's frame of reference (CT: {}; PET: {})",
            cts.iter()
                .map(|c| c.frame_of_reference_uid.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            pets.iter()
                .map(|c| c.frame_of_reference_uid.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(pairs)
}

/// Notes on a choice among several series (for the user to check).
pub fn choice_warnings(series: &[&SeriesInfo], ct: &SeriesInfo, pet: &SeriesInfo) -> Vec<String> {
    let mut w = Vec::new();
    let n_ct = series.iter().filter(|s| s.modality == "CT").count();
    if n_ct > 1 {
        w.push(format!(
            "{n_ct} CT series; used {} ({:?}, {} slices)",
            ct.series_instance_uid,
            ct.description,
            ct.slices.len()
        ));
    }
    let n_pet = series
        .iter()
        .filter(|s| s.modality == "PT" && s.frame_of_reference_uid == ct.frame_of_reference_uid)
        .count();
    if n_pet > 1 {
        w.push(format!(
            "{n_pet} PET series in the frame of reference; used {} ({:?}, {} slices)",
            pet.series_instance_uid,
            pet.description,
            pet.slices.len()
        ));
    }
    w
}

/// A loaded PET/CT study.
#[derive(Debug)]
pub struct Study {
    /// The CT series (HU).
    pub ct: LoadedSeries,
    /// The PET series as stored (after RescaleSlope/Intercept: Bq/mL, counts or SUV).
    pub pet: LoadedSeries,
    /// The PET in SUVbw on its own grid.
    pub pet_suv: Volume<f32>,
    /// The series SUV factor and where it came from.
    pub suv: SeriesSuv,
    /// Choices made between series, differing slice factors.
    pub warnings: Vec<String>,
}

/// Loads a chosen CT and PET series and converts the PET to SUVbw with [`series_suv`].
pub fn load_pair(ct: &SeriesInfo, pet: &SeriesInfo) -> Result<Study, DicomError> {
    let series_err = |msg: String| DicomError::Series {
        uid: pet.series_instance_uid.clone(),
        description: pet.description.clone(),
        msg,
    };
    let (ct_l, pet_l) = rayon::join(|| load_series(ct), || load_series(pet));
    let (ct_l, pet_l) = (ct_l?, pet_l?);
    let suv = series_suv(pet).map_err(|e| series_err(format!("SUV: {e}")))?;
    let f = suv.factors.suvbw;
    let pet_suv = pet_l.volume.map(|v| (*v as f64 * f) as f32);
    let warnings = suv.warning.iter().cloned().collect();
    Ok(Study {
        ct: ct_l,
        pet: pet_l,
        pet_suv,
        suv,
        warnings,
    })
}

/// Scans `dir` and loads its best CT + PET pair ([`pair_candidates`]).
pub fn load_study(dir: &Path) -> Result<Study, DicomError> {
    let scan = scan_folder(dir)?;
    let series: Vec<&SeriesInfo> = scan.series.iter().collect();
    let pairs = pair_candidates(&series).map_err(|msg| DicomError::File {
        path: dir.to_path_buf(),
        msg,
    })?;
    let (ct, pet) = pairs[0];
    let mut study = load_pair(ct, pet)?;
    let mut w = choice_warnings(&series, ct, pet);
    w.append(&mut study.warnings);
    study.warnings = w;
    Ok(study)
}
