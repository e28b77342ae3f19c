//! A case (CT, PET in SUV, labels) as DICOM, the way a scanner and a segmentation tool
//! would deliver it: a CT series, a PET series whose header lets any SUV calculator (ours,
//! OHIF's, calculate-suv) recover the SUVs, and a SEG and an RTSTRUCT that reference the
//! CT. This is what lets the synthetic cohort exercise the DICOM paths end to end.

use crate::dataset::*;
use crate::rtstruct::{write_rtstruct, RtStructOptions};
use crate::seg::{write_seg, SegOptions, Written};
use crate::series::DicomError;
use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, Length, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use glandseg_core::{LabelMap, Volume};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Who was scanned and how the tracer was given: what the PET header needs for SUV.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatientMeta {
    pub patient_id: String,
    /// DICOM PN, e.g. `Phantom^Glandseg`.
    pub patient_name: String,
    pub weight_kg: f64,
    /// Injected activity at the injection time, Bq.
    pub injected_dose_bq: f64,
    /// Radionuclide half-life, s (F-18: 6586.2, Ga-68: 4062.6).
    pub half_life_s: f64,
    /// Injection to the scan (series) reference time, s.
    pub injection_to_scan_s: f64,
    /// Scan time as Unix seconds (UTC); `None` = now. Fixed values make files reproducible.
    pub scan_time_unix: Option<f64>,
    /// `M`, `F`, `O` or empty (unknown); with the height it lets readers compute SUVlbm.
    pub patient_sex: String,
    pub patient_height_m: Option<f64>,
    /// Radiopharmaceutical (0018,0031), e.g. `Ga-68 PSMA-11`.
    pub radiopharmaceutical: String,
    /// Radionuclide, e.g. `18F`, `F-18`, `68Ga`, `Ga-68`: coded in RadionuclideCodeSequence
    /// when recognised (F-18, Ga-68), else by the half-life, else left empty.
    pub radionuclide: String,
}

impl Default for PatientMeta {
    /// A 75 kg patient, 200 MBq of an F-18 tracer, scanned 60 min after injection.
    fn default() -> Self {
        PatientMeta {
            patient_id: "GLANDSEG_PHANTOM".into(),
            patient_name: "Phantom^Glandseg".into(),
            weight_kg: 75.0,
            injected_dose_bq: 200e6,
            half_life_s: 6586.2,
            injection_to_scan_s: 3600.0,
            scan_time_unix: None,
            patient_sex: String::new(),
            patient_height_m: None,
            radiopharmaceutical: "PSMA".into(),
            radionuclide: "18F".into(),
        }
    }
}

/// SNOMED CT code of a radionuclide given by name (or, failing that, by half-life).
fn radionuclide_code(name: &str, half_life_s: f64) -> Option<(&'static str, &'static str)> {
    let n = name.to_ascii_lowercase().replace(['-', ' ', '^'], "");
    if ["18f", "f18", "18fluorine", "fluorine18"].contains(&n.as_str()) {
        Some(("77004003", "^18^Fluorine"))
    } else if ["68ga", "ga68", "68gallium", "gallium68"].contains(&n.as_str()) {
        Some(("35337001", "^68^Gallium"))
    } else if n.is_empty() && (half_life_s - 6586.2).abs() < 60.0 {
        Some(("77004003", "^18^Fluorine"))
    } else if n.is_empty() && (half_life_s - 4062.0).abs() < 60.0 {
        Some(("35337001", "^68^Gallium"))
    } else {
        None
    }
}

impl PatientMeta {
    /// SUVbw = Bq/mL × this (weight in g over the dose decayed to the scan time), the
    /// factor a QIBA-conformant reader derives from the header written here.
    pub fn suvbw_factor(&self) -> f64 {
        let decayed = self.injected_dose_bq
            * (-self.injection_to_scan_s * std::f64::consts::LN_2 / self.half_life_s).exp();
        self.weight_kg * 1000.0 / decayed
    }

    fn check(&self, out: &Path) -> Result<(), DicomError> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        if !ok(self.weight_kg) || !ok(self.injected_dose_bq) || !ok(self.half_life_s) {
            return Err(file_err(
                out,
                format!(
                    "patient weight ({} kg), dose ({} Bq) and half-life ({} s) must be positive",
                    self.weight_kg, self.injected_dose_bq, self.half_life_s
                ),
            ));
        }
        if !(self.injection_to_scan_s.is_finite() && self.injection_to_scan_s >= 0.0) {
            return Err(file_err(
                out,
                format!(
                    "injection-to-scan time {} s must be >= 0",
                    self.injection_to_scan_s
                ),
            ));
        }
        Ok(())
    }
}

/// Study-level identity shared by every series of a case.
#[derive(Clone, Debug)]
pub struct StudyContext {
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub patient: PatientStudy,
    /// Unix time of the scan (series/acquisition time of the images).
    pub scan_time_unix: f64,
}

impl StudyContext {
    /// New UIDs, the patient of `meta`, study date = scan date.
    pub fn new(meta: &PatientMeta) -> Self {
        let scan = meta.scan_time_unix.unwrap_or_else(|| now_unix().floor());
        let (d, t) = date_time_of(scan);
        StudyContext {
            study_instance_uid: new_uid(),
            frame_of_reference_uid: new_uid(),
            patient: PatientStudy {
                patient_name: meta.patient_name.clone(),
                patient_id: meta.patient_id.clone(),
                patient_sex: meta.patient_sex.clone(),
                study_date: d,
                study_time: t,
                study_id: "1".into(),
                ..Default::default()
            },
            scan_time_unix: scan,
        }
    }
}

/// Elements every slice of a series shares (patient, study, series, frame of reference,
/// equipment, image plane orientation and spacing, pixel format).
pub(crate) fn common_slice_elems(
    vol_geometry: &glandseg_core::Geometry,
    ctx: &StudyContext,
    modality: &str,
    sop_class: &str,
    series_uid: &str,
    series_number: i64,
    description: &str,
) -> Vec<Elem> {
    let g = vol_geometry;
    let d = g.direction;
    let (date, time) = date_time_of(ctx.scan_time_unix);
    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, sop_class),
        s(tags::MODALITY, VR::CS, modality),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
        is(tags::SERIES_NUMBER, series_number),
        s(tags::SERIES_DESCRIPTION, VR::LO, description),
        s(tags::SERIES_DATE, VR::DA, date.clone()),
        s(tags::SERIES_TIME, VR::TM, time.clone()),
        s(tags::ACQUISITION_DATE, VR::DA, date.clone()),
        s(tags::ACQUISITION_TIME, VR::TM, time.clone()),
        s(tags::CONTENT_DATE, VR::DA, date),
        s(tags::CONTENT_TIME, VR::TM, time),
        // An unpaired body part: this is what lets a validator know Laterality (2C) is
        // rightly absent.
        s(tags::BODY_PART_EXAMINED, VR::CS, "HEADNECK"),
        s(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            ctx.frame_of_reference_uid.clone(),
        ),
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
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
        us(tags::BITS_ALLOCATED, 16),
        us(tags::BITS_STORED, 16),
        us(tags::HIGH_BIT, 15),
        us(tags::PIXEL_REPRESENTATION, 1),
    ];
    e.extend(patient_study_elems(&ctx.patient, &ctx.study_instance_uid));
    e.extend(equipment_elems());
    e
}

fn check_in_plane(g: &glandseg_core::Geometry, out: &Path) -> Result<(), DicomError> {
    if g.shape[0] > u16::MAX as usize || g.shape[1] > u16::MAX as usize {
        return Err(file_err(
            out,
            format!(
                "slices of {}x{} exceed DICOM's 65535 rows/columns",
                g.shape[0], g.shape[1]
            ),
        ));
    }
    Ok(())
}

/// Writes slice files `<dir>/<prefix>_NNNN.dcm`, one per `k`, each built by `slice(k)`.
fn write_slices<F>(dir: &Path, prefix: &str, nk: usize, slice: F) -> Result<Vec<String>, DicomError>
where
    F: Fn(usize, &str) -> Result<dicom_object::InMemDicomObject, DicomError> + Sync,
{
    (0..nk)
        .into_par_iter()
        .map(|k| {
            let uid = new_uid();
            let path = dir.join(format!("{prefix}_{:04}.dcm", k + 1));
            write_file(slice(k, &uid)?, &path)?;
            Ok(uid)
        })
        .collect()
}

fn plane_i16(values: &[i16]) -> Elem {
    DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::I16(C::from(values.to_vec())),
    )
}

/// Writes `ct` (HU) as a CT Image Storage series in `dir`, one file per slice `k`, stored
/// as int16 = round(HU) + 1024 with RescaleIntercept -1024 (values outside int16's range
/// are clamped). Returns the series as a [`SourceSeries`] for SEG/RTSTRUCT references.
pub fn write_ct_series(
    dir: &Path,
    ct: &Volume<f32>,
    ctx: &StudyContext,
) -> Result<SourceSeries, DicomError> {
    let g = ct.geometry();
    check_in_plane(g, dir)?;
    let series_uid = new_uid();
    let mut common = common_slice_elems(
        g,
        ctx,
        "CT",
        CT_IMAGE_STORAGE,
        &series_uid,
        1,
        "glandseg CT",
    );
    let plane = g.shape[0] * g.shape[1];
    let data = ct.as_slice();
    // PET says the same with (empty) patient orientation code sequences instead, which
    // PS3.3 does not allow together with PatientPosition.
    common.push(s(tags::PATIENT_POSITION, VR::CS, "HFS"));
    let uids = write_slices(dir, "CT", g.shape[2], |k, uid| {
        let stored: Vec<i16> = data[k * plane..(k + 1) * plane]
            .iter()
            .map(|v| (v.round() as f64 + 1024.0).clamp(i16::MIN as f64, i16::MAX as f64) as i16)
            .collect();
        let mut e = common.clone();
        e.extend([
            s(tags::SOP_INSTANCE_UID, VR::UI, uid),
            s(tags::IMAGE_TYPE, VR::CS, "DERIVED\\SECONDARY\\AXIAL"),
            is(tags::INSTANCE_NUMBER, k as i64 + 1),
            is(tags::ACQUISITION_NUMBER, 1),
            s(tags::KVP, VR::DS, "120"),
            ds(
                tags::IMAGE_POSITION_PATIENT,
                &g.index_to_world([0.0, 0.0, k as f64]),
            ),
            ds(tags::RESCALE_INTERCEPT, &[-1024.0]),
            ds(tags::RESCALE_SLOPE, &[1.0]),
            s(tags::RESCALE_TYPE, VR::LO, "HU"),
            ds(tags::WINDOW_CENTER, &[40.0]),
            ds(tags::WINDOW_WIDTH, &[400.0]),
            plane_i16(&stored),
        ]);
        Ok(obj(e))
    })?;
    Ok(SourceSeries {
        study_instance_uid: ctx.study_instance_uid.clone(),
        series_instance_uid: series_uid,
        frame_of_reference_uid: ctx.frame_of_reference_uid.clone(),
        sop_class_uid: CT_IMAGE_STORAGE.into(),
        sop_instance_uids: uids,
        patient: ctx.patient.clone(),
    })
}

/// Writes `pet_suv` (SUVbw) as a PET Image Storage series in `dir`: Bq/mL (Units BQML,
/// DecayCorrection START, CorrectedImage ATTN\DECY) with the dose, half-life, injection
/// date-time and weight of `meta`, so that SUV = Bq/mL × [`PatientMeta::suvbw_factor`].
/// Each slice is int16 with its own RescaleSlope (slice maximum / 32767), as scanners do.
/// Returns the SeriesInstanceUID.
pub fn write_pet_series(
    dir: &Path,
    pet_suv: &Volume<f32>,
    ctx: &StudyContext,
    meta: &PatientMeta,
) -> Result<String, DicomError> {
    meta.check(dir)?;
    let g = pet_suv.geometry();
    check_in_plane(g, dir)?;
    let series_uid = new_uid();
    let mut common = common_slice_elems(
        g,
        ctx,
        "PT",
        PET_IMAGE_STORAGE,
        &series_uid,
        2,
        "glandseg PET (Bq/mL)",
    );
    let inj = ctx.scan_time_unix - meta.injection_to_scan_s;
    let (inj_d, inj_t) = date_time_of(inj);
    let nuclide: Vec<_> = radionuclide_code(&meta.radionuclide, meta.half_life_s)
        .map(|(v, m)| code(v, "SCT", m))
        .into_iter()
        .collect();
    common.extend([
        ds(tags::PATIENT_WEIGHT, &[meta.weight_kg]),
        match meta.patient_height_m {
            Some(h) if h.is_finite() && h > 0.0 => ds(tags::PATIENT_SIZE, &[h]),
            _ => s(tags::PATIENT_SIZE, VR::DS, ""),
        },
        s(tags::UNITS, VR::CS, "BQML"),
        s(tags::COUNTS_SOURCE, VR::CS, "EMISSION"),
        s(tags::SERIES_TYPE, VR::CS, "STATIC\\IMAGE"),
        us(tags::NUMBER_OF_SLICES, g.shape[2] as u16),
        s(tags::CORRECTED_IMAGE, VR::CS, "ATTN\\DECY"),
        s(tags::DECAY_CORRECTION, VR::CS, "START"),
        s(tags::RANDOMS_CORRECTION_METHOD, VR::CS, "NONE"),
        s(tags::ATTENUATION_CORRECTION_METHOD, VR::LO, "CT"),
        s(tags::RECONSTRUCTION_METHOD, VR::LO, "synthetic"),
        s(tags::COLLIMATOR_TYPE, VR::CS, "NONE"),
        sq(
            tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE,
            vec![obj(vec![
                DataElement::new(
                    tags::RADIONUCLIDE_CODE_SEQUENCE,
                    VR::SQ,
                    DataSetSequence::new(nuclide, Length::UNDEFINED),
                ),
                s(
                    tags::RADIOPHARMACEUTICAL,
                    VR::LO,
                    meta.radiopharmaceutical.clone(),
                ),
                s(tags::RADIOPHARMACEUTICAL_START_TIME, VR::TM, inj_t.clone()),
                s(
                    tags::RADIOPHARMACEUTICAL_START_DATE_TIME,
                    VR::DT,
                    format!("{inj_d}{inj_t}"),
                ),
                ds(tags::RADIONUCLIDE_TOTAL_DOSE, &[meta.injected_dose_bq]),
                ds(tags::RADIONUCLIDE_HALF_LIFE, &[meta.half_life_s]),
            ])],
        ),
        sq(tags::PATIENT_ORIENTATION_CODE_SEQUENCE, Vec::new()),
        sq(tags::PATIENT_GANTRY_RELATIONSHIP_CODE_SEQUENCE, Vec::new()),
    ]);
    let to_bqml = 1.0 / meta.suvbw_factor();
    let plane = g.shape[0] * g.shape[1];
    let data = pet_suv.as_slice();
    write_slices(dir, "PT", g.shape[2], |k, uid| {
        let bq: Vec<f64> = data[k * plane..(k + 1) * plane]
            .iter()
            .map(|v| *v as f64 * to_bqml)
            .collect();
        if bq.iter().any(|v| !v.is_finite()) {
            return Err(file_err(
                dir,
                format!("PET slice {k} has non-finite values"),
            ));
        }
        let max = bq.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let slope = if max > 0.0 { max / 32767.0 } else { 1.0 };
        // DS holds ~16 significant characters: quantise with the slope as written.
        let slope: f64 = ds_str(slope).parse().unwrap_or(slope);
        let stored: Vec<i16> = bq
            .iter()
            .map(|v| (v / slope).round().clamp(-32768.0, 32767.0) as i16)
            .collect();
        let mut e = common.clone();
        e.extend([
            s(tags::SOP_INSTANCE_UID, VR::UI, uid),
            s(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY"),
            is(tags::INSTANCE_NUMBER, k as i64 + 1),
            us(tags::IMAGE_INDEX, k as u16 + 1),
            ds(tags::FRAME_REFERENCE_TIME, &[0.0]),
            is(tags::ACTUAL_FRAME_DURATION, 600_000),
            ds(tags::DECAY_FACTOR, &[1.0]),
            ds(
                tags::IMAGE_POSITION_PATIENT,
                &g.index_to_world([0.0, 0.0, k as f64]),
            ),
            ds(tags::RESCALE_INTERCEPT, &[0.0]),
            ds(tags::RESCALE_SLOPE, &[slope]),
            s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
            plane_i16(&stored),
        ]);
        Ok(obj(e))
    })?;
    Ok(series_uid)
}

/// Where [`write_case_dicom`] put everything.
#[derive(Clone, Debug, Serialize)]
pub struct CaseDicom {
    pub ct_dir: PathBuf,
    /// The CT series as written (UIDs of every slice).
    pub ct: SourceSeries,
    pub pet_dir: PathBuf,
    pub pet_series_instance_uid: String,
    pub seg: Written,
    pub rtstruct: Written,
}

/// Writes a whole case under `out_dir`: `CT/CT_NNNN.dcm`, `PT/PT_NNNN.dcm`, `seg.dcm` and
/// `rtstruct.dcm`, all in one study and frame of reference, the SEG and RTSTRUCT
/// referencing the CT slices. `labels` must be on the CT's grid; the PET may have its own.
pub fn write_case_dicom(
    out_dir: &Path,
    ct: &Volume<f32>,
    pet_suv: &Volume<f32>,
    labels: &Volume<u8>,
    map: &LabelMap,
    meta: &PatientMeta,
) -> Result<CaseDicom, DicomError> {
    meta.check(out_dir)?;
    if !labels
        .geometry()
        .same_grid(ct.geometry(), glandseg_core::geometry::GRID_TOLERANCE)
    {
        return Err(file_err(
            out_dir,
            format!(
                "the labels' grid {:?} is not the CT's {:?}",
                labels.geometry(),
                ct.geometry()
            ),
        ));
    }
    let ctx = StudyContext::new(meta);
    let ct_dir = out_dir.join("CT");
    let pet_dir = out_dir.join("PT");
    let source = write_ct_series(&ct_dir, ct, &ctx)?;
    let pet_uid = write_pet_series(&pet_dir, pet_suv, &ctx, meta)?;
    let seg = write_seg(
        &out_dir.join("seg.dcm"),
        labels,
        map,
        Some(&source),
        &SegOptions {
            model_name: "phantom ground truth".into(),
            series_description: "glandseg labels".into(),
            series_number: 3,
        },
    )?;
    let rtstruct = write_rtstruct(
        &out_dir.join("rtstruct.dcm"),
        labels,
        map,
        Some(&source),
        &RtStructOptions {
            series_number: 4,
            ..Default::default()
        },
    )?;
    Ok(CaseDicom {
        ct: source,
        ct_dir,
        pet_dir,
        pet_series_instance_uid: pet_uid,
        seg,
        rtstruct,
    })
}
