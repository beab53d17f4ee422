//! `exec`: a new process inside a running container (runc's exec). The runtime enters
//! the container's pid and time namespaces for its children, forks (into the cgroup2
//! directory where there is one); the child enters the container's cgroup, then its user, mount and other namespaces (setns(2)), and
//! becomes the given process with the same identity steps as the init.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

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
    /// `--cgroup` arguments: `PATH` or `CONTROLLER[,CONTROLLER...]:PATH`, sub-cgroups of
    /// the container's cgroup to run the process in (see [`SubCgroups::parse`]).
    pub sub_cgroups: Vec<String>,
    /// `--ignore-paused`: exec into a paused container (the process starts frozen and
    /// runs once the container is resumed).
    pub ignore_paused: bool,
}

/// Where `exec --cgroup` puts the process (runc 1.1's `--cgroup`): one path for every
/// hierarchy, or per v1 controller; paths are relative to the container's cgroup and
/// must exist.
#[derive(Debug, PartialEq, Eq)]
pub enum SubCgroups {
    /// The container's own cgroup.
    None,
    /// `--cgroup PATH`: this sub-cgroup in every hierarchy.
    All(PathBuf),
    /// `--cgroup CTRL[,CTRL]:PATH`, repeated: per v1 controller.
    PerController(BTreeMap<String, PathBuf>),
}

impl SubCgroups {
    /// Parses `--cgroup` arguments with runc's rules: a bare `PATH` only alone, each
    /// controller at most once, no empty controller; a path must stay below the
    /// container's cgroup (no `..`).
    ///
    /// Errors: [`Error::Invalid`] naming the argument and the rule.
    pub fn parse(args: &[String]) -> Result<SubCgroups> {
        let bad = |a: &str, why: &str| Error::Invalid(format!("invalid --cgroup argument {a:?}: {why}"));
        let rel = |a: &str, p: &str| -> Result<PathBuf> {
            let p = Path::new(p.trim_start_matches('/'));
            if p.as_os_str().is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(
                    a,
                    "the path must name a sub-cgroup below the container's cgroup, without \"..\"",
                ));
            }
            Ok(p.to_path_buf())
        };
        let mut per = BTreeMap::new();
        for a in args {
            let parts: Vec<&str> = a.splitn(3, ':').collect();
            match parts[..] {
                [path] => {
                    if args.len() != 1 {
                        return Err(bad(
                            a,
                            "missing CONTROLLER: prefix (a bare path must be the only --cgroup)",
                        ));
                    }
                    return Ok(SubCgroups::All(rel(a, path)?));
                }
                [ctrls, path] => {
                    let path = rel(a, path)?;
                    for ctrl in ctrls.split(',') {
                        if ctrl.is_empty() {
                            return Err(bad(a, "empty CONTROLLER"));
                        }
                        if per.insert(ctrl.to_string(), path.clone()).is_some() {
                            return Err(bad(a, &format!("controller {ctrl} is given more than once")));
                        }
                    }
                }
                _ => return Err(bad(a, "use PATH or CONTROLLER[,CONTROLLER...]:PATH")),
            }
        }
        Ok(if per.is_empty() {
            SubCgroups::None
        } else {
            SubCgroups::PerController(per)
        })
    }

    /// The `tasks` files (v1) the process writes "0" into after joining the container's
    /// cgroup, for per-controller paths.
    ///
    /// Errors: [`Error::Invalid`] on cgroup v2 (one hierarchy: give a bare path) or for
    /// a controller no v1 hierarchy carries; [`Error::Sys`] for a sub-cgroup that does
    /// not exist.
    fn controller_tasks(&self, container: &Path) -> Result<Vec<(PathBuf, OwnedFd)>> {
        let SubCgroups::PerController(per) = self else {
            return Ok(Vec::new());
        };
        let h = cgroups::hierarchy();
        if h == cgroups::Hierarchy::Unified {
            return Err(Error::Invalid(
                "exec --cgroup CONTROLLER:PATH is for cgroup v1 hierarchies; on this cgroup v2 host give a bare PATH"
                    .into(),
            ));
        }
        per.iter()
            .map(|(ctrl, sub)| {
                let m = cgroups::v1::Manager::new(&container.join(sub), h == cgroups::Hierarchy::Hybrid);
                let dir = m.controller_dir(ctrl).ok_or_else(|| {
                    Error::Invalid(format!(
                        "exec --cgroup {ctrl}:{}: no cgroup v1 hierarchy carries {ctrl}",
                        sub.display()
                    ))
                })?;
                let file = dir.join("tasks");
                let fd = rustix::fs::open(
                    &file,
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .ctx(|| {
                    format!(
                        "exec --cgroup {ctrl}:{}: open {} (does the sub-cgroup exist?)",
                        sub.display(),
                        file.display()
                    )
                })?;
                Ok((file, fd))
            })
            .collect()
    }
}

/// Starts the process in the container and returns its host pid once it is about to
/// execve. The caller waits for it (foreground) or leaves it (detach).
///
/// Errors: [`Error::WrongState`] unless the container is created or running;
/// [`Error::Init`] with what the process reported during set-up.
pub fn exec(state: &State, opts: ExecOptions) -> Result<i32> {
    if state.status == Status::Paused && !opts.ignore_paused {
        return Err(Error::WrongState(format!(
            "cannot exec in a paused container \"{}\" (use --ignore-paused to override)",
            state.id
        )));
    }
    if !matches!(state.status, Status::Running | Status::Created | Status::Paused) {
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
    // Host root joins the user namespace last: its capabilities cover every namespace
    // while it is still in the initial user namespace, and a namespace the host made (a
    // bridge network's netns) is not owned by the container's user namespace, so from
    // inside that one it could not be joined (setns(2): CAP_SYS_ADMIN over the owner).
    // Anyone else joins it first, to gain the capabilities to join the rest (nsenter(1)).
    let mut files = files;
    let user_last = rustix::process::geteuid().is_root();
    files.sort_by_key(|(t, _)| (*t == LinuxNamespaceType::User) == user_last);
    let filter = crate::launch::spec_seccomp(&opts.spec)
        .map(|s| crate::seccomp::Filter::new(s, opts.seccomp_cache.as_deref()))
        .transpose()?;
    let subs = SubCgroups::parse(&opts.sub_cgroups)?;
    let cgroup = match &subs {
        // Born in (or entering) the sub-cgroup of every hierarchy, which must exist.
        SubCgroups::All(sub) => cgroups::manager(&state.cgroup_path.join(sub))
            .entry(false)
            .map_err(|e| {
                Error::Invalid(format!(
                    "exec --cgroup {}: {e} (does the sub-cgroup exist?)",
                    sub.display()
                ))
            })?,
        // A rootless container without a cgroup: the process stays in the caller's.
        _ => cgroups::manager_for_create(&state.cgroup_path, None)?.entry(true)?,
    };
    let sub_tasks = subs.controller_tasks(&state.cgroup_path)?;
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
            for (file, fd) in &sub_tasks {
                rustix::io::write(fd, b"0").ctx(|| format!("join cgroup: write \"0\" to {}", file.display()))?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SubCgroups> {
        SubCgroups::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn sub_cgroup_arguments_follow_runc() {
        assert_eq!(parse(&[]).unwrap(), SubCgroups::None);
        assert_eq!(parse(&["/a/b"]).unwrap(), SubCgroups::All(PathBuf::from("a/b")));
        let per = parse(&["cpu,cpuacct:x", "memory:y"]).unwrap();
        let SubCgroups::PerController(m) = per else {
            panic!("{per:?}")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m["cpuacct"], PathBuf::from("x"));
        assert_eq!(m["memory"], PathBuf::from("y"));
        for bad in [
            &["a", "b"][..],
            &["cpu:x", "cpu:y"],
            &[":x"],
            &["cpu,:x"],
            &["a:b:c"],
            &["../x"],
            &["cpu:a/../b"],
            &[""],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
