//! Container operations of the runtime-spec's lifecycle (runtime.md "Operations"):
//! create, start, state, kill, delete, plus runc's run, list, pause and resume. Each
//! works on the state directory `<root>/<id>` and the live process.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgroups;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, Phase};
use crate::launch::{self, Launch};
use crate::state::{self, State, Status, EXEC_FIFO};
use oci_spec::runtime::Spec;

use crate::{spec, OCI_VERSION};

pub use crate::exec::ExecOptions;

/// Options of `create` (runc's flags).
#[derive(Default)]
pub struct CreateOptions {
    /// Connected console socket, for `process.terminal`.
    pub console: Option<OwnedFd>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--preserve-fds N`.
    pub preserve_fds: u32,
}

/// A container known to the runtime: its root and its state.
pub struct Container {
    /// The runtime's state root (`--root`).
    pub root: PathBuf,
    /// The state, refreshed when loaded.
    pub state: State,
}

/// Removes a half-made container's state directory unless disarmed.
struct Undo<'a> {
    dir: &'a Path,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(self.dir);
        }
    }
}

pub(crate) fn owner() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("#{uid}"))
}

impl Container {
    /// Loads a container by id.
    ///
    /// Errors: [`Error::NotExist`], [`Error::InvalidId`].
    pub fn load(root: &Path, id: &str) -> Result<Container> {
        Ok(Container {
            root: root.to_path_buf(),
            state: State::load(root, id)?,
        })
    }

    /// Every container under `root`, sorted by id. Unreadable entries are skipped.
    pub fn list(root: &Path) -> Result<Vec<Container>> {
        Ok(state::list_ids(root)?
            .iter()
            .filter_map(|id| Container::load(root, id).ok())
            .collect())
    }

    /// `create`: with the bundle's config.json (as [`spec::load`] read it), makes the
    /// state directory and the exec fifo, starts the init in its namespaces and cgroup
    /// and leaves it waiting for `start`. On any error nothing is left: no state dir,
    /// process or cgroup.
    ///
    /// Errors: [`Error::AlreadyExists`], config errors, or what the init reported.
    pub fn create(root: &Path, id: &str, bundle: &Path, spec: &Spec, opts: CreateOptions) -> Result<Container> {
        state::check_id(id)?;
        let bundle = fs::canonicalize(bundle).ctx(|| format!("bundle {}", bundle.display()))?;
        let rootfs = fs::canonicalize(spec::rootfs_path(spec, &bundle)?).ctx(|| "rootfs")?;
        let cgroup_path = cgroups::container_path(spec.linux().as_ref().and_then(|l| l.cgroups_path().as_deref()), id)?;
        fs::create_dir_all(root).ctx(|| format!("create runtime root {}", root.display()))?;
        let dir = state::dir(root, id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::AlreadyExists(id.into())),
            Err(e) => return Err(Error::sys(format!("create state dir {}", dir.display()), e)),
        }
        let mut undo = Undo { dir: &dir, armed: true };
        let fifo_path = dir.join(EXEC_FIFO);
        nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .ctx(|| format!("mkfifo {}", fifo_path.display()))?;
        // mkfifo applies the umask; the init may run as any user.
        fs::set_permissions(&fifo_path, std::os::unix::fs::PermissionsExt::from_mode(0o622))
            .ctx(|| "chmod exec fifo")?;
        let fifo = rustix::fs::open(
            &fifo_path,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| format!("open {}", fifo_path.display()))?;
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let manager = cgroups::manager_for_create(&cgroup_path, resources)?;
        let launched = launch::launch(Launch {
            id,
            bundle: &bundle,
            rootfs: &rootfs,
            spec,
            cgroup: manager.as_ref(),
            fifo: fifo.as_fd(),
            console: opts.console,
            no_pivot: opts.no_pivot,
            preserve_fds: opts.preserve_fds,
            seccomp_cache: Some(&crate::seccomp::cache_dir(root)),
        });
        let pid = match launched {
            Ok(pid) => pid,
            Err(e) => {
                let _ = manager.remove();
                return Err(e);
            }
        };
        let state = State {
            oci_version: OCI_VERSION.into(),
            id: id.into(),
            status: Status::Created,
            pid,
            bundle: bundle.clone(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            rootfs,
            created: state::now_rfc3339(),
            owner: owner(),
            init_start_time: state::process_start_time(pid).map(|(t, _)| t).unwrap_or(0),
            cgroup_path,
            post_hooks: !hooks::of(spec, Phase::Poststart).is_empty() || !hooks::of(spec, Phase::Poststop).is_empty(),
            own_pid_ns: spec::has_namespace(spec, oci_spec::runtime::LinuxNamespaceType::Pid)
                && !spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.namespaces().as_ref())
                    .is_some_and(|n| {
                        n.iter()
                            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_some())
                    }),
        };
        if let Err(e) = state.save(root) {
            // SAFETY: kill our own child's pid, just created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = manager.remove();
            return Err(e);
        }
        undo.armed = false;
        Ok(Container {
            root: root.to_path_buf(),
            state,
        })
    }

    /// `start`: releases the init blocked on the exec fifo; it then execs the program.
    ///
    /// Errors: [`Error::WrongState`] unless created; [`Error::Init`] if the init died.
    pub fn start(&mut self) -> Result<()> {
        if self.state.status != Status::Created {
            return Err(Error::WrongState(format!(
                "cannot start container \"{}\" in {} state: only a created container can start",
                self.state.id, self.state.status
            )));
        }
        let path = state::dir(&self.root, &self.state.id).join(EXEC_FIFO);
        let fifo = rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| format!("open {}", path.display()))?;
        // The init writes one byte once released, and holds the write end (close-on-exec)
        // until execve: with poststart hooks, wait for EOF, which means the program runs
        // (or the init died), so they run after the program started, as the spec says.
        let mut buf = [0u8; 16];
        let mut released = false;
        loop {
            match rustix::io::read(&fifo, &mut buf) {
                Ok(0) if released => break,
                // Without poststart hooks nothing needs the program to have started yet:
                // return once released, as runc does.
                Ok(n) if n > 0 && !self.state.post_hooks => break,
                Ok(n) if n > 0 => released = true,
                Ok(_) | Err(rustix::io::Errno::AGAIN) => {
                    if !released {
                        self.state.refresh(&self.root);
                        if self.state.status == Status::Stopped {
                            let _ = fs::remove_file(&path);
                            return Err(Error::Init(format!(
                                "the init of container \"{}\" exited before start",
                                self.state.id
                            )));
                        }
                    }
                    let mut fds = [rustix::event::PollFd::new(&fifo, rustix::event::PollFlags::IN)];
                    let timeout = rustix::time::Timespec {
                        tv_sec: 0,
                        tv_nsec: 20_000_000,
                    };
                    let _ = rustix::event::poll(&mut fds, Some(&timeout));
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(Error::sys(format!("read {}", path.display()), e)),
            }
        }
        fs::remove_file(&path).ctx(|| format!("remove {}", path.display()))?;
        self.state.status = Status::Running;
        if let Some(spec) = self.post_hooks_spec() {
            hooks::run_warn(&spec, Phase::Poststart, &self.state.to_json().to_string());
        }
        Ok(())
    }

    /// `kill`: sends `signal` to the init, or with `all` to every process of the
    /// container's cgroup.
    ///
    /// Errors: [`Error::WrongState`] ("container not running") when stopped.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        if self.state.status == Status::Stopped && !all {
            return Err(Error::WrongState(format!(
                "cannot kill container \"{}\": container not running",
                self.state.id
            )));
        }
        if all {
            let manager = cgroups::manager(&self.state.cgroup_path);
            for pid in manager.pids()? {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid, signal) };
            }
            if self.state.status == Status::Paused && signal == libc::SIGKILL {
                manager.freeze(false)?;
            }
            return Ok(());
        }
        // SAFETY: kill takes plain integers; the pid's start time was checked by refresh.
        if unsafe { libc::kill(self.state.pid, signal) } != 0 {
            return Err(Error::sys(
                format!("kill container \"{}\" (pid {})", self.state.id, self.state.pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// `delete`: removes a created or stopped container (killing a created init);
    /// with `force`, a running or paused one too. Removes its processes, cgroup and
    /// state directory.
    ///
    /// Errors: [`Error::WrongState`] for a running container without `force`.
    pub fn delete(mut self, force: bool) -> Result<()> {
        if matches!(self.state.status, Status::Running | Status::Paused) && !force {
            return Err(Error::WrongState(format!(
                "cannot delete container {} that is not stopped: {}",
                self.state.id, self.state.status
            )));
        }
        let manager = cgroups::manager(&self.state.cgroup_path);
        if self.state.status != Status::Stopped {
            // SAFETY: kill takes plain integers; refresh checked the pid's start time.
            unsafe { libc::kill(self.state.pid, libc::SIGKILL) };
            if self.state.status == Status::Paused {
                manager.freeze(false)?;
            }
            self.wait_stopped(Duration::from_secs(10));
        }
        // Without its own pid namespace the init's death does not end the others.
        for _ in 0..100 {
            let pids = manager.pids().unwrap_or_default();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill takes plain integers.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        manager.remove()?;
        let dir = state::dir(&self.root, &self.state.id);
        state::remove_dir(&dir)?;
        if let Some(spec) = self.post_hooks_spec() {
            self.state.status = Status::Stopped;
            hooks::run_warn(&spec, Phase::Poststop, &self.state.to_json().to_string());
        }
        Ok(())
    }

    /// The config, when it has poststart or poststop hooks to run.
    fn post_hooks_spec(&self) -> Option<Spec> {
        if !self.state.post_hooks {
            return None;
        }
        match spec::load(&self.state.bundle) {
            Ok(spec) => Some(spec),
            Err(e) => {
                crate::error::warn(&format!("cannot run poststart/poststop hooks: {e}"));
                None
            }
        }
    }

    /// Polls until the init is gone (or a zombie), at most `limit`.
    pub fn wait_stopped(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            self.state.refresh(&self.root);
            if self.state.status == Status::Stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// `pause` (`true`) and `resume`: freezes or thaws the container's cgroup.
    ///
    /// Errors: [`Error::WrongState`] unless running (pause) or paused (resume).
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        let want = if paused { Status::Running } else { Status::Paused };
        if self.state.status != want {
            return Err(Error::WrongState(format!(
                "container \"{}\" is {}, not {want}",
                self.state.id, self.state.status
            )));
        }
        cgroups::manager(&self.state.cgroup_path).freeze(paused)
    }
}
