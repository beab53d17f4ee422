//! `POST /images/{name}/push?tag=` (swagger tag Image, "ImagePush"): the image pushed
//! with the image crate's push ([`vessel_image::push`]), answered as docker does: 200
//! and a stream of JSON messages, one per line (`Pushed` or `Layer already exists` per
//! blob, then `TAG: digest: sha256:... size: N` and an `aux` object), a failure as the
//! stream's last message (`{"errorDetail": {"message"}, "error"}`).
//!
//! Credentials come in the `X-Registry-Auth` header: base64url of
//! `{"username", "password", "serveraddress"}` (an empty object, or none: the auth files
//! vessel reads for `vessel push`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vessel_image::auth::Credentials;
use vessel_image::pull::PullOptions;
use vessel_image::push::PushProgress;
use vessel_image::{records, Digest, Reference, Store};

use super::images::docker_name;
use super::Ctx;
use crate::error::{ApiError, ApiResult};

/// The JSON of `X-Registry-Auth` (docker's `types.AuthConfig`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthConfig {
    username: String,
    password: String,
    #[serde(rename = "identitytoken")]
    identity_token: String,
}

/// The credentials an `X-Registry-Auth` header carries: None when it is missing or
/// empty (`{}`). 400 for a header that is not base64 JSON.
fn credentials(headers: &HeaderMap) -> ApiResult<Option<Credentials>> {
    let Some(value) = headers.get("x-registry-auth") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad("X-Registry-Auth is not ASCII: give base64url of the JSON auth config"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|e| ApiError::bad(format!("X-Registry-Auth is not base64: {e}")))?;
    let a: AuthConfig = serde_json::from_slice(&raw)
        .map_err(|e| ApiError::bad(format!("X-Registry-Auth is not a JSON auth config: {e}")))?;
    Ok(match (a.username.is_empty(), a.identity_token.is_empty()) {
        (false, _) => Some(Credentials {
            username: a.username,
            password: a.password,
        }),
        (true, false) => Some(Credentials {
            username: "<token>".into(),
            password: a.identity_token,
        }),
        (true, true) => None,
    })
}

/// Push progress as docker's JSON messages.
struct Messages(mpsc::UnboundedSender<Value>);

impl PushProgress for Messages {
    fn blob_start(&self, digest: &Digest, size: u64) {
        let _ = self.0.send(
            json!({"status": "Preparing", "progressDetail": {"current": 0, "total": size}, "id": digest.short()}),
        );
    }
    fn blob_done(&self, digest: &Digest, skipped: bool) {
        let status = if skipped { "Layer already exists" } else { "Pushed" };
        let _ = self
            .0
            .send(json!({"status": status, "progressDetail": {}, "id": digest.short()}));
    }
}

/// `POST /images/{name}/push?tag=`: `name` is the repository (`127.0.0.1:5000/team/app`),
/// `tag` the tag to push (default `latest`).
pub async fn push(ctx: Ctx, name: String, q: HashMap<String, String>, headers: HeaderMap) -> ApiResult<Response> {
    let creds = credentials(&headers)?;
    let full = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{name}:{t}"),
        None => format!("{name}:latest"),
    };
    let dest = Reference::parse(&full).map_err(ApiError::from)?;
    let store_root = ctx.paths.store_root().to_path_buf();
    // The image must be there before the stream starts: docker answers 404 at once.
    let rec = {
        let full = full.clone();
        let root = store_root.clone();
        ctx.engine(move |_| {
            let store = Store::open(&root).map_err(vessel_engine::Error::from)?;
            Ok(records::find_image(&store, &full).map_err(vessel_engine::Error::from)?)
        })
        .await?
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let repo = docker_name(&dest.name());
    let tag = dest
        .to_string()
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let _ = tx.send(json!({"status": format!("The push refers to repository [{repo}]")}));
        let progress = Arc::new(Messages(tx.clone()));
        let opts = PullOptions {
            credentials: creds,
            ..Default::default()
        };
        let result = (|| -> Result<vessel_image::push::PushReport, String> {
            let store = Store::open(&store_root).map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("start the async runtime: {e}"))?;
            let report = rt.block_on(vessel_image::push::push(&store, &rec, &dest, &opts, progress));
            rt.shutdown_background();
            report.map_err(|e| e.to_string())
        })();
        let _ = match result {
            Ok(report) => {
                let digest = report.manifest.map(|d| d.to_string()).unwrap_or_default();
                let size = Store::open(&store_root)
                    .ok()
                    .and_then(|s| s.blob_size(&rec.manifest))
                    .unwrap_or(0);
                let _ = tx.send(json!({"status": format!("{tag}: digest: {digest} size: {size}")}));
                tx.send(json!({"progressDetail": {}, "aux": {"Tag": tag, "Digest": digest, "Size": size}}))
            }
            Err(e) => tx.send(json!({"errorDetail": {"message": e}, "error": e})),
        };
    });
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| {
            o.map(|v| {
                let mut line = v.to_string().into_bytes();
                line.push(b'\n');
                Ok::<_, std::convert::Infallible>(Bytes::from(line))
            })
        })
    });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}
