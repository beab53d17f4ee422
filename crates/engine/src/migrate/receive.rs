//! The target's side of a migration (`vessel migrate-receive`, started by the source
//! through its [`super::remote::Remote`]): a CRIU page server on the target's
//! loopback for the memory pages, then the checkpoint archive (record, config, the
//! other CRIU images, writable layer) on stdin, then `COMMIT`, then the restore.
//! Everything lives in `ROOT/migrate/<token>/` under an flock held for the whole
//! receive, so that `--status TOKEN` (asked by the source when it lost the
//! connection) waits for the outcome and reports it once the receiver is gone.
//!
//! The protocol, one line each way at a time (stdout to the source):
//! `PAGES <port>` ← `PREPARE <bytes>` + the container's record (JSON), sent while it
//! still runs → `READY` (the container is made here: record, bundle, root file system,
//! config; its name checked) → (the source freezes and dumps into the page server) ←
//! `ARCHIVE <bytes>` + bytes ← `COMMIT` → `RUNNING <name>` | `FAILED <reason>` ←
//! `DONE`. A source that sends `ARCHIVE` without `PREPARE` first (an older vessel)
//! gets the container made after `COMMIT`.
//! End of input before `COMMIT` aborts and leaves nothing; after `COMMIT` the restore
//! goes on whatever happens to the source.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vessel_image::{ImageRecord, Store};

use crate::checkpoint;
use crate::db::Record;
use crate::error::{Error, IoContext, Result};
use crate::Engine;

/// The outcome file of a receive (`running NAME` or `failed REASON`).
const RESULT: &str = "result";
/// The id of the container the receive made (for a receiver killed part way).
const MADE: &str = "id";
/// The lock held by the receiver.
const LOCK: &str = "lock";

/// `ROOT/migrate/<token>`.
pub fn staging(engine: &Engine, token: &str) -> Result<PathBuf> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadInput(format!(
            "migration token {token:?}: expected hex digits"
        )));
    }
    Ok(engine.paths.root.join("migrate").join(token))
}

/// Takes the flock of `dir` (made if missing), waiting for it.
fn lock(dir: &Path) -> Result<fs::File> {
    fs::create_dir_all(dir).at("create", dir)?;
    let path = dir.join(LOCK);
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .at("open", &path)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::Io {
        op: "lock",
        path: path.clone(),
        source: e.into(),
    })?;
    Ok(f)
}

/// A CRIU page server receiving into `images`, on a free port of 127.0.0.1.
struct PageServer {
    child: Child,
    port: u16,
}

impl PageServer {
    /// Starts `criu page-server` and waits until it listens (`--status-fd`).
    fn start(images: &Path, work: &Path) -> Result<PageServer> {
        fs::create_dir_all(images).at("create", images)?;
        // A free port: bound and released here, then taken by criu (loopback only).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .at("find a free port on", Path::new("127.0.0.1"))?
            .port();
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| Error::Io {
            op: "pipe",
            path: images.into(),
            source: e.into(),
        })?;
        let w_raw = w.as_raw_fd();
        let mut cmd = Command::new(vessel_runtime::checkpoint::criu_path());
        cmd.arg("page-server")
            .arg("-D")
            .arg(images)
            .arg("-W")
            .arg(work)
            .args(["-o", "page-server.log", "-v4", "--address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--status-fd", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: only dup2 between fork and exec, on an fd opened before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::dup2(w_raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().at("start criu page-server for", images)?;
        drop(w);
        let mut byte = [0u8; 1];
        let mut rf = fs::File::from(r);
        let n = rf.read(&mut byte).unwrap_or(0);
        let mut ps = PageServer { child, port };
        if n == 0 {
            ps.stop();
            return Err(Error::Migrate(format!(
                "the target's CRIU page server did not start: {}",
                vessel_runtime::checkpoint::log_errors(&work.join("page-server.log"))
            )));
        }
        Ok(ps)
    }

    /// Waits (up to `limit`) for the page server to end after the dump; true when it
    /// ended well. Waits on a pidfd (poll), not in sleeps.
    fn finish(&mut self, limit: Duration) -> bool {
        let exited = rustix::process::Pid::from_raw(self.child.id() as i32)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
            .map(|fd| {
                let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
                let t = rustix::time::Timespec {
                    tv_sec: limit.as_secs() as i64,
                    tv_nsec: i64::from(limit.subsec_nanos()),
                };
                matches!(rustix::event::poll(&mut fds, Some(&t)), Ok(n) if n > 0)
            });
        match exited {
            // No pidfd (an old kernel): wait without a limit, as the dump has ended.
            None | Some(true) => self.child.wait().is_ok_and(|s| s.success()),
            Some(false) => {
                self.stop();
                false
            }
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn send(out: &mut dyn Write, line: &str) -> Result<()> {
    out.write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .at("write to", Path::new("the migration's source"))
}

/// Reads one line; None at end of input.
fn line(input: &mut dyn BufRead) -> Option<String> {
    let mut s = String::new();
    match input.read_line(&mut s) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(s.trim_end().to_string()),
    }
}

/// Receives a migrated container (see the module doc) under `token`; `pull` gets the
/// container's image when it is missing here. Returns the restored container's name.
///
/// Errors: [`Error::Migrate`] when the source went away before `COMMIT` (nothing is
/// left) or the page server failed; the import's errors (name taken, image missing,
/// restore failed), after which nothing of it is left either.
pub fn receive(
    engine: &Engine,
    token: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<String> {
    let dir = staging(engine, token)?;
    let _lock = lock(&dir)?;
    let mut committed = false;
    let mut made = None;
    let result = receive_locked(engine, &dir, input, out, pull, &mut committed, &mut made);
    if let (Err(_), Some(r)) = (&result, &made) {
        // Made before the freeze (PREPARE) and not restored: nothing of it stays.
        let _ = engine.purge(r);
    }
    let outcome = match &result {
        Ok(name) => format!("running {name}"),
        Err(e) => format!("failed {e}"),
    };
    let _ = fs::write(dir.join(RESULT), &outcome);
    match &result {
        Ok(name) => {
            let _ = send(out, &format!("RUNNING {name}"));
        }
        Err(e) => {
            let _ = send(out, &format!("FAILED {}", e.to_string().replace('\n', " ")));
        }
    }
    // The source's DONE: it has its outcome, so the result file can go. Without it (the
    // source went away) the result stays for its `--status` question. Before COMMIT
    // nothing was restored and the source thaws its container: nothing need stay.
    if !committed || line(input).as_deref() == Some("DONE") {
        let _ = fs::remove_dir_all(&dir);
    } else {
        for f in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if f.file_name() != RESULT && f.file_name() != LOCK {
                let _ = fs::remove_dir_all(f.path()).or_else(|_| fs::remove_file(f.path()));
            }
        }
    }
    result
}

fn receive_locked(
    engine: &Engine,
    dir: &Path,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
    committed: &mut bool,
    made: &mut Option<Record>,
) -> Result<String> {
    let pages = dir.join("pages");
    let mut server = PageServer::start(&pages, dir)?;
    send(out, &format!("PAGES {}", server.port))?;
    crate::timing::mark("receive: page server listens");
    let gone = || Error::Migrate("the source went away before COMMIT: nothing was restored here".into());
    let made_file = dir.join(MADE);
    let mut head = line(input).ok_or_else(gone)?;
    let mut source_id = None;
    if let Some(n) = head.strip_prefix("PREPARE ") {
        // The container's record, while it still runs at the source: make it here now
        // (record, bundle, root file system, config), so that after the freeze only
        // the restore is left to do.
        let n: usize = n
            .parse()
            .ok()
            .filter(|n| *n <= 16 << 20)
            .ok_or_else(|| Error::Migrate(format!("the source said {head:?}, not PREPARE <bytes>")))?;
        let mut text = vec![0u8; n];
        input.read_exact(&mut text).map_err(|_| gone())?;
        let old: Record = serde_json::from_slice(&text)
            .map_err(|e| Error::Migrate(format!("the source's record does not parse: {e}")))?;
        let rec = checkpoint::prepare_import(engine, &old, None, pull, &mut |r| {
            fs::write(&made_file, &r.id).at("write", &made_file)
        })?;
        crate::timing::mark("receive: container made (before the freeze)");
        *made = Some(rec);
        source_id = Some(old.id);
        send(out, "READY")?;
        head = line(input).ok_or_else(gone)?;
    }
    let size: u64 = head
        .strip_prefix("ARCHIVE ")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            Error::Migrate(format!(
                "the source said {head:?}, not ARCHIVE <bytes>: nothing was restored here"
            ))
        })?;
    let archive = dir.join("checkpoint.tar.zst");
    {
        // Not synced: it is read back at once, and a crash here ends the receive anyway.
        let mut f = fs::File::create(&archive).at("create", &archive)?;
        let copied = std::io::copy(&mut input.take(size), &mut f).at("receive", &archive)?;
        if copied != size {
            return Err(gone());
        }
    }
    crate::timing::mark("receive: archive received");
    super::pause_point("receive-archived");
    if line(input).as_deref() != Some("COMMIT") {
        return Err(gone());
    }
    *committed = true;
    crate::timing::mark("receive: COMMIT");
    if !server.finish(Duration::from_secs(60)) {
        return Err(Error::Migrate(format!(
            "the target's CRIU page server failed: {}",
            vessel_runtime::checkpoint::log_errors(&dir.join("page-server.log"))
        )));
    }
    crate::timing::mark("receive: page server done");
    let rec = match made {
        Some(rec) => {
            let old = checkpoint::archive::verify(&archive)?;
            if source_id.as_ref() != Some(&old.id) {
                return Err(Error::Migrate(format!(
                    "the checkpoint archive holds container {}, not the one prepared",
                    old.id
                )));
            }
            crate::timing::mark("receive: archive verified");
            checkpoint::restore_prepared(engine, &archive, &old, rec, Some(&pages))?
        }
        None => checkpoint::import_with(engine, &archive, None, pull, Some(&pages), &mut |r| {
            fs::write(&made_file, &r.id).at("write", &made_file)
        })?,
    };
    crate::timing::mark("receive: running");
    super::pause_point("receive-restored");
    Ok(rec.name)
}

/// What `--status TOKEN` answers: whether the container of that receive runs here.
/// Waits for a receiver still at work; a receiver killed part way leaves a container
/// that runs (then it counts as received) or one that is purged here.
pub fn status(engine: &Engine, token: &str) -> Result<Option<String>> {
    let dir = staging(engine, token)?;
    if !dir.exists() {
        return Ok(None);
    }
    let _lock = lock(&dir)?;
    let said = fs::read_to_string(dir.join(RESULT)).unwrap_or_default();
    let answer = if let Some(name) = said.strip_prefix("running ") {
        Some(name.to_string())
    } else if said.is_empty() {
        // The receiver was killed: judge by what it made.
        match fs::read_to_string(dir.join(MADE))
            .ok()
            .and_then(|id| engine.db.get(id.trim()).ok().flatten())
        {
            Some(r) if r.state.is_live() && engine.health(&r) == crate::containers::Health::Ok => Some(r.name),
            Some(r) => {
                let _ = engine.purge(&r);
                None
            }
            None => None,
        }
    } else {
        None
    };
    let _ = fs::remove_dir_all(&dir);
    Ok(answer)
}
