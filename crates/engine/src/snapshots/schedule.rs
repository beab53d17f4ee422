//! When snapshots are due and when they expire: snapshot schedules (`@hourly`, `@daily`,
//! `@weekly`, `@monthly`, `@yearly` or a 5-field cron pattern, as crontab(5), evaluated in
//! local time by the `croner` crate), expiry durations (`7d`, `14d`, `12h`, `1s`: humantime's
//! units) and the clock the snapshot commands read.

use std::time::Duration;

use chrono::{DateTime, Local, SecondsFormat, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};

/// The environment variable that sets the snapshot commands' clock (RFC 3339), so that the
/// tests can ask for snapshots that are due or expired without waiting. Never set it
/// otherwise.
pub const TEST_NOW_ENV: &str = "VESSEL_TEST_NOW";

/// The time now for snapshots: `$VESSEL_TEST_NOW` when set (tests), else the system clock.
pub fn now() -> DateTime<Utc> {
    std::env::var(TEST_NOW_ENV)
        .ok()
        .and_then(|s| parse_time(&s))
        .unwrap_or_else(Utc::now)
}

/// An RFC 3339 time, or None when `s` is not one.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

/// `t` as RFC 3339 in UTC, to the second (`2026-12-03T13:45:00Z`).
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses a snapshot schedule: `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`
/// (`@annually`, `@midnight`) or five cron fields (minute hour day-of-month month
/// day-of-week, crontab(5); names such as `mon` and `jan` work).
///
/// # Errors
/// [`Error::BadInput`] naming the pattern and what is wrong with it.
pub fn parse_schedule(s: &str) -> Result<Cron> {
    let s = s.trim();
    let fields = s.split_whitespace().count();
    if !s.starts_with('@') && fields != 5 {
        return Err(Error::BadInput(format!(
            "snapshot schedule \"{s}\": give @hourly, @daily, @weekly, @monthly or 5 cron fields \
             (minute hour day-of-month month day-of-week), not {fields}"
        )));
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| {
            Error::BadInput(format!(
                "snapshot schedule \"{s}\": {e}: give @hourly, @daily, @weekly or 5 cron fields"
            ))
        })
}

/// The first time after `from` at which `schedule` fires (local time, as cron), or None
/// when it never does again.
pub fn next_fire(schedule: &Cron, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .find_next_occurrence(&from.with_timezone(&Local), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a snapshot expiry: a duration such as `7d`, `14d`, `12h`, `30m`, `1s`, `2w`
/// (humantime's units, combinable: `1d 12h`).
///
/// # Errors
/// [`Error::BadInput`] for text that is not a duration, or zero.
pub fn parse_expiry(s: &str) -> Result<Duration> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(Error::BadInput(format!(
            "snapshot expiry \"{s}\": give a duration above zero such as 7d, 12h or 30m"
        ))),
        Err(e) => Err(Error::BadInput(format!(
            "snapshot expiry \"{s}\": {e}: give a duration such as 7d, 12h or 30m"
        ))),
    }
}

/// `created + expiry` as RFC 3339, or None when the expiry does not fit in a time.
pub fn expires_at(created: DateTime<Utc>, expiry: Duration) -> Option<String> {
    let d = chrono::Duration::from_std(expiry).ok()?;
    created.checked_add_signed(d).map(format_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in ["@hourly", "@daily", "@weekly", "*/5 * * * *", "0 3 * * mon"] {
            parse_schedule(ok).unwrap();
        }
        for bad in ["", "hourly", "* * * *", "0 0 * * * *", "61 * * * *"] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
        let from = parse_time("2026-01-01T10:30:30Z").unwrap();
        let next = next_fire(&parse_schedule("* * * * *").unwrap(), from).unwrap();
        assert_eq!(next.signed_duration_since(from).num_seconds(), 30);
    }

    #[test]
    fn expiries() {
        assert_eq!(parse_expiry("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert_eq!(parse_expiry("1s").unwrap(), Duration::from_secs(1));
        assert!(parse_expiry("0s").is_err());
        assert!(parse_expiry("soon").is_err());
    }
}
