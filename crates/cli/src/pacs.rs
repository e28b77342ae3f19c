//! `glandseg pacs`: glandseg as a node of the clinic's PACS.
//!
//! - `pacs run --study UID`: find the study's CT + PET (QIDO-RS), retrieve them (WADO-RS),
//!   segment them with the same code as `glandseg predict -i DICOMFOLDER`, and store back
//!   (STOW-RS) a DICOM-SEG, an RTSTRUCT and the per-gland table as an Encapsulated PDF.
//! - `pacs watch`: the same for every new PET/CT study (Orthanc's change feed, or QIDO-RS
//!   by date), each once, one log line per study.
//! - `pacs send` / `pacs listen`: DICOM C-STORE out and in, for sites without DICOMweb.
//!
//! The table goes back as an **Encapsulated PDF** rather than a TID 1500 Structured Report:
//! every viewer opens a PDF as a readable page, while SR measurement trees are shown (if
//! at all) as nested content items; the machine-readable masks are in the SEG.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use glandseg_pacs::{Credentials, DicomWeb, PacsError};
use glandseg_predict::export::{ExportOptions, OutputType};
use glandseg_predict::input::Inputs;
use glandseg_predict::{PredictJob, PredictOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How to reach the DICOMweb server.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// DICOMweb root URL (Orthanc: http://HOST:8042/dicom-web); https:// uses TLS.
    #[arg(long)]
    pub url: String,
    /// User for HTTP Basic authentication (the password comes from --password-env or
    /// --password-file, never from the command line).
    #[arg(long)]
    pub user: Option<String>,
    /// Environment variable holding the password.
    #[arg(long, default_value = "GLANDSEG_PACS_PASSWORD")]
    pub password_env: String,
    /// File whose first line is the password (instead of the environment variable).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Seconds a request may wait for data before it fails.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// How to segment.
#[derive(Args, Clone)]
pub struct SegmentArgs {
    /// Model folder (from `glandseg train`).
    #[arg(long, short)]
    pub model: PathBuf,
    /// Work folder: the retrieved images and glandseg's outputs per study, under
    /// WORK/STUDYUID/ (default: a folder in the system's temporary directory).
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the retrieved images and outputs (default: removed once stored).
    #[arg(long)]
    pub keep: bool,
    /// Turn off the left-right test-time mirroring (faster).
    #[arg(long)]
    pub no_tta: bool,
    /// Run only the coarse stage of a cascade model.
    #[arg(long)]
    pub single_stage: bool,
}

#[derive(Args)]
pub struct PacsArgs {
    #[command(subcommand)]
    pub command: PacsCommand,
}

#[derive(Subcommand)]
pub enum PacsCommand {
    /// Segment one study on the server and store the results back into it.
    Run(RunArgs),
    /// Segment every new PET/CT study on the server, once each.
    Watch(WatchArgs),
    /// Send DICOM files (or folders of them) to a DICOM node with C-STORE.
    Send(SendArgs),
    /// Receive studies over DICOM C-STORE, segment each PET/CT study and send the results
    /// (SEG, RTSTRUCT, PDF) to a DICOM node.
    Listen(ListenArgs),
}

#[derive(Args)]
pub struct SendArgs {
    /// The receiver: AET@HOST:PORT (e.g. ORTHANC@127.0.0.1:4242).
    #[arg(long)]
    pub to: glandseg_pacs::dimse::AeAddress,
    /// Our (calling) AE title.
    #[arg(long, default_value = "GLANDSEG")]
    pub aet: String,
    /// Seconds to wait for the peer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// DICOM files or folders (searched recursively for DICOM files).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Args)]
pub struct ListenArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one, printed at the start).
    #[arg(long, default_value = "127.0.0.1:11112")]
    pub bind: String,
    /// Our AE title.
    #[arg(long, default_value = "GLANDSEG")]
    pub aet: String,
    /// Where results go: AET@HOST:PORT (e.g. the PACS). Without it they stay in the work
    /// folder.
    #[arg(long)]
    pub return_to: Option<glandseg_pacs::dimse::AeAddress>,
    /// Folder for received instances (one sub-folder per study).
    #[arg(long)]
    pub incoming: PathBuf,
    /// Seconds a peer may stay silent within an association.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub segment: SegmentArgs,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// StudyInstanceUID of the study.
    #[arg(long)]
    pub study: String,
}

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub segment: SegmentArgs,
    /// State file: the studies handled and the position in the change feed (JSON, written
    /// atomically after each study).
    #[arg(long)]
    pub state: PathBuf,
    /// Poll QIDO-RS by study date instead of Orthanc's change feed (any DICOMweb server).
    #[arg(long)]
    pub qido: bool,
    /// Orthanc's REST root (default: --url without its last path segment).
    #[arg(long)]
    pub orthanc_url: Option<String>,
    /// Seconds between polls.
    #[arg(long, default_value_t = 5.0)]
    pub poll: f64,
    /// --qido: studies dated this many days back.
    #[arg(long, default_value_t = 1)]
    pub lookback_days: i64,
    /// --qido: seconds a study must receive nothing new before it is processed.
    #[arg(long, default_value_t = 60)]
    pub stable_seconds: u64,
    /// Stop once every study the server holds now is handled.
    #[arg(long)]
    pub once: bool,
    /// Without a state file: go through Orthanc's whole change history instead of
    /// starting from now.
    #[arg(long)]
    pub from_start: bool,
}

fn client(a: &ServerArgs) -> Result<DicomWeb> {
    let creds = Credentials::resolve(
        a.user.as_deref(),
        &a.password_env,
        a.password_file.as_deref(),
    )?;
    Ok(DicomWeb::new(
        &a.url,
        creds,
        Duration::from_secs(a.timeout.max(1)),
    )?)
}

/// What one study needs besides the server.
pub(crate) struct Segmenter {
    pub model: PathBuf,
    pub work: PathBuf,
    pub keep: bool,
    pub options: PredictOptions,
}

impl Segmenter {
    pub(crate) fn new(a: &SegmentArgs) -> Result<Self> {
        if !a.model.join("plans.json").is_file() {
            anyhow::bail!(
                "model folder {}: no plans.json (train one with `glandseg train` or `glandseg demo`)",
                a.model.display()
            );
        }
        let work = match &a.work {
            Some(w) => w.clone(),
            None => std::env::temp_dir().join(format!("glandseg-pacs-{}", std::process::id())),
        };
        crate::output_folder(&work)?;
        Ok(Segmenter {
            model: a.model.clone(),
            work,
            keep: a.keep,
            options: PredictOptions {
                mirror_lr: !a.no_tta,
                cascade: !a.single_stage,
                ..PredictOptions::default()
            },
        })
    }

    /// Segments the DICOM study in `images` (CT + PET folders) into `out`, and returns the
    /// files to send back: SEG, RTSTRUCT, Encapsulated PDF.
    pub(crate) fn segment(&self, images: &Path, out: &Path) -> Result<Results> {
        let job = PredictJob {
            inputs: Inputs::Folder(images.to_path_buf()),
            model: self.model.clone(),
            out: out.to_path_buf(),
            folds: Vec::new(),
            options: self.options.clone(),
            export: ExportOptions {
                per_gland_files: false,
                dilate: None,
                review: false,
                outputs: vec![
                    OutputType::Nifti,
                    OutputType::DicomSeg,
                    OutputType::Rtstruct,
                ],
                model_name: String::new(),
            },
            shard: None,
        };
        let ids = glandseg_predict::predict_job::<crate::InferBackend>(
            &job,
            Default::default(),
            &glandseg_core::NoProgress,
            |_, _| {},
        )?;
        let id = ids.first().context("the prediction wrote no case")?;
        let case = out.join(id);
        let pdf = case.join("report.dcm");
        let glands = write_report(&case, &self.model, &pdf)?;
        Ok(Results {
            files: vec![case.join("seg.dcm"), case.join("rtstruct.dcm"), pdf],
            glands,
            labels: out.join(format!("{id}.nii.gz")),
        })
    }
}

/// The files a segmented study sends back.
pub(crate) struct Results {
    pub files: Vec<PathBuf>,
    /// Glands found (non-empty).
    pub glands: usize,
    /// The NIfTI label map.
    #[allow(dead_code)]
    pub labels: PathBuf,
}

fn fmt_opt(v: Option<f64>, width: usize, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:>width$.decimals$}"),
        _ => format!("{:>width$}", "-"),
    }
}

/// The per-gland table of `case/stats.json` as an Encapsulated PDF in the study of the
/// source CT (whose patient and study attributes the SEG beside it carries); returns the
/// number of glands found.
fn write_report(case: &Path, model: &Path, out: &Path) -> Result<usize> {
    let stats_path = case.join("stats.json");
    let stats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&stats_path).with_context(|| format!("reading {}", stats_path.display()))?,
    )
    .with_context(|| format!("{}: not JSON", stats_path.display()))?;
    let report: serde_json::Value = std::fs::read(case.join("prediction.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let (patient, study) = glandseg_dicom::patient_study_of(&case.join("seg.dcm"))?;
    let glands = stats["glands"].as_array().cloned().unwrap_or_default();
    let mut lines = vec![
        "glandseg: salivary and lacrimal gland uptake (PSMA PET/CT)".to_string(),
        String::new(),
        format!(
            "Patient: {}   ID: {}   Study date: {}   Accession: {}",
            patient.patient_name.replace('^', " "),
            patient.patient_id,
            patient.study_date,
            patient.accession_number
        ),
        format!("Study: {study}"),
        format!(
            "Model: {}   glandseg {}",
            model
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            env!("CARGO_PKG_VERSION")
        ),
        String::new(),
        format!(
            "{:<22}{:>10}{:>9}{:>9}{:>9}{:>12}{:>9}",
            "gland", "vol (mL)", "SUVmean", "SUVmax", "SUVpeak", "SUV x mL", "HU mean"
        ),
        "-".repeat(80),
    ];
    let mut found = 0;
    for g in &glands {
        let f = |k: &str| g[k].as_f64();
        if g["voxels"].as_u64().unwrap_or(0) > 0 {
            found += 1;
        }
        lines.push(format!(
            "{:<22}{}{}{}{}{}{}",
            g["name"].as_str().unwrap_or("?"),
            fmt_opt(f("volume_ml"), 10, 2),
            fmt_opt(f("suv_mean"), 9, 2),
            fmt_opt(f("suv_max"), 9, 2),
            fmt_opt(f("suv_peak"), 9, 2),
            fmt_opt(f("suv_total"), 12, 1),
            fmt_opt(f("ct_hu_mean"), 9, 0),
        ));
    }
    lines.push(String::new());
    if let Some(w) = report["warnings"].as_array() {
        for w in w.iter().filter_map(|w| w.as_str()) {
            lines.push(format!("Warning: {w}"));
        }
    }
    lines.push("Automatic segmentation: review the contours (SEG / RTSTRUCT in this study)".into());
    lines.push("before using the numbers. Not a medical device.".into());
    let pdf = glandseg_dicom::text_pdf(&lines);
    glandseg_dicom::write_encapsulated_pdf(
        out,
        &pdf,
        &patient,
        &study,
        &glandseg_dicom::PdfOptions::default(),
    )?;
    Ok(found)
}

fn read_files(files: &[PathBuf]) -> Result<Vec<Vec<u8>>> {
    files
        .iter()
        .map(|f| std::fs::read(f).with_context(|| format!("reading {}", f.display())))
        .collect()
}

/// Fetches, segments and stores back one study; the log line's text.
pub(crate) fn process_study(
    client: &DicomWeb,
    seg: &Segmenter,
    study: &str,
) -> glandseg_pacs::Result<String> {
    let study_err = |e: anyhow::Error| PacsError::study(study, crate::error_chain(&e));
    glandseg_pacs::dicomweb::check_uid(study)?;
    let t0 = Instant::now();
    let choice = glandseg_pacs::find_pet_ct(client, study)?;
    let dir = seg.work.join(study);
    let images = dir.join("images");
    let _ = std::fs::remove_dir_all(&dir);
    let ct = client.retrieve_series(study, &choice.ct.series_uid, &images.join("CT"))?;
    let pet = client.retrieve_series(study, &choice.pet.series_uid, &images.join("PT"))?;
    let t_fetch = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let results = seg.segment(&images, &dir.join("out")).map_err(study_err)?;
    let t_seg = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let bytes = read_files(&results.files).map_err(study_err)?;
    client.store(study, &bytes)?;
    let t_store = t2.elapsed().as_secs_f64();
    if !seg.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let notes = if choice.notes.is_empty() {
        String::new()
    } else {
        format!("; {}", choice.notes.join("; "))
    };
    Ok(format!(
        "CT {} + PET {} images, {} glands found; SEG, RTSTRUCT and PDF report stored (retrieve {t_fetch:.1} s, segment {t_seg:.1} s, store {t_store:.1} s){notes}",
        ct.len(),
        pet.len(),
        results.glands
    ))
}

fn run_one(a: RunArgs) -> Result<()> {
    let client = client(&a.server)?;
    let seg = Segmenter::new(&a.segment)?;
    let t0 = Instant::now();
    let line = process_study(&client, &seg, &a.study)?;
    println!(
        "study {}: done: {line} ({:.1} s)",
        a.study,
        t0.elapsed().as_secs_f64()
    );
    if a.segment.work.is_none() && !a.segment.keep {
        let _ = std::fs::remove_dir_all(&seg.work);
    }
    Ok(())
}

fn watch(a: WatchArgs) -> Result<()> {
    let client = client(&a.server)?;
    let seg = Segmenter::new(&a.segment)?;
    if !(a.poll > 0.0 && a.poll <= 3600.0) {
        anyhow::bail!("--poll must be between 0 and 3600 seconds, got {}", a.poll);
    }
    let feed = if a.qido {
        glandseg_pacs::Feed::Qido {
            lookback_days: a.lookback_days.clamp(0, 3650),
            stable_seconds: a.stable_seconds,
        }
    } else {
        glandseg_pacs::Feed::Orthanc(glandseg_pacs::Orthanc::new(
            &client,
            a.orthanc_url.as_deref(),
        )?)
    };
    // Check the server and the credentials before anything else.
    client.ping()?;
    let mut state = glandseg_pacs::StateFile::open(&a.state)?;
    let opts = glandseg_pacs::WatchOptions {
        poll: Duration::from_secs_f64(a.poll),
        once: a.once,
        from_start: a.from_start,
    };
    let mut process = |study: &str| process_study(&client, &seg, study);
    let mut log = |line: &str| {
        println!("{} {line}", glandseg_pacs::state::utc_now());
    };
    glandseg_pacs::watch(
        &client,
        &feed,
        &mut state,
        &opts,
        &mut process,
        &mut log,
        &|| false,
    )?;
    if a.segment.work.is_none() && !a.segment.keep {
        let _ = std::fs::remove_dir_all(&seg.work);
    }
    Ok(())
}

/// DICOM files under `path` (itself when a file), sorted; files without the `DICM`
/// prefix are left out.
fn dicom_files_under(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            dicom_files_under(&p, out)?;
        } else if is_dicom_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn is_dicom_file(p: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 132];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head[128..] == b"DICM")
        .unwrap_or(false)
}

fn send(a: SendArgs) -> Result<()> {
    let mut files = Vec::new();
    for p in &a.paths {
        dicom_files_under(p, &mut files)?;
    }
    if files.is_empty() {
        anyhow::bail!("no DICOM files in {:?}", a.paths);
    }
    let t0 = Instant::now();
    let n = glandseg_pacs::dimse::send_files(
        &a.to,
        &a.aet,
        &files,
        Duration::from_secs(a.timeout.max(1)),
    )?;
    println!(
        "{n} file(s) stored on {} ({:.1} s)",
        a.to,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn listen(a: ListenArgs) -> Result<()> {
    let seg = Segmenter::new(&a.segment)?;
    let rx = glandseg_pacs::dimse::Receiver::bind(
        &a.bind,
        &a.aet,
        &a.incoming,
        Duration::from_secs(a.timeout.max(1)),
    )?;
    let now = glandseg_pacs::state::utc_now;
    println!("{} {} listening on {}", now(), a.aet, rx.local_addr()?);
    rx.serve(|d| {
        if let Some(e) = &d.error {
            println!("{} association from {:?}: {e}", now(), d.calling_aet);
        }
        for (study, (dir, n)) in &d.studies {
            let t0 = Instant::now();
            let line = (|| -> Result<String> {
                let out = seg.work.join(study);
                let _ = std::fs::remove_dir_all(&out);
                let results = seg.segment(dir, &out)?;
                let sent = match &a.return_to {
                    Some(to) => {
                        glandseg_pacs::dimse::send_files(
                            to,
                            &a.aet,
                            &results.files,
                            Duration::from_secs(a.timeout.max(1)),
                        )?;
                        format!("SEG, RTSTRUCT and PDF report sent to {to}")
                    }
                    None => format!("results in {}", out.display()),
                };
                if !seg.keep {
                    let _ = std::fs::remove_dir_all(dir);
                    if a.return_to.is_some() {
                        let _ = std::fs::remove_dir_all(&out);
                    }
                }
                Ok(format!(
                    "done: {n} instance(s) from {}, {} glands found; {sent} ({:.1} s)",
                    d.calling_aet,
                    results.glands,
                    t0.elapsed().as_secs_f64()
                ))
            })()
            .unwrap_or_else(|e| format!("FAILED: {}", crate::error_chain(&e)));
            println!("{} study {study}: {line}", now());
        }
        true
    })?;
    Ok(())
}

pub fn run(a: PacsArgs) -> Result<()> {
    match a.command {
        PacsCommand::Run(a) => run_one(a),
        PacsCommand::Watch(a) => watch(a),
        PacsCommand::Send(a) => send(a),
        PacsCommand::Listen(a) => listen(a),
    }
}
