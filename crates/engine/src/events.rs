//! Container events (docker's `events`: create, start, die, destroy, pause, unpause,
//! rename) kept in the records database itself: SQLite triggers on the `containers`
//! table append one row to `events` for each change of a record, in the same
//! transaction as the change. So every writer (the `vessel` command, `vessel serve`,
//! a container's monitor that records its exit) leaves the same trace, and an event
//! is never recorded for a change that did not happen. The table keeps the last
//! [`KEPT`] events (docker's daemon keeps 256 in memory).

use rusqlite::{params, Row};

use crate::db::Db;
use crate::error::Result;

/// How many events the table keeps: older ones are deleted as new ones come.
pub const KEPT: i64 = 10_000;

/// Now in ns since the epoch, as SQLite reckons it (millisecond precision).
const NOW_NS: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000000";

/// The events table and the triggers that fill it. Run with the records' schema.
pub(crate) fn schema() -> String {
    let ins = |action: &str, row: &str, extra: &str| {
        format!(
            "INSERT INTO events (time_ns, action, id, name, image, exit_code, old_name) \
             VALUES ({NOW_NS}, '{action}', {row}.id, {row}.name, {row}.image, {extra});"
        )
    };
    format!(
        "
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    action TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    image TEXT NOT NULL,
    exit_code INTEGER,
    old_name TEXT
);
CREATE TRIGGER IF NOT EXISTS event_create AFTER INSERT ON containers BEGIN
    {create}
END;
CREATE TRIGGER IF NOT EXISTS event_destroy AFTER DELETE ON containers BEGIN
    {destroy}
END;
CREATE TRIGGER IF NOT EXISTS event_start AFTER UPDATE OF state ON containers
WHEN new.state = 'running' AND old.state NOT IN ('running', 'paused') BEGIN
    {start}
END;
CREATE TRIGGER IF NOT EXISTS event_pause AFTER UPDATE OF state ON containers
WHEN new.state = 'paused' AND old.state = 'running' BEGIN
    {pause}
END;
CREATE TRIGGER IF NOT EXISTS event_unpause AFTER UPDATE OF state ON containers
WHEN new.state = 'running' AND old.state = 'paused' BEGIN
    {unpause}
END;
CREATE TRIGGER IF NOT EXISTS event_die AFTER UPDATE OF state ON containers
WHEN new.state = 'exited' AND old.state != 'exited' BEGIN
    {die}
END;
CREATE TRIGGER IF NOT EXISTS event_rename AFTER UPDATE OF name ON containers
WHEN new.name != old.name BEGIN
    {rename}
END;
CREATE TRIGGER IF NOT EXISTS events_kept AFTER INSERT ON events BEGIN
    DELETE FROM events WHERE seq <= new.seq - {KEPT};
END;",
        create = ins("create", "new", "NULL, NULL"),
        destroy = ins("destroy", "old", "NULL, NULL"),
        start = ins("start", "new", "NULL, NULL"),
        pause = ins("pause", "new", "NULL, NULL"),
        unpause = ins("unpause", "new", "NULL, NULL"),
        die = ins("die", "new", "new.exit_code, NULL"),
        rename = ins("rename", "new", "NULL, old.name"),
    )
}

/// One recorded event of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its place in the log: grows by one (at least) per event.
    pub seq: i64,
    /// When, ns since the epoch (millisecond precision).
    pub time_ns: i64,
    /// docker's action: create, start, die, destroy, pause, unpause, rename.
    pub action: String,
    /// The container's id.
    pub id: String,
    /// Its name at the time.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// For `die`: the exit code (-1 when unknown).
    pub exit_code: Option<i32>,
    /// For `rename`: the name before.
    pub old_name: Option<String>,
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: row.get(0)?,
        time_ns: row.get(1)?,
        action: row.get(2)?,
        id: row.get(3)?,
        name: row.get(4)?,
        image: row.get(5)?,
        exit_code: row.get(6)?,
        old_name: row.get(7)?,
    })
}

impl Db {
    /// The events after `after_seq` (0: from the oldest kept) whose time is at least
    /// `since_ns`, oldest first, at most `limit` of them.
    ///
    /// Errors: [`crate::Error::Db`].
    pub fn events(&self, after_seq: i64, since_ns: i64, limit: usize) -> Result<Vec<Event>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT seq, time_ns, action, id, name, image, exit_code, old_name FROM events \
                 WHERE seq > ?1 AND time_ns >= ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after_seq, since_ns, limit as i64], from_row)
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// The seq of the newest event (0 when there is none).
    ///
    /// Errors: [`crate::Error::Db`].
    pub fn last_event(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Record, State};

    fn rec(id: &str, name: &str) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            image: "img".into(),
            image_id: "sha256:x".into(),
            options: Default::default(),
            command: vec![],
            stop_signal: 15,
            state: State::Created,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            exit_code: None,
            created_at: "t0".into(),
            started_at: None,
            finished_at: None,
            oom_killed: false,
        }
    }

    #[test]
    fn each_change_of_a_record_is_one_event() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.insert(&rec("abc", "one")).unwrap();
        db.set_running("abc", "t1").unwrap();
        db.set_running("abc", "t1").unwrap();
        db.set_paused("abc", true).unwrap();
        db.set_paused("abc", false).unwrap();
        db.rename("abc", "two").unwrap();
        db.set_exited("abc", Some(3), "t2").unwrap();
        db.set_exited("abc", Some(3), "t2").unwrap();
        db.delete("abc").unwrap();
        let ev = db.events(0, 0, 100).unwrap();
        let actions: Vec<&str> = ev.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["create", "start", "pause", "unpause", "rename", "die", "destroy"]
        );
        assert_eq!(ev[4].old_name.as_deref(), Some("one"));
        assert_eq!(ev[5].exit_code, Some(3));
        assert_eq!(ev[6].name, "two");
        assert!(ev
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].time_ns <= w[1].time_ns));
        assert_eq!(db.last_event().unwrap(), ev[6].seq);
        assert_eq!(db.events(ev[5].seq, 0, 100).unwrap().len(), 1);
        // A second open (another process) finds the triggers in place, not doubled.
        let db2 = Db::open(dir.path()).unwrap();
        db2.insert(&rec("def", "three")).unwrap();
        assert_eq!(db2.events(ev[6].seq, 0, 100).unwrap().len(), 1);
    }
}
