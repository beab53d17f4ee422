//! `GET /system/df` (swagger SystemDataUsage): the disk the instance uses, as
//! `docker system df` reads it: images (unpacked size, how many containers use each),
//! containers (the size of each writable layer, `SizeRw`), and no volumes or build
//! cache.

use std::path::Path;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::Ctx;
use crate::error::ApiResult;

/// Sum of the sizes of the files under `dir`, bytes (symlinks not followed;
/// unreadable entries count 0).
pub(crate) fn du(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// `GET /system/df`.
pub async fn df(State(ctx): State<Ctx>) -> ApiResult<Json<Value>> {
    let out = ctx
        .engine(|e| {
            let store = e.store()?;
            let images = store.images().map_err(vessel_engine::Error::from)?;
            let recs = e.list()?;
            let mut layers = 0u64;
            let images: Vec<Value> = images
                .iter()
                .map(|img| {
                    let size = img.unpacked_size(&store);
                    layers += size;
                    let id = img.id.to_string();
                    let used = recs.iter().filter(|r| r.image_id == id).count();
                    json!({
                        "Id": id, "ParentId": "",
                        "RepoTags": img.names.iter().map(|n| super::images::docker_name(n)).collect::<Vec<_>>(),
                        "RepoDigests": [], "Created": img.created_secs().unwrap_or(0),
                        "Size": size, "VirtualSize": size, "SharedSize": 0, "Labels": {},
                        "Containers": used,
                    })
                })
                .collect();
            let snapshots = store.snapshots();
            let containers: Vec<Value> = recs
                .iter()
                .rev()
                .map(|r| {
                    let rw = snapshots.active(&r.id).map(|a| du(&a.upper)).unwrap_or(0);
                    json!({
                        "Id": r.id, "Names": [format!("/{}", r.name)], "Image": r.image, "ImageID": r.image_id,
                        "Command": r.command.join(" "),
                        "Created": vessel_engine::status::unix_secs(&r.created_at),
                        "State": r.state.as_str(), "Status": e.status_text(r),
                        "SizeRw": rw, "SizeRootFs": rw, "Labels": {}, "Ports": [], "Mounts": [],
                    })
                })
                .collect();
            Ok(json!({
                "LayersSize": layers, "Images": images, "Containers": containers,
                "Volumes": [], "BuildCache": [],
            }))
        })
        .await?;
    Ok(Json(out))
}
