//! A container's network, from the engine's side: which mode `--network` asks for,
//! the attachment the monitor gets for bridge networks before the container is created
//! (a warm one from the network's pool, [`vessel_net::warm`], or its own: a namespace
//! file `RUNROOT/netns/<cni id>` and CNI ADD, [`vessel_net`]) and gives back or detaches
//! (CNI DEL) after it exits, published ports, and the /etc/hosts files that let
//! containers on one network find each other by name (rewritten in place, as they are
//! bind-mounted into running containers).
//!
//! An attachment's CNI container id is a fresh random one, never the container's id:
//! the attachment can outlive its first container in the pool and be held by another.
//! `BUNDLE/network.json` ([`Held`]) records which one a container holds.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxCapabilities, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};
use vessel_net::{AttachRequest, Attachment, HostState, Networks, Pool, PortMapping, Protocol, DEFAULT_NETWORK};

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
    /// `pasta` (the default of a rootless user): a new network namespace that pasta
    /// ([`vessel_net::pasta`]) connects through the caller's sockets, published ports included.
    Pasta,
    /// `slirp4netns`: a new network namespace that slirp4netns ([`vessel_net::slirp`])
    /// connects through the caller's sockets; published ports through its API socket.
    Slirp4netns,
}

/// The mode of a container's options.
pub fn mode(opts: &RunOptions) -> Mode {
    match opts.network.as_deref() {
        None if crate::rootless::is_rootless() => Mode::Pasta,
        None | Some("bridge") | Some("default") => Mode::Bridge(DEFAULT_NETWORK.into()),
        Some("pasta") => Mode::Pasta,
        Some("slirp4netns") => Mode::Slirp4netns,
        Some("none") => Mode::None,
        Some("host") => Mode::Host,
        Some(s) => match s.strip_prefix("container:") {
            Some(c) => Mode::Container(c.into()),
            None => Mode::Bridge(s.into()),
        },
    }
}

/// The network namespace file config.json names for a bridge-networked container until
/// its monitor puts the one of the attachment it holds there: a path that never exists,
/// so that a config.json run without the monitor fails instead of sharing a namespace.
pub fn netns_path(paths: &Paths, id: &str) -> PathBuf {
    paths.runroot.join("netns").join(id)
}

/// The directory the CNI calls of root `paths.root` keep their cache and tuning state in
/// (their `root`): the root's entry in the host-wide state of the caller's network
/// namespace ([`vessel_net::host`]), so that a deleted root's attachments can still be
/// released and several roots share one address pool per bridge.
pub fn cni_root(paths: &Paths) -> PathBuf {
    HostState::open().root_state(&paths.root)
}

/// The warm attachments of `paths`: namespace files in `RUNROOT/netns`, free markers in
/// `RUNROOT/warm`, CNI cache in [`cni_root`].
pub fn pool(paths: &Paths) -> Pool {
    Pool::open(
        &cni_root(paths),
        &paths.runroot.join("netns"),
        &paths.runroot.join("warm"),
    )
}

/// The file recording a container's attachment (for inspect, peers' hosts, teardown).
fn held_path(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("network.json")
}

/// The file that marks a container's attachment as changed from inside (a process with
/// CAP_NET_ADMIN ran in it): it is detached at the end, never given to another.
fn tainted_path(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("network.tainted")
}

/// What `BUNDLE/network.json` records: the CNI id of the attachment a container holds
/// (written before CNI ADD, so that a crash in the middle leaves it findable) and, once
/// ADD is done, where it sits on the network. A file from before CNI ids were separate
/// has only the attachment: its CNI id is the container's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    /// The attachment's CNI container id (its namespace is `RUNROOT/netns/<cni_id>`).
    #[serde(default)]
    pub cni_id: Option<String>,
    /// Address, gateway and MAC, once CNI ADD is done.
    #[serde(flatten)]
    pub attachment: Option<Attachment>,
}

fn read_held(paths: &Paths, id: &str) -> Option<Held> {
    let text = std::fs::read(held_path(paths, id)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn write_held(paths: &Paths, id: &str, held: &Held) -> Result<()> {
    let path = held_path(paths, id);
    let text = serde_json::to_vec(held).map_err(|e| Error::BadInput(format!("network.json: {e}")))?;
    std::fs::write(&path, text).at("write", &path)
}

/// The attachment of a running bridge-networked container, if any.
pub fn attachment(paths: &Paths, id: &str) -> Option<Attachment> {
    read_held(paths, id)?.attachment
}

/// Every attachment of a container: its first (when on a bridge network) then those of
/// its [`more_networks`](RunOptions::more_networks) ([`crate::network_more`]).
pub fn attachments(paths: &Paths, id: &str) -> Vec<Attachment> {
    attachment(paths, id)
        .into_iter()
        .chain(
            crate::network_more::held(paths, id)
                .into_iter()
                .filter_map(|m| m.attachment),
        )
        .collect()
}

/// The CNI id of the attachment container `id` holds, if it holds one.
pub fn held_cni_id(paths: &Paths, id: &str) -> Option<String> {
    read_held(paths, id).map(|h| h.cni_id.unwrap_or_else(|| id.to_string()))
}

/// Whether a process with `caps` can change its network namespace (CAP_NET_ADMIN in any
/// of its sets).
pub fn grants_net_admin(caps: Option<&LinuxCapabilities>) -> bool {
    caps.is_some_and(|c| {
        [c.bounding(), c.effective(), c.permitted(), c.ambient(), c.inheritable()]
            .into_iter()
            .flatten()
            .any(|set| set.contains(&Capability::NetAdmin))
    })
}

/// Marks container `id`'s attachment as changed from inside (`vessel exec` of a process
/// with CAP_NET_ADMIN): it is detached when the container ends, not kept warm.
pub fn taint(paths: &Paths, id: &str) -> Result<()> {
    let path = tainted_path(paths, id);
    if held_path(paths, id).exists() {
        std::fs::write(&path, b"").at("write", &path)?;
    }
    Ok(())
}

/// Releases the free warm attachments of every network (`vessel system prune`): CNI DEL
/// of each, which gives their addresses back. Returns how many there were.
///
/// Errors: the first failure; the other networks are still drained.
pub fn drain_all(paths: &Paths) -> Result<usize> {
    let pool = pool(paths);
    let mut n = 0;
    let mut first = None;
    for net in Networks::open(&paths.root).list().map_err(net_err)? {
        match pool.drain(&net.name) {
            Ok(k) => n += k,
            Err(e) => {
                first.get_or_insert(net_err(e));
            }
        }
    }
    first.map_or(Ok(n), Err)
}

/// Whether the vessel root at `root` still exists (its records are there): a root whose
/// directory was deleted has none.
fn root_exists(root: &Path) -> bool {
    root.join("vessel.db").exists()
}

/// `vessel system check`: the roots registered in the host-wide state of the caller's
/// network namespace whose directory is gone, with the attachments they left (warm ones
/// on a shared bridge: a veth, an address, a namespace file that keeps the deleted
/// root's directory from being removed) and the bridges their containers used. With
/// `repair`, each attachment is released (CNI DEL, the namespace file unmounted and
/// removed), each of those bridges that no veth and no other existing root uses is
/// removed, and the root's registration goes. One line per finding.
///
/// Errors: the first failure to read the state or to release.
pub fn check_gone_roots(paths: &Paths, repair: bool) -> Result<Vec<String>> {
    let host = HostState::open();
    let me = std::path::absolute(&paths.root).unwrap_or_else(|_| paths.root.clone());
    let roots = host.roots().map_err(net_err)?;
    let mut found = Vec::new();
    for r in &roots {
        if r.root == me || root_exists(&r.root) {
            continue;
        }
        let left = vessel_net::attached(&r.state).map_err(net_err)?;
        for (cid, net, ifname) in &left {
            found.push(format!(
                "root {} is gone: network {net}: attachment ({ifname}) {cid}",
                r.root.display()
            ));
        }
        // A bridge another existing root uses stays (this root's own included).
        let used_elsewhere = |b: &String| {
            roots
                .iter()
                .any(|o| o.root != r.root && (o.root == me || root_exists(&o.root)) && o.bridges.contains(b))
        };
        let bridges: Vec<&String> = r
            .bridges
            .iter()
            .filter(|b| !used_elsewhere(b) && vessel_net::netlink::link_exists(b))
            .collect();
        for b in &bridges {
            found.push(format!("root {} is gone: bridge {b}", r.root.display()));
        }
        if repair {
            vessel_net::release_all(&r.state).map_err(net_err)?;
            for b in bridges {
                host.remove_bridge(b).map_err(net_err)?;
            }
            host.unregister(&r.root).map_err(net_err)?;
        }
    }
    Ok(found)
}

/// `vessel system reset`, the network part (after every container of the root is
/// removed): releases every attachment the root still holds (warm ones, leftovers),
/// removes its networks (their bridges and address state) and its registration, and,
/// when no other existing root of this network namespace is registered, the default
/// network's bridge `vessel0`, its address state and the plugins' shared iptables chains.
/// One line per thing removed.
///
/// Errors: the first failure; what follows it is not tried.
pub fn reset(paths: &Paths) -> Result<Vec<String>> {
    let host = HostState::open();
    let state = cni_root(paths);
    let mut out: Vec<String> = vessel_net::release_all(&state)
        .map_err(net_err)?
        .into_iter()
        .map(|(cid, net, _)| format!("network {net}: attachment {cid}"))
        .collect();
    let nets = Networks::open(&paths.root);
    for n in nets.list().map_err(net_err)? {
        if n.name != DEFAULT_NETWORK {
            nets.remove(&n.name, &[]).map_err(net_err)?;
            out.push(format!("network {}", n.name));
        }
    }
    host.unregister(&paths.root).map_err(net_err)?;
    let others = host.roots().map_err(net_err)?.into_iter().any(|r| root_exists(&r.root));
    if !others {
        out.extend(
            host.remove_shared(vessel_net::network::DEFAULT_BRIDGE)
                .map_err(net_err)?,
        );
    }
    Ok(out)
}

/// Whether a container needs an attachment made for it: it asks for a particular address
/// or MAC address, which the warm ones of the pool do not have. (Published ports are
/// added to a warm attachment and taken off it again: [`vessel_net::publish`].)
fn wants_own(opts: &RunOptions) -> bool {
    opts.ip.is_some() || opts.mac.is_some()
}

/// Checks what `create` was asked for and completes it: the network exists (the
/// default one is made on first use), ports are only published on bridge networks and
/// are free (not published by another live container, not bound by anything on the
/// host), `-P` gets a free host port for each port the image exposes.
///
/// Errors: [`Error::BadInput`] for unknown networks, ports in use, bad combinations.
pub fn prepare(paths: &Paths, db: &Db, opts: &mut RunOptions, exposed: &[String]) -> Result<()> {
    let m = mode(opts);
    for a in &opts.network_aliases {
        let ok = !a.is_empty()
            && a.len() <= 253
            && a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            return Err(Error::BadInput(format!(
                "invalid --network-alias {a:?}: give a host name (letters, digits, '-', '_', '.')"
            )));
        }
    }
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
    if !opts.publish.is_empty() && !matches!(m, Mode::Bridge(_) | Mode::Pasta | Mode::Slirp4netns) {
        return Err(Error::BadInput(
            "published ports (-p, -P) need a bridge, pasta or slirp4netns network: drop --network none/host/container:"
                .into(),
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
        Mode::None | Mode::Pasta | Mode::Slirp4netns => return Ok(()),
        Mode::Host => None,
        Mode::Bridge(_) => Some(netns_path(paths, id)),
        Mode::Container(other) => {
            let r = db.find(&other)?;
            let pid = r
                .pid
                .filter(|_| r.state.is_live())
                .ok_or_else(|| Error::WrongState(format!("container {} is not running", r.name)))?;
            if opts.id_mappings.is_some() {
                // Its network namespace belongs to its user namespace: join that too
                // ([`crate::idmap::resolve`] gave this container its maps).
                set_userns(spec, PathBuf::from(format!("/proc/{pid}/ns/user")));
            }
            Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
        }
    };
    set_netns(spec, path)
}

/// Makes config.json join the user namespace at `path` instead of making one.
fn set_userns(spec: &mut Spec, path: PathBuf) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let nss = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mut n| {
            if n.typ() == LinuxNamespaceType::User {
                n.set_path(Some(path.clone()));
            }
            n
        })
        .collect();
    linux.set_namespaces(Some(nss));
    spec.set_linux(Some(linux));
}

/// Sets config.json's network namespace: joined at `path`, or the caller's when None.
fn set_netns(spec: &mut Spec, path: Option<PathBuf>) -> Result<()> {
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

/// Monitor, before the runtime's create: for a bridge network, takes a warm attachment
/// of the network (and publishes the container's ports on it) unless the container asks
/// for an address or MAC of its own, else makes its own (a namespace file, CNI ADD); records it in `network.json`, points
/// config.json's network namespace at it, and writes the hosts files of the container and
/// of its peers. For `container:`, points config.json at the other container's current
/// init. On error nothing is left.
pub fn up(paths: &Paths, rec: &Record, spec: &mut Spec) -> Result<()> {
    let db = Db::open(&paths.root)?;
    match mode(&rec.options) {
        Mode::Bridge(name) => {
            let net = Networks::open(&paths.root).get(&name).map_err(net_err)?;
            let pool = pool(paths);
            let warm = if net.warm > 0 && !wants_own(&rec.options) {
                pool.take(&name).map_err(net_err)?
            } else {
                None
            };
            let (cni_id, ns, a) = match warm {
                Some(w) => {
                    let ports = &rec.options.publish;
                    if let Err(e) = vessel_net::publish(&cni_root(paths), &w.cni_id, &net, "eth0", &w.netns, ports) {
                        let _ = pool.release(&name, &w.cni_id);
                        return Err(net_err(e));
                    }
                    (w.cni_id, w.netns, w.attachment)
                }
                None => {
                    let cni_id = vessel_net::warm::new_id().map_err(net_err)?;
                    write_held(
                        paths,
                        &rec.id,
                        &Held {
                            cni_id: Some(cni_id.clone()),
                            attachment: None,
                        },
                    )?;
                    let ns = pool.netns(&cni_id);
                    match attach_new(paths, rec, &net, &cni_id, &ns) {
                        Ok(a) => (cni_id, ns, a),
                        Err(e) => {
                            let _ = std::fs::remove_file(held_path(paths, &rec.id));
                            return Err(e);
                        }
                    }
                }
            };
            write_held(
                paths,
                &rec.id,
                &Held {
                    cni_id: Some(cni_id),
                    attachment: Some(a),
                },
            )?;
            if rec.options.id_mappings.is_some() {
                // The namespace belongs to the host's user namespace: the container's
                // root cannot write its sysctls, so they are written from here.
                write_net_sysctls(&ns, spec)?;
            }
            set_netns(spec, Some(ns))?;
            refresh_hosts(paths, &db, &name)?;
            if let Err(e) = crate::network_more::up(paths, rec) {
                let _ = down(paths, rec, false);
                return Err(e);
            }
        }
        Mode::Container(_) => apply(paths, &db, &rec.id, &rec.options, spec)?,
        Mode::Pasta | Mode::Slirp4netns => {
            let ns = netns_path(paths, &rec.id);
            vessel_net::netns::create(&ns).map_err(net_err)?;
            if let Err(e) = vessel_net::setup_loopback(&ns).and_then(|()| {
                set_netns(spec, Some(ns.clone())).map_err(|e| vessel_net::NetError::BadRequest(e.to_string()))
            }) {
                let _ = vessel_net::netns::remove(&ns);
                return Err(net_err(e));
            }
            if rec.options.id_mappings.is_some() {
                // As for a bridge: the namespace is not the container's user namespace's.
                if let Err(e) = write_net_sysctls(&ns, spec) {
                    let _ = vessel_net::netns::remove(&ns);
                    return Err(e);
                }
            }
        }
        Mode::None | Mode::Host => {}
    }
    Ok(())
}

/// Writes config.json's `net.*` sysctls into the network namespace `ns` from the host's
/// user namespace (entering it for the writes, then returning) and takes them out of
/// config.json: a container in its own user namespace has no right to them there.
///
/// # Errors
/// [`Error::Io`] when the namespace cannot be entered or a sysctl written.
fn write_net_sysctls(ns: &Path, spec: &mut Spec) -> Result<()> {
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut sysctls = linux.sysctl().clone().unwrap_or_default();
    let net: Vec<(String, String)> = sysctls
        .iter()
        .filter(|(k, _)| k.starts_with("net."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if net.is_empty() {
        return Ok(());
    }
    let own = std::fs::File::open("/proc/thread-self/ns/net").at("open", "/proc/thread-self/ns/net")?;
    let target = std::fs::File::open(ns).at("open", ns)?;
    let enter = |f: &std::fs::File, what: &Path| -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on an open namespace fd; it touches no memory of ours.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::io(
                "enter network namespace",
                what,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    };
    enter(&target, ns)?;
    let written = net.iter().try_for_each(|(k, v)| {
        let p = PathBuf::from("/proc/sys").join(k.replace('.', "/"));
        // Group ids written from here are the host's: every group, the range's too.
        let (ping, all) = crate::config::PING_GROUP_RANGE;
        let v = if k == ping { all } else { v.as_str() };
        std::fs::write(&p, v).at("write", &p)
    });
    enter(&own, Path::new("/proc/thread-self/ns/net"))?;
    written?;
    for (k, _) in &net {
        sysctls.remove(k);
    }
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    spec.set_linux(Some(linux));
    Ok(())
}

/// A new namespace file `ns` with loopback up, attached to `net` (CNI ADD) under
/// `cni_id` with the container's ports, address and MAC. On error nothing is left.
fn attach_new(paths: &Paths, rec: &Record, net: &vessel_net::Network, cni_id: &str, ns: &Path) -> Result<Attachment> {
    let cni_root = HostState::open()
        .register_bridge(&paths.root, &net.bridge)
        .map_err(net_err)?;
    vessel_net::netns::create(ns).map_err(net_err)?;
    let attached = vessel_net::setup_loopback(ns).and_then(|()| {
        vessel_net::attach(
            &cni_root,
            &AttachRequest {
                container_id: cni_id,
                netns: ns,
                network: net,
                ifname: "eth0",
                ports: &rec.options.publish,
                ip: rec.options.ip.as_deref(),
                mac: rec.options.mac.as_deref(),
            },
        )
    });
    attached.map_err(|e| {
        let _ = vessel_net::netns::remove(ns);
        net_err(e)
    })
}

/// The pid file of a container's pasta.
fn pasta_pid_file(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("pasta.pid")
}

/// Monitor, after the runtime's create: brings loopback up in a `--network none`
/// container's own namespace; starts pasta (or slirp4netns) on a `pasta` (or
/// `slirp4netns`) one's namespace file (made by [`up`]), with its published ports.
pub fn after_create(paths: &Paths, rec: &Record, pid: i32) -> Result<()> {
    match mode(&rec.options) {
        Mode::None => vessel_net::setup_loopback(Path::new(&format!("/proc/{pid}/ns/net"))).map_err(net_err)?,
        Mode::Pasta => vessel_net::pasta::start(
            &netns_path(paths, &rec.id),
            &rec.options.publish,
            &pasta_pid_file(paths, &rec.id),
        )
        .map_err(net_err)?,
        Mode::Slirp4netns => vessel_net::slirp::start(
            &netns_path(paths, &rec.id),
            &rec.options.publish,
            &vessel_net::slirp::Files::in_dir(&paths.bundle(&rec.id)),
        )
        .map_err(net_err)?,
        _ => {}
    }
    Ok(())
}

/// After the exit (monitor, `system check`, `rm`): lets go of the attachment the
/// container holds. With `keep` (the monitor, after a normal end), an attachment nothing
/// can have changed goes back to its network's pool ([`recyclable`]); otherwise, or when
/// the pool is full, CNI DEL (releases the address and the port mappings, also when the
/// namespace is gone) and the namespace file is removed. Then the attachment record goes
/// and the container leaves its peers' hosts files. Idempotent.
pub fn down(paths: &Paths, rec: &Record, keep: bool) -> Result<()> {
    // The interfaces of its other networks go first: the first attachment may go on to
    // another container, which must not find them there.
    let more = crate::network_more::down(paths, rec);
    if mode(&rec.options) == Mode::Pasta {
        vessel_net::pasta::stop(&pasta_pid_file(paths, &rec.id));
        vessel_net::netns::remove(&netns_path(paths, &rec.id)).map_err(net_err)?;
    }
    if mode(&rec.options) == Mode::Slirp4netns {
        vessel_net::slirp::stop(&vessel_net::slirp::Files::in_dir(&paths.bundle(&rec.id)));
        vessel_net::netns::remove(&netns_path(paths, &rec.id)).map_err(net_err)?;
    }
    let Mode::Bridge(name) = mode(&rec.options) else {
        return more;
    };
    let held = read_held(paths, &rec.id);
    // No record: nothing was attached, or this is a container from before separate CNI
    // ids, whose attachment is under its own id.
    let cni_id = held
        .as_ref()
        .and_then(|h| h.cni_id.clone())
        .unwrap_or_else(|| rec.id.clone());
    let done = held.as_ref().is_some_and(|h| h.attachment.is_some());
    let db = Db::open(&paths.root).ok();
    let pool = pool(paths);
    let net = Networks::open(&paths.root).get(&name).ok();
    let tainted = tainted_path(paths, &rec.id).exists();
    let _ = std::fs::remove_file(held_path(paths, &rec.id));
    let _ = std::fs::remove_file(tainted_path(paths, &rec.id));
    let kept = match (&net, &db) {
        (Some(net), Some(db)) if keep && done && !tainted && more.is_ok() && recyclable(paths, db, rec) => {
            // The port mappings go first (CNI DEL of portmap alone), so that nothing of
            // them outlives the container even while the rest waits for the next one.
            vessel_net::unpublish(&cni_root(paths), &cni_id, &name, "eth0", &pool.netns(&cni_id)).is_ok()
                && pool.give(&name, &cni_id, net.warm).unwrap_or(false)
        }
        _ => false,
    };
    let res = if kept {
        Ok(())
    } else {
        pool.release(&name, &cni_id).map_err(net_err)
    };
    if let Some(db) = &db {
        let _ = refresh_hosts(paths, db, &name);
    }
    res.and(more)
}

/// Whether the attachment of `rec`, which has ended, can go to another container (once
/// its port mappings are off): it was made for no particular address or MAC; no process
/// of the container could change the namespace (CAP_NET_ADMIN, in config.json or through
/// `vessel exec`, see [`taint`]); and no live container shares it (`--network container:`).
fn recyclable(paths: &Paths, db: &Db, rec: &Record) -> bool {
    if wants_own(&rec.options) || rec.options.privileged {
        return false;
    }
    let Ok(spec) = vessel_runtime::spec::load(&paths.bundle(&rec.id)) else {
        return false;
    };
    if grants_net_admin(spec.process().as_ref().and_then(|p| p.capabilities().as_ref())) {
        return false;
    }
    let Ok(records) = db.list() else {
        return false;
    };
    !records.iter().any(|r| {
        r.state.is_live()
            && r.id != rec.id
            && matches!(mode(&r.options), Mode::Container(c) if c == rec.name || rec.id.starts_with(&c))
    })
}

/// Rewrites, in place, the hosts file of every container attached to network `name`
/// (first or further network): loopback names, its own address and names, its peers' on
/// each network it is on, `--add-host` entries.
pub fn refresh_hosts(paths: &Paths, db: &Db, name: &str) -> Result<()> {
    let all: Vec<(Record, Vec<Attachment>)> = db
        .list()?
        .into_iter()
        .filter(|r| matches!(mode(&r.options), Mode::Bridge(_)))
        .map(|r| {
            let a = attachments(paths, &r.id);
            (r, a)
        })
        .filter(|(_, a)| !a.is_empty())
        .collect();
    for (r, mine) in all.iter().filter(|(_, a)| a.iter().any(|a| a.network == name)) {
        let text = hosts_file(r, mine, &all);
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

/// The /etc/hosts of `me`, attached as `mine` (first network first), among `all` the
/// attached containers: its peers are those sharing a network with it, each by its
/// address on the first network they share.
fn hosts_file(me: &Record, mine: &[Attachment], all: &[(Record, Vec<Attachment>)]) -> String {
    let mut s = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    match mine.first() {
        Some(a) => s.push_str(&format!("{}\t{} {}{}\n", a.ip, hostname(me), me.name, aliases(me))),
        None => s.push_str(&format!("127.0.1.1\t{}\n", hostname(me))),
    }
    for (r, theirs) in all.iter().filter(|(r, _)| r.id != me.id) {
        let shared = mine.iter().find_map(|m| theirs.iter().find(|t| t.network == m.network));
        if let Some(a) = shared {
            s.push_str(&format!("{}\t{} {}{}\n", a.ip, r.name, hostname(r), aliases(r)));
        }
    }
    s.push_str(&extra_hosts(&me.options));
    s
}

/// ` ALIAS...` of `--network-alias` (nothing without).
fn aliases(r: &Record) -> String {
    r.options.network_aliases.iter().map(|a| format!(" {a}")).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_records_old_and_new() {
        let a = Attachment {
            network: "vessel".into(),
            interface: "eth0".into(),
            ip: "10.88.0.7".into(),
            prefix: 16,
            gateway: Some("10.88.0.1".into()),
            mac: "02:00:00:00:00:07".into(),
        };
        // Before ADD: the CNI id alone.
        let h: Held = serde_json::from_str(r#"{"cni_id":"abc"}"#).unwrap();
        assert_eq!((h.cni_id.as_deref(), h.attachment), (Some("abc"), None));
        // After ADD: both, in one flat object.
        let text = serde_json::to_string(&Held {
            cni_id: Some("abc".into()),
            attachment: Some(a.clone()),
        })
        .unwrap();
        let h: Held = serde_json::from_str(&text).unwrap();
        assert_eq!((h.cni_id.as_deref(), h.attachment.as_ref()), (Some("abc"), Some(&a)));
        // A file from before separate CNI ids: the attachment alone.
        let h: Held = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!((h.cni_id, h.attachment), (None, Some(a)));
    }
}
