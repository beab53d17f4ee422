//! The volume routes (swagger tag Volume): list, create, inspect, delete, prune, on
//! vessel's named volumes ([`vessel_engine::volumes`]: driver `local` only, no
//! driver options).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vessel_engine::volumes::{self, VolumeRecord};
use vessel_engine::Engine;

use super::containers::filters;
use super::{flag, json_body, Ctx};
use crate::error::{ApiError, ApiResult};

type Q = Query<HashMap<String, String>>;

fn json_of(v: &VolumeRecord) -> Value {
    json!({"Name": v.name, "Driver": v.driver, "Mountpoint": v.mountpoint, "CreatedAt": v.created_at,
           "Labels": v.labels, "Scope": v.scope, "Options": {}})
}

/// Whether `v` passes docker's volume filters: `name` (substring), `label` (`KEY` or
/// `KEY=VALUE`, all must hold), `driver`, `dangling` (no container uses it).
fn passes(e: &Engine, v: &VolumeRecord, f: &HashMap<String, Vec<String>>) -> ApiResult<bool> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "name" => vals.iter().any(|x| v.name.contains(x.as_str())),
            "label" => vals.iter().all(|x| volumes::has_label(v, x)),
            "driver" => vals.contains(&v.driver),
            "dangling" => {
                let unused = volumes::users(&e.db, &v.name)?.is_empty();
                vals.iter().any(|x| flag(Some(x)) == unused)
            }
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter '{other}': use name, label, driver or dangling"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /volumes?filters=`: `{"Volumes", "Warnings"}`.
pub async fn list(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    let out = ctx
        .engine(move |e| {
            let mut out = Vec::new();
            for v in volumes::list(&e.paths, &e.db)? {
                if passes(e, &v, &f)? {
                    out.push(json_of(&v));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(json!({"Volumes": out, "Warnings": []})))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /volumes/create` `{"Name", "Driver", "DriverOpts", "Labels"}`: 201 with the
/// volume; an existing one with the same labels is answered as it is. No name: a
/// random one (64 hex digits), as docker makes. 400 for a driver other than `local`
/// or driver options.
pub async fn create(State(ctx): State<Ctx>, body: Bytes) -> ApiResult<Response> {
    let b: CreateBody = json_body(&body)?;
    if !b.driver.is_empty() && b.driver != "local" {
        return Err(ApiError::bad(format!(
            "volume driver {:?} is not supported: vessel has the local driver only",
            b.driver
        )));
    }
    if b.driver_opts.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(ApiError::bad(
            "volume DriverOpts are not supported: vessel's volumes are plain directories",
        ));
    }
    let name = if b.name.is_empty() {
        vessel_engine::names::new_id()?
    } else {
        b.name
    };
    let labels = b.labels.unwrap_or_default();
    let v = ctx
        .engine(move |e| Ok(volumes::create(&e.paths, &e.db, &name, &labels)?.0))
        .await?;
    Ok((StatusCode::CREATED, Json(json_of(&v))).into_response())
}

/// `GET /volumes/{name}`.
pub async fn inspect(State(ctx): State<Ctx>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let v = ctx.engine(move |e| Ok(volumes::find(&e.paths, &e.db, &name)?)).await?;
    Ok(Json(json_of(&v)))
}

/// `DELETE /volumes/{name}?force`: 204; 404 unknown (unless `force`), 409 in use.
pub async fn remove(State(ctx): State<Ctx>, Path(name): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let force = flag(q.get("force"));
    ctx.engine(move |e| Ok(volumes::remove(e, &name, force)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /volumes/prune?filters=`: removes every volume no container uses (with a
/// `label` filter, only those carrying it): `{"VolumesDeleted", "SpaceReclaimed"}`.
pub async fn prune(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    let labels = f.get("label").cloned().unwrap_or_default();
    if labels.len() > 1 {
        return Err(ApiError::bad("volumes/prune takes one label filter"));
    }
    let (gone, bytes) = ctx
        .engine(move |e| Ok(volumes::prune(e, labels.first().map(String::as_str))?))
        .await?;
    Ok(Json(json!({"VolumesDeleted": gone, "SpaceReclaimed": bytes})))
}
