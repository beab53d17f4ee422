//! Namespaces (runtime-spec config-linux.md "Namespaces", "User namespace mappings",
//! "Offset for Time Namespace"; namespaces(7), setns(2), user_namespaces(7),
//! time_namespaces(7)): which to create with clone(2), which to join by path, the id
//! maps of a new user namespace and the clock offsets of a new time namespace.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};
use crate::procfs::ProcFs;

/// The clone(2)/setns(2) flag of a namespace type.
pub fn flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The file name of a namespace type under /proc/PID/ns.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// What the container's namespaces need, split by who does it and when.
#[derive(Debug, Default)]
pub struct Plan {
    /// Namespaces created by clone(2) itself (user, mount, uts, ipc, net, cgroup, pid),
    /// when no user namespace is joined by path.
    pub clone_flags: libc::c_int,
    /// A new user namespace: the parent writes its id maps before the child goes on.
    pub user_new: bool,
    /// A user namespace to join: the child joins it first, then unshares the others so
    /// they belong to it, and forks the init when a new pid namespace is asked for.
    pub user_join: Option<PathBuf>,
    /// A pid namespace to join: the parent enters it for its children before cloning.
    pub pid_join: Option<PathBuf>,
    /// A new time namespace: the parent unshares it for its children and writes offsets.
    pub time_new: bool,
    /// A time namespace to join (for the children of the parent, like pid).
    pub time_join: Option<PathBuf>,
    /// The other namespaces to join by path, in the child, after the user namespace.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// With a new user namespace: the network, ipc, uts and cgroup namespaces to join by
    /// path, which the parent enters for the clone (as runc joins them before it unshares
    /// the user namespace): from inside the new user namespace the init has no capability
    /// over namespaces that the host's user namespace owns, so setns there would fail.
    pub early_join: Vec<(LinuxNamespaceType, PathBuf)>,
    /// A new cgroup namespace: the init unshares it once it is in its cgroup, since a
    /// cgroup namespace's root is the cgroup its creator was in at that moment.
    pub cgroup_new: bool,
}

impl Plan {
    /// Reads the plan from config.json's `linux.namespaces`.
    pub fn new(spec: &Spec) -> Plan {
        let mut plan = Plan::default();
        let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
        for ns in namespaces.into_iter().flatten() {
            let t = ns.typ();
            match (t, ns.path()) {
                (LinuxNamespaceType::User, Some(p)) => plan.user_join = Some(p.clone()),
                (LinuxNamespaceType::User, None) => plan.user_new = true,
                (LinuxNamespaceType::Pid, Some(p)) => plan.pid_join = Some(p.clone()),
                (LinuxNamespaceType::Time, Some(p)) => plan.time_join = Some(p.clone()),
                (LinuxNamespaceType::Time, None) => plan.time_new = true,
                (t, Some(p)) => plan.join.push((t, p.clone())),
                (LinuxNamespaceType::Cgroup, None) => plan.cgroup_new = true,
                (t, None) => plan.clone_flags |= flag(t),
            }
        }
        if plan.user_new {
            plan.clone_flags |= libc::CLONE_NEWUSER;
            let early = |t: &LinuxNamespaceType| {
                matches!(
                    t,
                    LinuxNamespaceType::Network
                        | LinuxNamespaceType::Ipc
                        | LinuxNamespaceType::Uts
                        | LinuxNamespaceType::Cgroup
                )
            };
            let (e, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.join).into_iter().partition(|(t, _)| early(t));
            plan.early_join = e;
            plan.join = rest;
        }
        plan
    }

    /// Whether the container gets a new pid namespace (its init is pid 1 there).
    pub fn new_pid_ns(&self) -> bool {
        self.clone_flags & libc::CLONE_NEWPID != 0
    }
}

/// Joins the namespace at `path` with setns(2).
///
/// Errors: [`Error::Sys`] naming the path and namespace type.
pub fn join(t: LinuxNamespaceType, path: &Path) -> Result<()> {
    let file = fs::File::open(path).ctx(|| format!("open {} namespace {}", proc_name(t), path.display()))?;
    setns(t, &file).ctx(|| format!("join {} namespace {}", proc_name(t), path.display()))
}

/// setns(2) on an open namespace file.
pub fn setns(t: LinuxNamespaceType, fd: impl AsFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns takes a valid open fd (borrowed for the call) and a flag; it touches no memory of ours.
    let rc = unsafe { libc::setns(fd.as_fd().as_raw_fd(), flag(t)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// unshare(2) with the given CLONE_NEW* flags.
pub fn unshare(flags: libc::c_int) -> Result<()> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(Error::sys(
            format!("unshare namespaces {flags:#x}"),
            std::io::Error::last_os_error(),
        ))
    }
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes `linux.uidMappings` and `linux.gidMappings` into /proc/PID/uid_map and
/// gid_map of a child that made a new user namespace (user_namespaces(7)). A caller
/// that is not root goes through [`crate::rootless::write_id_maps`] (newuidmap).
///
/// Errors: [`Error::Sys`] naming the map file; the kernel refuses overlapping ranges
/// and more than 340 lines.
pub fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        let uid = linux.and_then(|l| l.uid_mappings().as_deref()).unwrap_or(&[]);
        let gid = linux.and_then(|l| l.gid_mappings().as_deref()).unwrap_or(&[]);
        return crate::rootless::write_id_maps(pid, uid, gid);
    }
    let uid = linux
        .and_then(|l| l.uid_mappings().as_ref())
        .map(|m| map_text(m))
        .unwrap_or_default();
    let gid = linux
        .and_then(|l| l.gid_mappings().as_ref())
        .map(|m| map_text(m))
        .unwrap_or_default();
    for (file, text) in [("uid_map", uid), ("gid_map", gid)] {
        if text.is_empty() {
            continue;
        }
        ProcFs::get()?
            .write_pid(pid, file, text.as_bytes())
            .map_err(|e| match e {
                Error::Sys { context, source } => {
                    Error::sys(format!("{context} ({})", text.trim().replace('\n', ", ")), source)
                }
                e => e,
            })?;
    }
    Ok(())
}

/// Writes `linux.timeOffsets` into /proc/self/timens_offsets after unsharing a time
/// namespace (effective for children only, before any process enters it).
///
/// Errors: [`Error::Invalid`] for a clock other than monotonic or boottime.
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offsets) = spec.linux().as_ref().and_then(|l| l.time_offsets().as_ref()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::Invalid(format!(
                "linux.timeOffsets: unknown clock {clock:?}: use monotonic or boottime"
            )));
        }
        text.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    ProcFs::get()?
        .write_self("timens_offsets", text.as_bytes())
        .map_err(|e| match e {
            Error::Sys { context, source } => Error::sys(format!("{context} ({})", text.trim()), source),
            e => e,
        })
}

/// The namespaces of a running process that differ from our own, as (type, path) in
/// the order `exec` joins them: user first, then mount and the rest. Pid and time are
/// listed too; the caller enters them for its children.
pub fn of_process(pid: i32) -> Vec<(LinuxNamespaceType, PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let order = [
        LinuxNamespaceType::User,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Time,
    ];
    order
        .into_iter()
        .filter_map(|t| {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{}", proc_name(t)));
            let a = fs::metadata(&theirs).ok()?;
            let b = fs::metadata(format!("/proc/self/ns/{}", proc_name(t))).ok()?;
            (a.ino() != b.ino() || a.dev() != b.dev()).then_some((t, theirs))
        })
        .collect()
}
