//! Step timestamps for profiling a checkpoint, restore or migration: with
//! `VESSEL_LOG=debug`, each step writes one line `vessel[PID] HH:MM:SS.uuuuuu STEP` to
//! stderr (UTC wall clock, so that the lines of the source, the target's receiver and
//! the monitors, each a process of its own, merge into one timeline by sorting).
//! Without it, nothing is written. The lines go to the stderr the process had at its
//! first step (a copy of it, close-on-exec), also after the monitor has pointed its
//! own stdio elsewhere.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The environment variable that turns the step lines on (`debug`).
pub const LOG_ENV: &str = "VESSEL_LOG";

/// The copy of stderr the lines go to, when they are on.
fn out() -> Option<&'static Mutex<std::fs::File>> {
    static OUT: OnceLock<Option<Mutex<std::fs::File>>> = OnceLock::new();
    OUT.get_or_init(|| {
        if !std::env::var(LOG_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("debug")) {
            return None;
        }
        let fd = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), 3).ok()?;
        Some(Mutex::new(std::fs::File::from(fd)))
    })
    .as_ref()
}

/// Writes `vessel[PID] HH:MM:SS.uuuuuu STEP` to stderr when `VESSEL_LOG=debug`.
pub fn mark(step: &str) {
    let Some(out) = out() else {
        return;
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = now.as_secs() % 86_400;
    let line = format!(
        "vessel[{}] {:02}:{:02}:{:02}.{:06} {step}\n",
        std::process::id(),
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_micros()
    );
    if let Ok(mut f) = out.lock() {
        let _ = f.write_all(line.as_bytes());
    }
}
