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

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut readers = Vec::new();
    let mut minutes = 1.0f64;
    let mut max_rss_mb = 1024.0f64;
    let mut seed = 0u64;
    let mut execs = None;
    let mut out = std::path::PathBuf::from("fuzz-out");
    let mut corpus = glandseg_fuzz::default_corpus();
    let mut replay = None;
    let usage = "usage: fuzz --reader NAME|all [--minutes M] [--execs N] [--seed S] [--out DIR] [--corpus DIR] [--max-rss-mb MB]\n       fuzz --reader NAME --replay FINDING_DIR";
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value\n{usage}"))
        };
        match a.as_str() {
            "--reader" => {
                let v = value();
                if v == "all" {
                    readers.extend(Reader::ALL);
                } else {
                    let names: Vec<_> = Reader::ALL.iter().map(|r| r.name()).collect();
                    readers.push(Reader::from_name(&v).unwrap_or_else(|| {
                        panic!("unknown reader {v:?}; readers: {}", names.join(", "))
                    }));
                }
            }
            "--minutes" => minutes = value().parse().expect("--minutes: a number"),
            "--seed" => seed = value().parse().expect("--seed: an integer"),
            "--max-rss-mb" => max_rss_mb = value().parse().expect("--max-rss-mb: a number"),
            "--execs" => execs = Some(value().parse().expect("--execs: an integer")),
            "--out" => out = value().into(),
            "--corpus" => corpus = value().into(),
            "--replay" => replay = Some(std::path::PathBuf::from(value())),
            _ => panic!("unknown argument {a}\n{usage}"),
        }
    }
    if readers.is_empty() {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    }
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
