//! Named volumes (`vessel volume create|ls|inspect|rm|prune`, `-v NAME:/path`, the
//! Docker API's `/volumes`): a record in the `volumes` table of the records database and
//! a data directory `ROOT/volumes/NAME/_data` that containers bind-mount. The only
//! driver is docker's `local` without options. As docker does, `-v NAME:/path` makes a
//! missing volume when the container is made, and a volume that a container names
//! (in any state) is not removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::containers::Engine;
use crate::db::{Db, Record};
use crate::error::{Error, IoContext, Result};
use crate::options::RunOptions;
use crate::paths::Paths;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    driver TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at TEXT NOT NULL
);";

/// A named volume, as `vessel volume inspect` shows it (docker's field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeRecord {
    /// The name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// The data directory containers mount: `ROOT/volumes/NAME/_data`.
    pub mountpoint: PathBuf,
    /// When it was made, RFC 3339 UTC.
    pub created_at: String,
    /// Labels a client gave it (docker compose marks its volumes with
    /// `com.docker.compose.project`).
    pub labels: BTreeMap<String, String>,
    /// Always `local`.
    pub scope: String,
}

/// Checks a volume name as docker does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most 255 bytes.
///
/// Errors: the rule broken, for the caller's message.
pub fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    let b = name.as_bytes();
    let ok_first = b.first().is_some_and(u8::is_ascii_alphanumeric);
    let ok_rest = b
        .iter()
        .skip(1)
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if b.len() < 2 || b.len() > 255 || !ok_first || !ok_rest {
        return Err("a volume name is 2 to 255 of [a-zA-Z0-9_.-], starting with a letter or digit");
    }
    Ok(())
}

/// The directory of volume `name`: `ROOT/volumes/NAME` (its data in `_data`).
pub fn dir(paths: &Paths, name: &str) -> PathBuf {
    paths.root.join("volumes").join(name)
}

fn data_dir(paths: &Paths, name: &str) -> PathBuf {
    dir(paths, name).join("_data")
}

fn table(db: &Db) -> Result<()> {
    db.conn().execute_batch(SCHEMA).map_err(|e| db.err(e))
}

fn row(paths: &Paths, name: String, driver: String, labels: String, created_at: String) -> VolumeRecord {
    VolumeRecord {
        mountpoint: data_dir(paths, &name),
        name,
        driver,
        created_at,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        scope: "local".into(),
    }
}

/// Volume `name`, if there is one.
///
/// Errors: [`Error::Db`].
pub fn get(paths: &Paths, db: &Db, name: &str) -> Result<Option<VolumeRecord>> {
    table(db)?;
    db.conn()
        .query_row(
            "SELECT name, driver, labels, created_at FROM volumes WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map(|o| o.map(|(n, d, l, c)| row(paths, n, d, l, c)))
        .map_err(|e| db.err(e))
}

/// Volume `name`. Errors: [`Error::NoSuchVolume`], [`Error::Db`].
pub fn find(paths: &Paths, db: &Db, name: &str) -> Result<VolumeRecord> {
    get(paths, db, name)?.ok_or_else(|| Error::NoSuchVolume(name.to_string()))
}

/// Every volume, by name.
///
/// Errors: [`Error::Db`].
pub fn list(paths: &Paths, db: &Db) -> Result<Vec<VolumeRecord>> {
    table(db)?;
    let mut st = db
        .conn()
        .prepare("SELECT name, driver, labels, created_at FROM volumes ORDER BY name")
        .map_err(|e| db.err(e))?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .map_err(|e| db.err(e))?;
    let mut out = Vec::new();
    for r in rows {
        let (n, d, l, c) = r.map_err(|e| db.err(e))?;
        out.push(row(paths, n, d, l, c));
    }
    Ok(out)
}

/// Makes volume `name` with `labels`: its record and empty data directory (mode 0755).
/// A volume that exists already is returned as it is, as docker does (`docker volume
/// create` of an existing name succeeds), unless `labels` differ: then
/// [`Error::VolumeExists`]. Returns the volume and whether it was made now.
///
/// Errors: [`Error::BadInput`] for a bad name, [`Error::VolumeExists`], [`Error::Db`],
/// [`Error::Io`].
pub fn create(paths: &Paths, db: &Db, name: &str, labels: &BTreeMap<String, String>) -> Result<(VolumeRecord, bool)> {
    check_name(name).map_err(|why| Error::BadInput(format!("invalid volume name {name:?}: {why}")))?;
    if let Some(v) = get(paths, db, name)? {
        if !labels.is_empty() && &v.labels != labels {
            return Err(Error::VolumeExists(name.to_string()));
        }
        return Ok((v, false));
    }
    let data = data_dir(paths, name);
    std::fs::create_dir_all(&data).at("create", &data)?;
    let labels_text = serde_json::to_string(labels).unwrap_or_else(|_| "{}".into());
    let made = db.conn().execute(
        "INSERT OR IGNORE INTO volumes (name, driver, labels, created_at) VALUES (?1, 'local', ?2, ?3)",
        params![name, labels_text, vessel_runtime::state::now_rfc3339()],
    );
    let n = made.map_err(|e| db.err(e))?;
    Ok((find(paths, db, name)?, n == 1))
}

/// Completes the named volumes of `opts` (`-v NAME:/path`) when a container is made:
/// each is made if missing, and its data directory becomes the bind mount's source.
/// A container in a user namespace (`opts.id_mappings`) gets an empty data directory
/// that root owns handed to its own root (the host ids container 0 maps to), as podman
/// does on a volume's first mount, so its root can write there (not for `:idmap`, where
/// container root is host root on the volume); a volume that holds files keeps its owners.
///
/// Errors: as [`create`]; [`Error::Io`] when the chown fails.
pub fn resolve(paths: &Paths, db: &Db, opts: &mut RunOptions) -> Result<()> {
    let owner = opts
        .id_mappings
        .as_ref()
        .and_then(|m| Some((crate::idmap::to_host(&m.uid, 0)?, crate::idmap::to_host(&m.gid, 0)?)));
    for v in &mut opts.volumes {
        if let Some(name) = &v.name {
            let (rec, _) = create(paths, db, name, &BTreeMap::new())?;
            // An idmapped volume needs none: the container's root writes as host root.
            if let Some((uid, gid)) = owner.filter(|_| !v.idmap) {
                hand_over_if_fresh(&rec.mountpoint, uid, gid)?;
            }
            v.host = rec.mountpoint;
        }
    }
    Ok(())
}

/// Chowns `data` to `uid:gid` when it is an empty directory that host root owns.
fn hand_over_if_fresh(data: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data).at("stat", data)?;
    let empty = std::fs::read_dir(data).at("read", data)?.next().is_none();
    if empty && meta.uid() == 0 && meta.gid() == 0 {
        std::os::unix::fs::chown(data, Some(uid), Some(gid)).at("chown", data)?;
    }
    Ok(())
}

/// The containers (any state) whose options name volume `name`, oldest first.
///
/// Errors: [`Error::Db`].
pub fn users(db: &Db, name: &str) -> Result<Vec<Record>> {
    Ok(db
        .list()?
        .into_iter()
        .filter(|r| r.options.volumes.iter().any(|v| v.name.as_deref() == Some(name)))
        .collect())
}

/// Removes volume `name` and its data. Refused while a container names it, as docker
/// refuses (`force` does not change that: docker's `-f` only ignores a missing volume,
/// and so does this: with `force` a missing volume is no error).
///
/// Errors: [`Error::NoSuchVolume`], [`Error::VolumeInUse`], [`Error::Db`], [`Error::Io`].
pub fn remove(engine: &Engine, name: &str, force: bool) -> Result<()> {
    let (paths, db) = (&engine.paths, &engine.db);
    if get(paths, db, name)?.is_none() {
        return if force {
            Ok(())
        } else {
            Err(Error::NoSuchVolume(name.to_string()))
        };
    }
    let users = users(db, name)?;
    if !users.is_empty() {
        return Err(Error::VolumeInUse {
            volume: name.to_string(),
            containers: users.iter().map(|r| format!("{} ({})", r.name, &r.id[..12])).collect(),
        });
    }
    // The record goes last: a crash in between leaves a volume that `rm` finishes.
    let d = dir(paths, name);
    match std::fs::remove_dir_all(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", d, e)),
    }
    db.conn()
        .execute("DELETE FROM volumes WHERE name = ?1", params![name])
        .map_err(|e| db.err(e))?;
    Ok(())
}

/// Removes every volume no container names (`vessel volume prune`, `POST
/// /volumes/prune`); with `label` (`KEY` or `KEY=VALUE`) only those carrying it.
/// Returns the names removed and the bytes their data took.
///
/// Errors: as [`remove`].
pub fn prune(engine: &Engine, label: Option<&str>) -> Result<(Vec<String>, u64)> {
    let mut gone = Vec::new();
    let mut bytes = 0;
    for v in list(&engine.paths, &engine.db)? {
        if label.is_some_and(|l| !has_label(&v, l)) || !users(&engine.db, &v.name)?.is_empty() {
            continue;
        }
        bytes += du(&v.mountpoint);
        remove(engine, &v.name, false)?;
        gone.push(v.name);
    }
    Ok((gone, bytes))
}

/// Whether volume `v` has label `filter`: `KEY` (any value) or `KEY=VALUE`.
pub fn has_label(v: &VolumeRecord, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
        None => v.labels.contains_key(filter),
    }
}

/// Bytes of the regular files under `path` (symlinks not followed).
pub fn du(path: &std::path::Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| du(&e.path()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["ab", "data", "proj_db-data.1", "0x"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-x", ".x", "a/b", "a b", "../x", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_list_find() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path(), dir.path().join("run"));
        let db = Db::open(dir.path()).unwrap();
        let mut labels = BTreeMap::new();
        labels.insert("k".to_string(), "v".to_string());
        let (v, made) = create(&paths, &db, "data", &labels).unwrap();
        assert!(made && v.mountpoint.is_dir() && v.mountpoint.ends_with("volumes/data/_data"));
        assert!(has_label(&v, "k") && has_label(&v, "k=v") && !has_label(&v, "k=w"));
        let (_, made) = create(&paths, &db, "data", &BTreeMap::new()).unwrap();
        assert!(!made);
        let mut other = BTreeMap::new();
        other.insert("k".to_string(), "w".to_string());
        assert!(matches!(
            create(&paths, &db, "data", &other),
            Err(Error::VolumeExists(_))
        ));
        assert_eq!(list(&paths, &db).unwrap().len(), 1);
        assert!(matches!(find(&paths, &db, "nope"), Err(Error::NoSuchVolume(_))));
    }
}
