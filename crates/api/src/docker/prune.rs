//! `POST /containers/prune` and `POST /images/prune` (swagger ContainerPrune,
//! ImagePrune): what `docker container prune` and `docker image prune [-a]` send, with
//! docker's filters `until` (a time: unix seconds, RFC 3339, or a duration back from
//! now such as `10m`) and `label` / `label!` (`KEY` or `KEY=VALUE`); images also take
//! `dangling` (`true`, the default: only images without a name; `false`: every image no
//! container uses).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Value};
use vessel_engine::db::State as CState;

use super::containers::filters;
use super::Ctx;
use crate::error::{ApiError, ApiResult};

type Q = Query<HashMap<String, String>>;

/// The filters prune takes: `until` as unix seconds, `label` and `label!` as given.
struct PruneFilters {
    until: Option<i64>,
    labels: Vec<String>,
    not_labels: Vec<String>,
    dangling: Option<bool>,
}

/// Parses docker's `until` value at `now` (unix seconds): unix seconds with an optional
/// fraction, an RFC 3339 time, or a duration (`90s`, `10m`, `24h`) meaning that long ago.
fn until_secs(v: &str, now: i64) -> ApiResult<i64> {
    if let Some(secs) = v.split('.').next().and_then(|s| s.parse::<i64>().ok()) {
        return Ok(secs);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(v) {
        return Ok(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
    }
    if let Ok(d) = humantime::parse_duration(v) {
        return Ok(now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
    }
    Err(ApiError::bad(format!(
        "invalid until={v:?}: give unix seconds, an RFC 3339 time or a duration such as 10m"
    )))
}

fn prune_filters(q: &HashMap<String, String>, images: bool) -> ApiResult<PruneFilters> {
    let f = filters(q)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let mut out = PruneFilters {
        until: None,
        labels: Vec::new(),
        not_labels: Vec::new(),
        dangling: None,
    };
    for (k, vals) in f {
        match k.as_str() {
            "until" => {
                if vals.len() > 1 {
                    return Err(ApiError::bad("prune takes one until filter"));
                }
                if let Some(v) = vals.first() {
                    out.until = Some(until_secs(v, now)?);
                }
            }
            "label" => out.labels = vals,
            "label!" => out.not_labels = vals,
            "dangling" if images => {
                out.dangling = match vals.first().map(String::as_str) {
                    None => None,
                    Some("true" | "1") => Some(true),
                    Some("false" | "0") => Some(false),
                    Some(v) => return Err(ApiError::bad(format!("invalid dangling={v:?}: use true or false"))),
                }
            }
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter '{other}': prune takes until, label, label!{}",
                    if images { " and dangling" } else { "" }
                )))
            }
        }
    }
    Ok(out)
}

/// Whether `labels` has `want` (`KEY` or `KEY=VALUE`).
fn has_label(labels: &std::collections::BTreeMap<String, String>, want: &str) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(want),
    }
}

impl PruneFilters {
    /// Whether an object made at `created` (unix seconds) with `labels` is to go.
    fn passes(&self, created: i64, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.until.is_none_or(|u| created < u)
            && self.labels.iter().all(|l| has_label(labels, l))
            && !self.not_labels.iter().any(|l| has_label(labels, l))
    }
}

/// `POST /containers/prune?filters=`: removes every container that does not run
/// (created or exited) and passes the filters: `{"ContainersDeleted": [ids],
/// "SpaceReclaimed": bytes of their writable layers}`.
pub async fn containers(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = prune_filters(&q, false)?;
    let (gone, bytes) = ctx
        .engine(move |e| {
            let store = e.store()?;
            let snapshots = store.snapshots();
            let mut gone = Vec::new();
            let mut bytes = 0u64;
            for r in e.list()? {
                if matches!(r.state, CState::Running | CState::Paused) {
                    continue;
                }
                if !f.passes(vessel_engine::status::unix_secs(&r.created_at), &r.options.labels) {
                    continue;
                }
                let rw = snapshots.active(&r.id).map(|a| super::df::du(&a.upper)).unwrap_or(0);
                match e.remove(&r, false) {
                    Ok(()) => {
                        bytes += rw;
                        gone.push(r.id);
                    }
                    // Gone meanwhile (an --rm container's monitor): nothing to prune.
                    Err(vessel_engine::Error::NoSuchContainer(_)) => {}
                    Err(err) => return Err(err.into()),
                }
            }
            Ok((gone, bytes))
        })
        .await?;
    Ok(Json(json!({"ContainersDeleted": gone, "SpaceReclaimed": bytes})))
}

/// `POST /images/prune?filters=`: removes the images no container uses that are
/// dangling (no name; with `dangling=false`, named ones too) and pass the filters, then
/// the blobs and snapshots nothing references: `{"ImagesDeleted": [{"Untagged"},
/// {"Deleted"}], "SpaceReclaimed": bytes}`.
pub async fn images(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = prune_filters(&q, true)?;
    let (deleted, bytes) = ctx
        .engine(move |e| {
            let store = e.store()?;
            let used: Vec<String> = e.list()?.into_iter().map(|r| r.image_id).collect();
            let all = !f.dangling.unwrap_or(true);
            let mut deleted = Vec::new();
            for img in store.images().map_err(vessel_engine::Error::from)? {
                let id = img.id.to_string();
                if used.contains(&id) || !(all || img.names.is_empty()) {
                    continue;
                }
                let labels = image_labels(&store, &img);
                if !f.passes(img.created_secs().unwrap_or(0), &labels) {
                    continue;
                }
                vessel_image::records::remove_image(&store, &id).map_err(vessel_engine::Error::from)?;
                for n in &img.names {
                    deleted.push(json!({"Untagged": super::images::docker_name(n)}));
                }
                deleted.push(json!({"Deleted": id}));
            }
            let report = vessel_image::records::prune(&store).map_err(vessel_engine::Error::from)?;
            Ok((deleted, report.bytes))
        })
        .await?;
    Ok(Json(json!({"ImagesDeleted": deleted, "SpaceReclaimed": bytes})))
}

/// The labels of an image's configuration (none when it cannot be read).
fn image_labels(
    store: &vessel_image::Store,
    img: &vessel_image::ImageRecord,
) -> std::collections::BTreeMap<String, String> {
    vessel_engine::rootfs::image_config(store, img)
        .ok()
        .and_then(|c| c.config().as_ref().and_then(|c| c.labels().clone()))
        .map(|l| l.into_iter().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_docker_forms() {
        assert_eq!(until_secs("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(until_secs("1700000000.5", 0).unwrap(), 1_700_000_000);
        assert_eq!(until_secs("10m", 1000).unwrap(), 400);
        assert_eq!(until_secs("2023-11-14T22:13:20Z", 0).unwrap(), 1_700_000_000);
        assert!(until_secs("soon", 0).is_err());
    }
}
