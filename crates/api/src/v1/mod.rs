//! vessel's own API at `/1.0`, in Incus's shape ([`response`]): what the Docker API
//! lacks. [`server`] (`GET /1.0`, `GET /1.0/resources`), [`certificates`] (the trust
//! store; how a client joins with a token), [`operations`] (long work),
//! [`instances`] (snapshots, checkpoint and restore, exec), [`backup`] (a container
//! streamed out and in as a backup archive, for moving it between hosts), [`migrate`]
//! (the receiving side of `vessel migrate` on upgraded connections), [`openapi`]
//! (`GET /openapi.json`, generated with utoipa from the handlers' annotations).

pub mod backup;
pub mod certificates;
pub mod instances;
pub mod migrate;
pub mod openapi;
pub mod operations;
pub mod response;
pub mod server;

use axum::routing::{get, post};
use axum::Router;
use vessel_engine::{Engine, Paths};

use crate::error::{ApiError, ApiResult};
use operations::Operations;

/// The `/1.0` API's version string.
pub const API_VERSION: &str = "1.0";

/// What the `/1.0` handlers share.
#[derive(Clone)]
pub struct V1 {
    /// The instance.
    pub paths: Paths,
    /// The server's operations.
    pub ops: Operations,
    /// The page-server ports of the migrations being received ([`migrate`]).
    pub pages: migrate::PagePorts,
}

impl V1 {
    /// Runs `f` on the instance's engine in tokio's blocking pool.
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
}

/// The `/1.0` routes and `/openapi.json`.
pub fn router(paths: Paths) -> Router {
    let st = V1 {
        paths,
        ops: Operations::default(),
        pages: migrate::PagePorts::default(),
    };
    use instances as i;
    Router::new()
        .route("/1.0", get(server::info))
        .route("/1.0/resources", get(server::resources))
        .route("/1.0/certificates", get(certificates::list).post(certificates::add))
        .route(
            "/1.0/certificates/{fingerprint}",
            axum::routing::delete(certificates::remove),
        )
        .route("/1.0/operations", get(i::operations_list))
        .route("/1.0/operations/{id}", get(i::operation_get))
        .route("/1.0/operations/{id}/wait", get(i::operation_wait))
        .route(
            "/1.0/instances",
            post(backup::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/1.0/instances/{name}/backup", get(backup::download))
        .route("/1.0/instances/{name}", axum::routing::put(i::put_instance))
        .route(
            "/1.0/instances/{name}/snapshots",
            get(i::snapshots_list).post(i::snapshot_create),
        )
        .route(
            "/1.0/instances/{name}/snapshots/{snapshot}",
            get(i::snapshot_get).delete(i::snapshot_delete),
        )
        .route("/1.0/instances/{name}/checkpoint", post(i::checkpoint))
        .route("/1.0/instances/{name}/restore", post(i::restore))
        .route("/1.0/instances/{name}/exec", post(i::exec))
        .route("/1.0/migrations/{token}", get(migrate::status))
        .route("/1.0/migrations/{token}/receive", post(migrate::receive))
        .route("/1.0/migrations/{token}/pages/{port}", post(migrate::pages))
        .route("/openapi.json", get(openapi::document))
        .layer(axum::extract::DefaultBodyLimit::max(crate::docker::MAX_BODY))
        .with_state(st)
}
