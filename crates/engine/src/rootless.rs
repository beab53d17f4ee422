//! Rootless vessel (podman's rootless mode): a user who is not root runs containers
//! with state under their home and runtime dir, inside a user namespace of their own.
//!
//! A `vessel` command run by a user who is not root first enters a *session*
//! ([`enter_session`]): the user namespace and mount namespace held by the session's
//! pause process (podman's model), started by the first command: a user namespace whose
//! root is the user (container uid 0 = the user's uid) and whose ids 1..65536 are the
//! user's first `/etc/subuid` and `/etc/subgid` range (written by `newuidmap`/`newgidmap`,
//! see [`vessel_runtime::rootless`]), with a mount namespace of its own. Later commands
//! join both with one setns(2) and pay no fork or set-uid helper. Inside it the engine
//! works as it does for root: layers are unpacked with their owners (chown to ids of
//! the range), overlayfs is mounted (kernel 5.11+ allows it in a user namespace) and
//! the runtime starts containers, which share the session's user namespace (podman's
//! rootless default). Seen from the host, a file of uid 0 in an image is the user's,
//! one of uid N is subuid start + N - 1. See docs/design.md "Rootless".

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder};

use crate::error::{Error, Result};
use crate::paths::Paths;

/// The number of subordinate ids mapped above the user's own (podman's default).
pub const RANGE: u32 = 65536;

/// True when this process is not root of the host: not uid 0, or in a user namespace
/// (a rootless session). See [`vessel_runtime::rootless::is_rootless`].
pub fn is_rootless() -> bool {
    vessel_runtime::rootless::is_rootless()
}

/// `net.ipv4.ping_group_range` in a rootless session: the kernel takes only groups
/// mapped in the user namespace, so `0 N` where 0..=N are mapped without a gap (from
/// /proc/self/gid_map). None outside a session (root's value applies).
pub fn ping_group_range() -> Option<String> {
    if !is_rootless() {
        return None;
    }
    let map = std::fs::read_to_string("/proc/self/gid_map").ok()?;
    let mut ranges: Vec<(u64, u64)> = map
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
            Some((f.next()??, {
                f.next()?;
                f.next()??
            }))
        })
        .collect();
    ranges.sort_unstable();
    let mut end = 0u64;
    for (start, size) in ranges {
        if start > end {
            break;
        }
        end = end.max(start + size);
    }
    (end > 0).then(|| format!("0 {}", end - 1))
}

/// Whether the cgroup `parent` (a `--cgroup-parent`) is delegated to this rootless
/// user: a unified (v2) host where the directory under /sys/fs/cgroup is writable by
/// the caller (chowned to the user by the administrator, as systemd does with
/// `Delegate=yes`).
pub fn delegated(parent: Option<&str>) -> bool {
    let Some(parent) = parent else { return false };
    if vessel_runtime::cgroups::hierarchy() != vessel_runtime::cgroups::Hierarchy::Unified {
        return false;
    }
    let dir = Path::new(vessel_runtime::cgroups::CGROUP_ROOT).join(parent.trim_start_matches('/'));
    rustix::fs::access(&dir, rustix::fs::Access::WRITE_OK).is_ok()
}

/// The note printed when a rootless container asks for limits it cannot get.
pub const NO_LIMITS_NOTE: &str = "WARN: rootless: resource limits (--memory, --cpus, --pids-limit) are ignored: \
     no cgroup v2 subtree is delegated to this user (give one with --cgroup-parent on a cgroup v2 host; \
     cgroup v1 and hybrid hosts cannot delegate)";

/// For a rootless caller: drops `--memory`, `--cpus` and `--pids-limit` with one note
/// on stderr ([`NO_LIMITS_NOTE`]) unless `--cgroup-parent` names a delegated cgroup,
/// as podman does on hosts without delegation. Returns whether limits were dropped.
pub fn drop_undelegated_limits(opts: &mut crate::options::RunOptions) -> bool {
    if !is_rootless() {
        return false;
    }
    let asked = opts.memory.is_some_and(|m| m > 0)
        || opts.cpus.is_some_and(|c| c > 0.0)
        || opts.pids_limit.is_some_and(|p| p > 0);
    if !asked || delegated(opts.cgroup_parent.as_deref()) {
        return false;
    }
    eprintln!("{NO_LIMITS_NOTE}");
    opts.memory = None;
    opts.cpus = None;
    opts.pids_limit = None;
    true
}

/// The caller's uid as the host sees it: getuid(2) translated through
/// /proc/self/uid_map (inside a session, 0 is the user).
pub fn host_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    map.lines()
        .find_map(|l| {
            let f: Vec<u32> = l.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            match f[..] {
                [inside, outside, size] if uid >= inside && uid - inside < size => Some(outside + (uid - inside)),
                _ => None,
            }
        })
        .unwrap_or(uid)
}

/// The default state of a user who is not root, as podman chooses its own:
/// `root` = `$XDG_DATA_HOME/vessel` or `~/.local/share/vessel`; `runroot` =
/// `$XDG_RUNTIME_DIR/vessel`, or `/tmp/vessel-UID` when XDG_RUNTIME_DIR is unset.
///
/// Errors: [`Error::BadInput`] when neither XDG_DATA_HOME nor HOME is set.
pub fn default_paths(root: Option<&Path>) -> Result<Paths> {
    let uid = host_uid();
    let env_dir = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => match (env_dir("XDG_DATA_HOME"), env_dir("HOME")) {
            (Some(d), _) => d.join("vessel"),
            (None, Some(h)) => h.join(".local/share/vessel"),
            (None, None) => {
                return Err(Error::BadInput(
                    "neither XDG_DATA_HOME nor HOME is set: give vessel --root DIR".into(),
                ))
            }
        },
    };
    let runroot = match env_dir("XDG_RUNTIME_DIR") {
        Some(d) => d.join("vessel"),
        None => PathBuf::from(format!("/tmp/vessel-{uid}")),
    };
    Ok(Paths::new(root, runroot))
}

/// One line of /etc/subuid or /etc/subgid: first id and count (subuid(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    /// The first subordinate id.
    pub start: u32,
    /// How many ids follow.
    pub count: u32,
}

/// The first range of `text` (subuid(5) format: `NAME_OR_ID:START:COUNT`) that belongs
/// to the user `name` or `id`.
pub fn parse_subids(text: &str, name: &str, id: u32) -> Option<SubRange> {
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who.parse::<u32>().ok() != Some(id) {
            return None;
        }
        Some(SubRange {
            start: start.parse().ok()?,
            count: count.parse().ok()?,
        })
    })
}

/// The session's map for one kind of id: 0 = `own`, 1..=min(count, 65536) = the range.
pub fn session_map(own: u32, range: SubRange) -> Vec<LinuxIdMapping> {
    let one = |c: u32, h: u32, s: u32| {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .ok()
    };
    [one(0, own, 1), one(1, range.start, range.count.min(RANGE))]
        .into_iter()
        .flatten()
        .collect()
}

/// Reads the user's range from `file` (/etc/subuid or /etc/subgid).
fn range_of(file: &str, name: &str, id: u32) -> Result<SubRange> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::Io {
        op: "read",
        path: file.into(),
        source: e,
    })?;
    parse_subids(&text, name, id).ok_or_else(|| {
        Error::BadInput(format!(
            "{file} has no range for user {name} ({id}): rootless vessel needs one; as root, add a line \
             \"{name}:START:65536\" with a START that no other user's range overlaps (`usermod --add-subuids` \
             and `--add-subgids` do this)"
        ))
    })
}

fn sys(what: &str) -> Error {
    Error::Io {
        op: "rootless session:",
        path: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// The runroot file naming the session's pause process: `PID USERNS_INODE`.
pub const PAUSE_FILE: &str = "pause.pid";

/// Enters the rootless session (see the module's doc) of the runroot `runroot`: joins
/// the user and mount namespaces of its pause process, first starting one when none is
/// alive (podman's pause process). Must be called while the process is single-threaded
/// (before any async runtime; setns(2) into a user namespace requires it). Returns as
/// uid 0 of the session's user namespace, in its mount namespace, in the same working
/// directory.
///
/// The pause process (`vessel` forked, in its own session, every descriptor closed,
/// sleeping) holds the namespaces between commands, so that a command pays neither a
/// fork nor the two set-uid helpers once the first has run; it is found through
/// `RUNROOT/pause.pid` and checked by its user namespace's inode, and ends only when
/// killed (`kill $(cut -d' ' -f1 RUNROOT/pause.pid)`), after which the next command
/// starts another.
///
/// Errors: no /etc/subuid or /etc/subgid range for the user, a missing
/// newuidmap/newgidmap, a refused map, or a pause process that cannot be joined.
pub fn enter_session(runroot: &Path) -> Result<()> {
    let cwd = std::env::current_dir().ok();
    let lock_path = runroot.join("pause.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Io {
            op: "open",
            path: lock_path.clone(),
            source: e,
        })?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::Io {
        op: "lock",
        path: lock_path,
        source: e.into(),
    })?;
    let pause = match live_pause(runroot) {
        Some(fd) => fd,
        None => start_pause(runroot)?,
    };
    drop(lock);
    // SAFETY: setns with a pidfd this process owns and two namespace flags.
    if unsafe { libc::setns(pause.as_raw_fd(), libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return Err(sys("join the pause process's user and mount namespaces"));
    }
    // setns gave this process every capability in the session; its ids become root's
    // there (the user's own uid and gid are mapped to 0).
    // SAFETY: plain id syscalls on this single-threaded process; setgroups with an
    // empty list (allowed: newgidmap leaves setgroups "allow").
    let root = unsafe {
        libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0
            && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
            && libc::setgroups(0, std::ptr::null()) == 0
    };
    if !root {
        return Err(sys("become root of the session's user namespace"));
    }
    // Joining a mount namespace moves the working directory to its root.
    if let Some(d) = cwd {
        if std::env::set_current_dir(&d).is_err() {
            let _ = std::env::set_current_dir("/");
        }
    }
    Ok(())
}

/// The pause process named by `RUNROOT/pause.pid`, as a pidfd, when it is alive, ours
/// and still holds the user namespace recorded there.
fn live_pause(runroot: &Path) -> Option<OwnedFd> {
    let text = std::fs::read_to_string(runroot.join(PAUSE_FILE)).ok()?;
    let mut f = text.split_whitespace();
    let pid: i32 = f.next()?.parse().ok()?;
    let ino: u64 = f.next()?.parse().ok()?;
    let fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid)?,
        rustix::process::PidfdFlags::empty(),
    )
    .ok()?;
    // The pidfd pins the process: checked after it is open, the pid cannot be reused.
    let ns = std::fs::metadata(format!("/proc/{pid}/ns/user")).ok()?;
    // SAFETY: getuid cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    (ns.ino() == ino && owner == uid).then_some(fd)
}

/// Starts the pause process: a grandchild (not this command's child, so that nothing
/// waits for it) in its own session that unshares a user namespace, is mapped by
/// `newuidmap`/`newgidmap` from here, becomes its root, unshares a mount namespace
/// (slave propagation: the host's later mounts still show) and sleeps. Writes
/// `RUNROOT/pause.pid` (temp + rename) and returns a pidfd of it.
fn start_pause(runroot: &Path) -> Result<OwnedFd> {
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let uid_map = session_map(uid, range_of("/etc/subuid", &name, uid)?);
    let gid_map = session_map(gid, range_of("/etc/subgid", &name, gid)?);
    let (to_parent_r, to_parent_w) = rustix::pipe::pipe().map_err(|e| io_err("pipe", e))?;
    let (to_child_r, to_child_w) = rustix::pipe::pipe().map_err(|e| io_err("pipe", e))?;
    // SAFETY: fork in a single-threaded process (the caller's contract): the child's
    // copy of our memory, locks included, is consistent.
    let mid = unsafe { libc::fork() };
    if mid < 0 {
        return Err(sys("fork"));
    }
    if mid == 0 {
        drop(to_parent_r);
        drop(to_child_w);
        // SAFETY: setsid and fork in the single-threaded child; _exit never returns.
        unsafe {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
        }
        pause_child(to_parent_w, to_child_r);
    }
    drop(to_parent_w);
    drop(to_child_r);
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    while unsafe { libc::waitpid(mid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // The pause process says its pid and whether it has its user namespace.
    let mut msg = [0u8; 5];
    let got = read_full(&to_parent_r, &mut msg);
    let pid = i32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]);
    if !got || msg[4] != 0 || pid <= 0 {
        return Err(Error::BadInput(
            "rootless session: could not create a user namespace (is kernel.unprivileged_userns_clone or \
             user.max_user_namespaces 0?)"
                .into(),
        ));
    }
    let mapped = vessel_runtime::rootless::write_id_maps(pid, &uid_map, &gid_map).map_err(Error::from);
    let _ = rustix::io::write(&to_child_w, &[u8::from(mapped.is_err())]);
    drop(to_child_w);
    mapped?;
    let mut ready = [1u8; 1];
    if !read_full(&to_parent_r, &mut ready) || ready[0] != 0 {
        return Err(Error::BadInput(format!(
            "rootless session: the pause process {pid} could not set up its mount namespace"
        )));
    }
    let fd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).ok_or_else(|| sys("pause process pid"))?,
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|e| io_err("pidfd_open of the pause process", e))?;
    use std::os::unix::fs::MetadataExt;
    let ns = format!("/proc/{pid}/ns/user");
    let ino = std::fs::metadata(&ns)
        .map_err(|e| Error::Io {
            op: "stat",
            path: ns.into(),
            source: e,
        })?
        .ino();
    let file = runroot.join(PAUSE_FILE);
    let tmp = runroot.join(format!("{PAUSE_FILE}.{pid}"));
    std::fs::write(&tmp, format!("{pid} {ino}\n"))
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| Error::Io {
            op: "write",
            path: file,
            source: e,
        })?;
    Ok(fd)
}

/// Reads exactly `buf.len()` bytes; false on EOF or error.
fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> bool {
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::read(fd, &mut buf[n..]) {
            Ok(0) => return false,
            Ok(k) => n += k,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn io_err(what: &str, e: rustix::io::Errno) -> Error {
    Error::Io {
        op: "rootless session:",
        path: what.into(),
        source: e.into(),
    }
}

/// The pause process: new user namespace, wait for the maps, become its root, new
/// mount namespace, then sleep until killed. Never returns.
fn pause_child(to_parent: OwnedFd, from_parent: OwnedFd) -> ! {
    // SAFETY: unshare takes only flags; getpid cannot fail.
    let (unshared, pid) = unsafe { (libc::unshare(libc::CLONE_NEWUSER) == 0, libc::getpid()) };
    let mut msg = [0u8; 5];
    msg[..4].copy_from_slice(&pid.to_ne_bytes());
    msg[4] = u8::from(!unshared);
    let _ = rustix::io::write(&to_parent, &msg);
    let mut byte = [1u8; 1];
    let mapped = read_full(&from_parent, &mut byte) && byte[0] == 0;
    // SAFETY: plain id and namespace syscalls on this single-threaded process;
    // setgroups with an empty list (newgidmap leaves setgroups "allow").
    let ok = unshared
        && mapped
        && unsafe {
            libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0
                && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
                && libc::setgroups(0, std::ptr::null()) == 0
                && libc::unshare(libc::CLONE_NEWNS) == 0
        }
        && nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .is_ok();
    let _ = rustix::io::write(&to_parent, &[u8::from(!ok)]);
    if !ok {
        // SAFETY: _exit never returns.
        unsafe { libc::_exit(1) };
    }
    drop(to_parent);
    drop(from_parent);
    // Nothing of the command that started it stays open: not its pipes (a caller
    // reading them to EOF), not its working directory.
    // SAFETY: open, dup2, close_range, chdir and signal with static strings and
    // constants; pause sleeps until a signal ends the process.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::chdir(c"/".as_ptr());
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        loop {
            libc::pause();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subids_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:70000\n";
        assert_eq!(
            parse_subids(text, "alice", 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(parse_subids(text, "carol", 1001).map(|r| r.start), Some(200000));
        assert_eq!(parse_subids(text, "dave", 7), None);
        let map = session_map(1000, parse_subids(text, "bob", 1002).unwrap());
        let v: Vec<_> = map.iter().map(|m| (m.container_id(), m.host_id(), m.size())).collect();
        assert_eq!(v, vec![(0, 1000, 1), (1, 300000, 65536)]);
    }
}
