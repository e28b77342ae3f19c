//! Long fuzzing runs of one reader:
//!
//! ```text
//! cargo run -p glandseg-fuzz --example fuzz -- --reader nifti --minutes 60 [--seed 0]
//!     [--execs N] [--out fuzz-out] [--corpus DIR]
//! ```
//!
//! Prints progress every 30 s and a summary (executions, CPU time, peak memory, findings);
//! every panic, hang or execution whose peak resident memory passes `--max-rss-mb`
//! (default 1024) is saved under `OUT/<reader>-<hash>/` (`files/` + `finding.txt`), and the input
//! being executed is always in `OUT/current/` (what to look at when the process aborts).
//! `--reader all` runs every reader in turn, `--minutes` each. Exit status 1 on a finding.

use glandseg_fuzz::{Campaign, Reader};
use std::time::Duration;

/// What the command line asked for.
struct Args {
    readers: Vec<Reader>,
    minutes: f64,
    max_rss_mb: f64,
    seed: u64,
    execs: Option<u64>,
    out: std::path::PathBuf,
    corpus: std::path::PathBuf,
    replay: Option<std::path::PathBuf>,
}

const USAGE: &str = "usage: fuzz --reader NAME|all [--minutes M] [--execs N] [--seed S] [--out DIR] [--corpus DIR] [--max-rss-mb MB]\n       fuzz --reader NAME --replay FINDING_DIR";

/// Parses the arguments; a wrong one is an error message, never a panic.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        readers: Vec::new(),
        minutes: 1.0,
        max_rss_mb: 1024.0,
        seed: 0,
        execs: None,
        out: "fuzz-out".into(),
        corpus: glandseg_fuzz::default_corpus(),
        replay: None,
    };
    fn number<T: std::str::FromStr>(flag: &str, v: String, what: &str) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("{flag}: expected {what}, got {v:?}"))
    }
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--reader" if value == "all" => a.readers.extend(Reader::ALL),
            "--reader" => {
                let r = Reader::from_name(&value).ok_or_else(|| {
                    let names: Vec<_> = Reader::ALL.iter().map(|r| r.name()).collect();
                    format!("unknown reader {value:?}; readers: {}", names.join(", "))
                })?;
                a.readers.push(r);
            }
            "--minutes" => a.minutes = number(&flag, value, "a number")?,
            "--seed" => a.seed = number(&flag, value, "an integer")?,
            "--max-rss-mb" => a.max_rss_mb = number(&flag, value, "a number")?,
            "--execs" => a.execs = Some(number(&flag, value, "an integer")?),
            "--out" => a.out = value.into(),
            "--corpus" => a.corpus = value.into(),
            "--replay" => a.replay = Some(value.into()),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.readers.is_empty() {
        return Err("--reader is required".into());
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let Args {
        readers,
        minutes,
        max_rss_mb,
        seed,
        execs,
        out,
        corpus,
        replay,
    } = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(dir) = replay {
        // One saved input, run on this thread (a hang hangs here: attach a debugger).
        let files = if dir.join("files").is_dir() {
            dir.join("files")
        } else {
            dir
        };
        let sample = glandseg_fuzz::Sample::from_dir(&files).expect("reading the finding");
        let scratch = tempfile::tempdir().expect("temp folder");
        let t = std::time::Instant::now();
        glandseg_fuzz::reset_peak_rss();
        let o = glandseg_fuzz::execute(readers[0], &sample, scratch.path());
        println!(
            "{o:?} in {:.2} s, peak {} kB resident",
            t.elapsed().as_secs_f64(),
            glandseg_fuzz::peak_rss_kb().unwrap_or(0)
        );
        return match o {
            glandseg_fuzz::Outcome::Panicked(_) => std::process::ExitCode::from(1),
            _ => std::process::ExitCode::SUCCESS,
        };
    }
    let mut found = false;
    for reader in readers {
        let c = Campaign {
            reader,
            seed,
            max_execs: execs,
            max_time: Some(Duration::from_secs_f64(minutes * 60.0)),
            hang_after: Duration::from_secs(10),
            corpus: corpus.clone(),
            crash_dir: Some(out.clone()),
            keep_current: true,
            report_every: Some(Duration::from_secs(30)),
            stop_on_finding: false,
            slow_after: Some(Duration::from_secs(1)),
            max_rss: Some((max_rss_mb * 1024.0 * 1024.0) as u64),
        };
        match c.run() {
            Ok(r) => {
                println!("{r}");
                found |= !r.findings.is_empty();
            }
            Err(e) => {
                eprintln!("error: {}: {e}", reader.name());
                return std::process::ExitCode::from(2);
            }
        }
    }
    let _ = std::fs::remove_dir_all(out.join("current"));
    if found {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
