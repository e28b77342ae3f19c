//! Atomic output: write to a temporary file in the destination's folder, flush it to disk,
//! then rename it over the destination. A reader (or a crash) sees either the old file or
//! the complete new one, never a partial one — this is what keeps a killed training run or
//! prediction from corrupting a good checkpoint or label map.

//!
//! The temporary files being written are listed ([`remove_temporaries`]), so that a
//! program stopped by a signal can delete them before it exits; their names start with
//! `.glandseg-tmp-` (hidden, and never a name glandseg reads as an output).

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Prefix of every temporary file name.
pub const TEMP_PREFIX: &str = ".glandseg-tmp-";

/// Temporary files being written now.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Deletes every temporary file being written now and returns how many there were. For a
/// signal handler's thread just before the process exits: the lock is held until the
/// guard returned with the count is dropped, so no new temporary file is started (nor
/// renamed into place) meanwhile — keep the guard alive until `exit`.
pub fn remove_temporaries() -> (usize, impl Drop) {
    let guard = live();
    let mut n = 0;
    for p in guard.iter() {
        if std::fs::remove_file(p).is_ok() {
            n += 1;
        }
    }
    (n, guard)
}

/// Write `path` atomically with the bytes produced by `fill`.
pub fn write_with<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut dyn Write) -> std::io::Result<()>,
{
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    // tempfile creates 0600 files (right for secrets, wrong for outputs): a label map or
    // review PNG must be readable by colleagues, viewers and web servers exactly like a
    // file made by File::create, so ask for 0666 and let open(2) apply the umask.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = {
        let mut l = live();
        let tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
        l.push(tmp.path().to_path_buf());
        tmp
    };
    let tmp_path = tmp.path().to_path_buf();
    let result = (|| {
        {
            let mut buf = std::io::BufWriter::new(tmp.as_file_mut());
            fill(&mut buf).map_err(|e| Error::io(path, e))?;
            buf.flush().map_err(|e| Error::io(path, e))?;
        }
        tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
        let mut l = live();
        let r = tmp.persist(path).map_err(|e| Error::io(path, e.error));
        l.retain(|p| *p != tmp_path);
        r.map(|_| ())
    })();
    if result.is_err() {
        // The temporary file was deleted when dropped.
        live().retain(|p| *p != tmp_path);
    }
    result
}

/// Write `bytes` to `path` atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, |w| w.write_all(bytes))
}

/// Write a value as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    write_bytes(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.txt");
        write_bytes(&p, b"good").unwrap();
        let r = write_with(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("simulated crash"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"good");
        // No temporary file is left behind.
        let n = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(n, 1);
    }

    #[cfg(unix)]
    #[test]
    fn output_permissions_match_a_plain_file_create() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.bin");
        std::fs::File::create(&plain).unwrap();
        let ours = dir.path().join("ours.bin");
        write_bytes(&ours, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
    }

    #[test]
    fn creates_parent_folders() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b/c.json");
        write_json(&p, &serde_json::json!({"x": 1})).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["x"], 1);
    }
}
