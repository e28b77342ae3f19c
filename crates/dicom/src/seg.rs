//! DICOM Segmentation (SEG) out and in: the form in which PACS and viewers (OHIF, 3D Slicer,
//! highdicom) take a label map back, with each gland coded in SNOMED CT so that downstream
//! software can recognise it without parsing our label names.
//!
//! The writer makes a BINARY SEG: one segment per non-background label of the
//! [`LabelMap`], one frame per (segment, slice) that has foreground, 1-bit pixels packed
//! contiguously across frames (PS3.5 8.1.1: little-endian bit order, frames not padded to
//! a byte). The reader accepts any BINARY SEG of parallel frames — ours and third-party
//! ones — and rebuilds a label volume on the grid that the frames imply.

use crate::dataset::*;
use crate::series::DicomError;
use dicom_core::value::C;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use glandseg_core::{Geometry, LabelMap, Volume};
use serde::Serialize;
use std::path::Path;

/// A coded concept (CodeValue, CodingSchemeDesignator, CodeMeaning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Code {
    pub value: String,
    pub scheme: String,
    pub meaning: String,
}

impl Code {
    fn new(value: &str, scheme: &str, meaning: &str) -> Self {
        Code {
            value: value.into(),
            scheme: scheme.into(),
            meaning: meaning.into(),
        }
    }

    fn item(&self) -> InMemDicomObject {
        code(&self.value, &self.scheme, &self.meaning)
    }

    fn read(item: &InMemDicomObject) -> Option<Code> {
        Some(Code {
            value: get_str(item, tags::CODE_VALUE)
                .or_else(|| get_str(item, tags::LONG_CODE_VALUE))
                .or_else(|| get_str(item, tags::URN_CODE_VALUE))?,
            scheme: get_str(item, tags::CODING_SCHEME_DESIGNATOR).unwrap_or_default(),
            meaning: get_str(item, tags::CODE_MEANING).unwrap_or_default(),
        })
    }
}

/// How a label name is coded: category, type and (for a lateral gland) the side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentCoding {
    pub category: Code,
    pub property_type: Code,
    pub laterality: Option<Code>,
}

/// SNOMED CT coding of a glandseg label name. The glands of `shared/LABELS.md` (and any
/// map that uses the same stems) get their anatomy codes and a laterality modifier; any
/// other name is coded as generic tissue, its name surviving as the SegmentLabel.
pub fn coding_for(name: &str) -> SegmentCoding {
    let (stem, side) = match LabelMap::side_of(name) {
        Some((stem, side)) => (stem, Some(side)),
        None => (name, None),
    };
    let anatomy = match stem {
        "parotid" => Some(Code::new("45289007", "SCT", "Parotid gland")),
        "submandibular" => Some(Code::new("54019009", "SCT", "Submandibular gland")),
        "lacrimal" => Some(Code::new("13561001", "SCT", "Lacrimal gland")),
        _ => None,
    };
    match anatomy {
        Some(t) => SegmentCoding {
            category: Code::new("123037004", "SCT", "Anatomical Structure"),
            property_type: t,
            laterality: side.map(|s| match s {
                glandseg_core::labels::Side::Left => Code::new("7771000", "SCT", "Left"),
                glandseg_core::labels::Side::Right => Code::new("24028007", "SCT", "Right"),
            }),
        },
        None => SegmentCoding {
            category: Code::new("85756007", "SCT", "Tissue"),
            property_type: Code::new("85756007", "SCT", "Tissue"),
            laterality: None,
        },
    }
}

/// Display colour of label `value` (RGB), the same in SEG and RTSTRUCT so that a gland
/// looks alike in every viewer.
pub fn label_colour(value: u8) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
    ];
    PALETTE[(value as usize + 7) % PALETTE.len()]
}

/// sRGB to DICOM's scaled CIELab (PS3.3 C.10.7.1.1: L 0..100 and a, b -128..127 mapped
/// onto 0..65535), D65 white.
fn rgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047;
    let y = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    let z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    let scale = |v: f64, lo: f64, hi: f64| {
        ((v - lo) / (hi - lo) * 65535.0).round().clamp(0.0, 65535.0) as u16
    };
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 127.0),
        scale(bb, -128.0, 127.0),
    ]
}

/// What goes into a SEG besides the pixels.
#[derive(Clone, Debug)]
pub struct SegOptions {
    /// Name of the model that produced the labels (AlgorithmIdentification).
    pub model_name: String,
    pub series_description: String,
    pub series_number: i64,
}

impl Default for SegOptions {
    fn default() -> Self {
        SegOptions {
            model_name: "unknown".into(),
            series_description: "glandseg segmentation".into(),
            series_number: 300,
        }
    }
}

/// What a writer produced, for the caller's report.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    pub path: std::path::PathBuf,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub frame_of_reference_uid: String,
    /// Frames (SEG) or contours (RTSTRUCT) written.
    pub items: usize,
}

/// The SOP class and instance UIDs of source slice `k`, checked to match the grid.
pub(crate) fn check_source(
    source: Option<&SourceSeries>,
    geometry: &Geometry,
    out: &Path,
) -> Result<(), DicomError> {
    if let Some(src) = source {
        if src.sop_instance_uids.len() != geometry.shape[2] {
            return Err(file_err(
                out,
                format!(
                    "the source series has {} slices but the label grid has {}: the labels must be on the source CT's grid",
                    src.sop_instance_uids.len(),
                    geometry.shape[2]
                ),
            ));
        }
    }
    Ok(())
}

/// Writes `labels` (values of `map`, on the grid of the source CT when `source` is given)
/// as a BINARY DICOM SEG at `out`, atomically.
///
/// Every foreground label of `map` becomes a segment (numbered 1, 2, … in value order, so
/// a map with consecutive values keeps its numbers), whether or not it has voxels; frames
/// are written only for slices where a segment has foreground. A label map with no
/// foreground at all still gets one empty frame, as a SEG must have at least one.
pub fn write_seg(
    out: &Path,
    labels: &Volume<u8>,
    map: &LabelMap,
    source: Option<&SourceSeries>,
    opts: &SegOptions,
) -> Result<Written, DicomError> {
    let (ds, written) = build_seg(out, labels, map, source, opts)?;
    write_file(ds, out)?;
    Ok(written)
}

fn build_seg(
    out: &Path,
    labels: &Volume<u8>,
    map: &LabelMap,
    source: Option<&SourceSeries>,
    opts: &SegOptions,
) -> Result<(InMemDicomObject, Written), DicomError> {
    let g = labels.geometry();
    check_source(source, g, out)?;
    let segments: Vec<(u8, &str)> = map.foreground().collect();
    if segments.is_empty() {
        return Err(file_err(out, "the label map has no foreground labels"));
    }
    if let Some(v) = labels
        .as_slice()
        .iter()
        .find(|v| **v != 0 && map.name(**v).is_none())
    {
        return Err(file_err(
            out,
            format!("the labels contain value {v}, which the label map does not name"),
        ));
    }
    let [ni, nj, nk] = g.shape;
    let plane = ni * nj;
    let data = labels.as_slice();
    // (segment number, label value, k) of every frame, segment-major as highdicom orders them.
    let mut frames: Vec<(u16, u8, usize)> = Vec::new();
    for (n, (value, _)) in segments.iter().enumerate() {
        for k in 0..nk {
            if data[k * plane..(k + 1) * plane].contains(value) {
                frames.push((n as u16 + 1, *value, k));
            }
        }
    }
    if frames.is_empty() {
        frames.push((1, segments[0].0, 0));
    }

    let DerivedIdentity {
        study_uid,
        for_uid,
        series_uid,
        sop_uid,
        date,
        time,
        patient,
    } = derived_identity(source);

    let d = g.direction;
    let orientation = [d[0][0], d[1][0], d[2][0], d[0][1], d[1][1], d[2][1]];
    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
        s(tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY"),
        s(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
        s(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
        s(tags::CONTENT_DATE, VR::DA, date.clone()),
        s(tags::CONTENT_TIME, VR::TM, time.clone()),
        s(tags::SERIES_DATE, VR::DA, date.clone()),
        s(tags::SERIES_TIME, VR::TM, time.clone()),
        s(tags::MODALITY, VR::CS, "SEG"),
        s(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
        is(tags::SERIES_NUMBER, opts.series_number),
        is(tags::INSTANCE_NUMBER, 1),
        s(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid.clone()),
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        s(tags::CONTENT_LABEL, VR::CS, "GLANDS"),
        s(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            "Salivary and lacrimal glands (glandseg)",
        ),
        s(tags::CONTENT_CREATOR_NAME, VR::PN, "glandseg^"),
        us(tags::SAMPLES_PER_PIXEL, 1),
        s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        us(tags::ROWS, nj as u16),
        us(tags::COLUMNS, ni as u16),
        us(tags::BITS_ALLOCATED, 1),
        us(tags::BITS_STORED, 1),
        us(tags::HIGH_BIT, 0),
        us(tags::PIXEL_REPRESENTATION, 0),
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        s(tags::SEGMENTATION_TYPE, VR::CS, "BINARY"),
        is(tags::NUMBER_OF_FRAMES, frames.len() as i64),
    ];
    if ni > u16::MAX as usize || nj > u16::MAX as usize {
        return Err(file_err(
            out,
            format!("slices of {ni}x{nj} exceed DICOM's 65535 rows/columns"),
        ));
    }
    e.extend(patient_study_elems(&patient, &study_uid));
    e.extend(equipment_elems());

    // Segments.
    let seg_items: Vec<InMemDicomObject> = segments
        .iter()
        .enumerate()
        .map(|(n, (value, name))| {
            let c = coding_for(name);
            let mut type_item = c.property_type.item();
            let mut items = vec![
                us(tags::SEGMENT_NUMBER, n as u16 + 1),
                s(tags::SEGMENT_LABEL, VR::LO, *name),
                s(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
                s(tags::SEGMENT_ALGORITHM_NAME, VR::LO, "glandseg"),
                sq(
                    tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                    vec![obj(vec![
                        sq(
                            tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                            vec![code("123110", "DCM", "Artificial Intelligence")],
                        ),
                        s(tags::ALGORITHM_NAME, VR::LO, "glandseg"),
                        s(tags::ALGORITHM_VERSION, VR::LO, SOFTWARE_VERSION),
                        s(
                            tags::ALGORITHM_PARAMETERS,
                            VR::LT,
                            format!("model={}", opts.model_name),
                        ),
                    ])],
                ),
                sq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![c.category.item()],
                ),
                us_multi(
                    tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                    &rgb_to_dicom_lab(label_colour(*value)),
                ),
            ];
            if let Some(side) = &c.laterality {
                type_item.put(sq(
                    tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                    vec![side.item()],
                ));
                let mut region = c.property_type.item();
                region.put(sq(
                    tags::ANATOMIC_REGION_MODIFIER_SEQUENCE,
                    vec![side.item()],
                ));
                items.push(sq(tags::ANATOMIC_REGION_SEQUENCE, vec![region]));
            }
            items.push(sq(
                tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                vec![type_item],
            ));
            obj(items)
        })
        .collect();
    e.push(sq(tags::SEGMENT_SEQUENCE, seg_items));

    // Dimensions: segment, then position.
    let dim_uid = new_uid();
    let dim = |index: Tag, group: Tag, label: &str| {
        obj(vec![
            s(tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_uid.clone()),
            DataElement::new(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::from(index),
            ),
            DataElement::new(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::from(group),
            ),
            s(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    e.push(sq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![obj(vec![s(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            dim_uid.clone(),
        )])],
    ));
    e.push(s(tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D"));
    e.push(sq(
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    ));

    e.push(sq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![obj(vec![
            sq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![obj(vec![
                    // PixelSpacing is (between rows, between columns) = (j, i).
                    ds(tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]),
                    ds(tags::SLICE_THICKNESS, &[g.spacing[2]]),
                    ds(tags::SPACING_BETWEEN_SLICES, &[g.spacing[2]]),
                ])],
            ),
            sq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![obj(vec![ds(tags::IMAGE_ORIENTATION_PATIENT, &orientation)])],
            ),
        ])],
    ));

    let mut per_frame = Vec::with_capacity(frames.len());
    for (seg_no, _, k) in &frames {
        let pos = g.index_to_world([0.0, 0.0, *k as f64]);
        let mut items = Vec::new();
        if let Some(src) = source {
            items.push(sq(
                tags::DERIVATION_IMAGE_SEQUENCE,
                vec![obj(vec![
                    sq(
                        tags::DERIVATION_CODE_SEQUENCE,
                        vec![code("113076", "DCM", "Segmentation")],
                    ),
                    sq(
                        tags::SOURCE_IMAGE_SEQUENCE,
                        vec![obj(vec![
                            s(
                                tags::REFERENCED_SOP_CLASS_UID,
                                VR::UI,
                                src.sop_class_uid.clone(),
                            ),
                            s(
                                tags::REFERENCED_SOP_INSTANCE_UID,
                                VR::UI,
                                src.sop_instance_uids[*k].clone(),
                            ),
                            sq(
                                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                                vec![code(
                                    "121322",
                                    "DCM",
                                    "Source image for image processing operation",
                                )],
                            ),
                        ])],
                    ),
                ])],
            ));
        }
        items.push(sq(
            tags::FRAME_CONTENT_SEQUENCE,
            vec![obj(vec![ul_multi(
                tags::DIMENSION_INDEX_VALUES,
                &[*seg_no as u32, *k as u32 + 1],
            )])],
        ));
        items.push(sq(
            tags::PLANE_POSITION_SEQUENCE,
            vec![obj(vec![ds(tags::IMAGE_POSITION_PATIENT, &pos)])],
        ));
        items.push(sq(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            vec![obj(vec![us(tags::REFERENCED_SEGMENT_NUMBER, *seg_no)])],
        ));
        per_frame.push(obj(items));
    }
    e.push(sq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));

    if let Some(src) = source {
        let mut ks: Vec<usize> = frames.iter().map(|f| f.2).collect();
        ks.sort_unstable();
        ks.dedup();
        let instances = ks
            .iter()
            .map(|k| {
                obj(vec![
                    s(
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        src.sop_class_uid.clone(),
                    ),
                    s(
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        src.sop_instance_uids[*k].clone(),
                    ),
                ])
            })
            .collect();
        e.push(sq(
            tags::REFERENCED_SERIES_SEQUENCE,
            vec![obj(vec![
                s(
                    tags::SERIES_INSTANCE_UID,
                    VR::UI,
                    src.series_instance_uid.clone(),
                ),
                sq(tags::REFERENCED_INSTANCE_SEQUENCE, instances),
            ])],
        ));
    }

    // Pixel data: frame f, pixel p -> bit f * plane + p, least significant bit first.
    let total_bits = frames.len() * plane;
    let mut bits = vec![0u8; total_bits.div_ceil(8)];
    for (f, (_, value, k)) in frames.iter().enumerate() {
        let base = f * plane;
        for (p, v) in data[k * plane..(k + 1) * plane].iter().enumerate() {
            if v == value {
                let b = base + p;
                bits[b / 8] |= 1 << (b % 8);
            }
        }
    }
    if bits.len() % 2 == 1 {
        bits.push(0);
    }
    e.push(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8(C::from(bits)),
    ));

    let written = Written {
        path: out.to_path_buf(),
        sop_instance_uid: sop_uid,
        series_instance_uid: series_uid,
        study_instance_uid: study_uid,
        frame_of_reference_uid: for_uid,
        items: frames.len(),
    };
    Ok((obj(e), written))
}

/// One segment as a SEG describes it.
#[derive(Clone, Debug, Serialize)]
pub struct SegmentInfo {
    pub number: u16,
    pub label: String,
    pub algorithm_type: String,
    pub category: Option<Code>,
    pub property_type: Option<Code>,
    /// SegmentedPropertyTypeModifier (laterality), else AnatomicRegionModifier.
    pub modifier: Option<Code>,
}

/// One frame: its segment, its slice in [`SegFile::labels`], its foreground count.
#[derive(Clone, Debug, Serialize)]
pub struct SegFrame {
    pub segment: u16,
    pub position: [f64; 3],
    pub k: usize,
    pub foreground: usize,
    /// The source image (DerivationImageSequence > SourceImageSequence), if referenced.
    pub source_sop_instance_uid: Option<String>,
}

/// A SEG read back.
#[derive(Clone, Debug)]
pub struct SegFile {
    /// The file it was read from (named in later errors).
    pub path: std::path::PathBuf,
    /// Segment numbers as voxel values, on the grid spanned by the frames (slice step =
    /// SpacingBetweenSlices, else the smallest gap between frame positions). Where BINARY
    /// segments overlap, the higher segment number wins.
    pub labels: Volume<u8>,
    pub segments: Vec<SegmentInfo>,
    /// Frames that carry pixel data, in file order.
    pub frames: Vec<SegFrame>,
    pub frame_of_reference_uid: Option<String>,
    /// Things a careful reader should know (e.g. functional-group items without pixels).
    pub warnings: Vec<String>,
}

impl SegFile {
    /// The label map `segment number -> SegmentLabel`.
    pub fn label_map(&self) -> Result<LabelMap, DicomError> {
        let mut entries = vec![(0u8, "background".to_string())];
        for s in &self.segments {
            entries.push((s.number as u8, s.label.clone()));
        }
        LabelMap::new(entries).map_err(|e| file_err(&self.path, e.to_string()))
    }

    /// The labels placed on `grid` (e.g. the CT's) with values of `map`, matched by
    /// segment label. The grids must share in-plane orientation and spacing and be offset
    /// by whole voxels; foreground outside `grid` or an unknown segment label is an error.
    pub fn labels_on(&self, grid: &Geometry, map: &LabelMap) -> Result<Volume<u8>, DicomError> {
        let err = |msg: String| file_err(&self.path, msg);
        let mut lut = [0u8; 256];
        for s in &self.segments {
            let v = map.value(&s.label).ok_or_else(|| {
                err(format!(
                    "segment {} {:?} is not in the label map",
                    s.number, s.label
                ))
            })?;
            lut[s.number as usize & 0xFF] = v;
        }
        place_on_grid(&self.labels, grid, &lut).map_err(err)
    }
}

/// Copies `src` onto `grid` through `lut`, slice by slice, when the two grids differ only
/// by whole-voxel offsets (and possibly slice order).
pub(crate) fn place_on_grid(
    src: &Volume<u8>,
    grid: &Geometry,
    lut: &[u8; 256],
) -> Result<Volume<u8>, String> {
    let sg = src.geometry();
    for c in 0..2 {
        let same_dir = (0..3).all(|r| (sg.direction[r][c] - grid.direction[r][c]).abs() < 1e-4);
        if !same_dir || (sg.spacing[c] - grid.spacing[c]).abs() > 1e-4 * grid.spacing[c] {
            return Err(format!(
                "the SEG's in-plane grid (spacing {:?}, direction {:?}) differs from the target's ({:?}, {:?})",
                sg.spacing, sg.direction, grid.spacing, grid.direction
            ));
        }
    }
    let mut out = Volume::filled(grid.clone(), 0u8);
    let [ni, nj, nk] = sg.shape;
    let [ti, tj, tk] = grid.shape;
    for k in 0..nk {
        let p = grid.world_to_index(sg.index_to_world([0.0, 0.0, k as f64]));
        let r = [p[0].round(), p[1].round(), p[2].round()];
        if (0..3).any(|a| (p[a] - r[a]).abs() > 1e-3) {
            return Err(format!(
                "slice {k} of the SEG falls at index {p:?} of the target grid, not on a voxel"
            ));
        }
        let (oi, oj, ok) = (r[0] as i64, r[1] as i64, r[2] as i64);
        for j in 0..nj {
            for i in 0..ni {
                let v = lut[*src.get(i, j, k) as usize];
                if v == 0 {
                    continue;
                }
                let (x, y, z) = (i as i64 + oi, j as i64 + oj, ok);
                if x < 0 || y < 0 || z < 0 || x >= ti as i64 || y >= tj as i64 || z >= tk as i64 {
                    return Err(format!(
                        "foreground at SEG voxel ({i}, {j}, {k}) is outside the target grid"
                    ));
                }
                out.set(x as usize, y as usize, z as usize, v);
            }
        }
    }
    Ok(out)
}

/// The functional-group item `group` of frame `f`: per-frame first, then shared.
fn group<'a>(
    per_frame: Option<&'a InMemDicomObject>,
    shared: Option<&'a InMemDicomObject>,
    group: Tag,
) -> Option<&'a InMemDicomObject> {
    per_frame
        .and_then(|p| first_item(p, group))
        .or_else(|| shared.and_then(|s| first_item(s, group)))
}

/// Reads a BINARY (or FRACTIONAL, thresholded at half the maximum) SEG whose frames are
/// parallel planes; errors name the file and the attribute at fault.
pub fn read_seg(path: &Path) -> Result<SegFile, DicomError> {
    read_seg_with(path, &|_| true).map(|(seg, _)| seg)
}

/// [`read_seg`] painting only the segments `keep` accepts into [`SegFile::labels`], and
/// counting the voxels where a kept segment lands on another kept one (the higher number
/// wins). Conversion needs both: an unmapped segment (a body outline, say) must not
/// overwrite a gland it overlaps, and overlaps between glands are worth reporting.
pub(crate) fn read_seg_with(
    path: &Path,
    keep: &dyn Fn(&SegmentInfo) -> bool,
) -> Result<(SegFile, usize), DicomError> {
    let o = open(path)?;
    let fail = |msg: String| file_err(path, msg);
    let sop = get_str(&o, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop != SEGMENTATION_STORAGE {
        return Err(fail(format!(
            "SOPClassUID (0008,0016) is {sop:?}, not Segmentation Storage ({SEGMENTATION_STORAGE})"
        )));
    }
    let seg_type = get_str(&o, tags::SEGMENTATION_TYPE)
        .ok_or_else(|| fail("SegmentationType (0062,0001) is missing".into()))?;
    let rows = get_int(&o, tags::ROWS)
        .filter(|v| *v > 0)
        .ok_or_else(|| fail("Rows (0028,0010) is missing or 0".into()))? as usize;
    let cols = get_int(&o, tags::COLUMNS)
        .filter(|v| *v > 0)
        .ok_or_else(|| fail("Columns (0028,0011) is missing or 0".into()))? as usize;
    let bits = get_int(&o, tags::BITS_ALLOCATED)
        .ok_or_else(|| fail("BitsAllocated (0028,0100) is missing".into()))?;
    let threshold = match (seg_type.as_str(), bits) {
        ("BINARY", 1) => 1u32,
        ("FRACTIONAL", 8) => {
            let max = get_int(&o, tags::MAXIMUM_FRACTIONAL_VALUE).unwrap_or(255).max(1);
            (max as u32).div_ceil(2)
        }
        (t, b) => {
            return Err(fail(format!(
                "SegmentationType (0062,0001) {t} with BitsAllocated (0028,0100) {b} is not supported (BINARY/1 or FRACTIONAL/8)"
            )))
        }
    };

    let mut segments = Vec::new();
    for (n, item) in get_items(&o, tags::SEGMENT_SEQUENCE)
        .ok_or_else(|| fail("SegmentSequence (0062,0002) is missing".into()))?
        .iter()
        .enumerate()
    {
        let number = get_int(item, tags::SEGMENT_NUMBER)
            .filter(|v| (1..=255).contains(v))
            .ok_or_else(|| {
                fail(format!(
                    "SegmentSequence item {n}: SegmentNumber (0062,0004) missing or not 1..255"
                ))
            })? as u16;
        let type_item = first_item(item, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE);
        let modifier = type_item
            .and_then(|t| first_item(t, tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE))
            .or_else(|| {
                first_item(item, tags::ANATOMIC_REGION_SEQUENCE)
                    .and_then(|r| first_item(r, tags::ANATOMIC_REGION_MODIFIER_SEQUENCE))
            })
            .and_then(Code::read);
        segments.push(SegmentInfo {
            number,
            label: get_str(item, tags::SEGMENT_LABEL)
                .unwrap_or_else(|| format!("segment_{number}")),
            algorithm_type: get_str(item, tags::SEGMENT_ALGORITHM_TYPE).unwrap_or_default(),
            category: first_item(item, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE)
                .and_then(Code::read),
            property_type: type_item.and_then(Code::read),
            modifier,
        });
    }

    let shared = first_item(&o, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = get_items(&o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .ok_or_else(|| fail("PerFrameFunctionalGroupsSequence (5200,9230) is missing".into()))?;
    let pixel_el = o
        .element_opt(tags::PIXEL_DATA)
        .ok()
        .flatten()
        .ok_or_else(|| fail("PixelData (7FE0,0010) is missing".into()))?;
    if pixel_el.value().fragments().is_some() {
        return Err(fail(
            "PixelData (7FE0,0010) is encapsulated (compressed); only native SEG pixel data is read".into(),
        ));
    }
    let pixels = pixel_el.to_bytes().map_err(|e| {
        fail(format!(
            "PixelData (7FE0,0010) cannot be read as bytes: {e}"
        ))
    })?;
    let plane = rows * cols;
    let bits_per_frame = plane * bits as usize;
    let in_pixels = pixels.len() * 8 / bits_per_frame;
    let mut warnings = Vec::new();
    let n_frames = match get_int(&o, tags::NUMBER_OF_FRAMES) {
        Some(n) if n > 0 => {
            let n = n as usize;
            if n > in_pixels {
                return Err(fail(format!(
                    "NumberOfFrames (0028,0008) is {n} but PixelData (7FE0,0010) holds {} bytes, enough for {in_pixels} frames of {rows}x{cols}",
                    pixels.len()
                )));
            }
            n
        }
        Some(n) => return Err(fail(format!("NumberOfFrames (0028,0008) is {n}"))),
        None => {
            warnings.push(format!(
                "NumberOfFrames (0028,0008) is missing; PixelData holds {in_pixels} frame(s)"
            ));
            in_pixels
        }
    };
    if n_frames == 0 {
        return Err(fail("PixelData (7FE0,0010) holds no complete frame".into()));
    }
    if per_frame.len() < n_frames {
        return Err(fail(format!(
            "PerFrameFunctionalGroupsSequence (5200,9230) has {} items for {n_frames} frames",
            per_frame.len()
        )));
    }
    if per_frame.len() > n_frames {
        warnings.push(format!(
            "PerFrameFunctionalGroupsSequence has {} items but only {n_frames} frame(s) of pixel data; the extra items are ignored",
            per_frame.len()
        ));
    }

    // Geometry from the first frame's groups (all frames must agree).
    let orient = group(per_frame.first(), shared, tags::PLANE_ORIENTATION_SEQUENCE)
        .and_then(|g| get_floats(g, tags::IMAGE_ORIENTATION_PATIENT))
        .filter(|v| v.len() == 6)
        .ok_or_else(|| {
            fail("PlaneOrientationSequence > ImageOrientationPatient (0020,0037) is missing".into())
        })?;
    let measures = group(per_frame.first(), shared, tags::PIXEL_MEASURES_SEQUENCE)
        .ok_or_else(|| fail("PixelMeasuresSequence (0028,9110) is missing".into()))?;
    let ps = get_floats(measures, tags::PIXEL_SPACING)
        .filter(|v| v.len() == 2 && v[0] > 0.0 && v[1] > 0.0)
        .ok_or_else(|| {
            fail("PixelMeasuresSequence > PixelSpacing (0028,0030) is missing".into())
        })?;
    let between = get_floats(measures, tags::SPACING_BETWEEN_SLICES)
        .and_then(|v| v.first().copied())
        .filter(|v| *v > 0.0);
    let thickness = get_floats(measures, tags::SLICE_THICKNESS)
        .and_then(|v| v.first().copied())
        .filter(|v| *v > 0.0);
    let row = [orient[0], orient[1], orient[2]];
    let col = [orient[3], orient[4], orient[5]];
    let normal = [
        row[1] * col[2] - row[2] * col[1],
        row[2] * col[0] - row[0] * col[2],
        row[0] * col[1] - row[1] * col[0],
    ];
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];

    let mut raw = Vec::with_capacity(n_frames);
    for (f, item) in per_frame.iter().take(n_frames).enumerate() {
        let pos = group(Some(item), shared, tags::PLANE_POSITION_SEQUENCE)
            .and_then(|g| get_floats(g, tags::IMAGE_POSITION_PATIENT))
            .filter(|v| v.len() == 3)
            .ok_or_else(|| {
                fail(format!("frame {f}: PlanePositionSequence > ImagePositionPatient (0020,0032) is missing"))
            })?;
        let o2 = group(Some(item), None, tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|g| get_floats(g, tags::IMAGE_ORIENTATION_PATIENT));
        if let Some(o2) = o2 {
            if o2.len() != 6 || o2.iter().zip(&orient).any(|(a, b)| (a - b).abs() > 1e-4) {
                return Err(fail(format!(
                    "frame {f}: ImageOrientationPatient {o2:?} differs from frame 0's {orient:?}"
                )));
            }
        }
        let seg = group(Some(item), shared, tags::SEGMENT_IDENTIFICATION_SEQUENCE)
            .and_then(|g| get_int(g, tags::REFERENCED_SEGMENT_NUMBER))
            .ok_or_else(|| {
                fail(format!("frame {f}: SegmentIdentificationSequence > ReferencedSegmentNumber (0062,000B) is missing"))
            })?;
        if !segments.iter().any(|s| s.number as i64 == seg) {
            return Err(fail(format!(
                "frame {f}: ReferencedSegmentNumber {seg} is not in SegmentSequence"
            )));
        }
        let src_uid = first_item(item, tags::DERIVATION_IMAGE_SEQUENCE)
            .and_then(|d| first_item(d, tags::SOURCE_IMAGE_SEQUENCE))
            .and_then(|s| get_str(s, tags::REFERENCED_SOP_INSTANCE_UID));
        raw.push((seg as u16, [pos[0], pos[1], pos[2]], src_uid));
    }

    // Slice grid along the normal.
    let mut proj: Vec<f64> = raw.iter().map(|r| dot(r.1, normal)).collect();
    proj.sort_by(f64::total_cmp);
    let lo = proj[0];
    let mut distinct: Vec<f64> = Vec::new();
    for p in &proj {
        if distinct.last().is_none_or(|l| p - l > 1e-3) {
            distinct.push(*p);
        }
    }
    let min_gap = if distinct.len() > 1 {
        distinct
            .windows(2)
            .map(|w| w[1] - w[0])
            .fold(f64::INFINITY, f64::min)
    } else {
        thickness.unwrap_or(1.0)
    };
    let first_pos = raw
        .iter()
        .find(|r| (dot(r.1, normal) - lo).abs() <= 1e-3)
        .map(|r| r.1)
        .unwrap_or(raw[0].1);
    for (f, r) in raw.iter().enumerate() {
        let d = [
            r.1[0] - first_pos[0],
            r.1[1] - first_pos[1],
            r.1[2] - first_pos[2],
        ];
        let inplane = (dot(d, row).powi(2) + dot(d, col).powi(2)).sqrt();
        if inplane > 1e-2 {
            return Err(fail(format!(
                "frame {f}: ImagePositionPatient {:?} is shifted in-plane by {inplane:.3} mm from the first slice; frames must lie on one stack",
                r.1
            )));
        }
    }
    // Slice index of every frame for a step: SpacingBetweenSlices when the frames sit on
    // its multiples (it keeps the gaps of slices without foreground), else the smallest
    // gap between frames (some writers state a SpacingBetweenSlices that is not the step).
    let place = |step: f64| -> Result<Vec<usize>, String> {
        raw.iter()
            .enumerate()
            .map(|(f, r)| {
                let d = [r.1[0] - first_pos[0], r.1[1] - first_pos[1], r.1[2] - first_pos[2]];
                let kf = dot(d, normal) / step;
                if (kf - kf.round()).abs() > 0.05 {
                    Err(format!(
                        "frame {f}: position {:?} is {kf:.3} slice steps ({step} mm) from the first slice, not a whole number",
                        r.1
                    ))
                } else {
                    Ok(kf.round().max(0.0) as usize)
                }
            })
            .collect()
    };
    let (step, ks) = match between.map(|b| (b, place(b))) {
        Some((b, Ok(ks))) => (b, ks),
        _ => (min_gap, place(min_gap).map_err(fail)?),
    };
    let nk = ks.iter().max().copied().unwrap_or(0) + 1;
    // A stack this long means inconsistent positions, not a real scan: refuse it rather
    // than allocate gigabytes.
    if nk > 20_000 || nk.saturating_mul(plane) > 1 << 32 {
        return Err(fail(format!(
            "the frames span {nk} slices of {step} mm ({rows}x{cols}): ImagePositionPatient or SpacingBetweenSlices is inconsistent"
        )));
    }
    let geometry = Geometry {
        shape: [cols, rows, nk],
        spacing: [ps[1], ps[0], step],
        origin: first_pos,
        direction: [
            [row[0], col[0], normal[0]],
            [row[1], col[1], normal[1]],
            [row[2], col[2], normal[2]],
        ],
    };
    geometry
        .validate()
        .map_err(|e| fail(format!("the frames' geometry is invalid: {e}")))?;
    let mut kept = [false; 256];
    for seg in segments.iter().filter(|s| keep(s)) {
        kept[seg.number as usize & 0xFF] = true;
    }
    let mut overlaps = 0;
    let mut labels = Volume::filled(geometry, 0u8);
    let mut frames = Vec::with_capacity(n_frames);
    let data = labels.as_slice_mut();
    for (f, ((seg, pos, src), k)) in raw.into_iter().zip(ks).enumerate() {
        let mut count = 0;
        let out = &mut data[k * plane..(k + 1) * plane];
        for (p, v) in out.iter_mut().enumerate() {
            let on = if bits == 1 {
                let b = f * plane + p;
                (pixels[b / 8] >> (b % 8)) & 1 == 1
            } else {
                pixels[f * plane + p] as u32 >= threshold
            };
            if on {
                count += 1;
                if kept[seg as usize & 0xFF] {
                    if *v != 0 && *v != seg as u8 {
                        overlaps += 1;
                    }
                    if *v < seg as u8 {
                        *v = seg as u8;
                    }
                }
            }
        }
        frames.push(SegFrame {
            segment: seg,
            position: pos,
            k,
            foreground: count,
            source_sop_instance_uid: src,
        });
    }
    Ok((
        SegFile {
            path: path.to_path_buf(),
            labels,
            segments,
            frames,
            frame_of_reference_uid: get_str(&o, tags::FRAME_OF_REFERENCE_UID),
            warnings,
        },
        overlaps,
    ))
}
