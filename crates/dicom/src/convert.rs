//! Conversion for training: a folder of PET/CT studies with their clinical contours
//! (DICOM-SEG or RTSTRUCT) becomes an nnU-Net raw dataset (`shared/LABELS.md`):
//!
//! ```text
//! out/dataset.json               channel_names {0: CT, 1: PET}, labels, numTraining
//! out/imagesTr/CASE_0000.nii.gz  CT in HU, int16
//! out/imagesTr/CASE_0001.nii.gz  PET in SUVbw, trilinearly resampled onto the CT grid
//! out/labelsTr/CASE.nii.gz       u8 labels on the CT grid
//! out/conversion.json            the [`ConvertSummary`] (what was used, skipped, unmapped)
//! ```
//!
//! Everything lands on the CT grid because nnU-Net combines channels voxel by voxel and the
//! contours were drawn on the CT. Clinics name their structures in many ways ("Parotid_L",
//! "PAROTID LEFT", "Glnd_Lacrimal_R"), so segment and ROI names go through a
//! [`NameMapping`]; names it does not know are reported, not fatal, because a structure set
//! holds far more organs than the glands. A study that lacks a piece (no PET, no contours,
//! no SUV metadata) is skipped with the reason, so one bad study does not stop a cohort;
//! only output errors (disk full, unwritable folder) abort the conversion.

use crate::dataset::{
    file_err, first_item, get_str, RT_STRUCTURE_SET_STORAGE, SEGMENTATION_STORAGE,
};
use crate::rtstruct::{rasterise, read_rtstruct_contours};
use crate::seg::{place_on_grid, read_seg_with};
use crate::series::{scan_folder, text, DicomError, SeriesInfo};
use dicom_dictionary_std::tags;
use glandseg_core::{LabelMap, Volume};
use glandseg_ops::resample::{resample, Interpolation};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Stems of the default label map with the ways clinics spell them (already normalised:
/// lower case, words joined by `_`). TG-263 gives `Parotid`, `Glnd_Submand`,
/// `Glnd_Lacrimal`; the others are common free-text forms.
const STEM_SPELLINGS: [(&str, &[&str]); 3] = [
    (
        "parotid",
        &[
            "parotid",
            "parotid_gland",
            "glnd_parotid",
            "parotis",
            "gl_parotis",
        ],
    ),
    (
        "submandibular",
        &[
            "submandibular",
            "submandibular_gland",
            "glnd_submand",
            "glnd_submandibular",
            "submand",
            "submandibularis",
            "smg",
        ],
    ),
    (
        "lacrimal",
        &[
            "lacrimal",
            "lacrimal_gland",
            "glnd_lacrimal",
            "lacrimalis",
            "gl_lacrimalis",
        ],
    ),
];

/// Side words as clinics write them, for the patient's left and right.
const LEFT_WORDS: [&str; 4] = ["l", "lt", "left", "sin"];
const RIGHT_WORDS: [&str; 4] = ["r", "rt", "right", "dx"];

/// Case-insensitive key of a structure name: lower case, every run of characters other
/// than letters and digits becomes one `_`, none at the ends. "PAROTID LEFT",
/// "Parotid-Left" and "parotid_left" are then one name.
pub fn normalise_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// Maps clinical segment / ROI names onto a label map's names.
#[derive(Clone, Debug)]
pub struct NameMapping {
    labels: LabelMap,
    /// Normalised clinical name -> label name of `labels`.
    names: BTreeMap<String, String>,
}

impl Default for NameMapping {
    /// The default label map (`shared/LABELS.md`) with the TG-263 names (`Parotid_L`,
    /// `Glnd_Submand_R`, `Glnd_Lacrimal_L`, ...) and common free-text spellings
    /// ("parotid left", "Left Parotid Gland", "Lt parotid", ...).
    fn default() -> Self {
        NameMapping::with_builtin(LabelMap::default())
    }
}

impl NameMapping {
    /// Every label name of `labels` maps to itself; the built-in spellings are added for
    /// the glands that `labels` has (`<stem>_left` / `<stem>_right`), so that a user's own
    /// map still understands `Parotid_L` when it has a `parotid_left`.
    pub fn with_builtin(labels: LabelMap) -> Self {
        let mut names = BTreeMap::new();
        for (stem, spellings) in STEM_SPELLINGS {
            for (side, words) in [("left", LEFT_WORDS), ("right", RIGHT_WORDS)] {
                let target = format!("{stem}_{side}");
                if labels.value(&target).is_none() {
                    continue;
                }
                for s in spellings {
                    for w in words {
                        names.insert(format!("{s}_{w}"), target.clone());
                        names.insert(format!("{w}_{s}"), target.clone());
                    }
                }
            }
        }
        for (_, n) in labels.foreground() {
            names.insert(normalise_name(n), n.to_string());
        }
        NameMapping { labels, names }
    }

    /// Adds `clinical name -> label name`; the label name must be a foreground label of the
    /// map (unmapped names are left out anyway, so mapping to the background says nothing).
    pub fn insert(&mut self, clinical: &str, label: &str) -> Result<(), String> {
        if self.labels.value(label).unwrap_or(0) == 0 {
            return Err(format!(
                "{clinical:?} maps to {label:?}, which is not a foreground label of the map ({})",
                self.labels
                    .foreground()
                    .map(|(_, n)| n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let key = normalise_name(clinical);
        if key.is_empty() {
            return Err(format!("{clinical:?} has no letters or digits"));
        }
        self.names.insert(key, label.to_string());
        Ok(())
    }

    /// Reads `{"labels": {"background": 0, "parotid_left": 1, ...}, "names": {"Parotid_L":
    /// "parotid_left", ...}}`. `"labels"` may be left out (the default map); the built-in
    /// spellings apply to the map's glands ([`NameMapping::with_builtin`]) and `"names"`
    /// adds to or overrides them. Errors name the file and the entry at fault.
    pub fn from_json_file(path: &Path) -> Result<Self, DicomError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_err(path, format!("cannot read the name mapping: {e}")))?;
        Self::from_json_str(&text).map_err(|msg| file_err(path, msg))
    }

    /// [`NameMapping::from_json_file`] on text; the error says what is wrong but not where.
    pub fn from_json_str(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = v
            .as_object()
            .ok_or("the name mapping must be a JSON object {\"labels\": ..., \"names\": ...}")?;
        if let Some(k) = obj.keys().find(|k| *k != "labels" && *k != "names") {
            return Err(format!(
                "unknown key {k:?} (expected \"labels\" and \"names\")"
            ));
        }
        let labels = match obj.get("labels") {
            Some(l) => LabelMap::from_nnunet_labels(l).map_err(|e| format!("\"labels\": {e}"))?,
            None => LabelMap::default(),
        };
        let mut mapping = NameMapping::with_builtin(labels);
        if let Some(names) = obj.get("names") {
            let names = names
                .as_object()
                .ok_or("\"names\" must be an object {\"clinical name\": \"label name\"}")?;
            for (clinical, target) in names {
                let target = target.as_str().ok_or_else(|| {
                    format!("\"names\": {clinical:?} maps to {target}, not to a label name")
                })?;
                mapping
                    .insert(clinical, target)
                    .map_err(|e| format!("\"names\": {e}"))?;
            }
        }
        Ok(mapping)
    }

    pub fn label_map(&self) -> &LabelMap {
        &self.labels
    }

    /// The label name a clinical name maps to (case and punctuation ignored).
    pub fn target(&self, clinical: &str) -> Option<&str> {
        self.names
            .get(&normalise_name(clinical))
            .map(String::as_str)
    }

    /// The label value a clinical name maps to.
    pub fn value(&self, clinical: &str) -> Option<u8> {
        self.target(clinical).and_then(|n| self.labels.value(n))
    }
}

/// Which kind of file held a case's contours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SegmentationKind {
    /// DICOM-SEG: voxel masks, taken as they are.
    #[serde(rename = "SEG")]
    Seg,
    /// RTSTRUCT: planar contours, filled on the CT grid.
    #[serde(rename = "RTSTRUCT")]
    RtStruct,
}

/// One study written to the dataset.
#[derive(Clone, Debug, Serialize)]
pub struct ConvertedCase {
    /// nnU-Net case identifier (file names `CASE_0000.nii.gz`, ...).
    pub case_id: String,
    pub patient_id: String,
    pub study_instance_uid: String,
    pub ct_series_instance_uid: String,
    pub pet_series_instance_uid: String,
    pub segmentation: PathBuf,
    pub segmentation_kind: SegmentationKind,
    /// Bq/mL (after rescale) × this = SUVbw.
    pub suvbw_factor: f64,
    /// Segment / ROI names the mapping does not know (left out of the labels).
    pub unmapped: Vec<String>,
    /// Voxels claimed by two mapped structures; the later one (higher segment number,
    /// later ROI) keeps them.
    pub overlap_voxels: usize,
    /// Voxels per foreground label name (every label of the map, 0 when absent).
    pub voxels: BTreeMap<String, usize>,
    /// Things worth a look (a label missing, contours off the CT's slices, a choice made
    /// between several series).
    pub warnings: Vec<String>,
}

/// A study that was not converted.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedStudy {
    pub study_instance_uid: String,
    pub patient_id: String,
    pub reason: String,
}

/// What [`convert_studies`] did.
#[derive(Clone, Debug, Serialize)]
pub struct ConvertSummary {
    pub out: PathBuf,
    pub cases: Vec<ConvertedCase>,
    pub skipped: Vec<SkippedStudy>,
    /// Files that are neither image slices nor SEG/RTSTRUCT, with the reason (stray files,
    /// DICOMDIRs, reports).
    pub ignored_files: Vec<(PathBuf, String)>,
    /// SEG/RTSTRUCT files that no converted case used.
    pub unused_segmentations: Vec<PathBuf>,
}

impl ConvertSummary {
    /// Every unmapped segment / ROI name over all cases, sorted, once each.
    pub fn unmapped_names(&self) -> BTreeSet<String> {
        self.cases
            .iter()
            .flat_map(|c| c.unmapped.iter().cloned())
            .collect()
    }

    /// Overlapping voxels over all cases.
    pub fn overlap_voxels(&self) -> usize {
        self.cases.iter().map(|c| c.overlap_voxels).sum()
    }
}

/// A SEG or RTSTRUCT found in the input (header only).
#[derive(Clone, Debug)]
struct SegCandidate {
    path: PathBuf,
    kind: SegmentationKind,
    study_uid: String,
    frame_of_reference_uid: String,
}

/// The SEG / RTSTRUCT header of `path`, or `None` when it is neither.
fn probe_segmentation(path: &Path) -> Option<SegCandidate> {
    let obj = crate::read::open_header(path).ok()?;
    let modality = text(&obj, tags::MODALITY).unwrap_or_default();
    let sop = text(&obj, tags::SOP_CLASS_UID).unwrap_or_default();
    let kind = if modality == "SEG" || sop == SEGMENTATION_STORAGE {
        SegmentationKind::Seg
    } else if modality == "RTSTRUCT" || sop == RT_STRUCTURE_SET_STORAGE {
        SegmentationKind::RtStruct
    } else {
        return None;
    };
    // A SEG carries its frame of reference at the top level; an RTSTRUCT names it in
    // ReferencedFrameOfReferenceSequence.
    let for_uid = text(&obj, tags::FRAME_OF_REFERENCE_UID)
        .or_else(|| {
            first_item(&obj, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)
                .and_then(|f| get_str(f, tags::FRAME_OF_REFERENCE_UID))
        })
        .unwrap_or_default();
    Some(SegCandidate {
        path: path.to_path_buf(),
        kind,
        study_uid: text(&obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        frame_of_reference_uid: for_uid,
    })
}

/// PatientID of a series (its first slice's header); empty when absent or unreadable.
fn patient_id_of(series: &SeriesInfo) -> String {
    series
        .slices
        .first()
        .and_then(|s| crate::read::open_header(&s.path).ok())
        .and_then(|o| text(&o, tags::PATIENT_ID))
        .unwrap_or_default()
}

/// 64-bit FNV-1a: a stable short fingerprint of a UID for case identifiers (UIDs from one
/// scanner often share everything but a few digits, which may sit anywhere).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `PatientID_xxxxxx` with only `[A-Za-z0-9_-]` (nnU-Net and every file system accept
/// it), unique among `taken`.
fn case_id(patient_id: &str, study_uid: &str, taken: &mut BTreeSet<String>) -> String {
    let mut p: String = patient_id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    p = p.trim_matches('_').to_string();
    if p.is_empty() {
        p = "case".into();
    }
    let base = format!("{p}_{:06x}", fnv1a(study_uid) & 0xff_ffff);
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id.to_ascii_lowercase()) {
        id = format!("{base}_{n}");
        n += 1;
    }
    // Case-insensitive uniqueness: macOS and Windows file systems fold case.
    taken.insert(id.to_ascii_lowercase());
    id
}

/// Paints `value` where `mask` is set; returns how many voxels already held another label.
fn paint(labels: &mut [u8], mask: &[u8], value: u8) -> usize {
    let mut overlaps = 0;
    for (l, m) in labels.iter_mut().zip(mask) {
        if *m != 0 {
            if *l != 0 && *l != value {
                overlaps += 1;
            }
            *l = value;
        }
    }
    overlaps
}

/// Why one study could not be converted: bad input skips it, failed output stops all.
enum StudyError {
    Skip(String),
    Fatal(DicomError),
}

impl From<DicomError> for StudyError {
    fn from(e: DicomError) -> Self {
        StudyError::Skip(e.to_string())
    }
}

/// The pieces chosen for one study.
struct Plan<'a> {
    ct: &'a SeriesInfo,
    pet: &'a SeriesInfo,
    segs: Vec<&'a SegCandidate>,
    warnings: Vec<String>,
}

/// Labels of one segmentation file on the CT grid, with unmapped names and overlaps.
struct CaseLabels {
    labels: Volume<u8>,
    unmapped: Vec<String>,
    overlaps: usize,
    warnings: Vec<String>,
}

fn labels_from(
    seg: &SegCandidate,
    ct_grid: &glandseg_core::Geometry,
    mapping: &NameMapping,
) -> Result<CaseLabels, DicomError> {
    let mut unmapped = Vec::new();
    let mut warnings = Vec::new();
    match seg.kind {
        SegmentationKind::Seg => {
            let (file, overlaps) =
                read_seg_with(&seg.path, &|s| mapping.value(&s.label).is_some())?;
            let mut lut = [0u8; 256];
            for s in &file.segments {
                match mapping.value(&s.label) {
                    Some(v) => lut[s.number as usize & 0xFF] = v,
                    None => unmapped.push(s.label.clone()),
                }
            }
            let labels = place_on_grid(&file.labels, ct_grid, &lut)
                .map_err(|msg| file_err(&seg.path, msg))?;
            warnings.extend(
                file.warnings
                    .into_iter()
                    .map(|w| format!("{}: {w}", seg.path.display())),
            );
            Ok(CaseLabels {
                labels,
                unmapped,
                overlaps,
                warnings,
            })
        }
        SegmentationKind::RtStruct => {
            let rt = read_rtstruct_contours(&seg.path)?;
            let mut labels = Volume::filled(ct_grid.clone(), 0u8);
            let mut overlaps = 0;
            for roi in &rt.rois {
                let Some(v) = mapping.value(&roi.name) else {
                    unmapped.push(roi.name.clone());
                    continue;
                };
                let m = rasterise(roi, ct_grid);
                if m.contours_off_grid > 0 {
                    warnings.push(format!(
                        "{}: ROI {:?}: {} contour(s) not on a CT slice were left out",
                        seg.path.display(),
                        roi.name,
                        m.contours_off_grid
                    ));
                }
                overlaps += paint(labels.as_slice_mut(), m.mask.as_slice(), v);
            }
            Ok(CaseLabels {
                labels,
                unmapped,
                overlaps,
                warnings,
            })
        }
    }
}

/// Reads, converts and writes one study.
fn convert_one(
    plan: &Plan,
    case: &str,
    patient_id: &str,
    mapping: &NameMapping,
    out: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ConvertedCase, StudyError> {
    progress(&format!(
        "{case}: loading CT ({} slices) and PET ({} slices)",
        plan.ct.slices.len(),
        plan.pet.slices.len()
    ));
    // The loader predict and info use: same series, same SUV rule (QIBA series factor).
    let study = crate::study::load_pair(plan.ct, plan.pet)?;
    let suvbw = study.suv.factors.suvbw;
    let mut warnings = plan.warnings.clone();
    warnings.extend(study.warnings.iter().cloned());
    let (ct, pet_suv) = (study.ct, study.pet_suv);
    let grid = ct.volume.geometry().clone();
    let pet_on_ct = if pet_suv
        .geometry()
        .same_grid(&grid, glandseg_core::geometry::GRID_TOLERANCE)
    {
        Volume::from_vec(grid.clone(), pet_suv.as_slice().to_vec())
            .map_err(|e| StudyError::Skip(e.to_string()))?
    } else {
        resample(&pet_suv, &grid, Interpolation::Linear, 0.0)
    };

    // The first segmentation that reads and fits wins; a broken one is noted, not fatal
    // while another remains.
    let mut failures = Vec::new();
    let mut chosen = None;
    for seg in &plan.segs {
        match labels_from(seg, &grid, mapping) {
            Ok(l) => {
                chosen = Some((*seg, l));
                break;
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    let Some((seg, cl)) = chosen else {
        return Err(StudyError::Skip(format!(
            "no usable SEG/RTSTRUCT: {}",
            failures.join("; ")
        )));
    };
    if !failures.is_empty() {
        warnings.push(format!(
            "used {}; could not use: {}",
            seg.path.display(),
            failures.join("; ")
        ));
    }
    warnings.extend(cl.warnings);
    let mut voxels: BTreeMap<String, usize> = mapping
        .label_map()
        .foreground()
        .map(|(_, n)| (n.to_string(), 0))
        .collect();
    let mut counts = [0usize; 256];
    for v in cl.labels.as_slice() {
        counts[*v as usize] += 1;
    }
    for (v, n) in mapping.label_map().foreground() {
        voxels.insert(n.to_string(), counts[v as usize]);
        if counts[v as usize] == 0 {
            warnings.push(format!("label {n} has no voxels"));
        }
    }
    if counts[1..].iter().all(|c| *c == 0) {
        return Err(StudyError::Skip(format!(
            "{}: none of its structures ({}) maps to a label",
            seg.path.display(),
            cl.unmapped.join(", ")
        )));
    }

    // NIfTI errors already name the file they were writing.
    let fatal = |e: glandseg_nifti::NiftiError| {
        StudyError::Fatal(file_err(out, format!("cannot write the dataset: {e}")))
    };
    let [ct_path, pet_path, label_path] = [
        out.join("imagesTr").join(format!("{case}_0000.nii.gz")),
        out.join("imagesTr").join(format!("{case}_0001.nii.gz")),
        out.join("labelsTr").join(format!("{case}.nii.gz")),
    ];
    glandseg_nifti::write_ct_i16(&ct_path, &ct.volume).map_err(fatal)?;
    glandseg_nifti::write_volume(&pet_path, &pet_on_ct).map_err(fatal)?;
    glandseg_nifti::write_volume(&label_path, &cl.labels).map_err(fatal)?;
    Ok(ConvertedCase {
        case_id: case.to_string(),
        patient_id: patient_id.to_string(),
        study_instance_uid: plan.ct.study_instance_uid.clone(),
        ct_series_instance_uid: plan.ct.series_instance_uid.clone(),
        pet_series_instance_uid: plan.pet.series_instance_uid.clone(),
        segmentation: seg.path.clone(),
        segmentation_kind: seg.kind,
        suvbw_factor: suvbw,
        unmapped: cl.unmapped,
        overlap_voxels: cl.overlaps,
        voxels,
        warnings,
    })
}

/// Picks the CT, PET and segmentations of one study, or says what is missing: the first
/// (CT, PET) pair of [`crate::study::pair_candidates`] (the rule `predict` and `info` use
/// too) that has a segmentation in the CT's frame of reference. A SEG (exact voxels) is
/// preferred to an RTSTRUCT (contours to fill).
fn plan_study<'a>(
    study_uid: &str,
    series: &[&'a SeriesInfo],
    segs: &'a [SegCandidate],
) -> Result<Plan<'a>, String> {
    let pairs = crate::study::pair_candidates(series)?;
    for (ct, pet) in &pairs {
        let for_uid = &ct.frame_of_reference_uid;
        let mut matching: Vec<&SegCandidate> = segs
            .iter()
            .filter(|s| {
                if s.frame_of_reference_uid.is_empty() {
                    s.study_uid == study_uid
                } else {
                    &s.frame_of_reference_uid == for_uid
                }
            })
            .collect();
        matching.sort_by(|a, b| {
            (a.study_uid != study_uid, a.kind, &a.path).cmp(&(
                b.study_uid != study_uid,
                b.kind,
                &b.path,
            ))
        });
        if matching.is_empty() {
            continue;
        }
        return Ok(Plan {
            ct,
            pet,
            segs: matching,
            warnings: crate::study::choice_warnings(series, ct, pet),
        });
    }
    Err(format!(
        "no SEG or RTSTRUCT referencing the CT's frame of reference {}",
        pairs[0].0.frame_of_reference_uid
    ))
}

/// Converts every study under `input` into an nnU-Net raw dataset in `out` (layout in the
/// module docs). Studies are grouped by StudyInstanceUID; each needs a CT series, a PET
/// series in the CT's frame of reference and a SEG or RTSTRUCT referencing that frame of
/// reference. Studies missing a piece, or whose files cannot be read, are listed in
/// [`ConvertSummary::skipped`] with the reason. `out` must not hold a dataset already
/// (stale cases would silently join the new one). Errors: unreadable `input`, an
/// unwritable `out`, or no study converted at all (with every reason).
pub fn convert_studies(
    input: &Path,
    mapping: &NameMapping,
    out: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<ConvertSummary, DicomError> {
    for sub in ["imagesTr", "labelsTr"] {
        let d = out.join(sub);
        if d.is_dir()
            && std::fs::read_dir(&d)
                .map_err(|e| file_err(&d, format!("cannot read folder: {e}")))?
                .next()
                .is_some()
        {
            return Err(file_err(
                &d,
                "is not empty: convert into a new or empty folder so that no stale case joins the dataset",
            ));
        }
    }
    if out.join("dataset.json").exists() {
        return Err(file_err(
            &out.join("dataset.json"),
            "exists: convert into a new or empty folder",
        ));
    }

    progress(&format!("scanning {}", input.display()));
    let scan = scan_folder(input)?;
    let mut segs = Vec::new();
    let mut ignored_files = Vec::new();
    for (path, why) in &scan.skipped {
        match probe_segmentation(path) {
            Some(s) => segs.push(s),
            None => ignored_files.push((path.clone(), why.clone())),
        }
    }
    let mut studies: BTreeMap<&str, Vec<&SeriesInfo>> = BTreeMap::new();
    for s in &scan.series {
        if s.modality == "CT" || s.modality == "PT" {
            studies.entry(&s.study_instance_uid).or_default().push(s);
        }
    }
    progress(&format!(
        "{} studies with CT or PET, {} SEG/RTSTRUCT files, {} other files ignored",
        studies.len(),
        segs.len(),
        ignored_files.len()
    ));

    // Plan every study first, so that case identifiers follow patient order.
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for (uid, series) in &studies {
        let patient = series.first().map(|s| patient_id_of(s)).unwrap_or_default();
        match plan_study(uid, series, &segs) {
            Ok(plan) => planned.push((patient, uid.to_string(), plan)),
            Err(reason) => {
                progress(&format!("study {uid} ({patient}) skipped: {reason}"));
                skipped.push(SkippedStudy {
                    study_instance_uid: uid.to_string(),
                    patient_id: patient,
                    reason,
                });
            }
        }
    }
    planned.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));

    let mut taken = BTreeSet::new();
    let mut cases = Vec::new();
    let n = planned.len();
    for (i, (patient, uid, plan)) in planned.iter().enumerate() {
        let id = case_id(patient, uid, &mut taken);
        let tagged = |m: &str| progress(&format!("[{}/{n}] {m}", i + 1));
        match convert_one(plan, &id, patient, mapping, out, &tagged) {
            Ok(c) => {
                tagged(&format!("{id}: written"));
                cases.push(c);
            }
            Err(StudyError::Skip(reason)) => {
                tagged(&format!("study {uid} ({patient}) skipped: {reason}"));
                skipped.push(SkippedStudy {
                    study_instance_uid: uid.clone(),
                    patient_id: patient.clone(),
                    reason,
                });
            }
            Err(StudyError::Fatal(e)) => return Err(e),
        }
    }
    if cases.is_empty() {
        let reasons: Vec<String> = skipped
            .iter()
            .map(|s| format!("study {}: {}", s.study_instance_uid, s.reason))
            .collect();
        return Err(file_err(
            input,
            format!(
                "no study could be converted ({})",
                if reasons.is_empty() {
                    "no CT or PET series found".to_string()
                } else {
                    reasons.join("; ")
                }
            ),
        ));
    }

    let used: BTreeSet<&Path> = cases.iter().map(|c| c.segmentation.as_path()).collect();
    let unused_segmentations = segs
        .iter()
        .filter(|s| !used.contains(s.path.as_path()))
        .map(|s| s.path.clone())
        .collect();
    let dataset = serde_json::json!({
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": mapping.label_map().to_nnunet_labels(),
        "numTraining": cases.len(),
        "file_ending": ".nii.gz",
    });
    let io = |p: &Path, e: glandseg_core::Error| file_err(p, e.to_string());
    let p = out.join("dataset.json");
    glandseg_core::atomic::write_json(&p, &dataset).map_err(|e| io(&p, e))?;
    let summary = ConvertSummary {
        out: out.to_path_buf(),
        cases,
        skipped,
        ignored_files,
        unused_segmentations,
    };
    let p = out.join("conversion.json");
    glandseg_core::atomic::write_json(&p, &summary).map_err(|e| io(&p, e))?;
    progress(&format!(
        "{} cases written to {}, {} studies skipped",
        summary.cases.len(),
        out.display(),
        summary.skipped.len()
    ));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise() {
        assert_eq!(normalise_name("  PAROTID  LEFT "), "parotid_left");
        assert_eq!(normalise_name("Glnd_Lacrimal-R"), "glnd_lacrimal_r");
        assert_eq!(normalise_name("__"), "");
    }

    #[test]
    fn case_ids_are_clean_and_unique() {
        let mut taken = BTreeSet::new();
        let a = case_id("PAT 002/ä", "1.2.3", &mut taken);
        assert!(a.starts_with("PAT_002_"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
        let b = case_id("PAT 002/ä", "1.2.3", &mut taken);
        assert_eq!(b, format!("{a}_2"));
        assert!(case_id("", "1.2.4", &mut taken).starts_with("case_"));
    }

    #[test]
    fn later_label_wins_and_overlaps_count() {
        let mut l = vec![0u8, 1, 1, 2];
        assert_eq!(paint(&mut l, &[1, 1, 0, 1], 2), 1);
        assert_eq!(l, [2, 2, 1, 2]);
    }
}
