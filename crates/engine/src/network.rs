//! A container's network, from the engine's side: which mode `--network` asks for,
//! the network namespace file the monitor makes for bridge networks
//! (`RUNROOT/netns/<id>`), CNI ADD before the container is created and DEL after it
//! exits ([`vessel_net`]), published ports, and the /etc/hosts files that let
//! containers on one network find each other by name (rewritten in place, as they are
//! bind-mounted into running containers).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use vessel_net::{AttachRequest, Attachment, Networks, PortMapping, Protocol, DEFAULT_NETWORK};

use crate::db::{Db, Record};
use crate::error::{Error, IoContext, Result};
use crate::options::RunOptions;
use crate::paths::Paths;

/// What `--network` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `none`: a new network namespace with only loopback.
    None,
    /// `host`: the host's network namespace.
    Host,
    /// `bridge` (the default, network `vessel`) or a network's name.
    Bridge(String),
    /// `container:NAME`: another container's network namespace.
    Container(String),
}

/// The mode of a container's options.
pub fn mode(opts: &RunOptions) -> Mode {
    match opts.network.as_deref() {
        None | Some("bridge") | Some("default") => Mode::Bridge(DEFAULT_NETWORK.into()),
        Some("none") => Mode::None,
        Some("host") => Mode::Host,
        Some(s) => match s.strip_prefix("container:") {
            Some(c) => Mode::Container(c.into()),
            None => Mode::Bridge(s.into()),
        },
    }
}

/// The network namespace file of a bridge-networked container.
pub fn netns_path(paths: &Paths, id: &str) -> PathBuf {
    paths.runroot.join("netns").join(id)
}

/// The file recording a running container's attachment (for inspect, peers' hosts).
fn attachment_path(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("network.json")
}

/// The attachment of a running bridge-networked container, if any.
pub fn attachment(paths: &Paths, id: &str) -> Option<Attachment> {
    let text = std::fs::read(attachment_path(paths, id)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Checks what `create` was asked for and completes it: the network exists (the
/// default one is made on first use), ports are only published on bridge networks and
/// are free (not published by another live container, not bound by anything on the
/// host), `-P` gets a free host port for each port the image exposes.
///
/// Errors: [`Error::BadInput`] for unknown networks, ports in use, bad combinations.
pub fn prepare(paths: &Paths, db: &Db, opts: &mut RunOptions, exposed: &[String]) -> Result<()> {
    let m = mode(opts);
    if let Mode::Bridge(name) = &m {
        Networks::open(&paths.root).get(name).map_err(net_err)?;
    }
    if opts.publish_all {
        for e in exposed {
            let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let protocol = if proto == "udp" { Protocol::Udp } else { Protocol::Tcp };
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            if opts
                .publish
                .iter()
                .any(|p| p.container_port == container_port && p.protocol == protocol)
            {
                continue;
            }
            opts.publish.push(PortMapping {
                host_ip: None,
                host_port: vessel_net::free_port(protocol).map_err(net_err)?,
                container_port,
                protocol,
            });
        }
    }
    if !opts.publish.is_empty() && !matches!(m, Mode::Bridge(_)) {
        return Err(Error::BadInput(
            "published ports (-p, -P) need a bridge network: drop --network none/host/container:".into(),
        ));
    }
    if (opts.ip.is_some() || opts.mac.is_some()) && !matches!(m, Mode::Bridge(_)) {
        return Err(Error::BadInput("--ip and --mac-address need a bridge network".into()));
    }
    let records = db.list()?;
    for p in &opts.publish {
        let taken = records.iter().find(|r| {
            r.state.is_live()
                && r.options
                    .publish
                    .iter()
                    .any(|q| q.host_port == p.host_port && q.protocol == p.protocol)
        });
        if let Some(r) = taken {
            return Err(Error::BadInput(format!(
                "port {}/{} is already published by container {}",
                p.host_port,
                proto_name(p.protocol),
                r.name
            )));
        }
        port_free(p)?;
    }
    if let Mode::Container(other) = &m {
        let r = db.find(other)?;
        if !r.state.is_live() {
            return Err(Error::WrongState(format!(
                "--network container:{other}: container {} is not running",
                r.name
            )));
        }
    }
    Ok(())
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// Errors unless the host port of `p` can be bound now (in the caller's network
/// namespace, the one the port is published in).
fn port_free(p: &PortMapping) -> Result<()> {
    let ip = p.host_ip.as_deref().unwrap_or("0.0.0.0");
    let addr = format!(
        "{}:{}",
        if ip.contains(':') { format!("[{ip}]") } else { ip.into() },
        p.host_port
    );
    let res = match p.protocol {
        Protocol::Tcp => std::net::TcpListener::bind(&addr).map(drop),
        Protocol::Udp => std::net::UdpSocket::bind(&addr).map(drop),
    };
    res.map_err(|e| {
        Error::BadInput(format!(
            "port {}/{} on {ip} cannot be published: {e}",
            p.host_port,
            proto_name(p.protocol)
        ))
    })
}

fn net_err(e: vessel_net::NetError) -> Error {
    Error::Network(e)
}

/// Points the config's network namespace where the mode says: the netns file for a
/// bridge network, the other container's for `container:`, none for `host`.
pub fn apply(paths: &Paths, db: &Db, id: &str, opts: &RunOptions, spec: &mut Spec) -> Result<()> {
    let path = match mode(opts) {
        Mode::None => return Ok(()),
        Mode::Host => None,
        Mode::Bridge(_) => Some(netns_path(paths, id)),
        Mode::Container(other) => {
            let r = db.find(&other)?;
            let pid = r
                .pid
                .filter(|_| r.state.is_live())
                .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))?;
            Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
        }
    };
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut nss: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != LinuxNamespaceType::Network)
        .collect();
    if let Some(p) = path {
        nss.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(p)
                .build()
                .map_err(|e| Error::BadInput(format!("network namespace: {e}")))?,
        );
    }
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
    Ok(())
}

/// Monitor, before the runtime's create: for a bridge network, makes the netns file,
/// runs CNI ADD and records the attachment; then writes the hosts files of the
/// container and of its peers. For `container:`, points config.json at the other
/// container's current init. On error nothing is left.
pub fn up(paths: &Paths, rec: &Record, spec: &mut Spec) -> Result<()> {
    let db = Db::open(&paths.root)?;
    match mode(&rec.options) {
        Mode::Bridge(name) => {
            let net = Networks::open(&paths.root).get(&name).map_err(net_err)?;
            let ns = netns_path(paths, &rec.id);
            if let Some(dir) = ns.parent() {
                std::fs::create_dir_all(dir).at("create", dir)?;
            }
            vessel_net::netns::create(&ns).map_err(net_err)?;
            let attached = vessel_net::setup_loopback(&ns).and_then(|()| {
                vessel_net::attach(
                    &paths.root,
                    &AttachRequest {
                        container_id: &rec.id,
                        netns: &ns,
                        network: &net,
                        ifname: "eth0",
                        ports: &rec.options.publish,
                        ip: rec.options.ip.as_deref(),
                        mac: rec.options.mac.as_deref(),
                    },
                )
            });
            let a = match attached {
                Ok(a) => a,
                Err(e) => {
                    let _ = vessel_net::netns::remove(&ns);
                    return Err(net_err(e));
                }
            };
            let text = serde_json::to_vec(&a).unwrap_or_default();
            std::fs::write(attachment_path(paths, &rec.id), text).at("write", attachment_path(paths, &rec.id))?;
            refresh_hosts(paths, &db, &name)?;
        }
        Mode::Container(_) => apply(paths, &db, &rec.id, &rec.options, spec)?,
        Mode::None | Mode::Host => {}
    }
    Ok(())
}

/// Monitor, after the runtime's create: brings loopback up in a `--network none`
/// container's own namespace.
pub fn after_create(rec: &Record, pid: i32) -> Result<()> {
    if mode(&rec.options) == Mode::None {
        vessel_net::setup_loopback(Path::new(&format!("/proc/{pid}/ns/net"))).map_err(net_err)?;
    }
    Ok(())
}

/// After the exit (monitor, `system check`): CNI DEL (releases the address and the
/// port mappings, also when the netns is gone), removes the netns file and the
/// attachment record, and drops the container from its peers' hosts files.
/// Idempotent.
pub fn down(paths: &Paths, rec: &Record) -> Result<()> {
    let Mode::Bridge(name) = mode(&rec.options) else {
        return Ok(());
    };
    let ns = netns_path(paths, &rec.id);
    let netns = ns.exists().then_some(ns.as_path());
    let res = vessel_net::detach(&paths.root, &rec.id, &name, "eth0", netns).map_err(net_err);
    vessel_net::netns::remove(&ns).map_err(net_err)?;
    let _ = std::fs::remove_file(attachment_path(paths, &rec.id));
    if let Ok(db) = Db::open(&paths.root) {
        let _ = refresh_hosts(paths, &db, &name);
    }
    res
}

/// Rewrites, in place, the hosts file of every container attached to network `name`:
/// loopback names, its own address and names, its peers', `--add-host` entries.
pub fn refresh_hosts(paths: &Paths, db: &Db, name: &str) -> Result<()> {
    let members: Vec<(Record, Attachment)> = db
        .list()?
        .into_iter()
        .filter(|r| mode(&r.options) == Mode::Bridge(name.into()))
        .filter_map(|r| attachment(paths, &r.id).map(|a| (r, a)))
        .collect();
    for (r, _) in &members {
        let text = hosts_file(r, &members);
        let path = paths.bundle(&r.id).join("hosts");
        if path.exists() {
            // In place: the file is bind-mounted, a rename would not reach the container.
            std::fs::write(&path, text).at("write", &path)?;
        }
    }
    Ok(())
}

fn hostname(r: &Record) -> String {
    r.options.hostname.clone().unwrap_or_else(|| r.id[..12].to_string())
}

/// The /etc/hosts of `me` on a network with `members` (`me` among them).
fn hosts_file(me: &Record, members: &[(Record, Attachment)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mine = members.iter().find(|(r, _)| r.id == me.id);
    match mine {
        Some((_, a)) => s.push_str(&format!("{}\t{} {}\n", a.ip, hostname(me), me.name)),
        None => s.push_str(&format!("127.0.1.1\t{}\n", hostname(me))),
    }
    for (r, a) in members.iter().filter(|(r, _)| r.id != me.id) {
        s.push_str(&format!("{}\t{} {}\n", a.ip, r.name, hostname(r)));
    }
    s.push_str(&extra_hosts(&me.options));
    s
}

/// `--add-host NAME:IP` lines.
fn extra_hosts(opts: &RunOptions) -> String {
    opts.add_hosts
        .iter()
        .filter_map(|h| h.split_once(':').map(|(n, ip)| format!("{ip}\t{n}\n")))
        .collect()
}

/// Writes the bundle's hosts (with `--add-host`) and resolv.conf (with `--dns`) for a
/// container that is not on a bridge network yet (create time).
pub fn write_etc(bundle: &Path, rec: &Record) -> Result<()> {
    if !rec.options.add_hosts.is_empty() {
        let path = bundle.join("hosts");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&extra_hosts(&rec.options));
        std::fs::write(&path, text).at("write", &path)?;
    }
    if !rec.options.dns.is_empty() {
        let path = bundle.join("resolv.conf");
        std::fs::write(&path, vessel_net::resolv_conf(&rec.options.dns)).at("write", &path)?;
    }
    Ok(())
}

/// `--add-host` values: `NAME:IP`.
///
/// Errors: [`Error::BadInput`].
pub fn check_add_host(s: &str) -> Result<()> {
    match s.split_once(':') {
        Some((n, ip)) if !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => Ok(()),
        _ => Err(Error::BadInput(format!("invalid --add-host {s:?}: use NAME:IP"))),
    }
}
