//! NIfTI-1 / NIfTI-2 in, NIfTI-1 out, with the geometry exactly where nibabel and 3D
//! Slicer put it. NIfTI stores RAS; glandseg works in DICOM LPS, so x and y are negated
//! here, at the file boundary, and nowhere else.
//!
//! Header parsing: NIfTI-1 headers go through the `nifti` crate (it handles both byte
//! orders). The crate (0.18) reads NIfTI-1 only and computes affines only with its
//! `nalgebra` feature, so NIfTI-2 headers, the qform quaternion maths and the writer are
//! done by hand here, following the NIfTI-1/2 specifications field by field.

pub mod describe;
mod error;
mod header;
mod read;
mod write;

pub use error::NiftiError;
pub use header::{NiftiHeaderInfo, TransformSource};
pub use read::{read_labels, read_nifti, read_volume, NiftiImage};
pub use write::{encode_volume_gz, write_ct_i16, write_volume, NiftiStorable};

/// The header's qform as a RAS matrix (whatever its code), for checks against other
/// readers.
pub fn qform_affine_of(h: &NiftiHeaderInfo) -> [[f64; 4]; 4] {
    header::qform_affine(h.quatern_bcd, h.qoffset, &h.pixdim, h.version == 1)
}
