//! Finding and running the `criu` binary (criu(8)): which one (`VESSEL_CRIU`, then
//! the private prefix `scripts/setup` installs, then `criu` on PATH), feature checks,
//! and errors that quote the last error lines of its log.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Where `scripts/setup` installs criu 4.x from Debian 13 (a wrapper script that runs
/// it with its own glibc and libraries).
pub const PRIVATE_CRIU: &str = "/opt/vessel-criu/bin/criu";

/// The criu binary vessel uses: `$VESSEL_CRIU` when set and not empty, else
/// [`PRIVATE_CRIU`] when it exists, else `criu` (looked up on PATH when run).
pub fn criu_path() -> PathBuf {
    if let Some(p) = std::env::var_os("VESSEL_CRIU").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if Path::new(PRIVATE_CRIU).exists() {
        return PathBuf::from(PRIVATE_CRIU);
    }
    PathBuf::from("criu")
}

/// The error for a criu binary that cannot be started.
fn not_runnable(criu: &Path, e: std::io::Error) -> Error {
    Error::Criu {
        action: "start".into(),
        log: None,
        detail: format!(
            "cannot run {}: {e}; install criu 4.x (scripts/setup puts it in {PRIVATE_CRIU}) or name it in VESSEL_CRIU",
            criu.display()
        ),
    }
}

/// Runs `criu check --feature NAME` and fails with CRIU's own words when the kernel
/// (or CRIU) lacks it: `mem_dirty_track` for pre-dump and `--track-mem`,
/// `uffd-noncoop` for lazy pages.
///
/// Errors: [`Error::Criu`] with criu's output and `what` (the flag that needs it).
pub fn require_feature(feature: &str, what: &str) -> Result<()> {
    let criu = criu_path();
    let out = Command::new(&criu)
        .args(["check", "--feature", feature])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_runnable(&criu, e))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let said: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    Err(Error::Criu {
        action: "check".into(),
        log: None,
        detail: format!(
            "{what} needs the CRIU feature {feature:?}, which this kernel or CRIU does not offer (criu check --feature {feature}: {})",
            if said.is_empty() { "failed".to_string() } else { said.join("; ") }
        ),
    })
}

/// One criu invocation: its arguments, the fds it inherits beyond stdio, and the log
/// file it writes (`-o NAME` is relative to the work dir).
pub(crate) struct Run {
    /// `dump`, `pre-dump`, `restore`.
    pub action: &'static str,
    /// Everything after the action.
    pub args: Vec<OsString>,
    /// The log file (work dir + log name).
    pub log: PathBuf,
}

impl Run {
    /// Starts criu with `setup` run in the child between fork and exec (see
    /// [`std::os::unix::process::CommandExt::pre_exec`]), waits for it, and turns a
    /// failure into [`Error::Criu`] with the log's last error lines.
    pub fn run(self, setup: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>>) -> Result<()> {
        let criu = criu_path();
        let mut cmd = Command::new(&criu);
        cmd.arg(self.action).args(&self.args).stdin(Stdio::inherit());
        if let Some(f) = setup {
            // SAFETY: `f` only makes system calls (unshare, mount) on data prepared
            // before the fork; this process is single-threaded.
            unsafe { std::os::unix::process::CommandExt::pre_exec(&mut cmd, f) };
        }
        let status = cmd.status().map_err(|e| not_runnable(&criu, e))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Criu {
            action: self.action.into(),
            detail: format!("{} ({status})", log_errors(&self.log)),
            log: Some(self.log),
        })
    }
}

/// The last error lines of a CRIU log (at most five), or a note that there is none.
pub fn log_errors(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return "criu wrote no log".into();
    };
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .map(str::trim)
        .collect();
    let tail = &errors[errors.len().saturating_sub(5)..];
    if tail.is_empty() {
        return "no error line in the log".into();
    }
    // CRIU sometimes fails a step with a warning or a debug line only, then says
    // "Dumping FAILED": quote the lines just before that too.
    let generic = |l: &&str| l.contains("FAILED.");
    if tail.iter().all(generic) {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        if let Some(at) = lines.iter().rposition(|l| generic(l)) {
            let before = &lines[at.saturating_sub(3)..at];
            return before.iter().chain(tail.iter()).copied().collect::<Vec<_>>().join("; ");
        }
    }
    tail.join("; ")
}
