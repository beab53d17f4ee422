//! `/1.0/instances/{name}/...` and `/1.0/operations`: snapshots (list, create, show,
//! delete, and restore through `PUT /1.0/instances/{name}` with `{"restore": SNAP}`,
//! as Incus does), CRIU checkpoint and restore, and non-interactive exec with the
//! output recorded. Everything that takes time is an operation.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use vessel_engine::snapshots::{self, CreateOptions, SnapshotInfo};
use vessel_engine::{Engine, Error as EngineError};

use super::response::{async_op, error, sync, V1Result};
use super::V1;
use crate::docker::json_body;
use crate::error::ApiError;

/// Engine errors with the ones the Docker side does not know mapped (404 for a
/// missing snapshot).
fn engine_err(e: EngineError) -> ApiError {
    match &e {
        EngineError::NoSuchSnapshot { .. } => ApiError::not_found(e.to_string()),
        _ => e.into(),
    }
}

fn resources(name: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("instances".to_string(), vec![format!("/1.0/instances/{name}")])])
}

/// `?recursion=1`: objects instead of URLs.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Recursion {
    /// 0 (URLs, the default) or 1 (objects).
    #[serde(default)]
    pub recursion: Option<u8>,
}

/// `GET /1.0/instances/{name}/snapshots`: the snapshots' URLs, or with `recursion=1`
/// their [`SnapshotInfo`]s.
#[utoipa::path(get, path = "/1.0/instances/{name}/snapshots", tag = "snapshots",
    params(("name" = String, Path, description = "container name or id"), Recursion),
    responses((status = 200, description = "sync: URLs, or SnapshotInfo objects with recursion=1", body = super::response::Envelope),
        (status = 404, description = "no such container")))]
pub async fn snapshots_list(State(st): State<V1>, Path(name): Path<String>, Query(q): Query<Recursion>) -> V1Result {
    let all = st
        .engine(move |e| {
            let r = e.find(&name)?;
            Ok((r.name.clone(), snapshots::list(e, &r).map_err(engine_err)?))
        })
        .await?;
    if q.recursion.unwrap_or(0) >= 1 {
        return Ok(sync(all.1));
    }
    let urls: Vec<String> = all
        .1
        .iter()
        .map(|s| format!("/1.0/instances/{}/snapshots/{}", all.0, s.name))
        .collect();
    Ok(sync(urls))
}

/// `POST /1.0/instances/{name}/snapshots`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotsPost {
    /// The snapshot's name; the next `snapN` when missing.
    #[serde(default)]
    pub name: Option<String>,
    /// Also checkpoint the processes (CRIU).
    #[serde(default)]
    pub stateful: bool,
    /// Removal after this long (`7d`, as `vessel snapshot create --expiry`).
    #[serde(default)]
    pub expiry: Option<String>,
}

/// `POST /1.0/instances/{name}/snapshots`: take a snapshot (async; the operation's
/// metadata is the [`SnapshotInfo`] made).
#[utoipa::path(post, path = "/1.0/instances/{name}/snapshots", tag = "snapshots",
    params(("name" = String, Path, description = "container name or id")), request_body = SnapshotsPost,
    responses((status = 202, description = "async: operation", body = super::response::Envelope),
        (status = 404, description = "no such container")))]
pub async fn snapshot_create(State(st): State<V1>, Path(name): Path<String>, body: axum::body::Bytes) -> V1Result {
    let req: SnapshotsPost = json_body(&body)?;
    let n = name.clone();
    let paths = st.paths.clone();
    // Unknown containers are refused at once, not as a failed operation.
    st.engine(move |e| Ok(e.find(&n)?)).await?;
    let op = st.ops.spawn("Creating snapshot", resources(&name), move || {
        let e = Engine::open(paths)?;
        let r = e.find(&name)?;
        let info = snapshots::create(
            &e,
            &r,
            &CreateOptions {
                name: req.name,
                expiry: req.expiry,
                stateful: req.stateful,
            },
        )
        .map_err(engine_err)?;
        Ok(serde_json::to_value(info).unwrap_or_default())
    });
    Ok(async_op(&op))
}

/// `GET /1.0/instances/{name}/snapshots/{snapshot}`: one [`SnapshotInfo`].
#[utoipa::path(get, path = "/1.0/instances/{name}/snapshots/{snapshot}", tag = "snapshots",
    params(("name" = String, Path, description = "container name or id"), ("snapshot" = String, Path, description = "snapshot name")),
    responses((status = 200, description = "sync: SnapshotInfo", body = super::response::Envelope),
        (status = 404, description = "no such container or snapshot")))]
pub async fn snapshot_get(State(st): State<V1>, Path((name, snap)): Path<(String, String)>) -> V1Result {
    let info: SnapshotInfo = st
        .engine(move |e| {
            let r = e.find(&name)?;
            snapshots::show(e, &r, &snap).map_err(engine_err)
        })
        .await?;
    Ok(sync(info))
}

/// `DELETE /1.0/instances/{name}/snapshots/{snapshot}`: remove a snapshot (async).
#[utoipa::path(delete, path = "/1.0/instances/{name}/snapshots/{snapshot}", tag = "snapshots",
    params(("name" = String, Path, description = "container name or id"), ("snapshot" = String, Path, description = "snapshot name")),
    responses((status = 202, description = "async: operation", body = super::response::Envelope),
        (status = 404, description = "no such container or snapshot")))]
pub async fn snapshot_delete(State(st): State<V1>, Path((name, snap)): Path<(String, String)>) -> V1Result {
    let (n, s) = (name.clone(), snap.clone());
    st.engine(move |e| {
        let r = e.find(&n)?;
        snapshots::show(e, &r, &s).map_err(engine_err)
    })
    .await?;
    let paths = st.paths.clone();
    let op = st.ops.spawn("Deleting snapshot", resources(&name), move || {
        let e = Engine::open(paths)?;
        let r = e.find(&name)?;
        snapshots::remove(&e, &r, &snap).map_err(engine_err)?;
        Ok(serde_json::Value::Null)
    });
    Ok(async_op(&op))
}

/// `PUT /1.0/instances/{name}`'s body: only a restore is accepted here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstancePut {
    /// The snapshot to restore the container's files (and with `stateful`, its
    /// processes) from.
    pub restore: Option<String>,
    /// Restore the processes too (a `stateful` snapshot).
    #[serde(default)]
    pub stateful: bool,
}

/// `PUT /1.0/instances/{name}` with `{"restore": SNAPSHOT}`: restore a snapshot
/// (async), as Incus does.
#[utoipa::path(put, path = "/1.0/instances/{name}", tag = "snapshots",
    params(("name" = String, Path, description = "container name or id")), request_body = InstancePut,
    responses((status = 202, description = "async: operation", body = super::response::Envelope),
        (status = 400, description = "no restore given"), (status = 404, description = "no such container or snapshot")))]
pub async fn put_instance(State(st): State<V1>, Path(name): Path<String>, body: axum::body::Bytes) -> V1Result {
    let req: InstancePut = json_body(&body)?;
    let Some(snap) = req.restore else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "PUT /1.0/instances/{name} takes {\"restore\": SNAPSHOT} here; change other settings with vessel update",
        ));
    };
    let (n, s) = (name.clone(), snap.clone());
    st.engine(move |e| {
        let r = e.find(&n)?;
        snapshots::show(e, &r, &s).map_err(engine_err)
    })
    .await?;
    let paths = st.paths.clone();
    let op = st.ops.spawn("Restoring snapshot", resources(&name), move || {
        let e = Engine::open(paths)?;
        let r = e.find(&name)?;
        snapshots::restore(&e, &r, &snap, req.stateful).map_err(engine_err)?;
        reap_monitor(&e, &name);
        Ok(serde_json::Value::Null)
    });
    Ok(async_op(&op))
}

/// A monitor this server started (a stateful restore) is reaped by the server.
fn reap_monitor(e: &Engine, name: &str) {
    if let Ok(r) = e.find(name) {
        crate::reaper::reap_later(r.monitor_pid.unwrap_or(0));
    }
}

/// `POST /1.0/instances/{name}/checkpoint`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPost {
    /// Keep the container running after the dump.
    #[serde(default)]
    pub leave_running: bool,
    /// Dump established TCP connections.
    #[serde(default)]
    pub tcp_established: bool,
}

/// `POST /1.0/instances/{name}/checkpoint`: CRIU dump into the container's checkpoint
/// dir (async), as `vessel checkpoint`.
#[utoipa::path(post, path = "/1.0/instances/{name}/checkpoint", tag = "checkpoint",
    params(("name" = String, Path, description = "container name or id")), request_body = CheckpointPost,
    responses((status = 202, description = "async: operation", body = super::response::Envelope),
        (status = 404, description = "no such container")))]
pub async fn checkpoint(State(st): State<V1>, Path(name): Path<String>, body: axum::body::Bytes) -> V1Result {
    let req: CheckpointPost = json_body(&body)?;
    let n = name.clone();
    st.engine(move |e| Ok(e.find(&n)?)).await?;
    let paths = st.paths.clone();
    let op = st.ops.spawn("Checkpointing instance", resources(&name), move || {
        let e = Engine::open(paths)?;
        let r = e.find(&name)?;
        let dir = vessel_engine::checkpoint::images_dir(&e, &r.id);
        vessel_engine::checkpoint::dump_with(
            &e,
            &r.id,
            &dir,
            vessel_engine::checkpoint::DumpOptions {
                leave_running: req.leave_running,
                tcp_established: req.tcp_established,
                page_server: None,
            },
        )?;
        Ok(serde_json::Value::Null)
    });
    Ok(async_op(&op))
}

/// `POST /1.0/instances/{name}/restore`: restore the container from its checkpoint
/// (async), as `vessel restore`.
#[utoipa::path(post, path = "/1.0/instances/{name}/restore", tag = "checkpoint",
    params(("name" = String, Path, description = "container name or id")),
    responses((status = 202, description = "async: operation", body = super::response::Envelope),
        (status = 404, description = "no such container")))]
pub async fn restore(State(st): State<V1>, Path(name): Path<String>) -> V1Result {
    let n = name.clone();
    st.engine(move |e| Ok(e.find(&n)?)).await?;
    let paths = st.paths.clone();
    let op = st.ops.spawn("Restoring instance", resources(&name), move || {
        let e = Engine::open(paths)?;
        let r = e.find(&name)?;
        let pid =
            vessel_engine::checkpoint::restore_from(&e, &r.id, &vessel_engine::checkpoint::images_dir(&e, &r.id))?;
        reap_monitor(&e, &name);
        Ok(serde_json::json!({ "pid": pid }))
    });
    Ok(async_op(&op))
}

/// `POST /1.0/instances/{name}/exec`'s body (non-interactive, output recorded).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecPost {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Extra environment (`KEY` → value).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Working directory inside the container.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User (`uid[:gid]` or a name).
    #[serde(default)]
    pub user: Option<String>,
}

/// An exec operation's metadata once it ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    /// The command's exit code.
    #[serde(rename = "return")]
    pub return_code: i32,
    /// Its standard output (UTF-8, invalid bytes replaced; at most 16 MiB).
    pub stdout: String,
    /// Its standard error (likewise).
    pub stderr: String,
}

/// Largest output an exec records, per stream, bytes.
const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// `POST /1.0/instances/{name}/exec`: run a command in a running container, stdin
/// empty, output recorded (async; the operation's metadata is an [`ExecResult`]).
/// The command runs through `vessel exec` (fork+exec of this binary: the server never
/// forks itself).
#[utoipa::path(post, path = "/1.0/instances/{name}/exec", tag = "instances",
    params(("name" = String, Path, description = "container name or id")), request_body = ExecPost,
    responses((status = 202, description = "async: operation; metadata ExecResult", body = super::response::Envelope),
        (status = 400, description = "empty command"), (status = 404, description = "no such container")))]
pub async fn exec(State(st): State<V1>, Path(name): Path<String>, body: axum::body::Bytes) -> V1Result {
    let req: ExecPost = json_body(&body)?;
    if req.command.is_empty() {
        return Ok(error(StatusCode::BAD_REQUEST, "exec: give a command"));
    }
    if let Some(k) = req
        .environment
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            &format!("exec: environment name {k:?}: give names without '=' or NUL"),
        ));
    }
    let n = name.clone();
    st.engine(move |e| Ok(e.find(&n)?)).await?;
    let paths = st.paths.clone();
    let op = st.ops.spawn("Executing command", resources(&name), move || {
        let exe = std::env::current_exe().map_err(|e| ApiError::internal(format!("find vessel's binary: {e}")))?;
        let mut cmd = std::process::Command::new(exe);
        // `--remote local`: never sent on, whatever the server's environment says.
        cmd.arg("--root").arg(&paths.root).arg("--runroot").arg(&paths.runroot);
        cmd.args(["--remote", "local", "exec"]);
        for (k, v) in &req.environment {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        if let Some(w) = &req.cwd {
            cmd.arg("-w").arg(w);
        }
        if let Some(u) = &req.user {
            cmd.arg("-u").arg(u);
        }
        cmd.arg("--").arg(&name).args(&req.command);
        // The output goes to unlinked files, so that memory holds at most
        // MAX_EXEC_OUTPUT of each stream however much the command writes.
        let (mut out, mut err) = (output_file(&paths.root)?, output_file(&paths.root)?);
        let status = cmd
            .stdin(std::process::Stdio::null())
            .stdout(
                out.try_clone()
                    .map_err(|e| ApiError::internal(format!("exec output: {e}")))?,
            )
            .stderr(
                err.try_clone()
                    .map_err(|e| ApiError::internal(format!("exec output: {e}")))?,
            )
            .status()
            .map_err(|e| ApiError::internal(format!("run vessel exec: {e}")))?;
        let r = ExecResult {
            return_code: status.code().unwrap_or(-1),
            stdout: read_capped(&mut out),
            stderr: read_capped(&mut err),
        };
        Ok(serde_json::to_value(r).unwrap_or_default())
    });
    Ok(async_op(&op))
}

/// A new unlinked file under `ROOT/serve/tmp/` for an exec's output.
fn output_file(root: &std::path::Path) -> Result<std::fs::File, ApiError> {
    let dir = crate::tls::serve_dir(root).join("tmp");
    std::fs::create_dir_all(&dir).map_err(|e| ApiError::internal(format!("create {}: {e}", dir.display())))?;
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let path = dir.join(format!("exec-{}", crate::tls::hex(&b)));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ApiError::internal(format!("create {}: {e}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok(f)
}

/// The first [`MAX_EXEC_OUTPUT`] bytes of `f` from its start, as UTF-8 (invalid bytes
/// replaced).
fn read_capped(f: &mut std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(0)).is_ok() {
        let _ = f.take(MAX_EXEC_OUTPUT as u64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `GET /1.0/operations`: the operations' URLs.
#[utoipa::path(get, path = "/1.0/operations", tag = "operations",
    responses((status = 200, description = "sync: URLs", body = super::response::Envelope)))]
pub async fn operations_list(State(st): State<V1>) -> V1Result {
    let urls: Vec<String> = st
        .ops
        .ids()
        .into_iter()
        .map(|id| format!("/1.0/operations/{id}"))
        .collect();
    Ok(sync(urls))
}

/// `GET /1.0/operations/{id}`: an operation.
#[utoipa::path(get, path = "/1.0/operations/{id}", tag = "operations",
    params(("id" = String, Path, description = "operation id")),
    responses((status = 200, description = "sync: Operation", body = super::response::Envelope),
        (status = 404, description = "no such operation")))]
pub async fn operation_get(State(st): State<V1>, Path(id): Path<String>) -> V1Result {
    match st.ops.get(&id) {
        Some(op) => Ok(sync(op)),
        None => Ok(no_op(&id)),
    }
}

fn no_op(id: &str) -> axum::response::Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no operation {id}: it ended long ago or never was"),
    )
}

/// `?timeout=S` of `/wait`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait at most; -1 or missing: until it ends.
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// `GET /1.0/operations/{id}/wait?timeout=S`: the operation once it ended (or as it is
/// when the timeout passed).
#[utoipa::path(get, path = "/1.0/operations/{id}/wait", tag = "operations",
    params(("id" = String, Path, description = "operation id"), WaitQuery),
    responses((status = 200, description = "sync: Operation", body = super::response::Envelope),
        (status = 404, description = "no such operation")))]
pub async fn operation_wait(State(st): State<V1>, Path(id): Path<String>, Query(q): Query<WaitQuery>) -> V1Result {
    let timeout = q.timeout.filter(|t| *t >= 0).map(|t| Duration::from_secs(t as u64));
    match st.ops.wait(&id, timeout).await {
        Some(op) => Ok(sync(op)),
        None => Ok(no_op(&id)),
    }
}
