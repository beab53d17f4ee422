//! Network definitions: one JSON file per network under `ROOT/networks/<name>.json`,
//! created and removed under a lock, with subnet choice and overlap checks as podman
//! does for its CNI networks (`podman network create`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, NetError, Result};
use crate::host::HostState;
use crate::{netlink, routes, util};

/// The network containers join when none is named: 10.88.0.0/16 with gateway
/// 10.88.0.1 on bridge `vessel0`, made on first use (as podman's `podman` network).
pub const DEFAULT_NETWORK: &str = "vessel";
/// The default network's subnet.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/16";
/// The default network's bridge.
pub const DEFAULT_BRIDGE: &str = "vessel0";
/// How many warm attachments a network keeps unless told otherwise ([`Network::warm`]).
pub const DEFAULT_WARM: u32 = 2;

fn default_warm() -> u32 {
    DEFAULT_WARM
}

/// A network definition, as stored in `ROOT/networks/<name>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The name containers use to join it.
    pub name: String,
    /// 64 lowercase hex digits, random, fixed at creation.
    pub id: String,
    /// The subnet in CIDR form, network address (`10.89.0.0/24`).
    pub subnet: String,
    /// The address reserved for the host's end of the bridge (by default the subnet's
    /// first address). On an internal network it is reserved but not configured.
    pub gateway: Option<String>,
    /// No gateway on the bridge, no masquerading, no default route: containers reach
    /// each other and nothing else.
    pub internal: bool,
    /// The Linux bridge the containers' veths join (`vessel0`, `vessel1`, ...).
    pub bridge: String,
    /// When it was made, RFC 3339 UTC.
    pub created: String,
    /// How many attachments of ended containers are kept, attached, for the next
    /// containers to take ([`crate::warm`]); 0 makes every container run its own CNI
    /// ADD and DEL. Those kept hold an address and a veth on the bridge each.
    #[serde(default = "default_warm")]
    pub warm: u32,
    /// Labels a client gave it (the Docker API's `Labels`: docker compose marks its
    /// networks with `com.docker.compose.project`); empty for networks made by `vessel
    /// network create`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// The subnet parsed. Errors: [`NetError::BadSubnet`] for a damaged definition.
    pub fn subnet_net(&self) -> Result<IpNet> {
        parse_subnet(&self.subnet)
    }
}

/// The store of network definitions of one vessel root.
#[derive(Debug, Clone)]
pub struct Networks {
    root: PathBuf,
}

impl Networks {
    /// Opens the definitions under `root`/networks (created when first written). The CNI
    /// cache and plugin state of the same root live under `root`/cni.
    pub fn open(root: &Path) -> Networks {
        Networks {
            root: root.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("networks")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir().join(format!("{name}.json"))
    }

    fn lock(&self) -> Result<util::Lock> {
        util::Lock::take(&self.dir().join(".lock"))
    }

    /// Makes a network that keeps up to `warm` warm attachments. `subnet` defaults to the
    /// first 10.89.N.0/24 that overlaps no network (of this root or of another root
    /// registered in the caller's [`HostState`]) and no route of the calling process's
    /// network namespace; `gateway` to the subnet's first address; the bridge is the
    /// first `vesselN` that no such network and no interface has. The root is registered
    /// in the [`HostState`].
    ///
    /// Errors: [`NetError::BadName`], [`NetError::NetworkExists`], [`NetError::BadSubnet`],
    /// [`NetError::BadAddress`] (gateway outside the subnet), [`NetError::SubnetOverlap`]
    /// (naming the other network or the route), [`NetError::NoFreeSubnet`], [`NetError::Io`].
    pub fn create(
        &self,
        name: &str,
        subnet: Option<&str>,
        gateway: Option<&str>,
        internal: bool,
        warm: u32,
    ) -> Result<Network> {
        util::check_network_name(name)?;
        // The default network's subnet is reserved even before its first use.
        self.ensure_default()?;
        let _lock = self.lock()?;
        if name == DEFAULT_NETWORK || self.file(name).exists() {
            return Err(NetError::NetworkExists(name.to_string()));
        }
        let host_state = HostState::open();
        // Held until the new network is written: two roots creating networks at once
        // never pick the same bridge or subnet.
        let host_lock = host_state.lock()?;
        // The networks of the other roots of this network namespace count too: their
        // bridges and subnets are this namespace's (the default network is the same in
        // every root, and shared).
        let mut others = self.read_all()?;
        let me = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        for r in host_state.roots()?.into_iter().filter(|r| r.root != me) {
            let theirs = Networks::open(&r.root).read_all().unwrap_or_default();
            others.extend(theirs.into_iter().filter(|n| n.name != DEFAULT_NETWORK));
        }
        let host = routes::host_routes();
        let subnet = match subnet {
            Some(s) => {
                let net = parse_subnet(s)?;
                if let Some(other) = overlap(&net, &others, &host) {
                    return Err(NetError::SubnetOverlap {
                        subnet: net.to_string(),
                        other,
                    });
                }
                net
            }
            None => (0..=255u8)
                .filter_map(|n| Ipv4Net::new([10, 89, n, 0].into(), 24).ok().map(IpNet::V4))
                .find(|net| overlap(net, &others, &host).is_none())
                .ok_or(NetError::NoFreeSubnet)?,
        };
        let gateway = match gateway {
            Some(g) => check_address("gateway", g, &subnet)?,
            None => first_host(&subnet),
        };
        let bridge = (1..10_000)
            .map(|n| format!("vessel{n}"))
            .find(|b| b != DEFAULT_BRIDGE && !others.iter().any(|o| &o.bridge == b) && !netlink::link_exists(b))
            .unwrap_or_else(|| format!("vessel{}", std::process::id()));
        let network = Network {
            name: name.to_string(),
            id: util::random_hex64()?,
            subnet: subnet.to_string(),
            gateway: Some(gateway.to_string()),
            internal,
            bridge,
            created: util::now_rfc3339(),
            warm,
            labels: BTreeMap::new(),
        };
        host_state.register_locked(&self.root)?;
        self.write(&network)?;
        drop(host_lock);
        Ok(network)
    }

    fn write(&self, network: &Network) -> Result<()> {
        let path = self.file(&network.name);
        let text = serde_json::to_vec_pretty(network).map_err(|source| NetError::Json {
            what: "network definition",
            path: path.clone(),
            source,
        })?;
        util::write_atomic(&path, &text)
    }

    fn read(&self, name: &str) -> Result<Option<Network>> {
        let path = self.file(name);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NetError::io("read", path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| NetError::Json {
                what: "network definition",
                path,
                source,
            })
    }

    /// Every stored definition, by name (the default network only once made).
    fn read_all(&self) -> Result<Vec<Network>> {
        let dir = self.dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::io("read", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at("read", &dir)?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Some(n) = self.read(name)? {
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes the default network's definition when missing.
    fn ensure_default(&self) -> Result<Network> {
        if let Some(n) = self.read(DEFAULT_NETWORK)? {
            return Ok(n);
        }
        let _lock = self.lock()?;
        if let Some(n) = self.read(DEFAULT_NETWORK)? {
            return Ok(n);
        }
        let network = Network {
            name: DEFAULT_NETWORK.to_string(),
            id: util::random_hex64()?,
            subnet: DEFAULT_SUBNET.to_string(),
            gateway: Some("10.88.0.1".to_string()),
            internal: false,
            bridge: DEFAULT_BRIDGE.to_string(),
            created: util::now_rfc3339(),
            warm: DEFAULT_WARM,
            labels: BTreeMap::new(),
        };
        self.write(&network)?;
        Ok(network)
    }

    /// The network called `name`; [`DEFAULT_NETWORK`] is made on its first use.
    ///
    /// Errors: [`NetError::UnknownNetwork`], [`NetError::Json`] for a damaged file, [`NetError::Io`].
    pub fn get(&self, name: &str) -> Result<Network> {
        if name == DEFAULT_NETWORK {
            return self.ensure_default();
        }
        if util::check_network_name(name).is_err() {
            return Err(NetError::UnknownNetwork(name.to_string()));
        }
        self.read(name)?
            .ok_or_else(|| NetError::UnknownNetwork(name.to_string()))
    }

    /// Replaces the labels of network `name` (written atomically, under the lock).
    ///
    /// Errors: [`NetError::UnknownNetwork`], [`NetError::Json`], [`NetError::Io`].
    pub fn set_labels(&self, name: &str, labels: BTreeMap<String, String>) -> Result<Network> {
        let _lock = self.lock()?;
        let mut network = self.get(name)?;
        network.labels = labels;
        self.write(&network)?;
        Ok(network)
    }

    /// Every network, sorted by name, the default one included (made when missing).
    pub fn list(&self) -> Result<Vec<Network>> {
        self.ensure_default()?;
        self.read_all()
    }

    /// Removes a network's definition, its IPAM state ([`HostState::ipam_dir`]) and its bridge (when it exists in
    /// the calling process's network namespace and no interface is enslaved to it).
    /// `users` are the names of the containers attached to it, which the engine knows:
    /// the removal is refused while there are any.
    ///
    /// Errors: [`NetError::UnknownNetwork`], [`NetError::NetworkInUse`],
    /// [`NetError::DefaultNetwork`], [`NetError::Netlink`], [`NetError::Io`].
    pub fn remove(&self, name: &str, users: &[String]) -> Result<()> {
        if name == DEFAULT_NETWORK {
            return Err(NetError::DefaultNetwork(name.to_string()));
        }
        let network = self.get(name)?;
        if !users.is_empty() {
            return Err(NetError::NetworkInUse {
                network: name.to_string(),
                users: users.to_vec(),
            });
        }
        let _lock = self.lock()?;
        netlink::remove_bridge_if_unused(&network.bridge)?;
        HostState::open().remove_ipam(&network.bridge, name)?;
        let path = self.file(name);
        std::fs::remove_file(&path).at("remove", &path)?;
        if let Ok(d) = std::fs::File::open(self.dir()) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Parses a CIDR subnet that names a network address, IPv4 prefix 8..=30 or IPv6
/// prefix 8..=126 (room for a gateway and containers).
pub(crate) fn parse_subnet(s: &str) -> Result<IpNet> {
    let bad = |reason: String| NetError::BadSubnet {
        subnet: s.to_string(),
        reason,
    };
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|_| bad("expected an address and a prefix length, as 10.89.0.0/24 or fd00:1::/64".into()))?;
    if net.trunc() != net {
        return Err(bad(format!("host bits are set: it should be {}", net.trunc())));
    }
    let max = match net {
        IpNet::V4(_) => 30,
        IpNet::V6(_) => 126,
    };
    if net.prefix_len() < 8 || net.prefix_len() > max {
        return Err(bad(format!("the prefix length must be between 8 and {max}")));
    }
    Ok(net)
}

/// The subnet's first address (the default gateway).
fn first_host(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

/// Checks that `addr` is a usable host address of `net`: same family, inside, not the
/// network or (IPv4) broadcast address.
pub(crate) fn check_address(what: &'static str, addr: &str, net: &IpNet) -> Result<IpAddr> {
    let bad = |reason: &str| NetError::BadAddress {
        what,
        address: addr.to_string(),
        subnet: net.to_string(),
        reason: reason.to_string(),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
    if !net.contains(&ip) {
        return Err(bad("it is outside the subnet"));
    }
    if ip == net.network() {
        return Err(bad("it is the subnet's network address"));
    }
    if matches!(net, IpNet::V4(_)) && ip == net.broadcast() {
        return Err(bad("it is the subnet's broadcast address"));
    }
    Ok(ip)
}

/// What `net` overlaps: another network's subnet or a host route, described for an error.
fn overlap(net: &IpNet, networks: &[Network], host: &[routes::HostRoute]) -> Option<String> {
    let meets = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    for n in networks {
        if let Ok(other) = n.subnet_net() {
            if meets(net, &other) {
                return Some(format!("network \"{}\" ({})", n.name, n.subnet));
            }
        }
    }
    host.iter().find(|r| meets(net, &r.dst)).map(|r| r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        assert_eq!(parse_subnet("10.89.3.0/24").unwrap().to_string(), "10.89.3.0/24");
        assert_eq!(parse_subnet("fd00:1::/64").unwrap().to_string(), "fd00:1::/64");
        let e = parse_subnet("10.89.3.5/24").unwrap_err().to_string();
        assert!(e.contains("10.89.3.0/24"), "{e}");
        assert!(parse_subnet("10.89.3.0").is_err());
        assert!(parse_subnet("10.89.3.0/33").is_err());
        assert!(parse_subnet("10.89.3.0/31").is_err());
        assert!(parse_subnet("banana").is_err());
    }

    #[test]
    fn addresses() {
        let net = parse_subnet("10.89.3.0/24").unwrap();
        assert!(check_address("gateway", "10.89.3.1", &net).is_ok());
        assert!(check_address("gateway", "10.89.4.1", &net).is_err());
        assert!(check_address("gateway", "10.89.3.0", &net).is_err());
        assert!(check_address("gateway", "10.89.3.255", &net).is_err());
        assert!(check_address("gateway", "fd00::1", &net).is_err());
        assert_eq!(first_host(&net).to_string(), "10.89.3.1");
        assert_eq!(
            first_host(&parse_subnet("fd00:1::/64").unwrap()).to_string(),
            "fd00:1::1"
        );
    }

    #[test]
    fn overlaps() {
        let n = |name: &str, subnet: &str| Network {
            name: name.into(),
            id: String::new(),
            subnet: subnet.into(),
            gateway: None,
            internal: false,
            bridge: String::new(),
            created: String::new(),
            warm: 0,
            labels: BTreeMap::new(),
        };
        let nets = vec![n("a", "10.89.0.0/24"), n("b", "10.90.0.0/16")];
        let host = vec![routes::HostRoute {
            dst: "192.168.0.0/16".parse().unwrap(),
            dev: "eth0".into(),
        }];
        let o = |s: &str| overlap(&s.parse().unwrap(), &nets, &host);
        assert_eq!(o("10.89.0.0/25").unwrap(), "network \"a\" (10.89.0.0/24)");
        assert_eq!(o("10.0.0.0/8").unwrap(), "network \"a\" (10.89.0.0/24)");
        assert_eq!(o("10.90.5.0/24").unwrap(), "network \"b\" (10.90.0.0/16)");
        assert_eq!(o("192.168.7.0/24").unwrap(), "the host's route 192.168.0.0/16 dev eth0");
        assert!(o("10.89.1.0/24").is_none());
    }
}
