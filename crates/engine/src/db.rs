//! The container records: `ROOT/vessel.db`, SQLite in WAL mode with synchronous=FULL,
//! so a record written before a crash is there after it. One row per container: its
//! names, image, options, state and the times and exit code of its last run.
//!
//! The records say what vessel last knew; [`crate::containers::reconcile`] compares
//! them with the processes that really run before any command acts on them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::options::RunOptions;

/// The life stage of a container, as `vessel ps` shows it (docker's words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Made (`vessel create`): its init waits for `start`, its monitor runs.
    Created,
    /// Its process runs.
    Running,
    /// Frozen by `vessel pause`.
    Paused,
    /// Its process ended (or it was created and never started, then stopped).
    Exited,
}

impl State {
    /// The lowercase name stored in the database and printed by `ps`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Paused => "paused",
            State::Exited => "exited",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "created" => State::Created,
            "running" => State::Running,
            "paused" => State::Paused,
            _ => State::Exited,
        }
    }

    /// Whether a monitor and a runtime container should exist for this state.
    pub fn is_live(self) -> bool {
        !matches!(self, State::Exited)
    }
}

/// One container's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Unique name (`--name`, or generated).
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's config digest, or `host`.
    pub image_id: String,
    /// The flags the container was made with.
    pub options: RunOptions,
    /// The process's args as config.json has them.
    pub command: Vec<String>,
    /// Signal for `stop` (the image's StopSignal, or SIGTERM).
    pub stop_signal: i32,
    /// The state last recorded.
    pub state: State,
    /// Host pid of the container's init while it runs.
    pub pid: Option<i32>,
    /// Pid of the monitor process while one runs.
    pub monitor_pid: Option<i32>,
    /// The monitor's start time (clock ticks after boot), to tell it from a reused pid.
    pub monitor_start: Option<u64>,
    /// Exit code of the last run (128+N for signal N; -1 when unknown: its monitor died).
    pub exit_code: Option<i32>,
    /// RFC 3339 times (UTC, nanoseconds).
    pub created_at: String,
    /// When the last run started.
    pub started_at: Option<String>,
    /// When the last run ended.
    pub finished_at: Option<String>,
    /// Whether the kernel's OOM killer ended a process of the last run (docker's
    /// `State.OOMKilled`).
    #[serde(default)]
    pub oom_killed: bool,
}

/// An open records database.
pub struct Db {
    pub(crate) conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    options TEXT NOT NULL,
    command TEXT NOT NULL,
    stop_signal INTEGER NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER,
    monitor_pid INTEGER,
    monitor_start INTEGER,
    exit_code INTEGER,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    oom_killed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idmaps (
    container_id TEXT PRIMARY KEY,
    uid_start INTEGER NOT NULL UNIQUE,
    gid_start INTEGER NOT NULL UNIQUE,
    size INTEGER NOT NULL
);";

/// Columns added after the first schema, each with what adds it to an older database.
const ADDED_COLUMNS: &[(&str, &str)] = &[(
    "oom_killed",
    "ALTER TABLE containers ADD COLUMN oom_killed INTEGER NOT NULL DEFAULT 0",
)];

const COLUMNS: &str = "id, name, image, image_id, options, command, stop_signal, state, pid, monitor_pid, \
                       monitor_start, exit_code, created_at, started_at, finished_at, oom_killed";

impl Db {
    /// Opens (creating when missing) `root/vessel.db` in WAL mode.
    ///
    /// Errors: [`Error::Db`] when the file cannot be opened or is not a vessel database.
    pub fn open(root: &Path) -> Result<Db> {
        let path = root.join("vessel.db");
        std::fs::create_dir_all(root).map_err(|e| Error::io("create", root, e))?;
        let err = |source| Error::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        conn.execute_batch(&crate::events::schema()).map_err(err)?;
        for (column, add) in ADDED_COLUMNS {
            let has: bool = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('containers') WHERE name = ?1",
                    [column],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(err)?
                > 0;
            if !has {
                conn.execute_batch(add).map_err(err)?;
            }
        }
        Ok(Db { conn, path })
    }

    /// The connection, for the tables other modules keep in the same database
    /// ([`crate::volumes`]).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> Error {
        Error::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a new record.
    ///
    /// Errors: [`Error::NameInUse`] when another container has the name.
    /// With a host id range in its options (`options.id_mappings.range`), the range is
    /// recorded in the `idmaps` table in the same transaction ([`crate::idmap`]): a range
    /// is never recorded without its container, nor a container without its range.
    ///
    /// Errors: [`Error::NameInUse`] when another container has the name,
    /// [`Error::RangeTaken`] when another container holds the range.
    pub fn insert(&self, r: &Record) -> Result<()> {
        self.exec("BEGIN IMMEDIATE", [])?;
        let res = self.insert_rows(r);
        let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.exec(end, []);
        res.and(ended)
    }

    fn insert_rows(&self, r: &Record) -> Result<()> {
        let options = serde_json::to_string(&r.options).unwrap_or_default();
        let command = serde_json::to_string(&r.command).unwrap_or_default();
        let res = self.conn.execute(
            &format!(
                "INSERT INTO containers ({COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16)"
            ),
            params![
                r.id,
                r.name,
                r.image,
                r.image_id,
                options,
                command,
                r.stop_signal,
                r.state.as_str(),
                r.pid,
                r.monitor_pid,
                r.monitor_start.map(|v| v as i64),
                r.exit_code,
                r.created_at,
                r.started_at,
                r.finished_at,
                r.oom_killed
            ],
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                return Err(Error::NameInUse(r.name.clone()))
            }
            Err(e) => return Err(self.err(e)),
        }
        let Some(range) = r.options.id_mappings.as_ref().and_then(|m| m.range) else {
            return Ok(());
        };
        match self.conn.execute(
            "INSERT INTO idmaps (container_id, uid_start, gid_start, size) VALUES (?1, ?2, ?3, ?4)",
            params![r.id, range.uid_start, range.gid_start, range.size],
        ) {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(Error::RangeTaken(range.uid_start))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
        let options: String = row.get(4)?;
        let command: String = row.get(5)?;
        let state: String = row.get(7)?;
        Ok(Record {
            id: row.get(0)?,
            name: row.get(1)?,
            image: row.get(2)?,
            image_id: row.get(3)?,
            options: serde_json::from_str(&options).unwrap_or_default(),
            command: serde_json::from_str(&command).unwrap_or_default(),
            stop_signal: row.get(6)?,
            state: State::parse(&state),
            pid: row.get(8)?,
            monitor_pid: row.get(9)?,
            monitor_start: row.get::<_, Option<i64>>(10)?.map(|v| v as u64),
            exit_code: row.get(11)?,
            created_at: row.get(12)?,
            started_at: row.get(13)?,
            finished_at: row.get(14)?,
            oom_killed: row.get(15)?,
        })
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<Record>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM containers ORDER BY created_at"))
            .map_err(|e| self.err(e))?;
        let rows = st.query_map([], Db::from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// The record with this exact id.
    pub fn get(&self, id: &str) -> Result<Option<Record>> {
        self.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE id = ?1"),
                [id],
                Db::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The container a user means: an exact name, a full id, or a unique id prefix
    /// (docker's rules).
    ///
    /// Errors: [`Error::NoSuchContainer`], [`Error::Ambiguous`].
    pub fn find(&self, what: &str) -> Result<Record> {
        if what.is_empty() {
            return Err(Error::NoSuchContainer(what.into()));
        }
        if let Some(r) = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM containers WHERE name = ?1 OR id = ?1"),
                [what],
                Db::from_row,
            )
            .optional()
            .map_err(|e| self.err(e))?
        {
            return Ok(r);
        }
        if !what.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NoSuchContainer(what.into()));
        }
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers WHERE substr(id, 1, ?2) = ?1"
            ))
            .map_err(|e| self.err(e))?;
        let mut found = st
            .query_map(params![what, what.len() as i64], Db::from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        match found.len() {
            0 => Err(Error::NoSuchContainer(what.into())),
            1 => Ok(found.remove(0)),
            _ => Err(Error::Ambiguous(what.into())),
        }
    }

    /// Records what `create` derived: the image's id, the completed options (ports `-P`
    /// chose), the process args, the stop signal.
    pub fn set_config(
        &self,
        id: &str,
        image_id: &str,
        options: &RunOptions,
        command: &[String],
        stop_signal: i32,
    ) -> Result<()> {
        let command = serde_json::to_string(command).unwrap_or_default();
        let options = serde_json::to_string(options).unwrap_or_default();
        self.exec(
            "UPDATE containers SET image_id = ?2, options = ?3, command = ?4, stop_signal = ?5 WHERE id = ?1",
            params![id, image_id, options, command, stop_signal],
        )
    }

    /// Records the container as created: its init `pid` waits for `start`, held by the
    /// monitor `monitor_pid` (started at `monitor_start`, clock ticks after boot). One
    /// transaction, so one fsync on the create path.
    pub fn set_created(&self, id: &str, pid: i32, monitor_pid: i32, monitor_start: Option<u64>) -> Result<()> {
        self.exec(
            "UPDATE containers SET state = 'created', pid = ?2, exit_code = NULL, monitor_pid = ?3, \
             monitor_start = ?4 WHERE id = ?1",
            params![id, pid, monitor_pid, monitor_start.map(|v| v as i64)],
        )
    }

    /// Records the container as running since `at`.
    pub fn set_running(&self, id: &str, at: &str) -> Result<()> {
        self.exec(
            "UPDATE containers SET state = 'running', started_at = ?2, finished_at = NULL, exit_code = NULL, \
             oom_killed = 0 WHERE id = ?1",
            params![id, at],
        )
    }

    /// Records pause or resume.
    pub fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        self.exec(
            "UPDATE containers SET state = ?2 WHERE id = ?1",
            params![id, if paused { "paused" } else { "running" }],
        )
    }

    /// Records the end of a run: exit code (None when unknown) and time; no monitor or pid.
    pub fn set_exited(&self, id: &str, exit_code: Option<i32>, at: &str) -> Result<()> {
        self.exec(
            "UPDATE containers SET state = 'exited', exit_code = ?2, finished_at = ?3, pid = NULL, \
             monitor_pid = NULL, monitor_start = NULL WHERE id = ?1",
            params![id, exit_code.unwrap_or(-1), at],
        )
    }

    /// Records that the OOM killer ended a process of the current run (cleared by the
    /// next [`Db::set_running`]).
    pub fn set_oom_killed(&self, id: &str) -> Result<()> {
        self.exec("UPDATE containers SET oom_killed = 1 WHERE id = ?1", params![id])
    }

    /// Renames a container.
    ///
    /// Errors: [`Error::NameInUse`].
    pub fn rename(&self, id: &str, name: &str) -> Result<()> {
        match self
            .conn
            .execute("UPDATE containers SET name = ?2 WHERE id = ?1", params![id, name])
        {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                Err(Error::NameInUse(name.into()))
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Deletes a record (no error when it is already gone).
    /// Its host id range (`idmaps`) goes in the same transaction.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.exec("BEGIN IMMEDIATE", [])?;
        let res = self
            .exec("DELETE FROM idmaps WHERE container_id = ?1", params![id])
            .and_then(|()| self.exec("DELETE FROM containers WHERE id = ?1", params![id]));
        let end = if res.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = self.exec(end, []);
        res.and(ended)
    }

    /// The first host uid and gid of every recorded id range, as pairs.
    ///
    /// Errors: [`Error::Db`].
    pub fn id_ranges(&self) -> Result<Vec<(String, u32, u32)>> {
        let mut st = self
            .conn
            .prepare("SELECT container_id, uid_start, gid_start FROM idmaps")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// Id ranges recorded for containers that have no record (left by an older vessel or a
    /// hand-edited database); with `repair` they are deleted. Returns their container ids.
    ///
    /// Errors: [`Error::Db`].
    pub fn orphan_id_ranges(&self, repair: bool) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT container_id FROM idmaps WHERE container_id NOT IN (SELECT id FROM containers)")
            .map_err(|e| self.err(e))?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        if repair {
            self.exec(
                "DELETE FROM idmaps WHERE container_id NOT IN (SELECT id FROM containers)",
                [],
            )?;
        }
        Ok(ids)
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<()> {
        self.conn.execute(sql, p).map(|_| ()).map_err(|e| self.err(e))
    }
}

/// Which containers use an image: `vessel rmi` refuses to remove an image in use without
/// `-f`, as docker and podman do.
impl Db {
    /// The records whose image id is `image_id` (the image's config digest, `sha256:<hex>`),
    /// oldest first.
    ///
    /// Errors: [`Error::Db`].
    pub fn using_image(&self, image_id: &str) -> Result<Vec<Record>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM containers WHERE image_id = ?1 ORDER BY created_at"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st.query_map(params![image_id], Db::from_row).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> Record {
        Record {
            id: id.into(),
            name: name.into(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            options: RunOptions::default(),
            command: vec!["sh".into()],
            stop_signal: 15,
            state: State::Created,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            exit_code: None,
            created_at: "2026-11-21T00:00:00.000000000Z".into(),
            started_at: None,
            finished_at: None,
            oom_killed: false,
        }
    }

    #[test]
    fn names_prefixes_and_states() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.insert(&rec("abc123", "one")).unwrap();
        db.insert(&rec("abd456", "two")).unwrap();
        assert!(matches!(db.insert(&rec("fff", "one")), Err(Error::NameInUse(_))));
        assert_eq!(db.find("one").unwrap().id, "abc123");
        assert_eq!(db.find("abd").unwrap().name, "two");
        assert!(matches!(db.find("ab"), Err(Error::Ambiguous(_))));
        assert!(matches!(db.find("zz"), Err(Error::NoSuchContainer(_))));
        db.set_running("abc123", "t1").unwrap();
        assert_eq!(db.get("abc123").unwrap().unwrap().state, State::Running);
        db.set_exited("abc123", Some(3), "t2").unwrap();
        let r = db.get("abc123").unwrap().unwrap();
        assert_eq!(
            (r.state, r.exit_code, r.finished_at.as_deref()),
            (State::Exited, Some(3), Some("t2"))
        );
        assert!(matches!(db.rename("abc123", "two"), Err(Error::NameInUse(_))));
        db.rename("abc123", "three").unwrap();
        db.delete("abc123").unwrap();
        assert_eq!(db.list().unwrap().len(), 1);
    }

    #[test]
    fn id_ranges_live_and_die_with_their_container() {
        use crate::options::{IdMap, IdMappings, IdRange};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let with_range = |id: &str, name: &str, start: u32| {
            let mut r = rec(id, name);
            r.options.id_mappings = Some(IdMappings {
                uid: vec![IdMap {
                    container: 0,
                    host: start,
                    size: 65536,
                }],
                gid: vec![IdMap {
                    container: 0,
                    host: start,
                    size: 65536,
                }],
                range: Some(IdRange {
                    uid_start: start,
                    gid_start: start,
                    size: 65536,
                }),
            });
            r
        };
        db.insert(&with_range("a1", "one", 1_000_000_000)).unwrap();
        // A range another container holds is refused, and nothing of the row stays.
        assert!(matches!(
            db.insert(&with_range("b2", "two", 1_000_000_000)),
            Err(Error::RangeTaken(1_000_000_000))
        ));
        assert!(db.get("b2").unwrap().is_none());
        // A name in use: neither row.
        assert!(matches!(
            db.insert(&with_range("c3", "one", 1_000_065_536)),
            Err(Error::NameInUse(_))
        ));
        assert_eq!(
            db.id_ranges().unwrap(),
            vec![("a1".to_string(), 1_000_000_000, 1_000_000_000)]
        );
        db.delete("a1").unwrap();
        assert!(db.id_ranges().unwrap().is_empty());
        // A range whose container row went another way is an orphan for `system check`.
        db.insert(&with_range("d4", "four", 1_000_000_000)).unwrap();
        db.exec("DELETE FROM containers WHERE id = 'd4'", []).unwrap();
        assert_eq!(db.orphan_id_ranges(false).unwrap(), ["d4"]);
        assert_eq!(db.orphan_id_ranges(true).unwrap(), ["d4"]);
        assert!(db.id_ranges().unwrap().is_empty());
    }
}
