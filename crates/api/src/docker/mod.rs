//! The Docker Engine API v1.41 (moby `api/swagger.yaml`, tag v20.10): the routes the
//! docker CLI's everyday commands use. Paths are served with any `/v1.NN` prefix and
//! without one. One file per group of the API: [`system`] (`_ping`, `version`,
//! `info`), [`containers`], [`attach`] (hijacked attach, log streams), [`images`],
//! [`exec`], [`archive`] (cp), [`stats`], [`events`], [`update`], [`df`] (`system df`), [`push`],
//! [`networks`], [`volumes`], [`prune`] (containers and images), [`auth`] (`docker login`).

pub mod archive;
pub mod attach;
pub mod auth;
pub mod containers;
pub mod df;
pub mod events;
pub mod exec;
pub mod images;
pub mod networks;
pub mod prune;
pub mod push;
pub mod stats;
pub mod system;
pub mod update;
pub mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use vessel_engine::{Engine, Paths};

use crate::error::{ApiError, ApiResult};

/// The API version served (what the docker 20.10 CLI speaks).
pub const API_VERSION: &str = "1.41";
/// The oldest version accepted in a `/v1.NN/` prefix.
pub const MIN_API_VERSION: &str = "1.12";
/// Largest request body accepted, bytes: a container config is a few KiB.
pub const MAX_BODY: usize = 1 << 20;

/// What every handler shares: where the instance lives, and the exit codes of
/// containers seen to end through a connection of this server (for a `wait` that
/// arrives after an `--rm` container is already gone).
#[derive(Clone)]
pub struct Ctx {
    /// The instance.
    pub paths: Paths,
    /// Container id → its last exit code, as its monitor told an attach or wait.
    pub exits: Arc<Mutex<HashMap<String, i32>>>,
    /// The exec instances made through this server.
    pub execs: exec::Execs,
}

impl Ctx {
    /// Runs `f` on the instance's engine in tokio's blocking pool (the engine's calls
    /// block: SQLite, the monitor's socket, mounts).
    pub async fn engine<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let paths = self.paths.clone();
        tokio::task::spawn_blocking(move || {
            let e = Engine::open(paths)?;
            f(&e)
        })
        .await
        .map_err(|e| ApiError::internal(format!("engine task failed: {e}")))?
    }

    /// Records the exit code of container `id`.
    pub fn exited(&self, id: &str, code: i32) {
        if let Ok(mut m) = self.exits.lock() {
            if m.len() > 1000 {
                m.clear();
            }
            m.insert(id.to_string(), code);
        }
    }

    /// The exit code recorded for `id`.
    pub fn exit_of(&self, id: &str) -> Option<i32> {
        self.exits.lock().ok().and_then(|m| m.get(id).copied())
    }
}

/// Parses a JSON request body into `T`: 400 with serde's words for malformed JSON or
/// wrong types; an empty body is `T::default()`.
pub fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON request body: {e}")))
}

/// A query flag as docker reads it: `1`, `true`, `True` are true.
pub fn flag(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE"))
}

/// Strips a `/v1.NN` prefix from the request path, so that one router serves every
/// version (and unversioned paths); every version is answered as ours, as podman does.
/// With `VESSEL_API_LOG` set in the environment, each request line goes to stderr.
pub async fn strip_version(mut req: Request) -> Request {
    if std::env::var_os("VESSEL_API_LOG").is_some() {
        eprintln!("vessel serve: {} {}", req.method(), req.uri());
    }
    let path = req.uri().path();
    let rest = path.strip_prefix("/v").and_then(|r| {
        let (v, tail) = r.split_once('/')?;
        let ok = v.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        ok.then(|| format!("/{tail}"))
    });
    if let Some(rest) = rest {
        let pq = match req.uri().query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!("page not found: {} {}", req.method(), req.uri().path()))
}

/// The router of the Docker API (unversioned paths: put [`strip_version`] before it).
pub fn router(paths: Paths) -> Router {
    let ctx = Ctx {
        paths,
        exits: Arc::default(),
        execs: exec::Execs::default(),
    };
    use containers as c;
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/auth", post(auth::auth))
        .route("/containers/json", get(c::list))
        .route("/containers/prune", post(prune::containers))
        .route("/containers/create", post(c::create))
        .route("/containers/{id}/json", get(c::inspect))
        .route("/containers/{id}/start", post(c::start))
        .route("/containers/{id}/stop", post(c::stop))
        .route("/containers/{id}/restart", post(c::restart))
        .route("/containers/{id}/kill", post(c::kill))
        .route("/containers/{id}/wait", post(c::wait))
        .route("/containers/{id}/pause", post(c::pause))
        .route("/containers/{id}/unpause", post(c::unpause))
        .route("/containers/{id}/rename", post(c::rename))
        .route("/containers/{id}/top", get(c::top))
        .route("/containers/{id}/logs", get(attach::logs))
        .route("/containers/{id}/attach", post(attach::attach))
        .route("/containers/{id}/resize", post(attach::resize))
        .route(
            "/containers/{id}/archive",
            get(archive::get).put(archive::put).layer(DefaultBodyLimit::disable()),
        )
        .route("/containers/{id}", axum::routing::delete(c::remove))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/containers/{id}/stats", get(stats::stats))
        .route("/containers/{id}/update", post(update::update))
        .route("/events", get(events::events))
        .route("/system/df", get(df::df))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/prune", post(prune::images))
        .route(
            "/images/{*name}",
            get(images::get_named).post(images::post_named).delete(images::remove),
        )
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route("/networks/{id}", get(networks::inspect).delete(networks::remove))
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route("/volumes/{name}", get(volumes::inspect).delete(volumes::remove))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}
