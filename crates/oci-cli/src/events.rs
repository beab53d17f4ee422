//! `vessel-oci events`: runc's event stream as JSON lines on stdout:
//! `{"type":"stats","id":ID,"data":{...}}` (runc's `types.Stats`) every `--interval`, and
//! `{"type":"oom","id":ID}` when the kernel OOM-kills a process of the container. With
//! `--stats`, one stats event and exit. The stream ends when the container stops.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;
use vessel_runtime::cgroups::{self, OomEvent};
use vessel_runtime::container::Container;
use vessel_runtime::state::Status;

/// `events` flags (runc's).
#[derive(Args)]
pub struct EventsArgs {
    /// Print one stats event and exit.
    #[arg(long)]
    stats: bool,
    /// Time between stats events (Go duration: 500ms, 5s, 1m30s).
    #[arg(long, default_value = "5s")]
    interval: String,
    /// Container id.
    id: String,
}

/// Parses a Go duration ("300ms", "1.5s", "1h2m"): numbers with units ns, us, µs, ms,
/// s, m, h.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("--interval {s:?} is not a duration like 5s, 500ms or 1m30s");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[u_end..];
    }
    if total <= 0.0 || !total.is_finite() {
        bail!("--interval {s:?} must be positive");
    }
    Ok(Duration::from_secs_f64(total))
}

fn emit(v: serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Runs `events`.
pub fn run(root: &Path, a: &EventsArgs) -> Result<()> {
    let interval = parse_duration(&a.interval)?;
    let c = Container::load(root, &a.id)?;
    if c.state.status == Status::Stopped {
        bail!("container \"{}\" is not running", a.id);
    }
    let manager = cgroups::manager(&c.state.cgroup_path);
    let stats_event =
        || -> Result<serde_json::Value> { Ok(json!({"type": "stats", "id": a.id, "data": manager.stats()?})) };
    if a.stats {
        return emit(stats_event()?);
    }
    let mut oom = match manager.oom_watcher() {
        Ok(w) => Some(w),
        Err(e) => {
            eprintln!("vessel-oci: no OOM events: {e}");
            None
        }
    };
    let mut next_stats = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_stats {
            if Container::load(root, &a.id).map_or(true, |c| c.state.status == Status::Stopped) {
                return Ok(());
            }
            emit(stats_event()?)?;
            next_stats = now + interval;
        }
        // Wake at least every 200 ms to notice the container stopping.
        let wait = next_stats
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        match oom.as_mut().map(|w| w.wait(wait)).transpose()? {
            Some(OomEvent::Oom(n)) => {
                for _ in 0..n {
                    emit(json!({"type": "oom", "id": a.id}))?;
                }
            }
            Some(OomEvent::Gone) => oom = None,
            Some(OomEvent::Timeout) => {}
            None => std::thread::sleep(wait),
        }
        if Container::load(root, &a.id).map_or(true, |c| c.state.status == Status::Stopped) {
            // A last look for an OOM that ended the container.
            if let Some(Ok(OomEvent::Oom(n))) = oom.as_mut().map(|w| w.wait(Duration::ZERO)) {
                for _ in 0..n {
                    emit(json!({"type": "oom", "id": a.id}))?;
                }
            }
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        for bad in ["", "5", "s", "5x", "0s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
