//! Snapshots of a container's files (Incus's semantics): `vessel snapshot create|ls|show|
//! rm|restore|run-due`, snapshot schedules and expiry.
//!
//! A container's writable state is the upper dir of its active snapshot in the image store
//! (`ROOT/snapshots/active/<id>/upper`) and, for the `host` image, its private /etc upper
//! (`<bundle>/host-etc/upper`). Snapshot `S` of it lives in `<bundle>/snapshots/S/`:
//! `rootfs/` (a copy of the upper: reflinked where the file system can, see [`tree`]),
//! `host-etc/` (host image only), `checkpoint/` (CRIU images of a stateful snapshot, not
//! built yet) and `snapshot.json` ([`SnapshotInfo`]). A snapshot exists iff its
//! `snapshot.json` does: the rest is made in `snapshots/.tmp-S-<random>/`, renamed to `S`,
//! and `snapshot.json` is written last (temp + fsync + rename). The copied files are not
//! synced (see [`create`]); a restore syncs its copy before it swaps.
//!
//! Restore copies a snapshot into `upper.new` beside each upper, syncs, writes a journal
//! (`snapshots/.restore`), then swaps: `upper` -> `upper.old`, `upper.new` -> `upper`, and
//! removes `upper.old` and the journal. Every step is a rename that can be redone, so a
//! restore killed at any point is finished by the next snapshot command, the container's
//! next start, or `vessel system check` ([`check`]); before the journal exists it is as if
//! nothing happened. Every operation on a container's snapshots holds `snapshots/.lock`
//! (flock), so a finisher never meets a restore that is still running.

mod due;
mod restore;
mod schedule;
pub mod tree;

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FlockOperation, Mode, OFlags};
use serde::{Deserialize, Serialize};

pub use due::{next_due, run_due, set_schedule};
pub use restore::{check, finish_pending, restore};
pub use schedule::{format_time, next_fire, now, parse_expiry, parse_schedule, parse_time, TEST_NOW_ENV};

use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::paths::Paths;
use crate::rootfs::HOST_IMAGE;

/// The environment variable that makes a snapshot command stop at a named point (print
/// `vessel: test pause at POINT` on stderr, then sleep until killed), so that the tests can
/// kill it there. Points: `create-frozen`, `create-copied`, `create-renamed`, `restore-copied`,
/// `restore-swapping`, `rm-renamed`. Never set it otherwise.
pub const TEST_PAUSE_ENV: &str = "VESSEL_TEST_PAUSE_AT";

/// The directory of a bundle that holds its snapshots.
const SNAPSHOTS_DIR: &str = "snapshots";
/// The file whose flock serializes the snapshot operations of one container.
const LOCK_FILE: &str = ".lock";
/// The journal of a restore whose swap has begun.
const JOURNAL_FILE: &str = ".restore";
/// The prefix of snapshots being made (garbage when their maker is gone).
const TMP_PREFIX: &str = ".tmp-";

/// `snapshot.json`: what `vessel snapshot show` prints and `ls --format json` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The snapshot's name (`snap0`, `before-upgrade`, `auto-20261203-140000`).
    pub name: String,
    /// When it was taken (RFC 3339, UTC).
    pub created: String,
    /// When `vessel snapshot run-due` removes it (RFC 3339), or None: never.
    pub expires: Option<String>,
    /// Bytes of the files it holds (regular files and symlinks; a hardlinked file once).
    pub size: u64,
    /// Whether it holds a CRIU checkpoint of the processes (`checkpoint/`).
    pub stateful: bool,
}

/// The CRIU images of a stateful snapshot, in its directory.
const CHECKPOINT_DIR: &str = "checkpoint";

/// The directory of `id`'s snapshots.
pub fn dir(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join(SNAPSHOTS_DIR)
}

/// Whether `name` can name a snapshot: 1-64 of `[A-Za-z0-9_.-]`, not starting with `.` or
/// `-` (as Incus, without `/`, which separates container and snapshot there).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput(format!(
            "snapshot name \"{name}\": use 1-64 letters, digits, '-', '_' or '.', not starting with '.' or '-'"
        )))
    }
}

/// Stops here when the tests asked to ([`TEST_PAUSE_ENV`]).
fn pause_point(point: &str) {
    if std::env::var(TEST_PAUSE_ENV).is_ok_and(|p| p == point) {
        eprintln!("vessel: test pause at {point}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// The writable dirs of container `r` and where each is kept in a snapshot: the rootfs
/// upper (`rootfs/`) and, for the host image, the /etc upper (`host-etc/`). They stay
/// reachable while the returned guard lives (a stopped container with a disk quota has
/// them on its own file system, mounted for that time: [`crate::rootfs::writable`]).
fn uppers(paths: &Paths, r: &Record) -> Result<(crate::rootfs::Writable, Vec<(PathBuf, &'static str)>)> {
    let store = vessel_image::Store::open(paths.store_root())?;
    let writable = crate::rootfs::writable(&store, &paths.bundle(&r.id), &r.id)?;
    let mut out = vec![(writable.upper.clone(), "rootfs")];
    if r.image_id == HOST_IMAGE {
        out.push((paths.bundle(&r.id).join("host-etc").join("upper"), "host-etc"));
    }
    Ok((writable, out))
}

/// `upper.new` and `upper.old` beside `upper`.
fn beside(upper: &Path, what: &str) -> PathBuf {
    let mut s = upper.as_os_str().to_owned();
    s.push(".");
    s.push(what);
    PathBuf::from(s)
}

/// An exclusive flock on `<bundle>/snapshots/.lock`, released on drop (and by the kernel
/// when the process dies).
struct Lock(#[allow(dead_code)] OwnedFd);

impl Lock {
    /// Waits for the lock (`wait`) or returns None when another process holds it.
    fn take(paths: &Paths, id: &str, wait: bool) -> Result<Option<Lock>> {
        let d = dir(paths, id);
        fs::create_dir_all(&d).at("create", &d)?;
        let path = d.join(LOCK_FILE);
        let fd = rustix::fs::open(
            &path,
            OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o600),
        )
        .at("open", &path)?;
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match rustix::fs::flock(&fd, op) {
            Ok(()) => Ok(Some(Lock(fd))),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
            Err(e) => Err(Error::io("lock", path, e.into())),
        }
    }
}

fn sync_fs(path: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", path)?;
    rustix::fs::syncfs(&fd).at("syncfs", path)
}

fn fsync_dir(path: &Path) -> Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", path)?;
    rustix::fs::fsync(&fd).at("fsync", path)
}

/// Writes `data` to `path` through a temp file, fsync and rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = beside(path, "tmp");
    let mut f = fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(data).at("write", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    fs::rename(&tmp, path).at("rename", path)?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

fn remove_tree(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

fn copy_err(e: tree::CopyError, what: String) -> Error {
    if e.is_no_space() {
        Error::NoSpace { what, path: e.path }
    } else {
        Error::io(e.op, e.path, e.source)
    }
}

/// A directory removed on drop unless kept (a snapshot or copy being made).
struct TempTree {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempTree {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Thaws a container frozen for a snapshot when dropped, also on error. The freeze goes
/// through the runtime only (not the records: a full disk must not keep it frozen).
struct Frozen {
    cgroup: PathBuf,
    name: String,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = vessel_runtime::cgroups::manager(&self.cgroup).freeze(false) {
            eprintln!(
                "vessel: warning: could not thaw container {}: {e}: run `vessel unpause {}`",
                self.name, self.name
            );
        }
    }
}

/// The snapshots of `r`, oldest first (by creation time, then name).
///
/// # Errors
/// [`Error::Io`] when the snapshot dir cannot be read.
pub fn list(engine: &Engine, r: &Record) -> Result<Vec<SnapshotInfo>> {
    list_in(&dir(&engine.paths, &r.id))
}

fn list_in(d: &Path) -> Result<Vec<SnapshotInfo>> {
    let mut out = Vec::new();
    let rd = match fs::read_dir(d) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io("list", d, e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Some(info) = read_info(&e.path())? {
            out.push(info);
        }
    }
    out.sort_by(|a, b| (&a.created, &a.name).cmp(&(&b.created, &b.name)));
    Ok(out)
}

/// The `snapshot.json` in `d`, or None when there is none (a snapshot half made).
fn read_info(d: &Path) -> Result<Option<SnapshotInfo>> {
    let p = d.join("snapshot.json");
    match fs::read(&p) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::BadInput(format!("{}: {e}: remove the snapshot and take it again", p.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", p, e)),
    }
}

/// Snapshot `name` of `r`.
///
/// # Errors
/// [`Error::NoSuchSnapshot`], [`Error::BadInput`] for a bad name or `snapshot.json`.
pub fn show(engine: &Engine, r: &Record, name: &str) -> Result<SnapshotInfo> {
    check_name(name)?;
    read_info(&dir(&engine.paths, &r.id).join(name))?.ok_or_else(|| Error::NoSuchSnapshot {
        container: r.name.clone(),
        name: name.into(),
    })
}

/// The next free `snapN` name (N one above the highest taken, from 0), as Incus names them.
fn next_name(taken: &[SnapshotInfo]) -> String {
    let n = taken
        .iter()
        .filter_map(|s| s.name.strip_prefix("snap").and_then(|n| n.parse::<u64>().ok()))
        .map(|n| n + 1)
        .max()
        .unwrap_or(0);
    format!("snap{n}")
}

/// What `vessel snapshot create` asks for.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The snapshot's name; the next `snapN` when None.
    pub name: Option<String>,
    /// `--expiry` (`7d`); when None, the container's `--snapshot-expiry` setting, if any.
    pub expiry: Option<String>,
    /// `--stateful`: also checkpoint the processes (CRIU).
    pub stateful: bool,
}

/// `vessel snapshot create`: copies the container's writable state into a new snapshot.
/// A running container is frozen (its cgroup) during the copy and thawed after, also on
/// error; a paused one stays paused.
///
/// # Errors
/// [`Error::BadInput`] for a bad name or expiry, a name taken, or `stateful`;
/// [`Error::NoSpace`] when the file system fills up (the partial snapshot is removed);
/// [`Error::Io`], [`Error::Image`] (no active snapshot), runtime errors of the freeze.
pub fn create(engine: &Engine, r: &Record, opts: &CreateOptions) -> Result<SnapshotInfo> {
    if opts.stateful && !matches!(r.state, State::Running | State::Paused) {
        return Err(Error::WrongState(format!(
            "a stateful snapshot keeps the processes of a running container, and {} is {}: take it without --stateful",
            r.name,
            r.state.as_str()
        )));
    }
    let expiry = match opts.expiry.as_deref().or(r.options.snapshot_expiry.as_deref()) {
        Some(e) => Some(parse_expiry(e)?),
        None => None,
    };
    if let Some(n) = &opts.name {
        check_name(n)?;
    }
    let lock = Lock::take(&engine.paths, &r.id, true)?;
    restore::finish_locked(&engine.paths, r, lock.as_ref())?;
    let d = dir(&engine.paths, &r.id);
    let taken = list_in(&d)?;
    let name = opts.name.clone().unwrap_or_else(|| next_name(&taken));
    if taken.iter().any(|s| s.name == name) {
        return Err(Error::BadInput(format!(
            "container {} already has a snapshot \"{name}\": pick another name or `vessel snapshot rm {} {name}` first",
            r.name, r.name
        )));
    }
    // A dir without snapshot.json was left by a create killed before its last step.
    remove_tree(&d.join(&name))?;
    let tmp = TempTree {
        path: d.join(format!("{TMP_PREFIX}{name}-{}", random_suffix())),
        keep: false,
    };
    fs::create_dir(&tmp.path).at("create", &tmp.path)?;
    // To the second, as shown: the expiry counts from the time written.
    let created = chrono::SubsecRound::trunc_subsecs(now(), 0);
    let mut size = 0;
    // Stateful: the processes are dumped (and end), the files copied as they left them,
    // then the processes restored from the images; the container is down in between.
    let images = tmp.path.join(CHECKPOINT_DIR);
    if opts.stateful {
        crate::checkpoint::dump(engine, &r.id, &images, false)?;
    }
    let (_writable, uppers) = uppers(&engine.paths, r)?;
    {
        let frozen = if opts.stateful { None } else { freeze(engine, r)? };
        pause_point("create-frozen");
        for (upper, sub) in &uppers {
            if !upper.is_dir() {
                continue;
            }
            match tree::copy_tree(upper, &tmp.path.join(sub)) {
                Ok(c) => size += c.bytes,
                Err(e) => {
                    // Space back before the thaw: the container's next write must not fail.
                    let _ = fs::remove_dir_all(&tmp.path);
                    drop(frozen);
                    let err = copy_err(e, format!("taking snapshot {name} of container {}", r.name));
                    return Err(if opts.stateful {
                        Error::WrongState(format!(
                            "{err}; container {} was checkpointed for it and is stopped now: `vessel start {}`",
                            r.name, r.name
                        ))
                    } else {
                        err
                    });
                }
            }
        }
    }
    drop(_writable);
    if opts.stateful {
        crate::checkpoint::restore_from(engine, &r.id, &images)?;
    }
    pause_point("create-copied");
    // No syncfs here (unlike restore): it would wait for every dirty page of the file system,
    // other programs' too (seconds on a busy disk, against ~40 ms for the copy of 10 MB).
    // The copy is in the page cache, which a killed command does not lose; the kernel
    // writes it back within its writeback interval. As cp -a, rsync and Incus's dir
    // storage do.
    let dest = d.join(&name);
    fs::rename(&tmp.path, &dest).at("rename snapshot into place", &dest)?;
    let mut made = TempTree {
        path: dest.clone(),
        keep: false,
    };
    pause_point("create-renamed");
    let info = SnapshotInfo {
        name: name.clone(),
        created: format_time(created),
        expires: expiry.and_then(|e| schedule::expires_at(created, e)),
        size,
        stateful: opts.stateful,
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Error::BadInput(format!("snapshot.json: {e}")))?;
    write_atomic(&dest.join("snapshot.json"), &json).map_err(|e| no_space(e, &name, r))?;
    made.keep = true;
    Ok(info)
}

fn no_space(e: Error, name: &str, r: &Record) -> Error {
    match e {
        Error::Io { path, source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            Error::NoSpace {
                what: format!("taking snapshot {name} of container {}", r.name),
                path,
            }
        }
        e => e,
    }
}

/// Freezes `r` when it runs (not when paused already: it stays as it is).
fn freeze(engine: &Engine, r: &Record) -> Result<Option<Frozen>> {
    if r.state != State::Running || engine.health(r) != crate::containers::Health::Ok {
        return Ok(None);
    }
    let Ok(container) = vessel_runtime::Container::load(&engine.paths.oci_root(), &r.id) else {
        return Ok(None);
    };
    if container.state.status != vessel_runtime::Status::Running {
        return Ok(None);
    }
    let cgroup = container.state.cgroup_path.clone();
    vessel_runtime::cgroups::manager(&cgroup).freeze(true)?;
    Ok(Some(Frozen {
        cgroup,
        name: r.name.clone(),
    }))
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `vessel snapshot rm`: removes snapshot `name` of `r` (renamed to a `.tmp-` name first,
/// so a killed removal leaves garbage for `system check`, never half a snapshot).
///
/// # Errors
/// [`Error::NoSuchSnapshot`], [`Error::Io`].
pub fn remove(engine: &Engine, r: &Record, name: &str) -> Result<()> {
    check_name(name)?;
    let lock = Lock::take(&engine.paths, &r.id, true)?;
    restore::finish_locked(&engine.paths, r, lock.as_ref())?;
    let d = dir(&engine.paths, &r.id);
    let path = d.join(name);
    if read_info(&path)?.is_none() {
        return Err(Error::NoSuchSnapshot {
            container: r.name.clone(),
            name: name.into(),
        });
    }
    let gone = d.join(format!("{TMP_PREFIX}{name}-rm-{}", random_suffix()));
    fs::rename(&path, &gone).at("rename for removal", &path)?;
    fsync_dir(&d)?;
    pause_point("rm-renamed");
    remove_tree(&gone)
}

/// The number of snapshots of `r` and their total size, bytes (for `inspect`).
pub fn usage(engine: &Engine, r: &Record) -> (usize, u64) {
    let all = list(engine, r).unwrap_or_default();
    (all.len(), all.iter().map(|s| s.size).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["snap0", "before-upgrade", "a.b_c", "auto-20261203-140000"] {
            check_name(ok).unwrap();
        }
        for bad in ["", ".tmp-x", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let info = |n: &str| SnapshotInfo {
            name: n.into(),
            created: String::new(),
            expires: None,
            size: 0,
            stateful: false,
        };
        assert_eq!(next_name(&[]), "snap0");
        assert_eq!(next_name(&[info("snap0"), info("x"), info("snap4")]), "snap5");
    }
}
