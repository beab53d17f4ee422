//! Control groups: where a container's processes are placed, found again and removed
//! (runtime-spec config-linux.md "Control groups", `linux.cgroupsPath`). One
//! [`CgroupManager`] trait with a v1 implementation (which also serves hybrid hosts)
//! and a unified v2 one, chosen from what the host has mounted at /sys/fs/cgroup.
//! Resource limits (`linux.resources`), usage statistics and OOM notifications go
//! through the same trait: [`resources_v1`] and [`resources_v2`] turn the config into
//! file writes (checking the block and RDMA devices that per-device limits name with
//! `hostdevs`), [`devices`] and [`bpf`] handle device rules, [`stats`] reads usage and
//! [`events`] watches for OOM kills.

pub mod bpf;
pub mod devices;
pub mod events;
mod hostdevs;
pub mod limits;
pub mod none;
mod plan;
pub mod resources_v1;
pub mod resources_v2;
pub mod stats;
pub mod v1;
pub mod v2;

pub use events::{OomEvent, OomWatcher};
pub use stats::Stats;

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::error::{Context, Error, Result};

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// statfs(2) f_type of a cgroup v1 hierarchy.
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;

/// The error when /sys/fs/cgroup shows no hierarchy at all (an empty directory, a
/// tmpfs over it, or the sysfs that `ip netns exec` mounts afresh).
pub(crate) fn no_hierarchy() -> Error {
    Error::Invalid(format!(
        "no cgroup hierarchy is visible at {CGROUP_ROOT} in this mount namespace (it is empty or not a cgroup file system), \
         so the container cannot be given a cgroup: `ip netns exec` is a common cause, as it remounts /sys and hides the \
         hierarchies; run from a namespace that sees them (e.g. `nsenter --net=/run/netns/NAME` instead) or mount them"
    ))
}

/// Whether `path` is the root of a mounted cgroup (v1) file system, seen from here:
/// a hierarchy that mountinfo lists but another mount covers is not.
fn is_cgroup_v1(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == CGROUP_SUPER_MAGIC)
}

/// How the host mounts its cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// Only v1 hierarchies.
    Legacy,
    /// v1 controllers plus a cgroup2 at /sys/fs/cgroup/unified (systemd's hybrid mode).
    Hybrid,
    /// One cgroup2 at /sys/fs/cgroup.
    Unified,
}

/// Detects the host's cgroup layout with statfs(2) on /sys/fs/cgroup and
/// /sys/fs/cgroup/unified.
pub fn hierarchy() -> Hierarchy {
    let is_cgroup2 = |p: &str| nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC);
    if is_cgroup2(CGROUP_ROOT) {
        Hierarchy::Unified
    } else if is_cgroup2("/sys/fs/cgroup/unified") {
        Hierarchy::Hybrid
    } else {
        Hierarchy::Legacy
    }
}

/// One container's cgroup, on whatever hierarchy the host has.
pub trait CgroupManager {
    /// Creates the cgroup (in every hierarchy) and moves `pid` into it.
    fn apply(&self, pid: i32) -> Result<()>;
    /// Opens the cgroup (creating it first when `create`) for a process to enter by
    /// itself: see [`Entry`].
    ///
    /// Errors: [`Error::Sys`] naming the directory or file that could not be made or
    /// opened.
    fn entry(&self, create: bool) -> Result<Entry>;
    /// Host pids of every process in the cgroup.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Freezes (`true`) or thaws the cgroup, waiting until the kernel reports it done.
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// Removes the cgroup directories; its processes must have exited.
    fn remove(&self) -> Result<()>;
    /// Applies `linux.resources` to the existing cgroup (at create, after `apply`, and
    /// by `update`). Every value is checked before the first write, and when the kernel
    /// refuses a write the earlier ones are undone: on error nothing has changed (device
    /// rules excepted, which only create sets). Absent and zero fields are left alone.
    ///
    /// Errors: [`Error::Invalid`] naming the field (and the host's cgroup version when
    /// it cannot honour it), [`Error::Sys`] naming the refused file.
    fn set(&self, r: &LinuxResources) -> Result<()>;
    /// Current usage, in runc's `types.Stats` shape.
    fn stats(&self) -> Result<Stats>;
    /// A watcher for OOM kills in the cgroup.
    ///
    /// Errors: [`Error::Invalid`] when no memory controller serves the cgroup.
    fn oom_watcher(&self) -> Result<OomWatcher>;
}

/// The absolute cgroup path for a container: `linux.cgroupsPath` if given (relative
/// paths are taken from the hierarchy root, as runc does on v2), else `/<id>`.
///
/// Errors: [`Error::Invalid`] for a path with `..`.
pub fn container_path(cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let rel = cgroups_path.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(id));
    if rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath {} must not contain \"..\"",
            rel.display()
        )));
    }
    if rel.to_string_lossy().contains(':') {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath {} is in systemd's slice:prefix:name form, but no systemd cgroup driver runs here: use a plain path",
            rel.display()
        )));
    }
    Ok(Path::new("/").join(rel))
}

/// The manager for a container's cgroup path on this host.
pub fn manager(path: &Path) -> Box<dyn CgroupManager> {
    match hierarchy() {
        Hierarchy::Unified => Box::new(v2::Manager::new(Path::new(CGROUP_ROOT), path)),
        h => Box::new(v1::Manager::new(path, h == Hierarchy::Hybrid)),
    }
}

/// The manager for a new container's cgroup. For a rootless caller
/// ([`crate::rootless::is_rootless`]) whose cgroup cannot be made (no delegated
/// subtree, or no hierarchy visible), the container goes without one
/// ([`none::Disabled`]) when `resources` asks for no limit, as runc does.
///
/// Errors: [`Error::Invalid`] for a rootless caller that asks for limits it cannot
/// get, with the reason and the fix.
pub fn manager_for_create(path: &Path, resources: Option<&LinuxResources>) -> Result<Box<dyn CgroupManager>> {
    let m = manager(path);
    if !crate::rootless::is_rootless() {
        return Ok(m);
    }
    match m.entry(true) {
        Ok(_) => Ok(m),
        Err(e) => {
            let _ = m.remove();
            if resources.is_some_and(none::has_limits) {
                return Err(Error::Invalid(format!(
                    "linux.resources asks for limits, but this rootless container cannot have a cgroup ({e}): \
                     delegate a cgroup v2 subtree to the user (chown it) or remove the limits"
                )));
            }
            Ok(Box::new(none::Disabled::new(path)))
        }
    }
}

/// Whether the cgroup at `path` is frozen (v1 freezer.state FROZEN or v2 cgroup.freeze 1).
pub fn is_frozen(path: &Path) -> bool {
    let rel = path.strip_prefix("/").unwrap_or(path);
    match hierarchy() {
        Hierarchy::Unified => {
            fs::read_to_string(Path::new(CGROUP_ROOT).join(rel).join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
        }
        _ => fs::read_to_string(Path::new(CGROUP_ROOT).join("freezer").join(rel).join("freezer.state"))
            .is_ok_and(|s| s.trim() == "FROZEN"),
    }
}

/// A cgroup opened so that a new process can enter it by itself, without the cost of
/// being moved by another process.
///
/// A process moved by pid (a pid written into `cgroup.procs`) makes the kernel take
/// its global threadgroup lock for writing, which waits for an RCU grace period:
/// 5 to 16 ms on the development machines, the largest single cost of `create`. Two
/// ways around it (kernel cgroup.c, `cgroup_procs_write_start`; clone(2)):
/// - v1: a single-threaded process that writes "0" into a hierarchy's `tasks` file
///   moves only itself, and the kernel skips that lock;
/// - cgroup2 (unified hosts, and /sys/fs/cgroup/unified on hybrid ones):
///   clone3(CLONE_INTO_CGROUP) with [`Entry::cgroup2_dir`] places the child at birth.
///
/// The files are opened by the runtime, so the kernel checks the runtime's
/// credentials (those at open time) even when the process writing them is already in
/// a new user namespace.
#[derive(Debug)]
pub struct Entry {
    /// (path, open `tasks` file) per v1 hierarchy.
    tasks: Vec<(PathBuf, OwnedFd)>,
    /// The cgroup2 directory's `cgroup.procs` path, the directory, and that file open.
    cgroup2: Option<(PathBuf, OwnedFd, OwnedFd)>,
}

impl Entry {
    /// Opens `tasks` in each v1 directory and the cgroup2 directory `cgroup2`.
    fn open(v1: impl IntoIterator<Item = PathBuf>, cgroup2: Option<PathBuf>) -> Result<Entry> {
        use rustix::fs::{Mode, OFlags};
        let open = |p: &Path, flags: OFlags| -> Result<OwnedFd> {
            rustix::fs::open(p, flags | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| Error::sys(format!("open {}", p.display()), std::io::Error::from(e)))
        };
        let tasks = v1
            .into_iter()
            .map(|d| {
                let f = d.join("tasks");
                open(&f, OFlags::WRONLY).map(|fd| (f, fd))
            })
            .collect::<Result<_>>()?;
        let cgroup2 = match cgroup2 {
            Some(d) => {
                let dir = open(&d, OFlags::RDONLY | OFlags::DIRECTORY)?;
                let path = d.join("cgroup.procs");
                let procs = open(&path, OFlags::WRONLY)?;
                Some((path, dir, procs))
            }
            None => None,
        };
        Ok(Entry { tasks, cgroup2 })
    }

    /// The cgroup2 directory, for clone3's `cgroup` field (CLONE_INTO_CGROUP).
    pub fn cgroup2_dir(&self) -> Option<BorrowedFd<'_>> {
        self.cgroup2.as_ref().map(|(_, dir, _)| dir.as_fd())
    }

    /// Moves the calling process, which must be single-threaded, into the cgroup:
    /// "0" into every v1 `tasks` file, and into the cgroup2 `cgroup.procs` unless the
    /// process was born there (`in_cgroup2`, from clone3).
    ///
    /// Errors: [`Error::Sys`] naming the file the kernel refused.
    pub fn enter(&self, in_cgroup2: bool) -> Result<()> {
        let v2 = self
            .cgroup2
            .iter()
            .filter(|_| !in_cgroup2)
            .map(|(path, _, procs)| (path, procs));
        for (path, fd) in self.tasks.iter().map(|(p, fd)| (p, fd)).chain(v2) {
            rustix::io::write(fd, b"0").map_err(|e| {
                Error::sys(
                    format!("join cgroup: write \"0\" to {}", path.display()),
                    std::io::Error::from(e),
                )
            })?;
        }
        Ok(())
    }
}

/// Reads a cgroup.procs file into pids.
fn read_pids(file: &Path) -> Result<Vec<i32>> {
    match fs::read_to_string(file) {
        Ok(s) => Ok(s.lines().filter_map(|l| l.trim().parse().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(Error::sys(format!("read {}", file.display()), e)),
    }
}

/// Writes a value into a cgroup file, naming the file on failure.
fn write(file: &Path, value: &str) -> Result<()> {
    fs::write(file, value).ctx(|| format!("write {value:?} to {}", file.display()))
}

/// Removes a cgroup directory, retrying while the kernel still counts exiting tasks
/// (EBUSY until a dead init is reaped): first after 0.1 ms, doubling up to 10 ms, for at
/// most about 2 s. A directory already gone is fine.
fn rmdir(dir: &Path) -> Result<()> {
    let mut wait = std::time::Duration::from_micros(100);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && std::time::Instant::now() < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("remove cgroup {} (processes left in it?)", dir.display()),
                    e,
                ))
            }
        }
    }
}
