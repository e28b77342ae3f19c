//! `glandseg pacs watch`: polls the server for new studies and processes each PET/CT study
//! once.
//!
//! - **Orthanc** ([`Feed::Orthanc`]): the change feed's `StableStudy` events (a study that
//!   received nothing new for Orthanc's `StableAge` seconds). The position in the feed is
//!   saved after every change handled.
//! - **Any DICOMweb server** ([`Feed::Qido`]): QIDO-RS for studies dated from a few days
//!   back; a study counts as stable once its instance count has not changed for
//!   `stable_seconds`.
//!
//! Each study gets one log line (done, skipped, failed) and a record in the state file;
//! a study in the state file is never processed again, whatever event comes for it (the
//! results glandseg stores into a study make Orthanc report it as stable once more).
//! Server errors while watching are logged and retried at the next poll: a PACS restart
//! does not stop the watcher.

use crate::dicomweb::DicomWeb;
use crate::error::{PacsError, Result};
use crate::orthanc::{change_date_unix, Orthanc};
use crate::state::{civil_from_days, unix_now, Outcome, StateFile};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Where new studies come from.
#[derive(Clone, Debug)]
pub enum Feed {
    /// Orthanc's change feed.
    Orthanc(Orthanc),
    /// QIDO-RS by study date.
    Qido {
        /// Studies dated this many days back (0: today only).
        lookback_days: i64,
        /// Seconds a study's instance count must stay unchanged.
        stable_seconds: u64,
    },
}

/// How the watcher runs.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Seconds between polls when nothing is new.
    pub poll: Duration,
    /// Stop once everything the feed holds now is handled (for tests and cron jobs).
    pub once: bool,
    /// Without a state file: handle the whole change feed (Orthanc) instead of starting
    /// from now.
    pub from_start: bool,
}

/// What a processed study reports for its log line.
pub type Processor<'a> = dyn FnMut(&str) -> Result<String> + 'a;

fn sleep_unless(stop: &dyn Fn() -> bool, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop() {
        std::thread::sleep(Duration::from_millis(100).min(end - Instant::now()));
    }
}

/// Handles one study (unless handled before): process, log, record.
fn handle(
    state: &mut StateFile,
    study: &str,
    stable_at: Option<i64>,
    process: &mut Processor,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    if state.seen(study) {
        return Ok(());
    }
    let t0 = Instant::now();
    let (outcome, msg) = match process(study) {
        Ok(m) => {
            let since_stable = stable_at
                .map(|t| unix_now() - t)
                .filter(|d| (0..86400).contains(d))
                .map(|d| format!("; stored {d} s after the study became stable"))
                .unwrap_or_default();
            (
                Outcome::Done,
                format!("{m} ({:.1} s{since_stable})", t0.elapsed().as_secs_f64()),
            )
        }
        Err(PacsError::NotPetCt { msg, .. }) => (Outcome::Skipped, msg),
        Err(e) => (Outcome::Failed, e.to_string()),
    };
    let word = match outcome {
        Outcome::Done => "done",
        Outcome::Skipped => "skipped",
        Outcome::Failed => "FAILED",
    };
    log(&format!("study {study}: {word}: {msg}"));
    state.record(study, outcome, &msg)
}

/// Watches `feed` until `stop()` (or, with `once`, until caught up). Errors only when the
/// state file cannot be written or, at the start, the server cannot be reached.
pub fn watch(
    client: &DicomWeb,
    feed: &Feed,
    state: &mut StateFile,
    opts: &WatchOptions,
    process: &mut Processor,
    log: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    match feed {
        Feed::Orthanc(o) => watch_orthanc(o, state, opts, process, log, stop),
        Feed::Qido {
            lookback_days,
            stable_seconds,
        } => watch_qido(
            client,
            *lookback_days,
            *stable_seconds,
            state,
            opts,
            process,
            log,
            stop,
        ),
    }
}

fn watch_orthanc(
    orthanc: &Orthanc,
    state: &mut StateFile,
    opts: &WatchOptions,
    process: &mut Processor,
    log: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let mut since = match state.state.orthanc_since {
        Some(s) => s,
        None => {
            let s = if opts.from_start {
                0
            } else {
                orthanc.last_change()?
            };
            state.state.orthanc_since = Some(s);
            state.save()?;
            s
        }
    };
    log(&format!(
        "watching {} for stable studies from change {since} (state {})",
        orthanc.root(),
        state.path().display()
    ));
    let mut failing = false;
    while !stop() {
        let page = match orthanc.changes(since, 100) {
            Ok(p) => {
                if failing {
                    log(&format!("{}: reachable again", orthanc.root()));
                    failing = false;
                }
                p
            }
            Err(e) => {
                if opts.once {
                    return Err(e);
                }
                if !failing {
                    log(&format!("server error, retrying every poll: {e}"));
                    failing = true;
                }
                sleep_unless(stop, opts.poll);
                continue;
            }
        };
        for c in &page.changes {
            if stop() {
                return Ok(());
            }
            if c.change_type == "StableStudy" {
                match orthanc.study_uid(&c.id) {
                    Ok(uid) => handle(state, &uid, change_date_unix(&c.date), process, log)?,
                    // A study deleted since: nothing to do.
                    Err(e) => log(&format!("change {}: study {} gone: {e}", c.seq, c.id)),
                }
            }
            since = c.seq;
            state.state.orthanc_since = Some(since);
        }
        if page.last > since {
            since = page.last;
            state.state.orthanc_since = Some(since);
        }
        if !page.changes.is_empty() {
            state.save()?;
        }
        if page.done {
            if opts.once {
                break;
            }
            sleep_unless(stop, opts.poll);
        }
    }
    Ok(())
}

/// `YYYYMMDD` of today minus `days` (UTC).
fn date_back(days: i64) -> String {
    let (y, m, d) = civil_from_days(unix_now().div_euclid(86400) - days);
    format!("{y:04}{m:02}{d:02}")
}

#[allow(clippy::too_many_arguments)]
fn watch_qido(
    client: &DicomWeb,
    lookback_days: i64,
    stable_seconds: u64,
    state: &mut StateFile,
    opts: &WatchOptions,
    process: &mut Processor,
    log: &mut dyn FnMut(&str),
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    client.ping()?;
    log(&format!(
        "watching {} (QIDO-RS, studies from {} on, stable after {stable_seconds} s; state {})",
        client.base(),
        date_back(lookback_days),
        state.path().display()
    ));
    let mut pending: HashMap<String, (usize, Instant)> = HashMap::new();
    let mut failing = false;
    while !stop() {
        let rows = match client.studies(&format!("StudyDate={}-", date_back(lookback_days))) {
            Ok(r) => {
                failing = false;
                r
            }
            Err(e) => {
                if opts.once {
                    return Err(e);
                }
                if !failing {
                    log(&format!("server error, retrying every poll: {e}"));
                    failing = true;
                }
                sleep_unless(stop, opts.poll);
                continue;
            }
        };
        let mut waiting = false;
        for r in rows {
            if state.seen(&r.study_uid) {
                continue;
            }
            // Studies the server says have no PET are left alone without a record: a PET
            // series may still be on its way.
            if !r.modalities.is_empty() && !r.modalities.iter().any(|m| m == "PT") {
                continue;
            }
            let entry = pending
                .entry(r.study_uid.clone())
                .or_insert((r.instances, Instant::now()));
            if entry.0 != r.instances {
                *entry = (r.instances, Instant::now());
            }
            if entry.1.elapsed().as_secs() >= stable_seconds {
                let stable_at =
                    unix_now() - entry.1.elapsed().as_secs() as i64 + stable_seconds as i64;
                pending.remove(&r.study_uid);
                handle(state, &r.study_uid, Some(stable_at), process, log)?;
            } else {
                waiting = true;
            }
            if stop() {
                return Ok(());
            }
        }
        if opts.once && !waiting {
            break;
        }
        sleep_unless(
            stop,
            opts.poll.min(Duration::from_secs(stable_seconds.max(1))),
        );
    }
    Ok(())
}
