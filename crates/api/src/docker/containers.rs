//! The container routes (swagger tag Container) but attach and logs ([`super::attach`]):
//! list, create, inspect, start, stop, restart, kill, wait, pause, unpause, rename,
//! top, delete. Each calls the engine as the `vessel` command of the same name does.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vessel_engine::db::{Record, State as CState};
use vessel_engine::options::RunOptions;
use vessel_engine::Engine;

use super::{flag, json_body, Ctx};
use crate::error::{ApiError, ApiResult};

type Q = Query<HashMap<String, String>>;

/// docker's name of a container: `/NAME`.
fn slash(name: &str) -> String {
    format!("/{name}")
}

fn proto(p: &vessel_net::PortMapping) -> &'static str {
    match p.protocol {
        vessel_net::Protocol::Tcp => "tcp",
        vessel_net::Protocol::Udp => "udp",
    }
}

/// The `filters` query parameter: `{"name":["x"]}` or the old `{"name":{"x":true}}`.
pub(crate) fn filters(q: &HashMap<String, String>) -> ApiResult<HashMap<String, Vec<String>>> {
    let Some(text) = q.get("filters").filter(|t| !t.is_empty()) else {
        return Ok(HashMap::new());
    };
    let v: Value = serde_json::from_str(text).map_err(|e| ApiError::bad(format!("invalid filters {text:?}: {e}")))?;
    let Value::Object(m) = v else {
        return Err(ApiError::bad(format!("invalid filters {text:?}: not a JSON object")));
    };
    let mut out = HashMap::new();
    for (k, v) in m {
        let vals: Vec<String> = match v {
            Value::Array(a) => a.into_iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            Value::Object(o) => o
                .into_iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(k, _)| k)
                .collect(),
            _ => return Err(ApiError::bad(format!("invalid filter {k:?}: give a list of values"))),
        };
        out.insert(k, vals);
    }
    Ok(out)
}

fn matches(e: &Engine, r: &Record, f: &HashMap<String, Vec<String>>) -> ApiResult<bool> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let ok = match k.as_str() {
            "id" => vals.iter().any(|v| r.id.starts_with(v.as_str())),
            "name" => vals.iter().any(|v| r.name.contains(v.trim_start_matches('/'))),
            "status" => vals.iter().any(|v| v == r.state.as_str()),
            "ancestor" => vals.iter().any(|v| *v == r.image || r.image_id.contains(v.as_str())),
            // Every label given must be there (docker compose finds its containers so).
            "label" => vals.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => r.options.labels.get(k).is_some_and(|x| x == val),
                None => r.options.labels.contains_key(v.as_str()),
            }),
            "health" => vals.iter().any(|v| {
                let h = vessel_engine::health::ps_suffix(&e.paths, r);
                match v.as_str() {
                    "none" => h.is_empty(),
                    "starting" => h.contains("starting"),
                    other => h == format!(" ({other})"),
                }
            }),
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter '{other}': use id, name, status, ancestor, label or health"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn summary(e: &Engine, r: &Record) -> Value {
    let ports: Vec<Value> = r
        .options
        .publish
        .iter()
        .map(|p| {
            json!({"IP": p.host_ip.as_deref().unwrap_or("0.0.0.0"), "PrivatePort": p.container_port,
                   "PublicPort": p.host_port, "Type": proto(p)})
        })
        .collect();
    let net = r.options.network.clone().unwrap_or_else(|| "default".into());
    // `docker ps --format '{{.Networks}}'` lists these keys.
    let networks: serde_json::Map<String, Value> = vessel_engine::network::attachments(&e.paths, &r.id)
        .into_iter()
        .map(|a| {
            (
                a.network,
                json!({"IPAddress": a.ip, "IPPrefixLen": a.prefix, "MacAddress": a.mac}),
            )
        })
        .collect();
    json!({
        "Id": r.id, "Names": [slash(&r.name)], "Image": r.image, "ImageID": r.image_id,
        "Command": r.command.join(" "),
        "Created": vessel_engine::status::unix_secs(&r.created_at),
        "Ports": ports, "Labels": r.options.labels, "State": r.state.as_str(), "Status": e.status_text(r),
        "HostConfig": {"NetworkMode": net}, "NetworkSettings": {"Networks": networks}, "Mounts": [],
    })
}

/// `GET /containers/json?all&filters`: running containers (every one with `all`).
pub async fn list(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let all = flag(q.get("all"));
    let f = filters(&q)?;
    let out = ctx
        .engine(move |e| {
            let mut out = Vec::new();
            // Newest first, as docker lists them.
            for r in e.list()?.iter().rev() {
                let shown = all || matches!(r.state, CState::Running | CState::Paused) || f.contains_key("status");
                if shown && matches(e, r, &f)? {
                    out.push(summary(e, r));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(Value::Array(out)))
}

/// `HostConfig` of `containers/create`: the fields served.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    auto_remove: bool,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids_limit: Option<i64>,
    binds: Option<Vec<String>>,
    port_bindings: Option<HashMap<String, Option<Vec<PortBinding>>>>,
    network_mode: Option<String>,
    privileged: bool,
    readonly_rootfs: bool,
    init: Option<bool>,
    cap_add: Option<Vec<String>>,
    cap_drop: Option<Vec<String>>,
    publish_all_ports: bool,
    cgroup_parent: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    host_ip: String,
    host_port: String,
}

/// The body of `containers/create`: the fields served (others are ignored, as
/// docker ignores what it does not know).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: String,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    tty: bool,
    open_stdin: bool,
    hostname: String,
    working_dir: String,
    user: String,
    labels: Option<std::collections::BTreeMap<String, String>>,
    healthcheck: Option<HealthConfig>,
    host_config: HostConfig,
    networking_config: Option<NetworkingConfig>,
}

/// `NetworkingConfig`: the endpoint of the container's network (its aliases).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct NetworkingConfig {
    endpoints_config: Option<HashMap<String, Option<EndpointConfig>>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EndpointConfig {
    aliases: Option<Vec<String>>,
}

/// `Config.Healthcheck`: durations in nanoseconds, 0 for the default.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct HealthConfig {
    test: Option<Vec<String>>,
    // docker-py sends null for what the compose file leaves out.
    interval: Option<i64>,
    timeout: Option<i64>,
    retries: Option<i64>,
    start_period: Option<i64>,
}

impl HealthConfig {
    /// The engine's healthcheck; 400 for negative values, an interval or timeout
    /// under 1 ms, a test of an unknown form.
    fn check(self) -> ApiResult<Option<vessel_engine::health::Healthcheck>> {
        let Some(test) = self.test.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let ns = |what: &str, v: Option<i64>| -> ApiResult<Duration> {
            let v = v.unwrap_or(0);
            if v < 0 || (v > 0 && v < 1_000_000 && what != "StartPeriod") {
                return Err(ApiError::bad(format!(
                    "Healthcheck {what} {v}: give nanoseconds, at least 1000000 (1 ms), or 0 for the default"
                )));
            }
            Ok(Duration::from_nanos(v as u64))
        };
        let h = vessel_engine::health::Healthcheck {
            test,
            interval: ns("Interval", self.interval)?,
            timeout: ns("Timeout", self.timeout)?,
            retries: u32::try_from(self.retries.unwrap_or(0))
                .map_err(|_| ApiError::bad(format!("Healthcheck Retries {:?}: give 0 or more", self.retries)))?,
            start_period: ns("StartPeriod", self.start_period)?,
        };
        h.command()?;
        Ok(Some(h))
    }
}

fn options(name: Option<String>, b: CreateBody) -> ApiResult<RunOptions> {
    if b.image.is_empty() {
        return Err(ApiError::bad("config has no Image: give the image to run"));
    }
    let healthcheck = b.healthcheck.map(HealthConfig::check).transpose()?.flatten();
    // Aliases of the one network a container joins (vessel joins one).
    let mut network_aliases: Vec<String> = b
        .networking_config
        .and_then(|n| n.endpoints_config)
        .unwrap_or_default()
        .into_values()
        .flatten()
        .flat_map(|e| e.aliases.unwrap_or_default())
        .collect();
    // Checked by the engine (vessel_engine::network::prepare) as `--network-alias` is.
    network_aliases.dedup();
    let h = b.host_config;
    let mut volumes = Vec::new();
    for bind in h.binds.unwrap_or_default() {
        volumes.push(vessel_engine::units::parse_volume(&bind)?);
    }
    let mut publish = Vec::new();
    for (ctr, bindings) in h.port_bindings.unwrap_or_default() {
        let (port, proto) = ctr.split_once('/').unwrap_or((&ctr, "tcp"));
        for b in bindings.unwrap_or_default() {
            let spec = match (b.host_ip.as_str(), b.host_port.as_str()) {
                ("", hp) => format!("{hp}:{port}/{proto}"),
                (ip, hp) => format!("{ip}:{hp}:{port}/{proto}"),
            };
            publish.extend(
                vessel_net::parse_publish(&spec).map_err(|e| ApiError::bad(format!("PortBindings {ctr}: {e}")))?,
            );
        }
    }
    let entrypoint = b.entrypoint.map(|ep| match ep.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        _ => serde_json::to_string(&ep).unwrap_or_default(),
    });
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    // What the client leaves to the daemon's default, the server's environment chooses as
    // it does for `vessel run`: VESSEL_NETWORK, VESSEL_CGROUP_PARENT.
    let from_env = |var: &str| std::env::var(var).ok().and_then(nonempty);
    let network = h
        .network_mode
        .filter(|m| !m.is_empty() && m != "default")
        .or_else(|| from_env("VESSEL_NETWORK"));
    let cgroup_parent = nonempty(h.cgroup_parent).or_else(|| from_env("VESSEL_CGROUP_PARENT"));
    Ok(RunOptions {
        name,
        image: b.image,
        command: b.cmd.unwrap_or_default(),
        entrypoint,
        env: b.env.unwrap_or_default(),
        tty: b.tty,
        interactive: b.open_stdin,
        hostname: nonempty(b.hostname),
        workdir: nonempty(b.working_dir),
        user: nonempty(b.user),
        rm: h.auto_remove,
        memory: h.memory.filter(|m| *m > 0),
        cpus: h.nano_cpus.filter(|c| *c > 0).map(|c| c as f64 / 1e9),
        // 0 and -1: no limit (swagger: PidsLimit).
        pids_limit: h.pids_limit.filter(|p| *p > 0),
        volumes,
        publish,
        publish_all: h.publish_all_ports,
        network,
        privileged: h.privileged,
        read_only: h.readonly_rootfs,
        init: h.init.unwrap_or(false),
        cap_add: h.cap_add.unwrap_or_default(),
        cap_drop: h.cap_drop.unwrap_or_default(),
        cgroup_parent,
        labels: b.labels.unwrap_or_default(),
        healthcheck,
        network_aliases,
        ..RunOptions::default()
    })
}

/// `POST /containers/create?name=`: 201 `{"Id", "Warnings"}`. A missing image is
/// 404 `No such image` (the docker CLI then pulls it and asks again).
pub async fn create(State(ctx): State<Ctx>, Query(q): Q, body: Bytes) -> ApiResult<Response> {
    let b: CreateBody = json_body(&body)?;
    // docker's own form of a name has one leading `/` (`/web`): dropped, as dockerd
    // does; the rest must be a valid name.
    let name = q
        .get("name")
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let opts = options(name, b)?;
    let rec = ctx
        .engine(move |e| {
            let mut no_pull = |_: &vessel_image::Store, name: &str| {
                Err(vessel_image::ImageError::ImageNotFound { name: name.to_string() })
            };
            Ok(e.create(opts, &mut no_pull)?)
        })
        .await?;
    crate::reaper::reap_later(rec.monitor_pid.unwrap_or(0));
    Ok((StatusCode::CREATED, Json(json!({"Id": rec.id, "Warnings": []}))).into_response())
}

/// `GET /containers/{id}/json`.
pub async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(ctx.engine(move |e| inspect_json(e, &e.find(&id)?)).await?))
}

fn time_or_zero(t: &Option<String>) -> String {
    t.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

fn inspect_json(e: &Engine, r: &Record) -> ApiResult<Value> {
    let spec = e.spec(r).ok();
    let o = &r.options;
    let limits = e.limits(r, spec.as_ref());
    let attachment = vessel_engine::network::attachment(&e.paths, &r.id);
    let mut ports = serde_json::Map::new();
    for p in &o.publish {
        ports.insert(
            format!("{}/{}", p.container_port, proto(p)),
            json!([{"HostIp": p.host_ip.as_deref().unwrap_or("0.0.0.0"), "HostPort": p.host_port.to_string()}]),
        );
    }
    let net = o.network.clone().unwrap_or_else(|| "default".into());
    let mut networks = serde_json::Map::new();
    for a in vessel_engine::network::attachments(&e.paths, &r.id).iter() {
        let aliases: Vec<String> = [r.id[..12].to_string(), r.name.clone()]
            .into_iter()
            .chain(o.network_aliases.iter().cloned())
            .collect();
        networks.insert(
            a.network.clone(),
            json!({"IPAddress": a.ip, "IPPrefixLen": a.prefix, "Gateway": a.gateway.as_deref().unwrap_or(""), "MacAddress": a.mac,
                   "NetworkID": vessel_net::Networks::open(&e.paths.root).get(&a.network).map(|n| n.id).unwrap_or_default(),
                   "EndpointID": r.id, "Aliases": aliases}),
        );
    }
    let process = spec.as_ref().and_then(|s| s.process().clone());
    Ok(json!({
        "Id": r.id,
        "Created": r.created_at,
        "Path": r.command.first().cloned().unwrap_or_default(),
        "Args": r.command.get(1..).unwrap_or(&[]),
        "State": {
            "Status": r.state.as_str(),
            "Running": matches!(r.state, CState::Running | CState::Paused),
            "Paused": r.state == CState::Paused,
            "Restarting": false,
            "OOMKilled": r.oom_killed,
            "Dead": false,
            "Pid": r.pid.unwrap_or(0),
            "ExitCode": r.exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": time_or_zero(&r.started_at),
            "FinishedAt": time_or_zero(&r.finished_at),
            "Health": o.healthcheck.as_ref().and_then(|h| h.command().ok().flatten())
                .map(|_| vessel_engine::health::read(&e.paths, &r.id).unwrap_or_default()),
        },
        "Image": r.image_id,
        "ResolvConfPath": e.paths.bundle(&r.id).join("resolv.conf"),
        "HostnamePath": e.paths.bundle(&r.id).join("hostname"),
        "HostsPath": e.paths.bundle(&r.id).join("hosts"),
        "LogPath": e.paths.log(&r.id),
        "Name": slash(&r.name),
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "HostConfig": {
            "Binds": o.volumes.iter().map(|v| format!("{}:{}{}", v.name.clone().unwrap_or_else(|| v.host.display().to_string()), v.container.display(), match (v.read_only, v.idmap) { (true, true) => ":ro,idmap", (true, false) => ":ro", (false, true) => ":idmap", _ => "" })).collect::<Vec<_>>(),
            "NetworkMode": net, "AutoRemove": o.rm, "Privileged": o.privileged, "ReadonlyRootfs": o.read_only,
            "Memory": limits.memory, "NanoCpus": limits.nano_cpus, "PidsLimit": limits.pids,
            "CapAdd": o.cap_add, "CapDrop": o.cap_drop, "Init": o.init,
            "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
            "LogConfig": {"Type": "k8s-file", "Config": {}},
            "PortBindings": ports.clone(),
        },
        "Config": {
            "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()).unwrap_or_default(),
            "User": o.user.clone().unwrap_or_default(),
            "Tty": o.tty, "OpenStdin": o.interactive, "StdinOnce": false,
            "AttachStdin": false, "AttachStdout": false, "AttachStderr": false,
            "Env": process.as_ref().and_then(|p| p.env().clone()).unwrap_or_default(),
            "Cmd": r.command,
            "Image": r.image,
            "WorkingDir": process.as_ref().map(|p| p.cwd().display().to_string()).unwrap_or_default(),
            "Entrypoint": null,
            "Labels": o.labels,
            "Healthcheck": o.healthcheck.as_ref().map(|h| json!({"Test": h.test, "Interval": h.interval.as_nanos() as u64,
                "Timeout": h.timeout.as_nanos() as u64, "Retries": h.retries, "StartPeriod": h.start_period.as_nanos() as u64})),
            "StopSignal": r.stop_signal.to_string(),
        },
        "NetworkSettings": {
            "IPAddress": attachment.as_ref().map_or("", |a| a.ip.as_str()),
            "IPPrefixLen": attachment.as_ref().map_or(0, |a| a.prefix),
            "Gateway": attachment.as_ref().and_then(|a| a.gateway.as_deref()).unwrap_or(""),
            "MacAddress": attachment.as_ref().map_or("", |a| a.mac.as_str()),
            "Ports": ports,
            "Networks": networks,
        },
        "Mounts": o.volumes.iter().map(mount_json).collect::<Vec<_>>(),
    }))
}

/// A `Mounts` entry of inspect: a bind mount, or a named volume (`Type: volume`).
fn mount_json(v: &vessel_engine::options::Volume) -> Value {
    let mode = if v.read_only { "ro" } else { "" };
    match &v.name {
        Some(name) => json!({"Type": "volume", "Name": name, "Source": v.host, "Destination": v.container,
                             "Driver": "local", "RW": !v.read_only, "Mode": mode, "Propagation": ""}),
        None => json!({"Type": "bind", "Source": v.host, "Destination": v.container, "RW": !v.read_only,
                       "Mode": mode, "Propagation": "rprivate"}),
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn not_modified() -> Response {
    StatusCode::NOT_MODIFIED.into_response()
}

/// `POST /containers/{id}/start`: 204; 304 when it runs already.
pub async fn start(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    let started = ctx
        .engine(move |e| {
            let r = e.find(&id)?;
            if matches!(r.state, CState::Running | CState::Paused) {
                return Ok(None);
            }
            e.start(&r)?;
            Ok(e.db.get(&r.id)?.and_then(|r| r.monitor_pid))
        })
        .await?;
    Ok(match started {
        None => not_modified(),
        Some(pid) => {
            crate::reaper::reap_later(pid);
            no_content()
        }
    })
}

fn timeout(q: &HashMap<String, String>) -> ApiResult<Duration> {
    match q.get("t") {
        None => Ok(Duration::from_secs(10)),
        Some(t) => t
            .parse::<i64>()
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .map_err(|_| ApiError::bad(format!("invalid t={t:?}: give seconds"))),
    }
}

/// `POST /containers/{id}/stop?t=`: 204; 304 when it is not running.
pub async fn stop(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let t = timeout(&q)?;
    let stopped = ctx
        .engine(move |e| {
            let r = e.find(&id)?;
            if !r.state.is_live() {
                return Ok(false);
            }
            e.stop(&r, t)?;
            Ok(true)
        })
        .await?;
    Ok(if stopped { no_content() } else { not_modified() })
}

/// `POST /containers/{id}/restart?t=`: stop, then start: 204.
pub async fn restart(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let t = timeout(&q)?;
    let pid = ctx
        .engine(move |e| {
            let r = e.find(&id)?;
            e.stop(&r, t)?;
            let r = e.find(&r.id)?;
            e.start(&r)?;
            Ok(e.db.get(&r.id)?.and_then(|r| r.monitor_pid))
        })
        .await?;
    crate::reaper::reap_later(pid.unwrap_or(0));
    Ok(no_content())
}

/// `POST /containers/{id}/kill?signal=`: 204; 409 when it is not running.
pub async fn kill(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let sig = match q.get("signal").filter(|s| !s.is_empty()) {
        Some(s) => vessel_runtime::signal::parse(s).map_err(|e| ApiError::bad(e.to_string()))?,
        None => libc::SIGKILL,
    };
    ctx.engine(move |e| Ok(e.kill(&e.find(&id)?, sig)?)).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/pause`.
pub async fn pause(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.engine(move |e| Ok(e.pause(&e.find(&id)?, true)?)).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.engine(move |e| Ok(e.pause(&e.find(&id)?, false)?)).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let name = q
        .get("name")
        .filter(|n| !n.is_empty())
        .cloned()
        .ok_or_else(|| ApiError::bad("rename needs name=NEW_NAME"))?;
    // One leading `/` (docker's form of a name) is dropped, as dockerd does.
    ctx.engine(move |e| Ok(e.rename(&e.find(&id)?, name.strip_prefix('/').unwrap_or(&name))?))
        .await?;
    Ok(no_content())
}

/// `GET /containers/{id}/top?ps_args=`: `{"Titles", "Processes"}`.
pub async fn top(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Json<Value>> {
    let args: Vec<String> = q
        .get("ps_args")
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let (titles, rows) = ctx
        .engine(move |e| {
            let r = e.find(&id)?;
            e.runtime_state(&r)?;
            Ok(vessel_engine::stats::top(&e.paths.oci_root(), &r.id, &args)?)
        })
        .await?;
    Ok(Json(json!({"Titles": titles, "Processes": rows})))
}

/// `DELETE /containers/{id}?force&v`: 204; 409 for a running container without force.
/// (`v`: vessel has no anonymous volumes; accepted.)
pub async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let force = flag(q.get("force"));
    ctx.engine(move |e| Ok(e.remove(&e.find(&id)?, force)?)).await?;
    Ok(no_content())
}

/// `POST /containers/{id}/wait?condition=not-running|next-exit|removed`:
/// `{"StatusCode", "Error"}` once the condition holds. The headers go at once (the
/// docker CLI starts the container only after it has them), the body when the
/// container has ended. The exit code comes from the container's monitor (which
/// says it before an `--rm` container's record goes).
pub async fn wait(State(ctx): State<Ctx>, Path(id): Path<String>, Query(q): Q) -> ApiResult<Response> {
    let condition = q
        .get("condition")
        .filter(|c| !c.is_empty())
        .cloned()
        .unwrap_or_else(|| "not-running".into());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad(format!(
            "invalid condition {condition:?}: use not-running, next-exit or removed"
        )));
    }
    let found = {
        let id = id.clone();
        ctx.engine(move |e| {
            let r = e.find(&id)?;
            let w = e.watch(&r).ok().map(|a| a.into_socket());
            Ok((r, w))
        })
        .await
    };
    let (full, watched) = match found {
        Ok(f) => f,
        // An `--rm` container that ended (and went) before this wait came: its exit
        // code as an attach of this server heard it.
        Err(e) if e.status == StatusCode::NOT_FOUND => match ctx.exit_of(&id) {
            Some(code) => return Ok(Json(json!({"StatusCode": code, "Error": null})).into_response()),
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let body = futures_util::stream::once(async move {
        let code = wait_code(&ctx, &full, watched, &condition).await;
        let mut text = json!({"StatusCode": code, "Error": null}).to_string().into_bytes();
        text.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(text))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

async fn wait_code(ctx: &Ctx, full: &Record, watched: Option<std::os::fd::OwnedFd>, condition: &str) -> i32 {
    let code = match watched {
        Some(sock) => super::attach::exit_of(sock).await,
        None => full.exit_code.unwrap_or(0),
    };
    if code >= 0 {
        ctx.exited(&full.id, code);
    }
    let code = if code < 0 {
        let id = full.id.clone();
        ctx.engine(move |e| Ok(e.db.get(&id)?.and_then(|r| r.exit_code)))
            .await
            .ok()
            .flatten()
            .or_else(|| ctx.exit_of(&full.id))
            .unwrap_or(-1)
    } else {
        code
    };
    if condition == "removed" && full.options.rm {
        // The monitor removes the record before it says the exit code.
        let id = full.id.clone();
        let _ = ctx
            .engine(move |e| {
                e.wait_exit(&id, Some(Duration::from_secs(30)))?;
                Ok(())
            })
            .await;
    }
    code
}
