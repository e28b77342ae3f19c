//! Quantitative SPECT as DICOM NM (Nuclear Medicine Image Storage, a reconstructed
//! tomographic image: ImageType `ORIGINAL\PRIMARY\RECON TOMO\EMISSION`), written and read
//! for gland dosimetry.
//!
//! An NM object holds the whole volume in one multi-frame file: frame n is slice n along
//! the slice normal (row × column direction cosines), `SpacingBetweenSlices` apart, from
//! the ImagePositionPatient of the Detector Information Sequence (PS3.3 C.8.4.10/C.8.4.11).
//!
//! **Units** — NM objects carry no standard BQML flag, so the reader takes, in order:
//! 1. a Real World Value Mapping item whose Measurement Units Code is `Bq/ml` (UCUM): its
//!    slope and intercept applied to the stored values (Siemens xSPECT Quant, Hermes);
//! 2. Units (0054,1001) `BQML` (a PET attribute some vendors also write in NM): Rescale
//!    Slope/Intercept applied to the stored values;
//! 3. otherwise counts (after Rescale Slope/Intercept), turned into Bq/mL only with a
//!    calibration factor C in counts per second per MBq given by the user:
//!    Bq/mL = counts / (C × T_acq) × 1e6 / voxel mL, T_acq = the Rotation Information
//!    Sequence's ActualFrameDuration × NumberOfFramesInRotation (the time per head, as C
//!    is measured for the whole system).
//!
//! **Times** — the acquisition from AcquisitionDate/Time (or Series Date/Time), the
//! injection from the Radiopharmaceutical Information Sequence: Radiopharmaceutical Start
//! DateTime (0018,1078), or Start Time (0018,1072) on the acquisition's date. **Injected
//! activity**: Radionuclide Total Dose (0018,1074) is in **MBq** in NM objects (PS3.3
//! C.8.4.10.1.7) and in **Bq** in PET objects (C.8.9.2): [`read_activity_image`] returns
//! MBq for both.

use crate::case::StudyContext;
use crate::dataset::*;
use crate::series::DicomError;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use glandseg_core::{Geometry, Volume};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub(crate) const NM_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.20";

/// How [`write_nm`] stores the values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NmUnits {
    /// Bq/mL: Units BQML and a Real World Value Mapping to `Bq/ml`.
    Bqml,
    /// Counts per voxel (Units CNTS) from Bq/mL with this calibration factor (cps/MBq)
    /// over the acquisition time.
    Counts { cps_per_mbq: f64 },
}

/// The acquisition facts an NM object records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NmAcquisition {
    /// Acquisition start, Unix seconds.
    pub acquisition_unix: f64,
    /// Injection, Unix seconds.
    pub injection_unix: f64,
    /// Injected activity, MBq.
    pub injected_mbq: f64,
    /// Physical half-life, s.
    pub half_life_s: f64,
    /// e.g. `Lu-177 PSMA-617`.
    pub radiopharmaceutical: String,
    /// Projections per head (NumberOfFramesInRotation).
    pub projections: u32,
    /// Time per projection, s (ActualFrameDuration).
    pub seconds_per_projection: f64,
    /// Photopeak window (keV): lower, upper (Lu-177: 187.2-228.8, 208 keV ± 10 %).
    pub energy_window_kev: [f64; 2],
}

impl NmAcquisition {
    /// Acquisition time per head, s.
    pub fn acquisition_s(&self) -> f64 {
        self.projections as f64 * self.seconds_per_projection
    }
}

/// Writes `activity` (Bq/mL at the acquisition time) as one NM multi-frame file at `path`
/// in the study and frame of reference of `ctx`; returns the SOP Instance UID.
pub fn write_nm(
    path: &Path,
    activity: &Volume<f32>,
    ctx: &StudyContext,
    acq: &NmAcquisition,
    units: NmUnits,
    series_number: i64,
) -> Result<String, DicomError> {
    let g = activity.geometry();
    if g.shape[0] > u16::MAX as usize || g.shape[1] > u16::MAX as usize {
        return Err(file_err(path, "slices exceed 65535 rows/columns"));
    }
    let ok = |v: f64| v.is_finite() && v > 0.0;
    if !ok(acq.injected_mbq) || !ok(acq.half_life_s) || !ok(acq.acquisition_s()) {
        return Err(file_err(
            path,
            "injected activity, half-life and acquisition time must be > 0",
        ));
    }
    let vox_ml = g.voxel_volume_ml();
    // Stored value = value / slope, u16; value in Bq/mL or counts.
    let values: Vec<f64> = match units {
        NmUnits::Bqml => activity.as_slice().iter().map(|&v| v as f64).collect(),
        NmUnits::Counts { cps_per_mbq } => {
            if !ok(cps_per_mbq) {
                return Err(file_err(path, "calibration factor must be > 0 cps/MBq"));
            }
            let f = vox_ml * 1e-6 * cps_per_mbq * acq.acquisition_s();
            activity.as_slice().iter().map(|&v| v as f64 * f).collect()
        }
    };
    if values.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(file_err(path, "values must be finite and >= 0"));
    }
    let max = values.iter().cloned().fold(0.0, f64::max);
    let slope = if max > 0.0 { max / 65535.0 } else { 1.0 };
    let slope: f64 = ds_str(slope).parse().unwrap_or(slope);
    let stored: Vec<u16> = values
        .iter()
        .map(|v| (v / slope).round().clamp(0.0, 65535.0) as u16)
        .collect();
    let series_uid = new_uid();
    let sop_uid = new_uid();
    let mut e = crate::case::common_slice_elems(
        g,
        ctx,
        "NM",
        NM_IMAGE_STORAGE,
        &series_uid,
        series_number,
        "glandseg SPECT",
    );
    let d = g.direction;
    let iop = [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]];
    let ipp = g.index_to_world([0.0, 0.0, 0.0]);
    let (acq_d, acq_t) = date_time_of(acq.acquisition_unix);
    let (inj_d, inj_t) = date_time_of(acq.injection_unix);
    let nk = g.shape[2];
    e.extend([
        s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
        s(
            tags::IMAGE_TYPE,
            VR::CS,
            "ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION",
        ),
        s(tags::ACQUISITION_DATE, VR::DA, acq_d.clone()),
        s(tags::ACQUISITION_TIME, VR::TM, acq_t.clone()),
        s(tags::SERIES_DATE, VR::DA, acq_d),
        s(tags::SERIES_TIME, VR::TM, acq_t),
        is(tags::INSTANCE_NUMBER, 1),
        is(tags::NUMBER_OF_FRAMES, nk as i64),
        DataElement::new(
            tags::FRAME_INCREMENT_POINTER,
            VR::AT,
            PrimitiveValue::Tags(C::from(vec![tags::SLICE_VECTOR])),
        ),
        us_multi(
            tags::SLICE_VECTOR,
            &(1..=nk).map(|k| k as u16).collect::<Vec<_>>(),
        ),
        us(tags::NUMBER_OF_SLICES, nk as u16),
        ds(tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]),
        ds(tags::IMAGE_POSITION_PATIENT, &ipp),
        ds(tags::RESCALE_INTERCEPT, &[0.0]),
        ds(tags::RESCALE_SLOPE, &[slope]),
        s(
            tags::UNITS,
            VR::CS,
            if units == NmUnits::Bqml {
                "BQML"
            } else {
                "CNTS"
            },
        ),
        s(tags::CORRECTED_IMAGE, VR::CS, "ATTN\\SCAT"),
        s(tags::PATIENT_POSITION, VR::CS, "HFS"),
        us(tags::NUMBER_OF_ENERGY_WINDOWS, 1),
        us(tags::NUMBER_OF_DETECTORS, 1),
        us(tags::NUMBER_OF_ROTATIONS, 1),
        sq(
            tags::ENERGY_WINDOW_INFORMATION_SEQUENCE,
            vec![obj(vec![
                sq(
                    tags::ENERGY_WINDOW_RANGE_SEQUENCE,
                    vec![obj(vec![
                        ds(tags::ENERGY_WINDOW_LOWER_LIMIT, &[acq.energy_window_kev[0]]),
                        ds(tags::ENERGY_WINDOW_UPPER_LIMIT, &[acq.energy_window_kev[1]]),
                    ])],
                ),
                s(tags::ENERGY_WINDOW_NAME, VR::SH, "PHOTOPEAK"),
            ])],
        ),
        sq(
            tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE,
            vec![obj(vec![
                s(
                    tags::RADIOPHARMACEUTICAL,
                    VR::LO,
                    acq.radiopharmaceutical.clone(),
                ),
                s(tags::RADIOPHARMACEUTICAL_START_TIME, VR::TM, inj_t.clone()),
                s(
                    tags::RADIOPHARMACEUTICAL_START_DATE_TIME,
                    VR::DT,
                    format!("{inj_d}{inj_t}"),
                ),
                // MBq in NM objects (PS3.3 C.8.4.10.1.7), Bq in PET objects.
                ds(tags::RADIONUCLIDE_TOTAL_DOSE, &[acq.injected_mbq]),
                ds(tags::RADIONUCLIDE_HALF_LIFE, &[acq.half_life_s]),
            ])],
        ),
        sq(
            tags::DETECTOR_INFORMATION_SEQUENCE,
            vec![obj(vec![
                ds(tags::IMAGE_POSITION_PATIENT, &ipp),
                ds(tags::IMAGE_ORIENTATION_PATIENT, &iop),
            ])],
        ),
        sq(
            tags::ROTATION_INFORMATION_SEQUENCE,
            vec![obj(vec![
                us(tags::NUMBER_OF_FRAMES_IN_ROTATION, acq.projections as u16),
                is(
                    tags::ACTUAL_FRAME_DURATION,
                    (acq.seconds_per_projection * 1000.0).round() as i64,
                ),
            ])],
        ),
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(C::from(stored)),
        ),
    ]);
    if units == NmUnits::Bqml {
        e.push(sq(
            tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE,
            vec![obj(vec![
                s(tags::LUT_EXPLANATION, VR::LO, "Bq/ml"),
                s(tags::LUT_LABEL, VR::SH, "BQML"),
                sq(
                    tags::MEASUREMENT_UNITS_CODE_SEQUENCE,
                    vec![code("Bq/ml", "UCUM", "becquerels/milliliter")],
                ),
                DataElement::new(
                    tags::REAL_WORLD_VALUE_FIRST_VALUE_MAPPED,
                    VR::US,
                    PrimitiveValue::from(0u16),
                ),
                DataElement::new(
                    tags::REAL_WORLD_VALUE_LAST_VALUE_MAPPED,
                    VR::US,
                    PrimitiveValue::from(65535u16),
                ),
                DataElement::new(
                    tags::REAL_WORLD_VALUE_INTERCEPT,
                    VR::FD,
                    PrimitiveValue::from(0.0f64),
                ),
                DataElement::new(
                    tags::REAL_WORLD_VALUE_SLOPE,
                    VR::FD,
                    PrimitiveValue::from(slope),
                ),
            ])],
        ));
    }
    let mut o: InMemDicomObject = obj(e);
    // NM Image Pixel module: unsigned.
    o.put(us(tags::PIXEL_REPRESENTATION, 0));
    write_file(o, path)?;
    Ok(sop_uid)
}

/// An activity image read from DICOM (NM or PET), in Bq/mL.
#[derive(Debug)]
pub struct ActivityImage {
    /// The file (NM) or first slice (PET) read.
    pub path: PathBuf,
    /// `NM` or `PT`.
    pub modality: String,
    /// Bq/mL (as stored: at the acquisition time unless `decay_correction` says otherwise).
    pub volume: Volume<f32>,
    /// Where the Bq/mL came from.
    pub units_source: String,
    /// Acquisition start, seconds (same clock as `injection_s`).
    pub acquisition_s: Option<f64>,
    /// Injection, seconds.
    pub injection_s: Option<f64>,
    /// Injected activity, MBq (converted from Bq for PET).
    pub injected_mbq: Option<f64>,
    /// Physical half-life from the header, s.
    pub half_life_s: Option<f64>,
    /// DecayCorrection (0054,1102): `NONE`, `START`, `ADMIN` or absent.
    pub decay_correction: Option<String>,
}

impl ActivityImage {
    /// Hours from the injection to the acquisition start; the error names the missing tag.
    pub fn hours_after_injection(&self) -> Result<f64, DicomError> {
        let inj = self.injection_s.ok_or_else(|| {
            file_err(
                &self.path,
                "no injection time: Radiopharmaceutical Information Sequence (0054,0016) > \
                 Radiopharmaceutical Start DateTime (0018,1078) or Start Time (0018,1072) is \
                 missing; give the time as HOURS=PATH",
            )
        })?;
        let acq = self.acquisition_s.ok_or_else(|| {
            file_err(
                &self.path,
                "no acquisition time: Acquisition Date/Time (0008,0022/0032) and Series \
                 Date/Time are missing; give the time as HOURS=PATH",
            )
        })?;
        let h = (acq - inj) / 3600.0;
        if !(h.is_finite() && h >= 0.0) {
            return Err(file_err(
                &self.path,
                format!("the acquisition is {h:.2} h after the injection (before it?)"),
            ));
        }
        Ok(h)
    }
}

fn date_time(o: &InMemDicomObject, date: dicom_core::Tag, time: dicom_core::Tag) -> Option<f64> {
    let d = crate::suv::parse_da(&get_str(o, date)?)?;
    let t = crate::suv::parse_tm(&get_str(o, time)?)?;
    Some(d as f64 * 86400.0 + t)
}

/// Acquisition and injection times, dose (MBq) and half-life of a header.
fn times(
    o: &InMemDicomObject,
    dose_in_bq: bool,
) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    let acq = date_time(o, tags::ACQUISITION_DATE, tags::ACQUISITION_TIME)
        .or_else(|| date_time(o, tags::SERIES_DATE, tags::SERIES_TIME));
    let acq_day = get_str(o, tags::ACQUISITION_DATE)
        .or_else(|| get_str(o, tags::SERIES_DATE))
        .and_then(|d| crate::suv::parse_da(&d));
    let rp = first_item(o, tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE);
    let inj = rp.and_then(|r| {
        get_str(r, tags::RADIOPHARMACEUTICAL_START_DATE_TIME)
            .and_then(|s| crate::suv::parse_dt(&s))
            .or_else(|| {
                let t = crate::suv::parse_tm(&get_str(r, tags::RADIOPHARMACEUTICAL_START_TIME)?)?;
                Some(acq_day? as f64 * 86400.0 + t)
            })
    });
    let dose = rp
        .and_then(|r| get_floats(r, tags::RADIONUCLIDE_TOTAL_DOSE))
        .and_then(|v| v.first().copied())
        .filter(|v| *v > 0.0)
        .map(|v| if dose_in_bq { v / 1e6 } else { v });
    let hl = rp
        .and_then(|r| get_floats(r, tags::RADIONUCLIDE_HALF_LIFE))
        .and_then(|v| v.first().copied())
        .filter(|v| *v > 0.0);
    (acq, inj, dose, hl)
}

/// Reads one NM multi-frame file as Bq/mL; `calibration_cps_per_mbq` turns counts into
/// activity (an error names it when the file holds counts and it is missing).
pub fn read_nm(
    path: &Path,
    calibration_cps_per_mbq: Option<f64>,
) -> Result<ActivityImage, DicomError> {
    let file = crate::read::open_full(path)?;
    let o: &InMemDicomObject = &file;
    let modality = get_str(o, tags::MODALITY).unwrap_or_default();
    if modality != "NM" {
        return Err(file_err(path, format!("Modality is {modality:?}, not NM")));
    }
    let det = first_item(o, tags::DETECTOR_INFORMATION_SEQUENCE);
    let ipp = det
        .and_then(|d| get_floats(d, tags::IMAGE_POSITION_PATIENT))
        .or_else(|| get_floats(o, tags::IMAGE_POSITION_PATIENT))
        .filter(|v| v.len() == 3)
        .ok_or_else(|| {
            file_err(
                path,
                "no ImagePositionPatient (0020,0032) in the Detector Information Sequence \
                 (0054,0022) or the data set",
            )
        })?;
    let iop = det
        .and_then(|d| get_floats(d, tags::IMAGE_ORIENTATION_PATIENT))
        .or_else(|| get_floats(o, tags::IMAGE_ORIENTATION_PATIENT))
        .filter(|v| v.len() == 6)
        .ok_or_else(|| file_err(path, "no ImageOrientationPatient (0020,0037)"))?;
    let ps = get_floats(o, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2 && v.iter().all(|x| *x > 0.0))
        .ok_or_else(|| file_err(path, "no PixelSpacing (0028,0030)"))?;
    let dz = get_floats(o, tags::SPACING_BETWEEN_SLICES)
        .or_else(|| get_floats(o, tags::SLICE_THICKNESS))
        .and_then(|v| v.first().copied())
        .filter(|v| *v > 0.0)
        .ok_or_else(|| {
            file_err(
                path,
                "no SpacingBetweenSlices (0018,0088) or SliceThickness (0018,0050)",
            )
        })?;
    let rows = get_int(o, tags::ROWS).filter(|v| *v > 0);
    let cols = get_int(o, tags::COLUMNS).filter(|v| *v > 0);
    let (Some(rows), Some(cols)) = (rows, cols) else {
        return Err(file_err(path, "no Rows/Columns (0028,0010/0011)"));
    };
    let frames = get_int(o, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let row = [iop[0], iop[1], iop[2]];
    let col = [iop[3], iop[4], iop[5]];
    let n = [
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    ];
    let geometry = Geometry {
        shape: [cols as usize, rows as usize, frames as usize],
        spacing: [ps[1], ps[0], dz],
        origin: [ipp[0], ipp[1], ipp[2]],
        direction: [
            [row[0], col[0], n[0]],
            [row[1], col[1], n[1]],
            [row[2], col[2], n[2]],
        ],
    };
    geometry
        .validate()
        .map_err(|e| file_err(path, e.to_string()))?;
    let decoded = glandseg_core::panics::quietly(|| file.decode_pixel_data())
        .map_err(|e| file_err(path, format!("cannot decode the pixel data: {e}")))?
        .map_err(|e| file_err(path, format!("cannot decode the pixel data: {e}")))?;
    let stored: Vec<f64> = glandseg_core::panics::quietly(|| {
        decoded
            .to_vec_with_options(&ConvertOptions::new().with_modality_lut(ModalityLutOption::None))
    })
    .map_err(|e| file_err(path, format!("cannot convert the pixel data: {e}")))?
    .map_err(|e| file_err(path, format!("cannot convert the pixel data: {e}")))?;
    if stored.len() != geometry.num_voxels() {
        return Err(file_err(
            path,
            format!(
                "{} pixels decoded, {} expected from Rows x Columns x NumberOfFrames",
                stored.len(),
                geometry.num_voxels()
            ),
        ));
    }
    let rescale = |tag, default| {
        get_floats(o, tag)
            .and_then(|v| v.first().copied())
            .unwrap_or(default)
    };
    let (slope, inter) = (
        rescale(tags::RESCALE_SLOPE, 1.0),
        rescale(tags::RESCALE_INTERCEPT, 0.0),
    );
    // 1. Real World Value Mapping to Bq/ml.
    let rwvm = get_items(o, tags::REAL_WORLD_VALUE_MAPPING_SEQUENCE)
        .unwrap_or(&[])
        .iter()
        .find(|item| {
            first_item(item, tags::MEASUREMENT_UNITS_CODE_SEQUENCE)
                .and_then(|c| get_str(c, tags::CODE_VALUE))
                .is_some_and(|v| v.eq_ignore_ascii_case("Bq/ml"))
        });
    let units = get_str(o, tags::UNITS).unwrap_or_default();
    let (values, units_source): (Vec<f64>, String) = if let Some(item) = rwvm {
        let s = get_floats(item, tags::REAL_WORLD_VALUE_SLOPE)
            .and_then(|v| v.first().copied())
            .ok_or_else(|| {
                file_err(
                    path,
                    "Real World Value Mapping without RealWorldValueSlope (0040,9225)",
                )
            })?;
        let i = get_floats(item, tags::REAL_WORLD_VALUE_INTERCEPT)
            .and_then(|v| v.first().copied())
            .unwrap_or(0.0);
        (
            stored.iter().map(|v| v * s + i).collect(),
            "Real World Value Mapping (Bq/ml)".into(),
        )
    } else if units.eq_ignore_ascii_case("BQML") {
        (
            stored.iter().map(|v| v * slope + inter).collect(),
            "Units (0054,1001) BQML".into(),
        )
    } else {
        let Some(c) = calibration_cps_per_mbq else {
            return Err(file_err(
                path,
                format!(
                    "the image holds counts (Units {:?}, no Real World Value Mapping to Bq/ml): \
                     give the system's calibration factor with --calibration-cps-per-mbq",
                    units
                ),
            ));
        };
        let rot = first_item(o, tags::ROTATION_INFORMATION_SEQUENCE);
        let per = rot
            .and_then(|r| get_floats(r, tags::ACTUAL_FRAME_DURATION))
            .and_then(|v| v.first().copied());
        let nproj = rot.and_then(|r| get_int(r, tags::NUMBER_OF_FRAMES_IN_ROTATION));
        let (Some(per), Some(nproj)) = (per, nproj) else {
            return Err(file_err(
                path,
                "counts need the acquisition time: Rotation Information Sequence (0054,0052) > \
                 ActualFrameDuration (0018,1242) and NumberOfFramesInRotation (0054,0053)",
            ));
        };
        let t_acq = per / 1000.0 * nproj as f64;
        if !(c.is_finite() && c > 0.0 && t_acq > 0.0) {
            return Err(file_err(
                path,
                format!("calibration {c} cps/MBq and acquisition time {t_acq} s must be > 0"),
            ));
        }
        let f = 1e6 / (c * t_acq * geometry.voxel_volume_ml());
        (
            stored.iter().map(|v| (v * slope + inter) * f).collect(),
            format!("counts / ({c} cps/MBq x {t_acq} s)"),
        )
    };
    let (acquisition_s, injection_s, injected_mbq, half_life_s) = times(o, false);
    let volume = Volume::from_vec(geometry, values.into_iter().map(|v| v as f32).collect())
        .map_err(|e| file_err(path, e.to_string()))?;
    Ok(ActivityImage {
        path: path.to_path_buf(),
        modality,
        volume,
        units_source,
        acquisition_s,
        injection_s,
        injected_mbq,
        half_life_s,
        decay_correction: get_str(o, tags::DECAY_CORRECTION),
    })
}

/// Reads a quantitative activity image from DICOM: a file or a folder holding one NM
/// multi-frame image, or one PET series (Units BQML). MBq for the injected activity either
/// way (NM stores MBq, PET Bq).
pub fn read_activity_image(
    path: &Path,
    calibration_cps_per_mbq: Option<f64>,
) -> Result<ActivityImage, DicomError> {
    let is_nm = |p: &Path| {
        crate::read::open_header(p)
            .ok()
            .and_then(|f| get_str(&f, tags::MODALITY))
            .is_some_and(|m| m == "NM")
    };
    if path.is_file() && is_nm(path) {
        return read_nm(path, calibration_cps_per_mbq);
    }
    let scan = crate::series::scan_folder(path)?;
    // NM files without a top-level ImagePositionPatient are skipped by the scan: look
    // at those too.
    let nm_skipped: Vec<&PathBuf> = scan
        .skipped
        .iter()
        .map(|(p, _)| p)
        .filter(|p| is_nm(p))
        .collect();
    let nm: Vec<&crate::SeriesInfo> = scan.series.iter().filter(|s| s.modality == "NM").collect();
    if nm.is_empty() && nm_skipped.len() == 1 && scan.series.iter().all(|s| s.modality != "PT") {
        return read_nm(nm_skipped[0], calibration_cps_per_mbq);
    }
    let pt: Vec<&crate::SeriesInfo> = scan.series.iter().filter(|s| s.modality == "PT").collect();
    match (nm.as_slice(), pt.as_slice()) {
        ([one], []) if one.slices.len() == 1 => {
            read_nm(&one.slices[0].path, calibration_cps_per_mbq)
        }
        ([], [one]) => {
            let loaded = crate::series::load_series(one)?;
            let first = &loaded.sorted[0].path;
            let file = crate::read::open_header(first)?;
            let o: &InMemDicomObject = &file;
            let units = get_str(o, tags::UNITS).unwrap_or_default();
            if !units.eq_ignore_ascii_case("BQML") {
                return Err(file_err(
                    first,
                    format!("PET Units (0054,1001) is {units:?}: only BQML is read as activity"),
                ));
            }
            let (acquisition_s, injection_s, injected_mbq, half_life_s) = times(o, true);
            Ok(ActivityImage {
                path: first.clone(),
                modality: "PT".into(),
                volume: loaded.volume,
                units_source: "Units (0054,1001) BQML".into(),
                acquisition_s,
                injection_s,
                injected_mbq,
                half_life_s,
                decay_correction: get_str(o, tags::DECAY_CORRECTION),
            })
        }
        _ => Err(file_err(
            path,
            format!(
                "expected one NM image or one PET series, found {} NM and {} PET series \
                 ({} other series, {} files skipped)",
                nm.len(),
                pt.len(),
                scan.series.len() - nm.len() - pt.len(),
                scan.skipped.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{PatientMeta, StudyContext};

    fn image() -> Volume<f32> {
        let g = Geometry::new([12, 10, 8], [4.8, 4.8, 4.8], [-20.0, -30.0, 15.0]);
        let data = (0..g.num_voxels())
            .map(|v| 1000.0 + 37.0 * (v % 97) as f32)
            .collect();
        Volume::from_vec(g, data).unwrap()
    }

    fn acq() -> NmAcquisition {
        NmAcquisition {
            acquisition_unix: 1_767_268_800.0 + 24.0 * 3600.0 + 90.0,
            injection_unix: 1_767_268_800.0,
            injected_mbq: 7400.0,
            half_life_s: 6.647 * 86400.0,
            radiopharmaceutical: "Lu-177 PSMA".into(),
            projections: 60,
            seconds_per_projection: 30.0,
            energy_window_kev: [187.2, 228.8],
        }
    }

    /// Bq/mL (RWVM + BQML) and counts with a calibration factor both read back as the
    /// written Bq/mL on the written grid, 24.025 h after the injection, 7400 MBq.
    #[test]
    fn nm_round_trip_in_bqml_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let img = image();
        let ctx = StudyContext::new(&PatientMeta::default());
        let max = img.as_slice().iter().cloned().fold(0f32, f32::max);
        for (units, cal) in [
            (NmUnits::Bqml, None),
            (NmUnits::Counts { cps_per_mbq: 9.3 }, Some(9.3)),
        ] {
            let p = dir
                .path()
                .join(format!("{units:?}.dcm").replace([' ', '{', '}', ':'], ""));
            write_nm(&p, &img, &ctx, &acq(), units, 5).unwrap();
            let back = read_activity_image(&p, cal).unwrap();
            assert_eq!(back.modality, "NM");
            assert!(back.volume.geometry().same_grid(img.geometry(), 1e-4));
            for (a, b) in back.volume.as_slice().iter().zip(img.as_slice()) {
                assert!((a - b).abs() <= max / 60000.0, "{units:?}: {a} vs {b}");
            }
            let h = back.hours_after_injection().unwrap();
            assert!((h - 24.025).abs() < 1e-6, "{h}");
            assert_eq!(back.injected_mbq, Some(7400.0));
            assert!((back.half_life_s.unwrap() - 6.647 * 86400.0).abs() < 1e-6);
            if cal.is_some() {
                assert!(
                    back.units_source.contains("counts"),
                    "{}",
                    back.units_source
                );
                // Counts without the factor: an error naming the option.
                let e = read_activity_image(&p, None).unwrap_err().to_string();
                assert!(e.contains("--calibration-cps-per-mbq"), "{e}");
            } else {
                assert!(back.units_source.contains("Real World Value Mapping"));
            }
        }
    }

    /// No injection time in the header: the error names the tag and the way out.
    #[test]
    fn missing_injection_time_names_the_tag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nm.dcm");
        let ctx = StudyContext::new(&PatientMeta::default());
        write_nm(&p, &image(), &ctx, &acq(), NmUnits::Bqml, 5).unwrap();
        let mut f = crate::read::open_full(&p).unwrap();
        f.remove_element(tags::RADIOPHARMACEUTICAL_INFORMATION_SEQUENCE);
        f.write_to_file(&p).unwrap();
        let img = read_activity_image(&p, None).unwrap();
        assert_eq!(img.injected_mbq, None);
        let e = img.hours_after_injection().unwrap_err().to_string();
        assert!(e.contains("(0018,1078)") && e.contains("HOURS=PATH"), "{e}");
    }
}
