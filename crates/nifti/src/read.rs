//! Reading: the whole file is decompressed into memory once (NIfTI's voxel data follows
//! the header, so there is nothing to seek), then the header is parsed, checked field by
//! field, and the voxels converted to f32 with the header's scaling.

use crate::error::NiftiError;
use crate::header::{
    choose_affine, datatype_name, non_image_intent, NiftiHeaderInfo, TransformSource,
};
use glandseg_core::{Geometry, Volume};
use rayon::prelude::*;
use std::io::Read;
use std::path::Path;

/// A whole NIfTI file: header, geometry and every voxel of every volume (f32, scaled).
#[derive(Clone, Debug)]
pub struct NiftiImage {
    pub header: NiftiHeaderInfo,
    pub geometry: Geometry,
    /// All voxels in file order (i fastest, then j, k, t).
    pub data: Vec<f32>,
}

impl NiftiImage {
    /// Value at `[i, j, k, t]`.
    pub fn at(&self, i: usize, j: usize, k: usize, t: usize) -> Option<f32> {
        let [nx, ny, nz] = self.geometry.shape;
        if i >= nx || j >= ny || k >= nz || t >= self.header.num_volumes() {
            return None;
        }
        self.data.get(i + nx * (j + ny * (k + nz * t))).copied()
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, NiftiError> {
    let raw = std::fs::read(path).map_err(|e| NiftiError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| NiftiError::invalid(path, format!("gzip stream is corrupt: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    big: bool,
}

impl Cursor<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[off..off + N]);
        if self.big {
            a.reverse();
        }
        a
    }
    fn i16(&self, off: usize) -> i16 {
        i16::from_le_bytes(self.arr(off))
    }
    fn i32(&self, off: usize) -> i32 {
        i32::from_le_bytes(self.arr(off))
    }
    fn i64(&self, off: usize) -> i64 {
        i64::from_le_bytes(self.arr(off))
    }
    fn f64(&self, off: usize) -> f64 {
        f64::from_le_bytes(self.arr(off))
    }
    fn text(&self, off: usize, len: usize) -> String {
        let s = &self.b[off..off + len];
        let end = s.iter().position(|&c| c == 0).unwrap_or(len);
        String::from_utf8_lossy(&s[..end]).trim().to_string()
    }
}

/// NIfTI-2 header, read by hand (the `nifti` crate does not know NIfTI-2). Offsets from
/// the NIfTI-2 specification (540-byte header).
fn parse_v2(b: &[u8], big: bool) -> NiftiHeaderInfo {
    let c = Cursor { b, big };
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for a in 0..8 {
        dim[a] = c.i64(16 + 8 * a);
        pixdim[a] = c.f64(104 + 8 * a);
    }
    let mut srow = [[0f64; 4]; 3];
    for (r, row) in srow.iter_mut().enumerate() {
        for (col, v) in row.iter_mut().enumerate() {
            *v = c.f64(400 + 32 * r + 8 * col);
        }
    }
    NiftiHeaderInfo {
        version: 2,
        big_endian: big,
        datatype_code: c.i16(12),
        datatype: "",
        bitpix: c.i16(14),
        dim,
        pixdim,
        vox_offset: c.i64(168).max(0) as u64,
        scl_slope: c.f64(176),
        scl_inter: c.f64(184),
        qform_code: c.i32(344),
        sform_code: c.i32(348),
        quatern_bcd: [c.f64(352), c.f64(360), c.f64(368)],
        qoffset: [c.f64(376), c.f64(384), c.f64(392)],
        srow,
        xyzt_units: c.i32(500),
        intent_code: c.i32(504),
        descrip: c.text(240, 80),
        transform: TransformSource::Pixdim,
        affine_ras: [[0.0; 4]; 4],
        transform_note: None,
    }
}

/// NIfTI-1 header through the `nifti` crate.
fn parse_v1(path: &Path, b: &[u8]) -> Result<NiftiHeaderInfo, NiftiError> {
    let h = nifti::NiftiHeader::from_reader(&b[..348])
        .map_err(|e| NiftiError::invalid(path, format!("NIfTI-1 header: {e}")))?;
    let mut dim = [0i64; 8];
    let mut pixdim = [0f64; 8];
    for a in 0..8 {
        dim[a] = h.dim[a] as i64;
        pixdim[a] = h.pixdim[a] as f64;
    }
    let f = |r: [f32; 4]| [r[0] as f64, r[1] as f64, r[2] as f64, r[3] as f64];
    let end = h
        .descrip
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(h.descrip.len());
    Ok(NiftiHeaderInfo {
        version: 1,
        big_endian: h.endianness == nifti::Endianness::Big,
        datatype_code: h.datatype,
        datatype: "",
        bitpix: h.bitpix,
        dim,
        pixdim,
        vox_offset: if h.vox_offset.is_finite() && h.vox_offset >= 0.0 {
            h.vox_offset as u64
        } else {
            u64::MAX
        },
        scl_slope: h.scl_slope as f64,
        scl_inter: h.scl_inter as f64,
        qform_code: h.qform_code as i32,
        sform_code: h.sform_code as i32,
        quatern_bcd: [h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64],
        qoffset: [h.quatern_x as f64, h.quatern_y as f64, h.quatern_z as f64],
        srow: [f(h.srow_x), f(h.srow_y), f(h.srow_z)],
        xyzt_units: h.xyzt_units as i32,
        intent_code: h.intent_code as i32,
        descrip: String::from_utf8_lossy(&h.descrip[..end])
            .trim()
            .to_string(),
        transform: TransformSource::Pixdim,
        affine_ras: [[0.0; 4]; 4],
        transform_note: None,
    })
}

fn parse_header(path: &Path, b: &[u8]) -> Result<NiftiHeaderInfo, NiftiError> {
    if b.len() < 4 {
        return Err(NiftiError::invalid(path, "file is too short to be NIfTI"));
    }
    let le = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let be = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut h = match (le, be) {
        (348, _) | (_, 348) => {
            if b.len() < 348 {
                return Err(NiftiError::invalid(path, "NIfTI-1 header is truncated"));
            }
            if &b[344..347] != b"n+1" {
                return Err(NiftiError::invalid(
                    path,
                    format!(
                        "magic is {:?}, expected \"n+1\" (single-file NIfTI-1; .hdr/.img pairs are not supported)",
                        String::from_utf8_lossy(&b[344..348])
                    ),
                ));
            }
            parse_v1(path, b)?
        }
        (540, _) | (_, 540) => {
            if b.len() < 540 {
                return Err(NiftiError::invalid(path, "NIfTI-2 header is truncated"));
            }
            if &b[4..7] != b"n+2" {
                return Err(NiftiError::invalid(
                    path,
                    "magic is not \"n+2\" (single-file NIfTI-2)",
                ));
            }
            parse_v2(b, be == 540)
        }
        _ => {
            return Err(NiftiError::invalid(
                path,
                format!("not a NIfTI file (sizeof_hdr = {le}, expected 348 or 540)"),
            ))
        }
    };
    let (name, bits) = datatype_name(h.datatype_code).ok_or_else(|| {
        NiftiError::invalid(
            path,
            format!(
                "datatype {} is not supported (u8, i8, i16, u16, i32, u32, f32, f64 are)",
                h.datatype_code
            ),
        )
    })?;
    h.datatype = name;
    if h.bitpix != bits {
        return Err(NiftiError::invalid(
            path,
            format!(
                "bitpix {} does not match datatype {name} ({bits} bits)",
                h.bitpix
            ),
        ));
    }
    let nd = h.dim[0];
    if !(1..=7).contains(&nd) {
        return Err(NiftiError::invalid(
            path,
            format!("dim[0] = {nd}, expected 1..7"),
        ));
    }
    for a in 1..=nd as usize {
        if h.dim[a] < 1 {
            return Err(NiftiError::invalid(
                path,
                format!("dim[{a}] = {}", h.dim[a]),
            ));
        }
    }
    if let Some(why) = non_image_intent(h.intent_code) {
        return Err(NiftiError::invalid(path, why));
    }
    for a in 5..=nd as usize {
        if h.dim[a] > 1 {
            return Err(NiftiError::invalid(
                path,
                format!(
                    "dim[{a}] = {}: NIfTI's 5th to 7th dimensions hold several values per voxel \
                     (vectors, tensors, CIFTI), so this is not an image (dim = {:?})",
                    h.dim[a],
                    &h.dim[..=nd as usize]
                ),
            ));
        }
    }
    for a in 1..=3 {
        if (a as i64) <= nd && !(h.pixdim[a].is_finite() && h.pixdim[a] > 0.0) {
            return Err(NiftiError::invalid(
                path,
                format!("pixdim[{a}] = {} is not a positive voxel size", h.pixdim[a]),
            ));
        }
        if (a as i64) > nd && !(h.pixdim[a].is_finite() && h.pixdim[a] > 0.0) {
            h.pixdim[a] = 1.0;
        }
    }
    choose_affine(&mut h).map_err(|msg| NiftiError::invalid(path, msg))?;
    Ok(h)
}

fn convert(
    path: &Path,
    h: &NiftiHeaderInfo,
    b: &[u8],
    nvox: usize,
) -> Result<Vec<f32>, NiftiError> {
    let bpv = (h.bitpix / 8) as usize;
    let need = nvox.checked_mul(bpv).ok_or_else(|| {
        NiftiError::invalid(path, format!("dims {:?} overflow the address space", h.dim))
    })?;
    let start = h.vox_offset as usize;
    let have = b.len().saturating_sub(start);
    if start > b.len() || have < need {
        return Err(NiftiError::invalid(
            path,
            format!(
                "file is truncated: expected {need} bytes of voxel data at offset {start}, found {have}"
            ),
        ));
    }
    let src = &b[start..start + need];
    let (slope, inter) = h.effective_scaling();
    let big = h.big_endian;
    let code = h.datatype_code;
    let mut out = vec![0f32; nvox];
    out.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(bpv << 16))
        .for_each(|(o, s)| {
            for (v, raw) in o.iter_mut().zip(s.chunks_exact(bpv)) {
                let mut x = [0u8; 8];
                x[..bpv].copy_from_slice(raw);
                if big {
                    x[..bpv].reverse();
                }
                let val: f64 = match code {
                    2 => x[0] as f64,
                    256 => x[0] as i8 as f64,
                    4 => i16::from_le_bytes([x[0], x[1]]) as f64,
                    512 => u16::from_le_bytes([x[0], x[1]]) as f64,
                    8 => i32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64,
                    768 => u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64,
                    16 => f32::from_le_bytes([x[0], x[1], x[2], x[3]]) as f64,
                    _ => f64::from_le_bytes(x),
                };
                *v = (val * slope + inter) as f32;
            }
        });
    Ok(out)
}

/// Reads any supported NIfTI file completely (all volumes of a 4D file).
pub fn read_nifti(path: &Path) -> Result<NiftiImage, NiftiError> {
    read_checked(path, false)
}

/// Reads the file; with `only_3d`, a file of more than one volume is refused after the
/// header and before any voxel is converted, so a large 4D file costs nothing.
fn read_checked(path: &Path, only_3d: bool) -> Result<NiftiImage, NiftiError> {
    let b = read_bytes(path)?;
    let header = parse_header(path, &b)?;
    if only_3d && header.num_volumes() != 1 {
        return Err(NiftiError::invalid(
            path,
            format!(
                "has {} volumes (dim = {:?}); a 3D image is expected",
                header.num_volumes(),
                &header.dim[..=header.dim[0] as usize]
            ),
        ));
    }
    let geometry = header.geometry(path)?;
    // Checked, not `num_voxels()`: a damaged header's dims overflow the product (found by
    // glandseg-fuzz).
    let nvox = geometry
        .shape
        .iter()
        .try_fold(1usize, |acc, n| acc.checked_mul(*n))
        .and_then(|n| n.checked_mul(header.num_volumes()))
        .ok_or_else(|| NiftiError::invalid(path, format!("dim = {:?} overflows", header.dim)))?;
    let data = convert(path, &header, &b, nvox)?;
    Ok(NiftiImage {
        header,
        geometry,
        data,
    })
}

/// Reads a 3D image (values scaled by `scl_slope`/`scl_inter`). A file with more than one
/// volume is refused: glandseg never guesses which frame is meant.
pub fn read_volume(path: &Path) -> Result<Volume<f32>, NiftiError> {
    let img = read_checked(path, true)?;
    Volume::from_vec(img.geometry, img.data).map_err(|e| NiftiError::Core {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Reads a label map: every value must be an integer in 0..=255.
pub fn read_labels(path: &Path) -> Result<Volume<u8>, NiftiError> {
    let v = read_volume(path)?;
    if let Some(bad) = v
        .as_slice()
        .iter()
        .find(|x| !(x.fract() == 0.0 && (0.0..=255.0).contains(*x)))
    {
        return Err(NiftiError::invalid(
            path,
            format!("is not a label map: it holds the value {bad} (labels are integers 0..=255)"),
        ));
    }
    Ok(v.map(|x| *x as u8))
}
