//! Orthanc's own REST API, for what DICOMweb has no standard for: the change feed
//! (`GET /changes?since=N&limit=M`), whose `StableStudy` events say that a study has
//! received no new instance for Orthanc's `StableAge` seconds.

use crate::dicomweb::{check_url, http_error, DicomWeb};
use crate::error::{PacsError, Result};
use serde_json::Value;
use std::io::Read;

/// One entry of Orthanc's change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Sequence number (increasing).
    pub seq: i64,
    /// `StableStudy`, `NewInstance`, ...
    pub change_type: String,
    /// Orthanc's identifier of the resource.
    pub id: String,
    /// When it happened, `YYYYMMDDTHHMMSS` (Orthanc's local time).
    pub date: String,
}

/// A page of the change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct Changes {
    /// The changes after `since`, oldest first.
    pub changes: Vec<Change>,
    /// Whether this page reached the newest change.
    pub done: bool,
    /// The sequence number to ask from next.
    pub last: i64,
}

/// Orthanc's REST root (e.g. `http://127.0.0.1:8042`), sharing the DICOMweb client's
/// credentials and timeouts.
#[derive(Clone, Debug)]
pub struct Orthanc {
    root: String,
    web: DicomWeb,
}

impl Orthanc {
    /// Orthanc at `root`; `None`: the DICOMweb root with its last path segment
    /// (`/dicom-web`) removed.
    pub fn new(web: &DicomWeb, root: Option<&str>) -> Result<Self> {
        let root = match root {
            Some(r) => check_url(r)?,
            None => {
                let b = web.base();
                match b.rsplit_once('/') {
                    Some((head, _)) if head.contains("://") && head.len() > "https://".len() => {
                        head.to_string()
                    }
                    _ => {
                        return Err(PacsError::Usage(format!(
                            "cannot derive Orthanc's REST root from --url {b}; give --orthanc-url"
                        )))
                    }
                }
            }
        };
        Ok(Orthanc {
            root,
            web: web.clone(),
        })
    }

    /// The REST root.
    pub fn root(&self) -> &str {
        &self.root
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("{}/{}", self.root, path);
        let mut req = self
            .web
            .agent_ref()
            .get(&url)
            .set("Accept", "application/json");
        if let Some(a) = self.web.auth() {
            req = req.set("Authorization", a);
        }
        let resp = req.call().map_err(|e| http_error(&url, e))?;
        let mut text = String::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_string(&mut text)
            .map_err(|e| PacsError::server(&url, format!("reading the answer: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            PacsError::server(
                &url,
                format!("the answer is not JSON ({e}); is this Orthanc's REST root?"),
            )
        })
    }

    /// Changes after `since` (at most `limit`).
    pub fn changes(&self, since: i64, limit: usize) -> Result<Changes> {
        let path = format!("changes?since={since}&limit={limit}");
        let v = self.get_json(&path)?;
        let bad = || {
            PacsError::server(
                format!("{}/{path}", self.root),
                "not Orthanc's change feed (no \"Changes\"/\"Last\")",
            )
        };
        let list = v
            .get("Changes")
            .and_then(|c| c.as_array())
            .ok_or_else(bad)?;
        let last = v.get("Last").and_then(|l| l.as_i64()).ok_or_else(bad)?;
        let done = v.get("Done").and_then(|d| d.as_bool()).unwrap_or(true);
        let changes = list
            .iter()
            .filter_map(|c| {
                Some(Change {
                    seq: c.get("Seq")?.as_i64()?,
                    change_type: c.get("ChangeType")?.as_str()?.to_string(),
                    id: c.get("ID")?.as_str()?.to_string(),
                    date: c
                        .get("Date")
                        .and_then(|d| d.as_str())
                        .unwrap_or("")
                        .to_string(),
                })
            })
            .collect();
        Ok(Changes {
            changes,
            done,
            last,
        })
    }

    /// The newest change's sequence number (where a watcher without state starts).
    pub fn last_change(&self) -> Result<i64> {
        let v = self.get_json("changes?last")?;
        Ok(v.get("Last").and_then(|l| l.as_i64()).unwrap_or(0))
    }

    /// StudyInstanceUID of an Orthanc study identifier.
    pub fn study_uid(&self, id: &str) -> Result<String> {
        if !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') || id.is_empty() {
            return Err(PacsError::server(
                &self.root,
                format!("{id:?} is not an Orthanc identifier"),
            ));
        }
        let v = self.get_json(&format!("studies/{id}"))?;
        v.get("MainDicomTags")
            .and_then(|t| t.get("StudyInstanceUID"))
            .and_then(|u| u.as_str())
            .map(String::from)
            .ok_or_else(|| {
                PacsError::server(
                    format!("{}/studies/{id}", self.root),
                    "no MainDicomTags.StudyInstanceUID",
                )
            })
    }
}

/// Orthanc's change date `YYYYMMDDTHHMMSS` as seconds since the Unix epoch, read as UTC.
pub fn change_date_unix(date: &str) -> Option<i64> {
    let d = date.as_bytes();
    if d.len() != 15 || d[8] != b'T' {
        return None;
    }
    let num = |a: usize, b: usize| date.get(a..b)?.parse::<i64>().ok();
    let (y, m, day) = (num(0, 4)?, num(4, 6)?, num(6, 8)?);
    let (hh, mm, ss) = (num(9, 11)?, num(11, 13)?, num(13, 15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    Some(crate::state::days_from_civil(y, m, day) * 86400 + hh * 3600 + mm * 60 + ss)
}
