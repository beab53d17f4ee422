//! Snapshot schedules and expiry at work: the per-container settings (`vessel update
//! --snapshot-schedule/--snapshot-expiry`) and `vessel snapshot run-due`.

use super::{
    create, format_time, list, next_fire, now, parse_expiry, parse_schedule, parse_time, remove, CreateOptions,
};
use crate::containers::Engine;
use crate::db::Record;
use crate::error::Result;

/// `vessel update --snapshot-schedule/--snapshot-expiry`: sets (an empty schedule or
/// expiry removes it) the container's snapshot settings. Setting a schedule starts it from
/// now: it is due when it next fires.
///
/// # Errors
/// [`Error::BadInput`] for a schedule or expiry that does not parse; [`Error::Db`].
pub fn set_schedule(engine: &Engine, r: &Record, schedule: Option<&str>, expiry: Option<&str>) -> Result<()> {
    let mut opts = r.options.clone();
    if let Some(s) = schedule {
        if s.trim().is_empty() {
            opts.snapshot_schedule = None;
            opts.snapshot_schedule_from = None;
        } else {
            parse_schedule(s)?;
            opts.snapshot_schedule = Some(s.trim().to_string());
            opts.snapshot_schedule_from = Some(format_time(now()));
        }
    }
    if let Some(e) = expiry {
        if e.trim().is_empty() {
            opts.snapshot_expiry = None;
        } else {
            parse_expiry(e)?;
            opts.snapshot_expiry = Some(e.trim().to_string());
        }
    }
    engine
        .db
        .set_config(&r.id, &r.image_id, &opts, &r.command, r.stop_signal)
}

/// When container `r`'s schedule is next due (it is due now when that is not after now),
/// or None when it has no schedule.
///
/// # Errors
/// [`Error::BadInput`] when the stored schedule does not parse.
pub fn next_due(r: &Record) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(s) = &r.options.snapshot_schedule else {
        return Ok(None);
    };
    let cron = parse_schedule(s)?;
    let from = r
        .options
        .snapshot_schedule_from
        .as_deref()
        .and_then(parse_time)
        .or_else(|| parse_time(&r.created_at))
        .unwrap_or_else(now);
    Ok(next_fire(&cron, from))
}

/// `vessel snapshot run-due`: for every container, takes the snapshot its schedule asks
/// for when due (named `auto-YYYYMMDD-HHMMSS`, expiring after its `--snapshot-expiry`),
/// then removes every snapshot whose expiry has passed. With `dry_run` only says what it
/// would do. Returns one line per action and whether every action succeeded (a failure
/// on one container is reported and the others still get theirs).
///
/// # Errors
/// [`Error::Db`] and [`Error::Io`] listing containers and snapshots.
pub fn run_due(engine: &Engine, dry_run: bool) -> Result<(Vec<String>, bool)> {
    let t = now();
    let mut lines = Vec::new();
    let mut ok = true;
    let verb = |did: &str, would: &str| if dry_run { would.to_string() } else { did.to_string() };
    for r in engine.list()? {
        let due = match next_due(&r) {
            Ok(d) => d.is_some_and(|d| d <= t),
            Err(e) => {
                lines.push(format!("{}: {e}", r.name));
                ok = false;
                false
            }
        };
        if due {
            let taken = list(engine, &r)?;
            let base = format!("auto-{}", t.format("%Y%m%d-%H%M%S"));
            let mut name = base.clone();
            let mut n = 1;
            while taken.iter().any(|s| s.name == name) {
                name = format!("{base}-{n}");
                n += 1;
            }
            if dry_run {
                lines.push(format!("{}: would take snapshot {name}", r.name));
            } else {
                let opts = CreateOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                };
                match create(engine, &r, &opts) {
                    Ok(_) => {
                        lines.push(format!("{}: took snapshot {name}", r.name));
                        let mut o = r.options.clone();
                        o.snapshot_schedule_from = Some(format_time(t));
                        engine
                            .db
                            .set_config(&r.id, &r.image_id, &o, &r.command, r.stop_signal)?;
                    }
                    Err(e) => {
                        lines.push(format!("{}: snapshot {name}: {e}", r.name));
                        ok = false;
                    }
                }
            }
        }
        for s in list(engine, &r)? {
            let expired = s.expires.as_deref().and_then(parse_time).is_some_and(|e| e <= t);
            if !expired {
                continue;
            }
            let line = format!(
                "{}: {} snapshot {} (expired {})",
                r.name,
                verb("removed", "would remove"),
                s.name,
                s.expires.as_deref().unwrap_or("")
            );
            if dry_run {
                lines.push(line);
                continue;
            }
            match remove(engine, &r, &s.name) {
                Ok(()) => lines.push(line),
                Err(e) => {
                    lines.push(format!("{}: snapshot {}: {e}", r.name, s.name));
                    ok = false;
                }
            }
        }
    }
    Ok((lines, ok))
}
