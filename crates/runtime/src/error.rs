//! Errors of the runtime library: what failed, on which container id or path, and a
//! hint of the fix. Messages for missing and wrong-state containers use runc's words
//! ("does not exist", "not running", "not stopped"), which containerd and podman match.

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Result of every fallible runtime operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error of the runtime library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No state directory for this id under the runtime root.
    #[error("container \"{0}\" does not exist")]
    NotExist(String),
    /// `create` with an id whose state directory already exists.
    #[error("container with id \"{0}\" already exists: pick another id or delete it first")]
    AlreadyExists(String),
    /// An id with characters that cannot name a directory safely.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-' and '.', not only dots")]
    InvalidId(String),
    /// An operation that the container's current status does not allow.
    #[error("{0}")]
    WrongState(String),
    /// config.json (or a process.json) that cannot be read or parsed.
    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    /// A config value that is well-formed JSON but not acceptable.
    #[error("invalid config: {0}")]
    Invalid(String),
    /// A system call or file operation that failed, with what was being done.
    #[error("{context}: {source}")]
    Sys { context: String, source: io::Error },
    /// An error reported by the container's init (or exec) process during set-up.
    #[error("container init: {0}")]
    Init(String),
    /// CRIU failed (checkpoint, restore or a feature check): what was done, where its
    /// log is, and the log's last error lines.
    #[error("criu {action} failed{}: {detail}", log.as_ref().map(|l| format!(" (log: {})", l.display())).unwrap_or_default())]
    Criu {
        /// `dump`, `pre-dump`, `restore`, `check`.
        action: String,
        /// The log file CRIU wrote, if any.
        log: Option<PathBuf>,
        /// The last error lines of the log, or CRIU's own output, and a hint.
        detail: String,
    },
}

impl Error {
    /// Wraps an I/O error with what was being attempted (a path, a syscall).
    pub fn sys(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Sys {
            context: context.into(),
            source: source.into(),
        }
    }

    /// The raw errno of a system error, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Adds context to io/rustix/nix results: `fs::read(p).ctx(|| format!("read {}", p.display()))?`.
pub trait Context<T> {
    /// Turns the error into [`Error::Sys`] with the context the closure gives.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<io::Error>> Context<T> for std::result::Result<T, E> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::sys(f(), e))
    }
}

static WARNING_SINK: OnceLock<fn(&str)> = OnceLock::new();

/// Routes the runtime's warnings (a failing poststart or poststop hook, a capability
/// this host does not know...) to `sink`, so that a front end prints them in its own
/// format (vessel-oci: runc's `level=warning` log lines). The first call wins; without
/// one, warnings go to stderr as `vessel-oci: warning: MSG`.
pub fn set_warning_sink(sink: fn(&str)) {
    let _ = WARNING_SINK.set(sink);
}

/// Reports a warning: something the operation went on without.
pub fn warn(msg: &str) {
    match WARNING_SINK.get() {
        Some(sink) => sink(msg),
        None => eprintln!("vessel-oci: warning: {msg}"),
    }
}
