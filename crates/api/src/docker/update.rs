//! `POST /containers/{id}/update` (swagger ContainerUpdate): new resource limits on a
//! running container, as `vessel update` sets them ([`vessel_engine::Engine::update`]:
//! the cgroup at once, config.json for later starts). Served fields: `Memory`
//! (bytes), `NanoCpus` (1e-9 CPUs, docker's `--cpus`), `CpuQuota` and `CpuPeriod`
//! (µs), `PidsLimit`. Other fields are accepted and ignored, as docker ignores what a
//! platform lacks.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::Json;
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_body, Ctx};
use crate::error::{ApiError, ApiResult};

/// The body of `containers/{id}/update`: the fields served.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct UpdateBody {
    memory: i64,
    nano_cpus: i64,
    cpu_quota: i64,
    cpu_period: i64,
    pids_limit: Option<i64>,
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad(format!("update: {e}"))
}

/// `POST /containers/{id}/update`: 200 `{"Warnings": []}`; 409 when it is not running.
pub async fn update(State(ctx): State<Ctx>, Path(id): Path<String>, body: Bytes) -> ApiResult<Json<Value>> {
    let b: UpdateBody = json_body(&body)?;
    if b.nano_cpus > 0 && b.cpu_quota > 0 {
        return Err(ApiError::bad(
            "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set",
        ));
    }
    let mut res = LinuxResourcesBuilder::default();
    let mut any = false;
    if b.memory > 0 {
        res = res.memory(LinuxMemoryBuilder::default().limit(b.memory).build().map_err(bad)?);
        any = true;
    }
    if b.nano_cpus > 0 {
        // --cpus N: a quota of N periods of 100 ms, as `vessel update --cpus` sets it.
        let quota = b.nano_cpus.saturating_mul(100_000) / 1_000_000_000;
        res = res.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(100_000u64)
                .build()
                .map_err(bad)?,
        );
        any = true;
    } else if b.cpu_quota > 0 {
        let period = if b.cpu_period > 0 { b.cpu_period as u64 } else { 100_000 };
        res = res.cpu(
            LinuxCpuBuilder::default()
                .quota(b.cpu_quota)
                .period(period)
                .build()
                .map_err(bad)?,
        );
        any = true;
    }
    if let Some(p) = b.pids_limit.filter(|p| *p != 0) {
        res = res.pids(
            LinuxPidsBuilder::default()
                .limit(if p < 0 { -1 } else { p })
                .build()
                .map_err(bad)?,
        );
        any = true;
    }
    if any {
        let res = res.build().map_err(bad)?;
        ctx.engine(move |e| Ok(e.update(&e.find(&id)?, &res)?)).await?;
    } else {
        // Nothing vessel serves (a restart policy, a blkio weight): the container must exist.
        ctx.engine(move |e| Ok(e.find(&id).map(|_| ())?)).await?;
    }
    Ok(Json(json!({"Warnings": []})))
}
