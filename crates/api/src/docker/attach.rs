//! The container's streams: `POST /containers/{id}/attach` (a hijacked connection:
//! HTTP 101, then the raw byte stream both ways), `POST /containers/{id}/resize` (its
//! terminal's size) and `GET /containers/{id}/logs`.
//! Without a tty, output is multiplexed: each chunk is framed by an 8-byte header
//! `[stream, 0, 0, 0, len(u32 big-endian)]` (1 stdout, 2 stderr); with a tty it is raw
//! (swagger: "Stream format" under ContainerAttach).
//!
//! The monitor writes the container's output to pipes this server passes it
//! ([`vessel_engine::Engine::attach_fds`]); tasks copy between them and the client.
//! A client that goes away closes the pipes: the monitor's writes then fail with
//! EPIPE and it carries on with the log alone.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use vessel_engine::containers::Health;

use super::{flag, Ctx};
use crate::error::{ApiError, ApiResult};

/// The header of one multiplexed frame of `stream` (1 stdout, 2 stderr) of `len` bytes.
pub fn frame_header(stream: u8, len: usize) -> [u8; 8] {
    let n = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [stream, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

/// Waits on a monitor's socket ([`vessel_engine::Engine::watch`]) for the exit code;
/// -1 when the monitor went away without telling it.
pub async fn exit_of(sock: OwnedFd) -> i32 {
    if rustix::fs::fcntl_setfl(&sock, rustix::fs::OFlags::NONBLOCK).is_err() {
        return -1;
    }
    // SAFETY: `sock` is an open descriptor that the AsyncFd owns from here on: it
    // stays open and the same until the AsyncFd is dropped.
    let Ok(afd) = (unsafe { AsyncFd::register(sock) }) else {
        return -1;
    };
    loop {
        let Ok(mut guard) = afd.readable().await else { return -1 };
        match vessel_engine::wire::recv(afd.get_ref()) {
            Ok(Some((msg, _))) => {
                if let Some(code) = vessel_engine::containers::parse_exit(&msg) {
                    return code;
                }
            }
            Ok(None) => return -1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
            Err(_) => return -1,
        }
    }
}

fn os_pipe() -> ApiResult<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| ApiError::internal(format!("pipe for an attach: {e}")))
}

/// `POST /containers/{id}/attach?stream&stdin&stdout&stderr`: upgrades the
/// connection (the client must ask `Connection: Upgrade`, `Upgrade: tcp`), then
/// copies the container's output to it and, with `stdin`, its input to the
/// container, until the container's output ends.
pub async fn attach(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"));
    if !upgrade {
        return Err(ApiError::bad(
            "attach needs a hijacked connection: send `Connection: Upgrade` and `Upgrade: tcp`",
        ));
    }
    let (stdin, stdout, stderr) = (flag(q.get("stdin")), flag(q.get("stdout")), flag(q.get("stderr")));
    let (out_r, out_w) = os_pipe()?;
    let (err_r, err_w) = os_pipe()?;
    let (in_r, in_w) = os_pipe()?;
    let (rec, sock) = ctx
        .engine(move |e| {
            let r = e.find(&id)?;
            let a = e.attach_fds(&r, stdin, false, [in_r.as_fd(), out_w.as_fd(), err_w.as_fd()])?;
            // Our copies of the monitor's ends go here: the pipes end when it lets go.
            drop((in_r, out_w, err_w));
            Ok((r, a.into_socket()))
        })
        .await?;
    let tty = rec.options.tty;
    let out = pipe::Receiver::from_owned_fd(out_r).map_err(|e| ApiError::internal(format!("attach pipe: {e}")))?;
    let err = pipe::Receiver::from_owned_fd(err_r).map_err(|e| ApiError::internal(format!("attach pipe: {e}")))?;
    let input = pipe::Sender::from_owned_fd(in_w).map_err(|e| ApiError::internal(format!("attach pipe: {e}")))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = rec.id.clone();
    let exits = ctx.clone();
    // Holds the monitor's attach socket until the exit code comes; aborted (the socket
    // closed, so the monitor lets go of its end too) when the client goes first.
    let exit_task = tokio::spawn(async move {
        let code = exit_of(sock).await;
        if code >= 0 {
            exits.exited(&id, code);
        }
    });
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            exit_task.abort();
            return;
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
        let (gone_tx, mut gone_rx) = tokio::sync::oneshot::channel::<()>();
        let feed = tokio::spawn(async move {
            let mut input = input;
            // EOF is the client closing its sending side only (it still reads the
            // output); an error is the client gone. A client that closes its socket
            // without error is found gone at the next output the copy fails to write.
            // Input the container no longer reads (its stdin closed) is dropped.
            let mut feeding = stdin;
            let mut buf = vec![0u8; 16 * 1024];
            let gone = loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break false,
                    Ok(n) => {
                        if feeding && input.write_all(&buf[..n]).await.is_err() {
                            feeding = false;
                        }
                    }
                    Err(_) => break true,
                }
            };
            // Dropping `input` closes the container's stdin (EOF), as docker does.
            drop(input);
            if gone {
                let _ = gone_tx.send(());
            }
        });
        let client_gone = tokio::select! {
            r = copy_out(out, err, &mut wr, tty, stdout, stderr) => r.is_err(),
            Ok(()) = &mut gone_rx => true,
        };
        let _ = wr.shutdown().await;
        feed.abort();
        if client_gone {
            exit_task.abort();
        }
    });
    let content_type = if tty {
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

/// `POST /containers/{id}/resize?h=&w=`: the size of the container's terminal, rows
/// and columns (swagger ContainerResize); the monitor sets it on the pty, which
/// signals SIGWINCH to the container's foreground process. Works on a created
/// container too (its pty exists from create on), so a client can size it before
/// the start. A container without a tty: 200, nothing changes.
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
    ctx.engine(move |e| {
        let r = e.find(&id)?;
        e.watch(&r)?.resize_to(h, w);
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// Copies stdout and stderr to `wr` (framed unless `tty`) until both end or the
/// client goes; streams not asked for are read and dropped.
pub(crate) async fn copy_out(
    mut out: pipe::Receiver,
    mut err: pipe::Receiver,
    wr: &mut (impl tokio::io::AsyncWrite + Unpin),
    tty: bool,
    want_out: bool,
    want_err: bool,
) -> std::io::Result<()> {
    let (mut ob, mut eb) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let (mut out_open, mut err_open) = (true, true);
    while out_open || err_open {
        let (stream, n) = tokio::select! {
            r = out.read(&mut ob), if out_open => (1u8, r?),
            r = err.read(&mut eb), if err_open => (2u8, r?),
        };
        if n == 0 {
            if stream == 1 {
                out_open = false;
            } else {
                err_open = false;
            }
            continue;
        }
        let (data, wanted) = if stream == 1 {
            (&ob[..n], want_out)
        } else {
            (&eb[..n], want_err)
        };
        if !wanted {
            continue;
        }
        if !tty {
            wr.write_all(&frame_header(stream, n)).await?;
        }
        wr.write_all(data).await?;
        wr.flush().await?;
    }
    Ok(())
}

/// A `Write` that sends each write as one chunk (framed unless `tty`) to a response
/// body; fails once the client has gone.
struct Chunks {
    tx: mpsc::Sender<Bytes>,
    stream: u8,
    tty: bool,
}

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut chunk = Vec::with_capacity(buf.len() + 8);
        if !self.tty {
            chunk.extend_from_slice(&frame_header(self.stream, buf.len()));
        }
        chunk.extend_from_slice(buf);
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /containers/{id}/logs?stdout&stderr&follow&tail&timestamps`: the log
/// (framed unless the container has a tty). With `follow`, until the container
/// exits or the client goes.
pub async fn logs(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let follow = flag(q.get("follow"));
    let (want_out, want_err) = (flag(q.get("stdout")), flag(q.get("stderr")));
    if !want_out && !want_err {
        return Err(ApiError::bad("logs needs stdout=1, stderr=1 or both"));
    }
    let tail = match q.get("tail").map(String::as_str) {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad(format!("invalid tail={n:?}: give a number or all")))?,
        ),
    };
    let opts = vessel_engine::logs::ReadOptions {
        tail,
        timestamps: flag(q.get("timestamps")),
    };
    let rec = ctx.engine(move |e| Ok(e.find(&id)?)).await?;
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let paths = ctx.paths.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(engine) = vessel_engine::Engine::open(paths) else {
            return;
        };
        let closed = tx.clone();
        let mut running = || {
            !closed.is_closed()
                && engine
                    .db
                    .get(&rec.id)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.state.is_live() && engine.health(&r) == Health::Ok)
        };
        let tty = rec.options.tty;
        let mut out: Box<dyn Write> = if want_out {
            Box::new(Chunks {
                tx: tx.clone(),
                stream: 1,
                tty,
            })
        } else {
            Box::new(std::io::sink())
        };
        let mut err: Box<dyn Write> = if want_err {
            Box::new(Chunks {
                tx: tx.clone(),
                stream: 2,
                tty,
            })
        } else {
            Box::new(std::io::sink())
        };
        drop(tx);
        let _ = vessel_engine::logs::read(
            &engine.paths.log(&rec.id),
            &opts,
            follow,
            &mut running,
            &mut out,
            &mut err,
        );
    });
    let body =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::convert::Infallible>)));
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.docker.raw-stream")],
        Body::from_stream(body),
    )
        .into_response())
}
