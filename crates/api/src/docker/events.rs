//! `GET /events?since=&until=&filters=` (swagger SystemEvents): a stream of JSON
//! objects, one per container event (create, start, die, destroy, pause, unpause,
//! rename) from the records' event log ([`vessel_engine::events`]), so changes made
//! by the `vessel` command and by containers' monitors appear as those made through
//! this server. Without `since`, only events from now on; without `until`, the
//! stream goes on until the client goes. Filters: `container` (id, id prefix or
//! name), `event`, `type` (only `container` has events), `image`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vessel_engine::db::Db;
use vessel_engine::events::Event;

use super::Ctx;
use crate::error::{ApiError, ApiResult};

/// How often a following stream looks for new events.
const POLL: Duration = Duration::from_millis(100);

/// A time of `since`/`until`: unix seconds with an optional fraction
/// (`1700000000.123456789`, as the docker CLI sends them), in ns.
fn parse_time(k: &str, v: &str) -> ApiResult<i64> {
    let bad = || ApiError::bad(format!("invalid {k}={v:?}: give unix seconds (SECONDS[.NANOSECONDS])"));
    let (s, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().map_err(|_| bad())?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ns: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|x| x.checked_add(ns))
        .ok_or_else(bad)
}

/// Whether event `e` passes the filters.
fn wanted(e: &Event, f: &HashMap<String, Vec<String>>) -> bool {
    f.iter().all(|(k, vals)| {
        vals.is_empty()
            || match k.as_str() {
                "container" => vals
                    .iter()
                    .any(|v| e.name == v.trim_start_matches('/') || (!v.is_empty() && e.id.starts_with(v.as_str()))),
                "event" => vals.contains(&e.action),
                "type" => vals.iter().any(|v| v == "container"),
                "image" => vals.contains(&e.image),
                _ => false,
            }
    })
}

/// The API's JSON of an event (EventMessage, with the older `status`/`id`/`from`).
pub fn event_json(e: &Event) -> Value {
    let mut attrs = serde_json::Map::new();
    attrs.insert("name".into(), json!(e.name));
    attrs.insert("image".into(), json!(e.image));
    if let Some(c) = e.exit_code {
        attrs.insert("exitCode".into(), json!(c.to_string()));
    }
    if let Some(o) = &e.old_name {
        attrs.insert("oldName".into(), json!(format!("/{o}")));
    }
    json!({
        "status": e.action, "id": e.id, "from": e.image,
        "Type": "container", "Action": e.action,
        "Actor": {"ID": e.id, "Attributes": attrs},
        "scope": "local",
        "time": e.time_ns / 1_000_000_000,
        "timeNano": e.time_ns,
    })
}

/// `GET /events`.
pub async fn events(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Response> {
    let since = q
        .get("since")
        .filter(|v| !v.is_empty())
        .map(|v| parse_time("since", v))
        .transpose()?;
    let until = q
        .get("until")
        .filter(|v| !v.is_empty())
        .map(|v| parse_time("until", v))
        .transpose()?;
    let known = ["container", "event", "type", "image"];
    let f = super::containers::filters(&q)?;
    if let Some(k) = f.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "invalid filter '{k}': use container, event, type or image"
        )));
    }
    let root = ctx.paths.root.clone();
    let db = tokio::task::spawn_blocking(move || Db::open(&root))
        .await
        .map_err(|e| ApiError::internal(format!("events task failed: {e}")))??;
    // Where the stream starts: every kept event from `since`, else only new ones.
    let start = match since {
        Some(_) => 0,
        None => db.last_event()?,
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let mut after = start;
        let since = since.unwrap_or(0);
        loop {
            let now = now_ns();
            let Ok(batch) = db.events(after, since, 1000) else {
                return;
            };
            for e in &batch {
                after = e.seq;
                if until.is_some_and(|u| e.time_ns > u) {
                    return;
                }
                if wanted(e, &f) {
                    let mut text = event_json(e).to_string().into_bytes();
                    text.push(b'\n');
                    if tx.blocking_send(Bytes::from(text)).is_err() {
                        return;
                    }
                }
            }
            if batch.len() == 1000 {
                continue;
            }
            if until.is_some_and(|u| now > u) || tx.is_closed() {
                return;
            }
            std::thread::sleep(POLL);
        }
    });
    let body =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::convert::Infallible>)));
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_the_cli_sends_them() {
        assert_eq!(parse_time("since", "12").unwrap(), 12_000_000_000);
        assert_eq!(parse_time("since", "12.5").unwrap(), 12_500_000_000);
        assert_eq!(parse_time("since", "12.000000001").unwrap(), 12_000_000_001);
        assert!(parse_time("since", "12.x").is_err());
        assert!(parse_time("since", "yesterday").is_err());
        assert!(parse_time("since", "99999999999999999").is_err());
    }
}
