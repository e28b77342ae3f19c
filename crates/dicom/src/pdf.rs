//! The per-gland table as a DICOM **Encapsulated PDF** (SOP class 1.2.840.10008.5.1.4.1.1.104.1)
//! in the source CT's study, so that a PACS viewer shows it next to the images.
//!
//! Why a PDF and not a TID 1500 Structured Report: every PACS and viewer we know of
//! (Orthanc Explorer, OHIF, Weasis, vendor workstations) opens an Encapsulated PDF as a
//! page a person reads, while a TID 1500 measurement report is rendered — if at all — as a
//! nested tree of content items that few viewers lay out as a table. The numbers stay
//! machine-readable where they belong: in the DICOM-SEG (the masks) and in the
//! `stats.json` that `glandseg predict` writes beside it.
//!
//! The PDF itself is written here (PDF 1.4, one Courier text object per page, no fonts
//! embedded: Courier is one of the 14 standard fonts every PDF reader has), so no PDF
//! library is needed.

use crate::dataset::{
    date_time_of, encode, equipment_elems, file_err, is, now_unix, patient_study_elems, s,
    PatientStudy,
};
use crate::seg::Written;
use crate::series::DicomError;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use std::path::Path;

/// SOP Class UID of Encapsulated PDF Storage.
pub const ENCAPSULATED_PDF_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.104.1";

/// Lines per PDF page (Courier 9 pt on A4 with 40 pt margins).
const LINES_PER_PAGE: usize = 70;

/// Escapes a line for a PDF string literal; characters outside printable ASCII become `?`
/// (the standard fonts' encoding is not Unicode).
fn pdf_escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\\' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// A PDF document of monospaced text lines (A4 pages, Courier 9 pt; the first line in
/// bold as the title).
pub fn text_pdf(lines: &[String]) -> Vec<u8> {
    let pages: Vec<&[String]> = if lines.is_empty() {
        vec![&[][..]]
    } else {
        lines.chunks(LINES_PER_PAGE).collect()
    };
    let n = pages.len();
    // Objects: 1 catalog, 2 pages, 3 font, 4 bold font, then per page: page, content.
    let mut objects: Vec<Vec<u8>> = Vec::new();
    let kids: Vec<String> = (0..n).map(|p| format!("{} 0 R", 5 + 2 * p)).collect();
    objects.push(b"<< /Type /Catalog /Pages 2 0 R >>".to_vec());
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")).into_bytes());
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>".to_vec());
    objects.push(b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier-Bold >>".to_vec());
    for (p, page) in pages.iter().enumerate() {
        let mut content = String::from("BT\n11 TL\n40 800 Td\n");
        for (i, line) in page.iter().enumerate() {
            let font = if p == 0 && i == 0 { "/F2" } else { "/F1" };
            content.push_str(&format!("{font} 9 Tf\n({}) Tj T*\n", pdf_escape(line)));
        }
        content.push_str("ET\n");
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents {} 0 R >>",
                6 + 2 * p
            )
            .into_bytes(),
        );
        let mut stream = format!("<< /Length {} >>\nstream\n", content.len()).into_bytes();
        stream.extend_from_slice(content.as_bytes());
        stream.extend_from_slice(b"endstream");
        objects.push(stream);
    }
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(o);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// Options of [`write_encapsulated_pdf`].
#[derive(Clone, Debug)]
pub struct PdfOptions {
    /// DocumentTitle (0042,0010) and SeriesDescription.
    pub title: String,
    /// SeriesNumber of the new series.
    pub series_number: i64,
}

impl Default for PdfOptions {
    fn default() -> Self {
        PdfOptions {
            title: "glandseg gland uptake".into(),
            series_number: 9903,
        }
    }
}

/// The patient/study module and StudyInstanceUID of a DICOM file (e.g. a source CT slice),
/// for a document filed beside it.
pub fn patient_study_of(path: &Path) -> Result<(PatientStudy, String), DicomError> {
    use crate::series::text;
    let obj = crate::read::open_header(path)?;
    let t = |tag| text(&obj, tag).unwrap_or_default();
    let study = text(&obj, tags::STUDY_INSTANCE_UID)
        .ok_or_else(|| file_err(path, "StudyInstanceUID (0020,000D) is missing"))?;
    Ok((
        PatientStudy {
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
        study,
    ))
}

/// Writes `pdf` (a whole PDF document) as an Encapsulated PDF instance in study
/// `study_uid` of `patient`, atomically.
pub fn write_encapsulated_pdf(
    out: &Path,
    pdf: &[u8],
    patient: &PatientStudy,
    study_uid: &str,
    opts: &PdfOptions,
) -> Result<Written, DicomError> {
    if !pdf.starts_with(b"%PDF-") {
        return Err(file_err(out, "the document to encapsulate is not a PDF"));
    }
    let (date, time) = date_time_of(now_unix());
    let series_uid = crate::new_uid();
    let sop_uid = crate::new_uid();
    // OB of even length: PS3.3 A.45.1 pads the document with one NUL byte.
    let mut doc = pdf.to_vec();
    if doc.len() % 2 == 1 {
        doc.push(0);
    }
    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, ENCAPSULATED_PDF_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
        s(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
        s(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
        s(tags::MODALITY, VR::CS, "DOC"),
        s(tags::SERIES_DESCRIPTION, VR::LO, opts.title.clone()),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
        is(tags::SERIES_NUMBER, opts.series_number),
        is(tags::INSTANCE_NUMBER, 1),
        s(tags::CONTENT_DATE, VR::DA, date.clone()),
        s(tags::CONTENT_TIME, VR::TM, time),
        s(tags::ACQUISITION_DATE_TIME, VR::DT, ""),
        s(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        s(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
        s(tags::DOCUMENT_TITLE, VR::ST, opts.title.clone()),
        s(
            tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT,
            VR::LO,
            "application/pdf",
        ),
        DataElement::new(
            tags::ENCAPSULATED_DOCUMENT,
            VR::OB,
            PrimitiveValue::from(doc),
        ),
    ];
    e.push(DataElement::new(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::new(
            Vec::<dicom_object::InMemDicomObject>::new(),
            dicom_core::Length::UNDEFINED,
        ),
    ));
    e.extend(patient_study_elems(patient, study_uid));
    e.extend(equipment_elems());
    let bytes = encode(dicom_object::InMemDicomObject::from_element_iter(e), out)?;
    glandseg_core::atomic::write_bytes(out, &bytes).map_err(|e| file_err(out, e.to_string()))?;
    Ok(Written {
        path: out.to_path_buf(),
        sop_instance_uid: sop_uid,
        series_instance_uid: series_uid,
        study_instance_uid: study_uid.to_string(),
        frame_of_reference_uid: String::new(),
        items: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_has_a_valid_xref() {
        let lines: Vec<String> = (0..150).map(|i| format!("line (x) {i} \\ é")).collect();
        let pdf = text_pdf(&lines);
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.starts_with("%PDF-1.4"));
        assert!(text.contains("/Count 3"), "three pages");
        assert!(text.contains("(line \\(x\\) 0 \\\\ ?) Tj"));
        // Each xref offset points at its object (offsets in bytes: the binary comment
        // line is not UTF-8).
        let find = |needle: &[u8]| {
            pdf.windows(needle.len())
                .rposition(|w| w == needle)
                .unwrap()
        };
        let tail = &pdf[find(b"startxref\n") + 10..];
        let digits: String = tail
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        let start: usize = digits.parse().unwrap();
        assert!(pdf[start..].starts_with(b"xref\n"));
        let xref = String::from_utf8(pdf[start..].to_vec()).unwrap();
        for (i, line) in xref.lines().skip(3).take(4 + 6).enumerate() {
            let off: usize = line[..10].parse().unwrap();
            assert!(
                pdf[off..].starts_with(format!("{} 0 obj", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
    }
}
