//! Seeded-mutation fuzzing of glandseg's file readers, on stable Rust.
//!
//! A [`Campaign`] takes seed files (the committed corpus in `corpus/` and files glandseg's
//! own writers make at run time), applies byte mutations ([`mutate::Mutator`]: bit flips,
//! bytes set to 0x00 / 0xFF / random, truncation, chunks duplicated or deleted, 0xFFFFFFFF
//! and other limits written into 2- and 4-byte fields, numbers in JSON replaced) and feeds
//! every mutant to one [`Reader`] inside `catch_unwind`, on a worker thread that the
//! campaign waits for at most `hang_after` (10 s): a panic or a hang is a finding, a clean
//! `Err` is what a reader should give.
//!
//! - CI: `tests/fuzz_smoke.rs` runs a fixed number of mutants per reader;
//!   `tests/regressions.rs` replays every input in `regressions/` that once crashed.
//! - Long runs: `cargo run -p glandseg-fuzz --example fuzz -- --reader nifti --minutes 60`
//!   prints executions, CPU time and findings, and saves each finding's files.
//!
//! An input that aborts the process (out of memory, stack overflow) cannot be caught; the
//! long run writes each input to `OUT/current/` before executing it, so the last one is
//! there when the process dies.

#![warn(missing_docs)]

pub mod mutate;
pub mod readers;

pub use mutate::Mutator;
pub use readers::Reader;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One input: the files a reader gets, by relative path (one file for most readers, a
/// folder's worth for the DICOM folder scan and the model folder).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// (relative path, bytes).
    pub files: Vec<(PathBuf, Vec<u8>)>,
}

impl Sample {
    /// A one-file sample.
    pub fn single(name: &str, bytes: Vec<u8>) -> Sample {
        Sample {
            files: vec![(PathBuf::from(name), bytes)],
        }
    }

    /// Every file under `dir` (recursively, sorted), by path relative to it.
    pub fn from_dir(dir: &Path) -> Result<Sample, String> {
        fn walk(root: &Path, d: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<(), String> {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(d)
                .map_err(|e| format!("{}: {e}", d.display()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for p in entries {
                if p.is_dir() {
                    walk(root, &p, out)?;
                } else {
                    let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                    let rel = p.strip_prefix(root).expect("under root").to_path_buf();
                    out.push((rel, bytes));
                }
            }
            Ok(())
        }
        let mut files = Vec::new();
        walk(dir, dir, &mut files)?;
        Ok(Sample { files })
    }

    /// Writes the files under `dir` (created if needed).
    pub fn write_to(&self, dir: &Path) -> Result<(), String> {
        for (rel, bytes) in &self.files {
            let p = dir.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// Total size in bytes.
    pub fn len(&self) -> usize {
        self.files.iter().map(|(_, b)| b.len()).sum()
    }

    /// True when no file holds a byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The committed seed corpus of this crate.
pub fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// The crashing inputs kept as regression tests (`regressions/<reader>/<name>/`).
pub fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions")
}

/// What one execution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reader accepted the input.
    Accepted,
    /// The reader refused it with an error (the expected answer to a broken file).
    Refused(String),
    /// The reader panicked (message and place).
    Panicked(String),
    /// The reader had not returned after the time limit.
    Hung(Duration),
    /// The process's peak resident memory during the execution (kB) passed the
    /// campaign's `max_rss` (a buffer sized from a declared length, zeroed).
    OverMemory(u64),
}

/// A panic or a hang, with the input that caused it.
#[derive(Clone, Debug)]
pub struct Finding {
    /// The reader.
    pub reader: Reader,
    /// Panic message or hang time.
    pub outcome: Outcome,
    /// The input.
    pub sample: Sample,
    /// Where its files were saved (with `Campaign::crash_dir`).
    pub saved: Option<PathBuf>,
}

/// A fuzzing run of one reader.
#[derive(Clone, Debug)]
pub struct Campaign {
    /// The reader.
    pub reader: Reader,
    /// Seed of the mutation stream (same seed, same mutants).
    pub seed: u64,
    /// Stop after this many mutants (the seeds themselves run first, uncounted).
    pub max_execs: Option<u64>,
    /// Stop after this long.
    pub max_time: Option<Duration>,
    /// An execution that has not returned after this long is a hang (default 10 s).
    pub hang_after: Duration,
    /// The committed corpus folder.
    pub corpus: PathBuf,
    /// Where findings are saved (none: kept in memory only).
    pub crash_dir: Option<PathBuf>,
    /// Write each input to `crash_dir/current/` before running it (an abort leaves it).
    pub keep_current: bool,
    /// Print a progress line about every this often.
    pub report_every: Option<Duration>,
    /// Stop at the first finding.
    pub stop_on_finding: bool,
    /// Save (with `crash_dir`) inputs that took longer than this, as `slow-...`: an
    /// input that returns but takes seconds is often a huge allocation.
    pub slow_after: Option<Duration>,
    /// An execution whose peak resident memory passes this many bytes is a finding
    /// ([`Outcome::OverMemory`]; Linux, where the peak can be reset per execution).
    /// Catches what `slow_after` only catches when zeroing gigabytes happens to be slow: a
    /// 1.7 kB DICOM file once cost 2.1 GB and 1.5-5 s.
    pub max_rss: Option<u64>,
}

impl Campaign {
    /// A campaign of `execs` mutants of `reader`'s seeds, mutation seed 0.
    pub fn new(reader: Reader, execs: u64) -> Campaign {
        Campaign {
            reader,
            seed: 0,
            max_execs: Some(execs),
            max_time: None,
            hang_after: Duration::from_secs(10),
            corpus: default_corpus(),
            crash_dir: None,
            keep_current: false,
            report_every: None,
            stop_on_finding: false,
            slow_after: None,
            max_rss: None,
        }
    }
}

/// What a campaign did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The reader.
    pub reader: Reader,
    /// Seeds run unmutated, and how many of them the reader accepted.
    pub seeds: (usize, usize),
    /// Mutants executed.
    pub execs: u64,
    /// Mutants accepted (the rest were refused, or are findings).
    pub accepted: u64,
    /// Wall time.
    pub wall: Duration,
    /// CPU time of the process over the run (user + system; Linux), all threads.
    pub cpu: Option<Duration>,
    /// The slowest execution.
    pub slowest: Duration,
    /// Executions slower than `slow_after`.
    pub slow: u64,
    /// The largest peak resident memory of one execution (kB), with `max_rss`.
    pub peak_rss_kb: Option<u64>,
    /// Panics and hangs.
    pub findings: Vec<Finding>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} execs ({} accepted) in {:.1} s wall, {} CPU, slowest {:.2} s ({} slow), peak {}, seeds {}/{} accepted, {} finding(s)",
            self.reader.name(),
            self.execs,
            self.accepted,
            self.wall.as_secs_f64(),
            self.cpu
                .map(|c| format!("{:.1} s", c.as_secs_f64()))
                .unwrap_or_else(|| "?".into()),
            self.slowest.as_secs_f64(),
            self.slow,
            self.peak_rss_kb
                .map(|k| format!("{:.0} MB resident", k as f64 / 1024.0))
                .unwrap_or_else(|| "memory not tracked".into()),
            self.seeds.1,
            self.seeds.0,
            self.findings.len()
        )?;
        for x in &self.findings {
            write!(f, "\n  {:?}", x.outcome)?;
            if let Some(p) = &x.saved {
                write!(f, " -> {}", p.display())?;
            }
        }
        Ok(())
    }
}

/// CPU time of this process so far (user + system), from /proc/self/stat.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident memory of this process (VmHWM, kB; Linux).
pub fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Resets the peak resident memory to the current one (Linux 4.0+: "5" written to
/// /proc/self/clear_refs); false where that cannot be done.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

static PANIC_PLACE: Mutex<Option<String>> = Mutex::new(None);

/// Installs (once) a panic hook that records where a panic happened instead of printing
/// it; panics outside a fuzzing execution still print.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Readers fan out to rayon's threads, so any panic while an execution runs
            // counts as the execution's.
            if ACTIVE.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                if let Ok(mut p) = PANIC_PLACE.lock() {
                    *p = info.location().map(|l| l.to_string());
                }
            } else {
                default(info);
            }
        }));
    });
}

/// Executions running now (the panic hook stays quiet while there are any).
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into());
    let place = PANIC_PLACE
        .lock()
        .ok()
        .and_then(|mut p| p.take())
        .unwrap_or_default();
    format!("{msg} at {place}")
}

/// Runs `reader` on `sample` in a fresh folder under `scratch`, catching panics (no time
/// limit; see [`Campaign::run`]).
pub fn execute(reader: Reader, sample: &Sample, scratch: &Path) -> Outcome {
    install_quiet_hook();
    let dir = scratch.join("input");
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome::Refused(format!("scratch folder: {e}"));
    }
    ACTIVE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| reader.execute(sample, &dir)));
    ACTIVE.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    match r {
        Ok(Ok(())) => Outcome::Accepted,
        Ok(Err(e)) => Outcome::Refused(e),
        Err(payload) => Outcome::Panicked(panic_text(payload.as_ref())),
    }
}

type Job = (Sample, mpsc::Sender<(Outcome, Duration)>);

/// A worker thread with its own scratch folder; abandoned (left running) after a hang.
struct Worker {
    jobs: mpsc::Sender<Job>,
    _scratch: tempfile::TempDir,
}

impl Worker {
    fn start(reader: Reader, n: usize) -> Result<Worker, String> {
        let scratch = tempfile::Builder::new()
            .prefix("glandseg-fuzz-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let dir = scratch.path().to_path_buf();
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name(format!("fuzz-{}-{n}", reader.name()))
            .spawn(move || {
                for (sample, reply) in rx {
                    let t = Instant::now();
                    let o = execute(reader, &sample, &dir);
                    let _ = reply.send((o, t.elapsed()));
                }
            })
            .map_err(|e| e.to_string())?;
        Ok(Worker {
            jobs: tx,
            _scratch: scratch,
        })
    }
}

impl Campaign {
    /// Runs the campaign: every seed once, then mutants until a limit is reached.
    pub fn run(&self) -> Result<Report, String> {
        install_quiet_hook();
        let start = Instant::now();
        let cpu0 = process_cpu_time();
        let seed_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let seeds = self.reader.seeds(&self.corpus, seed_dir.path())?;
        let mut workers = 0;
        let mut worker = Worker::start(self.reader, workers)?;
        let mut report = Report {
            reader: self.reader,
            seeds: (seeds.len(), 0),
            execs: 0,
            accepted: 0,
            wall: Duration::ZERO,
            cpu: None,
            slowest: Duration::ZERO,
            slow: 0,
            peak_rss_kb: None,
            findings: Vec::new(),
        };
        let mut mutator = Mutator::new(self.seed);
        let mut last_report = Instant::now();
        let mut i = 0usize;
        loop {
            let is_seed = i < seeds.len();
            if !is_seed
                && (self.max_execs.is_some_and(|n| report.execs >= n)
                    || self.max_time.is_some_and(|t| start.elapsed() >= t))
            {
                break;
            }
            let sample = if is_seed {
                seeds[i].clone()
            } else {
                let base = &seeds[mutator.below(seeds.len())];
                mutator.mutate_sample(base)
            };
            i += 1;
            if self.keep_current {
                if let Some(d) = &self.crash_dir {
                    let cur = d.join("current");
                    let _ = std::fs::remove_dir_all(&cur);
                    sample.write_to(&cur)?;
                }
            }
            let track_rss = self.max_rss.is_some() && reset_peak_rss();
            let (reply_tx, reply_rx) = mpsc::channel();
            worker
                .jobs
                .send((sample.clone(), reply_tx))
                .map_err(|_| "fuzz worker died".to_string())?;
            let outcome = match reply_rx.recv_timeout(self.hang_after) {
                Ok((o, took)) => {
                    report.slowest = report.slowest.max(took);
                    let peak = track_rss.then(peak_rss_kb).flatten();
                    report.peak_rss_kb = report.peak_rss_kb.max(peak);
                    let o = match (peak, self.max_rss) {
                        (Some(kb), Some(max)) if kb.saturating_mul(1024) > max => {
                            Outcome::OverMemory(kb)
                        }
                        _ => o,
                    };
                    if self.slow_after.is_some_and(|s| took > s) {
                        report.slow += 1;
                        if let Some(d) = &self.crash_dir {
                            let name = format!("slow-{}", self.reader.name());
                            let d = d.join(format!("{name}-{}", sample_hash(&sample)));
                            sample.write_to(&d.join("files"))?;
                            let _ = std::fs::write(
                                d.join("finding.txt"),
                                format!("{:.2} s: {o:?}\n", took.as_secs_f64()),
                            );
                        }
                    }
                    o
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // The worker is stuck: leave it and start another.
                    workers += 1;
                    worker = Worker::start(self.reader, workers)?;
                    Outcome::Hung(self.hang_after)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err("fuzz worker died".into());
                }
            };
            if is_seed {
                if outcome == Outcome::Accepted {
                    report.seeds.1 += 1;
                }
            } else {
                report.execs += 1;
                if outcome == Outcome::Accepted {
                    report.accepted += 1;
                }
            }
            if matches!(
                outcome,
                Outcome::Panicked(_) | Outcome::Hung(_) | Outcome::OverMemory(_)
            ) {
                let saved = match &self.crash_dir {
                    Some(d) => Some(save_finding(d, self.reader, &sample, &outcome)?),
                    None => None,
                };
                if self.report_every.is_some() {
                    eprintln!("FINDING {:?} saved to {saved:?}", outcome);
                }
                report.findings.push(Finding {
                    reader: self.reader,
                    outcome,
                    sample,
                    saved,
                });
                if self.stop_on_finding {
                    break;
                }
            }
            if let Some(every) = self.report_every {
                if last_report.elapsed() >= every {
                    last_report = Instant::now();
                    let cpu = process_cpu_time()
                        .zip(cpu0)
                        .map(|(a, b)| a.saturating_sub(b).as_secs_f64());
                    eprintln!(
                        "{}: {} execs, {:.0} s, CPU {:.0} s, {} finding(s)",
                        self.reader.name(),
                        report.execs,
                        start.elapsed().as_secs_f64(),
                        cpu.unwrap_or(f64::NAN),
                        report.findings.len()
                    );
                }
            }
        }
        report.wall = start.elapsed();
        report.cpu = process_cpu_time()
            .zip(cpu0)
            .map(|(a, b)| a.saturating_sub(b));
        Ok(report)
    }
}

/// A short, stable name for a sample's bytes (FNV-1a).
pub fn sample_hash(sample: &Sample) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (p, b) in &sample.files {
        for x in p.to_string_lossy().bytes().chain(b.iter().copied()) {
            h ^= x as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Saves a finding's files and `finding.txt` under `dir/<reader>-<hash>/`.
pub fn save_finding(
    dir: &Path,
    reader: Reader,
    sample: &Sample,
    outcome: &Outcome,
) -> Result<PathBuf, String> {
    let d = dir.join(format!("{}-{}", reader.name(), sample_hash(sample)));
    sample.write_to(&d.join("files"))?;
    std::fs::write(d.join("finding.txt"), format!("{outcome:?}\n"))
        .map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

/// Replays every saved input under `regressions/<reader>/*/files/` and returns the ones
/// that still panic or hang (with their outcome).
pub fn replay_regressions(hang_after: Duration) -> Result<Vec<(PathBuf, Outcome)>, String> {
    let mut bad = Vec::new();
    for reader in Reader::ALL {
        let dir = regressions_dir().join(reader.name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut cases: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        cases.sort();
        for case in cases {
            let sample = Sample::from_dir(&case.join("files"))?;
            let w = Worker::start(reader, 0)?;
            let (tx, rx) = mpsc::channel();
            w.jobs
                .send((sample, tx))
                .map_err(|_| "fuzz worker died".to_string())?;
            match rx.recv_timeout(hang_after) {
                Ok((o @ Outcome::Panicked(_), _)) => bad.push((case, o)),
                Ok(_) => {}
                Err(_) => bad.push((case, Outcome::Hung(hang_after))),
            }
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    /// The per-execution memory check rests on resetting the process's peak.
    #[test]
    fn peak_resident_memory_resets() {
        let Some(before) = super::peak_rss_kb() else {
            return; // not Linux
        };
        let mut big = vec![0u8; 256 << 20];
        for i in (0..big.len()).step_by(4096) {
            big[i] = 1;
        }
        std::hint::black_box(&big);
        let peak = super::peak_rss_kb().unwrap();
        assert!(peak >= before + (200 << 10), "{before} -> {peak} kB");
        drop(big);
        if super::reset_peak_rss() {
            let after = super::peak_rss_kb().unwrap();
            assert!(after + (200 << 10) < peak, "{peak} -> {after} kB");
        }
    }
}
