//! A DICOMweb client (PS3.18): QIDO-RS to search, WADO-RS to retrieve, STOW-RS to store.
//! Only the standard endpoints are used, so any DICOMweb server works; Orthanc's extras
//! (its change feed) live in [`crate::orthanc`].
//!
//! HTTP Basic authentication when credentials are given (the password never comes from
//! the command line: see [`Credentials::resolve`]); TLS (rustls, Mozilla's root
//! certificates) when the URL is `https://`.

use crate::error::{PacsError, Result};
use crate::multipart;
use base64::Engine;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// User name and password for HTTP Basic authentication.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: *** }}", self.user)
    }
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The credentials a command line names: `user` with the password read from the file
    /// `password_file` (first line, trailing newline dropped) or else from the environment
    /// variable `password_env`. No user: no authentication. A user without a password is
    /// an error that says where the password was looked for.
    pub fn resolve(
        user: Option<&str>,
        password_env: &str,
        password_file: Option<&Path>,
    ) -> Result<Option<Credentials>> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let password = if let Some(f) = password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| PacsError::file(f, format!("cannot read the password file: {e}")))?;
            text.lines().next().unwrap_or("").to_string()
        } else {
            match std::env::var(password_env) {
                Ok(p) => p,
                Err(_) => {
                    return Err(PacsError::Usage(format!(
                        "--user {user} needs a password: put it in the environment variable {password_env} or in a file named by --password-file (never on the command line)"
                    )))
                }
            }
        };
        Ok(Some(Credentials::new(user, password)))
    }

    fn header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// A series in a study, as QIDO-RS lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SeriesRow {
    /// SeriesInstanceUID.
    pub series_uid: String,
    /// Modality (CT, PT, SEG, RTSTRUCT, ...).
    pub modality: String,
    /// SeriesDescription.
    pub description: String,
    /// NumberOfSeriesRelatedInstances (0 when the server leaves it out).
    pub instances: usize,
}

/// A study, as QIDO-RS lists it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StudyRow {
    /// StudyInstanceUID.
    pub study_uid: String,
    /// ModalitiesInStudy.
    pub modalities: Vec<String>,
    /// NumberOfStudyRelatedInstances (0 when left out).
    pub instances: usize,
    /// StudyDate.
    pub date: String,
}

/// The first string value of a DICOM JSON attribute (`"0020000E": {"vr": "UI", "Value":
/// ["1.2.3"]}`); person names give their Alphabetic form.
pub fn attr_str(obj: &Value, tag: &str) -> Option<String> {
    let v = obj.get(tag)?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => o
            .get("Alphabetic")
            .and_then(|a| a.as_str())
            .map(String::from),
        _ => None,
    }
}

/// All string values of a DICOM JSON attribute.
pub fn attr_strs(obj: &Value, tag: &str) -> Vec<String> {
    obj.get(tag)
        .and_then(|a| a.get("Value"))
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attr_usize(obj: &Value, tag: &str) -> usize {
    attr_str(obj, tag)
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|x| x.is_finite() && *x >= 0.0)
        .map(|x| x as usize)
        .unwrap_or(0)
}

/// What a STOW-RS request stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Stored {
    /// SOP Instance UIDs the server reports as stored.
    pub stored: Vec<String>,
}

/// A DICOMweb server.
#[derive(Clone)]
pub struct DicomWeb {
    base: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

impl std::fmt::Debug for DicomWeb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DicomWeb {{ base: {:?} }}", self.base)
    }
}

/// An HTTP(S) agent with the given timeouts (connect: at most 10 s).
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout.min(Duration::from_secs(10)))
        .timeout_read(timeout)
        .timeout_write(timeout)
        .user_agent(concat!("glandseg/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Checks that `url` is an http(s) URL and returns it without a trailing slash.
pub fn check_url(url: &str) -> Result<String> {
    let u = url.trim().trim_end_matches('/');
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| {
            PacsError::Usage(format!(
                "--url {url}: expected an http:// or https:// URL (e.g. http://127.0.0.1:8042/dicom-web)"
            ))
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(PacsError::Usage(format!("--url {url}: no host in the URL")));
    }
    if rest.split('/').next().unwrap_or("").contains('@') {
        return Err(PacsError::Usage(
            "--url: put the user in --user and the password in an environment variable or file, not in the URL".into(),
        ));
    }
    Ok(u.to_string())
}

/// A readable message for a failed request to `url`.
pub(crate) fn http_error(url: &str, e: ureq::Error) -> PacsError {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            let body = body.trim();
            let detail = if body.is_empty() {
                String::new()
            } else {
                format!(" (server said: {})", body.replace('\n', " "))
            };
            let msg = match code {
                401 => format!("the server refused the credentials (HTTP 401 Unauthorized): check --user and the password (environment variable or --password-file){detail}"),
                403 => format!("the user may not do this (HTTP 403 Forbidden){detail}"),
                404 => format!("not found (HTTP 404){detail}"),
                406 => format!("the server cannot send this in a form glandseg accepts (HTTP 406 Not Acceptable){detail}"),
                c => format!("HTTP {c}{detail}"),
            };
            PacsError::server(url, msg)
        }
        ureq::Error::Transport(t) => {
            use ureq::ErrorKind as K;
            let why = t.to_string();
            let msg = match t.kind() {
                K::ConnectionFailed => format!("cannot reach the server (connection failed: is it running, and are the host and port right?): {why}"),
                K::Dns => format!("cannot resolve the host name: {why}"),
                K::Io => format!("the connection broke or timed out: {why}"),
                K::InvalidUrl | K::UnknownScheme => format!("not a valid URL: {why}"),
                _ => why,
            };
            PacsError::server(url, msg)
        }
    }
}

/// A UID as it may appear in a URL path: digits and dots only (PS3.5 9.1), so no request
/// can be steered elsewhere by a crafted UID.
pub fn check_uid(uid: &str) -> Result<&str> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !uid.starts_with('.')
        && !uid.ends_with('.')
        && !uid.contains("..");
    if ok {
        Ok(uid)
    } else {
        Err(PacsError::Usage(format!(
            "{uid:?} is not a DICOM UID (digits and dots, at most 64 characters)"
        )))
    }
}

impl DicomWeb {
    /// A client for the DICOMweb root `url` (e.g. `http://127.0.0.1:8042/dicom-web` for
    /// Orthanc); requests time out after `timeout` without data.
    pub fn new(url: &str, credentials: Option<Credentials>, timeout: Duration) -> Result<Self> {
        Ok(DicomWeb {
            base: check_url(url)?,
            agent: agent(timeout),
            auth: credentials.map(|c| c.header()),
        })
    }

    /// The DICOMweb root URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The Authorization header value, for other requests to the same server.
    pub(crate) fn auth(&self) -> Option<&str> {
        self.auth.as_deref()
    }

    pub(crate) fn agent_ref(&self) -> &ureq::Agent {
        &self.agent
    }

    fn get(&self, url: &str, accept: &str) -> Result<ureq::Response> {
        let mut req = self.agent.get(url).set("Accept", accept);
        if let Some(a) = &self.auth {
            req = req.set("Authorization", a);
        }
        req.call().map_err(|e| http_error(url, e))
    }

    /// A QIDO-RS query (`path` after the root, with its query string): the matches as
    /// DICOM JSON objects. An empty answer (HTTP 204 or an empty body) is no match.
    pub fn qido(&self, path: &str) -> Result<Vec<Value>> {
        let url = format!("{}/{}", self.base, path.trim_start_matches('/'));
        let resp = self.get(&url, "application/dicom+json, application/json")?;
        if resp.status() == 204 {
            return Ok(Vec::new());
        }
        let mut body = String::new();
        resp.into_reader()
            .take(64 << 20)
            .read_to_string(&mut body)
            .map_err(|e| PacsError::server(&url, format!("reading the answer: {e}")))?;
        if body.trim().is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(&body).map_err(|e| {
            PacsError::server(
                &url,
                format!("the answer is not DICOM JSON ({e}); is --url the DICOMweb root (Orthanc: http://HOST:8042/dicom-web)?"),
            )
        })?;
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(PacsError::server(
                &url,
                "the answer is not a JSON array of matches; is --url the DICOMweb root?",
            )),
        }
    }

    /// Checks that the server answers QIDO-RS with these credentials (one study asked).
    pub fn ping(&self) -> Result<()> {
        self.qido("studies?limit=1").map(|_| ())
    }

    /// The series of a study.
    pub fn series_of(&self, study: &str) -> Result<Vec<SeriesRow>> {
        let study = check_uid(study)?;
        let rows = self.qido(&format!(
            "studies/{study}/series?includefield=0008103E&includefield=00201209"
        ))?;
        let mut out: Vec<SeriesRow> = rows
            .iter()
            .filter_map(|r| {
                Some(SeriesRow {
                    series_uid: attr_str(r, "0020000E")?,
                    modality: attr_str(r, "00080060").unwrap_or_default(),
                    description: attr_str(r, "0008103E").unwrap_or_default(),
                    instances: attr_usize(r, "00201209"),
                })
            })
            .collect();
        out.sort_by(|a, b| a.series_uid.cmp(&b.series_uid));
        Ok(out)
    }

    /// Studies matching a QIDO query string (e.g. `StudyDate=20260101-`).
    pub fn studies(&self, query: &str) -> Result<Vec<StudyRow>> {
        let rows = self.qido(&format!(
            "studies?{query}&includefield=00080061&includefield=00201208"
        ))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(StudyRow {
                    study_uid: attr_str(r, "0020000D")?,
                    modalities: attr_strs(r, "00080061"),
                    instances: attr_usize(r, "00201208"),
                    date: attr_str(r, "00080020").unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The full metadata (DICOM JSON, bulk data left out) of one instance of a series: the
    /// first one QIDO-RS lists.
    pub fn first_instance_metadata(&self, study: &str, series: &str) -> Result<Value> {
        let (study, series) = (check_uid(study)?, check_uid(series)?);
        let rows = self.qido(&format!(
            "studies/{study}/series/{series}/instances?limit=1"
        ))?;
        let sop = rows
            .first()
            .and_then(|r| attr_str(r, "00080018"))
            .ok_or_else(|| PacsError::study(study, format!("series {series} lists no instance")))?;
        check_uid(&sop)?;
        let url = format!(
            "{}/studies/{study}/series/{series}/instances/{sop}/metadata",
            self.base
        );
        let resp = self.get(&url, "application/dicom+json, application/json")?;
        let v: Value = serde_json::from_reader(resp.into_reader().take(64 << 20))
            .map_err(|e| PacsError::server(&url, format!("metadata is not DICOM JSON: {e}")))?;
        match v {
            Value::Array(mut a) if !a.is_empty() => Ok(a.swap_remove(0)),
            _ => Err(PacsError::server(&url, "metadata is not a JSON array")),
        }
    }

    /// Retrieves every instance of a series (WADO-RS) into `dir` as `NNNNN.dcm`, each file
    /// written atomically, in the transfer syntax the server stored it in (`transfer-syntax=*`:
    /// glandseg decodes JPEG, JPEG-LS, JPEG 2000 and RLE itself, so a server that cannot
    /// transcode still works). Returns the files written.
    pub fn retrieve_series(&self, study: &str, series: &str, dir: &Path) -> Result<Vec<PathBuf>> {
        let (study, series) = (check_uid(study)?, check_uid(series)?);
        let url = format!("{}/studies/{study}/series/{series}", self.base);
        std::fs::create_dir_all(dir).map_err(|e| PacsError::file(dir, e))?;
        let resp = match self.get(
            &url,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        ) {
            // A server that does not know transfer-syntax=*: ask for its default.
            Err(PacsError::Server { msg, .. })
                if msg.contains("HTTP 406") || msg.contains("HTTP 400") =>
            {
                self.get(&url, "multipart/related; type=\"application/dicom\"")?
            }
            other => other?,
        };
        let ct = resp.header("Content-Type").unwrap_or("").to_string();
        let boundary = multipart::boundary_of(&ct).ok_or_else(|| {
            PacsError::server(
                &url,
                format!(
                    "expected a multipart/related answer with a boundary, got Content-Type {ct:?}"
                ),
            )
        })?;
        let mut files = Vec::new();
        multipart::read_parts(resp.into_reader(), &boundary, |part| {
            let kind = part.content_type.to_ascii_lowercase();
            if !(kind.is_empty() || kind.starts_with("application/dicom")) {
                return Err(format!(
                    "part {} is {:?}, not application/dicom",
                    files.len() + 1,
                    part.content_type
                ));
            }
            if part.body.len() < 132 || &part.body[128..132] != b"DICM" {
                return Err(format!(
                    "part {} is not a DICOM file (no DICM prefix)",
                    files.len() + 1
                ));
            }
            let path = dir.join(format!("{:05}.dcm", files.len()));
            write_atomic(&path, &part.body).map_err(|e| e.to_string())?;
            files.push(path);
            Ok(())
        })
        .map_err(|e| PacsError::server(&url, format!("retrieving the series: {e}")))?;
        if files.is_empty() {
            return Err(PacsError::server(&url, "the series came back empty"));
        }
        Ok(files)
    }

    /// Stores DICOM files in a study (STOW-RS `POST studies/{study}`). Fails, naming the
    /// instances, when the server reports any as failed.
    pub fn store(&self, study: &str, files: &[Vec<u8>]) -> Result<Stored> {
        let study = check_uid(study)?;
        let url = format!("{}/studies/{study}", self.base);
        let (body, ct) = multipart::build_related(files);
        let mut req = self
            .agent
            .post(&url)
            .set("Content-Type", &ct)
            .set("Accept", "application/dicom+json, application/json");
        if let Some(a) = &self.auth {
            req = req.set("Authorization", a);
        }
        let resp = req.send_bytes(&body).map_err(|e| http_error(&url, e))?;
        let text = resp.into_string().unwrap_or_default();
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                PacsError::server(&url, format!("the STOW-RS answer is not DICOM JSON: {e}"))
            })?
        };
        let failed = v
            .get("00081198")
            .and_then(|f| f.get("Value"))
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        if !failed.is_empty() {
            let which: Vec<String> = failed
                .iter()
                .map(|f| {
                    format!(
                        "{} (reason {})",
                        attr_str(f, "00081155").unwrap_or_default(),
                        attr_str(f, "00081197").unwrap_or_default()
                    )
                })
                .collect();
            return Err(PacsError::server(
                &url,
                format!("the server refused to store {}", which.join(", ")),
            ));
        }
        let stored = v
            .get("00081199")
            .and_then(|f| f.get("Value"))
            .and_then(|a| a.as_array())
            .map(|a| a.iter().filter_map(|r| attr_str(r, "00081155")).collect())
            .unwrap_or_default();
        Ok(Stored { stored })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename: a
/// crash leaves the old file or none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| PacsError::file(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(PacsError::file(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_uids() {
        assert_eq!(
            check_url("http://127.0.0.1:8042/dicom-web/").unwrap(),
            "http://127.0.0.1:8042/dicom-web"
        );
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://").is_err());
        assert!(check_url("http://u:p@host/").is_err());
        assert!(check_uid("1.2.840.10008").is_ok());
        for bad in ["", "1..2", "1.2/../x", ".1", "1.", "a.b"] {
            assert!(check_uid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_attributes() {
        let v: Value = serde_json::json!({
            "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00201209": {"vr": "IS", "Value": [42]},
            "00080061": {"vr": "CS", "Value": ["CT", "PT"]},
            "00080060": {"vr": "CS"}
        });
        assert_eq!(attr_str(&v, "0020000E").unwrap(), "1.2.3");
        assert_eq!(attr_str(&v, "00100010").unwrap(), "Doe^Jane");
        assert_eq!(attr_usize(&v, "00201209"), 42);
        assert_eq!(attr_strs(&v, "00080061"), vec!["CT", "PT"]);
        assert_eq!(attr_str(&v, "00080060"), None);
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::new("u", "secret");
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(c.header(), "Basic dTpzZWNyZXQ=");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "fromfile\n").unwrap();
        let c = Credentials::resolve(Some("u"), "GLANDSEG_TEST_NO_SUCH_VAR", Some(&f))
            .unwrap()
            .unwrap();
        assert_eq!(c.password, "fromfile");
        let e = Credentials::resolve(Some("u"), "GLANDSEG_TEST_NO_SUCH_VAR", None).unwrap_err();
        assert!(e.to_string().contains("GLANDSEG_TEST_NO_SUCH_VAR"), "{e}");
        assert!(Credentials::resolve(None, "X", None).unwrap().is_none());
    }

    #[test]
    fn unreachable_server_is_named() {
        let c =
            DicomWeb::new("http://127.0.0.1:1/dicom-web", None, Duration::from_secs(5)).unwrap();
        let e = c.ping().unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.1:1") && e.contains("cannot reach"),
            "{e}"
        );
    }
}
