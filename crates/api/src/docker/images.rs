//! The image routes (swagger tag Image): list, create (pull, with docker's JSON
//! progress stream), inspect, tag, delete. Image names may hold slashes
//! (`localhost:5000/team/app:1`), so `/images/{name}/json` and `/images/{name}/tag`
//! are told apart by their last segment.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vessel_image::pull::{LayerOutcome, Progress, PullOptions};
use vessel_image::{records, Digest, ImageRecord, Reference, Store};

use super::{flag, Ctx};
use crate::error::{ApiError, ApiResult};

type Q = Query<HashMap<String, String>>;

/// A stored name as docker shows it: `docker.io/library/busybox:1` → `busybox:1`.
pub fn docker_name(n: &str) -> String {
    n.strip_prefix("docker.io/library/")
        .or_else(|| n.strip_prefix("docker.io/"))
        .unwrap_or(n)
        .to_string()
}

fn summary(store: &Store, rec: &ImageRecord) -> Value {
    let size = rec.unpacked_size(store);
    json!({
        "Id": rec.id.to_string(), "ParentId": "",
        "RepoTags": rec.names.iter().map(|n| docker_name(n)).collect::<Vec<_>>(),
        "RepoDigests": rec.names.iter().filter_map(|n| Reference::parse(n).ok()).map(|r| format!("{}@{}", docker_name(&r.name()), rec.manifest)).collect::<Vec<_>>(),
        "Created": rec.created_secs().unwrap_or(0), "Size": size, "VirtualSize": size,
        "SharedSize": -1, "Labels": {}, "Containers": -1,
    })
}

/// `GET /images/json?filters=`: the filters docker compose and `docker images` use:
/// `reference` (`repo` or `repo:tag`, `*` and `?` globs as docker's path.Match) and
/// `dangling` (an image without a name).
pub async fn list(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = super::containers::filters(&q)?;
    if let Some(k) = f.keys().find(|k| !matches!(k.as_str(), "reference" | "dangling")) {
        return Err(ApiError::bad(format!(
            "invalid filter '{k}': use reference or dangling"
        )));
    }
    let refs = f.get("reference").cloned().unwrap_or_default();
    let dangling = f.get("dangling").and_then(|v| v.first()).map(|v| flag(Some(v)));
    let out = ctx
        .engine(move |e| {
            let store = e.store()?;
            let images = store.images().map_err(vessel_engine::Error::from)?;
            Ok(images
                .iter()
                .filter(|r| dangling.is_none_or(|d| d == r.names.is_empty()))
                .filter(|r| refs.is_empty() || r.names.iter().any(|n| refs.iter().any(|p| reference_matches(p, n))))
                .map(|r| {
                    let mut v = summary(&store, r);
                    // As docker: only the names the filter matched are listed.
                    if !refs.is_empty() {
                        let names: Vec<&String> = r
                            .names
                            .iter()
                            .filter(|n| refs.iter().any(|p| reference_matches(p, n)))
                            .collect();
                        let digests: Vec<String> = names
                            .iter()
                            .filter_map(|n| Reference::parse(n).ok())
                            .map(|n| format!("{}@{}", docker_name(&n.name()), r.manifest))
                            .collect();
                        v["RepoTags"] = json!(names.iter().map(|n| docker_name(n)).collect::<Vec<_>>());
                        v["RepoDigests"] = json!(digests);
                    }
                    v
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(Value::Array(out)))
}

/// Whether stored name `name` matches docker's `reference` filter `pattern`: against
/// `repo:tag` when the pattern has a tag, else against `repo`, by docker's short name
/// (`busybox`) or the full one.
fn reference_matches(pattern: &str, name: &str) -> bool {
    let short = docker_name(name);
    let has_tag = pattern.rsplit('/').next().is_some_and(|last| last.contains(':'));
    [name.to_string(), short].iter().any(|n| {
        let subject = if has_tag {
            n.as_str()
        } else {
            n.rsplit_once(':')
                .filter(|(_, t)| !t.contains('/'))
                .map_or(n.as_str(), |(r, _)| r)
        };
        glob(pattern.as_bytes(), subject.as_bytes())
    })
}

/// Go's path.Match for `*` (any run of bytes but `/`) and `?` (one byte but `/`).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (s.first().is_some_and(|c| *c != b'/') && glob(p, &s[1..])),
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

fn inspect_json(store: &Store, rec: &ImageRecord) -> ApiResult<Value> {
    let config: Value = serde_json::from_slice(&store.read_blob(&rec.id)?)
        .map_err(|e| ApiError::internal(format!("config blob {} of an image: {e}", rec.id)))?;
    let c = config.get("config").cloned().unwrap_or(Value::Null);
    let size = rec.unpacked_size(store);
    let (os, arch) = rec.platform.split_once('/').unwrap_or(("linux", &rec.platform));
    Ok(json!({
        "Id": rec.id.to_string(),
        "RepoTags": rec.names.iter().map(|n| docker_name(n)).collect::<Vec<_>>(),
        "RepoDigests": rec.names.iter().filter_map(|n| Reference::parse(n).ok()).map(|r| format!("{}@{}", docker_name(&r.name()), rec.manifest)).collect::<Vec<_>>(),
        "Parent": "", "Comment": "",
        "Created": rec.created.clone().unwrap_or_default(),
        "Config": c.clone(), "ContainerConfig": c,
        "Architecture": arch.split('/').next().unwrap_or(arch), "Os": os,
        "Size": size, "VirtualSize": size,
        "RootFS": {"Type": "layers", "Layers": rec.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
}

/// `GET /images/{name}/json`.
pub async fn get_named(State(ctx): State<Ctx>, Path(path): Path<String>) -> ApiResult<Json<Value>> {
    let Some(name) = path.strip_suffix("/json") else {
        return Err(ApiError::not_found(format!("page not found: GET /images/{path}")));
    };
    let name = name.to_string();
    Ok(Json(
        ctx.engine(move |e| {
            let store = e.store()?;
            let rec = records::find_image(&store, &name).map_err(vessel_engine::Error::from)?;
            inspect_json(&store, &rec)
        })
        .await?,
    ))
}

/// `POST /images/{name}/tag?repo=&tag=`: 201; `POST /images/{name}/push`: [`super::push`].
pub async fn post_named(
    State(ctx): State<Ctx>,
    Path(path): Path<String>,
    Query(q): Q,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    if let Some(name) = path.strip_suffix("/push") {
        return super::push::push(ctx, name.to_string(), q, headers).await;
    }
    let Some(name) = path.strip_suffix("/tag") else {
        return Err(ApiError::not_found(format!("page not found: POST /images/{path}")));
    };
    let repo = q
        .get("repo")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad("tag needs repo=NAME"))?;
    let target = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) => format!("{repo}:{t}"),
        None => repo.clone(),
    };
    let name = name.to_string();
    ctx.engine(move |e| Ok(vessel_engine::images::tag(&e.store()?, &name, &target)?))
        .await?;
    Ok(StatusCode::CREATED.into_response())
}

/// `DELETE /images/{name}?force`: `[{"Untagged": NAME}, {"Deleted": ID}]`; 409 for an
/// image that containers use (without force).
pub async fn remove(State(ctx): State<Ctx>, Path(name): Path<String>, Query(q): Q) -> ApiResult<Json<Value>> {
    let force = flag(q.get("force"));
    let out = ctx
        .engine(move |e| {
            let store = e.store()?;
            let rec = vessel_engine::images::remove(&store, Some(&e.db), &name, force)?;
            records::prune(&store).map_err(vessel_engine::Error::from)?;
            let gone = !store
                .images()
                .map_err(vessel_engine::Error::from)?
                .iter()
                .any(|i| i.manifest == rec.manifest);
            let mut out = vec![json!({"Untagged": name})];
            if gone {
                out.push(json!({"Deleted": rec.id.to_string()}));
            }
            Ok(out)
        })
        .await?;
    Ok(Json(Value::Array(out)))
}

/// Pull progress as docker's JSON messages, one object per line.
struct Messages(mpsc::UnboundedSender<Value>);

impl Progress for Messages {
    fn resolved(&self, reference: &str, _manifest: &Digest, _layers: usize) {
        let _ = self.0.send(json!({"status": format!("Pulling from {reference}")}));
    }
    fn layer_start(&self, digest: &Digest, size: u64) {
        let _ = self.0.send(json!({"status": "Pulling fs layer", "id": digest.short(),
                                    "progressDetail": {"current": 0, "total": size}}));
    }
    fn layer_done(&self, digest: &Digest, outcome: LayerOutcome) {
        let status = match outcome {
            LayerOutcome::AlreadyPresent => "Already exists",
            _ => "Pull complete",
        };
        let _ = self
            .0
            .send(json!({"status": status, "id": digest.short(), "progressDetail": {}}));
    }
}

/// `POST /images/create?fromImage=&tag=`: pulls, answering 200 with a stream of
/// JSON progress messages; a failure is the stream's last message
/// (`{"errorDetail": {"message"}, "error"}`), as docker sends it. `fromSrc`
/// (import) is not served.
pub async fn create(State(ctx): State<Ctx>, Query(q): Q, _body: Bytes) -> ApiResult<Response> {
    if q.get("fromSrc").is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad(
            "images/create?fromSrc (import) is not supported: use `vessel image import`",
        ));
    }
    let from = q
        .get("fromImage")
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad("images/create needs fromImage=NAME"))?;
    let name = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => format!("{from}:latest"),
    };
    let reference = Reference::parse(&name).map_err(ApiError::from)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let store_root = ctx.paths.store_root().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let progress = Arc::new(Messages(tx.clone()));
        let result = (|| -> Result<ImageRecord, String> {
            let store = Store::open(&store_root).map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("start the async runtime: {e}"))?;
            let rec = rt.block_on(vessel_image::pull::pull(
                &store,
                &reference,
                &PullOptions::default(),
                progress,
            ));
            rt.shutdown_background();
            rec.map_err(|e| e.to_string())
        })();
        let _ = match result {
            Ok(rec) => {
                let _ = tx.send(json!({"status": format!("Digest: {}", rec.manifest)}));
                tx.send(json!({"status": format!("Status: Downloaded newer image for {}", docker_name(&reference.to_string()))}))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filter() {
        assert!(reference_matches("busybox", "docker.io/library/busybox:1"));
        assert!(reference_matches("busybox:1", "docker.io/library/busybox:1"));
        assert!(!reference_matches("busybox:2", "docker.io/library/busybox:1"));
        assert!(reference_matches("127.0.0.1:5000/team/*", "127.0.0.1:5000/team/bb:2"));
        assert!(reference_matches(
            "127.0.0.1:5000/team/bb:*",
            "127.0.0.1:5000/team/bb:2"
        ));
        assert!(!reference_matches("127.0.0.1:5000/*", "127.0.0.1:5000/team/bb:2"));
        assert!(reference_matches("localhost/b?", "localhost/bb:1"));
    }
}
