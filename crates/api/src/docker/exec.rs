//! Exec instances (swagger tag Exec): `POST /containers/{id}/exec` makes one,
//! `POST /exec/{id}/start` runs it (hijacked like attach: HTTP 101, then the raw
//! stream with a tty, multiplexed 8-byte-header frames without; or detached),
//! `POST /exec/{id}/resize` sets its terminal's size, `GET /exec/{id}/json` tells
//! whether it runs and its exit code.
//!
//! The server never forks itself into a container: it starts `vessel exec` (its own
//! binary, fork+exec through `std::process::Command`), which joins the container as
//! the `vessel exec` command does and stays the process's parent; its exit code is
//! the exec's. With a tty the server gives that command a pty of its own (raw mode)
//! as stdin, stdout and stderr: `vessel exec -t` proxies it to the container's pty,
//! and copies its size on SIGWINCH, which a resize sends it. Exec instances live in
//! the server's memory only ([`Execs`]), as in docker's daemon.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use vessel_engine::db::State as CState;

use super::{json_body, Ctx};
use crate::error::{ApiError, ApiResult};

/// The body of `POST /containers/{id}/exec` (ExecConfig): the fields served.
#[derive(Deserialize, Default, Clone, Debug)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    privileged: bool,
    user: String,
    working_dir: String,
    detach_keys: String,
    /// The terminal's size at the start, `[rows, columns]` (API 1.42's field; vessel's
    /// remote client sends it so the process sees its size from its first instruction).
    console_size: Option<[u16; 2]>,
}

/// The body of `POST /exec/{id}/start`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    /// As [`ExecConfig`]'s, given at the start instead (API 1.42).
    console_size: Option<[u16; 2]>,
}

/// One exec instance.
struct Exec {
    container: String,
    config: ExecConfig,
    running: bool,
    started: bool,
    exit_code: Option<i32>,
    pid: i32,
    /// A pidfd of `vessel exec` while it runs (a signal through it never reaches
    /// another process that got the pid after it was reaped).
    pidfd: Option<Arc<OwnedFd>>,
    /// The server's side of the pty while a tty exec runs.
    master: Option<Arc<OwnedFd>>,
}

/// How many exec instances the table holds before it forgets those that have ended.
pub const MAX_EXECS: usize = 1000;

/// The exec instances this server made, by id.
#[derive(Clone, Default)]
pub struct Execs(Arc<Mutex<HashMap<String, Exec>>>);

impl Execs {
    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Exec) -> ApiResult<T>) -> ApiResult<T> {
        let mut m = self.0.lock().map_err(|_| ApiError::internal("exec table poisoned"))?;
        let e = m
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))?;
        f(e)
    }
}

fn new_id() -> ApiResult<String> {
    let mut b = [0u8; 32];
    rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| ApiError::internal(format!("getrandom for an exec id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// `POST /containers/{id}/exec`: 201 `{"Id"}`; 409 when the container is not running.
pub async fn create(State(ctx): State<Ctx>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    let config: ExecConfig = json_body(&body)?;
    if config.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad("exec config has no Cmd: give the command to run"));
    }
    let rec = ctx.engine(move |e| Ok(e.find(&id)?)).await?;
    match rec.state {
        CState::Running => {}
        CState::Paused => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("Container {} is paused, unpause the container before exec", rec.id),
            })
        }
        _ => {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("Container {} is not running", rec.id),
            })
        }
    }
    let exec_id = new_id()?;
    let exec = Exec {
        container: rec.id,
        config,
        running: false,
        started: false,
        exit_code: None,
        pid: 0,
        pidfd: None,
        master: None,
    };
    let mut table = ctx
        .execs
        .0
        .lock()
        .map_err(|_| ApiError::internal("exec table poisoned"))?;
    if table.len() >= MAX_EXECS {
        // Forget the execs that have ended (docker forgets them with their container).
        table.retain(|_, e| e.running || !e.started);
    }
    table.insert(exec_id.clone(), exec);
    Ok((StatusCode::CREATED, Json(json!({"Id": exec_id}))).into_response())
}

/// `GET /exec/{id}/json` (ExecInspectResponse).
pub async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    ctx.execs.with(&id, |e| {
        let c = &e.config;
        let cmd = c.cmd.clone().unwrap_or_default();
        Ok(Json(json!({
            "ID": id, "Running": e.running, "ExitCode": e.exit_code, "CanRemove": false,
            "ContainerID": e.container, "DetachKeys": c.detach_keys,
            "OpenStdin": c.attach_stdin, "OpenStdout": c.attach_stdout, "OpenStderr": c.attach_stderr,
            "Pid": e.pid,
            "ProcessConfig": {"tty": c.tty, "entrypoint": cmd.first(), "arguments": cmd.get(1..).unwrap_or(&[]),
                              "privileged": c.privileged, "user": c.user},
        })))
    })
}

/// `POST /exec/{id}/resize?h=&w=`: the size of the exec's terminal, rows and columns.
pub async fn resize(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let dim = |k: &str| -> ApiResult<u16> {
        let v = q.get(k).ok_or_else(|| ApiError::bad(format!("resize needs {k}=N")))?;
        v.parse()
            .map_err(|_| ApiError::bad(format!("invalid {k}={v:?}: give a number of cells")))
    };
    let (h, w) = (dim("h")?, dim("w")?);
    let (master, pidfd) = ctx.execs.with(&id, |e| Ok((e.master.clone(), e.pidfd.clone())))?;
    let master = master.ok_or_else(|| ApiError {
        status: StatusCode::CONFLICT,
        message: format!("exec {id} has no running terminal: resize needs Tty and a started exec"),
    })?;
    let ws = rustix::termios::Winsize {
        ws_row: h,
        ws_col: w,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(master.as_fd(), ws)
        .map_err(|e| ApiError::internal(format!("set the size of exec {id}'s terminal: {e}")))?;
    // `vessel exec -t` copies the size to the container's terminal on SIGWINCH.
    if let Some(p) = pidfd {
        // Gone already (ESRCH): nothing to tell.
        let _ = rustix::process::pidfd_send_signal(&*p, rustix::process::Signal::WINCH);
    }
    Ok(StatusCode::OK.into_response())
}

/// The `vessel exec` command line for an exec instance.
fn command(ctx: &Ctx, container: &str, c: &ExecConfig, detach: bool) -> ApiResult<Command> {
    let exe = std::env::current_exe().map_err(|e| ApiError::internal(format!("find the vessel binary: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--root")
        .arg(&ctx.paths.root)
        .arg("--runroot")
        .arg(&ctx.paths.runroot)
        .arg("exec");
    if c.attach_stdin && !detach {
        cmd.arg("-i");
    }
    if c.tty {
        cmd.arg("-t");
    }
    if detach {
        cmd.arg("-d");
    }
    for e in c.env.iter().flatten() {
        cmd.arg("-e").arg(e);
    }
    if !c.user.is_empty() {
        cmd.arg("-u").arg(&c.user);
    }
    if !c.working_dir.is_empty() {
        cmd.arg("-w").arg(&c.working_dir);
    }
    if c.privileged {
        cmd.arg("--privileged");
    }
    cmd.arg(container).args(c.cmd.iter().flatten());
    Ok(cmd)
}

/// `POST /exec/{id}/start` with `{"Detach", "Tty"}`: detached, 200 once the process
/// runs; else the connection is hijacked (101) and carries the process's streams
/// until it ends.
pub async fn start(State(ctx): State<Ctx>, Path(id): Path<String>, mut req: Request) -> ApiResult<Response> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    let body = axum::body::to_bytes(std::mem::take(req.body_mut()), super::MAX_BODY)
        .await
        .map_err(|e| ApiError::bad(format!("exec start body: {e}")))?;
    let sb: StartBody = json_body(&body)?;
    let (container, config) = ctx.execs.with(&id, |e| {
        if e.started {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                message: format!("exec {id} has already run: make another"),
            });
        }
        e.started = true;
        Ok((e.container.clone(), e.config.clone()))
    })?;
    let mut cmd = command(&ctx, &container, &config, sb.detach)?;
    if sb.detach {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| ApiError::internal(format!("exec task failed: {e}")))?
            .map_err(|e| ApiError::internal(format!("start vessel exec: {e}")))?;
        if !out.status.success() {
            let _ = ctx.execs.with(&id, |e| {
                e.exit_code = out.status.code();
                Ok(())
            });
            return Err(ApiError::internal(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        let _ = ctx.execs.with(&id, |e| {
            e.running = true;
            Ok(())
        });
        return Ok(StatusCode::OK.into_response());
    }
    if !upgrade {
        return Err(ApiError::bad(
            "exec start needs Detach or a hijacked connection: send `Connection: Upgrade` and `Upgrade: tcp`",
        ));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let streams = if config.tty {
        spawn_tty(&mut cmd, sb.console_size.or(config.console_size))?
    } else {
        spawn_pipes(&mut cmd, config.attach_stdin)?
    };
    let (child, io) = streams;
    let pid = child.id() as i32;
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .map(Arc::new);
    let master = match &io {
        Io::Tty(m) => Some(m.clone()),
        Io::Pipes { .. } => None,
    };
    ctx.execs.with(&id, |e| {
        e.running = true;
        e.pid = pid;
        e.pidfd = pidfd;
        e.master = master;
        Ok(())
    })?;
    let execs = ctx.execs.clone();
    let (want_out, want_err, want_in) = (config.attach_stdout, config.attach_stderr, config.attach_stdin);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            let (rd, mut wr) = tokio::io::split(TokioIo::new(up));
            let _ = match io {
                Io::Tty(m) => copy_tty(m, rd, &mut wr, want_in).await,
                Io::Pipes { stdin, stdout, stderr } => {
                    let feed = tokio::spawn(feed(rd, stdin));
                    let r = super::attach::copy_out(stdout, stderr, &mut wr, false, want_out, want_err).await;
                    feed.abort();
                    r
                }
            };
            // The exit code is recorded before the stream ends: the client asks for it
            // (`GET /exec/{id}/json`) as soon as its stream has ended.
            record_end(&execs, &id, reap(child).await);
            let _ = wr.shutdown().await;
        } else {
            record_end(&execs, &id, reap(child).await);
        }
    });
    let content_type = if config.tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONNECTION, "Upgrade"),
            (header::UPGRADE, "tcp"),
        ],
    )
        .into_response())
}

fn record_end(execs: &Execs, id: &str, code: Option<i32>) {
    let _ = execs.with(id, |e| {
        e.running = false;
        e.exit_code = Some(code.unwrap_or(-1));
        e.master = None;
        e.pid = 0;
        e.pidfd = None;
        Ok(())
    });
}

/// Waits for `vessel exec` to end: its exit code (128+N for signal N).
async fn reap(mut child: Child) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let status = tokio::task::spawn_blocking(move || child.wait()).await.ok()?.ok()?;
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// The server's ends of a running exec's streams.
enum Io {
    /// The pty master (`vessel exec -t` has the slave).
    Tty(Arc<OwnedFd>),
    /// Pipes to `vessel exec`'s stdin (when attached), from its stdout and stderr.
    Pipes {
        stdin: Option<pipe::Sender>,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
    },
}

fn internal(what: &'static str) -> impl Fn(std::io::Error) -> ApiError {
    move |e| ApiError::internal(format!("{what}: {e}"))
}

fn spawn_pipes(cmd: &mut Command, stdin: bool) -> ApiResult<(Child, Io)> {
    cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(internal("start vessel exec"))?;
    let stdin = match child.stdin.take() {
        Some(s) => Some(pipe::Sender::from_owned_fd(OwnedFd::from(s)).map_err(internal("exec stdin pipe"))?),
        None => None,
    };
    let out = child
        .stdout
        .take()
        .ok_or_else(|| ApiError::internal("vessel exec has no stdout pipe"))?;
    let err = child
        .stderr
        .take()
        .ok_or_else(|| ApiError::internal("vessel exec has no stderr pipe"))?;
    let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(out)).map_err(internal("exec stdout pipe"))?;
    let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(err)).map_err(internal("exec stderr pipe"))?;
    Ok((child, Io::Pipes { stdin, stdout, stderr }))
}

/// Starts `cmd` on a new pty of `size` (`[rows, columns]`, else 0x0 until a resize).
fn spawn_tty(cmd: &mut Command, size: Option<[u16; 2]>) -> ApiResult<(Child, Io)> {
    use rustix::pty::{self, OpenptFlags};
    let sys = |what: &'static str| move |e: rustix::io::Errno| ApiError::internal(format!("{what}: {e}"));
    let master =
        pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).map_err(sys("open /dev/ptmx"))?;
    pty::grantpt(&master).map_err(sys("grantpt"))?;
    pty::unlockpt(&master).map_err(sys("unlockpt"))?;
    let slave = pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
        .map_err(sys("open the pty's slave"))?;
    // Raw from the start: what the client types reaches the container's own terminal
    // unchanged (that one echoes and edits lines).
    let mut t = rustix::termios::tcgetattr(&slave).map_err(sys("read the pty's settings"))?;
    t.make_raw();
    rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t).map_err(sys("raw pty"))?;
    if let Some([ws_row, ws_col]) = size {
        // `vessel exec -t` copies it to the container's terminal as it starts.
        let ws = rustix::termios::Winsize {
            ws_row,
            ws_col,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).map_err(sys("set the pty's size"))?;
    }
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(internal("dup the pty's slave"));
    cmd.stdin(Stdio::from(dup(&slave)?))
        .stdout(Stdio::from(dup(&slave)?))
        .stderr(Stdio::from(slave));
    let child = cmd.spawn().map_err(internal("start vessel exec -t"))?;
    rustix::fs::fcntl_setfl(&master, rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::RDWR)
        .map_err(sys("non-blocking pty"))?;
    Ok((child, Io::Tty(Arc::new(master))))
}

/// Copies the client's input to the exec's stdin until the client half-closes; then
/// the stdin pipe closes (EOF), as docker does for `exec -i`.
async fn feed(mut rd: impl tokio::io::AsyncRead + Unpin, stdin: Option<pipe::Sender>) {
    if let Some(mut input) = stdin {
        let _ = tokio::io::copy(&mut rd, &mut input).await;
    }
}

/// Copies between the client and the pty master (raw stream) until the pty ends
/// (every holder of the slave has gone: EIO on read).
async fn copy_tty(
    master: Arc<OwnedFd>,
    mut rd: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    want_in: bool,
) -> std::io::Result<()> {
    let fd = master.try_clone()?;
    // SAFETY: `fd` is our own duplicate of the pty master, owned by the AsyncFd from
    // here on: it stays open and the same until the AsyncFd is dropped.
    let afd = Arc::new(unsafe { AsyncFd::register(fd) }?);
    let input = {
        let afd = afd.clone();
        tokio::spawn(async move {
            if !want_in {
                return;
            }
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let mut at = 0;
                while at < n {
                    let Ok(mut g) = afd.writable().await else { return };
                    match g.try_io(|f| rustix::io::write(f.get_ref(), &buf[at..n]).map_err(std::io::Error::from)) {
                        Ok(Ok(w)) => at += w,
                        Ok(Err(_)) => return,
                        Err(_would_block) => continue,
                    }
                }
            }
        })
    };
    let mut buf = vec![0u8; 32 * 1024];
    let result = loop {
        let mut g = afd.readable().await?;
        match g.try_io(|f| rustix::io::read(f.get_ref(), &mut buf).map_err(std::io::Error::from)) {
            Ok(Ok(0)) | Ok(Err(_)) => break Ok(()),
            Ok(Ok(n)) => {
                if let Err(e) = wr.write_all(&buf[..n]).await {
                    break Err(e);
                }
                let _ = wr.flush().await;
            }
            Err(_would_block) => continue,
        }
    };
    input.abort();
    result
}
