//! DICOM in: scan a folder tree from a scanner or PACS, group files into series, and load
//! a series as a [`Volume`] with its LPS geometry derived from the slices' positions.
//!
//! Slices are ordered along the slice normal (row cosine x column cosine) by the
//! projection of ImagePositionPatient — never by InstanceNumber, which scanners number in
//! either direction — and the slice step comes from those positions, not from
//! SliceThickness (a 3 mm slice is often reconstructed every 2 mm).

pub mod series;
pub mod suv;

pub use series::{
    load_series, scan_folder, DicomError, LoadedSeries, ScanResult, SeriesInfo, SliceInfo,
};
