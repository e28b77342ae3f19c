//! The watcher's memory: which studies it has handled and where it is in the server's
//! change feed, in a small JSON file written atomically after each study, so a restart
//! (or a crash) neither processes a study twice nor skips one.

use crate::dicomweb::write_atomic;
use crate::error::{PacsError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What happened to a study.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Segmented and the results stored back.
    Done,
    /// Not a PET/CT study glandseg segments (left alone).
    Skipped,
    /// Tried and failed (not retried automatically; `pacs run --study` retries by hand).
    Failed,
}

/// One handled study.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// The outcome.
    pub outcome: Outcome,
    /// When (UTC, `YYYY-MM-DDTHH:MM:SSZ`).
    pub at: String,
    /// The log line's message.
    pub message: String,
}

/// The state file's content.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchState {
    /// Orthanc: the last change-feed sequence number fully handled.
    #[serde(default)]
    pub orthanc_since: Option<i64>,
    /// Every study handled, by StudyInstanceUID.
    #[serde(default)]
    pub studies: BTreeMap<String, StudyRecord>,
}

/// A state file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The state as last loaded or saved.
    pub state: WatchState,
}

impl StateFile {
    /// Loads `path`, or an empty state when it does not exist; an unreadable or corrupt
    /// file is an error (never silently replaced: that would redo every study).
    pub fn open(path: &Path) -> Result<Self> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                PacsError::file(
                    path,
                    format!("the watch state file is not valid ({e}); fix or remove it (removing it makes the watcher start from now)"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WatchState::default(),
            Err(e) => return Err(PacsError::file(path, e)),
        };
        Ok(StateFile {
            path: path.to_path_buf(),
            state,
        })
    }

    /// Whether the file existed with a position in Orthanc's feed.
    pub fn is_new(&self) -> bool {
        self.state.orthanc_since.is_none() && self.state.studies.is_empty()
    }

    /// Writes the state atomically.
    pub fn save(&self) -> Result<()> {
        let mut text =
            serde_json::to_vec_pretty(&self.state).map_err(|e| PacsError::file(&self.path, e))?;
        text.push(b'\n');
        write_atomic(&self.path, &text)
    }

    /// Records a study's outcome and saves.
    pub fn record(&mut self, study: &str, outcome: Outcome, message: &str) -> Result<()> {
        self.state.studies.insert(
            study.to_string(),
            StudyRecord {
                outcome,
                at: utc_now(),
                message: message.to_string(),
            },
        );
        self.save()
    }

    /// Whether a study was handled before.
    pub fn seen(&self, study: &str) -> bool {
        self.state.studies.contains_key(study)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now in UTC as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let t = unix_now();
    let (y, m, d) = civil_from_days(t.div_euclid(86400));
    let s = t.rem_euclid(86400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        for days in [-1000, 0, 11016, 20000, 20425] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11017);
        assert_eq!(
            crate::orthanc::change_date_unix("20000301T010203"),
            Some(11017 * 86400 + 3723)
        );
        assert_eq!(crate::orthanc::change_date_unix("garbage"), None);
    }

    #[test]
    fn state_survives_a_restart_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut s = StateFile::open(&p).unwrap();
        assert!(s.is_new());
        s.state.orthanc_since = Some(17);
        s.record("1.2.3", Outcome::Done, "ok").unwrap();
        let again = StateFile::open(&p).unwrap();
        assert!(again.seen("1.2.3") && !again.seen("1.2.4"));
        assert_eq!(again.state.orthanc_since, Some(17));
        std::fs::write(&p, "{ not json").unwrap();
        let e = StateFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("not valid"), "{e}");
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
