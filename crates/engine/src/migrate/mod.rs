//! Live migration of a running container to another vessel host (`vessel migrate`).
//!
//! The source drives both ends through a [`remote::Remote`]: it starts
//! `vessel migrate-receive` on the target ([`receive`]), which runs a CRIU page server
//! on the target's loopback; the source freezes the container, dumps it with CRIU with
//! its memory pages streamed straight into that page server (through the transport:
//! `ssh -W` for ssh, never in cleartext over a network), sends the rest of the
//! checkpoint (record, config, other CRIU images, the writable layer) as a checkpoint
//! archive ([`crate::checkpoint::archive`]), and says `COMMIT`; the target restores it
//! and answers. Then the source removes its frozen copy.
//!
//! Exactly one side runs the container afterwards, also when a step fails or a
//! process is killed: before `COMMIT` the target has restored nothing and the source
//! is thawed; after it, the target's answer (or, when the connection was lost, its
//! `migrate-receive --status TOKEN`) decides whether the source is removed or thawed.
//! A guard process (`vessel __migrate-guard`) started first follows the steps on a
//! pipe and does that recovery if the migrate command itself dies.
//!
//! Modes, chosen by probing CRIU and the kernel ([`probe`]): iterative pre-copy needs
//! `mem_dirty_track` (soft-dirty bits), post-copy needs `uffd-noncoop`; this version
//! does stop-and-copy and says which of the others the host would allow.
//!
//! Transports: [`remote::Ssh`], [`remote::Local`], and the authenticated API's (a
//! remote added with `vessel remote add`; mutual TLS), which implements
//! [`remote::Remote`] in the command line crate over `vessel_api`'s client and is
//! passed to [`migrate_via`].

pub mod receive;
pub mod remote;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::db::State;
use crate::error::{Error, IoContext, Result};
use crate::Engine;

use remote::Remote;

/// What `vessel migrate` asks for besides the container and the remote.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Dump and restore established TCP connections (`--tcp-established`).
    pub tcp_established: bool,
    /// The vessel binary on the target (`--remote-vessel`); `vessel` on its PATH.
    pub remote_vessel: Option<String>,
}

/// The migration mode and why it was chosen.
#[derive(Debug, Clone)]
pub struct Probe {
    /// `stop-and-copy` (the one this version runs).
    pub mode: &'static str,
    /// What the probes said, for the output.
    pub why: String,
}

/// Probes CRIU and the kernel for the memory-tracking modes: `criu check --feature
/// mem_dirty_track` (pre-copy) and `uffd-noncoop` (post-copy), both at once, their
/// answers kept under the runroot for this criu binary and kernel
/// ([`crate::criu_cache`]), so that only the first migration after a boot or a new
/// criu pays for them.
pub fn probe(engine: &Engine) -> Probe {
    let short = |r: std::result::Result<(), String>| match r {
        Ok(()) => "available".to_string(),
        Err(t) => {
            let t = t.rsplit_once("(criu check").map(|(_, b)| b).unwrap_or(&t);
            format!("missing ({})", t.trim_end_matches(')').trim())
        }
    };
    let run = &engine.paths.runroot;
    let (pre, post) = std::thread::scope(|s| {
        // Post-copy also needs pipes CRIU can grow for its lazy-pages transfer.
        let post = s.spawn(|| {
            crate::criu_cache::require_feature(run, "uffd-noncoop", "post-copy")
                .and_then(|()| vessel_runtime::checkpoint::require_lazy_dump("post-copy").map_err(|e| e.to_string()))
        });
        let pre = crate::criu_cache::require_feature(run, "mem_dirty_track", "pre-copy");
        let post = post
            .join()
            .unwrap_or_else(|_| Err("the uffd-noncoop probe failed".to_string()));
        (pre, post)
    });
    let (pre, post) = (short(pre), short(post));
    Probe {
        mode: "stop-and-copy",
        why: format!(
            "pre-copy needs CRIU's mem_dirty_track: {pre}; post-copy needs uffd-noncoop and pipes CRIU can grow: {post}; this version of vessel migrate runs stop-and-copy only (pages streamed straight to the target's page server)"
        ),
    }
}

/// The figures of a finished migration.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The container's name on the target.
    pub name: String,
    /// Bytes that went through the page stream (pages plus CRIU's page-server headers).
    pub page_bytes: u64,
    /// Bytes of the checkpoint archive (record, config, other images, writable layer).
    pub archive_bytes: u64,
    /// From freezing the source to the target's restore reported running.
    pub frozen: Duration,
    /// The dump (with the page stream).
    pub dump: Duration,
    /// The whole migration.
    pub total: Duration,
}

/// The environment variable naming a file whose appearance ends a test pause of a
/// migration (without it a pause lasts until the process is killed).
pub const TEST_RESUME_ENV: &str = "VESSEL_TEST_RESUME_FILE";

/// Stops here when the tests asked to ([`crate::snapshots::TEST_PAUSE_ENV`]): points
/// `migrate-before-freeze`, `migrate-after-dump`, `migrate-transfer`,
/// `migrate-after-restore` (source), `receive-archived`, `receive-restored` (target).
/// Prints `vessel: test pause at POINT` and waits until killed, or until the file
/// named by [`TEST_RESUME_ENV`] exists.
pub(crate) fn pause_point(point: &str) {
    if std::env::var(crate::snapshots::TEST_PAUSE_ENV).is_ok_and(|p| p == point) {
        eprintln!("vessel: test pause at {point}");
        let resume = std::env::var_os(TEST_RESUME_ENV).map(std::path::PathBuf::from);
        loop {
            if resume.as_ref().is_some_and(|f| f.exists()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// 16 random hex digits.
fn token() -> Result<String> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .at("read", Path::new("/dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The source's checkpoint archive of migration `token`: `ROOT/migrate/<token>.tar.zst`.
fn archive_path(engine: &Engine, token: &str) -> std::path::PathBuf {
    engine.paths.root.join("migrate").join(format!("{token}.tar.zst"))
}

/// Thaws the source container `id` (after a migration that did not happen) and
/// removes the images the dump left.
fn thaw(engine: &Engine, id: &str) -> Result<()> {
    let images = crate::checkpoint::images_dir(engine, id);
    // A dump of a killed migrate command may still run: thawing under it would let CRIU
    // see a cgroup that changed state; wait for it (at most a minute).
    let needle = images.to_string_lossy().into_owned();
    let until = Instant::now() + Duration::from_secs(60);
    while dump_running(&needle) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&images);
    match engine.db.get(id)? {
        Some(r) if r.state == State::Paused => engine.pause(&r, false),
        _ => Ok(()),
    }
}

/// Whether a `criu dump` writing into `images` runs.
fn dump_running(images: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut args = cmd.split(|b| *b == 0).map(String::from_utf8_lossy);
        args.any(|a| a == "dump") && String::from_utf8_lossy(&cmd).contains(images)
    })
}

/// Removes the frozen source container `id` (the target runs it): killed while frozen,
/// so it never runs another instruction here.
fn remove_source(engine: &Engine, id: &str) -> Result<()> {
    let Some(r) = engine.db.get(id)? else { return Ok(()) };
    if r.state.is_live() {
        let _ = engine.kill(&r, libc::SIGKILL);
        if r.state == State::Paused {
            let _ = engine.pause(&r, false);
        }
        engine.wait_exit(id, Some(Duration::from_secs(10)))?;
    }
    let r = engine.db.get(id)?.unwrap_or(r);
    engine.purge(&r)
}

/// Asks the target whether the receive `token` ended with the container running.
fn remote_status(remote: &dyn Remote, token: &str) -> Result<Option<String>> {
    let child = remote.vessel(&["migrate-receive".into(), "--status".into(), token.into()])?;
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Migrate(format!("{}: ask the outcome: {e}", remote.describe())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(Error::Migrate(format!(
            "{}: migrate-receive --status failed ({})",
            remote.describe(),
            out.status
        )));
    }
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("running ").map(str::to_string)))
}

/// After a failure or a killed migrate command: thaw the source when the target never
/// got `COMMIT`, else follow the target's outcome. Returns what was done.
pub fn recover(engine: &Engine, id: &str, remote: &dyn Remote, token: &str, committed: bool) -> Result<String> {
    let _ = std::fs::remove_file(archive_path(engine, token));
    if !committed {
        // Let the target clean what it received (best effort; it also does so itself
        // when its input ends before COMMIT).
        let _ = remote_status(remote, token);
        thaw(engine, id)?;
        return Ok("the target restored nothing; the source container was thawed and runs on".into());
    }
    match remote_status(remote, token) {
        Ok(Some(name)) => {
            remove_source(engine, id)?;
            Ok(format!("the target runs it as {name}; the source container was removed"))
        }
        Ok(None) => {
            thaw(engine, id)?;
            Ok("the target did not restore it; the source container was thawed and runs on".into())
        }
        Err(e) => Err(Error::Migrate(format!(
            "cannot learn whether {} runs the container ({e}); the source container is left frozen (paused) so that it never runs twice: once the target answers, `vessel rm -f` it here if it runs there, else `vessel unpause` it",
            remote.describe()
        ))),
    }
}

/// The guard's side (`vessel __migrate-guard`): reads the migrate command's steps
/// (`commit`, `done`) from `input`; if the input ends without `done` (the migrate
/// command died), runs [`recover`].
pub fn guard(
    engine: &Engine,
    id: &str,
    remote: &dyn Remote,
    token: &str,
    input: &mut dyn BufRead,
) -> Result<Option<String>> {
    let mut committed = false;
    loop {
        let mut l = String::new();
        match input.read_line(&mut l) {
            Ok(0) | Err(_) => break,
            Ok(_) => match l.trim() {
                "commit" => committed = true,
                "done" => return Ok(None),
                _ => {}
            },
        }
    }
    recover(engine, id, remote, token, committed).map(Some)
}

/// The guard process and the pipe to it.
struct Guard {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Guard {
    fn spawn(engine: &Engine, id: &str, url: &str, opts: &MigrateOptions, token: &str) -> Result<Guard> {
        let exe = std::env::current_exe().at("find", Path::new("/proc/self/exe"))?;
        let mut c = Command::new(exe);
        c.arg("--root")
            .arg(&engine.paths.root)
            .arg("--runroot")
            .arg(&engine.paths.runroot)
            .args(["__migrate-guard", "--token", token, "--target", url]);
        if let Some(v) = &opts.remote_vessel {
            c.args(["--remote-vessel", v]);
        }
        c.arg(id)
            .env_remove(crate::snapshots::TEST_PAUSE_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        // Its own session: a signal to the migrate command's process group spares it.
        // SAFETY: setsid only, between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = c.spawn().at("start the migration guard", Path::new("/proc/self/exe"))?;
        let pipe = child.stdin.take();
        Ok(Guard { child, pipe })
    }

    fn say(&mut self, step: &str) {
        if let Some(p) = &mut self.pipe {
            let _ = writeln!(p, "{step}").and_then(|()| p.flush());
        }
    }

    fn done(mut self) {
        self.say("done");
        self.pipe = None;
        let _ = self.child.wait();
    }
}

/// Copies `from` to `to` until end, then closes `to`'s writing side; the bytes copied.
fn pump(mut from: impl Read, mut to: impl Write, close: impl FnOnce()) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if to.write_all(&buf[..k]).is_err() {
                    break;
                }
                n += k as u64;
            }
        }
    }
    let _ = to.flush();
    drop(to);
    close();
    n
}

/// A loopback port for CRIU's dump that carries one connection to the target's page
/// server through `remote`; the thread returns the bytes sent to the target.
fn page_relay(remote: &dyn Remote, port: u16) -> Result<(u16, std::thread::JoinHandle<u64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").at("listen on", Path::new("127.0.0.1"))?;
    let local = listener.local_addr().at("listen on", Path::new("127.0.0.1"))?.port();
    let stream = remote.connect(port)?;
    let handle = std::thread::spawn(move || {
        let Ok((criu, _)) = listener.accept() else { return 0 };
        let Ok(criu_r) = criu.try_clone() else { return 0 };
        let criu_w = criu;
        let remote::Stream {
            reader,
            writer,
            mut child,
        } = stream;
        let back = std::thread::spawn(move || {
            let closer = criu_w.try_clone().ok();
            pump(reader, criu_w, move || {
                if let Some(c) = closer {
                    let _ = c.shutdown(std::net::Shutdown::Write);
                }
            })
        });
        let sent = pump(criu_r, writer, || {});
        let _ = back.join();
        if let Some(c) = &mut child {
            let _ = c.wait();
        }
        sent
    });
    Ok((local, handle))
}

/// Reads one line of the receiver's output; None at its end.
fn read_line(r: &mut dyn BufRead) -> Option<String> {
    let mut s = String::new();
    match r.read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim_end().to_string()),
    }
}

/// Migrates the running container `what` (name, id or prefix) to the host at `url`
/// (`ssh://[user@]host[:port][/root]` or `local:///root`), printing each step with
/// `say`. On success the target runs it under its name and it is gone here. Another
/// transport (the API's, which lives above this crate) goes through [`migrate_via`].
///
/// Errors: [`Error::WrongState`] unless it runs; [`Error::Migrate`] for a step that
/// failed, saying what was done about it (the source thawed, or removed because the
/// target runs it); the dump's CRIU errors (after which the source runs on).
pub fn migrate(
    engine: &Engine,
    what: &str,
    url: &str,
    opts: &MigrateOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let remote = remote::parse(url, opts.remote_vessel.as_deref())?;
    migrate_via(engine, what, url, remote, opts, say)
}

/// [`migrate`] through `remote`, a transport built by the caller; `url` names it to
/// the guard process (`vessel __migrate-guard --target URL`), which must be able to
/// build the same transport from it.
///
/// Errors: as [`migrate`].
pub fn migrate_via(
    engine: &Engine,
    what: &str,
    url: &str,
    remote: Box<dyn Remote>,
    opts: &MigrateOptions,
    say: &mut dyn FnMut(&str),
) -> Result<Summary> {
    let start = Instant::now();
    let r = engine.find(what)?;
    if r.state != State::Running {
        return Err(Error::WrongState(format!(
            "cannot migrate container {}: it is {}, not running",
            r.name,
            r.state.as_str()
        )));
    }
    let p = probe(engine);
    crate::timing::mark("migrate: probed criu");
    say(&format!("mode: {} ({})", p.mode, p.why));
    let token = token()?;
    let mut guard = Guard::spawn(engine, &r.id, url, opts, &token)?;
    let mut committed = false;
    let mut receiver: Option<Child> = None;
    let result = steps(
        engine,
        &r,
        remote.as_ref(),
        opts,
        &token,
        &mut guard,
        &mut committed,
        &mut receiver,
        say,
        start,
    );
    let result = match result {
        Ok(s) => Ok(s),
        Err(e) => {
            // Close the receiver's input (before COMMIT it aborts) and let it finish.
            if let Some(mut c) = receiver.take() {
                drop(c.stdin.take());
                let _ = c.wait();
            }
            match recover(engine, &r.id, remote.as_ref(), &token, committed) {
                Ok(done) => Err(Error::Migrate(format!("{e}: {done}"))),
                Err(e2) => Err(Error::Migrate(format!("{e}: {e2}"))),
            }
        }
    };
    guard.done();
    result
}

#[allow(clippy::too_many_arguments)]
fn steps(
    engine: &Engine,
    r: &crate::db::Record,
    remote: &dyn Remote,
    opts: &MigrateOptions,
    token: &str,
    guard: &mut Guard,
    committed: &mut bool,
    receiver: &mut Option<Child>,
    say: &mut dyn FnMut(&str),
    start: Instant,
) -> Result<Summary> {
    let lost = |what: &str| Error::Migrate(format!("{}: the target's migrate-receive {what}", remote.describe()));
    crate::timing::mark("migrate: start the target's receiver");
    let child = receiver.insert(remote.vessel(&["migrate-receive".into(), "--token".into(), token.into()])?);
    let mut to = child.stdin.take().ok_or_else(|| lost("has no input"))?;
    let mut from = BufReader::new(child.stdout.take().ok_or_else(|| lost("has no output"))?);
    // The record goes first, while the container runs: the target makes the container
    // (bundle, root file system, config) now, not while it is frozen.
    let record = serde_json::to_vec(r).map_err(|e| Error::Migrate(format!("the record of {}: {e}", r.name)))?;
    let io = |e: std::io::Error| Error::Migrate(format!("{}: send the record: {e}", remote.describe()));
    writeln!(to, "PREPARE {}", record.len()).map_err(io)?;
    to.write_all(&record).and_then(|()| to.flush()).map_err(io)?;
    let first = read_line(&mut from).ok_or_else(|| lost("ended before its page server was ready"))?;
    let port: u16 = first
        .strip_prefix("PAGES ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| lost(&format!("said {first:?}")))?;
    crate::timing::mark("migrate: the target's page server listens");
    let ready = read_line(&mut from).ok_or_else(|| lost("ended before it made the container"))?;
    if ready != "READY" {
        let why = ready.strip_prefix("FAILED ").unwrap_or(&ready);
        return Err(Error::Migrate(format!("the target cannot take the container: {why}")));
    }
    crate::timing::mark("migrate: the target made the container");
    pause_point("migrate-before-freeze");

    // Freeze, then dump into the target's page server; the dump leaves it frozen.
    let (local, relay) = page_relay(remote, port)?;
    crate::timing::mark("migrate: freeze");
    let frozen_at = Instant::now();
    engine.pause(r, true)?;
    crate::timing::mark("migrate: frozen; dump");
    say(&format!("frozen {} after {} ms", r.name, start.elapsed().as_millis()));
    let images = crate::checkpoint::images_dir(engine, &r.id);
    crate::checkpoint::dump_with(
        engine,
        &r.id,
        &images,
        crate::checkpoint::DumpOptions {
            leave_running: true,
            tcp_established: opts.tcp_established,
            page_server: Some(format!("127.0.0.1:{local}")),
        },
    )?;
    let page_bytes = relay.join().unwrap_or(0);
    let dump = frozen_at.elapsed();
    crate::timing::mark("migrate: dumped");
    say(&format!(
        "round 1 (final dump, frozen): {} pages, {} bytes to the target's page server, {} ms",
        page_bytes / 4096,
        page_bytes,
        dump.as_millis()
    ));
    pause_point("migrate-after-dump");

    // The rest of the checkpoint as an archive, then COMMIT.
    let file = archive_path(engine, token);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).at("create", dir)?;
    }
    let sent = (|| -> Result<u64> {
        // Not synced: it is sent at once and removed (a crash ends the migration anyway).
        crate::checkpoint::export_with(engine, &r.id, &file, false)?;
        crate::timing::mark("migrate: archive written");
        let data = std::fs::read(&file).at("read", &file)?;
        let half = data.len() / 2;
        let io = |e: std::io::Error| Error::Migrate(format!("{}: send the checkpoint: {e}", remote.describe()));
        writeln!(to, "ARCHIVE {}", data.len()).map_err(io)?;
        to.write_all(&data[..half]).map_err(io)?;
        to.flush().map_err(io)?;
        pause_point("migrate-transfer");
        to.write_all(&data[half..]).map_err(io)?;
        to.flush().map_err(io)?;
        Ok(data.len() as u64)
    })();
    let _ = std::fs::remove_file(&file);
    let archive_bytes = sent?;
    crate::timing::mark("migrate: archive sent");
    say(&format!(
        "sent the checkpoint archive (record, config, other images, writable layer): {archive_bytes} bytes at {} ms",
        start.elapsed().as_millis()
    ));
    guard.say("commit");
    *committed = true;
    writeln!(to, "COMMIT")
        .and_then(|()| to.flush())
        .map_err(|e| Error::Migrate(format!("{}: send COMMIT: {e}", remote.describe())))?;
    let answer = read_line(&mut from).ok_or_else(|| lost("ended without an answer"))?;
    crate::timing::mark("migrate: the target answered");
    let Some(name) = answer.strip_prefix("RUNNING ").map(str::to_string) else {
        let why = answer.strip_prefix("FAILED ").unwrap_or(&answer).to_string();
        return Err(Error::Migrate(format!("the target's restore failed: {why}")));
    };
    let frozen = frozen_at.elapsed();
    say(&format!(
        "running on {} as {name}: frozen {} ms (freeze to running on the target)",
        remote.describe(),
        frozen.as_millis()
    ));
    pause_point("migrate-after-restore");
    remove_source(engine, &r.id)?;
    crate::timing::mark("migrate: source removed");
    let _ = writeln!(to, "DONE").and_then(|()| to.flush());
    drop(to);
    if let Some(mut c) = receiver.take() {
        let _ = c.wait();
    }
    Ok(Summary {
        name,
        page_bytes,
        archive_bytes,
        frozen,
        dump,
        total: start.elapsed(),
    })
}
