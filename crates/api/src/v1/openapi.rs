//! `GET /openapi.json`: the OpenAPI 3.1 document of every `/1.0` endpoint, generated
//! by utoipa from the handlers' `#[utoipa::path]` annotations (the Docker API side is
//! documented by moby's own swagger.yaml).

use axum::response::IntoResponse;
use utoipa::OpenApi;

use super::{backup, certificates, instances, migrate, operations, response, server};

/// The document's root.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vessel /1.0 API",
        description = "vessel's own API (Incus's shape): server, resources, certificates, operations, snapshots, checkpoint, exec, backup"
    ),
    paths(
        server::info,
        server::resources,
        certificates::list,
        certificates::add,
        certificates::remove,
        instances::operations_list,
        instances::operation_get,
        instances::operation_wait,
        instances::put_instance,
        instances::snapshots_list,
        instances::snapshot_create,
        instances::snapshot_get,
        instances::snapshot_delete,
        instances::checkpoint,
        instances::restore,
        instances::exec,
        backup::download,
        backup::upload,
        migrate::receive,
        migrate::pages,
        migrate::status,
    ),
    components(schemas(
        response::Envelope,
        operations::Operation,
        server::ServerInfo,
        server::Environment,
        server::Resources,
        server::Memory,
        server::Cpu,
        server::Pressure,
        server::Containers,
        certificates::CertificatesPost,
        certificates::CertificateInfo,
        instances::SnapshotsPost,
        instances::InstancePut,
        instances::CheckpointPost,
        instances::ExecPost,
        instances::ExecResult,
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn document() -> axum::response::Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
