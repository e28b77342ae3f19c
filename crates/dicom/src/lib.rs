//! DICOM in and out.
//!
//! **In**: scan a folder tree from a scanner or PACS, group files into series, and load
//! a series as a [`Volume`](glandseg_core::Volume) with its LPS geometry derived from the
//! slices' positions ([`scan_folder`], [`load_series`]; PET to SUV with [`suv`]).
//! Slices are ordered along the slice normal (row cosine x column cosine) by the
//! projection of ImagePositionPatient — never by InstanceNumber, which scanners number in
//! either direction — and the slice step comes from those positions, not from
//! SliceThickness (a 3 mm slice is often reconstructed every 2 mm).
//!
//! **Out** (every file written atomically, Explicit VR Little Endian):
//!
//! - [`write_seg`]`(out, &labels, &map, Option<&SourceSeries>, &SegOptions) -> Result<Written>`:
//!   a BINARY DICOM-SEG, one SNOMED-coded segment per foreground label ([`coding_for`]).
//!   [`read_seg`]`(path) -> Result<SegFile>` reads ours and third-party SEGs;
//!   [`SegFile::labels_on`] puts the labels back on the CT grid with the map's values.
//! - [`write_rtstruct`]`(out, &labels, &map, Option<&SourceSeries>, &RtStructOptions) -> Result<Written>`:
//!   closed planar contours tracing the voxel outlines (lossless under even-odd filling).
//!   [`read_rtstruct`]`(path, &grid) -> Result<Vec<RoiMask>>` fills them on a grid;
//!   [`read_rtstruct_contours`] gives the raw contours.
//! - [`write_case_dicom`]`(out_dir, &ct, &pet_suv, &labels, &map, &PatientMeta) -> Result<CaseDicom>`:
//!   CT series (`CT/`), PET series in Bq/mL whose header gives back the SUVs (`PT/`),
//!   `seg.dcm` and `rtstruct.dcm` referencing the CT. The pieces are public too:
//!   [`write_ct_series`], [`write_pet_series`] with a [`StudyContext`].
//! - [`write_nm`]`(path, &activity_bqml, &StudyContext, &NmAcquisition, NmUnits, series)`:
//!   quantitative SPECT as one NM multi-frame file (Bq/mL with a Real World Value Mapping,
//!   or counts); [`read_activity_image`] reads NM (RWVM, BQML or counts with a
//!   calibration factor) or a PET series back as Bq/mL with the acquisition and injection
//!   times and the injected MBq (see [`nm`]).
//! - [`write_rtdose`]`(path, &dose_gy, Option<&SourceSeries>, description)`: a dose map as
//!   RTDOSE (Gy, Dose Grid Scaling, GridFrameOffsetVector) in the CT's frame of reference.
//! - [`SourceSeries::from_loaded`] turns a loaded CT series into the references a SEG or
//!   RTSTRUCT needs (study, frame of reference, per-slice SOP Instance UIDs, patient).
//!
//! **Conversion for training** ([`convert`]):
//!
//! - [`convert_studies`]`(input, &NameMapping, out, progress) -> Result<ConvertSummary>`:
//!   a folder of studies (CT + PET in one frame of reference + a SEG or RTSTRUCT
//!   referencing it) becomes an nnU-Net raw dataset: `imagesTr/CASE_0000.nii.gz` (CT, int16
//!   HU), `imagesTr/CASE_0001.nii.gz` (PET in SUVbw, trilinear onto the CT grid),
//!   `labelsTr/CASE.nii.gz` (u8 on the CT grid), `dataset.json`, plus `conversion.json`
//!   (the summary). Case ids are `PatientID_xxxxxx` (hash of the StudyInstanceUID),
//!   sanitised to `[A-Za-z0-9_-]`. Studies missing a piece are skipped with the reason;
//!   unmapped structure names and overlapping voxels (later structure wins) are reported.
//! - [`NameMapping`] maps clinical segment / ROI names (case and punctuation ignored,
//!   [`normalise_name`]) to the label map's names: [`NameMapping::default`] knows TG-263
//!   (`Parotid_L`, `Glnd_Submand_R`, `Glnd_Lacrimal_L`) and free-text spellings ("parotid
//!   left", "Left Parotid", "Lt parotid gland"); [`NameMapping::from_json_file`] reads
//!   `{"labels": {"background": 0, ...}, "names": {"Parotid_L": "parotid_left", ...}}`.
//!
//! Every function that reads or writes a file returns a [`DicomError`] naming the file
//! and the attribute at fault; none panics on bad input.

pub mod case;
pub mod convert;
pub mod dataset;
pub mod describe;
pub mod nm;
pub mod pdf;
mod read;
pub mod rtdose;
pub mod rtstruct;
pub mod seg;
pub mod series;
pub mod study;
pub mod suv;

pub use case::{
    write_case_dicom, write_ct_series, write_pet_series, CaseDicom, PatientMeta, StudyContext,
};
pub use convert::{
    convert_studies, normalise_name, ConvertSummary, ConvertedCase, NameMapping, SegmentationKind,
    SkippedStudy,
};
pub use dataset::{new_uid, PatientStudy, SourceSeries};
pub use nm::{read_activity_image, read_nm, write_nm, ActivityImage, NmAcquisition, NmUnits};
pub use pdf::{patient_study_of, text_pdf, write_encapsulated_pdf, PdfOptions};
pub use rtdose::{write_rtdose, RtDoseWritten};
pub use rtstruct::{
    dice, read_rtstruct, read_rtstruct_contours, write_rtstruct, Contour, Roi, RoiMask, RtStruct,
    RtStructOptions,
};
pub use seg::{
    coding_for, label_colour, read_seg, write_seg, Code, SegFile, SegFrame, SegOptions,
    SegmentCoding, SegmentInfo, Written,
};
pub use series::{
    load_series, scan_folder, DicomError, LoadedSeries, ScanResult, SeriesInfo, SliceInfo,
};
pub use study::{load_pair, load_study, series_suv, SeriesSuv, Study};
