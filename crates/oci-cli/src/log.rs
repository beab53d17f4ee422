//! runc-style logging: `--log FILE` and `--log-format text|json`. containerd's shim
//! reads the last JSON line's "msg" of the log file to report why a command failed, so
//! errors go there as `{"level":"error","msg":...,"time":...}`, and to stderr.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Log line format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    /// `time="..." level=error msg="..."`, like logrus's text format.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where errors go.
pub struct Logger {
    file: Option<PathBuf>,
    format: Format,
}

impl Logger {
    /// A logger for the global flags.
    pub fn new(file: Option<&Path>, format: Format, _debug: bool) -> Logger {
        Logger {
            file: file.map(Path::to_path_buf),
            format,
        }
    }

    /// Reports an error: to the log file when set, and always to stderr.
    pub fn error(&self, msg: &str) {
        let time = vessel_runtime::state::now_rfc3339();
        if let Some(path) = &self.file {
            let line = match self.format {
                Format::Json => serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string(),
                Format::Text => format!("time={time:?} level=error msg={msg:?}"),
            };
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
        eprintln!("vessel-oci: {msg}");
    }
}
