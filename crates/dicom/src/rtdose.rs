//! An absorbed-dose map as DICOM RT Dose (RTDOSE), so that a treatment planning system or
//! a dosimetry viewer (3D Slicer's SlicerRT, MIM, RayStation) overlays it on the CT.
//!
//! One multi-frame file on the dose map's own grid (glandseg writes it on the label map's
//! grid, which is the CT's): Dose Units `GY`, Dose Type `PHYSICAL`, unsigned 32-bit pixels
//! times Dose Grid Scaling, frames along the slice normal at the offsets of
//! GridFrameOffsetVector (relative to the first frame's ImagePositionPatient, so the first
//! is 0). With the CT as [`SourceSeries`] the object joins its study and Frame of
//! Reference. Dose Summation Type is `PLAN`, as dosimetry tools for molecular
//! radiotherapy write it; there is no RT Plan to reference (the therapy is an injection),
//! so the Referenced RT Plan Sequence is left out.

use crate::dataset::*;
use crate::series::DicomError;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use glandseg_core::Volume;
use std::path::Path;

pub(crate) const RT_DOSE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.481.2";

/// Largest stored value: the maximum dose maps to it (below u32::MAX, leaving headroom for
/// readers that add an offset).
const STORED_MAX: f64 = 4.0e9;

/// What [`write_rtdose`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RtDoseWritten {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub dose_grid_scaling: f64,
}

/// Writes `dose` (Gy) as RTDOSE at `path`; `source` (the CT the dose grid lies on) gives
/// the study, patient and Frame of Reference. Negative or non-finite doses are refused.
pub fn write_rtdose(
    path: &Path,
    dose: &Volume<f32>,
    source: Option<&SourceSeries>,
    description: &str,
) -> Result<RtDoseWritten, DicomError> {
    let g = dose.geometry();
    if g.shape[0] > u16::MAX as usize || g.shape[1] > u16::MAX as usize {
        return Err(file_err(path, "dose grid exceeds 65535 rows/columns"));
    }
    let max = dose.as_slice().iter().cloned().fold(0f32, f32::max) as f64;
    // FFT round-off leaves values of -1e-17 Gy: those are 0; a real negative dose is not.
    if let Some(v) = dose
        .as_slice()
        .iter()
        .find(|v| !v.is_finite() || (**v as f64) < -1e-6 * max.max(1e-12))
    {
        return Err(file_err(
            path,
            format!("dose value {v} is not a finite dose >= 0 Gy"),
        ));
    }
    let scaling = if max > 0.0 { max / STORED_MAX } else { 1.0 };
    // DS holds 16 characters: scale with the value as written.
    let scaling: f64 = ds_str(scaling).parse().unwrap_or(scaling);
    let stored: Vec<u32> = dose
        .as_slice()
        .iter()
        .map(|&v| (v as f64 / scaling).round().clamp(0.0, u32::MAX as f64) as u32)
        .collect();
    let id = derived_identity(source);
    let d = g.direction;
    let nk = g.shape[2];
    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, RT_DOSE_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, id.sop_uid.clone()),
        s(tags::MODALITY, VR::CS, "RTDOSE"),
        s(tags::SERIES_INSTANCE_UID, VR::UI, id.series_uid.clone()),
        is(tags::SERIES_NUMBER, 20),
        s(tags::SERIES_DESCRIPTION, VR::LO, description),
        s(tags::CONTENT_DATE, VR::DA, id.date.clone()),
        s(tags::CONTENT_TIME, VR::TM, id.time.clone()),
        s(tags::INSTANCE_CREATION_DATE, VR::DA, id.date.clone()),
        s(tags::INSTANCE_CREATION_TIME, VR::TM, id.time.clone()),
        is(tags::INSTANCE_NUMBER, 1),
        s(tags::FRAME_OF_REFERENCE_UID, VR::UI, id.for_uid.clone()),
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        ds(
            tags::IMAGE_POSITION_PATIENT,
            &g.index_to_world([0.0, 0.0, 0.0]),
        ),
        ds(
            tags::IMAGE_ORIENTATION_PATIENT,
            &[d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]],
        ),
        ds(tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]),
        ds(tags::SLICE_THICKNESS, &[g.spacing[2]]),
        us(tags::SAMPLES_PER_PIXEL, 1),
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, g.shape[1] as u16),
        us(tags::COLUMNS, g.shape[0] as u16),
        us(tags::BITS_ALLOCATED, 32),
        us(tags::BITS_STORED, 32),
        us(tags::HIGH_BIT, 31),
        us(tags::PIXEL_REPRESENTATION, 0),
        is(tags::NUMBER_OF_FRAMES, nk as i64),
        DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags(C::from(vec![tags::GRID_FRAME_OFFSET_VECTOR])),
        ),
        ds(
            tags::GRID_FRAME_OFFSET_VECTOR,
            &(0..nk).map(|k| k as f64 * g.spacing[2]).collect::<Vec<_>>(),
        ),
        s(tags::DOSE_UNITS, VR::CS, "GY"),
        s(tags::DOSE_TYPE, VR::CS, "PHYSICAL"),
        s(tags::DOSE_SUMMATION_TYPE, VR::CS, "PLAN"),
        s(
            tags::DOSE_COMMENT,
            VR::LO,
            "absorbed dose, molecular radiotherapy (glandseg dose)",
        ),
        ds(tags::DOSE_GRID_SCALING, &[scaling]),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U32(C::from(stored)),
        ),
    ];
    e.extend(patient_study_elems(&id.patient, &id.study_uid));
    e.extend(equipment_elems());
    write_file(obj(e), path)?;
    Ok(RtDoseWritten {
        sop_instance_uid: id.sop_uid,
        series_instance_uid: id.series_uid,
        frame_of_reference_uid: id.for_uid,
        dose_grid_scaling: scaling,
    })
}
