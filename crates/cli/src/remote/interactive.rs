//! `vessel --remote NAME` for the commands that carry a container's streams: `run` in
//! the foreground, `start -a`, `attach` and `exec` (with and without `-i` and `-t`).
//!
//! They use the Docker Engine API's hijacked connections, as the docker CLI does:
//! `POST /containers/{id}/attach` and `POST /exec/{id}/start` with `Connection:
//! Upgrade` and `Upgrade: tcp`, answered `101`, after which the connection (still
//! inside the mutual-TLS session) carries raw bytes both ways: the local stdin up, the
//! output down (docker's 8-byte frames without a tty, raw bytes with one). Chosen over
//! `/1.0`'s exec because the server side exists for both attach and exec and is proven
//! against the docker CLI, and because the end of stdin travels as a half-close of the
//! sending side (TLS close_notify, then TCP FIN), which the server turns into the
//! process's EOF; websockets would need a framing and a control channel of their own.
//!
//! With a tty the local terminal is in raw mode while the session lasts (restored when
//! it ends, on errors too), its size is sent before the process starts (`ConsoleSize`
//! of the exec, `POST /containers/{id}/resize` before the start) and again on each
//! SIGWINCH, and ctrl-p ctrl-q detaches (docker's default keys). Without a tty, the
//! signals this client gets (INT, TERM, HUP, QUIT, USR1, USR2) go to the container
//! (docker's sig-proxy) during `run`, `start -a` and `attach`. The exit code comes
//! back through `wait` (containers) or `GET /exec/{id}/json` (execs).

use std::io::{IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use http_body_util::BodyExt;
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use vessel_api::client::{query_escape, Remote};

use crate::containers as c;

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The remote ended the stream (the process's output is complete).
    Done,
    /// The user typed the detach keys: the process runs on.
    Detached,
}

/// The local terminal's size, (rows, columns): stdin's, else stdout's.
pub(super) fn local_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin())
        .or_else(|_| rustix::termios::tcgetwinsize(std::io::stdout()))
        .ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Docker's multiplexed stream taken apart: 8-byte headers `[stream, 0, 0, 0,
/// length (u32 big-endian)]`, then the payload; stream 2 is stderr, the rest stdout.
#[derive(Default)]
pub(super) struct Demux {
    buf: Vec<u8>,
}

impl Demux {
    /// Adds `data` and writes every whole frame to `out` or `err`.
    pub(super) fn push(&mut self, data: &[u8], out: &mut impl Write, err: &mut impl Write) -> std::io::Result<()> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        while self.buf.len() - at >= 8 {
            let h = &self.buf[at..at + 8];
            let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if self.buf.len() - at < 8 + len {
                break;
            }
            let payload = &self.buf[at + 8..at + 8 + len];
            if h[0] == 2 {
                err.write_all(payload)?;
                err.flush()?;
            } else {
                out.write_all(payload)?;
                out.flush()?;
            }
            at += 8 + len;
        }
        self.buf.drain(..at);
        Ok(())
    }
}

/// What the stdin reader hands over.
enum Input {
    Data(Vec<u8>),
    Eof,
    Detach,
}

/// Reads stdin on a thread of its own (a blocking read never holds up the runtime, and
/// the process may end while it waits). With `tty`, ctrl-p ctrl-q is the detach
/// sequence and is not forwarded.
fn read_stdin(tty: bool) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        let mut ctrl_p = false;
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => 0,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            if n == 0 {
                let _ = tx.blocking_send(Input::Eof);
                return;
            }
            let mut data = Vec::with_capacity(n + 1);
            for &b in &buf[..n] {
                if tty && ctrl_p {
                    ctrl_p = false;
                    if b == 0x11 {
                        let _ = tx.blocking_send(Input::Detach);
                        return;
                    }
                    data.push(0x10);
                }
                if tty && b == 0x10 {
                    ctrl_p = true;
                    continue;
                }
                data.push(b);
            }
            if !data.is_empty() && tx.blocking_send(Input::Data(data)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn next_input(input: &mut Option<mpsc::Receiver<Input>>) -> Input {
    match input {
        Some(rx) => rx.recv().await.unwrap_or(Input::Eof),
        None => std::future::pending().await,
    }
}

async fn next_winch(s: &mut Option<Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends the local terminal's size to `path` (`.../resize`); a failure changes nothing
/// but the remote terminal's size, so it is not fatal (the process may have ended).
async fn send_size(remote: &Remote, path: &str) {
    if let Some((h, w)) = local_size() {
        let _ = remote
            .docker::<Value>(Method::POST, &format!("{path}?h={h}&w={w}"), None)
            .await;
    }
}

/// SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 as they arrive here (the
/// signals docker's sig-proxy and the local `vessel run` pass on), with their numbers.
struct Proxied(Vec<(Signal, i32)>);

impl Proxied {
    fn new() -> Proxied {
        let kinds = [
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::quit(), libc::SIGQUIT),
            (SignalKind::user_defined1(), libc::SIGUSR1),
            (SignalKind::user_defined2(), libc::SIGUSR2),
        ];
        Proxied(
            kinds
                .into_iter()
                .filter_map(|(k, n)| signal(k).ok().map(|s| (s, n)))
                .collect(),
        )
    }

    /// The next signal's number (never, without handlers).
    async fn next(&mut self) -> i32 {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for (s, n) in self.0.iter_mut() {
                if let std::task::Poll::Ready(Some(())) = s.poll_recv(cx) {
                    return std::task::Poll::Ready(*n);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Carries one hijacked stream: stdin up (when `stdin`; its end is a half-close),
/// the output down (demultiplexed unless `tty`) until the remote ends it. With a tty,
/// SIGWINCH sends the new size to `resize_path`; without one, signals to this client
/// go to `container` (`POST /containers/{id}/kill?signal=N`), as docker's sig-proxy.
async fn pump(
    remote: &Remote,
    stream: hyper::upgrade::Upgraded,
    tty: bool,
    stdin: bool,
    resize_path: &str,
    container: Option<&str>,
) -> Result<End> {
    let mut proxied = match container {
        Some(_) if !tty => Proxied::new(),
        _ => Proxied(Vec::new()),
    };
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(stream));
    let mut input = stdin.then(|| read_stdin(tty));
    let mut winch = if tty {
        signal(SignalKind::window_change()).ok()
    } else {
        None
    };
    let mut demux = Demux::default();
    let mut buf = vec![0u8; 32 * 1024];
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                // A read error is the connection ended without TLS's close_notify: the
                // stream is over either way.
                let n = r.unwrap_or(0);
                if n == 0 {
                    return Ok(End::Done);
                }
                if tty {
                    out.write_all(&buf[..n]).context("write to stdout")?;
                    out.flush().context("write to stdout")?;
                } else {
                    demux.push(&buf[..n], &mut out, &mut err).context("write the output")?;
                }
            }
            i = next_input(&mut input) => match i {
                Input::Data(d) => {
                    if wr.write_all(&d).await.is_err() || wr.flush().await.is_err() {
                        // The remote no longer reads: its output still comes.
                        input = None;
                    }
                }
                Input::Eof => {
                    let _ = wr.shutdown().await;
                    input = None;
                }
                Input::Detach => return Ok(End::Detached),
            },
            Some(()) = next_winch(&mut winch) => send_size(remote, resize_path).await,
            n = proxied.next() => {
                if let Some(id) = container {
                    let path = format!("/v1.41/containers/{}/kill?signal={n}", query_escape(id));
                    // A container that has just ended refuses it: nothing to pass on then.
                    let _ = remote.docker::<Value>(Method::POST, &path, None).await;
                }
            }
        }
    }
}

/// The local terminal in raw mode when a tty session reads from it.
fn raw_mode(tty: bool, stdin: bool) -> Option<vessel_runtime::foreground::RawMode> {
    (tty && stdin && std::io::stdin().is_terminal()).then(vessel_runtime::foreground::RawMode::enter)
}

/// Attaches to container `id` (starting it with `start`): its streams here until it
/// ends; its exit code (0 when detached).
pub(super) async fn foreground(remote: &Remote, id: &str, stdin: bool, tty: bool, start: bool) -> Result<i32> {
    let q = query_escape(id);
    let stream = remote
        .upgrade_with(
            Method::POST,
            &format!(
                "/v1.41/containers/{q}/attach?stream=1&stdin={}&stdout=1&stderr=1",
                u8::from(stdin)
            ),
            None,
        )
        .await?;
    // The wait is registered (its headers come once the server watches) before the
    // start, so that an exit right after the start is not missed.
    let condition = if start { "next-exit" } else { "not-running" };
    let waiting = remote
        .request_stream(
            Method::POST,
            &format!("/v1.41/containers/{q}/wait?condition={condition}"),
            "application/json",
            http_body_util::Empty::<hyper::body::Bytes>::new(),
        )
        .await?;
    if !waiting.status().is_success() {
        bail!("wait for container {id} on the remote: HTTP {}", waiting.status());
    }
    let resize_path = format!("/v1.41/containers/{q}/resize");
    let _raw = raw_mode(tty, stdin);
    if tty {
        send_size(remote, &resize_path).await;
    }
    if start {
        remote.start(id).await?;
    }
    if pump(remote, stream, tty, stdin, &resize_path, Some(id)).await? == End::Detached {
        return Ok(0);
    }
    let body = waiting
        .into_body()
        .collect()
        .await
        .context("read the container's exit code from the remote")?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).context("the remote's wait answer")?;
    v["StatusCode"]
        .as_i64()
        .map(|c| c as i32)
        .with_context(|| format!("the remote did not tell the exit code of {id}"))
}

/// `vessel --remote R attach NAME`.
pub(super) async fn attach(remote: &Remote, a: &c::AttachArgs) -> Result<i32> {
    let info = remote.inspect(&a.container).await?;
    if info["State"]["Running"] != true {
        bail!(
            "container {} is not running: start it with `vessel start -a`",
            a.container
        );
    }
    let id = info["Id"].as_str().unwrap_or(&a.container).to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = info["Config"]["OpenStdin"].as_bool().unwrap_or(false) && !a.no_stdin;
    foreground(remote, &id, stdin, tty, false).await
}

/// `vessel --remote R start -a [-i] NAME`.
pub(super) async fn start_attached(remote: &Remote, a: &c::StartArgs) -> Result<i32> {
    let [one] = a.containers.as_slice() else {
        bail!("start --attach takes one container");
    };
    let info = remote.inspect(one).await?;
    let id = info["Id"].as_str().unwrap_or(one).to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    foreground(remote, &id, a.interactive, tty, true).await
}

/// `-e K=V` as given; `-e K` takes K's value here (left out when K is unset), as the
/// docker CLI does.
pub(super) fn env_list(given: &[String]) -> Vec<String> {
    given
        .iter()
        .filter_map(|e| match e.contains('=') {
            true => Some(e.clone()),
            false => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect()
}

/// `vessel --remote R exec [-i] [-t] [-d] NAME CMD...`.
pub(super) async fn exec(remote: &Remote, a: &c::ExecArgs) -> Result<i32> {
    let size = if a.tty { local_size() } else { None };
    let console = size.map(|(h, w)| json!([h, w]));
    let attached = !a.detach;
    let body = json!({
        "AttachStdin": a.interactive && attached,
        "AttachStdout": attached,
        "AttachStderr": attached,
        "Tty": a.tty,
        "Env": env_list(&a.env),
        "Cmd": a.command,
        "Privileged": a.privileged,
        "User": a.user.clone().unwrap_or_default(),
        "WorkingDir": a.workdir.clone().unwrap_or_default(),
        "ConsoleSize": console,
    });
    let made: Value = remote
        .docker(
            Method::POST,
            &format!("/v1.41/containers/{}/exec", query_escape(&a.container)),
            Some(&body),
        )
        .await?;
    let eid = made["Id"]
        .as_str()
        .context("the remote's exec create gave no Id")?
        .to_string();
    let start_path = format!("/v1.41/exec/{eid}/start");
    let start = json!({"Detach": a.detach, "Tty": a.tty, "ConsoleSize": console});
    if a.detach {
        remote.docker::<Value>(Method::POST, &start_path, Some(&start)).await?;
        return Ok(0);
    }
    let stream = remote.upgrade_with(Method::POST, &start_path, Some(&start)).await?;
    let _raw = raw_mode(a.tty, a.interactive);
    if pump(
        remote,
        stream,
        a.tty,
        a.interactive,
        &format!("/v1.41/exec/{eid}/resize"),
        None,
    )
    .await?
        == End::Detached
    {
        return Ok(0);
    }
    let info: Value = remote
        .docker(Method::GET, &format!("/v1.41/exec/{eid}/json"), None)
        .await?;
    info["ExitCode"]
        .as_i64()
        .map(|c| c as i32)
        .context("the remote did not tell the exec's exit code")
}
