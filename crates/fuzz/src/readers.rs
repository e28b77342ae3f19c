//! The readers under test, each as the command line calls it, and their seeds.

use crate::Sample;
use glandseg_core::{Geometry, LabelMap, Volume};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A reader under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reader {
    /// `read_nifti` + `describe` on an uncompressed `.nii`.
    Nifti,
    /// The same on a `.nii.gz` (mutated before compression, or the gzip stream itself).
    NiftiGz,
    /// One DICOM file: `describe` (what `info` shows), header scan, pixel decode, SUV.
    DicomFile,
    /// A study folder with mutated files in it: `load_study` and `convert_studies`.
    DicomFolder,
    /// A DICOM-SEG: `read_seg`, its label map, its labels on the CT grid.
    Seg,
    /// An RTSTRUCT: contours and their filling on the CT grid.
    RtStruct,
    /// A dataset folder's `dataset.json` (`Dataset::open`) and a `plans.json`.
    Plan,
    /// A model folder (plans.json, model.json, a checkpoint) as prediction loads it.
    Model,
}

impl Reader {
    /// Every reader.
    pub const ALL: [Reader; 8] = [
        Reader::Nifti,
        Reader::NiftiGz,
        Reader::DicomFile,
        Reader::DicomFolder,
        Reader::Seg,
        Reader::RtStruct,
        Reader::Plan,
        Reader::Model,
    ];

    /// The reader's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Reader::Nifti => "nifti",
            Reader::NiftiGz => "nifti-gz",
            Reader::DicomFile => "dicom",
            Reader::DicomFolder => "dicom-folder",
            Reader::Seg => "seg",
            Reader::RtStruct => "rtstruct",
            Reader::Plan => "plan",
            Reader::Model => "model",
        }
    }

    /// The reader called `name`.
    pub fn from_name(name: &str) -> Option<Reader> {
        Reader::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The seeds: the committed corpus (`corpus/<reader>/`) and files written at run time
    /// by glandseg's own writers into `scratch` (a tiny DICOM case with SEG and RTSTRUCT,
    /// a model folder with untrained weights).
    pub fn seeds(self, corpus: &Path, scratch: &Path) -> Result<Vec<Sample>, String> {
        let mut seeds = Vec::new();
        match self {
            Reader::Nifti => {
                seeds.extend(files_in(&corpus.join("nifti"), "x.nii")?);
                for mut s in files_in(&corpus.join("nifti_gz"), "x.nii")? {
                    s.files[0].1 = gunzip(&s.files[0].1)?;
                    seeds.push(s);
                }
            }
            Reader::NiftiGz => {
                // Mostly the decompressed bytes (compressed after mutation: the header
                // and voxels get mutated), plus the gzip streams themselves.
                for s in files_in(&corpus.join("nifti_gz"), "x.nii.gz")? {
                    let mut plain = s.clone();
                    plain.files[0].1 = gunzip(&s.files[0].1)?;
                    seeds.push(plain);
                    seeds.push(s);
                }
                for s in files_in(&corpus.join("nifti"), "x.nii.gz")? {
                    seeds.push(s);
                }
            }
            Reader::DicomFile => {
                seeds.extend(files_in(&corpus.join("dicom"), "x.dcm")?);
                let case = tiny_case(scratch)?;
                for sub in ["CT", "PT"] {
                    let first = first_file(&case.join(sub))?;
                    seeds.push(Sample::single("x.dcm", read(&first)?));
                }
            }
            Reader::DicomFolder => {
                let case = tiny_case(scratch)?;
                seeds.push(Sample::from_dir(&case)?);
            }
            Reader::Seg => {
                seeds.extend(files_in(&corpus.join("seg"), "seg.dcm")?);
                let case = tiny_case(scratch)?;
                seeds.push(Sample::single("seg.dcm", read(&case.join("seg.dcm"))?));
            }
            Reader::RtStruct => {
                let case = tiny_case(scratch)?;
                seeds.push(Sample::single(
                    "rtstruct.dcm",
                    read(&case.join("rtstruct.dcm"))?,
                ));
            }
            Reader::Plan => {
                let dir = corpus.join("plan");
                seeds.push(Sample {
                    files: vec![
                        ("dataset.json".into(), read(&dir.join("dataset.json"))?),
                        ("plans.json".into(), read(&dir.join("plans.json"))?),
                    ],
                });
            }
            Reader::Model => {
                seeds.push(model_seed(&corpus.join("model"))?);
            }
        }
        if seeds.is_empty() {
            return Err(format!(
                "no seeds for {} under {}",
                self.name(),
                corpus.display()
            ));
        }
        Ok(seeds)
    }

    /// Runs the reader on `sample` written into the empty folder `dir`. `Err` is a clean
    /// refusal (the reader's message); a panic propagates to the caller.
    pub fn execute(self, sample: &Sample, dir: &Path) -> Result<(), String> {
        sample.write_to(dir)?;
        let s = |e: &dyn std::fmt::Display| e.to_string();
        match self {
            Reader::Nifti | Reader::NiftiGz => {
                let name = if self == Reader::Nifti {
                    "x.nii"
                } else {
                    "x.nii.gz"
                };
                let p = dir.join(name);
                if self == Reader::NiftiGz {
                    // Plain bytes are compressed here; a gzip stream is kept as it is.
                    let bytes = &sample.files[0].1;
                    if !bytes.starts_with(&[0x1f, 0x8b]) {
                        std::fs::write(&p, gzip(bytes)).map_err(|e| s(&e))?;
                    }
                }
                let d = glandseg_nifti::describe::describe(&p).map(|_| ());
                let r = glandseg_nifti::read_nifti(&p).map(|_| ());
                let l = glandseg_nifti::read_labels(&p).map(|_| ());
                d.and(r).and(l).map_err(|e| s(&e))
            }
            Reader::DicomFile => {
                let p = dir.join("x.dcm");
                let d = glandseg_dicom::describe::describe(&p).map(|_| ());
                let scan = glandseg_dicom::scan_folder(&p).map_err(|e| s(&e))?;
                let mut r = d.map_err(|e| s(&e));
                for series in &scan.series {
                    if series.modality == "PT" {
                        let _ = glandseg_dicom::series_suv(series);
                    }
                    if let Err(e) = glandseg_dicom::load_series(series) {
                        r = Err(s(&e));
                    }
                }
                r
            }
            Reader::DicomFolder => {
                let study = glandseg_dicom::load_study(dir).map(|_| ());
                let out = tempfile::tempdir().map_err(|e| s(&e))?;
                let convert = glandseg_dicom::convert_studies(
                    dir,
                    &glandseg_dicom::NameMapping::default(),
                    &out.path().join("ds"),
                    &|_| {},
                )
                .map(|_| ());
                study.and(convert).map_err(|e| s(&e))
            }
            Reader::Seg => {
                let seg = glandseg_dicom::read_seg(&dir.join("seg.dcm")).map_err(|e| s(&e))?;
                let map = seg.label_map().map_err(|e| s(&e))?;
                seg.labels_on(&tiny_grid(), &map).map_err(|e| s(&e))?;
                seg.labels_on(seg.labels.geometry(), &map)
                    .map_err(|e| s(&e))?;
                Ok(())
            }
            Reader::RtStruct => {
                let p = dir.join("rtstruct.dcm");
                let c = glandseg_dicom::read_rtstruct_contours(&p).map(|_| ());
                let m = glandseg_dicom::read_rtstruct(&p, &tiny_grid()).map(|_| ());
                c.and(m).map_err(|e| s(&e))
            }
            Reader::Plan => {
                let labels = dir.join("labelsTr");
                let images = dir.join("imagesTr");
                for d in [&labels, &images] {
                    std::fs::create_dir_all(d).map_err(|e| s(&e))?;
                }
                for f in [
                    labels.join("GLAND_000.nii.gz"),
                    labels.join("GLAND_001.nii.gz"),
                    images.join("GLAND_000_0000.nii.gz"),
                    images.join("GLAND_000_0001.nii.gz"),
                    images.join("GLAND_001_0000.nii.gz"),
                    images.join("GLAND_001_0001.nii.gz"),
                ] {
                    std::fs::write(f, b"").map_err(|e| s(&e))?;
                }
                let ds = glandseg_plan::Dataset::open(dir)
                    .map(|_| ())
                    .map_err(|e| s(&e));
                let bytes = &sample.files[1].1;
                let plan = serde_json::from_slice::<glandseg_plan::Plan>(bytes)
                    .map_err(|e| format!("plans.json: {e}"))
                    .and_then(|p| p.check().map_err(|e| format!("plans.json: {e}")));
                ds.and(plan)
            }
            Reader::Model => {
                glandseg_predict::Predictor::<glandseg_net::Cpu>::load(dir, &[], Default::default())
                    .map(|_| ())
                    .map_err(|e| s(&e))
            }
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| format!("gunzip: {e}"))?;
    Ok(out)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// Every file of `dir` (sorted) as a one-file sample named `name`.
fn files_in(dir: &Path, name: &str) -> Result<Vec<Sample>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| Ok(Sample::single(name, read(p)?)))
        .collect()
}

fn first_file(dir: &Path) -> Result<PathBuf, String> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v.into_iter()
        .next()
        .ok_or_else(|| format!("{}: empty", dir.display()))
}

/// The CT grid of the generated case: 12 x 10 x 4 voxels of 2 x 2 x 3 mm.
pub fn tiny_grid() -> Geometry {
    Geometry::new([12, 10, 4], [2.0, 2.0, 3.0], [-12.0, -10.0, -6.0])
}

/// A tiny PET/CT case written by glandseg's DICOM writers under `scratch/case` (CT/, PT/,
/// seg.dcm, rtstruct.dcm); written once per scratch folder.
pub fn tiny_case(scratch: &Path) -> Result<PathBuf, String> {
    let dir = scratch.join("case");
    if dir.join("rtstruct.dcm").is_file() {
        return Ok(dir);
    }
    let g = tiny_grid();
    let mut labels = Volume::filled(g.clone(), 0u8);
    for k in 1..3 {
        for j in 2..6 {
            labels.set(2, j, k, 1);
            labels.set(3, j, k, 1);
            labels.set(8, j, k, 2);
            labels.set(9, j + 1, k, 2);
        }
    }
    labels.set(5, 8, 2, 5);
    let ct = labels.map(|l| if *l == 0 { 30.0 } else { -50.0 });
    let pet = labels.map(|l| if *l == 0 { 0.4 } else { 9.0 });
    glandseg_dicom::write_case_dicom(
        &dir,
        &ct,
        &pet,
        &labels,
        &LabelMap::default(),
        &glandseg_dicom::PatientMeta {
            scan_time_unix: Some(1_750_000_000.0),
            patient_sex: "F".into(),
            patient_height_m: Some(1.65),
            radiopharmaceutical: "Ga-68 PSMA-11".into(),
            radionuclide: "68Ga".into(),
            half_life_s: 4057.74,
            injected_dose_bq: 160e6,
            ..Default::default()
        },
    )
    .map_err(|e| format!("writing the seed case: {e}"))?;
    Ok(dir)
}

/// The model folder seed: the committed plans.json and model.json of a 3-stage network,
/// and a checkpoint of its untrained weights written here (a few tens of KB).
fn model_seed(dir: &Path) -> Result<Sample, String> {
    let plans = read(&dir.join("plans.json"))?;
    let info = read(&dir.join("model.json"))?;
    let plan: glandseg_plan::Plan =
        serde_json::from_slice(&plans).map_err(|e| format!("model seed plans.json: {e}"))?;
    let device = Default::default();
    let net = glandseg_net::UNetConfig::from_plan(&plan).init::<glandseg_net::Cpu>(&device);
    let model = glandseg_model::checkpoint::model_to_bytes(&net).map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ckpt = tmp.path().join("c.ckpt");
    glandseg_model::checkpoint::write(
        &ckpt,
        &glandseg_model::checkpoint::CheckpointBlocks::new(b"{}".to_vec(), model, Vec::new()),
    )
    .map_err(|e| e.to_string())?;
    Ok(Sample {
        files: vec![
            ("plans.json".into(), plans),
            ("model.json".into(), info),
            (
                PathBuf::from("fold_all").join(glandseg_model::FINAL),
                read(&ckpt)?,
            ),
        ],
    })
}
