//! `glandseg slurm predict|train`: ready-to-submit sbatch scripts for a Slurm cluster.
//!
//! - `predict`: a job array, task I predicting shard I (0-based) of the sorted case list
//!   (`glandseg predict` reads `SLURM_ARRAY_TASK_ID` / `SLURM_ARRAY_TASK_COUNT`), then a
//!   gather job (`--dependency=afterok` on the whole array) writing the cohort tables and,
//!   with `--gt`, the evaluation.
//! - `train`: a prepare job (plan, preprocessing, splits: once), a job array with one task
//!   per fold and one GPU each (`--gres=gpu:1`, as nnU-Net trains its folds), then a final
//!   job that predicts the test images with the fold ensemble and gathers and evaluates.
//!
//! `submit.sh` in the scripts folder submits them in order with the dependencies (`bash
//! submit.sh --wait` waits for the last job and returns its exit status).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SlurmArgs {
    #[command(subcommand)]
    pub command: SlurmCommand,
}

#[derive(Subcommand)]
pub enum SlurmCommand {
    /// Cohort prediction as a job array plus a gather job.
    Predict(SlurmPredictArgs),
    /// 5-fold training as a job array (one GPU per fold) plus a final prediction,
    /// gather and evaluation job.
    Train(SlurmTrainArgs),
}

/// sbatch settings common to every job.
#[derive(Args, Clone)]
pub struct Sbatch {
    /// Folder for the scripts and their logs (default: OUT/slurm or MODEL/slurm).
    #[arg(long)]
    pub scripts: Option<PathBuf>,
    /// Slurm partition (default: the cluster's default).
    #[arg(long)]
    pub partition: Option<String>,
    /// Slurm account.
    #[arg(long)]
    pub account: Option<String>,
    /// Wall-time limit of each array task (HH:MM:SS).
    #[arg(long)]
    pub time: Option<String>,
    /// CPU cores per task.
    #[arg(long, default_value_t = 4)]
    pub cpus_per_task: usize,
    /// Memory per task (e.g. 16G).
    #[arg(long, default_value = "16G")]
    pub mem: String,
    /// A shell line run before glandseg in every job (e.g. `module load cuda`); repeatable.
    #[arg(long)]
    pub setup: Vec<String>,
    /// The glandseg binary the jobs run (default: this one).
    #[arg(long)]
    pub glandseg: Option<PathBuf>,
    /// Submit at once (runs `bash SCRIPTS/submit.sh`).
    #[arg(long)]
    pub submit: bool,
}

#[derive(Args)]
pub struct SlurmPredictArgs {
    /// Input folder of NIfTI cases (CASE_0000.nii.gz CT, CASE_0001.nii.gz PET).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Model folder.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Output folder, shared by every array task.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Array tasks (each predicts one of this many equal parts of the sorted cases).
    #[arg(long, default_value_t = 4)]
    pub tasks: usize,
    /// GPUs per array task (0: CPU; a GPU needs a glandseg built with `--features cuda`).
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    /// Reference label maps: the gather job also evaluates.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    #[command(flatten)]
    pub sbatch: Sbatch,
    /// Further `glandseg predict` options for every task (after `--`).
    #[arg(last = true)]
    pub predict_args: Vec<String>,
}

#[derive(Args)]
pub struct SlurmTrainArgs {
    /// Dataset folder (nnU-Net raw layout).
    pub dataset: PathBuf,
    /// Model folder (default: DATASET/model).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Folds to train, one array task each.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4")]
    pub folds: Vec<usize>,
    /// GPUs per fold (`--gres=gpu:N`; 0: CPU training). A GPU needs a glandseg built
    /// with `--features cuda`.
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,
    /// Also train the cascade's fine stage (stage 2) in each fold's task, after stage 1.
    #[arg(long)]
    pub stage2: bool,
    /// Images the final job predicts with the fold ensemble (default: DATASET/imagesTs if
    /// it exists; without any, no final job).
    #[arg(long)]
    pub test_images: Option<PathBuf>,
    /// Reference labels of the test images (default: DATASET/labelsTs if it exists).
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Where the final job writes its predictions (default: MODEL/test_predictions).
    #[arg(long)]
    pub pred_out: Option<PathBuf>,
    #[command(flatten)]
    pub sbatch: Sbatch,
    /// Further `glandseg train` options for every fold (after `--`), e.g. `--epochs 300`.
    #[arg(last = true)]
    pub train_args: Vec<String>,
}

/// A word for a POSIX shell: single-quoted unless plainly safe.
pub(crate) fn sh(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

fn shp(p: &Path) -> String {
    sh(&p.to_string_lossy())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}: cannot make it absolute", p.display()))
}

/// Sbatch header lines for one job.
fn header(s: &Sbatch, name: &str, log: &Path, time: &str, extra: &[String]) -> String {
    let mut h = String::from("#!/bin/bash\n");
    let _ = writeln!(h, "#SBATCH --job-name={name}");
    let _ = writeln!(h, "#SBATCH --output={}", log.display());
    let _ = writeln!(h, "#SBATCH --cpus-per-task={}", s.cpus_per_task);
    let _ = writeln!(h, "#SBATCH --mem={}", s.mem);
    let _ = writeln!(h, "#SBATCH --time={}", s.time.as_deref().unwrap_or(time));
    if let Some(p) = &s.partition {
        let _ = writeln!(h, "#SBATCH --partition={p}");
    }
    if let Some(a) = &s.account {
        let _ = writeln!(h, "#SBATCH --account={a}");
    }
    for e in extra {
        let _ = writeln!(h, "#SBATCH {e}");
    }
    let _ = writeln!(
        h,
        "# Written by glandseg {} (`glandseg slurm`); submit with submit.sh beside it.",
        env!("CARGO_PKG_VERSION")
    );
    h.push_str("set -euo pipefail\n");
    h.push_str("# One rayon thread per allocated core.\n");
    h.push_str("export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n");
    for line in &s.setup {
        h.push_str(line);
        h.push('\n');
    }
    h
}

fn binary(s: &Sbatch) -> Result<PathBuf> {
    match &s.glandseg {
        Some(p) => absolute(p),
        None => std::env::current_exe().context("finding this glandseg binary"),
    }
}

fn write_script(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    glandseg_core::atomic::write_bytes(&p, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("{}: making it executable", p.display()))?;
    }
    Ok(p)
}

/// `submit.sh`: submits `jobs` in order, each after the previous one succeeded; the
/// last one is submitted with `--wait` when the script is called with `--wait`.
fn submit_script(jobs: &[&str]) -> String {
    let mut s = String::from(
        "#!/bin/bash\n# Submits the jobs in order, each with --dependency=afterok on the one before\n\
# (--kill-on-invalid-dep=yes: a failed job cancels those after it instead of leaving them\n\
# pending). `bash submit.sh --wait` waits for the last job and exits with its status.\n\
set -euo pipefail\ncd \"$(dirname \"$0\")\"\nwait_flag=\nif [ \"${1:-}\" = --wait ]; then wait_flag=--wait; fi\nprev=\n",
    );
    for (n, job) in jobs.iter().enumerate() {
        let last = n + 1 == jobs.len();
        let var = format!("id{n}");
        let dep = if n == 0 {
            String::new()
        } else {
            "--dependency=afterok:$prev --kill-on-invalid-dep=yes ".into()
        };
        if last {
            let _ = writeln!(
                s,
                "echo \"submitting {job} (after ${{prev:-nothing}})\"\nsbatch $wait_flag --parsable {dep}{job}"
            );
        } else {
            let _ = writeln!(
                s,
                "{var}=$(sbatch --parsable {dep}{job})\n{var}=${{{var}%%;*}}\necho \"{job}: job ${var}\"\nprev=${var}"
            );
        }
    }
    s
}

fn submit(dir: &Path) -> Result<()> {
    let status = std::process::Command::new("bash")
        .arg(dir.join("submit.sh"))
        .status()
        .with_context(|| format!("running bash {}", dir.join("submit.sh").display()))?;
    anyhow::ensure!(
        status.success(),
        "{}: sbatch failed ({status})",
        dir.join("submit.sh").display()
    );
    Ok(())
}

fn predict(a: SlurmPredictArgs) -> Result<()> {
    anyhow::ensure!(
        (1..=10_000).contains(&a.tasks),
        "--tasks must be between 1 and 10000, got {}",
        a.tasks
    );
    anyhow::ensure!(
        a.input.is_dir(),
        "--input {}: not a folder",
        a.input.display()
    );
    let cases = crate::gather::input_case_ids(&a.input)?;
    anyhow::ensure!(
        !cases.is_empty(),
        "--input {}: no CASE_0000.nii.gz files",
        a.input.display()
    );
    for bad in ["--shard", "-i", "--input", "-o", "--out", "-m", "--model"] {
        anyhow::ensure!(
            !a.predict_args.iter().any(|x| x == bad),
            "{bad} after `--`: the scripts set it"
        );
    }
    let tasks = a.tasks.min(cases.len());
    let (input, model, out) = (absolute(&a.input)?, absolute(&a.model)?, absolute(&a.out)?);
    crate::output_folder(&out)?;
    let dir = absolute(
        &a.sbatch
            .scripts
            .clone()
            .unwrap_or_else(|| out.join("slurm")),
    )?;
    crate::output_folder(&dir.join("logs"))?;
    let exe = binary(&a.sbatch)?;
    let mut extra = vec![format!("--array=0-{}", tasks - 1)];
    if a.gpus > 0 {
        extra.push(format!("--gres=gpu:{}", a.gpus));
    }
    let mut p = header(
        &a.sbatch,
        "glandseg-predict",
        &dir.join("logs").join("predict_%A_%a.out"),
        "04:00:00",
        &extra,
    );
    let _ = writeln!(
        p,
        "# Array task I predicts part I (0-based) of {tasks} equal parts of the {} sorted cases:\n\
# glandseg predict reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT itself.",
        cases.len()
    );
    let _ = writeln!(
        p,
        "{} predict --quiet -i {} -m {} -o {}{}",
        shp(&exe),
        shp(&input),
        shp(&model),
        shp(&out),
        a.predict_args
            .iter()
            .map(|x| format!(" {}", sh(x)))
            .collect::<String>()
    );
    write_script(&dir, "predict.sbatch", &p)?;
    let mut g = header(
        &a.sbatch,
        "glandseg-gather",
        &dir.join("logs").join("gather_%j.out"),
        "01:00:00",
        &[],
    );
    let _ = writeln!(
        g,
        "{} gather --quiet {} -i {}{}",
        shp(&exe),
        shp(&out),
        shp(&input),
        a.gt.as_deref()
            .map(|gt| absolute(gt).map(|gt| format!(" --gt {}", shp(&gt))))
            .transpose()?
            .unwrap_or_default()
    );
    write_script(&dir, "gather.sbatch", &g)?;
    write_script(
        &dir,
        "submit.sh",
        &submit_script(&["predict.sbatch", "gather.sbatch"]),
    )?;
    println!(
        "{} case(s) in {tasks} array task(s); scripts in {}: submit with `bash {}`",
        cases.len(),
        dir.display(),
        dir.join("submit.sh").display()
    );
    if a.sbatch.submit {
        submit(&dir)?;
    }
    Ok(())
}

fn train(a: SlurmTrainArgs) -> Result<()> {
    anyhow::ensure!(
        a.dataset.join("dataset.json").is_file(),
        "{}: no dataset.json (a dataset in the nnU-Net raw layout)",
        a.dataset.display()
    );
    anyhow::ensure!(!a.folds.is_empty(), "--folds: name at least one fold");
    anyhow::ensure!(
        a.folds.iter().all(|&f| f < 5),
        "--folds: folds are 0-4, got {:?}",
        a.folds
    );
    for bad in ["--fold", "-m", "--model", "--stage", "--prepare-only"] {
        anyhow::ensure!(
            !a.train_args.iter().any(|x| x == bad),
            "{bad} after `--`: the scripts set it"
        );
    }
    let dataset = absolute(&a.dataset)?;
    let model = absolute(&a.model.clone().unwrap_or_else(|| dataset.join("model")))?;
    let dir = absolute(
        &a.sbatch
            .scripts
            .clone()
            .unwrap_or_else(|| model.join("slurm")),
    )?;
    crate::output_folder(&dir.join("logs"))?;
    let exe = binary(&a.sbatch)?;
    let extra_args: String = a.train_args.iter().map(|x| format!(" {}", sh(x))).collect();

    let mut prep = header(
        &a.sbatch,
        "glandseg-prepare",
        &dir.join("logs").join("prepare_%j.out"),
        "04:00:00",
        &[],
    );
    let _ = writeln!(
        prep,
        "# Plan, preprocessing and splits.json once, before the fold jobs.\n{} train {} -m {} --fold {} --prepare-only --quiet{extra_args}",
        shp(&exe),
        shp(&dataset),
        shp(&model),
        a.folds[0]
    );
    write_script(&dir, "prepare.sbatch", &prep)?;

    let folds: Vec<String> = a.folds.iter().map(|f| f.to_string()).collect();
    let mut extra = vec![format!("--array={}", folds.join(","))];
    if a.gpus > 0 {
        extra.push(format!("--gres=gpu:{}", a.gpus));
    }
    let mut t = header(
        &a.sbatch,
        "glandseg-train",
        &dir.join("logs").join("train_%A_fold%a.out"),
        "48:00:00",
        &extra,
    );
    let _ = writeln!(
        t,
        "# One fold per array task (the task id is the fold), one GPU each as nnU-Net trains\n\
# its folds{}; `--continue` after a requeue resumes from the latest checkpoint.",
        if a.gpus > 0 {
            " (glandseg must be built with --features cuda)"
        } else {
            ""
        }
    );
    t.push_str("fold=\"$SLURM_ARRAY_TASK_ID\"\n");
    let _ = writeln!(
        t,
        "resume=\nif [ -f {}/fold_\"$fold\"/checkpoint_latest.ckpt ]; then resume=--continue; fi",
        shp(&model)
    );
    let _ = writeln!(
        t,
        "{} train {} -m {} --fold \"$fold\" $resume --quiet{extra_args}",
        shp(&exe),
        shp(&dataset),
        shp(&model)
    );
    if a.stage2 {
        let _ = writeln!(
            t,
            "{} train {} -m {} --fold \"$fold\" --stage 2 --quiet{extra_args}",
            shp(&exe),
            shp(&dataset),
            shp(&model)
        );
    }
    write_script(&dir, "train.sbatch", &t)?;

    let test = a
        .test_images
        .clone()
        .or_else(|| Some(dataset.join("imagesTs")).filter(|p| p.is_dir()));
    let mut jobs = vec!["prepare.sbatch", "train.sbatch"];
    if let Some(test) = test {
        let test = absolute(&test)?;
        let gt =
            a.gt.clone()
                .or_else(|| Some(dataset.join("labelsTs")).filter(|p| p.is_dir()))
                .map(|p| absolute(&p))
                .transpose()?;
        let pred = absolute(
            &a.pred_out
                .clone()
                .unwrap_or_else(|| model.join("test_predictions")),
        )?;
        let mut f = header(
            &a.sbatch,
            "glandseg-final",
            &dir.join("logs").join("final_%j.out"),
            "08:00:00",
            &[],
        );
        let _ = writeln!(
            f,
            "# After every fold: the fold ensemble predicts the test images, then the cohort\n\
# tables and the evaluation.\n{} predict --quiet -i {} -m {} -o {} --folds {}",
            shp(&exe),
            shp(&test),
            shp(&model),
            shp(&pred),
            folds.join(",")
        );
        let _ = writeln!(
            f,
            "{} gather --quiet {} -i {}{}",
            shp(&exe),
            shp(&pred),
            shp(&test),
            gt.map(|g| format!(" --gt {}", shp(&g))).unwrap_or_default()
        );
        write_script(&dir, "final.sbatch", &f)?;
        jobs.push("final.sbatch");
    } else {
        eprintln!("note: no test images (--test-images, DATASET/imagesTs): no final job");
    }
    write_script(&dir, "submit.sh", &submit_script(&jobs))?;
    println!(
        "{} fold(s); scripts in {}: submit with `bash {}`",
        folds.len(),
        dir.display(),
        dir.join("submit.sh").display()
    );
    if a.sbatch.submit {
        submit(&dir)?;
    }
    Ok(())
}

pub fn run(a: SlurmArgs) -> Result<()> {
    match a.command {
        SlurmCommand::Predict(p) => predict(p),
        SlurmCommand::Train(t) => train(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(sh("/a/b-c_1.nii.gz"), "/a/b-c_1.nii.gz");
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), "'it'\\''s'");
        assert_eq!(sh(""), "''");
        assert_eq!(sh("$HOME"), "'$HOME'");
    }

    #[test]
    fn submit_chains_jobs_with_afterok() {
        let s = submit_script(&["a.sbatch", "b.sbatch", "c.sbatch"]);
        assert!(s.contains("id0=$(sbatch --parsable a.sbatch)"), "{s}");
        assert!(
            s.contains("id1=$(sbatch --parsable --dependency=afterok:$prev --kill-on-invalid-dep=yes b.sbatch)"),
            "{s}"
        );
        assert!(
            s.contains("sbatch $wait_flag --parsable --dependency=afterok:$prev --kill-on-invalid-dep=yes c.sbatch"),
            "{s}"
        );
    }
}
