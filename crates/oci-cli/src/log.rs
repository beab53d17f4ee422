//! runc-style logging: `--log FILE` and `--log-format text|json`, in runc's (logrus's)
//! line formats, because clients parse them: containerd's shim reads the last JSON
//! line's "msg" of the log file, podman and others look for `level=error` (or
//! `"level":"error"`) on stderr. As runc 1.1 does, a failure is one line
//! `time="..." level=error msg="..."` (or `{"level":"error","msg":...,"time":...}`
//! under `--log-format json`) on stderr; with `--log FILE` that line goes to the file
//! and stderr gets the bare message.

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

    /// Reports an error the way runc does: the formatted line to the log file and the
    /// bare message to stderr with `--log`; else the formatted line to stderr.
    pub fn error(&self, msg: &str) {
        let line = self.line("error", msg);
        match &self.file {
            Some(path) => {
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                    let _ = writeln!(f, "{line}");
                }
                eprintln!("{msg}");
            }
            None => eprintln!("{line}"),
        }
    }

    /// Reports a warning the way runc does: the formatted line (`level=warning`) to the
    /// log file with `--log`, else to stderr.
    pub fn warning(&self, msg: &str) {
        let line = self.line("warning", msg);
        match &self.file {
            Some(path) => {
                if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                    let _ = writeln!(f, "{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }

    /// One log line at `level` in the chosen format (logrus's text or JSON formatter,
    /// time in RFC 3339 seconds, UTC).
    pub fn line(&self, level: &str, msg: &str) -> String {
        let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        match self.format {
            Format::Json => serde_json::json!({"level": level, "msg": msg, "time": time}).to_string(),
            Format::Text => format!("time=\"{time}\" level={level} msg={}", logfmt_value(msg)),
        }
    }
}

/// A value as logrus's text formatter writes it: bare when it holds only
/// `[A-Za-z0-9-._/@^+]`, else quoted as Go's strconv.Quote does.
fn logfmt_value(v: &str) -> String {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '^' | '+'));
    if bare {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_values_are_quoted_as_logrus_does() {
        assert_eq!(logfmt_value("plain-word_1.2/x"), "plain-word_1.2/x");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(
            logfmt_value("container \"a\" does not exist"),
            r#""container \"a\" does not exist""#
        );
        assert_eq!(logfmt_value("a\nb\\c\u{1b}"), r#""a\nb\\c\x1b""#);
    }
}
