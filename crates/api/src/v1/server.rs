//! `GET /1.0` (what the server is and which extensions it has) and
//! `GET /1.0/resources` (host load for placement: memory, CPUs, PSI, containers).

use axum::extract::State;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::response::{sync, V1Result};
use super::V1;
use crate::tls::verifier::Peer;

/// The extensions this server's `/1.0` has, as Incus lists its `api_extensions`.
pub const API_EXTENSIONS: &[&str] = &[
    "operations",
    "resources_psi",
    "snapshots",
    "checkpoint",
    "exec_record_output",
    "certificates_tokens",
    "openapi",
    "migration_upgrade",
];

/// `GET /1.0`'s metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    /// [`API_EXTENSIONS`].
    pub api_extensions: Vec<String>,
    /// `stable`.
    pub api_status: String,
    /// `1.0`.
    pub api_version: String,
    /// `trusted` (unix socket, trusted or CA-signed certificate) or `untrusted`.
    pub auth: String,
    /// `["tls"]`.
    pub auth_methods: Vec<String>,
    /// The server's environment.
    pub environment: Environment,
}

/// `GET /1.0`'s `environment`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    /// `vessel`.
    pub server: String,
    /// vessel's version.
    pub server_version: String,
    /// The host name.
    pub server_name: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// `uname -m`.
    pub architecture: String,
    /// The client's certificate fingerprint when it came over TLS.
    pub client_fingerprint: Option<String>,
}

/// `GET /1.0`: server information.
#[utoipa::path(get, path = "/1.0", tag = "server",
    responses((status = 200, description = "sync: ServerInfo in metadata", body = super::response::Envelope)))]
pub async fn info(peer: Option<Extension<Peer>>) -> V1Result {
    let uts = rustix::system::uname();
    let (auth, fp) = match peer.as_deref() {
        None => ("trusted", None),
        Some(Peer::Trusted { fingerprint, .. }) | Some(Peer::CaSigned { fingerprint }) => {
            ("trusted", Some(fingerprint.clone()))
        }
        Some(Peer::Joining { fingerprint }) => ("untrusted", Some(fingerprint.clone())),
    };
    Ok(sync(ServerInfo {
        api_extensions: API_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        api_status: "stable".into(),
        api_version: super::API_VERSION.into(),
        auth: auth.into(),
        auth_methods: vec!["tls".into()],
        environment: Environment {
            server: "vessel".into(),
            server_version: env!("CARGO_PKG_VERSION").into(),
            server_name: uts.nodename().to_string_lossy().into_owned(),
            kernel_version: uts.release().to_string_lossy().into_owned(),
            architecture: uts.machine().to_string_lossy().into_owned(),
            client_fingerprint: fp,
        },
    }))
}

/// `GET /1.0/resources`'s metadata: the host's load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Resources {
    /// Memory, bytes.
    pub memory: Memory,
    /// CPUs.
    pub cpu: Cpu,
    /// Pressure stall information (/proc/pressure), None where the kernel has none.
    pub pressure: Option<Pressure>,
    /// Containers of this instance: all, and running.
    pub containers: Containers,
    /// The load `vessel balance` weighs (what `vessel system load --json` prints:
    /// the running containers and their memory); None when the engine could not say.
    #[schema(value_type = Option<Object>)]
    pub balance: Option<vessel_engine::balance::HostLoad>,
}

/// Memory of the host, bytes (/proc/meminfo).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    /// MemTotal.
    pub total: u64,
    /// MemTotal - MemAvailable.
    pub used: u64,
}

/// CPUs of the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Cpu {
    /// CPUs the server may run on (its affinity mask, as nproc counts them).
    pub total: u64,
    /// The 1-minute load average (/proc/loadavg).
    pub load1: f64,
}

/// PSI averages over 10 s, percent (/proc/pressure/{cpu,memory}).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Pressure {
    /// cpu `some avg10`.
    pub cpu_some_avg10: f64,
    /// cpu `full avg10` (0 on kernels that do not report it for cpu).
    pub cpu_full_avg10: f64,
    /// memory `some avg10`.
    pub memory_some_avg10: f64,
    /// memory `full avg10`.
    pub memory_full_avg10: f64,
}

/// Container counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Containers {
    /// Every container.
    pub total: u64,
    /// Running ones.
    pub running: u64,
}

fn meminfo() -> Memory {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let total = field("MemTotal:");
    Memory {
        total,
        used: total.saturating_sub(field("MemAvailable:")),
    }
}

/// `some avg10` and `full avg10` of a /proc/pressure file; None when it is missing.
fn psi(path: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let avg10 = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))
            .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("avg10=")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((avg10("some"), avg10("full")))
}

/// `GET /1.0/resources`: host memory, CPUs, PSI and container counts.
#[utoipa::path(get, path = "/1.0/resources", tag = "server",
    responses((status = 200, description = "sync: Resources in metadata", body = super::response::Envelope)))]
pub async fn resources(State(st): State<V1>) -> V1Result {
    let (containers, balance) = st
        .engine(|e| {
            let all = e.list()?;
            let c = Containers {
                total: all.len() as u64,
                running: all.iter().filter(|r| r.state.is_live()).count() as u64,
            };
            Ok((c, vessel_engine::balance::load(e).ok()))
        })
        .await?;
    let total = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let load1 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let pressure = match (psi("/proc/pressure/cpu"), psi("/proc/pressure/memory")) {
        (None, None) => None,
        (c, m) => {
            let (cs, cf) = c.unwrap_or_default();
            let (ms, mf) = m.unwrap_or_default();
            Some(Pressure {
                cpu_some_avg10: cs,
                cpu_full_avg10: cf,
                memory_some_avg10: ms,
                memory_full_avg10: mf,
            })
        }
    };
    Ok(sync(Resources {
        memory: meminfo(),
        cpu: Cpu { total, load1 },
        pressure,
        containers,
        balance,
    }))
}
