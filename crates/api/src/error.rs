//! The API's errors: an HTTP status and a `{"message": ...}` body, as the Docker
//! Engine API gives them (404 no such container or image, 409 conflict, 400 bad
//! parameter, 500 server error).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use vessel_engine::Error as EngineError;
use vessel_image::ImageError;

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What failed and what to do, in the body's `message`.
    pub message: String,
}

impl ApiError {
    /// 400: a parameter or body the server cannot use.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404: no such object.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(serde_json::json!({ "message": self.message }))).into_response()
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> ApiError {
        let status = match &e {
            ImageError::ImageNotFound { .. } | ImageError::NotInRegistry { .. } => StatusCode::NOT_FOUND,
            ImageError::InvalidReference { .. } | ImageError::AmbiguousImage { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            // The docker CLI pulls on a 404 whose message reads "No such image".
            ImageError::ImageNotFound { name } => format!("No such image: {name}"),
            _ => e.to_string(),
        };
        ApiError { status, message }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let status = match &e {
            EngineError::NoSuchContainer(_) => StatusCode::NOT_FOUND,
            EngineError::Image(_) => {
                let EngineError::Image(i) = e else {
                    return ApiError::internal("unreachable");
                };
                return i.into();
            }
            EngineError::NameInUse(_)
            | EngineError::WrongState(_)
            | EngineError::ImageInUse { .. }
            | EngineError::VolumeInUse { .. }
            | EngineError::VolumeExists(_) => StatusCode::CONFLICT,
            EngineError::NoSuchVolume(_) => StatusCode::NOT_FOUND,
            EngineError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            EngineError::Network(n) => net_status(n),
            EngineError::BadInput(_)
            | EngineError::Ambiguous(_)
            | EngineError::CommandNotFound(_)
            | EngineError::CommandNotExecutable(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = match &e {
            EngineError::NoSuchContainer(c) => format!("No such container: {c}"),
            EngineError::NoSuchVolume(v) => format!("get {v}: no such volume"),
            EngineError::Network(vessel_net::NetError::UnknownNetwork(n)) => format!("network {n} not found"),
            _ => e.to_string(),
        };
        ApiError { status, message }
    }
}

impl From<vessel_runtime::Error> for ApiError {
    fn from(e: vessel_runtime::Error) -> ApiError {
        EngineError::from(e).into()
    }
}

/// The status of a network error: 404 unknown, 409 exists, 403 in use (docker's), 400
/// for what the client gave wrong, 500 for the rest.
fn net_status(e: &vessel_net::NetError) -> StatusCode {
    use vessel_net::NetError as N;
    match e {
        N::UnknownNetwork(_) => StatusCode::NOT_FOUND,
        N::NetworkExists(_) => StatusCode::CONFLICT,
        N::NetworkInUse { .. } | N::DefaultNetwork(_) => StatusCode::FORBIDDEN,
        N::BadName { .. }
        | N::BadSubnet { .. }
        | N::BadAddress { .. }
        | N::SubnetOverlap { .. }
        | N::NoFreeSubnet
        | N::BadPublish { .. }
        | N::BadRequest(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
