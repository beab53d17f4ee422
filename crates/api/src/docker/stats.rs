//! `GET /containers/{id}/stats?stream=&one-shot=` (swagger ContainerStats): the
//! container's usage as docker's daemon reports it, from vessel's own samples
//! ([`vessel_engine::stats::Sample`]): `cpu_stats` and `precpu_stats` (the sample one
//! interval before, so clients compute the CPU percentage from the two),
//! `memory_stats` (usage without the reclaimable page cache, limit), `pids_stats`,
//! `blkio_stats` (bytes read and written) and `networks` (the container's interfaces
//! but `lo`, summed as `eth0`). A stream sends one JSON object a second until the
//! client goes or the container stops; `stream=false` sends one, a second after the
//! first sample (as docker's daemon primes precpu), `one-shot=true` at once, with
//! `precpu_stats` empty. A container that does not run gets zeroes, as from docker.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use vessel_engine::stats::Sample;

use super::{flag, Ctx};
use crate::error::ApiResult;

/// The time between two samples of a stream (docker's collector interval).
pub const INTERVAL: Duration = Duration::from_secs(1);

fn cpu(s: Option<&Sample>) -> Value {
    let s = s.cloned().unwrap_or_default();
    json!({
        "cpu_usage": {"total_usage": s.cpu_ns, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "system_cpu_usage": s.system_ns,
        "online_cpus": s.online_cpus,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    })
}

/// One ContainerStats object: `cur` now, `prev` one interval before.
pub fn stats_json(id: &str, name: &str, cur: Option<&Sample>, prev: Option<&Sample>) -> Value {
    let now = vessel_runtime::state::now_rfc3339();
    let s = cur.cloned().unwrap_or_default();
    let blk = |op: &str, v: u64| json!({"major": 0, "minor": 0, "op": op, "value": v});
    json!({
        "read": now,
        "preread": if prev.is_some() { now.clone() } else { "0001-01-01T00:00:00Z".to_string() },
        "id": id,
        "name": format!("/{name}"),
        "num_procs": 0,
        "pids_stats": {"current": s.pids},
        "blkio_stats": {
            "io_service_bytes_recursive": [blk("read", s.blk_read), blk("write", s.blk_write)],
            "io_serviced_recursive": null, "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null, "io_time_recursive": null,
            "sectors_recursive": null,
        },
        "storage_stats": {},
        "cpu_stats": cpu(cur),
        "precpu_stats": cpu(prev),
        "memory_stats": if cur.is_some() { json!({"usage": s.mem_usage, "limit": s.mem_limit, "stats": {}}) } else { json!({}) },
        "networks": {"eth0": {
            "rx_bytes": s.net_rx, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
            "tx_bytes": s.net_tx, "tx_packets": 0, "tx_errors": 0, "tx_dropped": 0,
        }},
    })
}

/// `GET /containers/{id}/stats`.
pub async fn stats(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let stream = q.get("stream").is_none_or(|v| flag(Some(v)));
    let one_shot = flag(q.get("one-shot"));
    let rec = ctx.engine(move |e| Ok(e.find(&id)?)).await?;
    let oci_root = ctx.paths.oci_root();
    let (tx, mut rx) = mpsc::channel::<Bytes>(2);
    tokio::task::spawn_blocking(move || {
        let take = || vessel_engine::stats::sample(&oci_root, &rec.id).ok();
        let send = |v: Value| {
            let mut text = v.to_string().into_bytes();
            text.push(b'\n');
            tx.blocking_send(Bytes::from(text)).is_ok()
        };
        let mut prev = take();
        if !stream {
            if !one_shot && prev.is_some() {
                std::thread::sleep(INTERVAL);
                let cur = take();
                let _ = send(stats_json(&rec.id, &rec.name, cur.as_ref(), prev.as_ref()));
            } else {
                let _ = send(stats_json(&rec.id, &rec.name, prev.as_ref(), None));
            }
            return;
        }
        if !send(stats_json(&rec.id, &rec.name, prev.as_ref(), None)) {
            return;
        }
        while prev.is_some() {
            std::thread::sleep(INTERVAL);
            if tx.is_closed() {
                return;
            }
            let cur = take();
            if !send(stats_json(&rec.id, &rec.name, cur.as_ref(), prev.as_ref())) {
                return;
            }
            prev = cur;
        }
    });
    let body =
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::convert::Infallible>)));
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response())
}
