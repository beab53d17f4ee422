//! The process chain of `create`: the runtime clones the container's init with its new
//! namespaces (born in its cgroup2 directory where there is one), writes the user
//! namespace's id maps and sets the cgroup limits while the init enters its v1
//! cgroups by itself (see [`crate::cgroups::Entry`]); the init builds its rootfs,
//! console, names, limits and identity, reports ready and blocks on the exec fifo until
//! `start` opens it, then execs the user's program (runtime-spec runtime.md
//! "Lifecycle"). Like crun, one clone and one sync socket; a second fork only when a
//! user namespace is joined by path.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::{CgroupManager, Entry};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Phase};
use crate::namespaces::{self, Plan};
use crate::process::{self, Prepared};
use crate::seccomp::{self, Filter};
use crate::security;
use crate::state::{self, Status};
use crate::sync::{self, Msg};
use crate::{console, rootfs, spec};

/// What the runtime hands to the container's init.
pub struct Launch<'a> {
    /// Container id (for the state JSON hooks and seccomp listeners receive).
    pub id: &'a str,
    /// Absolute bundle path (the init's cwd while it builds the rootfs).
    pub bundle: &'a Path,
    /// Absolute rootfs path.
    pub rootfs: &'a Path,
    /// The container's config.
    pub spec: &'a Spec,
    /// Where the init's pid goes.
    pub cgroup: &'a dyn CgroupManager,
    /// O_PATH fd of the exec fifo the init blocks on.
    pub fifo: BorrowedFd<'a>,
    /// A connected console socket for the pty master, when `process.terminal` is true.
    pub console: Option<OwnedFd>,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Number of fds after stdio passed to the program (`--preserve-fds`).
    pub preserve_fds: u32,
    /// The cache of compiled seccomp filters ([`seccomp::cache_dir`]), if any.
    pub seccomp_cache: Option<&'a Path>,
}

/// A raw clone(2) with fork semantics (no new stack: the child continues on a copy of
/// ours). Returns the child's pid in the parent and 0 in the child.
fn clone(flags: libc::c_int) -> Result<i32> {
    clone_raw(flags).map_err(|err| clone_error(flags, err))
}

fn clone_error(flags: libc::c_int, err: std::io::Error) -> Error {
    Error::sys(format!("clone with namespace flags {flags:#x}"), err)
}

fn clone_raw(flags: libc::c_int) -> std::io::Result<i32> {
    // SAFETY: with a NULL stack pointer clone behaves as fork(2); this process is
    // single-threaded (the library never starts threads), so the child's copy of our
    // memory, locks included, is consistent.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as i32)
}

/// `struct clone_args` of linux/sched.h, up to the `cgroup` field (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3(2) flag: start the child in the cgroup2 directory given by `cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone`], but the child is born in the cgroup2 directory `cgroup` when one
/// is given and the kernel takes clone3(CLONE_INTO_CGROUP) (Linux 5.7; seccomp
/// profiles may refuse clone3). Returns the pid (0 in the child) and whether the
/// child was born there; on any clone3 error it falls back to clone(2), and the child
/// then enters the cgroup by itself ([`cgroups::Entry::enter`]).
///
/// Errors: the clone(2) error.
pub(crate) fn clone_into(flags: libc::c_int, cgroup: Option<BorrowedFd<'_>>) -> std::io::Result<(i32, bool)> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: flags as u32 as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 with a zero stack behaves as fork(2) (see `clone_raw`); `args`
        // lives across the call and its size is passed with it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if rc >= 0 {
            return Ok((rc as i32, true));
        }
    }
    clone_raw(flags).map(|pid| (pid, false))
}

/// Leaves a forked child without running destructors or atexit handlers.
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Enters the pid and time namespaces the children should get (joined by path, or a
/// new time namespace with its offsets). Affects only children of this process.
/// Enters [`Plan::early_join`] too (the init inherits them with the clone). Returns the
/// namespaces to go back to once the init is cloned, so that later children of the
/// runtime (hooks) and the runtime itself stay in the runtime's own.
fn enter_for_children(spec: &Spec, plan: &Plan) -> Result<Vec<(LinuxNamespaceType, std::fs::File)>> {
    let mut saved = Vec::new();
    if plan.pid_join.is_some() {
        saved.push((
            LinuxNamespaceType::Pid,
            std::fs::File::open("/proc/self/ns/pid_for_children").ctx(|| "open pid_for_children")?,
        ));
    }
    if plan.time_join.is_some() || plan.time_new {
        saved.push((
            LinuxNamespaceType::Time,
            std::fs::File::open("/proc/self/ns/time_for_children").ctx(|| "open time_for_children")?,
        ));
    }
    for (t, p) in &plan.early_join {
        let own = format!("/proc/self/ns/{}", namespaces::proc_name(*t));
        let joined = std::fs::File::open(&own).ctx(|| format!("open {own}")).and_then(|f| {
            saved.push((*t, f));
            namespaces::join(*t, p)
        });
        if let Err(e) = joined {
            // Back where the runtime was before failing.
            for (t, f) in &saved {
                let _ = namespaces::setns(*t, f);
            }
            return Err(e);
        }
    }
    if let Some(p) = &plan.pid_join {
        namespaces::join(LinuxNamespaceType::Pid, p)?;
    }
    if let Some(p) = &plan.time_join {
        namespaces::join(LinuxNamespaceType::Time, p)?;
    } else if plan.time_new {
        namespaces::unshare(libc::CLONE_NEWTIME)?;
        namespaces::write_time_offsets(spec)?;
    }
    Ok(saved)
}

/// Starts the container's init and waits until it reports ready (blocked on the exec
/// fifo). Returns its host pid. On error the init has been killed and reaped.
///
/// Errors: what the init reported ([`Error::Init`]), or the parent-side step that
/// failed (id maps, cgroup).
pub fn launch(l: Launch<'_>) -> Result<i32> {
    let plan = Plan::new(l.spec);
    rootfs::check(l.spec)?;
    if l.spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !spec::has_namespace(l.spec, LinuxNamespaceType::Uts)
    {
        return Err(Error::Invalid(
            "hostname is set but there is no uts namespace: add one to linux.namespaces".into(),
        ));
    }
    // Compiled (or taken from the cache) here, on the host, before the init exists.
    let filter = spec_seccomp(l.spec)
        .map(|s| Filter::new(s, l.seccomp_cache))
        .transpose()?;
    let entry = l.cgroup.entry(true)?;
    let saved = enter_for_children(l.spec, &plan)?;
    let (parent_end, child_end) = sync::pair()?;
    let (first_flags, into) = match plan.user_join {
        Some(_) => (0, None),
        None => (plan.clone_flags, entry.cgroup2_dir()),
    };
    let (child, in_cgroup2) = clone_into(first_flags, into).map_err(|err| clone_error(first_flags, err))?;
    if child != 0 {
        for (t, f) in &saved {
            namespaces::setns(*t, f)
                .ctx(|| format!("return to the runtime's {} namespace", namespaces::proc_name(*t)))?;
        }
    }
    if child == 0 {
        drop(parent_end);
        let res = if plan.user_join.is_some() {
            intermediate(&l, &plan, &child_end, &entry, filter.as_ref())
        } else {
            init(l, &plan, child_end, (&entry, in_cgroup2), filter.as_ref())
        };
        exit_child(res.map_or(1, |never| match never {}))
    }
    drop(child_end);
    drop(entry);
    let mut pid = child;
    let result = (|| {
        if plan.user_join.is_some() {
            match sync::recv(&parent_end)? {
                Some(Msg::Pid(p)) => pid = p,
                Some(Msg::Failed(text)) => return Err(Error::Init(text)),
                _ => return Err(Error::Init("the intermediate process exited during set-up".into())),
            }
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child), None);
        }
        if plan.user_new {
            namespaces::write_id_maps(pid, l.spec)?;
        }
        // "created" in every create-time hook, as crun reports it (runtime-tools hooks_stdin).
        let state = state::oci_state(l.id, Status::Created, pid, l.bundle, l.spec).to_string();
        let set_limits = || l.cgroup.set(&crate::cgroups::devices::effective_resources(l.spec));
        // The init enters its cgroup by itself once it has Go (see cgroups::Entry).
        // prestart and createRuntime hooks must see the container in its cgroup and end
        // before pivot_root, so with such hooks the runtime moves it there first (the
        // slow way) and everything is in order. Otherwise the init builds its mounts
        // while the runtime sets its limits.
        let early_hooks =
            !hooks::of(l.spec, Phase::Prestart).is_empty() || !hooks::of(l.spec, Phase::CreateRuntime).is_empty();
        if early_hooks {
            l.cgroup.apply(pid)?;
            set_limits()?;
            hooks::run(l.spec, Phase::Prestart, &state)?;
            hooks::run(l.spec, Phase::CreateRuntime, &state)?;
        }
        sync::send(&parent_end, &Msg::Go(state.clone()))?;
        if !early_hooks {
            set_limits()?;
        }
        // A child that already failed has closed its end: its message is read below.
        let _ = sync::send(&parent_end, &Msg::CgroupJoined);
        await_ready(&parent_end, l.spec, pid, &state)
    })();
    if let Err(e) = result {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(e);
    }
    Ok(pid)
}

/// The `linux.seccomp` of a config.
pub(crate) fn spec_seccomp(spec: &Spec) -> Option<&oci_spec::runtime::LinuxSeccomp> {
    spec.linux().as_ref().and_then(|l| l.seccomp().as_ref())
}

/// Waits for the child's Ready, passing a seccomp notify fd on to the listener.
pub(crate) fn await_ready(sync_fd: &OwnedFd, spec: &Spec, pid: i32, state: &str) -> Result<()> {
    loop {
        match sync::recv(sync_fd)? {
            Some(Msg::Ready) => return Ok(()),
            Some(Msg::SeccompFd(fd)) => {
                if let Some(s) = spec_seccomp(spec) {
                    seccomp::send_to_listener(s, fd, pid, state)?;
                }
            }
            Some(Msg::Failed(text)) => return Err(Error::Init(text)),
            _ => return Err(Error::Init("the container process exited during set-up".into())),
        }
    }
}

/// The path for a user namespace joined by path: join it, unshare the rest so they
/// belong to it, fork the init (as a sibling, CLONE_PARENT, so the runtime can reap
/// it) and report its pid.
fn intermediate(
    l: &Launch<'_>,
    plan: &Plan,
    sync_fd: &OwnedFd,
    entry: &Entry,
    filter: Option<&Filter>,
) -> Result<Infallible> {
    let report = |e: Error| {
        let _ = sync::send(sync_fd, &Msg::Failed(e.to_string()));
        e
    };
    if let Some(p) = &plan.user_join {
        namespaces::join(LinuxNamespaceType::User, p).map_err(report)?;
    }
    namespaces::unshare(plan.clone_flags & !libc::CLONE_NEWUSER).map_err(report)?;
    let pid = clone(libc::CLONE_PARENT).map_err(report)?;
    if pid == 0 {
        // The init: the same fd continues the conversation.
        // SAFETY: dup of an fd we own; the copy is owned by the init from here on.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(libc::dup(sync_fd.as_raw_fd())) };
        let l2 = Launch {
            console: l.console.as_ref().and_then(|c| c.try_clone().ok()),
            ..*l
        };
        let res = init(l2, plan, fd, (entry, false), filter);
        exit_child(res.map_or(1, |never| match never {}))
    }
    sync::send(sync_fd, &Msg::Pid(pid))?;
    exit_child(0)
}

/// The container's init, in its new namespaces. Reports errors over `sync_fd` until
/// it is ready; after that, to stderr. `cgroup` is its cgroup and whether it was born
/// in the cgroup2 part of it.
fn init(
    l: Launch<'_>,
    plan: &Plan,
    sync_fd: OwnedFd,
    cgroup: (&Entry, bool),
    filter: Option<&Filter>,
) -> Result<Infallible> {
    let fifo = l.fifo;
    let spec = l.spec;
    match prepare_init(l, plan, &sync_fd, cgroup, filter) {
        Ok((prepared, state)) => {
            sync::send(&sync_fd, &Msg::Ready)?;
            drop(sync_fd);
            // Blocks until `start` opens the fifo for reading. The write end stays open
            // (close-on-exec) until execve, so `start` sees EOF once the program runs.
            let fifo_w = match crate::procfs::ProcFs::get().and_then(|p| p.reopen(fifo, rustix::fs::OFlags::WRONLY)) {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("vessel-oci: open the exec fifo: {e}");
                    exit_child(1)
                }
            };
            let _ = rustix::io::write(&fifo_w, b"0");
            // Under the filter from here: the capability sets, the startContainer hooks
            // (as runc runs them), execve.
            let confined = filter.is_some_and(|f| f.notifies());
            if !confined {
                if let Err(e) = prepared.confine(filter) {
                    eprintln!("vessel-oci: {e}");
                    exit_child(1)
                }
            }
            let env = spec.process().as_ref().and_then(|p| p.env().as_deref());
            if let Err(e) = hooks::run_in_container(spec, &state, env.unwrap_or(&[])) {
                eprintln!("vessel-oci: {e}");
                exit_child(1)
            }
            let err = prepared.exec();
            drop(fifo_w);
            eprintln!("vessel-oci: {err}");
            exit_child(if err.errno() == Some(libc::ENOENT) { 127 } else { 126 })
        }
        Err(e) => {
            let _ = sync::send(&sync_fd, &Msg::Failed(e.to_string()));
            Err(e)
        }
    }
}

fn prepare_init(
    l: Launch<'_>,
    plan: &Plan,
    sync_fd: &OwnedFd,
    (cgroup, in_cgroup2): (&Entry, bool),
    filter: Option<&Filter>,
) -> Result<(Prepared, String)> {
    // Go comes once the runtime has written the id maps: until then the init stays
    // dumpable, so that a runtime that is not root may open /proc/<init>/uid_map (a
    // non-dumpable process's /proc files belong to root). No process of the container
    // exists yet.
    let state = match sync::recv(sync_fd)? {
        Some(Msg::Go(state)) => state,
        _ => exit_child(1),
    };
    // Nothing in the container may open /proc/<init>/exe or fds while we are the runtime.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // After Go, so that a failure here reaches the runtime as this child's message.
    cgroup.enter(in_cgroup2)?;
    if plan.user_new || plan.user_join.is_some() {
        // Become root of the new user namespace (uid 0 must be mapped).
        // SAFETY: plain id syscalls on this single-threaded process.
        let ok = unsafe {
            libc::syscall(libc::SYS_setresgid, 0, 0, 0) == 0 && libc::syscall(libc::SYS_setresuid, 0, 0, 0) == 0
        };
        if !ok {
            return Err(Error::sys(
                "become root in the user namespace (is 0 mapped?)",
                std::io::Error::last_os_error(),
            ));
        }
    }
    for (t, p) in &plan.join {
        namespaces::join(*t, p)?;
    }
    nix::unistd::setsid().ctx(|| "setsid")?;
    let process = l
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json has no process".into()))?;
    security::set_oom_score_adj(process.oom_score_adj())?;
    security::set_rlimits(process.rlimits().as_deref().unwrap_or(&[]))?;
    std::env::set_current_dir(l.bundle).ctx(|| format!("chdir to bundle {}", l.bundle.display()))?;
    // Once the runtime says the init is in its cgroup, the cgroup namespace can be made
    // (its root is the creator's cgroup at that moment) and cgroups mounted.
    let mut joined = false;
    let mut cgroup_ready = || -> Result<()> {
        if std::mem::replace(&mut joined, true) {
            return Ok(());
        }
        match sync::recv(sync_fd)? {
            Some(Msg::CgroupJoined) => {}
            _ => exit_child(1),
        }
        if plan.cgroup_new {
            namespaces::unshare(libc::CLONE_NEWCGROUP)?;
        }
        Ok(())
    };
    // createContainer hooks start their processes in the container's cgroup.
    if !hooks::of(l.spec, Phase::CreateContainer).is_empty() {
        cgroup_ready()?;
    }
    hooks::run(l.spec, Phase::CreateContainer, &state)?;
    rootfs::prepare_with(l.spec, l.rootfs, l.no_pivot, &mut cgroup_ready)?;
    if process.terminal() == Some(true) {
        let sock = l
            .console
            .ok_or_else(|| Error::Invalid("process.terminal is true but no --console-socket was given".into()))?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        console::setup(sock, size, true)?;
    }
    // A missing cwd is made inside the new root (as runc does), before "/" may become
    // read-only; where it really leads is checked after the user change.
    if let Err(e) = std::fs::create_dir_all(process.cwd()) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(Error::sys(format!("create cwd {}", process.cwd().display()), e));
        }
    }
    rootfs::finalize_root(l.spec)?;
    security::set_names(l.spec)?;
    security::set_sysctls(l.spec)?;
    rootfs::restrict_paths(l.spec)?;
    security::set_personality(l.spec)?;
    let prepared = process::prepare(process, l.preserve_fds)?;
    // A notify fd must reach the runtime, which is waiting for Ready: such a filter is
    // loaded now, and the exec fifo is then opened and written under it (as runc does).
    if let Some(f) = filter.filter(|f| f.notifies()) {
        if let Some(fd) = prepared.confine(Some(f))? {
            sync::send(sync_fd, &Msg::SeccompFd(fd))?;
        }
    }
    Ok((prepared, state))
}
