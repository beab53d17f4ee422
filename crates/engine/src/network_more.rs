//! A container's networks beyond its first: `docker network connect` / `vessel network
//! connect` of a container on a bridge network. Each is one more interface (`eth1`,
//! `eth2`, ...) in the network namespace of the container's first attachment, made by
//! the same CNI path as the first ([`vessel_net::attach`], without a default route: the
//! first network's gateway stays the way out, as docker keeps it), attached at once when
//! the container is live and every time it starts (the monitor, after
//! [`crate::network::up`]), and detached (CNI DEL) before the first attachment is given
//! back or released, so that a warm attachment never carries another network's
//! interface. `BUNDLE/networks.json` ([`More`]) records what the container holds;
//! [`crate::options::RunOptions::more_networks`] what it asks for.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vessel_net::{AttachRequest, Attachment, HostState, Networks};

use crate::db::{Db, Record};
use crate::error::{Error, Result};
use crate::network::{self, Mode};
use crate::paths::Paths;

/// One more network a container holds an attachment on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct More {
    /// The network's name.
    pub network: String,
    /// The attachment's CNI container id (a fresh one, as for the first attachment).
    pub cni_id: String,
    /// The interface inside the container (`eth1`, ...).
    pub ifname: String,
    /// Address, gateway and MAC, once CNI ADD is done (None: written before ADD, so a
    /// crash in the middle leaves it findable for [`down`]).
    pub attachment: Option<Attachment>,
}

fn file(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("networks.json")
}

/// The attachments container `id` holds beyond its first (none when it holds none).
pub fn held(paths: &Paths, id: &str) -> Vec<More> {
    std::fs::read(file(paths, id))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

fn write(paths: &Paths, id: &str, all: &[More]) -> Result<()> {
    let path = file(paths, id);
    if all.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", &path, e)),
            _ => Ok(()),
        };
    }
    let text = serde_json::to_vec(all).map_err(|e| Error::BadInput(format!("networks.json: {e}")))?;
    crate::containers::write_atomic(&path, &text)
}

/// The network namespace file of container `rec`'s first attachment, while it exists.
fn netns_of(paths: &Paths, rec: &Record) -> Option<PathBuf> {
    let cni_id = network::held_cni_id(paths, &rec.id)?;
    let ns = network::pool(paths).netns(&cni_id);
    vessel_net::netns::is_netns(&ns).then_some(ns)
}

/// The first interface name `ethN` (N ≥ 1) that none of `taken` uses.
fn next_ifname(taken: &[More]) -> String {
    (1..)
        .map(|n| format!("eth{n}"))
        .find(|name| !taken.iter().any(|m| &m.ifname == name))
        .unwrap_or_else(|| "eth1".into())
}

/// Attaches live container `rec` (on a bridge network, its first attachment made) to
/// network `name` as its next interface: CNI ADD into its namespace, recorded in
/// `networks.json`; the hosts files of the network's members are rewritten. One that
/// already holds an attachment on `name` keeps it. On error nothing is left.
///
/// Errors: [`Error::WrongState`] when the container holds no network namespace to
/// attach to; [`vessel_net::NetError`] (as [`Error::Network`]) for an unknown network or
/// a failing plugin.
pub fn attach(paths: &Paths, rec: &Record, name: &str) -> Result<Attachment> {
    let mut all = held(paths, &rec.id);
    if let Some(a) = all
        .iter()
        .find(|m| m.network == name)
        .and_then(|m| m.attachment.clone())
    {
        return Ok(a);
    }
    let ns = netns_of(paths, rec).ok_or_else(|| {
        Error::WrongState(format!(
            "container {} holds no network namespace to attach network {name} to: start it first",
            rec.name
        ))
    })?;
    let net = Networks::open(&paths.root).get(name)?;
    let cni_root = HostState::open().register_bridge(&paths.root, &net.bridge)?;
    let cni_id = vessel_net::warm::new_id()?;
    let ifname = next_ifname(&all);
    all.retain(|m| m.network != name);
    all.push(More {
        network: name.into(),
        cni_id: cni_id.clone(),
        ifname: ifname.clone(),
        attachment: None,
    });
    write(paths, &rec.id, &all)?;
    let req = AttachRequest {
        container_id: &cni_id,
        netns: &ns,
        network: &net,
        ifname: &ifname,
        ports: &[],
        ip: None,
        mac: None,
    };
    match vessel_net::attach(&cni_root, &req) {
        Ok(a) => {
            if let Some(m) = all.iter_mut().find(|m| m.cni_id == cni_id) {
                m.attachment = Some(a.clone());
            }
            write(paths, &rec.id, &all)?;
            if let Ok(db) = Db::open(&paths.root) {
                let _ = network::refresh_hosts(paths, &db, name);
            }
            Ok(a)
        }
        Err(e) => {
            all.retain(|m| m.cni_id != cni_id);
            let _ = write(paths, &rec.id, &all);
            Err(e.into())
        }
    }
}

/// Detaches container `rec` from network `name` (CNI DEL: the interface leaves its
/// namespace, the address goes back), if it holds an attachment there beyond its
/// first. Returns whether it held one.
///
/// Errors: the plugins' ([`Error::Network`]); the record stays then, so that a retry or
/// the container's end can finish.
pub fn detach(paths: &Paths, rec: &Record, name: &str) -> Result<bool> {
    let mut all = held(paths, &rec.id);
    let Some(m) = all.iter().find(|m| m.network == name).cloned() else {
        return Ok(false);
    };
    let ns = netns_of(paths, rec);
    vessel_net::detach(&network::cni_root(paths), &m.cni_id, name, &m.ifname, ns.as_deref())?;
    all.retain(|x| x.cni_id != m.cni_id);
    write(paths, &rec.id, &all)?;
    if let Ok(db) = Db::open(&paths.root) {
        let _ = network::refresh_hosts(paths, &db, name);
    }
    Ok(true)
}

/// Monitor, after [`network::up`]: attaches the container to each of its
/// [`more_networks`](crate::options::RunOptions::more_networks). On error what was
/// attached is detached again.
///
/// Errors: as [`attach`].
pub fn up(paths: &Paths, rec: &Record) -> Result<()> {
    if !matches!(network::mode(&rec.options), Mode::Bridge(_)) {
        return Ok(());
    }
    for name in &rec.options.more_networks {
        if let Err(e) = attach(paths, rec, name) {
            let _ = down(paths, rec);
            return Err(e);
        }
    }
    Ok(())
}

/// Before the first attachment goes ([`network::down`]): detaches every attachment the
/// container holds beyond its first (CNI DEL, also when its namespace is gone: the
/// addresses are released all the same). Idempotent.
///
/// Errors: the first failure; the others are still detached, and the failed ones stay
/// recorded.
pub fn down(paths: &Paths, rec: &Record) -> Result<()> {
    let mut first = None;
    for m in held(paths, &rec.id) {
        if let Err(e) = detach(paths, rec, &m.network) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fill_gaps() {
        let m = |i: &str| More {
            network: "n".into(),
            cni_id: "c".into(),
            ifname: i.into(),
            attachment: None,
        };
        assert_eq!(next_ifname(&[]), "eth1");
        assert_eq!(next_ifname(&[m("eth1"), m("eth3")]), "eth2");
        assert_eq!(next_ifname(&[m("eth1"), m("eth2")]), "eth3");
    }
}
