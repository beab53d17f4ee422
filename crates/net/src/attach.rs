//! Attaching containers to networks and detaching them: CNI ADD of the network's
//! configuration list into the container's network namespace, CNI DEL from the cached
//! configuration (CNI spec 1.0.0, "Section 3: Execution of Network Configurations").

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cni::{self, CacheEntry, Invocation};
use crate::error::{NetError, PluginFailure, Result};
use crate::network::{check_address, Network};
use crate::ports::PortMapping;
use crate::{netlink, netns, util};

/// A container's place on a network, from the CNI result of its ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The interface inside the container (`eth0`).
    pub interface: String,
    /// The container's address on the network (`10.88.0.2`).
    pub ip: String,
    /// The subnet's prefix length (`16`).
    pub prefix: u8,
    /// The default gateway; None on an internal network (no route out).
    pub gateway: Option<String>,
    /// The interface's MAC address (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
}

/// What [`attach`] needs.
#[derive(Debug, Clone, Copy)]
pub struct AttachRequest<'a> {
    /// The container's id (CNI_CONTAINERID): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    pub container_id: &'a str,
    /// The container's network namespace file (CNI_NETNS), see [`netns::create`].
    pub netns: &'a Path,
    /// The network to join.
    pub network: &'a Network,
    /// The interface name inside the container (CNI_IFNAME), `eth0`.
    pub ifname: &'a str,
    /// Ports to publish (the portmap plugin's `portMappings`).
    pub ports: &'a [PortMapping],
    /// A static address in the network's subnet (host-local's `ips` capability).
    pub ip: Option<&'a str>,
    /// A static MAC address (the tuning plugin's `mac` capability).
    pub mac: Option<&'a str>,
}

/// Takes the default route out of a configuration list's IPAM (the bridge plugin's
/// `ipam.routes`), for an interface other than the container's first.
fn no_default_route(conflist: &mut Value) {
    let Some(list) = conflist.get_mut("plugins").and_then(Value::as_array_mut) else {
        return;
    };
    for p in list.iter_mut().filter(|p| cni::plugin_type(p) == "bridge") {
        if let Some(ipam) = p.get_mut("ipam").and_then(Value::as_object_mut) {
            ipam.remove("routes");
        }
    }
}

/// Checks a MAC address: six `:`-separated hex octets, unicast.
fn check_mac(mac: &str, subnet: &str) -> Result<()> {
    let bad = |reason: &str| NetError::BadAddress {
        what: "MAC address",
        address: mac.to_string(),
        subnet: subnet.to_string(),
        reason: reason.to_string(),
    };
    let octets: Vec<&str> = mac.split(':').collect();
    if octets.len() != 6
        || octets
            .iter()
            .any(|o| o.len() != 2 || u8::from_str_radix(o, 16).is_err())
    {
        return Err(bad("expected six hex octets as 02:42:ac:11:00:02"));
    }
    if u8::from_str_radix(octets[0], 16).is_ok_and(|b| b & 1 == 1) {
        return Err(bad("it is a multicast address"));
    }
    Ok(())
}

/// Runs the DEL of `plugins` in reverse order with `prev` as prevResult. Every plugin is
/// run even when one fails (each releases its own part: the address, the port
/// mappings); the first error is returned.
fn del_chain(
    inv: &Invocation,
    conflist: &Value,
    plugins: &[Value],
    prev: Option<&Value>,
    caps: &Map<String, Value>,
) -> Result<()> {
    let name = conflist.get("name").and_then(Value::as_str).unwrap_or(inv.network);
    let version = conflist
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(cni::CNI_VERSION);
    let mut first = None;
    for plugin in plugins.iter().rev() {
        let run = cni::find_plugin(&cni::plugin_type(plugin), inv.path)
            .and_then(|bin| cni::exec(inv, &bin, &cni::plugin_config(plugin, name, version, prev, caps)));
        if let Err(e) = run {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Runs the DEL of `plugins` (some of the cached chain of `entry`) with the cached
/// result and capability arguments, CNI_NETNS `netns` (empty: the namespace is gone).
fn del_cached(entry: &CacheEntry, netns: &str, plugins: &[Value]) -> Result<()> {
    let path = cni::cni_path();
    let inv = Invocation {
        command: "DEL",
        container_id: &entry.container_id,
        netns,
        ifname: &entry.ifname,
        path: &path,
        network: &entry.network,
    };
    del_chain(
        &inv,
        &entry.config,
        plugins,
        entry.result.as_ref(),
        &entry.capability_args,
    )
}

/// Joins a container to a network: CNI ADD of the network's configuration list
/// (bridge with host-local IPAM, portmap, firewall, tuning; loopback is not in it: see
/// [`setup_loopback`]) into `req.netns`, chained like libcni (each plugin gets the
/// list's name and cniVersion, the previous result and its capability arguments).
/// Every plugin binary is looked up first. When a plugin fails, the DEL of it and of
/// the ones before it runs in reverse order and the plugin's error is returned. The
/// configuration and result are cached under ROOT/cni/cache so that [`detach`] works
/// after a crash or a reboot. An earlier attachment of the same container, network and
/// interface still in the cache is detached first.
///
/// Errors: [`NetError::BadName`], [`NetError::BadAddress`] (ip/mac), [`NetError::BadRequest`]
/// (ports on an internal network, `netns` is no namespace), [`NetError::PluginNotFound`], [`NetError::Plugin`]
/// (the plugin's own message), [`NetError::Rollback`], [`NetError::Io`].
pub fn attach(root: &Path, req: &AttachRequest) -> Result<Attachment> {
    let network = req.network;
    util::check_container_id(req.container_id)?;
    util::check_network_name(&network.name)?;
    util::check_ifname(req.ifname)?;
    let subnet = network.subnet_net()?;
    if !netns::is_netns(req.netns) {
        return Err(NetError::BadRequest(format!(
            "{} is not a network namespace: make it with netns::create first",
            req.netns.display()
        )));
    }
    if network.internal && !req.ports.is_empty() {
        return Err(NetError::BadRequest(format!(
            "network \"{}\" is internal: it has no way in from the host, so ports cannot be published on it",
            network.name
        )));
    }
    let mut caps = Map::new();
    if !req.ports.is_empty() {
        caps.insert(
            "portMappings".into(),
            Value::Array(req.ports.iter().map(PortMapping::to_cni).collect()),
        );
    }
    if let Some(ip) = req.ip {
        let ip = check_address("IP address", ip, &subnet)?;
        if network.gateway.as_deref().and_then(|g| g.parse().ok()) == Some(ip) {
            return Err(NetError::BadAddress {
                what: "IP address",
                address: ip.to_string(),
                subnet: network.subnet.clone(),
                reason: "it is the network's gateway".into(),
            });
        }
        caps.insert("ips".into(), json!([ip.to_string()]));
    }
    if let Some(mac) = req.mac {
        check_mac(mac, &network.subnet)?;
        caps.insert("mac".into(), json!(mac.to_ascii_lowercase()));
    }
    let mut conflist = cni::conflist(root, network)?;
    if req.ifname != "eth0" {
        // A second network (`docker network connect`) adds no default route: the first
        // network's gateway stays the way out, as docker and podman keep it (and a
        // second default route would make the bridge plugin's ADD fail).
        no_default_route(&mut conflist);
    }
    // Plugins with nothing to do for this container are left out of its chain (each
    // costs a process and, on DEL, iptables calls): portmap without published ports,
    // tuning without a MAC address. The chain is cached as run, so DEL matches ADD.
    if let Some(list) = conflist.get_mut("plugins").and_then(Value::as_array_mut) {
        list.retain(|p| match cni::plugin_type(p).as_str() {
            "portmap" => !req.ports.is_empty(),
            "tuning" => req.mac.is_some(),
            _ => true,
        });
    }
    let plugins = cni::plugins(&conflist);
    let path = cni::cni_path();
    let binaries = plugins
        .iter()
        .map(|p| cni::find_plugin(&cni::plugin_type(p), &path))
        .collect::<Result<Vec<_>>>()?;

    if cni::cache_read(root, req.container_id, &network.name, req.ifname)?.is_some() {
        detach(root, req.container_id, &network.name, req.ifname, Some(req.netns))?;
    }
    let netns_str = req.netns.to_string_lossy().into_owned();
    let mut entry = CacheEntry::new(
        req.container_id,
        &network.name,
        req.ifname,
        &netns_str,
        conflist.clone(),
        caps.clone(),
    );
    // Cached before ADD: a crash in the middle leaves an entry that detach can undo.
    cni::cache_write(root, &entry)?;

    let inv = Invocation {
        command: "ADD",
        container_id: req.container_id,
        netns: &netns_str,
        ifname: req.ifname,
        path: &path,
        network: &network.name,
    };
    let mut result: Option<Value> = None;
    for (i, (plugin, bin)) in plugins.iter().zip(&binaries).enumerate() {
        let conf = cni::plugin_config(plugin, &network.name, cni::CNI_VERSION, result.as_ref(), &caps);
        match cni::exec(&inv, bin, &conf) {
            Ok(r) => result = r,
            Err(add) => {
                let del_inv = Invocation { command: "DEL", ..inv };
                let undone = del_chain(&del_inv, &conflist, &plugins[..=i], result.as_ref(), &caps);
                return Err(match undone {
                    Ok(()) => {
                        let _ = cni::cache_remove(root, req.container_id, &network.name, req.ifname);
                        add
                    }
                    Err(del) => NetError::Rollback {
                        add: Box::new(add),
                        del: Box::new(del),
                    },
                });
            }
        }
    }
    let result = result.unwrap_or_else(|| json!({}));
    entry.result = Some(result.clone());
    cni::cache_write(root, &entry)?;
    parse_attachment(&result, network.internal, &network.name, req.ifname).ok_or_else(|| {
        NetError::Plugin(Box::new(PluginFailure {
            plugin: "bridge".into(),
            command: "ADD",
            network: network.name.clone(),
            container: req.container_id.to_string(),
            code: None,
            msg: format!("the result has no address for interface {}", req.ifname),
            details: result.to_string(),
        }))
    })
}

/// The attachment described by a CNI 1.0.0 result: the interface called `ifname`
/// inside the sandbox, and its first address.
fn parse_attachment(result: &Value, internal: bool, network: &str, ifname: &str) -> Option<Attachment> {
    let ifaces = result.get("interfaces").and_then(Value::as_array);
    let index = ifaces.and_then(|l| {
        l.iter().position(|i| {
            i.get("name").and_then(Value::as_str) == Some(ifname)
                && i.get("sandbox").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
        })
    });
    let mac = index
        .and_then(|n| ifaces?.get(n)?.get("mac")?.as_str())
        .unwrap_or_default()
        .to_string();
    let ips = result.get("ips").and_then(Value::as_array)?;
    let ip = ips
        .iter()
        .find(|ip| index.is_some() && ip.get("interface").and_then(Value::as_u64) == index.map(|n| n as u64))
        .or_else(|| ips.first())?;
    let net: ipnet::IpNet = ip.get("address")?.as_str()?.parse().ok()?;
    let gateway = if internal {
        None
    } else {
        ip.get("gateway").and_then(Value::as_str).map(str::to_string)
    };
    Some(Attachment {
        network: network.to_string(),
        interface: ifname.to_string(),
        ip: net.addr().to_string(),
        prefix: net.prefix_len(),
        gateway,
        mac,
    })
}

/// The attachment recorded in the cache for a container, network and interface; None
/// when there is none (or ADD never finished).
///
/// Errors: [`NetError::Json`] for a damaged cache entry, [`NetError::Io`].
pub fn attachment(root: &Path, container_id: &str, network: &str, ifname: &str) -> Result<Option<Attachment>> {
    let Some(entry) = cni::cache_read(root, container_id, network, ifname)? else {
        return Ok(None);
    };
    let internal = cni::plugins(&entry.config)
        .first()
        .is_some_and(|b| b.get("isGateway").and_then(Value::as_bool) == Some(false));
    Ok(entry
        .result
        .as_ref()
        .and_then(|r| parse_attachment(r, internal, network, ifname)))
}

/// Undoes [`attach`]: CNI DEL of every plugin in reverse order from the cached
/// configuration list and capability arguments, with the cached result as prevResult.
/// When `netns` is None or gone (a crash, a reboot), CNI_NETNS is empty as libcni
/// passes it: the plugins still release the address and the port mappings, and the
/// masquerade rule the bridge plugin leaves in that case is removed here. The cache
/// entry is removed when every plugin succeeded (kept otherwise, so that a retry or
/// `system check` can finish). Idempotent: no cache entry is success.
///
/// Errors: [`NetError::PluginNotFound`], [`NetError::Plugin`], [`NetError::Command`]
/// (iptables), [`NetError::Json`] for a damaged cache entry, [`NetError::Io`].
pub fn detach(root: &Path, container_id: &str, network: &str, ifname: &str, netns: Option<&Path>) -> Result<()> {
    util::check_container_id(container_id)?;
    util::check_network_name(network)?;
    util::check_ifname(ifname)?;
    let Some(entry) = cni::cache_read(root, container_id, network, ifname)? else {
        return Ok(());
    };
    let netns = netns.filter(|p| netns::is_netns(p));
    let netns_str = netns.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let plugins = cni::plugins(&entry.config);
    del_cached(&entry, &netns_str, &plugins)?;
    if netns.is_none() {
        let masq = plugins
            .iter()
            .any(|p| cni::plugin_type(p) == "bridge" && p.get("ipMasq").and_then(Value::as_bool) == Some(true));
        if masq {
            crate::iptables::teardown_masquerade(network, container_id, entry.result.as_ref())?;
        }
        let tuning_dir = plugins
            .iter()
            .find(|p| cni::plugin_type(p) == "tuning")
            .and_then(|p| p.get("dataDir").and_then(Value::as_str).map(std::path::PathBuf::from));
        if let Some(dir) = tuning_dir {
            let _ = std::fs::remove_file(dir.join(format!("{container_id}_{ifname}.json")));
        }
    }
    cni::cache_remove(root, container_id, network, ifname)
}

/// Publishes `ports` on an existing attachment (a warm one, taken by a container that
/// publishes ports): CNI ADD of the network's portmap plugin alone, with the cached
/// result as prevResult, appended to the attachment's cached chain (before it runs, so
/// that a crash in the middle leaves a chain whose DEL undoes it). When ADD fails, its
/// DEL runs and the chain is as before. See [`unpublish`].
///
/// Errors: [`NetError::BadRequest`] (no finished attachment, ports already published,
/// an internal network), [`NetError::PluginNotFound`], [`NetError::Plugin`],
/// [`NetError::Json`] for a damaged cache entry, [`NetError::Io`].
pub fn publish(
    root: &Path,
    container_id: &str,
    network: &Network,
    ifname: &str,
    netns: &Path,
    ports: &[PortMapping],
) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    util::check_container_id(container_id)?;
    if network.internal {
        return Err(NetError::BadRequest(format!(
            "network \"{}\" is internal: it has no way in from the host, so ports cannot be published on it",
            network.name
        )));
    }
    let no_attachment = || {
        NetError::BadRequest(format!(
            "attachment {container_id} on network {} ({ifname}) is not in the CNI cache: ports cannot be published on it",
            network.name
        ))
    };
    let mut entry = cni::cache_read(root, container_id, &network.name, ifname)?.ok_or_else(no_attachment)?;
    let prev = entry.result.clone().ok_or_else(no_attachment)?;
    if cni::plugins(&entry.config)
        .iter()
        .any(|p| cni::plugin_type(p) == "portmap")
    {
        return Err(NetError::BadRequest(format!(
            "attachment {container_id} on network {} already publishes ports",
            network.name
        )));
    }
    let portmap = cni::plugins(&cni::conflist(root, network)?)
        .into_iter()
        .find(|p| cni::plugin_type(p) == "portmap")
        .ok_or_else(|| NetError::BadRequest("the network's configuration has no portmap plugin".into()))?;
    let path = cni::cni_path();
    let bin = cni::find_plugin("portmap", &path)?;
    let before = entry.clone();
    let mut caps = Map::new();
    caps.insert(
        "portMappings".into(),
        Value::Array(ports.iter().map(PortMapping::to_cni).collect()),
    );
    entry.capability_args.extend(caps.clone());
    if let Some(list) = entry.config.get_mut("plugins").and_then(Value::as_array_mut) {
        list.push(portmap.clone());
    }
    cni::cache_write(root, &entry)?;
    let version = entry
        .config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or(cni::CNI_VERSION)
        .to_string();
    let netns_str = netns.to_string_lossy().into_owned();
    let inv = Invocation {
        command: "ADD",
        container_id,
        netns: &netns_str,
        ifname,
        path: &path,
        network: &network.name,
    };
    let conf = cni::plugin_config(&portmap, &network.name, &version, Some(&prev), &caps);
    match cni::exec(&inv, &bin, &conf) {
        Ok(r) => {
            entry.result = Some(r.unwrap_or(prev));
            cni::cache_write(root, &entry)
        }
        Err(add) => {
            let del = Invocation { command: "DEL", ..inv };
            match cni::exec(&del, &bin, &conf) {
                Ok(_) => {
                    cni::cache_write(root, &before)?;
                    Err(add)
                }
                Err(del) => Err(NetError::Rollback {
                    add: Box::new(add),
                    del: Box::new(del),
                }),
            }
        }
    }
}

/// Undoes [`publish`] (or the port mappings of an [`attach`] made with ports): CNI DEL
/// of the attachment's portmap plugin alone, then the plugin and its `portMappings` leave
/// the cached chain; the rest of the attachment stays. Nothing to do when it publishes
/// no ports or is not cached.
///
/// Errors: [`NetError::PluginNotFound`], [`NetError::Plugin`], [`NetError::Json`] for a
/// damaged cache entry, [`NetError::Io`].
pub fn unpublish(root: &Path, container_id: &str, network: &str, ifname: &str, netns: &Path) -> Result<()> {
    util::check_container_id(container_id)?;
    let Some(mut entry) = cni::cache_read(root, container_id, network, ifname)? else {
        return Ok(());
    };
    let plugins = cni::plugins(&entry.config);
    let Some(portmap) = plugins.iter().find(|p| cni::plugin_type(p) == "portmap") else {
        return Ok(());
    };
    del_cached(&entry, &netns.to_string_lossy(), std::slice::from_ref(portmap))?;
    if let Some(list) = entry.config.get_mut("plugins").and_then(Value::as_array_mut) {
        list.retain(|p| cni::plugin_type(p) != "portmap");
    }
    entry.capability_args.remove("portMappings");
    cni::cache_write(root, &entry)
}

/// Every attachment in the cache of `root`: (container id, network, interface), for
/// `system check` to find the ones whose container is gone.
///
/// Errors: [`NetError::Io`] when the cache directory cannot be read.
pub fn attached(root: &Path) -> Result<Vec<(String, String, String)>> {
    Ok(cni::cache_list(root)?
        .into_iter()
        .map(|e| (e.container_id, e.network, e.ifname))
        .collect())
}

/// Releases every attachment in the cache of `root` (`vessel system reset`, or the
/// attachments of a root whose directory is gone): CNI DEL of each, with its namespace
/// when that still exists, then the namespace file it was added with is unmounted and
/// removed (only a file named after the attachment's CNI id, as vessel makes them).
/// Returns (container id, network, interface) of each one released.
///
/// Errors: the first failure; the other attachments are still released.
pub fn release_all(root: &Path) -> Result<Vec<(String, String, String)>> {
    let mut done = Vec::new();
    let mut first = None;
    for e in cni::cache_list(root)? {
        let ns = Path::new(&e.netns);
        let ours = !e.netns.is_empty() && ns.file_name().is_some_and(|n| n == e.container_id.as_str());
        let res = detach(root, &e.container_id, &e.network, &e.ifname, ours.then_some(ns)).and_then(|()| {
            if ours {
                netns::remove(ns)
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => done.push((e.container_id, e.network, e.ifname)),
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    first.map_or(Ok(done), Err)
}

/// Brings up `lo` inside the network namespace `netns` (what the CNI loopback plugin
/// does, done directly over rtnetlink): every container needs it, `--network none`
/// included.
///
/// Errors: [`NetError::Netns`] when the namespace cannot be entered, [`NetError::Netlink`].
pub fn setup_loopback(netns: &Path) -> Result<()> {
    netns::run_in(netns, netlink::loopback_up)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_parsing() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "vessel0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "02:00:00:00:00:07", "sandbox": "/run/x"}
            ],
            "ips": [{"address": "10.88.0.7/16", "gateway": "10.88.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}]
        });
        let a = parse_attachment(&r, false, "vessel", "eth0").unwrap();
        assert_eq!(
            a,
            Attachment {
                network: "vessel".into(),
                interface: "eth0".into(),
                ip: "10.88.0.7".into(),
                prefix: 16,
                gateway: Some("10.88.0.1".into()),
                mac: "02:00:00:00:00:07".into(),
            }
        );
        assert_eq!(parse_attachment(&r, true, "vessel", "eth0").unwrap().gateway, None);
        assert!(parse_attachment(&json!({}), false, "vessel", "eth0").is_none());
    }

    #[test]
    fn macs() {
        assert!(check_mac("02:42:ac:11:00:02", "x").is_ok());
        assert!(check_mac("01:42:ac:11:00:02", "x").is_err());
        assert!(check_mac("02:42:ac:11:00", "x").is_err());
        assert!(check_mac("zz:42:ac:11:00:02", "x").is_err());
    }
}
