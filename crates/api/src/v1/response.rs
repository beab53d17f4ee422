//! The shapes of `/1.0` answers, as Incus gives them: `{"type": "sync", "status":
//! "Success", "status_code": 200, "metadata": ...}`, `{"type": "async", "status":
//! "Operation created", "status_code": 100, "operation": "/1.0/operations/ID",
//! "metadata": OPERATION}` (HTTP 202) and `{"type": "error", "error": "...",
//! "error_code": 404}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::operations::Operation;
use crate::error::ApiError;

/// Every `/1.0` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// `sync`, `async` or `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `Success`, `Operation created`, or empty for errors.
    #[serde(default)]
    pub status: String,
    /// 200 (sync), 100 (async), 0 for errors.
    #[serde(default)]
    pub status_code: u16,
    /// The operation's URL for async answers, else empty.
    #[serde(default)]
    pub operation: String,
    /// The HTTP status of an error, else 0.
    #[serde(default)]
    pub error_code: u16,
    /// What failed and what to do, for errors.
    #[serde(default)]
    pub error: String,
    /// The answer's object (sync), the operation (async), null for errors.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// A sync answer (HTTP 200) carrying `metadata`.
pub fn sync(metadata: impl Serialize) -> Response {
    let e = Envelope {
        kind: "sync".into(),
        status: "Success".into(),
        status_code: 200,
        operation: String::new(),
        error_code: 0,
        error: String::new(),
        metadata: serde_json::to_value(metadata).unwrap_or_default(),
    };
    (StatusCode::OK, axum::Json(e)).into_response()
}

/// An async answer (HTTP 202) for the operation `op`, with a `Location` header.
pub fn async_op(op: &Operation) -> Response {
    let url = format!("/1.0/operations/{}", op.id);
    let e = Envelope {
        kind: "async".into(),
        status: "Operation created".into(),
        status_code: 100,
        operation: url.clone(),
        error_code: 0,
        error: String::new(),
        metadata: serde_json::to_value(op).unwrap_or_default(),
    };
    (
        StatusCode::ACCEPTED,
        [(axum::http::header::LOCATION, url)],
        axum::Json(e),
    )
        .into_response()
}

/// An error answer with HTTP status `status`.
pub fn error(status: StatusCode, message: &str) -> Response {
    let e = Envelope {
        kind: "error".into(),
        status: String::new(),
        status_code: 0,
        operation: String::new(),
        error_code: status.as_u16(),
        error: message.to_string(),
        metadata: serde_json::Value::Null,
    };
    (status, axum::Json(e)).into_response()
}

/// A `/1.0` handler's error: the Docker side's [`ApiError`] answered in Incus's shape.
#[derive(Debug)]
pub struct V1Error(pub ApiError);

impl<E: Into<ApiError>> From<E> for V1Error {
    fn from(e: E) -> V1Error {
        V1Error(e.into())
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        error(self.0.status, &self.0.message)
    }
}

/// A `/1.0` handler's result.
pub type V1Result = Result<Response, V1Error>;
