//! Small files of the trust store and the client's configuration: written to a temp
//! file in the same directory, fsynced, renamed into place, mode 0600 (they hold keys
//! and secrets).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::{io, TlsError};

/// Writes `data` to `path` (mode 0600) through temp + fsync + rename; makes the
/// parent directory (mode 0700) when missing.
///
/// Errors: [`TlsError::Io`] naming the step and path.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".tmp-{}-{name}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(data).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("fsync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    Ok(())
}

/// Reads the JSON files (`*.json`) of `dir`; a missing dir is empty; files that do not
/// parse are skipped (a half-written file never exists: writes are renames).
pub fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<(std::path::PathBuf, T)>, TlsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("read", dir))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(v) = serde_json::from_slice(&bytes) {
                out.push((path, v));
            }
        }
    }
    Ok(out)
}
