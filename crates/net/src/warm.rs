//! Warm attachments: network namespaces that are already attached to a network (their
//! CNI ADD done: veth on the bridge, address, routes, firewall rules), kept after the
//! container that used them ended, for the next container on that network to take
//! instead of running CNI ADD and, at its end, DEL again. The standard plugins spend
//! 50 to 60 ms on ADD and 100 ms or more on DEL (process starts, iptables, the kernel's
//! RCU waits when a veth is deleted); a warm attachment changes hands in microseconds.
//! It is the warm pool of cloud CNIs (the AWS VPC CNI's `WARM_IP_TARGET`), kept per
//! network and bounded by [`crate::Network::warm`].
//!
//! Layout: the namespace of an attachment stays where it was made (`NETNS_DIR/<id>`, see
//! [`crate::netns`]), its CNI cache entry under the attachment's CNI container id `<id>`
//! (the id of the container that made it). A free warm attachment has a marker file
//! `WARM_DIR/<network>/<id>`; taking one is unlinking its marker (so two takers can never
//! get the same one), giving one back is making the marker again.
//!
//! What may be given back is the caller's call: a namespace whose container could not
//! change it (no CAP_NET_ADMIN, no network sysctls), that no process uses any more, with
//! no per-container plugin (portmap, tuning) in its chain. See the engine's monitor.

use std::path::{Path, PathBuf};

use crate::attach::{attachment, detach, Attachment};
use crate::error::{IoContext, NetError, Result};
use crate::{netns, util};

/// A warm attachment taken from the pool: its CNI container id, its namespace file and
/// where it sits on its network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warm {
    /// The CNI container id the attachment was made (and is cached) under.
    pub cni_id: String,
    /// The network namespace file (`NETNS_DIR/<cni_id>`).
    pub netns: PathBuf,
    /// The address, gateway and MAC of its `eth0`.
    pub attachment: Attachment,
}

/// The warm attachments of one vessel root.
#[derive(Debug, Clone)]
pub struct Pool {
    root: PathBuf,
    netns_dir: PathBuf,
    warm_dir: PathBuf,
}

/// The interface warm attachments have inside their namespace.
const IFNAME: &str = "eth0";

impl Pool {
    /// The pool of the vessel root `root` (its CNI cache), with namespace files in
    /// `netns_dir` and free markers in `warm_dir` (both on a tmpfs: after a reboot the
    /// namespaces are gone, and so are the markers; `system check` detaches what the
    /// cache still holds).
    pub fn open(root: &Path, netns_dir: &Path, warm_dir: &Path) -> Pool {
        Pool {
            root: root.to_path_buf(),
            netns_dir: netns_dir.to_path_buf(),
            warm_dir: warm_dir.to_path_buf(),
        }
    }

    fn marker(&self, network: &str, cni_id: &str) -> PathBuf {
        self.warm_dir.join(network).join(cni_id)
    }

    /// The namespace file of the attachment `cni_id`.
    pub fn netns(&self, cni_id: &str) -> PathBuf {
        self.netns_dir.join(cni_id)
    }

    /// The CNI ids of the free warm attachments of `network`, sorted.
    pub fn free(&self, network: &str) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.warm_dir.join(network))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| util::check_container_id(id).is_ok())
            .collect();
        ids.sort();
        ids
    }

    /// The CNI ids of the free warm attachments of every network.
    pub fn free_all(&self) -> Vec<String> {
        std::fs::read_dir(&self.warm_dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|net| self.free(&net.file_name().to_string_lossy()))
            .collect()
    }

    /// The directory of the namespace files ([`Pool::netns`]).
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// Whether `cni_id` is a free warm attachment of `network`.
    pub fn is_free(&self, network: &str, cni_id: &str) -> bool {
        util::check_container_id(cni_id).is_ok() && self.marker(network, cni_id).exists()
    }

    /// Takes a free warm attachment of `network`, if there is one. One whose namespace or
    /// cache entry is gone (a reboot, a damaged cache) is detached on the way and the next
    /// one tried.
    ///
    /// Errors: [`NetError::Io`] when the markers cannot be read or removed.
    pub fn take(&self, network: &str) -> Result<Option<Warm>> {
        for cni_id in self.free(network) {
            let marker = self.marker(network, &cni_id);
            match std::fs::remove_file(&marker) {
                Ok(()) => {}
                // Another taker was first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(NetError::io("remove", marker, e)),
            }
            let ns = self.netns(&cni_id);
            let found = if netns::is_netns(&ns) {
                attachment(&self.root, &cni_id, network, IFNAME).ok().flatten()
            } else {
                None
            };
            match found {
                Some(attachment) => {
                    return Ok(Some(Warm {
                        cni_id,
                        netns: ns,
                        attachment,
                    }))
                }
                // Left for `system check` to report if even its DEL fails.
                None => {
                    let _ = self.release(network, &cni_id);
                }
            }
        }
        Ok(None)
    }

    /// Gives the attachment `cni_id` (its namespace at [`Pool::netns`]) back to `network`'s
    /// pool unless that already holds `keep` free ones; returns whether it was kept. The
    /// caller detaches it otherwise ([`Pool::release`]).
    ///
    /// Errors: [`NetError::BadName`] for a bad id, [`NetError::Io`] for the marker.
    pub fn give(&self, network: &str, cni_id: &str, keep: u32) -> Result<bool> {
        util::check_container_id(cni_id)?;
        util::check_network_name(network)?;
        if self.free(network).len() >= keep as usize || !netns::is_netns(&self.netns(cni_id)) {
            return Ok(false);
        }
        let marker = self.marker(network, cni_id);
        if let Some(dir) = marker.parent() {
            std::fs::create_dir_all(dir).at("create", dir)?;
        }
        std::fs::write(&marker, b"").at("create", &marker)?;
        Ok(true)
    }

    /// Detaches the attachment `cni_id` from `network` (CNI DEL) and removes its namespace
    /// file and marker. Idempotent.
    ///
    /// Errors: those of [`detach`] and [`netns::remove`].
    pub fn release(&self, network: &str, cni_id: &str) -> Result<()> {
        util::check_container_id(cni_id)?;
        let _ = std::fs::remove_file(self.marker(network, cni_id));
        let ns = self.netns(cni_id);
        let present = netns::is_netns(&ns).then_some(ns.as_path());
        let res = detach(&self.root, cni_id, network, IFNAME, present);
        netns::remove(&ns)?;
        res
    }

    /// Releases every free warm attachment of `network` (before the network is removed,
    /// or to give the addresses back): returns how many there were.
    ///
    /// Errors: the first error of [`Pool::release`]; the others are still released.
    pub fn drain(&self, network: &str) -> Result<usize> {
        let mut n = 0;
        let mut first = None;
        while let Some(w) = self.take(network)? {
            n += 1;
            if let Err(e) = self.release(network, &w.cni_id) {
                first.get_or_insert(e);
            }
        }
        let _ = std::fs::remove_dir(self.warm_dir.join(network));
        first.map_or(Ok(n), Err)
    }
}

/// A fresh CNI container id for a new attachment: 64 random hex digits (an attachment
/// can outlive its first container, so it never borrows a container's id).
///
/// Errors: [`NetError::Io`] when the kernel's random source fails.
pub fn new_id() -> Result<String> {
    util::random_hex64()
}
