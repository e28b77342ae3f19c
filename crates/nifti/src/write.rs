//! Writing NIfTI-1 with sform and qform both set (code 1, scanner) to the same affine, so
//! that every reader — nibabel (sform first), ITK/3D Slicer (qform first), FSL — places
//! the image where glandseg does. The 348-byte header is written by hand: the `nifti`
//! crate's writer needs its `nalgebra` feature to set affines and offers no control over
//! setting sform and qform together from an LPS geometry.

use crate::error::NiftiError;
use crate::header::rotation_to_quatern;
use glandseg_core::{atomic, Volume};
use std::io::Write;
use std::path::Path;

/// Voxel types glandseg writes.
pub trait NiftiStorable: Copy + Send + Sync {
    const DATATYPE: i16;
    const BITPIX: i16;
    fn put_le(self, out: &mut Vec<u8>);
}

impl NiftiStorable for u8 {
    const DATATYPE: i16 = 2;
    const BITPIX: i16 = 8;
    fn put_le(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NiftiStorable for i16 {
    const DATATYPE: i16 = 4;
    const BITPIX: i16 = 16;
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl NiftiStorable for f32 {
    const DATATYPE: i16 = 16;
    const BITPIX: i16 = 32;
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

fn header_bytes<T: NiftiStorable>(vol: &Volume<T>) -> Vec<u8> {
    let g = vol.geometry();
    // LPS -> RAS: negate the x and y rows.
    let lps = g.affine();
    let mut ras = lps;
    for c in 0..4 {
        ras[0][c] = -lps[0][c];
        ras[1][c] = -lps[1][c];
    }
    let mut rot = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            rot[r][c] = ras[r][c] / g.spacing[c];
        }
    }
    let (bcd, qfac) = rotation_to_quatern(rot);

    let mut h = vec![0u8; 352];
    let put_i16 =
        |h: &mut Vec<u8>, off: usize, v: i16| h[off..off + 2].copy_from_slice(&v.to_le_bytes());
    let put_i32 =
        |h: &mut Vec<u8>, off: usize, v: i32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put_f32 =
        |h: &mut Vec<u8>, off: usize, v: f32| h[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put_i32(&mut h, 0, 348);
    h[38] = b'r'; // "regular", as nibabel writes it
    let dims = [
        3i16,
        g.shape[0] as i16,
        g.shape[1] as i16,
        g.shape[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (a, d) in dims.iter().enumerate() {
        put_i16(&mut h, 40 + 2 * a, *d);
    }
    put_i16(&mut h, 70, T::DATATYPE);
    put_i16(&mut h, 72, T::BITPIX);
    let pixdim = [
        qfac as f32,
        g.spacing[0] as f32,
        g.spacing[1] as f32,
        g.spacing[2] as f32,
        1.0,
        1.0,
        1.0,
        1.0,
    ];
    for (a, p) in pixdim.iter().enumerate() {
        put_f32(&mut h, 76 + 4 * a, *p);
    }
    put_f32(&mut h, 108, 352.0); // vox_offset
    put_f32(&mut h, 112, 1.0); // scl_slope
    put_f32(&mut h, 116, 0.0); // scl_inter
    h[123] = 2 | 8; // xyzt_units: mm, s
    let descrip = format!("glandseg {}", env!("CARGO_PKG_VERSION"));
    h[148..148 + descrip.len()].copy_from_slice(descrip.as_bytes());
    put_i16(&mut h, 252, 1); // qform_code: scanner
    put_i16(&mut h, 254, 1); // sform_code: scanner
    put_f32(&mut h, 256, bcd[0] as f32);
    put_f32(&mut h, 260, bcd[1] as f32);
    put_f32(&mut h, 264, bcd[2] as f32);
    put_f32(&mut h, 268, ras[0][3] as f32);
    put_f32(&mut h, 272, ras[1][3] as f32);
    put_f32(&mut h, 276, ras[2][3] as f32);
    for r in 0..3 {
        for c in 0..4 {
            put_f32(&mut h, 280 + 16 * r + 4 * c, ras[r][c] as f32);
        }
    }
    h[344..348].copy_from_slice(b"n+1\0");
    // Bytes 348..352: extension flag 0 (no extensions).
    h
}

/// Writes `vol` as NIfTI-1 (`.nii.gz` compressed with a fast gzip level — outputs are
/// large and written often; `.nii` plain), atomically.
pub fn write_volume<T: NiftiStorable>(path: &Path, vol: &Volume<T>) -> Result<(), NiftiError> {
    let g = vol.geometry();
    if g.shape.iter().any(|&n| n > i16::MAX as usize) {
        return Err(NiftiError::invalid(
            path,
            format!(
                "shape {:?} exceeds NIfTI-1's 32767 voxels per axis",
                g.shape
            ),
        ));
    }
    let name = path.to_string_lossy();
    let gz = name.ends_with(".nii.gz");
    if !gz && !name.ends_with(".nii") {
        return Err(NiftiError::invalid(
            path,
            "file name must end in .nii or .nii.gz",
        ));
    }
    let header = header_bytes(vol);
    let data = vol.as_slice();
    atomic::write_with(path, |w| {
        let body = |w: &mut dyn Write| -> std::io::Result<()> {
            w.write_all(&header)?;
            let mut buf = Vec::with_capacity(1 << 20);
            for chunk in data.chunks(1 << 18) {
                buf.clear();
                for v in chunk {
                    v.put_le(&mut buf);
                }
                w.write_all(&buf)?;
            }
            Ok(())
        };
        if gz {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            body(&mut enc)?;
            enc.finish()?;
            Ok(())
        } else {
            body(w)
        }
    })
    .map_err(|e| NiftiError::Core {
        path: path.to_path_buf(),
        source: e,
    })
}

/// `vol` as the bytes of a `.nii.gz` file (NIfTI-1, gzip at the default level), for
/// embedding (the review page carries its volumes inside the HTML); `intent_code` goes
/// into the header (0: none; 1002: NIFTI_INTENT_LABEL, which viewers draw as labels).
pub fn encode_volume_gz<T: NiftiStorable>(
    vol: &Volume<T>,
    intent_code: i16,
) -> std::io::Result<Vec<u8>> {
    let mut header = header_bytes(vol);
    // intent_code: bytes 68..70 of the NIfTI-1 header.
    header[68..70].copy_from_slice(&intent_code.to_le_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&header)?;
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in vol.as_slice().chunks(1 << 18) {
        buf.clear();
        for v in chunk {
            v.put_le(&mut buf);
        }
        enc.write_all(&buf)?;
    }
    enc.finish()
}

/// Writes a CT in HU as int16 (rounded, clamped to the i16 range), the way scanners and
/// nnU-Net datasets store CT.
pub fn write_ct_i16(path: &Path, vol: &Volume<f32>) -> Result<(), NiftiError> {
    let v = vol.map(|x| {
        if x.is_finite() {
            x.round().clamp(i16::MIN as f32, i16::MAX as f32) as i16
        } else {
            -1024
        }
    });
    write_volume(path, &v)
}
