//! `exec`: a new process inside a running container (runc's exec). The runtime enters
//! the container's pid and time namespaces for its children, forks (into the cgroup2
//! directory where there is one); the child enters the container's cgroup, then its user, mount and other namespaces (setns(2)), and
//! becomes the given process with the same identity steps as the init.

use std::os::fd::OwnedFd;

use oci_spec::runtime::{LinuxNamespaceType, Process};

use crate::cgroups;
use crate::console;
#[allow(unused_imports)]
use crate::error::Context as _;
use crate::error::{Context, Error, Result};
use crate::launch::exit_child;
use crate::namespaces;
use crate::process;
use crate::state::{State, Status};
use crate::sync::{self, Msg};

/// How to run the process.
pub struct ExecOptions {
    /// The process (from `--process` or built from the command line and config.json).
    pub process: Process,
    /// Connected console socket for the pty master (with `process.terminal`).
    pub console: Option<OwnedFd>,
    /// Number of fds after stdio passed on (`--preserve-fds`).
    pub preserve_fds: u32,
    /// The container's config (its seccomp filter applies to exec'd processes too).
    pub spec: oci_spec::runtime::Spec,
    /// The cache of compiled seccomp filters ([`crate::seccomp::cache_dir`]), if any.
    pub seccomp_cache: Option<std::path::PathBuf>,
}

/// Starts the process in the container and returns its host pid once it is about to
/// execve. The caller waits for it (foreground) or leaves it (detach).
///
/// Errors: [`Error::WrongState`] unless the container is created or running;
/// [`Error::Init`] with what the process reported during set-up.
pub fn exec(state: &State, opts: ExecOptions) -> Result<i32> {
    if !matches!(state.status, Status::Running | Status::Created) {
        return Err(Error::WrongState(format!(
            "cannot exec in a {} container \"{}\": container not running",
            state.status, state.id
        )));
    }
    let nss = namespaces::of_process(state.pid);
    for (t, path) in nss
        .iter()
        .filter(|(t, _)| matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time))
    {
        namespaces::join(*t, path)?;
    }
    // Open every namespace file now, while the init's /proc entry is reachable.
    let files: Vec<(LinuxNamespaceType, std::fs::File)> = nss
        .iter()
        .filter(|(t, _)| !matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time))
        .map(|(t, p)| {
            std::fs::File::open(p)
                .map(|f| (*t, f))
                .ctx(|| format!("open {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let filter = crate::launch::spec_seccomp(&opts.spec)
        .map(|s| crate::seccomp::Filter::new(s, opts.seccomp_cache.as_deref()))
        .transpose()?;
    let cgroup = cgroups::manager(&state.cgroup_path).entry(true)?;
    let (parent_end, child_end) = sync::pair()?;
    // The child only runs the code below and leaves through execve or _exit.
    let forked = crate::launch::clone_into(0, cgroup.cgroup2_dir());
    let (pid, in_cgroup2) = match forked {
        Ok(p) => p,
        Err(err) => {
            // fork into a pid namespace whose init has exited fails with ENOMEM: the
            // container stopped between the state check and here. Say so in runc's words.
            let init_gone = crate::state::process_start_time(state.pid)
                .is_none_or(|(t, zombie)| zombie || t != state.init_start_time);
            if err.raw_os_error() == Some(libc::ENOMEM) && init_gone {
                return Err(Error::WrongState(format!(
                    "cannot exec in container \"{}\": container not running",
                    state.id
                )));
            }
            return Err(Error::sys("fork", err));
        }
    };
    if pid == 0 {
        drop(parent_end);
        let res = (|| -> Result<process::Prepared> {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            cgroup.enter(in_cgroup2)?;
            for (t, f) in &files {
                namespaces::setns(*t, f)
                    .ctx(|| format!("join the container's {} namespace", namespaces::proc_name(*t)))?;
            }
            drop(files);
            if opts.process.terminal() == Some(true) {
                nix::unistd::setsid().ctx(|| "setsid")?;
                let sock = opts
                    .console
                    .ok_or_else(|| Error::Invalid("terminal is true but no console socket was given".into()))?;
                let size = opts
                    .process
                    .console_size()
                    .as_ref()
                    .map(|b| (b.height() as u16, b.width() as u16));
                console::setup(sock, size, false)?;
            }
            crate::security::set_rlimits(opts.process.rlimits().as_deref().unwrap_or(&[]))?;
            crate::security::set_personality(&opts.spec)?;
            let prepared = process::prepare(&opts.process, opts.preserve_fds)?;
            // A notify fd must reach the runtime before Ready (see launch::init).
            if let Some(f) = filter.as_ref().filter(|f| f.notifies()) {
                if let Some(fd) = prepared.confine(Some(f))? {
                    sync::send(&child_end, &Msg::SeccompFd(fd))?;
                }
            }
            Ok(prepared)
        })();
        match res {
            Ok(prepared) => {
                let _ = sync::send(&child_end, &Msg::Ready);
                // Under the filter from here: the capability sets and execve. A failure
                // is reported if the filter lets the message through; child_end stays
                // open until execve closes it (close-on-exec): the parent's EOF means
                // the program runs.
                if !filter.as_ref().is_some_and(|f| f.notifies()) {
                    if let Err(e) = prepared.confine(filter.as_ref()) {
                        let _ = sync::send(&child_end, &Msg::Failed(e.to_string()));
                        eprintln!("vessel-oci exec: {e}");
                        exit_child(1)
                    }
                }
                let err = prepared.exec();
                eprintln!("vessel-oci exec: {err}");
                exit_child(if err.errno() == Some(libc::ENOENT) { 127 } else { 126 })
            }
            Err(e) => {
                let _ = sync::send(&child_end, &Msg::Failed(e.to_string()));
                exit_child(1)
            }
        }
    }
    drop(child_end);
    let state_json = state.to_json().to_string();
    match crate::launch::await_ready(&parent_end, &opts.spec, pid, &state_json) {
        Ok(()) => {
            // Like runc, return once the program runs (EOF at its execve), so a pid file
            // read right away names the program, not vessel-oci. Bounded, in case the
            // socket is not closed at execve (an fd below 3 + --preserve-fds).
            let mut fds = [rustix::event::PollFd::new(&parent_end, rustix::event::PollFlags::IN)];
            let timeout = rustix::time::Timespec { tv_sec: 2, tv_nsec: 0 };
            if matches!(rustix::event::poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
                if let Ok(Some(Msg::Failed(text))) = sync::recv(&parent_end) {
                    // SAFETY: kill and waitpid on our own child.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        libc::waitpid(pid, std::ptr::null_mut(), 0);
                    }
                    return Err(Error::Init(text));
                }
            }
            Ok(pid)
        }
        Err(e) => {
            // SAFETY: kill and waitpid on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            Err(e)
        }
    }
}
