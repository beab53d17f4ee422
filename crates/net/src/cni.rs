//! The CNI protocol from the runtime's side (CNI spec 1.0.0, "Section 2: Execution
//! Protocol" and "Section 4: Plugin Delegation"), as libcni implements it: a network
//! configuration list, one plugin binary run per step with the CNI_* environment and
//! its configuration on stdin, results chained through `prevResult`, capability
//! arguments injected as `runtimeConfig`, and a cache of what was added so that DEL
//! works after a crash or reboot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{IoContext, NetError, PluginFailure, Result};
use crate::network::Network;
use crate::util;

/// The CNI spec version vessel speaks (Debian's plugins 1.1.1 support up to 1.0.0).
pub const CNI_VERSION: &str = "1.0.0";
/// Where the plugin binaries are searched, in order (Debian's package installs to /usr/lib/cni).
pub const CNI_PATH: &str = "/usr/lib/cni:/opt/cni/bin";
/// An environment variable that replaces [`CNI_PATH`] (`:`-separated directories).
pub const CNI_PATH_ENV: &str = "VESSEL_CNI_PATH";
/// The `kind` of cache entries, libcni's.
const CACHE_KIND: &str = "cniCacheV1";

/// The plugin search path: `$VESSEL_CNI_PATH` when set and not empty, else [`CNI_PATH`].
pub fn cni_path() -> String {
    std::env::var(CNI_PATH_ENV)
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| CNI_PATH.to_string())
}

/// The plugin binary `plugin` in the first directory of `path` that has it.
///
/// Errors: [`NetError::PluginNotFound`] with the apt-get hint.
pub fn find_plugin(plugin: &str, path: &str) -> Result<PathBuf> {
    let not_found = || NetError::PluginNotFound {
        plugin: plugin.to_string(),
        path: path.to_string(),
    };
    if plugin.is_empty() || plugin.contains('/') || plugin.starts_with('.') {
        return Err(not_found());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(not_found)
}

/// The configuration list of `network` (CNI spec, "Section 1: Network configuration
/// format"), with tuning's state under `root`/cni and host-local's in the host-wide
/// [`crate::HostState::ipam_dir`] of the bridge (shared by every root on it):
/// bridge (+ host-local IPAM), portmap, firewall, tuning — podman's CNI chain.
pub(crate) fn conflist(root: &Path, network: &Network) -> Result<Value> {
    let subnet = network.subnet_net()?;
    let cni_dir = std::path::absolute(root.join("cni")).at("resolve", root)?;
    let mut range = json!({ "subnet": network.subnet });
    if let Some(gw) = &network.gateway {
        range["gateway"] = json!(gw);
    }
    let mut ipam = json!({
        "type": "host-local",
        "dataDir": crate::host::HostState::open().ipam_dir(&network.bridge),
        "ranges": [[range]],
    });
    if !network.internal {
        let dst = match subnet {
            ipnet::IpNet::V4(_) => "0.0.0.0/0",
            ipnet::IpNet::V6(_) => "::/0",
        };
        ipam["routes"] = json!([{ "dst": dst }]);
    }
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": network.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": !network.internal,
                "ipMasq": !network.internal,
                "hairpinMode": true,
                "capabilities": { "ips": true },
                "ipam": ipam,
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true,
            },
            {
                "type": "firewall",
                "backend": "iptables",
            },
            {
                "type": "tuning",
                "capabilities": { "mac": true },
                "dataDir": cni_dir.join("tuning"),
            },
        ],
    }))
}

/// The plugins of a configuration list, in order.
pub(crate) fn plugins(conflist: &Value) -> Vec<Value> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The `type` of one plugin configuration.
pub(crate) fn plugin_type(plugin: &Value) -> String {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// One plugin's stdin (libcni's buildOneConfig): its own configuration plus the list's
/// `name` and `cniVersion`, `prevResult` when there is one, and `runtimeConfig` with
/// the capability arguments the plugin declares in `capabilities`.
pub(crate) fn plugin_config(
    plugin: &Value,
    name: &str,
    version: &str,
    prev: Option<&Value>,
    caps: &Map<String, Value>,
) -> Value {
    let mut conf = match plugin {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    conf.insert("name".into(), json!(name));
    conf.insert("cniVersion".into(), json!(version));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    let mut rc = Map::new();
    if let Some(declared) = plugin.get("capabilities").and_then(Value::as_object) {
        for (cap, on) in declared {
            if on.as_bool() == Some(true) {
                if let Some(arg) = caps.get(cap) {
                    rc.insert(cap.clone(), arg.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

/// The CNI_* parameters of one invocation (CNI spec, "Parameters").
pub(crate) struct Invocation<'a> {
    /// ADD or DEL.
    pub command: &'static str,
    /// CNI_CONTAINERID.
    pub container_id: &'a str,
    /// CNI_NETNS; empty when the namespace is gone (DEL only).
    pub netns: &'a str,
    /// CNI_IFNAME.
    pub ifname: &'a str,
    /// CNI_PATH.
    pub path: &'a str,
    /// The network, for error messages.
    pub network: &'a str,
}

/// The error object a plugin prints on failure (CNI spec, "Error").
#[derive(Deserialize)]
struct PluginError {
    code: Option<u64>,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// A PATH for the plugins, which run iptables and the IPAM plugin: the caller's, with
/// the sbin directories added when missing.
fn plugin_env_path() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for dir in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !path.split(':').any(|p| p == dir) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(dir);
        }
    }
    path
}

/// Runs one plugin with `config` on stdin. Returns its result object for ADD (and
/// whatever JSON it printed otherwise, if any).
///
/// Errors: [`NetError::Exec`] when it cannot run, [`NetError::Plugin`] with the plugin's
/// own `msg`/`details` (or its stderr) when it fails, [`NetError::Json`] when ADD
/// printed no result.
pub(crate) fn exec(inv: &Invocation, binary: &Path, config: &Value) -> Result<Option<Value>> {
    let plugin = binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stdin = serde_json::to_vec(config).map_err(|source| NetError::Json {
        what: "plugin configuration for",
        path: binary.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(binary);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("PATH", plugin_env_path())
        .env("CNI_COMMAND", inv.command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", "")
        .env("CNI_PATH", inv.path)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let exec_err = |source| NetError::Exec {
        program: binary.to_path_buf(),
        source,
    };
    let mut child = cmd.spawn().map_err(exec_err)?;
    if let Some(mut input) = child.stdin.take() {
        // A plugin that exits without reading its stdin gives EPIPE: its exit status
        // and output tell what happened.
        let _ = input.write_all(&stdin);
    }
    let out = child.wait_with_output().map_err(exec_err)?;
    let fail = |code: Option<u64>, msg: String, details: String| {
        NetError::Plugin(Box::new(PluginFailure {
            plugin: plugin.clone(),
            command: inv.command,
            network: inv.network.to_string(),
            container: inv.container_id.to_string(),
            code,
            msg,
            details,
        }))
    };
    if !out.status.success() {
        if let Ok(e) = serde_json::from_slice::<PluginError>(&out.stdout) {
            if !e.msg.is_empty() || e.code.is_some() {
                return Err(fail(e.code, e.msg, e.details));
            }
        }
        let text = [&out.stderr[..], &out.stdout[..]]
            .iter()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .find(|t| !t.is_empty())
            .unwrap_or_else(|| out.status.to_string());
        return Err(fail(None, text, String::new()));
    }
    if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        return match inv.command {
            "ADD" => Err(fail(None, "the plugin printed no result".into(), String::new())),
            _ => Ok(None),
        };
    }
    match serde_json::from_slice::<Value>(&out.stdout) {
        Ok(v) if v.is_object() => Ok(Some(v)),
        Ok(_) | Err(_) if inv.command != "ADD" => Ok(None),
        Ok(_) => Err(fail(
            None,
            "the plugin's result is not a JSON object".into(),
            String::new(),
        )),
        Err(source) => Err(NetError::Json {
            what: "result of CNI plugin",
            path: binary.to_path_buf(),
            source,
        }),
    }
}

/// What is cached per container, network and interface (libcni's cniCacheV1 entry:
/// the configuration list, capability arguments and result of the ADD), so that DEL
/// runs with what ADD ran with, even after the network is changed or removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CacheEntry {
    /// [`CACHE_KIND`].
    pub kind: String,
    /// The container id.
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The configuration list used for ADD (a JSON object; libcni stores its bytes).
    pub config: Value,
    /// The interface name in the container.
    #[serde(rename = "ifName")]
    pub ifname: String,
    /// The network name.
    #[serde(rename = "networkName")]
    pub network: String,
    /// The namespace path given to ADD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    /// The capability arguments (`portMappings`, `ips`, `mac`).
    #[serde(rename = "capabilityArgs", default)]
    pub capability_args: Map<String, Value>,
    /// The final result of ADD; None while ADD runs (an entry left so is what a crash
    /// in the middle of ADD leaves, and DEL can still undo it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CacheEntry {
    /// A new entry without result.
    pub fn new(
        container_id: &str,
        network: &str,
        ifname: &str,
        netns: &str,
        config: Value,
        caps: Map<String, Value>,
    ) -> Self {
        CacheEntry {
            kind: CACHE_KIND.to_string(),
            container_id: container_id.to_string(),
            config,
            ifname: ifname.to_string(),
            network: network.to_string(),
            netns: netns.to_string(),
            capability_args: caps,
            result: None,
        }
    }
}

/// The cache directory of `root`.
pub(crate) fn cache_dir(root: &Path) -> PathBuf {
    root.join("cni").join("cache")
}

/// The cache file of one attachment (libcni's `<network>-<container>-<ifname>`).
pub(crate) fn cache_path(root: &Path, container_id: &str, network: &str, ifname: &str) -> PathBuf {
    cache_dir(root).join(format!("{network}-{container_id}-{ifname}"))
}

/// Writes a cache entry (write-temp + fsync + rename).
pub(crate) fn cache_write(root: &Path, entry: &CacheEntry) -> Result<()> {
    let path = cache_path(root, &entry.container_id, &entry.network, &entry.ifname);
    let text = serde_json::to_vec(entry).map_err(|source| NetError::Json {
        what: "CNI cache entry",
        path: path.clone(),
        source,
    })?;
    util::write_atomic(&path, &text)
}

/// Reads one cache file; None when it does not exist.
pub(crate) fn cache_read_file(path: &Path) -> Result<Option<CacheEntry>> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(NetError::io("read", path, e)),
    };
    let entry: CacheEntry = serde_json::from_slice(&text).map_err(|source| NetError::Json {
        what: "CNI cache entry",
        path: path.to_path_buf(),
        source,
    })?;
    if entry.kind != CACHE_KIND {
        return Err(NetError::BadRequest(format!(
            "CNI cache entry {}: unknown kind \"{}\": remove the file",
            path.display(),
            entry.kind
        )));
    }
    Ok(Some(entry))
}

/// Reads the cache entry of one attachment; one that names another attachment inside
/// (a file renamed or edited by hand) is an error.
pub(crate) fn cache_read(root: &Path, container_id: &str, network: &str, ifname: &str) -> Result<Option<CacheEntry>> {
    let path = cache_path(root, container_id, network, ifname);
    let entry = cache_read_file(&path)?;
    if let Some(e) = &entry {
        if (e.container_id.as_str(), e.network.as_str(), e.ifname.as_str()) != (container_id, network, ifname) {
            return Err(NetError::BadRequest(format!(
                "CNI cache entry {} is for container {} on network {} ({}): remove the file",
                path.display(),
                e.container_id,
                e.network,
                e.ifname
            )));
        }
    }
    Ok(entry)
}

/// Removes the cache entry of one attachment (missing is fine).
pub(crate) fn cache_remove(root: &Path, container_id: &str, network: &str, ifname: &str) -> Result<()> {
    let path = cache_path(root, container_id, network, ifname);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Every cache entry under `root`, sorted by file name; unreadable entries are skipped.
pub(crate) fn cache_list(root: &Path) -> Result<Vec<CacheEntry>> {
    let dir = cache_dir(root);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io("read", dir, e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    paths.sort();
    Ok(paths.iter().filter_map(|p| cache_read_file(p).ok().flatten()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_config_like_libcni() {
        let plugin = json!({"type": "portmap", "capabilities": {"portMappings": true, "other": false}, "snat": true});
        let mut caps = Map::new();
        caps.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        caps.insert("mac".into(), json!("02:00:00:00:00:01"));
        caps.insert("other".into(), json!(1));
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&plugin, "net", "1.0.0", Some(&prev), &caps);
        assert_eq!(c["name"], "net");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["snat"], true);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c["runtimeConfig"].get("mac").is_none());
        assert!(c["runtimeConfig"].get("other").is_none());
        let c = plugin_config(&json!({"type": "firewall"}), "net", "1.0.0", None, &caps);
        assert!(c.get("runtimeConfig").is_none());
        assert!(c.get("prevResult").is_none());
    }

    #[test]
    fn plugin_lookup() {
        let e = find_plugin("bridge", "/nonexistent-vessel:/also-not")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "CNI plugin bridge not found in /nonexistent-vessel:/also-not: apt-get install containernetworking-plugins"
        );
        assert!(find_plugin("../bin/sh", "/usr/lib/cni").is_err());
    }

    #[test]
    fn conflist_shape() {
        let n = Network {
            name: "n1".into(),
            id: "0".repeat(64),
            subnet: "10.89.7.0/24".into(),
            gateway: Some("10.89.7.1".into()),
            internal: false,
            bridge: "vessel3".into(),
            created: String::new(),
            warm: 0,
            labels: Default::default(),
        };
        let c = conflist(Path::new("/var/lib/vessel"), &n).unwrap();
        let p = plugins(&c);
        assert_eq!(
            p.iter().map(plugin_type).collect::<Vec<_>>(),
            ["bridge", "portmap", "firewall", "tuning"]
        );
        let ipam = p[0]["ipam"]["dataDir"].as_str().unwrap();
        assert!(ipam.ends_with("/ipam/vessel3"), "{ipam}");
        assert_eq!(p[0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(p[0]["isGateway"], true);
        let internal = Network { internal: true, ..n };
        let c = conflist(Path::new("/r"), &internal).unwrap();
        let p = plugins(&c);
        assert_eq!(p[0]["isGateway"], false);
        assert_eq!(p[0]["ipMasq"], false);
        assert!(p[0]["ipam"].get("routes").is_none());
    }
}
