//! The network routes (swagger tag Network): list, inspect, create, delete, connect,
//! disconnect, prune, on vessel's CNI bridge networks ([`vessel_net::Networks`]). Only
//! the `bridge` driver exists; docker's `bridge` network is vessel's default one
//! (`vessel`). Connect adds a network to a container (one more interface, at once when
//! it runs), disconnect takes it away ([`vessel_engine::networks::connect`]); a running
//! container cannot leave its first network (501 with what to do).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use vessel_engine::networks as nets;
use vessel_engine::Engine;
use vessel_net::{Network, Networks, DEFAULT_NETWORK};

use super::containers::filters;
use super::{json_body, Ctx};
use crate::error::{ApiError, ApiResult};

type Q = Query<HashMap<String, String>>;

/// The network a client names: by name (`bridge` is the default network), by id, or
/// by a unique id prefix. 404 `network X not found` otherwise, as docker says it.
fn resolve(e: &Engine, what: &str) -> ApiResult<Network> {
    let store = Networks::open(&e.paths.root);
    if let Ok(n) = store.get(nets::canonical(what)) {
        return Ok(n);
    }
    let all = store.list().map_err(vessel_engine::Error::from)?;
    let mut by_id: Vec<Network> = all
        .into_iter()
        .filter(|n| !what.is_empty() && n.id.starts_with(what))
        .collect();
    match (by_id.pop(), by_id.is_empty()) {
        (Some(n), true) => Ok(n),
        (None, _) => Err(ApiError::not_found(format!("network {what} not found"))),
        (Some(_), false) => Err(ApiError::bad(format!(
            "network id prefix {what} matches several networks: give more of the id"
        ))),
    }
}

fn json_of(e: &Engine, n: &Network) -> ApiResult<Value> {
    let mut containers = serde_json::Map::new();
    for r in nets::users(e, &n.name)? {
        let on = vessel_engine::network::attachments(&e.paths, &r.id)
            .into_iter()
            .find(|a| a.network == n.name);
        if let Some(a) = on {
            containers.insert(
                r.id.clone(),
                json!({"Name": r.name, "EndpointID": r.id, "MacAddress": a.mac,
                       "IPv4Address": format!("{}/{}", a.ip, a.prefix), "IPv6Address": ""}),
            );
        }
    }
    let mut ipam = json!({"Subnet": n.subnet});
    if let Some(g) = &n.gateway {
        ipam["Gateway"] = json!(g);
    }
    Ok(json!({
        "Name": n.name, "Id": n.id, "Created": n.created, "Scope": "local", "Driver": "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [ipam]},
        "Internal": n.internal, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers,
        // docker compose compares these with its file's driver_opts: the bridge's name
        // is not one a client gave.
        "Options": {},
        "Labels": n.labels,
    }))
}

/// Whether `n` passes docker's network filters: `name` (substring), `id` (prefix),
/// `label` (`KEY` or `KEY=VALUE`), `driver`, `type` (`custom`, `builtin`), `scope`.
fn passes(n: &Network, f: &HashMap<String, Vec<String>>) -> ApiResult<bool> {
    for (k, vals) in f {
        if vals.is_empty() {
            continue;
        }
        let builtin = n.name == DEFAULT_NETWORK;
        let ok = match k.as_str() {
            "name" => vals.iter().any(|v| n.name.contains(v.as_str())),
            "id" => vals.iter().any(|v| n.id.starts_with(v.as_str())),
            "label" => vals.iter().all(|v| match v.split_once('=') {
                Some((k, val)) => n.labels.get(k).is_some_and(|x| x == val),
                None => n.labels.contains_key(v),
            }),
            "driver" => vals.iter().any(|v| v == "bridge"),
            "scope" => vals.iter().any(|v| v == "local"),
            "type" => vals
                .iter()
                .any(|v| (v == "builtin" && builtin) || (v == "custom" && !builtin)),
            "dangling" => true,
            other => {
                return Err(ApiError::bad(format!(
                    "invalid filter '{other}': use name, id, label, driver, type or scope"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /networks?filters=`.
pub async fn list(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    let out = ctx
        .engine(move |e| {
            let mut out = Vec::new();
            for n in Networks::open(&e.paths.root)
                .list()
                .map_err(vessel_engine::Error::from)?
            {
                if passes(&n, &f)? {
                    out.push(json_of(e, &n)?);
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Json(Value::Array(out)))
}

/// `GET /networks/{id}`.
pub async fn inspect(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(ctx.engine(move |e| json_of(e, &resolve(e, &id)?)).await?))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: Option<String>,
    gateway: Option<String>,
    #[serde(rename = "IPRange")]
    ip_range: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: Option<String>,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    labels: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create`: 201 `{"Id", "Warning"}`. 409 for a name in use; 400 for a
/// driver other than `bridge`, IPv6, more than one subnet, an IP range.
pub async fn create(State(ctx): State<Ctx>, body: Bytes) -> ApiResult<Response> {
    let b: CreateBody = json_body(&body)?;
    if b.name.is_empty() {
        return Err(ApiError::bad("network create needs a Name"));
    }
    if let Some(d) = b.driver.as_deref().filter(|d| !d.is_empty() && *d != "bridge") {
        return Err(ApiError::bad(format!(
            "network driver {d:?} is not supported: vessel makes bridge networks only"
        )));
    }
    if b.enable_ipv6 {
        return Err(ApiError::bad("EnableIPv6 is not supported: give an IPv4 subnet"));
    }
    let configs = b.ipam.and_then(|i| i.config).unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad("a network takes one IPAM config (one subnet)"));
    }
    let config = configs.into_iter().next().unwrap_or_default();
    if config.ip_range.as_deref().is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::bad("IPAM IPRange is not supported: give a Subnet only"));
    }
    let labels = b.labels.unwrap_or_default();
    let (name, internal) = (b.name, b.internal);
    let id = ctx
        .engine(move |e| {
            let store = Networks::open(&e.paths.root);
            if name == "bridge" || store.get(&name).is_ok() {
                return Err(ApiError {
                    status: StatusCode::CONFLICT,
                    message: format!("network with name {name} already exists"),
                });
            }
            let n = store
                .create(
                    &name,
                    config.subnet.as_deref().filter(|s| !s.is_empty()),
                    config.gateway.as_deref().filter(|s| !s.is_empty()),
                    internal,
                    vessel_net::DEFAULT_WARM,
                )
                .map_err(vessel_engine::Error::from)?;
            if !labels.is_empty() {
                store.set_labels(&n.name, labels).map_err(vessel_engine::Error::from)?;
            }
            Ok(n.id)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))).into_response())
}

/// `DELETE /networks/{id}`: 204; 403 while containers are on it (docker's status), 403
/// for the default network.
pub async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Response> {
    ctx.engine(move |e| {
        let n = resolve(e, &id)?;
        nets::remove(e, &n.name).map_err(|err| match err {
            vessel_engine::Error::Network(
                ne @ (vessel_net::NetError::NetworkInUse { .. } | vessel_net::NetError::DefaultNetwork(_)),
            ) => ApiError {
                status: StatusCode::FORBIDDEN,
                message: ne.to_string(),
            },
            other => other.into(),
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
}

/// `POST /networks/{id}/connect` `{"Container"}`: 200; a running container gets its
/// interface at once. 501 for a container on the host's or another container's network
/// namespace, or running on `none`.
pub async fn connect(State(ctx): State<Ctx>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    let b: ConnectBody = json_body(&body)?;
    ctx.engine(move |e| {
        let n = resolve(e, &id)?;
        let r = e.find(&b.container)?;
        Ok(nets::connect(e, &r, &n.name)?)
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/{id}/disconnect` `{"Container", "Force"}`: 200; a running container
/// loses the interface at once; a stopped one left with no network is on `none`. 404
/// when it is not on this network; 501 for a running container's first network.
pub async fn disconnect(State(ctx): State<Ctx>, Path(id): Path<String>, body: Bytes) -> ApiResult<Response> {
    let b: ConnectBody = json_body(&body)?;
    ctx.engine(move |e| {
        let n = resolve(e, &id)?;
        let r = e.find(&b.container)?;
        if !nets::disconnect(e, &r, &n.name)? {
            return Err(ApiError::not_found(format!(
                "container {} is not connected to network {}",
                r.name, n.name
            )));
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /networks/prune`: removes every network but the default one that no
/// container uses: `{"NetworksDeleted"}`.
pub async fn prune(State(ctx): State<Ctx>, Query(q): Q) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    let gone = ctx
        .engine(move |e| {
            let mut gone = Vec::new();
            for n in Networks::open(&e.paths.root)
                .list()
                .map_err(vessel_engine::Error::from)?
            {
                if n.name == DEFAULT_NETWORK || !passes(&n, &f)? || !nets::users(e, &n.name)?.is_empty() {
                    continue;
                }
                nets::remove(e, &n.name)?;
                gone.push(n.name);
            }
            Ok(gone)
        })
        .await?;
    Ok(Json(json!({ "NetworksDeleted": gone })))
}
