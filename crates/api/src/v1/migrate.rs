//! The target's side of `vessel migrate` over the API (mutual TLS only, like every
//! `/1.0` route on `vessel serve --listen`):
//!
//! - `POST /1.0/migrations/{token}/receive`: upgrades the connection (`Connection:
//!   Upgrade`, `Upgrade: tcp`, as docker's attach) and runs `vessel migrate-receive
//!   --token TOKEN` with the upgraded stream as its stdin and its stdout sent back on
//!   it (the protocol of [`vessel_engine::migrate::receive`]). The port of the CRIU
//!   page server it announces (`PAGES <port>`) is recorded for this migration while
//!   the receiver runs.
//! - `POST /1.0/migrations/{token}/pages/{port}`: upgrades the connection and joins it
//!   to `127.0.0.1:port` on the server, only when `port` is the page server that the
//!   receive of `token` announced and still runs: any other port is refused (403), so
//!   the endpoint is no proxy to the server's loopback.
//! - `GET /1.0/migrations/{token}`: `migrate-receive --status TOKEN`'s answer
//!   (`running NAME` or `absent`) in `metadata.status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::response::{error, sync, V1Result};
use super::V1;
use crate::error::ApiError;

/// The page-server ports of the receives that run: port → token.
#[derive(Clone, Default)]
pub struct PagePorts(Arc<Mutex<HashMap<u16, String>>>);

impl PagePorts {
    fn add(&self, port: u16, token: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(port, token.to_string());
        }
    }

    fn remove(&self, token: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.retain(|_, t| t != token);
        }
    }

    fn allowed(&self, port: u16, token: &str) -> bool {
        self.0.lock().is_ok_and(|m| m.get(&port).is_some_and(|t| t == token))
    }
}

/// A migration token as the engine makes them: 1 to 64 hex digits.
fn check_token(token: &str) -> Result<(), ApiError> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad(format!("migration token {token:?}: expected hex digits")));
    }
    Ok(())
}

fn wants_upgrade(req: &Request) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"tcp"))
}

fn need_upgrade(what: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        &format!("{what} needs an upgraded connection: send `Connection: Upgrade` and `Upgrade: tcp`"),
    )
}

fn switching() -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "Upgrade"), (header::UPGRADE, "tcp")],
    )
        .into_response()
}

/// `vessel --root R --runroot RR --remote local migrate-receive ARGS`.
fn receiver(st: &V1, args: &[&str]) -> Result<tokio::process::Command, ApiError> {
    let exe = std::env::current_exe().map_err(|e| ApiError::internal(format!("find vessel's binary: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--root")
        .arg(&st.paths.root)
        .arg("--runroot")
        .arg(&st.paths.runroot)
        .args(["--remote", "local", "migrate-receive"])
        .args(args);
    Ok(cmd)
}

/// `POST /1.0/migrations/{token}/receive` (upgraded): the receiving side of a
/// migration on the upgraded stream.
#[utoipa::path(post, path = "/1.0/migrations/{token}/receive", tag = "migration",
    params(("token" = String, Path, description = "the migration's token (hex)")),
    responses((status = 101, description = "upgraded (`Upgrade: tcp`): the stream is vessel migrate-receive's stdin and stdout"),
        (status = 400, description = "a bad token, or no `Upgrade: tcp`")))]
pub async fn receive(State(st): State<V1>, Path(token): Path<String>, mut req: Request) -> V1Result {
    check_token(&token)?;
    if !wants_upgrade(&req) {
        return Ok(need_upgrade("migrate-receive"));
    }
    let mut child = receiver(&st, &["--token", &token])?
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ApiError::internal(format!("start vessel migrate-receive: {e}")))?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ApiError::internal("vessel migrate-receive has no pipes").into());
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ports = st.pages.clone();
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else {
            // No stream: closing its input makes the receiver abort (before COMMIT).
            drop(stdin);
            let _ = child.wait().await;
            return;
        };
        let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
        let feed = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut rd, &mut stdin).await;
            let _ = stdin.shutdown().await;
        });
        let mut out = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            match out.read_line(&mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(p) = line
                .trim_end()
                .strip_prefix("PAGES ")
                .and_then(|p| p.parse::<u16>().ok())
            {
                ports.add(p, &token);
            }
            if wr.write_all(line.as_bytes()).await.and(wr.flush().await).is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
        let _ = child.wait().await;
        ports.remove(&token);
        feed.abort();
    });
    Ok(switching())
}

/// `POST /1.0/migrations/{token}/pages/{port}` (upgraded): the stream joined to the
/// page server of the receive `token`; 403 for any other port.
#[utoipa::path(post, path = "/1.0/migrations/{token}/pages/{port}", tag = "migration",
    params(("token" = String, Path, description = "the migration's token (hex)"),
        ("port" = u16, Path, description = "the page-server port the receive announced")),
    responses((status = 101, description = "upgraded (`Upgrade: tcp`): the stream is joined to 127.0.0.1:port"),
        (status = 403, description = "the port is not the page server of that running receive")))]
pub async fn pages(State(st): State<V1>, Path((token, port)): Path<(String, u16)>, mut req: Request) -> V1Result {
    check_token(&token)?;
    if !st.pages.allowed(port, &token) {
        return Ok(error(
            StatusCode::FORBIDDEN,
            &format!("port {port} is not the page server of running migration {token}: only that port is tunnelled"),
        ));
    }
    if !wants_upgrade(&req) {
        return Ok(need_upgrade("the page-server tunnel"));
    }
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| ApiError::internal(format!("connect to the page server on 127.0.0.1:{port}: {e}")))?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let mut up = TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut up, &mut tcp).await;
    });
    Ok(switching())
}

/// `GET /1.0/migrations/{token}`: the outcome of the receive `token` (`running NAME`
/// or `absent`), waiting while it runs.
#[utoipa::path(get, path = "/1.0/migrations/{token}", tag = "migration",
    params(("token" = String, Path, description = "the migration's token (hex)")),
    responses((status = 200, description = "sync: {status: `running NAME` | `absent`}", body = super::response::Envelope)))]
pub async fn status(State(st): State<V1>, Path(token): Path<String>) -> V1Result {
    check_token(&token)?;
    let out = receiver(&st, &["--status", &token])?
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| ApiError::internal(format!("run vessel migrate-receive --status: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::internal(format!(
            "vessel migrate-receive --status {token} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(sync(serde_json::json!({ "status": text })))
}
