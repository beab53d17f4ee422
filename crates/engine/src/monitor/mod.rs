//! The per-container monitor (podman's conmon, docs/design.md "Processes"): the small
//! `vessel-monitor` binary beside `vessel` (or, without it, the `vessel` binary
//! re-executed as `vessel __monitor ID`; see [`program`]), single-threaded, in its own
//! session.
//! It creates the container through vessel-runtime (so it is the init's parent),
//! then stays to reap it, write its output to the log, carry its pty and stdio to
//! attached clients, and record the exit code; after the exit it deletes the runtime
//! state, unmounts the root file system and, with `--rm`, removes the container.
//!
//! It reports the outcome of `create` on its stdout (a pipe from the CLI that spawned
//! it): `ok PID` or `error CODE MESSAGE`, then closes it. After that it answers on its
//! attach socket ([`crate::wire`]).

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use vessel_runtime::checkpoint::RestoreOptions;
use vessel_runtime::{Container, CreateOptions};

use crate::db::{Db, Record};
use crate::error::{classify, Error, Result};
use crate::logs::{LogWriter, Stream};
use crate::paths::Paths;
use crate::{network, rootfs, wire};

mod healthcheck;
mod memory;

/// The container's side of its stdio, as the monitor holds it.
enum Stdio {
    /// `-t`: the pty master.
    Pty(OwnedFd),
    /// Pipes: the write end of stdin (with `-i`), the read ends of stdout and stderr.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
}

/// A client attached through the socket.
struct Client {
    sock: OwnedFd,
    /// The client's terminal (its stdin as sent), for the window size.
    term: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

fn now() -> String {
    vessel_runtime::state::now_rfc3339()
}

fn devnull() -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Makes the init's stdio and calls the runtime's create with it as our fds 0-2, or,
/// with `restore` (a dir of CRIU images), restores the container from it: CRIU
/// reconnects the dumped init's stdio pipes to the new ones, or its terminal to a new
/// pty whose master comes back over the console socket as after create (see
/// [`vessel_runtime::checkpoint`]), and the restored init is our child.
fn create(paths: &Paths, rec: &Record, restore: Option<&Path>) -> Result<(Container, Stdio)> {
    let bundle = paths.bundle(&rec.id);
    let mut spec = vessel_runtime::spec::load(&bundle)?;
    network::up(paths, rec, &mut spec)?;
    let made = create_with(paths, rec, &spec, restore);
    match &made {
        Ok((c, _)) => {
            if let Err(e) = network::after_create(paths, rec, c.state.pid) {
                let (c, _) = made?;
                let _ = c.delete(true);
                let _ = network::down(paths, rec, false);
                return Err(e);
            }
        }
        Err(_) => {
            let _ = network::down(paths, rec, false);
        }
    }
    made
}

/// The runtime's create with the init's stdio made here.
fn create_with(
    paths: &Paths,
    rec: &Record,
    spec: &oci_spec::runtime::Spec,
    restore: Option<&Path>,
) -> Result<(Container, Stdio)> {
    let bundle = paths.bundle(&rec.id);
    let null = devnull().map_err(|e| Error::io("open", "/dev/null", e))?;
    let io = |e: std::io::Error| Error::io("set up stdio of", bundle.clone(), e);
    let set_stdio = |i: BorrowedFd<'_>, o: BorrowedFd<'_>, e: BorrowedFd<'_>| -> std::io::Result<()> {
        rustix::stdio::dup2_stdin(i)?;
        rustix::stdio::dup2_stdout(o)?;
        rustix::stdio::dup2_stderr(e)?;
        Ok(())
    };
    let (console, stdio, theirs) = if rec.options.tty {
        let (ours, theirs) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| io(e.into()))?;
        set_stdio(null.as_fd(), null.as_fd(), null.as_fd()).map_err(io)?;
        (Some(theirs), None, Some(ours))
    } else {
        let (out_r, out_w) = pipe().map_err(io)?;
        let (err_r, err_w) = pipe().map_err(io)?;
        let (in_r, in_w) = if rec.options.interactive {
            let (r, w) = pipe().map_err(io)?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        // In a user namespace the pipes go to the container's root, as runc's
        // fixStdioPermissions does: a process there may then reopen them
        // (`echo x > /proc/1/fd/1`, a common way to write to the container's log).
        if let Some(ids) = &rec.options.id_mappings {
            let root = crate::idmap::to_host(&ids.uid, 0).zip(crate::idmap::to_host(&ids.gid, 0));
            if let Some((uid, gid)) = root {
                let owner = (
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                );
                for fd in [Some(&out_w), Some(&err_w), in_r.as_ref()].into_iter().flatten() {
                    rustix::fs::fchown(fd, owner.0, owner.1).map_err(|e| io(e.into()))?;
                }
            }
        }
        set_stdio(
            in_r.as_ref().map_or(null.as_fd(), |f| f.as_fd()),
            out_w.as_fd(),
            err_w.as_fd(),
        )
        .map_err(io)?;
        (
            None,
            Some(Stdio::Pipes {
                stdin: in_w,
                stdout: Some(out_r),
                stderr: Some(err_r),
            }),
            None,
        )
    };
    let oci_root = paths.oci_root();
    crate::timing::mark("monitor: runtime create or restore");
    let created = match restore {
        None => Container::create(
            &oci_root,
            &rec.id,
            &bundle,
            spec,
            CreateOptions {
                console,
                ..Default::default()
            },
        ),
        Some(images) => vessel_runtime::checkpoint::restore(
            &oci_root,
            &rec.id,
            &bundle,
            spec,
            RestoreOptions {
                image_path: images.to_path_buf(),
                // Harmless without such connections in the images; needed with them.
                tcp_established: true,
                // With -t: the runtime sends the new pty's master here.
                console,
                ..Default::default()
            },
        ),
    };
    crate::timing::mark("monitor: runtime done");
    // Our own stdio goes back to /dev/null: only the init keeps the pipes' write ends.
    set_stdio(null.as_fd(), null.as_fd(), null.as_fd()).map_err(io)?;
    let c = created.map_err(classify)?;
    let stdio = match (stdio, theirs) {
        (Some(s), _) => s,
        (None, Some(sock)) => match vessel_runtime::console::recv_fd(&sock) {
            Ok(m) => Stdio::Pty(m),
            Err(e) => {
                let _ = c.delete(true);
                return Err(e.into());
            }
        },
        (None, None) => unreachable!("either pipes or a console socket were made"),
    };
    Ok((c, stdio))
}

/// The name of the small monitor binary, installed beside `vessel`.
pub const PROGRAM: &str = "vessel-monitor";

/// The program to start as a container's monitor: [`PROGRAM`] beside the running
/// binary (the small monitor of crates/cli/src/bin/vessel-monitor.rs) when it is there,
/// else the running binary itself (`vessel __monitor`: the whole CLI serves as a
/// monitor too, at the cost of more private memory per container), so a `vessel`
/// copied alone still works. Both take `--root ROOT --runroot RUNROOT __monitor ID`.
///
/// Errors: the running binary cannot be found (/proc/self/exe unreadable).
pub fn program() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let small = exe.with_file_name(PROGRAM);
    Ok(if small.is_file() { small } else { exe })
}

/// Entry point of `vessel __monitor ID [--restore DIR]` and `vessel-monitor`. Never
/// returns: exits the process.
pub fn main(paths: &Paths, id: &str, restore: Option<&Path>) -> ! {
    memory::one_arena();
    // The CLI's pipe for the create report; our fd 1 is reused for the init below.
    let report = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3).ok();
    let _ = rustix::process::setsid();
    let code = match run(paths, id, report, restore) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vessel monitor {id}: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn send_report(report: &mut Option<OwnedFd>, line: &str) {
    if let Some(fd) = report.take() {
        let mut f = std::fs::File::from(fd);
        let _ = f.write_all(line.as_bytes());
    }
}

fn block_signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| Error::io("block signals", "", e.into()))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::io("signalfd", "", e.into()))
}

fn run(paths: &Paths, id: &str, mut report: Option<OwnedFd>, restore: Option<&Path>) -> Result<()> {
    let result = (|| {
        vessel_runtime::sealed_exe::ensure()?;
        crate::timing::mark("monitor: started");
        let signals = block_signals()?;
        let rec = Db::open(&paths.root)?
            .get(id)?
            .ok_or_else(|| Error::NoSuchContainer(id.into()))?;
        let store = vessel_image::Store::open(&paths.root)?;
        let bundle = paths.bundle(id);
        // A snapshot restore killed part way is finished before its files are used.
        crate::snapshots::finish_pending(paths, &rec)?;
        rootfs::mount(
            &store,
            &bundle,
            id,
            rec.image_id == rootfs::HOST_IMAGE,
            rec.options.id_mappings.as_ref(),
        )?;
        if let Err(e) = rootfs::idmapped_volumes::mount(&bundle, &rec.options.volumes, rec.options.id_mappings.as_ref())
        {
            let _ = rootfs::unmount(&bundle);
            return Err(e);
        }
        let run_dir = paths.run_dir(id);
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io("create", &run_dir, e))?;
        let listener = wire::listen(&run_dir).map_err(|e| Error::io("listen on socket in", &run_dir, e))?;
        crate::timing::mark("monitor: root file system mounted");
        let (c, stdio) = match create(paths, &rec, restore) {
            Ok(v) => v,
            Err(e) => {
                let _ = rootfs::unmount(&bundle);
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(e);
            }
        };
        Ok((signals, rec, listener, c, stdio))
    })();
    let (signals, rec, listener, c, stdio) = match result {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            send_report(&mut report, &format!("error {} {msg}\n", e.exit_code()));
            return Err(e);
        }
    };
    let pid = c.state.pid;
    let me = std::process::id() as i32;
    let db = Db::open(&paths.root)?;
    db.set_created(
        id,
        pid,
        me,
        vessel_runtime::state::process_start_time(me).map(|(t, _)| t),
    )?;
    if restore.is_some() {
        db.set_running(id, &now())?;
    }
    drop(db);
    crate::timing::mark("monitor: recorded; report");
    send_report(&mut report, &format!("ok {pid}\n"));
    let mut m = Monitor {
        paths,
        rec,
        container: Some(c),
        stdio,
        clients: Vec::new(),
        log: LogWriter::open(&paths.log(id))?,
        // Allocated at the first output: an idle container's monitor never needs it.
        buf: Vec::new(),
        health: None,
    };
    // Set-up ran the runtime, SQLite and serde: give back what the wait loop does not need.
    memory::release();
    let code = m.serve(&signals, &listener, pid);
    m.finish(code);
    Ok(())
}

struct Monitor<'a> {
    paths: &'a Paths,
    rec: Record,
    container: Option<Container>,
    stdio: Stdio,
    clients: Vec<Client>,
    log: LogWriter,
    buf: Vec<u8>,
    /// The healthcheck timer, once the container runs and when it has one.
    health: Option<healthcheck::Timer>,
}

/// What one poll entry stands for.
#[derive(Clone, Copy)]
enum Src {
    Signals,
    Listener,
    Out(Stream),
    ClientSock(usize),
    ClientStdin(usize),
    Health,
}

impl Monitor<'_> {
    /// Serves until the init exits; returns its exit code.
    fn serve(&mut self, signals: &SignalFd, listener: &OwnedFd, pid: i32) -> i32 {
        loop {
            let mut srcs = vec![Src::Signals, Src::Listener];
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            ];
            self.out_fds(&mut srcs, &mut fds);
            for (i, c) in self.clients.iter().enumerate() {
                srcs.push(Src::ClientSock(i));
                fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
                if let Some(s) = &c.stdin {
                    srcs.push(Src::ClientStdin(i));
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
            }
            if let Some(p) = self.health.as_ref().and_then(|h| h.pipe()) {
                srcs.push(Src::Health);
                fds.push(PollFd::new(p, PollFlags::POLLIN));
            }
            // The next healthcheck probe bounds the wait.
            let timeout = match self.health.as_ref().and_then(|h| h.wait()) {
                Some(d) => PollTimeout::try_from(d.as_millis().min(60_000) as u32 + 1).unwrap_or(PollTimeout::MAX),
                None => PollTimeout::NONE,
            };
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    return -1;
                }
            }
            let ready = ready(&fds, &srcs);
            drop(fds);
            let mut drop_clients = Vec::new();
            for src in ready {
                match src {
                    Src::Signals => {
                        while let Ok(Some(_)) = signals.read_signal() {}
                        let mut others = Vec::new();
                        let init = reap(pid, &mut others);
                        if let Some(h) = self.health.as_mut() {
                            for (child, code) in others {
                                if h.owns(child) {
                                    h.ended(self.paths, &self.rec.id, code);
                                }
                            }
                        }
                        if let Some(code) = init {
                            self.drain(Duration::from_secs(2));
                            return code;
                        }
                    }
                    Src::Health => {
                        if let Some(h) = self.health.as_mut() {
                            h.read();
                        }
                    }
                    Src::Listener => self.accept(listener),
                    Src::Out(stream) => {
                        self.pump(stream);
                    }
                    Src::ClientSock(i) => {
                        if !self.request(i) {
                            drop_clients.push(i);
                        }
                        // A start ran through the runtime and SQLite: let those pages go.
                        memory::release();
                    }
                    Src::ClientStdin(i) => self.feed(i),
                }
            }
            drop_clients.sort_unstable();
            for i in drop_clients.into_iter().rev() {
                self.clients.remove(i);
            }
            if let Some(h) = self.health.as_mut() {
                h.tick(self.paths, &self.rec);
            }
        }
    }

    fn out_fds<'b>(&'b self, srcs: &mut Vec<Src>, fds: &mut Vec<PollFd<'b>>) {
        match &self.stdio {
            Stdio::Pty(m) => {
                srcs.push(Src::Out(Stream::Stdout));
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            Stdio::Pipes { stdout, stderr, .. } => {
                for (fd, s) in [(stdout, Stream::Stdout), (stderr, Stream::Stderr)] {
                    if let Some(fd) = fd {
                        srcs.push(Src::Out(s));
                        fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                    }
                }
            }
        }
    }

    /// Copies one chunk of the container's output to the log and the clients; false at EOF.
    fn pump(&mut self, stream: Stream) -> bool {
        let fd = match (&self.stdio, stream) {
            (Stdio::Pty(m), _) => Some(m.as_fd()),
            (Stdio::Pipes { stdout, .. }, Stream::Stdout) => stdout.as_ref().map(|f| f.as_fd()),
            (Stdio::Pipes { stderr, .. }, Stream::Stderr) => stderr.as_ref().map(|f| f.as_fd()),
        };
        let Some(fd) = fd else { return false };
        match rustix::io::read(fd, io_buf(&mut self.buf)) {
            Ok(n) if n > 0 => {
                let data = &self.buf[..n];
                self.log.write(stream, data);
                for c in &self.clients {
                    let out = match stream {
                        Stream::Stdout => &c.stdout,
                        Stream::Stderr => &c.stderr,
                    };
                    if let Some(o) = out {
                        write_all(o.as_fd(), data);
                    }
                }
                true
            }
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => true,
            _ => {
                // EOF (or EIO from a pty whose last slave closed).
                match &mut self.stdio {
                    Stdio::Pty(_) => return false,
                    Stdio::Pipes { stdout, stderr, .. } => match stream {
                        Stream::Stdout => *stdout = None,
                        Stream::Stderr => *stderr = None,
                    },
                }
                false
            }
        }
    }

    /// Reads what is left of the output after the init's exit, until EOF or `limit`.
    fn drain(&mut self, limit: Duration) {
        let start = Instant::now();
        if let Stdio::Pty(m) = &self.stdio {
            let _ = rustix::fs::fcntl_setfl(m, rustix::fs::OFlags::NONBLOCK);
        }
        while start.elapsed() < limit {
            let mut srcs = Vec::new();
            let mut fds = Vec::new();
            self.out_fds(&mut srcs, &mut fds);
            if fds.is_empty() {
                return;
            }
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) => return,
            }
            let ready = ready(&fds, &srcs);
            drop(fds);
            for s in ready {
                if let Src::Out(stream) = s {
                    if !self.pump(stream) && matches!(self.stdio, Stdio::Pty(_)) {
                        return;
                    }
                }
            }
        }
    }

    fn accept(&mut self, listener: &OwnedFd) {
        if let Ok(sock) = rustix::net::accept_with(listener, rustix::net::SocketFlags::CLOEXEC) {
            self.clients.push(Client {
                sock,
                term: None,
                stdin: None,
                stdout: None,
                stderr: None,
            });
        }
    }

    /// Handles one message of client `i`; false when the client has gone.
    fn request(&mut self, i: usize) -> bool {
        let Ok(Some((msg, mut fds))) = wire::recv(&self.clients[i].sock) else {
            return false;
        };
        let words: Vec<&str> = msg.split_whitespace().collect();
        match words.as_slice() {
            ["start"] => self.start(i),
            ["attach", stdin, start] => {
                if fds.len() == 3 {
                    let err = fds.pop();
                    let out = fds.pop();
                    let inp = fds.pop();
                    let c = &mut self.clients[i];
                    c.stdout = out;
                    c.stderr = err;
                    if *stdin == "1" {
                        c.stdin = inp.as_ref().and_then(|f| f.try_clone().ok());
                    }
                    c.term = inp;
                }
                if *start == "1" {
                    self.start(i);
                } else {
                    self.reply(i, "attached");
                }
            }
            ["resize"] => self.resize(i),
            ["resize", rows, cols] => {
                self.resize_to(rows, cols);
                self.reply(i, "resized");
            }
            _ => self.reply(i, "error unknown request"),
        }
        true
    }

    fn reply(&self, i: usize, msg: &str) {
        let _ = wire::send(&self.clients[i].sock, msg, &[]);
    }

    /// Copies client `i`'s terminal size (from its stdin, else its stdout) to the pty.
    fn resize(&self, i: usize) {
        let Stdio::Pty(m) = &self.stdio else { return };
        let c = &self.clients[i];
        let ws = [c.term.as_ref(), c.stdout.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|f| rustix::termios::tcgetwinsize(f).ok());
        if let Some(ws) = ws {
            let _ = rustix::termios::tcsetwinsize(m, ws);
        }
    }

    /// Sets the pty's size to `rows` x `cols` as a client measured it elsewhere (the
    /// API's `POST /containers/{id}/resize`, whose client's terminal is not here);
    /// the kernel sends SIGWINCH to the container's foreground process group.
    fn resize_to(&self, rows: &str, cols: &str) {
        let Stdio::Pty(m) = &self.stdio else { return };
        let (Ok(ws_row), Ok(ws_col)) = (rows.parse::<u16>(), cols.parse::<u16>()) else {
            return;
        };
        let ws = rustix::termios::Winsize {
            ws_row,
            ws_col,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = rustix::termios::tcsetwinsize(m, ws);
    }

    fn start(&mut self, i: usize) {
        self.resize(i);
        let Some(c) = self.container.as_mut() else {
            return self.reply(i, "error container is gone");
        };
        match c.start() {
            Ok(()) => {
                let pid = c.state.pid;
                if let Ok(db) = Db::open(&self.paths.root) {
                    let _ = db.set_running(&self.rec.id, &now());
                }
                self.health = healthcheck::Timer::start(self.paths, &self.rec);
                self.reply(i, &format!("started {pid}"));
            }
            Err(e) => self.reply(i, &format!("error {}", classify(e))),
        }
    }

    /// Copies client `i`'s stdin to the container's.
    fn feed(&mut self, i: usize) {
        let Some(src) = self.clients[i].stdin.as_ref() else {
            return;
        };
        let n = rustix::io::read(src, io_buf(&mut self.buf)).unwrap_or(0);
        let target = match &self.stdio {
            Stdio::Pty(m) => Some(m.as_fd()),
            Stdio::Pipes { stdin, .. } => stdin.as_ref().map(|f| f.as_fd()),
        };
        if n == 0 {
            self.clients[i].stdin = None;
            if let Stdio::Pipes { stdin, .. } = &mut self.stdio {
                // EOF: the container sees it too.
                *stdin = None;
            }
            return;
        }
        if let Some(t) = target {
            write_all(t, &self.buf[..n]);
        }
    }

    /// After the exit: runtime state, mounts, record; then tells the clients.
    fn finish(&mut self, code: i32) {
        let id = self.rec.id.clone();
        let mut oom_killed = false;
        if let Ok(c) = Container::load(&self.paths.oci_root(), &id) {
            // Before delete removes the cgroup and its counters.
            oom_killed = crate::stats::oom_kills(&c.state.cgroup_path) > 0;
            let _ = c.delete(true);
        }
        self.container = None;
        let _ = network::down(self.paths, &self.rec, true);
        let bundle = self.paths.bundle(&id);
        let _ = rootfs::unmount(&bundle);
        let checkpointed = self.paths.run_dir(&id).join(crate::checkpoint::CHECKPOINTED).exists();
        let _ = std::fs::remove_dir_all(self.paths.run_dir(&id));
        if let Ok(db) = Db::open(&self.paths.root) {
            let _ = db.set_exited(&id, Some(code), &now());
            if oom_killed {
                let _ = db.set_oom_killed(&id);
            }
            // A checkpoint without --leave-running ends the init: the container stays,
            // to be restored.
            if self.rec.options.rm && !checkpointed {
                if let Ok(store) = vessel_image::Store::open(&self.paths.root) {
                    let _ = rootfs::remove(&store, &bundle, &id);
                }
                let _ = std::fs::remove_dir_all(&bundle);
                let _ = db.delete(&id);
            }
        }
        for c in &self.clients {
            let _ = wire::send(&c.sock, &format!("exit {code}"), &[]);
        }
    }
}

/// Size of the buffer that carries output and input, in bytes.
const IO_BUF: usize = 32 * 1024;

/// The monitor's I/O buffer, allocated on first use.
fn io_buf(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(IO_BUF, 0);
    }
    buf
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return,
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                let mut p = [PollFd::new(fd, PollFlags::POLLOUT)];
                let _ = poll(&mut p, PollTimeout::from(1000u16));
            }
            Err(_) => return,
        }
    }
}

/// The sources whose poll entries have events.
fn ready(fds: &[PollFd<'_>], srcs: &[Src]) -> Vec<Src> {
    fds.iter()
        .zip(srcs)
        .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
        .map(|(_, s)| *s)
        .collect()
}

/// Reaps children; the init's exit code (128+N for signal N) once it has exited. The
/// other children's (healthcheck probes) pids and exit codes go to `others`.
fn reap(init: i32, others: &mut Vec<(i32, i32)>) -> Option<i32> {
    let mut code = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return code,
            Ok(st) => {
                let child = st.pid().map(|p| p.as_raw());
                if child == Some(init) {
                    code = vessel_runtime::foreground::exit_code(st);
                } else if let (Some(c), Some(x)) = (child, vessel_runtime::foreground::exit_code(st)) {
                    others.push((c, x));
                }
            }
        }
    }
}
