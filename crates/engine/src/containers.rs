//! The container lifecycle as a user drives it (docker's and podman's commands):
//! create, start, attach, stop, kill, rm, pause, update, exec, wait, rename, and the
//! reconciliation of records with what really runs. Every operation finds the
//! container by name, id or id prefix ([`Db::find`]).
//!
//! A container's life: `create` makes its record, root file system and config.json,
//! then spawns its monitor ([`crate::monitor`]), which creates the runtime container
//! and reports back. `start` asks the monitor to start it (or spawns a new monitor
//! for a container that has exited). The monitor records the exit.

use std::io::BufRead;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use vessel_image::{ImageRecord, Store};
use vessel_runtime::{Container, Status};

use crate::config::{self, BuildInput};
use crate::db::{Db, Record, State};
use crate::error::{Error, IoContext, Result};
use crate::options::RunOptions;
use crate::paths::Paths;
use crate::rootfs::{self, Source, HOST_IMAGE};
use crate::{names, network, wire};

/// An engine instance: its paths and records.
pub struct Engine {
    /// Where everything lives.
    pub paths: Paths,
    /// The records.
    pub db: Db,
}

/// How a record compares with the processes that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The monitor runs (or nothing should run).
    Ok,
    /// The container's processes run but its monitor is gone: no exit code or logs
    /// will be recorded. `vessel system check` repairs it.
    MonitorDead,
}

fn now() -> String {
    vessel_runtime::state::now_rfc3339()
}

/// Whether `pid` is the process that started at `start` (and not a zombie).
fn alive(pid: Option<i32>, start: Option<u64>) -> bool {
    match (pid, start) {
        (Some(p), Some(s)) => vessel_runtime::state::process_start_time(p).is_some_and(|(t, zombie)| t == s && !zombie),
        (Some(p), None) => vessel_runtime::state::process_start_time(p).is_some_and(|(_, zombie)| !zombie),
        _ => false,
    }
}

impl Engine {
    /// Opens the instance at `paths` and reconciles its records.
    ///
    /// Errors: [`Error::Db`], [`Error::Io`].
    pub fn open(paths: Paths) -> Result<Engine> {
        let db = Db::open(&paths.root)?;
        let e = Engine { paths, db };
        e.reconcile()?;
        // Mounts of lazy layers whose server was killed: detached, so nothing stays stuck
        // (the next container on the layer starts a new server).
        if let Ok(store) = e.store() {
            vessel_image::lazy::reap(&store);
        }
        Ok(e)
    }

    /// The image store of this instance.
    pub fn store(&self) -> Result<Store> {
        Ok(Store::open(self.paths.store_root())?)
    }

    /// Finds a container by name, id or unique id prefix.
    pub fn find(&self, what: &str) -> Result<Record> {
        self.db.find(what)
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Result<Vec<Record>> {
        self.db.list()
    }

    /// Whether the live record `r` still has its monitor.
    pub fn health(&self, r: &Record) -> Health {
        if r.state.is_live() && !alive(r.monitor_pid, r.monitor_start) {
            Health::MonitorDead
        } else {
            Health::Ok
        }
    }

    /// The runtime container of `id`, when its state exists.
    pub(crate) fn runtime(&self, id: &str) -> Option<Container> {
        Container::load(&self.paths.oci_root(), id).ok()
    }

    /// Brings records in line with reality: a live record whose monitor is gone and
    /// whose processes have ended is marked exited (exit code unknown, -1) and its
    /// runtime state and mounts are released. Records whose processes still run are
    /// left for [`Engine::check`].
    pub fn reconcile(&self) -> Result<()> {
        for r in self.db.list()? {
            if self.health(&r) != Health::MonitorDead {
                continue;
            }
            let running = self
                .runtime(&r.id)
                .is_some_and(|c| matches!(c.state.status, Status::Running | Status::Paused | Status::Created));
            if !running {
                self.release(&r)?;
            }
        }
        Ok(())
    }

    /// Ends what a dead monitor left: runtime state, mount, run dir; records the exit.
    fn release(&self, r: &Record) -> Result<()> {
        if let Some(c) = self.runtime(&r.id) {
            c.delete(true)?;
        }
        network::down(&self.paths, r, false)?;
        rootfs::unmount(&self.paths.bundle(&r.id))?;
        let _ = std::fs::remove_dir_all(self.paths.run_dir(&r.id));
        self.db.set_exited(&r.id, None, &now())?;
        if r.options.rm {
            self.purge(r)?;
        }
        Ok(())
    }

    /// Makes a container: record, root file system, config.json, monitor. The image
    /// is looked up, and pulled with `pull` when missing. On error nothing is left.
    ///
    /// Errors: [`Error::NameInUse`], [`Error::BadInput`], image errors, and what the
    /// runtime's create reported ([`Error::CommandNotFound`] for a missing command).
    pub fn create(
        &self,
        opts: RunOptions,
        pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
    ) -> Result<Record> {
        self.make(opts, pull, true)
    }

    /// [`Engine::create`], with the monitor spawned only when `spawn`: without, the
    /// container is left exited with its files in place (a checkpoint import fills
    /// its writable layer, then restores it).
    pub(crate) fn make(
        &self,
        opts: RunOptions,
        pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
        spawn: bool,
    ) -> Result<Record> {
        let store = self.store()?;
        let source = if opts.image == HOST_IMAGE {
            Source::Host
        } else {
            match vessel_image::records::find_image(&store, &opts.image) {
                Ok(rec) => Source::Image(rec),
                Err(vessel_image::ImageError::ImageNotFound { .. }) => Source::Image(pull(&store, &opts.image)?),
                Err(e) => return Err(e.into()),
            }
        };
        let id = names::new_id()?;
        let name = match &opts.name {
            Some(n) => {
                names::check(n)?;
                n.clone()
            }
            None => names::generate(|n| self.db.find(n).is_err()),
        };
        let mut rec = Record {
            id: id.clone(),
            name,
            image: opts.image.clone(),
            image_id: String::new(),
            options: opts,
            command: Vec::new(),
            stop_signal: libc::SIGTERM,
            state: State::Exited,
            pid: None,
            monitor_pid: None,
            monitor_start: None,
            exit_code: None,
            created_at: now(),
            started_at: None,
            finished_at: None,
            oom_killed: false,
        };
        // The record first: it reserves the name (and the id range, in the same
        // transaction), and a crash from here on leaves a record that `rm` and
        // `system check` can find. A range another create took meanwhile is picked again.
        let mut tries = 0;
        loop {
            rec.options.id_mappings = crate::idmap::resolve(&self.db, &rec.options)?;
            match self.db.insert(&rec) {
                Err(Error::RangeTaken(_)) if tries < 8 => tries += 1,
                other => break other?,
            }
        }
        let made = self
            .make_bundle(&store, &mut rec, &source, &mut |_| Ok(()))
            .and_then(|()| {
                self.db
                    .set_config(&id, &rec.image_id, &rec.options, &rec.command, rec.stop_signal)?;
                if spawn {
                    self.spawn_monitor(&id)?;
                }
                Ok(())
            });
        if let Err(e) = made {
            let _ = self.purge(&rec);
            return Err(e);
        }
        // The monitor has recorded itself and the init's pid.
        self.db.get(&id)?.ok_or(Error::NoSuchContainer(id))
    }

    /// Makes the bundle of `rec` (new, with a fresh id): its root file system from
    /// `source` (mounted at `<bundle>/rootfs`), the network's files and config.json; fills
    /// in `rec.image_id`, `command` and `stop_signal`. `fill` runs once the root file system
    /// is mounted and before config.json is made from it (a restore puts the container's
    /// files in place there). The record is not written.
    ///
    /// Errors: what [`rootfs::prepare`], networking and [`config::build`] report; the caller
    /// removes what was made ([`Engine::purge`]).
    pub(crate) fn make_bundle(
        &self,
        store: &Store,
        rec: &mut Record,
        source: &Source,
        fill: &mut dyn FnMut(&Path) -> Result<()>,
    ) -> Result<()> {
        let id = rec.id.clone();
        let bundle = self.paths.bundle(&id);
        std::fs::create_dir_all(&bundle).at("create", &bundle)?;
        if let Some(size) = crate::quota::size_limit(&rec.options.storage_opt)? {
            crate::quota::create(&bundle, size)?;
        }
        crate::rootless::drop_undelegated_limits(&mut rec.options);
        if rec.options.id_mappings.is_some() {
            crate::idmap::make_searchable(&bundle, &self.paths.root)?;
        }
        let prepared = rootfs::prepare(store, &bundle, &id, source, rec.options.id_mappings.as_ref())?;
        fill(&bundle)?;
        if let Source::Image(img) = source {
            // The image's HEALTHCHECK is the default (docker's image config field, which
            // the OCI type drops: read from the blob itself).
            let raw = store.read_blob(&img.id).ok();
            let of_image = raw.as_deref().and_then(crate::health::of_image);
            rec.options.healthcheck = crate::health::with_image(rec.options.healthcheck.take(), of_image);
        }
        let exposed: Vec<String> = prepared
            .image_config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        network::prepare(&self.paths, &self.db, &mut rec.options, &exposed)?;
        crate::volumes::resolve(&self.paths, &self.db, &mut rec.options)?;
        let mut spec = config::build(&BuildInput {
            id: &id,
            opts: &rec.options,
            image_config: &prepared.image_config,
            rootfs: &prepared.rootfs,
            users_root: &prepared.users_root,
            bundle: &bundle,
            extra_mounts: prepared.extra_mounts.clone(),
        })?;
        network::apply(&self.paths, &self.db, &id, &rec.options, &mut spec)?;
        network::write_etc(&bundle, rec)?;
        let path = bundle.join("config.json");
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| Error::BadInput(format!("config.json: {e}")))?;
        write_atomic(&path, &text)?;
        rec.image_id = prepared.image_id.clone();
        rec.command = spec
            .process()
            .as_ref()
            .and_then(|p| p.args().clone())
            .unwrap_or_default();
        rec.stop_signal = config::stop_signal(&prepared.image_config);
        Ok(())
    }

    /// Spawns the monitor ([`crate::monitor::program`]: `vessel-monitor`, else
    /// `vessel __monitor ID`) in its own session and waits for its report.
    fn spawn_monitor(&self, id: &str) -> Result<i32> {
        self.spawn_monitor_with(id, None)
    }

    /// Spawns the monitor of `id`; with `restore`, it restores the container from
    /// that dir of CRIU images instead of creating it, and it runs at once. Returns
    /// the init's pid once the monitor reported it.
    pub(crate) fn spawn_monitor_with(&self, id: &str, restore: Option<&Path>) -> Result<i32> {
        let exe = crate::monitor::program().at("find own binary", "/proc/self/exe")?;
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| Error::io("pipe for", self.paths.bundle(id), e.into()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.paths.bundle(id).join("monitor.log"))
            .at("open", self.paths.bundle(id).join("monitor.log"))?;
        let mut child = Command::new(exe)
            .arg("--root")
            .arg(&self.paths.root)
            .arg("--runroot")
            .arg(&self.paths.runroot)
            .arg("__monitor")
            .arg(id)
            .args(
                restore
                    .map(|d| [std::ffi::OsStr::new("--restore"), d.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| Error::Monitor {
                id: id.into(),
                msg: format!("spawn: {e}"),
            })?;
        // One line: not up to EOF, as the init (a clone of the monitor) holds a copy of
        // the pipe until it execs.
        let mut report = String::new();
        let _ = std::io::BufReader::new(std::fs::File::from(r)).read_line(&mut report);
        let line = report.trim();
        if let Some(pid) = line.strip_prefix("ok ") {
            // The monitor lives on in its own session; init adopts it when we exit.
            std::mem::forget(child);
            return pid.parse().map_err(|_| Error::Monitor {
                id: id.into(),
                msg: format!("bad report {line:?}"),
            });
        }
        let _ = child.wait();
        if let Some(rest) = line.strip_prefix("error ") {
            let (code, msg) = rest.split_once(' ').unwrap_or(("125", rest));
            return Err(match code {
                "127" => Error::CommandNotFound(msg.into()),
                "126" => Error::CommandNotExecutable(msg.into()),
                _ => Error::Monitor {
                    id: id.into(),
                    msg: msg.into(),
                },
            });
        }
        let log = std::fs::read_to_string(self.paths.bundle(id).join("monitor.log")).unwrap_or_default();
        Err(Error::Monitor {
            id: id.into(),
            msg: format!("exited without a report: {}", log.trim()),
        })
    }

    /// Removes every trace of `r`: snapshot, bundle, run dir, record.
    pub(crate) fn purge(&self, r: &Record) -> Result<()> {
        let bundle = self.paths.bundle(&r.id);
        if let Some(c) = self.runtime(&r.id) {
            let _ = c.delete(true);
        }
        // A failed DEL (a plugin gone) must not keep the record: `system check` finds
        // the attachment again from the CNI cache.
        if let Err(e) = network::down(&self.paths, r, false) {
            eprintln!("vessel: warning: {e}");
        }
        let store = self.store()?;
        rootfs::remove(&store, &bundle, &r.id)?;
        if bundle.exists() {
            std::fs::remove_dir_all(&bundle).at("remove", &bundle)?;
        }
        let _ = std::fs::remove_dir_all(self.paths.run_dir(&r.id));
        self.db.delete(&r.id)
    }

    /// Connects to the monitor of a created container.
    fn connect(&self, r: &Record) -> Result<OwnedFd> {
        wire::connect(&self.paths.run_dir(&r.id)).map_err(|e| Error::Monitor {
            id: r.id.clone(),
            msg: format!("connect: {e}: run `vessel system check`"),
        })
    }

    fn answer(&self, r: &Record, sock: &OwnedFd) -> Result<String> {
        match wire::recv(sock) {
            Ok(Some((msg, _))) => match msg.strip_prefix("error ") {
                Some(e) if crate::error::command_exit_code(e) == Some(127) => Err(Error::CommandNotFound(e.into())),
                Some(e) if crate::error::command_exit_code(e) == Some(126) => {
                    Err(Error::CommandNotExecutable(e.into()))
                }
                Some(e) => Err(Error::Monitor {
                    id: r.id.clone(),
                    msg: e.into(),
                }),
                None => Ok(msg),
            },
            Ok(None) => Err(Error::Monitor {
                id: r.id.clone(),
                msg: "closed the connection".into(),
            }),
            Err(e) => Err(Error::Monitor {
                id: r.id.clone(),
                msg: format!("receive: {e}"),
            }),
        }
    }

    /// Makes sure a monitor holds a created runtime container for `r` (spawning one
    /// for an exited container) and returns the fresh record.
    fn ensure_created(&self, r: &Record) -> Result<Record> {
        match r.state {
            State::Created if self.health(r) == Health::Ok => Ok(r.clone()),
            State::Running | State::Paused => Err(Error::WrongState(format!(
                "container {} is already {}",
                r.name,
                r.state.as_str()
            ))),
            _ => {
                if self.health(r) == Health::MonitorDead {
                    self.release(r)?;
                }
                self.spawn_monitor(&r.id)?;
                self.db.get(&r.id)?.ok_or_else(|| Error::NoSuchContainer(r.id.clone()))
            }
        }
    }

    /// Makes an exited container created again (a monitor holding its runtime container,
    /// waiting for `start`), as `vessel create` left it. Used after a snapshot restore.
    ///
    /// Errors: [`Error::WrongState`] when it runs; the monitor's errors.
    pub fn recreate(&self, r: &Record) -> Result<()> {
        self.ensure_created(r).map(|_| ())
    }

    /// `vessel start` (detached): starts a created or exited container.
    ///
    /// Errors: [`Error::WrongState`] when it runs already; the runtime's start errors.
    pub fn start(&self, r: &Record) -> Result<()> {
        let r = self.ensure_created(r)?;
        let sock = self.connect(&r)?;
        wire::send(&sock, "start", &[]).map_err(|e| Error::Monitor {
            id: r.id.clone(),
            msg: format!("send: {e}"),
        })?;
        self.answer(&r, &sock).map(|_| ())
    }

    /// Attaches our stdin (with `stdin`), stdout and stderr to the container and, with
    /// `start`, starts it (after creating it again if it has exited). Returns the
    /// socket to wait on with [`Attached::wait`].
    pub fn attach(&self, r: &Record, stdin: bool, start: bool) -> Result<Attached> {
        let (i, o, e) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        self.attach_fds(r, stdin, start, [i.as_fd(), o.as_fd(), e.as_fd()])
    }

    /// As [`Engine::attach`], with the given stdin, stdout and stderr (pipes or
    /// sockets of an API connection): the monitor copies the container's output to
    /// `fds[1]` and `fds[2]` (a tty's output to `fds[1]` only) and, with `stdin`,
    /// `fds[0]`'s input to the container. The monitor keeps its copies until the
    /// container exits.
    pub fn attach_fds(&self, r: &Record, stdin: bool, start: bool, fds: [BorrowedFd<'_>; 3]) -> Result<Attached> {
        let r = if start { self.ensure_created(r)? } else { r.clone() };
        if !r.state.is_live() {
            return Err(Error::WrongState(format!("container {} is not running", r.name)));
        }
        let sock = self.connect(&r)?;
        let msg = format!("attach {} {}", u8::from(stdin), u8::from(start));
        wire::send(&sock, &msg, &fds).map_err(|e| Error::Monitor {
            id: r.id.clone(),
            msg: format!("send: {e}"),
        })?;
        let answer = self.answer(&r, &sock)?;
        let pid = answer
            .strip_prefix("started ")
            .and_then(|p| p.parse().ok())
            .or(r.pid)
            .unwrap_or(0);
        Ok(Attached { sock, pid, id: r.id })
    }

    /// A connection to the monitor of the live container `r` that only listens: its
    /// [`Attached::poll_exit`] (or the socket, polled) tells the exit code. What
    /// `docker wait` and the API's wait use.
    ///
    /// Errors: [`Error::WrongState`] when it is not live; [`Error::Monitor`].
    pub fn watch(&self, r: &Record) -> Result<Attached> {
        if !r.state.is_live() || self.health(r) != Health::Ok {
            return Err(Error::WrongState(format!("container {} is not running", r.name)));
        }
        let sock = self.connect(r)?;
        Ok(Attached {
            sock,
            pid: r.pid.unwrap_or(0),
            id: r.id.clone(),
        })
    }

    /// Sends `signal` to the container's init.
    ///
    /// Errors: [`Error::WrongState`] unless it is created, running or paused.
    pub fn kill(&self, r: &Record, signal: i32) -> Result<()> {
        let c = self
            .runtime(&r.id)
            .filter(|_| r.state.is_live())
            .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))?;
        Ok(c.kill(signal, false)?)
    }

    /// Waits until the container's record says exited, at most `limit`; true when it did.
    pub fn wait_exit(&self, id: &str, limit: Option<Duration>) -> Result<bool> {
        let start = Instant::now();
        loop {
            match self.db.get(id)? {
                None => return Ok(true),
                Some(r) if !r.state.is_live() => return Ok(true),
                Some(r) if self.health(&r) == Health::MonitorDead => {
                    self.reconcile()?;
                    if self.runtime(id).is_none() {
                        return Ok(true);
                    }
                }
                Some(_) => {}
            }
            if limit.is_some_and(|l| start.elapsed() >= l) {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `vessel stop`: the stop signal, then SIGKILL after `timeout`.
    pub fn stop(&self, r: &Record, timeout: Duration) -> Result<()> {
        if !r.state.is_live() {
            return Ok(());
        }
        if r.state == State::Paused {
            self.pause(r, false)?;
        }
        let sig = if r.state == State::Created {
            libc::SIGKILL
        } else {
            r.stop_signal
        };
        if self.kill(r, sig).is_err() {
            self.reconcile()?;
        }
        if !self.wait_exit(&r.id, Some(timeout))? {
            let _ = self.kill(r, libc::SIGKILL);
            if !self.wait_exit(&r.id, Some(Duration::from_secs(10)))? {
                return Err(Error::WrongState(format!(
                    "container {} did not stop after SIGKILL",
                    r.name
                )));
            }
        }
        Ok(())
    }

    /// `vessel rm`: removes an exited container; with `force` stops it first.
    ///
    /// Errors: [`Error::WrongState`] for a live container without `force`.
    pub fn remove(&self, r: &Record, force: bool) -> Result<()> {
        if r.state.is_live() && self.health(r) == Health::Ok {
            // A created container has nothing running yet: docker removes it without -f.
            if !force && r.state != State::Created {
                return Err(Error::WrongState(format!(
                    "cannot remove container {}: it is {}: stop it first or use --force",
                    r.name,
                    r.state.as_str()
                )));
            }
            if r.state == State::Paused {
                let _ = self.pause(r, false);
            }
            let _ = self.kill(r, libc::SIGKILL);
            self.wait_exit(&r.id, Some(Duration::from_secs(10)))?;
        }
        self.purge(r)
    }

    /// `pause` (true) / `unpause`.
    pub fn pause(&self, r: &Record, paused: bool) -> Result<()> {
        let c = self
            .runtime(&r.id)
            .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))?;
        c.set_paused(paused)?;
        self.db.set_paused(&r.id, paused)
    }

    /// `vessel update`: new limits on a live container's cgroup, kept in its config.json
    /// for later starts (the memory limit, cpu quota/period and pids limit given).
    pub fn update(&self, r: &Record, resources: &LinuxResources) -> Result<()> {
        let c = self
            .runtime(&r.id)
            .filter(|_| r.state.is_live())
            .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))?;
        let mut spec = self.spec(r)?;
        let mut resources = resources.clone();
        let had_swap = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.swap())
            .is_some();
        if let Some(mut m) = *resources.memory() {
            if let (Some(limit), None, true) = (m.limit(), m.swap(), had_swap) {
                // As `run --memory` made it: memory+swap twice the memory.
                m.set_swap(Some(limit.saturating_mul(2)));
                resources.set_memory(Some(m));
            }
        }
        let resources = &resources;
        vessel_runtime::cgroups::manager(&c.state.cgroup_path).set(resources)?;
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut res = linux.resources().clone().unwrap_or_default();
        if let Some(m) = resources.memory() {
            let mut mem = res.memory().unwrap_or_default();
            mem.set_limit(m.limit());
            if m.limit().is_some() {
                // A swap limit set for the old memory limit may now be below it.
                mem.set_swap(m.swap());
            }
            res.set_memory(Some(mem));
        }
        if let Some(cpu) = resources.cpu() {
            let mut old = res.cpu().clone().unwrap_or_default();
            old.set_quota(cpu.quota());
            old.set_period(cpu.period());
            res.set_cpu(Some(old));
        }
        if resources.pids().is_some() {
            res.set_pids(*resources.pids());
        }
        linux.set_resources(Some(res));
        spec.set_linux(Some(linux));
        let path = self.paths.bundle(&r.id).join("config.json");
        let text = serde_json::to_vec_pretty(&spec).map_err(|e| Error::BadInput(format!("config.json: {e}")))?;
        write_atomic(&path, &text)
    }

    /// `vessel rename`.
    pub fn rename(&self, r: &Record, name: &str) -> Result<()> {
        names::check(name)?;
        self.db.rename(&r.id, name)
    }

    /// The runtime state of a live container (for exec, top, stats).
    pub fn runtime_state(&self, r: &Record) -> Result<vessel_runtime::State> {
        self.runtime(&r.id)
            .filter(|c| matches!(c.state.status, Status::Running | Status::Paused | Status::Created))
            .map(|c| c.state)
            .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))
    }

    /// The container's config.json.
    pub fn spec(&self, r: &Record) -> Result<oci_spec::runtime::Spec> {
        Ok(vessel_runtime::spec::load(&self.paths.bundle(&r.id))?)
    }

    /// `vessel system check`: reports leftovers and, with `repair`, removes them.
    /// Returns one line per finding.
    pub fn check(&self, repair: bool) -> Result<Vec<String>> {
        let mut found = Vec::new();
        let records = self.db.list()?;
        for r in &records {
            if self.health(r) == Health::MonitorDead {
                found.push(format!(
                    "container {} ({}): its monitor is gone while its processes run",
                    r.name,
                    &r.id[..12]
                ));
                if repair {
                    if let Some(c) = self.runtime(&r.id) {
                        let _ = c.kill(libc::SIGKILL, true);
                    }
                    self.release(r)?;
                }
            }
        }
        for r in records.iter().filter(|r| !r.state.is_live()) {
            // A `create` killed before it wrote config.json left a record that can never start.
            if !self.paths.bundle(&r.id).join("config.json").exists() {
                found.push(format!(
                    "container {} ({}): half-made (no config.json)",
                    r.name,
                    &r.id[..12]
                ));
                if repair {
                    self.purge(r)?;
                }
            }
        }
        let known = |id: &str| records.iter().any(|r| r.id == id);
        for id in vessel_runtime::state::list_ids(&self.paths.oci_root()).unwrap_or_default() {
            if !known(&id) {
                found.push(format!("runtime state of unknown container {id}"));
                if repair {
                    if let Some(c) = self.runtime(&id) {
                        c.delete(true)?;
                    }
                }
            }
        }
        // The attachments that are someone's: held by a live container, or free in a pool.
        let pool = network::pool(&self.paths);
        let mut owned: Vec<String> = records
            .iter()
            .filter(|r| r.state.is_live())
            .filter_map(|r| network::held_cni_id(&self.paths, &r.id))
            .collect();
        owned.extend(pool.free_all());
        let owned = |cid: &str| owned.iter().any(|o| o == cid);
        let cni_root = network::cni_root(&self.paths);
        for (cid, net, ifname) in vessel_net::attached(&cni_root)? {
            if !owned(&cid) {
                found.push(format!("network {net}: leaked attachment ({ifname}) {cid}"));
                if repair {
                    vessel_net::detach(&cni_root, &cid, &net, &ifname, None)?;
                }
            }
        }
        for entry in std::fs::read_dir(pool.netns_dir()).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !owned(&id) {
                found.push(format!("network namespace {id} of no container"));
                if repair {
                    vessel_net::netns::remove(&entry.path())?;
                }
            }
        }
        // What killed pulls, imports and prunes left (not the files of those running now).
        let store = self.store()?;
        let partial = if repair {
            store.remove_partials()?
        } else {
            store.partials()?
        };
        if partial.count() > 0 {
            found.push(format!(
                "images: {} partial files of unfinished pulls, {:.1} MB ({} bytes), under content/tmp and snapshots/tmp",
                partial.count(),
                partial.bytes as f64 / 1e6,
                partial.bytes
            ));
        }
        let containers = self.paths.root.join("containers");
        for entry in std::fs::read_dir(&containers).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let bundle = entry.path();
            let live = records.iter().any(|r| r.id == id && r.state.is_live());
            if !live && rootfs::is_mounted(&bundle)? {
                found.push(format!("root file system of stopped container {id} still mounted"));
                if repair {
                    rootfs::unmount(&bundle)?;
                }
            }
            if !known(&id) {
                found.push(format!("bundle of unknown container {id}"));
                if repair {
                    let store = self.store()?;
                    rootfs::remove(&store, &bundle, &id)?;
                    std::fs::remove_dir_all(&bundle).at("remove", &bundle)?;
                }
            }
        }
        // Loop devices of this root's disk images (`--storage-opt size`) that no running
        // container uses: what a killed `run` or monitor left mounted.
        for (id, dev) in crate::quota::loops_under(&self.paths.root) {
            if !records.iter().any(|r| r.id == id && r.state.is_live()) {
                found.push(format!(
                    "loop device {} of container {id} ({}) not used by a running container",
                    dev.path.display(),
                    dev.backing.display()
                ));
                if repair {
                    crate::quota::release(&dev)?;
                }
            }
        }
        found.extend(crate::backup::check(&self.paths, repair)?);
        Ok(found)
    }

    /// `vessel system prune`: removes exited containers, then images no container uses,
    /// then unreferenced blobs and snapshots. Returns the removed containers' names
    /// and images.
    pub fn prune(&self) -> Result<(Vec<String>, Vec<String>)> {
        let mut gone = Vec::new();
        for r in self.db.list()? {
            if !r.state.is_live() {
                self.purge(&r)?;
                gone.push(r.name);
            }
        }
        let store = self.store()?;
        let used: Vec<String> = self.db.list()?.into_iter().map(|r| r.image_id).collect();
        let mut images = Vec::new();
        for img in store.images()? {
            if !used.contains(&img.id.to_string()) {
                let name = img.names.first().cloned().unwrap_or_else(|| img.id.to_string());
                vessel_image::records::remove_image(&store, &img.id.to_string())?;
                images.push(name);
            }
        }
        vessel_image::records::prune(&store)?;
        Ok((gone, images))
    }
}

/// A client attached to a container's monitor.
pub struct Attached {
    sock: OwnedFd,
    /// Host pid of the container's init.
    pub pid: i32,
    /// The container's id.
    pub id: String,
}

impl Attached {
    /// The socket, to poll beside signals.
    pub fn socket(&self) -> &OwnedFd {
        &self.sock
    }

    /// The socket, to own (for an async reactor); the monitor's messages are what
    /// [`Attached::poll_exit`] reads ([`parse_exit`]).
    pub fn into_socket(self) -> OwnedFd {
        self.sock
    }

    /// Asks the monitor to copy our terminal's window size to the container's pty.
    pub fn resize(&self) {
        let _ = wire::send(&self.sock, "resize", &[]);
    }

    /// Asks the monitor to set the container's pty to `rows` x `cols` (a size measured
    /// on another host: the API's resize) and waits until it has (its answer, or any
    /// message, or its end), so that a start sent next finds the size set; nothing
    /// changes without a tty.
    pub fn resize_to(&self, rows: u16, cols: u16) {
        if wire::send(&self.sock, &format!("resize {rows} {cols}"), &[]).is_ok() {
            let _ = wire::recv(&self.sock);
        }
    }

    /// Reads the monitor's next message: Some(code) when the container has exited
    /// (-1 when the monitor went away without saying).
    pub fn poll_exit(&self) -> Option<i32> {
        match wire::recv(&self.sock) {
            Ok(Some((msg, _))) => parse_exit(&msg),
            _ => Some(-1),
        }
    }
}

/// A monitor's message read from an attached socket: Some(code) for `exit CODE`
/// (-1 when the code is unreadable), None for any other message.
pub fn parse_exit(msg: &str) -> Option<i32> {
    msg.strip_prefix("exit ").map(|c| c.trim().parse().unwrap_or(-1))
}

pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(data).at("write", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    std::fs::rename(&tmp, path).at("rename", path)
}
