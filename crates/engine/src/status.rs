//! A container's state in people's words, as docker's `ps` STATUS column says it
//! (`Up 5 seconds`, `Exited (0) 3 minutes ago`, `Created`): what `vessel ps` and the
//! API's `containers/json` show.

use crate::containers::{Engine, Health};
use crate::db::{Record, State};

/// Seconds since the RFC 3339 time `rfc3339` (0 when it is unreadable or ahead).
pub fn since(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_secs())
}

/// A duration in docker's words (`Less than a second`, `5 seconds`, `3 minutes`).
pub fn human(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=86399 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86400),
    }
}

/// Seconds since the Unix epoch of the RFC 3339 time `rfc3339` (0 when unreadable).
pub fn unix_secs(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

impl Engine {
    /// The STATUS text of `r` (docker's): `Created`, `Up 5 seconds`, `Up 5 seconds
    /// (healthy)` (with a healthcheck, [`crate::health::ps_suffix`]), `Up 1 minutes
    /// (Paused)`, `Exited (0) 3 seconds ago`; ` (monitor gone)` appended when its
    /// monitor died while its processes run.
    pub fn status_text(&self, r: &Record) -> String {
        let s = match r.state {
            State::Created => "Created".to_string(),
            State::Running => format!(
                "Up {}{}",
                human(since(r.started_at.as_deref().unwrap_or(""))),
                crate::health::ps_suffix(&self.paths, r)
            ),
            State::Paused => format!("Up {} (Paused)", human(since(r.started_at.as_deref().unwrap_or("")))),
            State::Exited => match &r.finished_at {
                Some(f) => format!("Exited ({}) {} ago", r.exit_code.unwrap_or(-1), human(since(f))),
                None => "Exited".into(),
            },
        };
        if self.health(r) == Health::MonitorDead {
            format!("{s} (monitor gone)")
        } else {
            s
        }
    }
}
