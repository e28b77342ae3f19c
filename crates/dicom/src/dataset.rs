//! Shared pieces of the DICOM writers and readers: element constructors, UIDs, dates,
//! DS formatting, the in-memory encoding, and [`SourceSeries`] (what a derived object —
//! SEG, RTSTRUCT — needs to know about the CT it was made from).
//!
//! Everything is written as Explicit VR Little Endian: every DICOM toolkit reads it, and it
//! is the only transfer syntax in which a 1-bit SEG's pixel data is unambiguous.

use crate::series::{text, DicomError, LoadedSeries};
use dicom_core::value::{DataSetSequence, C};
use dicom_core::{DataElement, Length, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use std::path::Path;

pub(crate) const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub(crate) const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub(crate) const PET_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.128";
pub(crate) const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
pub(crate) const RT_STRUCTURE_SET_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.481.3";
/// Implementation Class UID of the files glandseg writes (a 2.25 UUID-derived root, so no
/// registered organisation root is needed).
pub(crate) const IMPLEMENTATION_CLASS_UID: &str = "2.25.301873346473419861262049718322905651853";
pub(crate) const IMPLEMENTATION_VERSION: &str = concat!("GLANDSEG_", env!("CARGO_PKG_VERSION"));
/// Manufacturer / software of every object glandseg writes.
pub(crate) const MANUFACTURER: &str = "glandseg";
pub(crate) const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A fresh UID: `2.25.` + a random 128-bit integer in decimal (ITU-T X.667 / DICOM PS3.5
/// B.2), so glandseg needs no registered root and two runs never collide.
pub fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// Patient and study attributes a derived object must share with its source images, so
/// that a PACS files it under the same patient and study.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct PatientStudy {
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_date: String,
    pub study_time: String,
    pub study_id: String,
    pub accession_number: String,
    pub referring_physician_name: String,
}

/// The image series a SEG or RTSTRUCT was derived from. With it, the derived object joins
/// the source's study and frame of reference and references each source slice, which is
/// what lets a viewer overlay it on the CT; without it, new UIDs are generated and the
/// object stands alone.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SourceSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// SOP Class UID of the slices (CT Image Storage for a CT).
    pub sop_class_uid: String,
    /// SOPInstanceUID of slice `k` of the grid, in `k` order.
    pub sop_instance_uids: Vec<String>,
    pub patient: PatientStudy,
}

impl SourceSeries {
    /// Reads the UIDs and the patient/study module from a loaded series (its first slice
    /// file is opened again for the attributes that [`LoadedSeries`] does not keep).
    pub fn from_loaded(series: &LoadedSeries) -> Result<Self, DicomError> {
        let first = series.sorted.first().ok_or_else(|| DicomError::Series {
            uid: series.info.series_instance_uid.clone(),
            description: series.info.description.clone(),
            msg: "has no slices".into(),
        })?;
        let obj = crate::read::open_header(&first.path)?;
        let t = |tag| text(&obj, tag).unwrap_or_default();
        let sop_class_uid = text(&obj, tags::SOP_CLASS_UID)
            .ok_or_else(|| file_err(&first.path, "SOPClassUID (0008,0016) is missing"))?;
        let uids: Vec<String> = series
            .sorted
            .iter()
            .map(|s| s.sop_instance_uid.clone())
            .collect();
        if let Some(s) = series.sorted.iter().find(|s| s.sop_instance_uid.is_empty()) {
            return Err(file_err(&s.path, "SOPInstanceUID (0008,0018) is missing"));
        }
        Ok(SourceSeries {
            study_instance_uid: series.info.study_instance_uid.clone(),
            series_instance_uid: series.info.series_instance_uid.clone(),
            frame_of_reference_uid: series.info.frame_of_reference_uid.clone(),
            sop_class_uid,
            sop_instance_uids: uids,
            patient: PatientStudy {
                patient_name: t(tags::PATIENT_NAME),
                patient_id: t(tags::PATIENT_ID),
                patient_birth_date: t(tags::PATIENT_BIRTH_DATE),
                patient_sex: t(tags::PATIENT_SEX),
                study_date: t(tags::STUDY_DATE),
                study_time: t(tags::STUDY_TIME),
                study_id: t(tags::STUDY_ID),
                accession_number: t(tags::ACCESSION_NUMBER),
                referring_physician_name: t(tags::REFERRING_PHYSICIAN_NAME),
            },
        })
    }
}

pub(crate) fn file_err(path: &Path, msg: impl Into<String>) -> DicomError {
    DicomError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

pub(crate) type Elem = DataElement<InMemDicomObject>;

/// A string element; multi-valued strings are passed already joined with `\`.
pub(crate) fn s(tag: Tag, vr: VR, value: impl Into<String>) -> Elem {
    DataElement::new(tag, vr, PrimitiveValue::from(value.into()))
}

pub(crate) fn us(tag: Tag, v: u16) -> Elem {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

pub(crate) fn us_multi(tag: Tag, v: &[u16]) -> Elem {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(C::from(v.to_vec())))
}

pub(crate) fn ul_multi(tag: Tag, v: &[u32]) -> Elem {
    DataElement::new(tag, VR::UL, PrimitiveValue::U32(C::from(v.to_vec())))
}

/// DS from numbers (each formatted to fit DS's 16 characters).
pub(crate) fn ds(tag: Tag, v: &[f64]) -> Elem {
    let joined: Vec<String> = v.iter().map(|x| ds_str(*x)).collect();
    s(tag, VR::DS, joined.join("\\"))
}

pub(crate) fn is(tag: Tag, v: i64) -> Elem {
    s(tag, VR::IS, v.to_string())
}

pub(crate) fn sq(tag: Tag, items: Vec<InMemDicomObject>) -> Elem {
    DataElement::new(tag, VR::SQ, DataSetSequence::new(items, Length::UNDEFINED))
}

pub(crate) fn obj(elems: Vec<Elem>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elems)
}

/// A Code Sequence item (CodeValue, CodingSchemeDesignator, CodeMeaning).
pub(crate) fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    obj(vec![
        s(tags::CODE_VALUE, VR::SH, value),
        s(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        s(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A decimal string of at most 16 characters (DS's limit) that reads back as close to `x`
/// as 16 characters allow: Rust's shortest round-trip form when it fits, otherwise fewer
/// decimals.
pub(crate) fn ds_str(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return "0".into();
    }
    let plain = format!("{x}");
    if plain.len() <= 16 {
        return plain;
    }
    for decimals in (0..=15).rev() {
        let s = format!("{x:.decimals$}");
        if s.len() <= 16 {
            let s = if s.contains('.') {
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                s
            };
            return if s == "-0" { "0".into() } else { s };
        }
    }
    format!("{x:.6e}")
}

/// `(YYYYMMDD, HHMMSS.ffffff)` of a Unix time in UTC: files carry the time they were made
/// (ContentDate/Time) without needing a date-time crate.
pub(crate) fn date_time_of(unix_s: f64) -> (String, String) {
    let days = (unix_s / 86400.0).floor() as i64;
    let secs = unix_s - days as f64 * 86400.0;
    // Howard Hinnant's civil_from_days.
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let whole = secs.floor() as i64;
    let micro = ((secs - whole as f64) * 1e6).round().min(999_999.0) as i64;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!(
            "{:02}{:02}{:02}.{micro:06}",
            whole / 3600,
            (whole / 60) % 60,
            whole % 60
        ),
    )
}

pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Patient, General Study and Patient Study attributes: from the source when known
/// (a derived object must share them), otherwise the given fallback values.
pub(crate) fn patient_study_elems(p: &PatientStudy, study_uid: &str) -> Vec<Elem> {
    vec![
        s(tags::PATIENT_NAME, VR::PN, p.patient_name.clone()),
        s(tags::PATIENT_ID, VR::LO, p.patient_id.clone()),
        s(
            tags::PATIENT_BIRTH_DATE,
            VR::DA,
            p.patient_birth_date.clone(),
        ),
        s(tags::PATIENT_SEX, VR::CS, p.patient_sex.clone()),
        s(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        s(tags::STUDY_DATE, VR::DA, p.study_date.clone()),
        s(tags::STUDY_TIME, VR::TM, p.study_time.clone()),
        s(tags::STUDY_ID, VR::SH, p.study_id.clone()),
        s(tags::ACCESSION_NUMBER, VR::SH, p.accession_number.clone()),
        s(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            p.referring_physician_name.clone(),
        ),
    ]
}

/// General Equipment attributes of everything glandseg writes.
pub(crate) fn equipment_elems() -> Vec<Elem> {
    vec![
        s(tags::MANUFACTURER, VR::LO, MANUFACTURER),
        s(tags::MANUFACTURER_MODEL_NAME, VR::LO, "glandseg"),
        s(tags::DEVICE_SERIAL_NUMBER, VR::LO, "0"),
        s(tags::SOFTWARE_VERSIONS, VR::LO, SOFTWARE_VERSION),
    ]
}

/// The whole file (preamble, meta group, data set) as Explicit VR Little Endian bytes, so
/// the caller can write it atomically.
pub(crate) fn encode(dataset: InMemDicomObject, out: &Path) -> Result<Vec<u8>, DicomError> {
    let file = dataset
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(EXPLICIT_VR_LE)
                .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
                .implementation_version_name(IMPLEMENTATION_VERSION),
        )
        .map_err(|e| file_err(out, format!("cannot build the file meta group: {e}")))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| file_err(out, format!("cannot encode the data set: {e}")))?;
    Ok(bytes)
}

/// Encodes and writes atomically (a crash leaves the old file or none, never half a file).
pub(crate) fn write_file(dataset: InMemDicomObject, out: &Path) -> Result<(), DicomError> {
    let bytes = encode(dataset, out)?;
    glandseg_core::atomic::write_bytes(out, &bytes).map_err(|e| file_err(out, e.to_string()))
}

// ----- reading helpers over any data set or sequence item -----

pub(crate) fn get_str(o: &InMemDicomObject, tag: Tag) -> Option<String> {
    o.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(crate) fn get_floats(o: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    o.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
        .filter(|v| v.iter().all(|x| x.is_finite()))
}

pub(crate) fn get_ints(o: &InMemDicomObject, tag: Tag) -> Option<Vec<i64>> {
    o.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_int::<i64>().ok())
}

pub(crate) fn get_int(o: &InMemDicomObject, tag: Tag) -> Option<i64> {
    get_ints(o, tag).and_then(|v| v.first().copied())
}

pub(crate) fn get_items(o: &InMemDicomObject, tag: Tag) -> Option<&[InMemDicomObject]> {
    o.element_opt(tag).ok().flatten().and_then(|e| e.items())
}

pub(crate) fn first_item(o: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    get_items(o, tag).and_then(|i| i.first())
}

/// Opens a whole file, with an error that names it.
pub(crate) fn open(path: &Path) -> Result<dicom_object::DefaultDicomObject, DicomError> {
    crate::read::open_full(path)
}

/// An error and all its sources: dicom-rs puts the element and offset where parsing
/// stopped in the inner errors, which is what a user needs to see for a truncated file.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// UIDs, creation date/time and patient/study module of a new derived object (SEG,
/// RTSTRUCT): in the source's study and frame of reference when the source is known, in a
/// new study otherwise.
pub(crate) struct DerivedIdentity {
    pub study_uid: String,
    pub for_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    pub date: String,
    pub time: String,
    pub patient: PatientStudy,
}

pub(crate) fn derived_identity(source: Option<&SourceSeries>) -> DerivedIdentity {
    let study_uid = source
        .map(|s| s.study_instance_uid.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(new_uid);
    let for_uid = source
        .map(|s| s.frame_of_reference_uid.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(new_uid);
    let (date, time) = date_time_of(now_unix());
    let mut patient = source.map(|s| s.patient.clone()).unwrap_or_default();
    if source.is_none() {
        patient.study_date = date.clone();
        patient.study_time = time.clone();
        patient.study_id = "1".into();
    }
    DerivedIdentity {
        study_uid,
        for_uid,
        series_uid: new_uid(),
        sop_uid: new_uid(),
        date,
        time,
        patient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_16_chars() {
        for x in [
            0.1 + 0.2,
            -235.2,
            -1234.567890123456,
            1e-12,
            123456789.12345679,
            -0.000001234567891,
        ] {
            let s = ds_str(x);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - x).abs() <= 1e-9 * x.abs().max(1.0), "{x} -> {s}");
        }
        assert_eq!(ds_str(-235.2), "-235.2");
    }

    #[test]
    fn dates() {
        assert_eq!(
            date_time_of(0.0),
            ("19700101".to_string(), "000000.000000".to_string())
        );
        assert_eq!(date_time_of(951_782_400.0 + 3661.5).0, "20000229");
        assert_eq!(date_time_of(951_782_400.0 + 3661.5).1, "010101.500000");
    }

    #[test]
    fn uids_are_valid() {
        let u = new_uid();
        assert!(u.len() <= 64 && u.starts_with("2.25."));
        assert_ne!(u, new_uid());
    }
}
