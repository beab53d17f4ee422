//! Snapshot restore: the copy into `upper.new`, the journal, the swap that any later
//! command can finish, and `vessel system check`'s repairs of killed snapshot commands.

use std::fs;
use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    beside, copy_err, dir, fsync_dir, pause_point, read_info, remove_tree, show, sync_fs, tree, uppers, write_atomic,
    Lock, TempTree, CHECKPOINT_DIR, JOURNAL_FILE, TMP_PREFIX,
};
use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::paths::Paths;

/// What to do after a restore's files are swapped: the container's state before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Then {
    /// It was stopped: leave it so.
    Stopped,
    /// It was created: create it again.
    Created,
    /// It ran: start it again.
    Running,
}

/// `snapshots/.restore`.
#[derive(Debug, Serialize, Deserialize)]
struct Journal {
    snapshot: String,
    then: Then,
}

/// `vessel snapshot restore`: the container's files as they were in snapshot `name`. A
/// running (or paused) container is stopped first and started again after; a created one
/// is created again; a stopped one stays stopped.
///
/// # Errors
/// [`Error::NoSuchSnapshot`], [`Error::BadInput`] for `stateful`, [`Error::NoSpace`] (the
/// container's files are untouched), [`Error::WrongState`] when it cannot be stopped or its
/// root file system stays mounted, [`Error::Io`], and the errors of stop and start.
pub fn restore(engine: &Engine, r: &Record, name: &str, stateful: bool) -> Result<()> {
    let info = show(engine, r, name)?;
    if stateful && !info.stateful {
        return Err(Error::BadInput(format!(
            "snapshot {name} of container {} holds no processes (it was taken without --stateful): restore it without --stateful",
            r.name
        )));
    }
    let then = match r.state {
        State::Running | State::Paused if engine.health(r) == crate::containers::Health::Ok => Then::Running,
        State::Created if engine.health(r) == crate::containers::Health::Ok => Then::Created,
        _ => Then::Stopped,
    };
    if r.state.is_live() {
        engine.stop(r, Duration::from_secs(10))?;
    }
    if crate::rootfs::is_mounted(&engine.paths.bundle(&r.id))? {
        return Err(Error::WrongState(format!(
            "the root file system of container {} is still mounted after it stopped: run `vessel system check` and retry",
            r.name
        )));
    }
    {
        let lock = Lock::take(&engine.paths, &r.id, true)?;
        finish_locked(&engine.paths, r, lock.as_ref())?;
        let src = dir(&engine.paths, &r.id).join(name);
        let mut news: Vec<TempTree> = Vec::new();
        let (_writable, ups) = uppers(&engine.paths, r)?;
        for (upper, sub) in ups {
            let new = beside(&upper, "new");
            remove_tree(&new)?;
            let t = TempTree { path: new, keep: false };
            let from = src.join(sub);
            if from.is_dir() {
                tree::copy_tree(&from, &t.path)
                    .map_err(|e| copy_err(e, format!("restoring snapshot {name} of container {}", r.name)))?;
            } else {
                // Empty when the snapshot has none (an upper made after it): as fresh.
                fs::create_dir(&t.path).at("create", &t.path)?;
                if let Ok(m) = fs::metadata(&upper) {
                    fs::set_permissions(&t.path, m.permissions()).at("chmod", &t.path)?;
                }
            }
            news.push(t);
        }
        pause_point("restore-copied");
        let d = dir(&engine.paths, &r.id);
        sync_fs(&d)?;
        let journal = Journal {
            snapshot: name.into(),
            then,
        };
        let json = serde_json::to_vec(&journal).map_err(|e| Error::BadInput(format!("restore journal: {e}")))?;
        write_atomic(&d.join(JOURNAL_FILE), &json)?;
        // From here on the restore is decided: the finisher completes it.
        for t in &mut news {
            t.keep = true;
        }
        swap_all(&engine.paths, r)?;
    }
    if stateful {
        let images = dir(&engine.paths, &r.id).join(name).join(CHECKPOINT_DIR);
        return crate::checkpoint::restore_from(engine, &r.id, &images).map(|_| ());
    }
    match then {
        Then::Running => engine.start(&engine.find(&r.id)?),
        Then::Created => engine.recreate(&engine.find(&r.id)?),
        Then::Stopped => Ok(()),
    }
}

/// Swaps every `upper.new` in (idempotent: each step is redone only if not yet done), then
/// removes the journal.
fn swap_all(paths: &Paths, r: &Record) -> Result<()> {
    let (_writable, ups) = uppers(paths, r)?;
    for (upper, _) in ups {
        let (new, old) = (beside(&upper, "new"), beside(&upper, "old"));
        if new.exists() {
            if upper.exists() {
                remove_tree(&old)?;
                fs::rename(&upper, &old).at("move aside", &upper)?;
                pause_point("restore-swapping");
            }
            fs::rename(&new, &upper).at("move restored copy to", &upper)?;
        }
        if let Some(parent) = upper.parent() {
            fsync_dir(parent)?;
        }
        remove_tree(&old)?;
    }
    let j = dir(paths, &r.id).join(JOURNAL_FILE);
    match fs::remove_file(&j) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", j, e)),
        _ => Ok(()),
    }
}

/// With the lock held: finishes a restore that was killed after its journal was written,
/// or removes the copies of one killed before. Returns what was done, if anything, and
/// what the killed restore would have done with the container after.
pub(super) fn finish_locked(paths: &Paths, r: &Record, _lock: Option<&Lock>) -> Result<Option<(String, Then)>> {
    let d = dir(paths, &r.id);
    let j = d.join(JOURNAL_FILE);
    let journal: Option<Journal> = match fs::read(&j) {
        Ok(data) => serde_json::from_slice(&data).ok(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", j, e)),
    };
    match journal {
        Some(journal) => {
            swap_all(paths, r)?;
            Ok(Some((
                format!("finished the restore of snapshot {}", journal.snapshot),
                journal.then,
            )))
        }
        None => {
            // A journal that did not parse was never complete (it is renamed into place).
            let _ = fs::remove_file(&j);
            let mut cleaned = false;
            let Ok((_writable, ups)) = uppers(paths, r) else {
                return Ok(None);
            };
            for (upper, _) in ups {
                for stale in [beside(&upper, "new"), beside(&upper, "old")] {
                    if stale.exists() && upper.exists() {
                        remove_tree(&stale)?;
                        cleaned = true;
                    }
                }
            }
            Ok(cleaned.then(|| ("removed the copies of an unfinished restore".to_string(), Then::Stopped)))
        }
    }
}

/// Before container `id` is mounted to start (the monitor): finishes a restore that was
/// killed after its journal was written (or cleans one killed before).
///
/// # Errors
/// [`Error::WrongState`] when a restore of this container is running now; the errors of the
/// swap.
pub fn finish_pending(paths: &Paths, r: &Record) -> Result<()> {
    let d = dir(paths, &r.id);
    if !d.join(JOURNAL_FILE).exists() {
        return Ok(());
    }
    match Lock::take(paths, &r.id, false)? {
        Some(lock) => finish_locked(paths, r, Some(&lock)).map(|_| ()),
        None => Err(Error::WrongState(format!(
            "a snapshot restore of container {} is running: start it when that ends",
            r.name
        ))),
    }
}

/// `vessel system check`'s part: for every container whose snapshot operations are not
/// running now, the `.tmp-*` leftovers and half-made snapshots of killed creates and
/// removals, a container left frozen by a create killed during its copy (thawed), and
/// killed restores (finished when their journal was written, with the
/// container started or created again as the restore would have; their copies removed
/// otherwise). With `repair` false only reports.
///
/// # Errors
/// [`Error::Io`] and the errors of the swap and start.
pub fn check(engine: &Engine, repair: bool) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for r in engine.list()? {
        let d = dir(&engine.paths, &r.id);
        if !d.is_dir() {
            continue;
        }
        let Some(lock) = Lock::take(&engine.paths, &r.id, false)? else {
            continue;
        };
        for e in fs::read_dir(&d).at("list", &d)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let garbage = if name.starts_with(TMP_PREFIX) {
                true
            } else if name.starts_with('.') {
                false
            } else {
                e.path().is_dir() && read_info(&e.path()).ok().flatten().is_none()
            };
            if garbage {
                found.push(format!(
                    "container {}: leftover of an unfinished snapshot operation: {}",
                    r.name,
                    e.path().display()
                ));
                if repair {
                    remove_tree(&e.path())?;
                }
            }
        }
        // Frozen while the record says running: a create killed during its copy.
        if r.state == State::Running {
            if let Ok(c) = vessel_runtime::Container::load(&engine.paths.oci_root(), &r.id) {
                if c.state.status == vessel_runtime::Status::Paused {
                    found.push(format!(
                        "container {}: frozen by an interrupted snapshot while it should run",
                        r.name
                    ));
                    if repair {
                        vessel_runtime::cgroups::manager(&c.state.cgroup_path).freeze(false)?;
                    }
                }
            }
        }
        let pending = d.join(JOURNAL_FILE).exists();
        if pending {
            found.push(format!("container {}: a snapshot restore was interrupted", r.name));
        }
        if repair {
            if let Some((what, then)) = finish_locked(&engine.paths, &r, Some(&lock))? {
                if !pending {
                    found.push(format!("container {}: {what}", r.name));
                }
                drop(lock);
                let fresh = engine.find(&r.id)?;
                match then {
                    Then::Running if !fresh.state.is_live() => engine.start(&fresh)?,
                    Then::Created if !fresh.state.is_live() => engine.recreate(&fresh)?,
                    _ => {}
                }
            }
        }
    }
    Ok(found)
}
