//! One header type for both NIfTI versions, and the voxel-to-world rules of the standard.

use crate::error::NiftiError;
use glandseg_core::Geometry;
use serde::Serialize;
use std::path::Path;

/// Which of the header's transforms placed the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransformSource {
    Sform,
    Qform,
    /// Neither code set: NIfTI-1 "method 1", `diag(pixdim)` with no offset.
    Pixdim,
}

/// What glandseg read from a header (both versions), for `glandseg info` and the tests.
#[derive(Clone, Debug, Serialize)]
pub struct NiftiHeaderInfo {
    pub version: u8,
    pub big_endian: bool,
    pub datatype_code: i16,
    pub datatype: &'static str,
    pub bitpix: i16,
    /// `dim[0..8]` as stored.
    pub dim: [i64; 8],
    pub pixdim: [f64; 8],
    pub vox_offset: u64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern_bcd: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    pub xyzt_units: i32,
    pub intent_code: i32,
    pub descrip: String,
    pub transform: TransformSource,
    /// Voxel-to-world matrix in RAS, as nibabel's `img.affine`.
    pub affine_ras: [[f64; 4]; 4],
    /// Why the transform is not the one the codes name first (a sheared sform replaced
    /// by the qform), for `glandseg info`.
    pub transform_note: Option<String>,
}

impl NiftiHeaderInfo {
    /// Spatial shape `(nx, ny, nz)`; missing axes are 1.
    pub fn spatial_shape(&self) -> [usize; 3] {
        let nd = self.dim[0].clamp(0, 7) as usize;
        let mut s = [1usize; 3];
        for (a, v) in s.iter_mut().enumerate() {
            if a < nd {
                *v = self.dim[a + 1].max(0) as usize;
            }
        }
        s
    }

    /// Number of 3D volumes (product of dims 4..7).
    pub fn num_volumes(&self) -> usize {
        let nd = self.dim[0].clamp(0, 7) as usize;
        // Saturating: NIfTI-2 dims are 64-bit, and a damaged header's product overflows
        // (found by glandseg-fuzz); the reader refuses such a count.
        (4..=nd)
            .map(|a| self.dim[a].max(1) as usize)
            .fold(1usize, |acc, n| acc.saturating_mul(n))
    }

    /// The scaling nibabel applies: slope 0 or non-finite means "no scaling".
    pub fn effective_scaling(&self) -> (f64, f64) {
        if self.scl_slope == 0.0 || !self.scl_slope.is_finite() {
            (1.0, 0.0)
        } else {
            let inter = if self.scl_inter.is_finite() {
                self.scl_inter
            } else {
                0.0
            };
            (self.scl_slope, inter)
        }
    }

    /// The image's geometry in LPS.
    pub fn geometry(&self, path: &Path) -> Result<Geometry, NiftiError> {
        let mut lps = self.affine_ras;
        for c in 0..4 {
            lps[0][c] = -lps[0][c];
            lps[1][c] = -lps[1][c];
        }
        Geometry::from_affine(self.spatial_shape(), &lps).map_err(|e| {
            NiftiError::invalid(
                path,
                format!(
                    "the {} transform is unusable: {e}",
                    match self.transform {
                        TransformSource::Sform => "sform (srow_x/y/z)",
                        TransformSource::Qform => "qform (quatern_b/c/d, pixdim)",
                        TransformSource::Pixdim => "pixdim",
                    }
                ),
            )
        })
    }
}

pub(crate) fn datatype_name(code: i16) -> Option<(&'static str, i16)> {
    Some(match code {
        2 => ("uint8", 8),
        4 => ("int16", 16),
        8 => ("int32", 32),
        16 => ("float32", 32),
        64 => ("float64", 64),
        256 => ("int8", 8),
        512 => ("uint16", 16),
        768 => ("uint32", 32),
        _ => return None,
    })
}

/// Picks the transform as the standard says (sform if `sform_code > 0`, else qform if
/// `qform_code > 0`, else `diag(pixdim)`), and returns it as a RAS matrix.
///
/// A sheared sform (voxel axes not at right angles) cannot be an orthogonal grid, and
/// orthogonalising it would move voxels silently (by up to hundreds of mm at the far
/// corner of a large image, where nibabel keeps the full affine). Then the qform, which is
/// orthogonal by construction, places the image when its code is set and it is usable
/// (`transform_note` says so); otherwise the file is refused with the shear in the message.
///
/// The pixdim-only case follows the NIfTI-1 standard's "method 1" (`x = pixdim[1] * i`,
/// no offset), as `shared/LABELS.md` asks; ITK (and so 3D Slicer) does the same through
/// nifti1_io. nibabel differs here: its `get_base_affine` centres the image and flips x
/// (the Analyze convention), so for such files glandseg and nibabel disagree by design.
/// No file in the test data relies on this case (all sidecars say "sform").
pub(crate) fn choose_affine(h: &mut NiftiHeaderInfo) -> Result<(), String> {
    if h.sform_code > 0 {
        let mut sform = [[0.0; 4]; 4];
        sform[..3].copy_from_slice(&h.srow);
        sform[3] = [0.0, 0.0, 0.0, 1.0];
        match shear_of(&sform, h.spatial_shape()) {
            None => {
                h.transform = TransformSource::Sform;
                h.affine_ras = sform;
            }
            Some(shear) => {
                let qform = qform_affine(h.quatern_bcd, h.qoffset, &h.pixdim, h.version == 1);
                let usable = h.qform_code > 0
                    && qform.iter().flatten().all(|v| v.is_finite())
                    && Geometry::from_affine(h.spatial_shape(), &qform).is_ok();
                if !usable {
                    return Err(format!(
                        "the sform (srow_x/y/z, sform_code {}) is sheared: {shear}; glandseg \
                         keeps every grid orthogonal and will not move voxels silently, and \
                         there is no usable qform (qform_code {}) to place the image instead; \
                         resample the image onto an orthogonal grid first",
                        h.sform_code, h.qform_code
                    ));
                }
                h.transform = TransformSource::Qform;
                h.affine_ras = qform;
                h.transform_note = Some(format!(
                    "the sform (sform_code {}) is sheared ({shear}); the qform (qform_code {}) \
                     places the image instead",
                    h.sform_code, h.qform_code
                ));
            }
        }
    } else if h.qform_code > 0 {
        h.transform = TransformSource::Qform;
        h.affine_ras = qform_affine(h.quatern_bcd, h.qoffset, &h.pixdim, h.version == 1);
    } else {
        h.transform = TransformSource::Pixdim;
        h.affine_ras = [[0.0; 4]; 4];
        for a in 0..3 {
            h.affine_ras[a][a] = h.pixdim[a + 1];
        }
    }
    h.affine_ras[3] = [0.0, 0.0, 0.0, 1.0];
    Ok(())
}

/// `None` when the affine's columns are orthogonal (every voxel of `shape` within 1 % of
/// the smallest voxel size of where the orthogonalised grid puts it) or the affine is
/// unusable anyway (zero columns: [`NiftiHeaderInfo::geometry`] says so); otherwise the
/// angles between the voxel axes and how far orthogonalising would move the farthest voxel.
fn shear_of(m: &[[f64; 4]; 4], shape: [usize; 3]) -> Option<String> {
    let ortho = Geometry::from_affine(shape, m).ok()?;
    let mut worst: f64 = 0.0;
    for corner in 0..8 {
        let ijk = [0, 1, 2].map(|a| {
            if corner & (1 << a) != 0 {
                shape[a].saturating_sub(1) as f64
            } else {
                0.0
            }
        });
        let w = ortho.index_to_world(ijk);
        let d: f64 = (0..3)
            .map(|r| {
                let x = m[r][3] + (0..3).map(|c| m[r][c] * ijk[c]).sum::<f64>();
                (x - w[r]).powi(2)
            })
            .sum::<f64>()
            .sqrt();
        worst = worst.max(d);
    }
    let min_spacing = ortho.spacing.iter().cloned().fold(f64::INFINITY, f64::min);
    if worst <= 0.01 * min_spacing {
        return None;
    }
    let col = |c: usize| [m[0][c], m[1][c], m[2][c]];
    let angle = |a: usize, b: usize| {
        let (u, v) = (col(a), col(b));
        let dot: f64 = (0..3).map(|r| u[r] * v[r]).sum();
        let n = |x: [f64; 3]| (x[0] * x[0] + x[1] * x[1] + x[2] * x[2]).sqrt();
        (dot / (n(u) * n(v))).clamp(-1.0, 1.0).acos().to_degrees()
    };
    Some(format!(
        "its voxel axes meet at i-j {:.2}, i-k {:.2}, j-k {:.2} degrees instead of 90, and an \
         orthogonal grid would move voxels by up to {worst:.1} mm",
        angle(0, 1),
        angle(0, 2),
        angle(1, 2)
    ))
}

/// Why an intent code is not an image of one value per voxel, or `None` for the intents
/// that are: none (0), statistics (2-24), estimate, label, NeuroNames label,
/// dimensionless values (1001-1003, 1011) and time series (2001).
pub(crate) fn non_image_intent(code: i32) -> Option<String> {
    let what = match code {
        0 | 2..=24 | 1001..=1003 | 1011 | 2001 => return None,
        1004 => "a general matrix per voxel (NIFTI_INTENT_GENMATRIX)",
        1005 => "a symmetric matrix per voxel (NIFTI_INTENT_SYMMATRIX)",
        1006 => "a displacement vector per voxel (NIFTI_INTENT_DISPVECT)",
        1007 => "a vector per voxel (NIFTI_INTENT_VECTOR)",
        1008 => "a point set (NIFTI_INTENT_POINTSET)",
        1009 => "a triangle mesh (NIFTI_INTENT_TRIANGLE)",
        1010 => "a quaternion per voxel (NIFTI_INTENT_QUATERNION)",
        2002 => "surface node indices (NIFTI_INTENT_NODE_INDEX)",
        2003 => "RGB colours per voxel (NIFTI_INTENT_RGB_VECTOR)",
        2004 => "RGBA colours per voxel (NIFTI_INTENT_RGBA_VECTOR)",
        2005 => "surface shape values (NIFTI_INTENT_SHAPE)",
        2006..=2099 => "an FSL warp field or spline coefficients",
        3000..=3099 => "a CIFTI-2 file (grayordinates and connectivity, not voxels)",
        _ => "an intent glandseg does not know",
    };
    Some(format!(
        "intent_code {code} says the file holds {what}, not an image of one value per voxel"
    ))
}
/// The qform matrix of the NIfTI-1 standard (`nifti_quatern_to_mat44`).
///
/// `single_precision`: NIfTI-1 stores the quaternion as float32 and nibabel computes
/// `1 - b² - c² - d²` in float32 too, which decides whether `a` is exactly 0 for a
/// near-180° rotation; doing the same keeps our qform identical to nibabel's.
pub(crate) fn qform_affine(
    bcd: [f64; 3],
    offset: [f64; 3],
    pixdim: &[f64; 8],
    single_precision: bool,
) -> [[f64; 4]; 4] {
    let [mut b, mut c, mut d] = bcd;
    // As nibabel does (`quaternions.fillpositive`): a = sqrt(1 - b² - c² - d²), clamped at
    // 0, with b, c, d renormalised only when rounding made them longer than 1. (The NIfTI
    // C library uses a 1e-7 threshold instead; the two differ only for ~180° rotations.)
    let w2 = if single_precision {
        let (bf, cf, df) = (b as f32, c as f32, d as f32);
        (1.0f32 - (bf * bf + cf * cf + df * df)) as f64
    } else {
        1.0 - (b * b + c * c + d * d)
    };
    let a = if w2 > 0.0 {
        if single_precision {
            (w2 as f32).sqrt() as f64
        } else {
            w2.sqrt()
        }
    } else {
        let n = 1.0 / (b * b + c * c + d * d).sqrt();
        b *= n;
        c *= n;
        d *= n;
        0.0
    };
    let qfac = if pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let (dx, dy, dz) = (pixdim[1], pixdim[2], pixdim[3] * qfac);
    let r = [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a + c * c - b * b - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a + d * d - c * c - b * b,
        ],
    ];
    let mut m = [[0.0; 4]; 4];
    for row in 0..3 {
        m[row][0] = r[row][0] * dx;
        m[row][1] = r[row][1] * dy;
        m[row][2] = r[row][2] * dz;
        m[row][3] = offset[row];
    }
    m[3][3] = 1.0;
    m
}

/// Rotation (columns unit, RAS) -> quaternion `(b, c, d)` and qfac, as
/// `nifti_mat44_to_quatern` does: a left-handed matrix gets qfac -1 and its third column
/// negated before conversion.
pub(crate) fn rotation_to_quatern(mut r: [[f64; 3]; 3]) -> ([f64; 3], f64) {
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 {
        for row in r.iter_mut() {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d);
    if trace > 0.5 {
        a = 0.5 * trace.sqrt();
        b = 0.25 * (r[2][1] - r[1][2]) / a;
        c = 0.25 * (r[0][2] - r[2][0]) / a;
        d = 0.25 * (r[1][0] - r[0][1]) / a;
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            b = 0.5 * xd.sqrt();
            c = 0.25 * (r[0][1] + r[1][0]) / b;
            d = 0.25 * (r[0][2] + r[2][0]) / b;
            a = 0.25 * (r[2][1] - r[1][2]) / b;
        } else if yd > 1.0 {
            c = 0.5 * yd.sqrt();
            b = 0.25 * (r[0][1] + r[1][0]) / c;
            d = 0.25 * (r[1][2] + r[2][1]) / c;
            a = 0.25 * (r[0][2] - r[2][0]) / c;
        } else {
            d = 0.5 * zd.sqrt();
            b = 0.25 * (r[0][2] + r[2][0]) / d;
            c = 0.25 * (r[1][2] + r[2][1]) / d;
            a = 0.25 * (r[1][0] - r[0][1]) / d;
        }
    }
    let s = if a < 0.0 { -1.0 } else { 1.0 };
    ([s * b, s * c, s * d], qfac)
}
