//! `GET|HEAD /_ping`, `GET /version`, `GET /info` (swagger tags System).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vessel_engine::db::State as CState;

use super::{Ctx, API_VERSION, MIN_API_VERSION};
use crate::error::ApiResult;

/// The version the server reports as its own (docker's `Server: Engine` version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `_ping`: `OK`, with the `API-Version` header clients negotiate from.
pub async fn ping() -> Response {
    (
        [
            ("API-Version", API_VERSION),
            ("OSType", "linux"),
            ("Docker-Experimental", "false"),
            (header::CACHE_CONTROL.as_str(), "no-cache, no-store, must-revalidate"),
            (header::CONTENT_TYPE.as_str(), "text/plain; charset=utf-8"),
        ],
        "OK",
    )
        .into_response()
}

fn uname() -> (String, String) {
    let u = rustix::system::uname();
    (
        u.release().to_string_lossy().into_owned(),
        u.machine().to_string_lossy().into_owned(),
    )
}

/// Docker's name for an architecture (`x86_64` → `amd64`).
pub fn goarch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i386" => "386",
        other => other,
    }
}

/// `version`.
pub async fn version() -> Json<Value> {
    let (kernel, machine) = uname();
    Json(json!({
        "Platform": {"Name": "vessel"},
        "Components": [{"Name": "Engine", "Version": VERSION, "Details": {
            "ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
            "Arch": goarch(&machine), "KernelVersion": kernel, "Experimental": "false"}}],
        "Version": VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": goarch(&machine),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

/// Whether the sysctl at /proc/sys/`key` reads 1 (false when it is missing: the
/// bridge sysctls exist only while the br_netfilter module is loaded).
fn sysctl_on(key: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/{key}")).is_ok_and(|v| v.trim() == "1")
}

/// `info`: counts of containers and images, the host's kernel, CPUs and memory.
pub async fn info(State(ctx): State<Ctx>) -> ApiResult<Json<Value>> {
    let root = ctx.paths.root.clone();
    let (recs, images) = ctx
        .engine(|e| {
            let images = e.store()?.images().map_err(vessel_engine::Error::from)?.len();
            Ok((e.list()?, images))
        })
        .await?;
    let count = |s: CState| recs.iter().filter(|r| r.state == s).count();
    let (kernel, machine) = uname();
    let mem = rustix::system::sysinfo();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
        })
        .unwrap_or_else(|| "Linux".into());
    Ok(Json(json!({
        "ID": "vessel",
        "Containers": recs.len(),
        "ContainersRunning": count(CState::Running),
        "ContainersPaused": count(CState::Paused),
        "ContainersStopped": count(CState::Exited) + count(CState::Created),
        "Images": images,
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "none"], "Authorization": null, "Log": ["k8s-file"]},
        "MemoryLimit": true, "SwapLimit": true, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": true, "OomKillDisable": cgroup_version == "1",
        "BridgeNfIptables": sysctl_on("net/bridge/bridge-nf-call-iptables"),
        "BridgeNfIp6tables": sysctl_on("net/bridge/bridge-nf-call-ip6tables"),
        "PidsLimit": true, "IPv4Forwarding": true, "Debug": false,
        "NFd": 0, "NGoroutines": 0, "SystemTime": vessel_runtime::state::now_rfc3339(),
        "LoggingDriver": "k8s-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
        "KernelVersion": kernel,
        "OperatingSystem": os,
        "OSType": "linux",
        "Architecture": machine,
        "NCPU": ncpu,
        "MemTotal": mem.totalram as u64 * u64::from(mem.mem_unit),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": []},
        "DockerRootDir": root,
        "Name": host,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": VERSION,
        "Runtimes": {"vessel": {"path": "vessel-runtime"}},
        "DefaultRuntime": "vessel",
        "Swarm": {"LocalNodeState": "inactive"},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "catatonit",
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": [],
    })))
}
