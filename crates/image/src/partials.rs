//! Partial files: what pulls, imports and prunes that did not finish (killed, crashed) left
//! under `content/tmp` (blobs being written, extracted archives) and `snapshots/tmp` (layers
//! being unpacked, snapshots being removed). They are never used as content; this module
//! finds them, tells their size and removes them, leaving alone those of writers that run
//! now.
//!
//! Every such entry is named by [`crate::store::tmp_name`] (`<pid>-<n>-<nanos>`). An entry
//! belongs to a writer that runs now when its process is alive and started before the
//! entry last changed (so a pid taken by another process since does not keep a dead pull's
//! files forever); our own entries always stay.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::store::Store;

/// The partial files found or removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Partials {
    /// The entries (files or directories) under `content/tmp` and `snapshots/tmp`.
    pub paths: Vec<PathBuf>,
    /// The sizes of the regular files in them, bytes (what removing them frees).
    pub bytes: u64,
}

impl Partials {
    /// How many entries.
    pub fn count(&self) -> usize {
        self.paths.len()
    }
}

/// Start time of process `pid`, seconds since the Unix epoch (`/proc/PID/stat` field 22,
/// in clock ticks since boot, plus `btime` of `/proc/stat`).
fn process_started_at(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: f64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + ticks / hz as f64)
}

/// When the entry at `path` was last changed (its status-change time, which a rename
/// sets too), seconds since the Unix epoch. Only the process that owns an entry changes it.
fn changed_at(path: &Path) -> Option<f64> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        rustix::fs::StatxFlags::CTIME,
    )
    .ok()?;
    let t = st.stx_ctime;
    Some(t.tv_sec as f64 + f64::from(t.tv_nsec) / 1e9)
}

/// Whether the entry `name` at `path` is partial: not ours, and its process is gone or is
/// another process that took its pid after the entry was made.
fn is_partial(name: &str, path: &Path) -> bool {
    let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return true;
    };
    if pid == std::process::id() {
        return false;
    }
    match (process_started_at(pid), changed_at(path)) {
        (None, _) => !Path::new(&format!("/proc/{pid}")).exists(),
        // One second of slack for the clock tick of the start time.
        (Some(started), Some(changed)) => started > changed + 1.0,
        (Some(_), None) => false,
    }
}

/// Sum of the regular files' sizes under `path` (itself when a file), not following symlinks.
fn size_of(path: &Path) -> u64 {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::read_dir(path)
            .map(|rd| rd.flatten().map(|e| size_of(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) if m.is_file() => m.len(),
        _ => 0,
    }
}

impl Store {
    fn tmp_dirs(&self) -> [PathBuf; 2] {
        [self.root().join("content/tmp"), self.root().join("snapshots/tmp")]
    }

    /// The partial files of pulls, imports and prunes that did not finish, with their size;
    /// those of writers running now are left out (see the module docs).
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when a temporary directory cannot be listed.
    pub fn partials(&self) -> Result<Partials> {
        let mut out = Partials::default();
        for dir in self.tmp_dirs() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx("list", &dir),
            };
            for e in rd {
                let e = e.ctx("list", &dir)?;
                let path = e.path();
                if e.file_name().to_str().is_none_or(|n| is_partial(n, &path)) {
                    out.bytes += size_of(&path);
                    out.paths.push(path);
                }
            }
        }
        out.paths.sort();
        Ok(out)
    }

    /// Removes what [`Store::partials`] finds and returns it (the bytes are those freed).
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when an entry cannot be listed or removed.
    pub fn remove_partials(&self) -> Result<Partials> {
        let found = self.partials()?;
        for p in &found.paths {
            let r = match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(p),
                Ok(_) => fs::remove_file(p),
                Err(_) => continue,
            };
            match r {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).ctx("remove partial file", p),
                _ => {}
            }
        }
        Ok(found)
    }
}
