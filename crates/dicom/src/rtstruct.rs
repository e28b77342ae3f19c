//! RT Structure Set (RTSTRUCT) out and in: the form radiotherapy planning systems take
//! organs in, as closed planar contours on the CT's axial slices.
//!
//! Contours are the exact outline of the voxels: the boundary edges of the foreground
//! pixels of each slice, at the pixel corners (centre ± half a voxel), linked into closed
//! loops with collinear points dropped. A hole becomes a separate contour. Filling the
//! contours of a slice with the even-odd rule at the pixel centres — which is what
//! [`read_rtstruct`] and most planning systems do — gives back exactly the voxels written,
//! so the round trip is lossless on the source grid.

use crate::dataset::*;
use crate::seg::{check_source, label_colour, Written};
use crate::series::DicomError;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use glandseg_core::{Geometry, LabelMap, Volume};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// What goes into an RTSTRUCT besides the contours.
#[derive(Clone, Debug)]
pub struct RtStructOptions {
    pub structure_set_label: String,
    pub series_description: String,
    pub series_number: i64,
}

impl Default for RtStructOptions {
    fn default() -> Self {
        RtStructOptions {
            structure_set_label: "glandseg".into(),
            series_description: "glandseg contours".into(),
            series_number: 301,
        }
    }
}

/// Closed boundary loops of one slice's mask, as corner coordinates `(x, y)`: corner
/// `(x, y)` is the point `(x - 0.5, y - 0.5)` in voxel-index space.
pub fn slice_contours(mask: &[bool], ni: usize, nj: usize) -> Vec<Vec<(i64, i64)>> {
    let at = |i: i64, j: i64| {
        i >= 0
            && j >= 0
            && (i as usize) < ni
            && (j as usize) < nj
            && mask[j as usize * ni + i as usize]
    };
    // Directed edges with the foreground on one consistent side.
    let mut edges: Vec<((i64, i64), (i64, i64))> = Vec::new();
    for j in 0..nj as i64 {
        for i in 0..ni as i64 {
            if !at(i, j) {
                continue;
            }
            if !at(i, j - 1) {
                edges.push(((i + 1, j), (i, j)));
            }
            if !at(i - 1, j) {
                edges.push(((i, j), (i, j + 1)));
            }
            if !at(i, j + 1) {
                edges.push(((i, j + 1), (i + 1, j + 1)));
            }
            if !at(i + 1, j) {
                edges.push(((i + 1, j + 1), (i + 1, j)));
            }
        }
    }
    let mut from: HashMap<(i64, i64), Vec<usize>> = HashMap::new();
    for (n, e) in edges.iter().enumerate() {
        from.entry(e.0).or_default().push(n);
    }
    let mut used = vec![false; edges.len()];
    let mut loops = Vec::new();
    for start in 0..edges.len() {
        if used[start] {
            continue;
        }
        used[start] = true;
        let origin = edges[start].0;
        let mut pts = vec![origin];
        let mut cur = start;
        loop {
            let (a, b) = edges[cur];
            if b == origin {
                break;
            }
            pts.push(b);
            let dir = (b.0 - a.0, b.1 - a.1);
            // At a corner shared by two diagonal pixels there are two ways on; take the
            // sharper turn so that diagonal neighbours get separate loops.
            let next = from
                .get(&b)
                .into_iter()
                .flatten()
                .copied()
                .filter(|n| !used[*n])
                .min_by_key(|n| {
                    let e = edges[*n];
                    let d = (e.1 .0 - e.0 .0, e.1 .1 - e.0 .1);
                    dir.0 * d.1 - dir.1 * d.0
                });
            let Some(next) = next else { break };
            used[next] = true;
            cur = next;
        }
        // Drop points where the direction does not change.
        let n = pts.len();
        let simplified: Vec<(i64, i64)> = (0..n)
            .filter(|&m| {
                let p = pts[(m + n - 1) % n];
                let c = pts[m];
                let q = pts[(m + 1) % n];
                (c.0 - p.0) * (q.1 - c.1) - (c.1 - p.1) * (q.0 - c.0) != 0
            })
            .map(|m| pts[m])
            .collect();
        if simplified.len() >= 3 {
            loops.push(simplified);
        }
    }
    loops
}

/// Writes one ROI per foreground label of `map` (labels absent from the volume give an ROI
/// with no contours) as an RTSTRUCT at `out`, atomically. `labels` must be on the grid of
/// `source` when given; contours then reference their CT slice.
pub fn write_rtstruct(
    out: &Path,
    labels: &Volume<u8>,
    map: &LabelMap,
    source: Option<&SourceSeries>,
    opts: &RtStructOptions,
) -> Result<Written, DicomError> {
    let g = labels.geometry();
    check_source(source, g, out)?;
    let rois: Vec<(u8, &str)> = map.foreground().collect();
    if rois.is_empty() {
        return Err(file_err(out, "the label map has no foreground labels"));
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
    let [ni, nj, nk] = g.shape;
    let plane = ni * nj;
    let data = labels.as_slice();

    let mut e = vec![
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        s(tags::SOP_CLASS_UID, VR::UI, RT_STRUCTURE_SET_STORAGE),
        s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid.clone()),
        s(tags::INSTANCE_CREATION_DATE, VR::DA, date.clone()),
        s(tags::INSTANCE_CREATION_TIME, VR::TM, time.clone()),
        s(tags::MODALITY, VR::CS, "RTSTRUCT"),
        s(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            opts.series_description.clone(),
        ),
        s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.clone()),
        is(tags::SERIES_NUMBER, opts.series_number),
        s(tags::SERIES_DATE, VR::DA, date.clone()),
        s(tags::SERIES_TIME, VR::TM, time.clone()),
        s(tags::OPERATORS_NAME, VR::PN, ""),
        is(tags::INSTANCE_NUMBER, 1),
        s(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid.clone()),
        s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        s(
            tags::STRUCTURE_SET_LABEL,
            VR::SH,
            opts.structure_set_label.clone(),
        ),
        s(
            tags::STRUCTURE_SET_NAME,
            VR::LO,
            opts.structure_set_label.clone(),
        ),
        s(tags::STRUCTURE_SET_DATE, VR::DA, date.clone()),
        s(tags::STRUCTURE_SET_TIME, VR::TM, time.clone()),
        s(tags::APPROVAL_STATUS, VR::CS, "UNAPPROVED"),
    ];
    e.extend(patient_study_elems(&patient, &study_uid));
    e.extend(equipment_elems());

    let contour_image = |k: usize| {
        source.map(|src| {
            sq(
                tags::CONTOUR_IMAGE_SEQUENCE,
                vec![obj(vec![
                    s(
                        tags::REFERENCED_SOP_CLASS_UID,
                        VR::UI,
                        src.sop_class_uid.clone(),
                    ),
                    s(
                        tags::REFERENCED_SOP_INSTANCE_UID,
                        VR::UI,
                        src.sop_instance_uids[k].clone(),
                    ),
                ])],
            )
        })
    };
    let mut for_item = vec![s(tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid.clone())];
    if let Some(src) = source {
        let images = (0..nk)
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
                        src.sop_instance_uids[k].clone(),
                    ),
                ])
            })
            .collect();
        for_item.push(sq(
            tags::RT_REFERENCED_STUDY_SEQUENCE,
            vec![obj(vec![
                // Detached Study Management SOP Class: what RT objects conventionally cite.
                s(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    "1.2.840.10008.3.1.2.3.1",
                ),
                s(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, study_uid.clone()),
                sq(
                    tags::RT_REFERENCED_SERIES_SEQUENCE,
                    vec![obj(vec![
                        s(
                            tags::SERIES_INSTANCE_UID,
                            VR::UI,
                            src.series_instance_uid.clone(),
                        ),
                        sq(tags::CONTOUR_IMAGE_SEQUENCE, images),
                    ])],
                ),
            ])],
        ));
    }
    e.push(sq(
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![obj(for_item)],
    ));

    let mut roi_items = Vec::new();
    let mut contour_items = Vec::new();
    let mut obs_items = Vec::new();
    let mut total = 0;
    for (n, (value, name)) in rois.iter().enumerate() {
        let number = n as i64 + 1;
        roi_items.push(obj(vec![
            is(tags::ROI_NUMBER, number),
            s(
                tags::REFERENCED_FRAME_OF_REFERENCE_UID,
                VR::UI,
                for_uid.clone(),
            ),
            s(tags::ROI_NAME, VR::LO, *name),
            s(tags::ROI_GENERATION_ALGORITHM, VR::CS, "AUTOMATIC"),
        ]));
        let mut contours = Vec::new();
        for k in 0..nk {
            let slice = &data[k * plane..(k + 1) * plane];
            if !slice.contains(value) {
                continue;
            }
            let mask: Vec<bool> = slice.iter().map(|v| v == value).collect();
            for lp in slice_contours(&mask, ni, nj) {
                let mut coords = Vec::with_capacity(lp.len() * 3);
                for (x, y) in &lp {
                    let w = g.index_to_world([*x as f64 - 0.5, *y as f64 - 0.5, k as f64]);
                    coords.extend(w.iter().map(|c| {
                        let t = format!("{c:.4}");
                        let t = t.trim_end_matches('0').trim_end_matches('.');
                        if t == "-0" || t.is_empty() {
                            "0".to_string()
                        } else {
                            t.to_string()
                        }
                    }));
                }
                let text = coords.join("\\");
                if text.len() > 65534 {
                    return Err(file_err(
                        out,
                        format!("ROI {name:?} slice {k}: a contour of {} points does not fit one ContourData (3006,0050) element", lp.len()),
                    ));
                }
                let mut item = Vec::new();
                if let Some(ci) = contour_image(k) {
                    item.push(ci);
                }
                item.push(is(tags::CONTOUR_NUMBER, contours.len() as i64 + 1));
                item.push(s(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR"));
                item.push(is(tags::NUMBER_OF_CONTOUR_POINTS, lp.len() as i64));
                item.push(s(tags::CONTOUR_DATA, VR::DS, text));
                contours.push(obj(item));
            }
        }
        total += contours.len();
        let c = label_colour(*value);
        let mut item = vec![
            s(
                tags::ROI_DISPLAY_COLOR,
                VR::IS,
                format!("{}\\{}\\{}", c[0], c[1], c[2]),
            ),
            is(tags::REFERENCED_ROI_NUMBER, number),
        ];
        if !contours.is_empty() {
            item.push(sq(tags::CONTOUR_SEQUENCE, contours));
        }
        contour_items.push(obj(item));
        obs_items.push(obj(vec![
            is(tags::OBSERVATION_NUMBER, number),
            is(tags::REFERENCED_ROI_NUMBER, number),
            s(tags::RTROI_INTERPRETED_TYPE, VR::CS, "ORGAN"),
            s(tags::ROI_INTERPRETER, VR::PN, ""),
        ]));
    }
    e.push(sq(tags::STRUCTURE_SET_ROI_SEQUENCE, roi_items));
    e.push(sq(tags::ROI_CONTOUR_SEQUENCE, contour_items));
    e.push(sq(tags::RTROI_OBSERVATIONS_SEQUENCE, obs_items));

    write_file(obj(e), out)?;
    Ok(Written {
        path: out.to_path_buf(),
        sop_instance_uid: sop_uid,
        series_instance_uid: series_uid,
        study_instance_uid: study_uid,
        frame_of_reference_uid: for_uid,
        items: total,
    })
}

/// One contour as stored.
#[derive(Clone, Debug, Serialize)]
pub struct Contour {
    pub geometric_type: String,
    /// LPS mm.
    pub points: Vec<[f64; 3]>,
    /// ContourImageSequence's first ReferencedSOPInstanceUID, if any.
    pub referenced_sop_instance_uid: Option<String>,
}

/// One ROI with its contours.
#[derive(Clone, Debug, Serialize)]
pub struct Roi {
    pub number: i64,
    pub name: String,
    pub interpreted_type: Option<String>,
    pub colour: Option<[u8; 3]>,
    pub contours: Vec<Contour>,
}

/// An RTSTRUCT's ROIs and contours, not rasterised.
#[derive(Clone, Debug, Serialize)]
pub struct RtStruct {
    pub structure_set_label: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub rois: Vec<Roi>,
}

/// One ROI filled on a grid.
#[derive(Clone, Debug)]
pub struct RoiMask {
    pub number: i64,
    pub name: String,
    /// 1 inside, 0 outside.
    pub mask: Volume<u8>,
    /// Closed contours that were not on a slice of the grid (more than a quarter step
    /// away, or outside it) and so were not filled.
    pub contours_off_grid: usize,
}

/// Reads the ROIs and contours of an RTSTRUCT.
pub fn read_rtstruct_contours(path: &Path) -> Result<RtStruct, DicomError> {
    let o = open(path)?;
    let fail = |msg: String| file_err(path, msg);
    let sop = get_str(&o, tags::SOP_CLASS_UID).unwrap_or_default();
    if sop != RT_STRUCTURE_SET_STORAGE {
        return Err(fail(format!(
            "SOPClassUID (0008,0016) is {sop:?}, not RT Structure Set Storage ({RT_STRUCTURE_SET_STORAGE})"
        )));
    }
    let roi_seq = get_items(&o, tags::STRUCTURE_SET_ROI_SEQUENCE)
        .ok_or_else(|| fail("StructureSetROISequence (3006,0020) is missing".into()))?;
    let mut rois = Vec::new();
    for (n, item) in roi_seq.iter().enumerate() {
        let number = get_int(item, tags::ROI_NUMBER).ok_or_else(|| {
            fail(format!(
                "StructureSetROISequence item {n}: ROINumber (3006,0022) is missing"
            ))
        })?;
        rois.push(Roi {
            number,
            name: get_str(item, tags::ROI_NAME).unwrap_or_else(|| format!("roi_{number}")),
            interpreted_type: None,
            colour: None,
            contours: Vec::new(),
        });
    }
    for item in get_items(&o, tags::RTROI_OBSERVATIONS_SEQUENCE).unwrap_or(&[]) {
        let r = get_int(item, tags::REFERENCED_ROI_NUMBER);
        if let Some(roi) = rois.iter_mut().find(|x| Some(x.number) == r) {
            roi.interpreted_type = get_str(item, tags::RTROI_INTERPRETED_TYPE);
        }
    }
    for (n, item) in get_items(&o, tags::ROI_CONTOUR_SEQUENCE)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let r = get_int(item, tags::REFERENCED_ROI_NUMBER).ok_or_else(|| {
            fail(format!(
                "ROIContourSequence item {n}: ReferencedROINumber (3006,0084) is missing"
            ))
        })?;
        let roi = rois.iter_mut().find(|x| x.number == r).ok_or_else(|| {
            fail(format!("ROIContourSequence item {n}: ReferencedROINumber {r} is not in StructureSetROISequence"))
        })?;
        roi.colour = get_ints(item, tags::ROI_DISPLAY_COLOR)
            .filter(|c| c.len() == 3)
            .map(|c| {
                [
                    c[0].clamp(0, 255) as u8,
                    c[1].clamp(0, 255) as u8,
                    c[2].clamp(0, 255) as u8,
                ]
            });
        for (m, c) in get_items(item, tags::CONTOUR_SEQUENCE)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let data = get_floats(c, tags::CONTOUR_DATA).ok_or_else(|| {
                fail(format!(
                    "ROI {r} {:?} contour {m}: ContourData (3006,0050) is missing or not numbers",
                    roi.name
                ))
            })?;
            if data.len() % 3 != 0 {
                return Err(fail(format!(
                    "ROI {r} {:?} contour {m}: ContourData (3006,0050) has {} values, not x\\y\\z triplets",
                    roi.name,
                    data.len()
                )));
            }
            let points: Vec<[f64; 3]> = data.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
            if let Some(np) = get_int(c, tags::NUMBER_OF_CONTOUR_POINTS) {
                if np as usize != points.len() {
                    return Err(fail(format!(
                        "ROI {r} {:?} contour {m}: NumberOfContourPoints (3006,0046) is {np} but ContourData holds {} points",
                        roi.name,
                        points.len()
                    )));
                }
            }
            roi.contours.push(Contour {
                geometric_type: get_str(c, tags::CONTOUR_GEOMETRIC_TYPE).unwrap_or_default(),
                points,
                referenced_sop_instance_uid: first_item(c, tags::CONTOUR_IMAGE_SEQUENCE)
                    .and_then(|ci| get_str(ci, tags::REFERENCED_SOP_INSTANCE_UID)),
            });
        }
    }
    Ok(RtStruct {
        structure_set_label: get_str(&o, tags::STRUCTURE_SET_LABEL),
        frame_of_reference_uid: first_item(&o, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)
            .and_then(|f| get_str(f, tags::FRAME_OF_REFERENCE_UID)),
        rois,
    })
}

/// Fills the closed planar contours of every ROI on `grid` (even-odd rule per slice, so a
/// hole contour inside an outer one cuts it out), in the file's ROI order.
pub fn read_rtstruct(path: &Path, grid: &Geometry) -> Result<Vec<RoiMask>, DicomError> {
    let rt = read_rtstruct_contours(path)?;
    Ok(rt.rois.iter().map(|roi| rasterise(roi, grid)).collect())
}

/// Fills one ROI's closed contours on `grid`.
pub fn rasterise(roi: &Roi, grid: &Geometry) -> RoiMask {
    let [ni, nj, nk] = grid.shape;
    let mut off = 0;
    // Edges (x0, y0, x1, y1) in index space, per slice.
    let mut per_slice: HashMap<usize, Vec<[f64; 4]>> = HashMap::new();
    for c in &roi.contours {
        if c.geometric_type != "CLOSED_PLANAR" || c.points.len() < 3 {
            continue;
        }
        let idx: Vec<[f64; 3]> = c.points.iter().map(|p| grid.world_to_index(*p)).collect();
        let kf = idx.iter().map(|p| p[2]).sum::<f64>() / idx.len() as f64;
        let k = kf.round();
        if (kf - k).abs() > 0.25 || k < 0.0 || k >= nk as f64 {
            off += 1;
            continue;
        }
        let edges = per_slice.entry(k as usize).or_default();
        for m in 0..idx.len() {
            let a = idx[m];
            let b = idx[(m + 1) % idx.len()];
            edges.push([a[0], a[1], b[0], b[1]]);
        }
    }
    let mut mask = Volume::filled(grid.clone(), 0u8);
    let data = mask.as_slice_mut();
    let mut xs = Vec::new();
    for (k, edges) in per_slice {
        for j in 0..nj {
            let y = j as f64;
            xs.clear();
            for e in &edges {
                let (y0, y1) = (e[1], e[3]);
                if (y0 <= y && y < y1) || (y1 <= y && y < y0) {
                    xs.push(e[0] + (y - y0) / (y1 - y0) * (e[2] - e[0]));
                }
            }
            xs.sort_by(f64::total_cmp);
            for pair in xs.chunks_exact(2) {
                let lo = pair[0].ceil().max(0.0) as usize;
                let hi = pair[1].ceil().min(ni as f64);
                if hi <= 0.0 {
                    continue;
                }
                let row = k * ni * nj + j * ni;
                for i in lo..hi as usize {
                    data[row + i] = 1;
                }
            }
        }
    }
    RoiMask {
        number: roi.number,
        name: roi.name.clone(),
        mask,
        contours_off_grid: off,
    }
}

/// Dice overlap of two masks (nonzero = inside); 1 when both are empty.
pub fn dice(a: &Volume<u8>, b: &Volume<u8>) -> f64 {
    let (mut inter, mut sa, mut sb) = (0usize, 0usize, 0usize);
    for (x, y) in a.as_slice().iter().zip(b.as_slice()) {
        let (x, y) = (*x != 0, *y != 0);
        inter += (x && y) as usize;
        sa += x as usize;
        sb += y as usize;
    }
    if sa + sb == 0 {
        1.0
    } else {
        2.0 * inter as f64 / (sa + sb) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_pixel_and_hole() {
        // A 3x3 ring (hole in the middle) and a separate diagonal pair.
        let (ni, nj) = (8, 6);
        let mut m = vec![false; ni * nj];
        for j in 0..3 {
            for i in 0..3 {
                m[j * ni + i] = !(i == 1 && j == 1);
            }
        }
        m[4 * ni + 5] = true;
        m[5 * ni + 6] = true;
        let loops = slice_contours(&m, ni, nj);
        // outer ring, hole, two diagonal pixels as separate squares
        assert_eq!(loops.len(), 4, "{loops:?}");
        assert!(loops.iter().all(|l| l.len() >= 4));
    }
}
