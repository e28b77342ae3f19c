//! `glandseg`: the command line over the pipeline crates. Each subcommand is a thin layer
//! that parses arguments, shows progress and turns errors into messages naming the file.

mod bench;
mod convert;
mod demo;
mod dose;
mod evaluate;
mod gather;
mod info;
mod pacs;
mod phantom;
mod plan;
mod predict;
mod progress;
mod recovery;
mod slurm;
mod stats;
mod train;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glandseg_core::LabelMap;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the enum's 16th entry in the bundled v3
/// `mimalloc.h`; the Rust bindings name only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back to the OS. A training step frees and re-allocates the same
/// layer buffers every couple of seconds, longer than mimalloc's 1 s purge delay, so each
/// step page-faulted (and the kernel zeroed) them all again: 40k faults and ~7 % of a step.
/// The price: the process keeps the peak it reached mapped until it exits, which for a
/// command that runs one job is what it needs anyway.
fn keep_freed_memory() {
    // SAFETY: setting an option is allowed at any time; the value is a plain integer.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

#[derive(Parser)]
#[command(
    name = "glandseg",
    version,
    about = "Salivary and lacrimal gland segmentation and uptake in PET/CT"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the built-in synthetic head-and-neck PSMA PET/CT cohort (nnU-Net raw layout).
    Phantom(phantom::PhantomArgs),
    /// Fingerprint a dataset (nnU-Net raw layout) and write a training plan (plans.json).
    Plan(plan::PlanArgs),
    /// Show what glandseg reads from a NIfTI file: grid (LPS), datatype, scaling, values.
    Info(info::InfoArgs),
    /// Compare predicted label maps with reference ones: Dice, IoU, HD, HD95, ASSD,
    /// surface Dice, volumes; per case and summarised per gland (CSV + JSON).
    Evaluate(evaluate::EvaluateArgs),
    /// Per-gland volume, SUVmean/max/peak, SUV total, CT HU and centroid for a label map
    /// (stats.json + stats.csv).
    Stats(stats::StatsArgs),
    /// Gland dosimetry from activity images at several times: time-activity fits,
    /// time-integrated activity, organ and voxel absorbed dose, DVH (dose.json, dose.csv,
    /// dose_map.nii.gz, tac.png).
    Dose(dose::DoseArgs),
    /// A partial-volume recovery curve (recovery coefficient by volume) from a sphere-phantom
    /// image, or a simulated one, for `dose --recovery-curve`.
    Recovery(recovery::RecoveryArgs),
    /// Preprocess a dataset and train a fold of the planned U-Net (CT + PET in, glands out).
    Train(train::TrainArgs),
    /// Segment new cases with a trained model: label maps on the CT grid, per-gland uptake
    /// tables, review images.
    Predict(predict::PredictArgs),
    /// The whole pipeline on the built-in synthetic cohort: phantom, plan, train, predict,
    /// evaluate, report.
    Demo(demo::DemoArgs),
    /// Time a training step and a sliding-window inference of a U-Net (the yardstick that
    /// scripts/bench_compare.py sets beside PyTorch).
    Bench(bench::BenchArgs),
    /// Turn a folder of DICOM studies (CT, PET, SEG or RTSTRUCT) into an nnU-Net raw
    /// dataset for training, PET in SUV on the CT grid.
    Convert(convert::ConvertArgs),
    /// Merge the per-case tables of a prediction folder (filled shard by shard by cluster
    /// array tasks) into the cohort's stats.csv / stats.json and index.html; optionally
    /// evaluate against reference labels.
    Gather(gather::GatherArgs),
    /// Write sbatch scripts for a Slurm cluster: cohort prediction as a job array, 5-fold
    /// training with one GPU per fold, and a final gather/evaluation job.
    Slurm(slurm::SlurmArgs),
    /// Work with the clinic's PACS: segment studies on a DICOMweb server (Orthanc) and
    /// store SEG, RTSTRUCT and a PDF table back; watch for new studies; DICOM C-STORE.
    Pacs(pacs::PacsArgs),
}

/// Backends: burn's `flex` on the CPU by default, CUDA with the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub(crate) type InferBackend = glandseg_net::Cpu;
#[cfg(feature = "cuda")]
pub(crate) type InferBackend = burn::backend::Cuda;
pub(crate) type TrainBackend = burn::backend::Autodiff<InferBackend>;

/// Stops on SIGTERM, SIGINT and SIGHUP without leaving temporary files behind: the
/// signals are blocked in every thread (this runs before any other thread starts, and
/// threads inherit the mask) and taken by one thread of ours with `sigwait`, which deletes
/// the temporary files being written (`glandseg_core::atomic`) and exits with 128 + the
/// signal number. Every output is written to a temporary file and renamed into place, so
/// what is left is complete files only.
#[cfg(unix)]
fn handle_termination() {
    // SAFETY: plain libc calls on a sigset_t we own; no handler runs in signal context.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let set = set;
        let spawned = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) != 0 {
                    continue;
                }
                let (n, _hold) = glandseg_core::atomic::remove_temporaries();
                let name = match sig {
                    libc::SIGTERM => "SIGTERM",
                    libc::SIGINT => "SIGINT",
                    _ => "SIGHUP",
                };
                eprintln!(
                    "\nglandseg: stopped by {name}; {n} unfinished output file(s) removed, files already written are complete"
                );
                std::process::exit(128 + sig);
            });
        if spawned.is_err() {
            // Nobody would take the signals: let them act as before.
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    #[cfg(unix)]
    handle_termination();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Phantom(a) => phantom::run(a),
        Command::Info(a) => info::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Dose(a) => dose::run(a),
        Command::Recovery(a) => recovery::run(a),
        Command::Train(a) => train::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Gather(a) => gather::run(a),
        Command::Slurm(a) => slurm::run(a),
        Command::Pacs(a) => pacs::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text an outer message
/// already carries: our crates' errors print their source (so a library user sees it
/// too), which `{:#}` would otherwise repeat.
pub(crate) fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// Creates the output folder (with its parents) and checks that files can be made in it,
/// before any work is done: the message names the folder and what the system said.
pub(crate) fn output_folder(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "output folder {}: it exists and is not a folder",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("output folder {}: cannot create it", dir.display()))?;
    let probe = dir.join(format!(
        "{}probe-{}",
        glandseg_core::atomic::TEMP_PREFIX,
        std::process::id()
    ));
    std::fs::File::create(&probe)
        .with_context(|| format!("output folder {}: cannot write into it", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// The label map named by a dataset.json's "labels", or glandseg's default map.
pub(crate) fn label_map(dataset_json: Option<&std::path::Path>) -> anyhow::Result<LabelMap> {
    let Some(p) = dataset_json else {
        return Ok(LabelMap::default());
    };
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not valid JSON", p.display()))?;
    LabelMap::from_nnunet_labels(&v["labels"])
        .with_context(|| format!("{}: field \"labels\"", p.display()))
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn purge_delay_is_the_option_we_set() {
        // mimalloc v3's default purge delay is 1000 ms (its options.c): a wrong enum index
        // would read another option's default.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reading an option.
            assert_eq!(
                unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
                1000
            );
        }
        keep_freed_memory();
        // SAFETY: as above.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            -1
        );
    }
}
