//! What every route of `vessel serve` gets around it, so that bad input never costs
//! more than its own request: every error answer in the Docker API's shape (its
//! status and a `{"message": ...}` JSON body, also for the answers axum and hyper make
//! themselves: an unknown method 405, a body over the limit 413, an undecodable path
//! or query 400), and a handler that panics answered with 500 instead of taking its
//! connection down (the release profile unwinds, so that this holds in release builds
//! too: with `panic = "abort"` a panic would end the server).

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;

/// The most of a non-JSON error body kept as the message, bytes.
const MAX_ERROR_TEXT: usize = 4096;

/// With this variable set (to anything) in `vessel serve`'s environment, `GET
/// /_vessel/panic` panics in its handler: the tests prove with it, on any build, that a
/// panic costs only its own request.
pub const PANIC_ROUTE_ENV: &str = "VESSEL_API_PANIC_ROUTE";

/// Wraps `router` with the JSON error bodies and the panic guard (and the panic route
/// of [`PANIC_ROUTE_ENV`]).
pub fn layer(router: Router) -> Router {
    let router = if std::env::var_os(PANIC_ROUTE_ENV).is_some() {
        router.route(
            "/_vessel/panic",
            axum::routing::get(|| async {
                let v: Vec<u8> = Vec::new();
                // An out-of-bounds index: a panic as a bug would make it.
                let i = v.len() + 1;
                v[i].to_string()
            }),
        )
    } else {
        router
    };
    router
        .layer(axum::middleware::from_fn(json_errors))
        .layer(CatchPanicLayer::custom(panicked))
}

/// The answer to a request whose handler panicked: 500 with what the panic said.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("no message");
    eprintln!("vessel serve: a handler panicked: {what}");
    ApiError::internal(format!(
        "internal error: the server failed on this request ({what}); it keeps serving"
    ))
    .into_response()
}

/// Turns an error answer (4xx, 5xx) that is not JSON into `{"message": TEXT}`, TEXT
/// being its body (or the status's reason when the body is empty).
async fn json_errors(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&res) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = match axum::body::to_bytes(body, MAX_ERROR_TEXT).await {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { reason(status) } else { text };
    let body = serde_json::json!({ "message": message }).to_string();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

fn is_json(res: &Response) -> bool {
    res.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("error").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    async fn call(app: Router, req: Request) -> (StatusCode, String, Option<String>) {
        let res = app.oneshot(req).await.unwrap();
        let status = res.status();
        let ct = res.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), ct)
    }

    fn app() -> Router {
        async fn boom() -> &'static str {
            let v: Vec<u8> = Vec::new();
            // An index out of bounds, as a handler bug would.
            let i = v.len() + 1;
            if v[i] == 0 {
                return "never";
            }
            "never"
        }
        async fn ok() -> &'static str {
            "fine"
        }
        async fn text_error() -> (StatusCode, &'static str) {
            (StatusCode::BAD_REQUEST, "Failed to deserialize query string")
        }
        async fn sized(body: axum::body::Bytes) -> String {
            body.len().to_string()
        }
        layer(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(ok))
                .route("/text", get(text_error))
                .route("/sized", post(sized))
                .layer(axum::extract::DefaultBodyLimit::max(16)),
        )
    }

    fn req(method: &str, uri: &str, body: &'static str) -> Request {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_and_the_router_serves_on() {
        let (status, body, ct) = call(app(), req("GET", "/boom", "")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ct.as_deref(), Some("application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["message"].as_str().unwrap().contains("index out of bounds"), "{body}");
        let (status, body, _) = call(app(), req("GET", "/ok", "")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "fine"));
    }

    #[tokio::test]
    async fn framework_errors_get_json_messages() {
        let (status, body, ct) = call(app(), req("POST", "/ok", "")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(ct.as_deref(), Some("application/json"));
        assert_eq!(body, r#"{"message":"Method Not Allowed"}"#);
        let (status, body, _) = call(app(), req("GET", "/text", "")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, r#"{"message":"Failed to deserialize query string"}"#);
        let (status, body, _) = call(app(), req("POST", "/sized", "more than sixteen bytes")).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
        // Success and JSON errors pass unchanged.
        let (status, body, _) = call(app(), req("POST", "/sized", "short")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "5"));
    }
}
