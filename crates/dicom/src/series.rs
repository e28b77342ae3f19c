use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder};
use glandseg_core::{Geometry, Volume};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("series {uid} ({description}): {msg}")]
    Series {
        uid: String,
        description: String,
        msg: String,
    },
}

fn file_err(path: &Path, msg: impl Into<String>) -> DicomError {
    DicomError::File {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// What one slice's header says (pixel data not read).
#[derive(Clone, Debug, Serialize)]
pub struct SliceInfo {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub instance_number: Option<i32>,
    pub position: [f64; 3],
    pub orientation: [f64; 6],
    pub rows: u32,
    pub columns: u32,
    /// (between rows, between columns) mm, as PixelSpacing stores it.
    pub pixel_spacing: [f64; 2],
    pub frames: u32,
}

/// A series as found on disk.
#[derive(Clone, Debug, Serialize)]
pub struct SeriesInfo {
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    pub modality: String,
    pub description: String,
    pub slices: Vec<SliceInfo>,
}

#[derive(Debug, Default, Serialize)]
pub struct ScanResult {
    pub series: Vec<SeriesInfo>,
    /// Files that were not DICOM images, with the reason (not errors: folders from PACS
    /// hold DICOMDIRs, reports and stray files).
    pub skipped: Vec<(PathBuf, String)>,
}

/// A loaded series: voxel values after RescaleSlope/Intercept, LPS geometry.
#[derive(Debug)]
pub struct LoadedSeries {
    pub info: SeriesInfo,
    pub volume: Volume<f32>,
    /// Slices in volume order (k = 0 first).
    pub sorted: Vec<SliceInfo>,
}

pub(crate) fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim().trim_end_matches('\0').to_string())
        .filter(|s| !s.is_empty())
}

fn floats(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<Vec<f64>> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_multi_float64().ok())
}

fn read_slice_header(path: &Path) -> Result<(SeriesInfo, SliceInfo), String> {
    // A missing attribute in a file cut short: say where it ends instead.
    read_slice_header_of(path).map_err(|why| crate::read::truncation(path).unwrap_or(why))
}

fn read_slice_header_of(path: &Path) -> Result<(SeriesInfo, SliceInfo), String> {
    let obj = crate::read::open_header(path).map_err(|e| match e {
        DicomError::File { msg, .. } => msg,
        other => other.to_string(),
    })?;
    if obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        == "1.2.840.10008.1.3.10"
    {
        return Err("DICOMDIR (ignored)".into());
    }
    // Anonymisers sometimes blank the UIDs: such files are grouped by folder, modality and
    // SeriesNumber instead, and the key says so.
    let uid = text(&obj, tags::SERIES_INSTANCE_UID).unwrap_or_else(|| {
        format!(
            "(no SeriesInstanceUID) {} {} series {}",
            path.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            text(&obj, tags::MODALITY).unwrap_or_default(),
            text(&obj, tags::SERIES_NUMBER).unwrap_or_default()
        )
    });
    let position = floats(&obj, tags::IMAGE_POSITION_PATIENT)
        .filter(|v| v.len() == 3)
        .ok_or("not a cross-sectional image: no ImagePositionPatient (0020,0032)")?;
    let orientation = floats(&obj, tags::IMAGE_ORIENTATION_PATIENT)
        .filter(|v| v.len() == 6)
        .ok_or("no ImageOrientationPatient (0020,0037)")?;
    let ps = floats(&obj, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2)
        .ok_or("no PixelSpacing (0028,0030)")?;
    let rows = obj
        .element_opt(tags::ROWS)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or("no Rows (0028,0010)")?;
    let columns = obj
        .element_opt(tags::COLUMNS)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .ok_or("no Columns (0028,0011)")?;
    let frames = obj
        .element_opt(tags::NUMBER_OF_FRAMES)
        .ok()
        .flatten()
        .and_then(|e| e.to_int::<u32>().ok())
        .unwrap_or(1);
    let series = SeriesInfo {
        series_instance_uid: uid,
        study_instance_uid: text(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: text(&obj, tags::FRAME_OF_REFERENCE_UID).unwrap_or_default(),
        modality: text(&obj, tags::MODALITY).unwrap_or_default(),
        description: text(&obj, tags::SERIES_DESCRIPTION).unwrap_or_default(),
        slices: Vec::new(),
    };
    let slice = SliceInfo {
        path: path.to_path_buf(),
        sop_instance_uid: text(&obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        instance_number: obj
            .element_opt(tags::INSTANCE_NUMBER)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i32>().ok()),
        position: [position[0], position[1], position[2]],
        orientation: [
            orientation[0],
            orientation[1],
            orientation[2],
            orientation[3],
            orientation[4],
            orientation[5],
        ],
        rows,
        columns,
        pixel_spacing: [ps[0], ps[1]],
        frames,
    };
    Ok((series, slice))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DicomError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| file_err(dir, format!("cannot read folder: {e}")))?;
    for e in entries {
        let p = e.map_err(|e| file_err(dir, e.to_string()))?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Scans a file or a folder tree for DICOM images and groups them by SeriesInstanceUID.
pub fn scan_folder(path: &Path) -> Result<ScanResult, DicomError> {
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, &mut files)?;
    } else if path.is_file() {
        files.push(path.to_path_buf());
    } else {
        return Err(file_err(path, "no such file or folder"));
    }
    files.sort();
    use rayon::prelude::*;
    type Header = Result<(SeriesInfo, SliceInfo), String>;
    let headers: Vec<(PathBuf, Header)> = files
        .into_par_iter()
        .map(|f| {
            let r = read_slice_header(&f);
            (f, r)
        })
        .collect();
    let mut by_uid: BTreeMap<String, SeriesInfo> = BTreeMap::new();
    let mut result = ScanResult::default();
    for (f, r) in headers {
        match r {
            Ok((s, slice)) => by_uid
                .entry(s.series_instance_uid.clone())
                .or_insert(s)
                .slices
                .push(slice),
            Err(why) => result.skipped.push((f, why)),
        }
    }
    result.series = by_uid.into_values().collect();
    Ok(result)
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Decodes every slice and stacks them into a volume.
pub fn load_series(info: &SeriesInfo) -> Result<LoadedSeries, DicomError> {
    let err = |msg: String| DicomError::Series {
        uid: info.series_instance_uid.clone(),
        description: info.description.clone(),
        msg,
    };
    let first = info
        .slices
        .first()
        .ok_or_else(|| err("has no slices".into()))?;
    if let Some(mf) = info.slices.iter().find(|s| s.frames > 1) {
        return Err(err(format!(
            "{} is a multi-frame image ({} frames); glandseg reads single-frame CT/PET series",
            mf.path.display(),
            mf.frames
        )));
    }
    for s in &info.slices {
        let same_orient = s
            .orientation
            .iter()
            .zip(&first.orientation)
            .all(|(a, b)| (a - b).abs() < 1e-4);
        if !same_orient {
            return Err(err(format!(
                "mixed orientations: {} has ImageOrientationPatient {:?}, {} has {:?}",
                s.path.display(),
                s.orientation,
                first.path.display(),
                first.orientation
            )));
        }
        if s.rows != first.rows
            || s.columns != first.columns
            || (s.pixel_spacing[0] - first.pixel_spacing[0]).abs() > 1e-4
            || (s.pixel_spacing[1] - first.pixel_spacing[1]).abs() > 1e-4
        {
            return Err(err(format!(
                "mixed slice sizes: {} is {}x{} at {:?} mm, {} is {}x{} at {:?} mm",
                s.path.display(),
                s.rows,
                s.columns,
                s.pixel_spacing,
                first.path.display(),
                first.rows,
                first.columns,
                first.pixel_spacing
            )));
        }
    }
    let o = first.orientation;
    let row = [o[0], o[1], o[2]];
    let col = [o[3], o[4], o[5]];
    let normal = cross(row, col);
    let mut sorted = info.slices.clone();
    sorted.sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
    let proj: Vec<f64> = sorted.iter().map(|s| dot(s.position, normal)).collect();
    let step = if sorted.len() > 1 {
        let steps: Vec<f64> = proj.windows(2).map(|w| w[1] - w[0]).collect();
        if let Some(i) = steps.iter().position(|s| *s < 1e-3) {
            return Err(err(format!(
                "two slices at the same position: {} and {}",
                sorted[i].path.display(),
                sorted[i + 1].path.display()
            )));
        }
        let total = proj[proj.len() - 1] - proj[0];
        let mean = total / (sorted.len() - 1) as f64;
        for (i, s) in steps.iter().enumerate() {
            if (s - mean).abs() > 0.01 * mean + 0.01 {
                let what = if *s > 1.5 * mean {
                    "a missing slice"
                } else {
                    "non-uniform slice steps"
                };
                return Err(err(format!("{what}: the step between {} and {} is {s:.3} mm, the mean step is {mean:.3} mm", sorted[i].path.display(), sorted[i + 1].path.display())));
            }
        }
        // Gantry tilt: consecutive positions must move along the normal only.
        for w in sorted.windows(2) {
            let d = [
                w[1].position[0] - w[0].position[0],
                w[1].position[1] - w[0].position[1],
                w[1].position[2] - w[0].position[2],
            ];
            let inplane = (dot(d, row).powi(2) + dot(d, col).powi(2)).sqrt();
            if inplane > 0.01 * mean + 0.01 {
                return Err(err(format!("slices shift in-plane by {inplane:.2} mm from {} to {} (gantry tilt or a sheared stack), which glandseg does not resample yet", w[0].path.display(), w[1].path.display())));
            }
        }
        mean
    } else {
        1.0
    };
    let geometry = Geometry {
        shape: [first.columns as usize, first.rows as usize, sorted.len()],
        // PixelSpacing is (row spacing = between rows = along j, column spacing = along i).
        spacing: [first.pixel_spacing[1], first.pixel_spacing[0], step],
        origin: sorted[0].position,
        direction: [
            [row[0], col[0], normal[0]],
            [row[1], col[1], normal[1]],
            [row[2], col[2], normal[2]],
        ],
    };
    geometry.validate().map_err(|e| err(e.to_string()))?;
    let n_slice = (first.rows * first.columns) as usize;
    use rayon::prelude::*;
    let planes: Vec<Vec<f32>> = sorted
        .par_iter()
        .map(|s| decode_slice(&s.path, n_slice))
        .collect::<Result<_, _>>()?;
    let mut data = Vec::with_capacity(n_slice * sorted.len());
    for p in planes {
        data.extend(p);
    }
    let volume = Volume::from_vec(geometry, data).map_err(|e| err(e.to_string()))?;
    Ok(LoadedSeries {
        info: info.clone(),
        volume,
        sorted,
    })
}

/// Stored values of one slice times its own RescaleSlope plus RescaleIntercept (per slice:
/// PET slices each carry their own slope).
pub fn decode_slice(path: &Path, n: usize) -> Result<Vec<f32>, DicomError> {
    let obj = crate::read::open_full(path)?;
    check_j2k_size(path, &obj)?;
    // Through `quietly`: dicom-rs' JPEG 2000 adapter panics on an empty fragment.
    let decoded = glandseg_core::panics::quietly(|| obj.decode_pixel_data())
        .map_err(|e| {
            file_err(
                path,
                format!("cannot decode the pixel data: the decoder failed: {e}"),
            )
        })?
        .map_err(|e| file_err(path, format!("cannot decode the pixel data: {e}")))?;
    if decoded.samples_per_pixel() != 1 {
        return Err(file_err(
            path,
            format!(
                "SamplesPerPixel (0028,0002) is {}; only grey-scale images are supported",
                decoded.samples_per_pixel()
            ),
        ));
    }
    let raw: Vec<f64> = glandseg_core::panics::quietly(|| {
        decoded.to_vec_frame_with_options(
            0,
            &ConvertOptions::new().with_modality_lut(ModalityLutOption::None),
        )
    })
    .map_err(|e| file_err(path, format!("cannot convert the pixel data: {e}")))?
    .map_err(|e| file_err(path, format!("cannot convert the pixel data: {e}")))?;
    let mut raw = raw;
    reinterpret_j2k_sign(path, &obj, &mut raw)?;
    if raw.len() != n {
        return Err(file_err(
            path,
            format!(
                "{} pixels decoded, {} expected from Rows x Columns",
                raw.len(),
                n
            ),
        ));
    }
    let slope = floats(&obj, tags::RESCALE_SLOPE)
        .and_then(|v| v.first().copied())
        .unwrap_or(1.0);
    let inter = floats(&obj, tags::RESCALE_INTERCEPT)
        .and_then(|v| v.first().copied())
        .unwrap_or(0.0);
    if !slope.is_finite() || !inter.is_finite() {
        return Err(file_err(
            path,
            format!("RescaleSlope/Intercept (0028,1053/1052) not finite: {slope} / {inter}"),
        ));
    }
    Ok(raw
        .into_iter()
        .map(|v| (v * slope + inter) as f32)
        .collect())
}

/// JPEG 2000 transfer syntaxes (Part 1 lossless/lossy, HTJ2K lossless, RPCL, lossy).
const J2K_SYNTAXES: [&str; 5] = [
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
];

fn is_j2k(obj: &DefaultDicomObject) -> bool {
    J2K_SYNTAXES.contains(&obj.meta().transfer_syntax())
}

/// The SIZ marker segment after its marker (Lsiz onwards, ISO 15444-1 A.5.1) of the first
/// SOC + SIZ pair in a raw codestream or JP2 file, `len` bytes of it, or `None`.
fn siz_segment(codestream: &[u8], len: usize) -> Option<&[u8]> {
    let at = codestream
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    codestream.get(at + 4..at + 4 + len)
}

/// `(signed, precision)` of the first component in a JPEG 2000 codestream's SIZ marker
/// (ISO 15444-1 A.5.1: Ssiz bit 7 = signed, bits 0-6 = precision - 1), or `None` when
/// there is no SIZ marker. Works on raw codestreams and JP2 files alike (the first
/// SOC + SIZ pair is used).
pub fn j2k_sign_precision(codestream: &[u8]) -> Option<(bool, u32)> {
    // Lsiz (2), Rsiz (2), 8 x 4 bytes of sizes, Csiz (2), then the first Ssiz.
    let ssiz = *siz_segment(codestream, 2 + 2 + 32 + 2 + 1)?.last()?;
    Some((ssiz & 0x80 != 0, (ssiz & 0x7F) as u32 + 1))
}

/// `(width, height, components)` of the image a JPEG 2000 codestream's SIZ marker
/// declares (ISO 15444-1 A.5.1: Xsiz - XOsiz, Ysiz - YOsiz, Csiz), or `None` when there is
/// no complete SIZ marker.
pub fn j2k_size(codestream: &[u8]) -> Option<(u64, u64, u16)> {
    let siz = siz_segment(codestream, 38)?;
    let u32_at = |i: usize| u32::from_be_bytes([siz[i], siz[i + 1], siz[i + 2], siz[i + 3]]) as u64;
    // Lsiz (2), Rsiz (2), Xsiz, Ysiz, XOsiz, YOsiz (4 each), ..., Csiz at 36.
    let (x, y, xo, yo) = (u32_at(4), u32_at(8), u32_at(12), u32_at(16));
    let c = u16::from_be_bytes([siz[36], siz[37]]);
    Some((x.saturating_sub(xo), y.saturating_sub(yo), c))
}

/// Refuses a JPEG 2000 slice whose codestream declares another image size than the
/// dataset's Columns x Rows x SamplesPerPixel, before decoding it. Why: the decoder trusts
/// the SIZ marker, and a damaged one (found by fuzzing: Xsiz 8 388 352 in a 512 x 512 CT)
/// made it work through 16 384 tiles for over a minute before failing; a damaged series
/// must fail in milliseconds with the file and the two sizes named.
fn check_j2k_size(path: &Path, obj: &DefaultDicomObject) -> Result<(), DicomError> {
    if !is_j2k(obj) {
        return Ok(());
    }
    let Some(element) = obj.element_opt(tags::PIXEL_DATA).ok().flatten() else {
        return Ok(());
    };
    let Some(fragments) = element.fragments() else {
        return Ok(());
    };
    let int = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u64>().ok())
    };
    let (Some(rows), Some(cols)) = (int(tags::ROWS), int(tags::COLUMNS)) else {
        return Ok(());
    };
    let samples = int(tags::SAMPLES_PER_PIXEL).unwrap_or(1);
    // A frame may span several fragments: the SIZ marker is in the first of a frame, and
    // checking every fragment that holds one covers multi-frame objects too.
    for f in fragments.iter() {
        if let Some((w, h, c)) = j2k_size(f) {
            if w != cols || h != rows || c as u64 != samples {
                return Err(file_err(
                    path,
                    format!(
                        "the JPEG 2000 codestream declares a {w} x {h} image with {c} component(s), the dataset Columns x Rows {cols} x {rows} with SamplesPerPixel {samples}: the pixel data is damaged or belongs to another image"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// pydicom's rule for a JPEG 2000 codestream whose signedness disagrees with
/// PixelRepresentation (0028,0103): the dataset wins. Unsigned samples of a signed
/// dataset are re-interpreted as two's complement of `bits` bits (BitsStored, or the
/// codestream's precision when that is smaller), so a CT stored as raw two's complement
/// bits gives its negative HU back instead of 0..2^bits-1. Returns whether values
/// changed.
pub fn reinterpret_unsigned_as_signed(samples: &mut [f64], bits: u32) -> bool {
    if !(1..=32).contains(&bits) {
        return false;
    }
    let modulus = 1i64 << bits;
    let half = modulus >> 1;
    let mut changed = false;
    for v in samples.iter_mut() {
        let u = (*v as i64).rem_euclid(modulus);
        let s = if u >= half { u - modulus } else { u };
        if s as f64 != *v {
            changed = true;
            *v = s as f64;
        }
    }
    changed
}

/// Applies [`reinterpret_unsigned_as_signed`] to a JPEG 2000 slice whose codestream is
/// unsigned while PixelRepresentation says signed; a signed codestream in an unsigned
/// dataset is refused (no rule gives its values back with certainty).
fn reinterpret_j2k_sign(
    path: &Path,
    obj: &DefaultDicomObject,
    raw: &mut [f64],
) -> Result<(), DicomError> {
    if !is_j2k(obj) {
        return Ok(());
    }
    let Some((signed, precision)) = obj
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .and_then(|e| e.fragments().and_then(|f| f.first().cloned()))
        .and_then(|f| j2k_sign_precision(&f))
    else {
        return Ok(());
    };
    let int = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<u32>().ok())
    };
    let pr = int(tags::PIXEL_REPRESENTATION).unwrap_or(0);
    let bits_stored = int(tags::BITS_STORED).unwrap_or(precision);
    match (pr, signed) {
        (1, false) => {
            reinterpret_unsigned_as_signed(raw, bits_stored.min(precision));
            Ok(())
        }
        (0, true) => Err(file_err(
            path,
            format!(
                "the JPEG 2000 codestream is signed ({precision} bits) but PixelRepresentation (0028,0103) is 0 (unsigned): the stored values are ambiguous, so the slice is refused rather than read with the wrong sign"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod j2k_tests {
    use super::*;

    /// HU -2000..1896 stored as 13-bit two's complement in an unsigned codestream decode to
    /// 0..8191; the dataset's PixelRepresentation 1 brings the sign back.
    #[test]
    fn unsigned_codestream_in_signed_dataset_gets_its_sign_back() {
        let hu = [-2000.0, -1.0, 0.0, 1.0, 1896.0, -4096.0, 4095.0];
        let mut raw: Vec<f64> = hu
            .iter()
            .map(|v: &f64| (*v as i64).rem_euclid(8192) as f64)
            .collect();
        assert!(raw.iter().all(|v| (0.0..8192.0).contains(v)));
        assert!(reinterpret_unsigned_as_signed(&mut raw, 13));
        assert_eq!(raw, hu);
        // Already signed (16-bit values of a 16-bit dataset): unchanged.
        let mut same = vec![-1024.0, 0.0, 3071.0];
        assert!(!reinterpret_unsigned_as_signed(&mut same, 16));
    }

    #[test]
    fn siz_marker_gives_sign_and_precision() {
        let mut cs = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        cs.extend([0u8; 32]);
        cs.extend([0x00, 0x01, 0x0C, 0x01, 0x01]); // Csiz 1, Ssiz unsigned 13 bits
        assert_eq!(j2k_sign_precision(&cs), Some((false, 13)));
        let n = cs.len();
        cs[n - 3] = 0x8F; // signed 16 bits
        assert_eq!(j2k_sign_precision(&cs), Some((true, 16)));
        assert_eq!(j2k_sign_precision(&cs[..20]), None);
    }

    #[test]
    fn siz_marker_gives_the_declared_image_size() {
        let mut cs = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [8_388_352u32, 512, 0, 0, 512, 512, 0, 0] {
            cs.extend(v.to_be_bytes());
        }
        cs.extend([0x00, 0x01, 0x0F, 0x01, 0x01]);
        assert_eq!(j2k_size(&cs), Some((8_388_352, 512, 1)));
        // Offsets are subtracted (Xsiz - XOsiz).
        cs[19] = 2; // XOsiz (bytes 16..20) = 2
        assert_eq!(j2k_size(&cs).map(|s| s.0), Some(8_388_350));
        assert_eq!(j2k_size(&cs[..30]), None);
    }
}
