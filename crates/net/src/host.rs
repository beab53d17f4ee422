//! Host-wide network state: what every vessel root of one network namespace shares,
//! because the bridges, addresses and firewall rules they use are that namespace's.
//! podman keeps the same kind of state host-wide (/var/lib/cni/networks); vessel keeps it
//! per network namespace, so that roots run from different namespaces (tests under
//! `nsenter --net`) never meet.
//!
//! Layout under the state directory ([`HostState::open`]: `$VESSEL_NET_STATE`, else
//! `/run/vessel-net/netns-<inode of the caller's network namespace>`, a tmpfs as the
//! namespaces and veths it describes do not outlive a reboot):
//! - `ipam/<bridge>/<network>/`: host-local's reservations, one directory per bridge, so
//!   every root on `vessel0` draws its addresses from one pool (each address once).
//! - `roots/<key>/root`: the path of a vessel root that uses a bridge network here
//!   (`<key>`: 16 hex digits of a hash of that path), `roots/<key>/bridges/<bridge>` one
//!   empty file per bridge its containers were attached to, and `roots/<key>/cni/` its
//!   CNI cache and tuning state ([`crate::attach`] with `roots/<key>` as its root). They live
//!   here, not under the root, so that the attachments of a root whose directory was
//!   deleted can still be found and released (CNI DEL from the cache).
//! - `.lock`: taken while roots are registered, unregistered or listed for removal.
//! - `netns-cookie`: the namespace's cookie (`SO_NETNS_COOKIE`). An inode number is given
//!   again to a namespace made after the first is gone; a directory whose cookie is not
//!   the caller's namespace's is that gone namespace's, and is removed before use (its
//!   sibling `netns-<inode>.lock` guards that).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{NetError, Result};
use crate::{iptables, netlink, util};

/// An environment variable naming the state directory in full (tests give each instance
/// group its own).
pub const STATE_ENV: &str = "VESSEL_NET_STATE";
/// Where the per-namespace state directories are made when [`STATE_ENV`] is not set.
pub const STATE_BASE: &str = "/run/vessel-net";

/// The host-wide network state of the caller's network namespace.
#[derive(Debug, Clone)]
pub struct HostState {
    dir: PathBuf,
}

/// A vessel root registered in a [`HostState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootEntry {
    /// The root's directory, as it was registered (absolute).
    pub root: PathBuf,
    /// Its state directory here (`roots/<key>`): the `root` argument of the CNI calls
    /// ([`crate::attach`], [`crate::detach`], [`crate::Pool::open`]) for that root.
    pub state: PathBuf,
    /// The bridges its containers were attached to ([`HostState::register_bridge`]), sorted.
    pub bridges: Vec<String>,
}

impl HostState {
    /// The state of the caller's network namespace: `$VESSEL_NET_STATE` when set and not
    /// empty, else `/run/vessel-net/netns-<inode>` (`netns-unknown` when
    /// /proc/thread-self/ns/net cannot be read).
    pub fn open() -> HostState {
        if let Some(dir) = std::env::var_os(STATE_ENV).filter(|d| !d.is_empty()) {
            return HostState::at(Path::new(&dir));
        }
        let ns = std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| m.ino().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let dir = Path::new(STATE_BASE).join(format!("netns-{ns}"));
        forget_stale(&dir);
        HostState::at(&dir)
    }

    /// The state kept in `dir`.
    pub fn at(dir: &Path) -> HostState {
        HostState {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// host-local's `dataDir` for the networks on `bridge` (it adds `/<network>`).
    pub fn ipam_dir(&self, bridge: &str) -> PathBuf {
        self.dir.join("ipam").join(bridge)
    }

    /// The state directory of the root `root` (registered or not).
    pub fn root_state(&self, root: &Path) -> PathBuf {
        self.dir.join("roots").join(root_key(&absolute(root)))
    }

    /// Takes the state's lock (released on drop).
    ///
    /// Errors: [`NetError::Io`].
    pub(crate) fn lock(&self) -> Result<util::Lock> {
        util::Lock::take(&self.dir.join(".lock"))
    }

    /// Records that `root` uses the bridge networks of this namespace; returns its state
    /// directory. Idempotent.
    ///
    /// Errors: [`NetError::Io`] when the record cannot be written.
    pub fn register(&self, root: &Path) -> Result<PathBuf> {
        let root = absolute(root);
        let state = self.root_state(&root);
        let file = state.join("root");
        if std::fs::read(&file).is_ok_and(|t| t == root.as_os_str().as_encoded_bytes()) {
            return Ok(state);
        }
        let _lock = self.lock()?;
        self.register_locked(&root)
    }

    /// [`HostState::register`] for a caller that holds [`HostState::lock`].
    pub(crate) fn register_locked(&self, root: &Path) -> Result<PathBuf> {
        let root = absolute(root);
        let state = self.root_state(&root);
        util::write_atomic(&state.join("root"), root.as_os_str().as_encoded_bytes())?;
        Ok(state)
    }

    /// [`HostState::register`], and records that the root attaches containers to
    /// `bridge` (so that the bridge can be removed once the root is gone).
    ///
    /// Errors: [`NetError::BadName`] for a bad bridge name, [`NetError::Io`].
    pub fn register_bridge(&self, root: &Path, bridge: &str) -> Result<PathBuf> {
        util::check_network_name(bridge)?;
        let state = self.register(root)?;
        let mark = state.join("bridges").join(bridge);
        if !mark.exists() {
            util::write_atomic(&mark, b"")?;
        }
        Ok(state)
    }

    /// Removes `bridge` from the caller's network namespace when no interface is enslaved
    /// to it, and then host-local's state for it when that holds no reservation. Returns
    /// whether the bridge is gone.
    ///
    /// Errors: [`NetError::Netlink`], [`NetError::Io`].
    pub fn remove_bridge(&self, bridge: &str) -> Result<bool> {
        netlink::remove_bridge_if_unused(bridge)?;
        if netlink::link_exists(bridge) {
            return Ok(false);
        }
        let dir = self.ipam_dir(bridge);
        let reserved = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|n| std::fs::read_dir(n.path()).into_iter().flatten().flatten())
            .any(|f| f.file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok());
        if !reserved {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(NetError::io("remove", dir, e)),
                _ => {}
            }
        }
        Ok(true)
    }

    /// Every registered root, sorted by path.
    ///
    /// Errors: [`NetError::Io`] when the directory cannot be read.
    pub fn roots(&self) -> Result<Vec<RootEntry>> {
        let dir = self.dir.join("roots");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetError::io("read", dir, e)),
        };
        let mut out: Vec<RootEntry> = entries
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read(e.path().join("root")).ok()?;
                let root = PathBuf::from(String::from_utf8(text).ok()?);
                let mut bridges: Vec<String> = std::fs::read_dir(e.path().join("bridges"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|b| b.file_name().to_string_lossy().into_owned())
                    .filter(|b| util::check_network_name(b).is_ok())
                    .collect();
                bridges.sort();
                Some(RootEntry {
                    root,
                    state: e.path(),
                    bridges,
                })
            })
            .collect();
        out.sort_by(|a, b| a.root.cmp(&b.root));
        Ok(out)
    }

    /// Removes the record and the state directory of `root` (its CNI cache: release its
    /// attachments first).
    ///
    /// Errors: [`NetError::Io`].
    pub fn unregister(&self, root: &Path) -> Result<()> {
        let _lock = self.lock()?;
        let state = self.root_state(root);
        match std::fs::remove_dir_all(&state) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetError::io("remove", state, e)),
            _ => Ok(()),
        }
    }

    /// What `vessel system reset` of the last root using `bridge` removes from the
    /// caller's network namespace: the bridge (when no interface is enslaved to it any
    /// more) with host-local's state for it, and the chains the firewall and portmap
    /// plugins share between containers when no container's rule is left in them.
    /// Returns what was removed, one line each.
    ///
    /// Errors: [`NetError::Netlink`], [`NetError::Command`] (iptables), [`NetError::Io`].
    pub fn remove_shared(&self, bridge: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if netlink::link_exists(bridge) {
            netlink::remove_bridge_if_unused(bridge)?;
            if !netlink::link_exists(bridge) {
                out.push(format!("bridge {bridge}"));
            }
        }
        if !netlink::link_exists(bridge) {
            let dir = self.ipam_dir(bridge);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(NetError::io("remove", dir, e)),
                _ => {}
            }
        }
        out.extend(
            iptables::remove_idle_shared_chains()?
                .into_iter()
                .map(|c| format!("chain {c}")),
        );
        Ok(out)
    }

    /// Removes the host-local state of network `network` on `bridge` (when the network
    /// is removed), and the bridge's directory once empty.
    ///
    /// Errors: [`NetError::Io`].
    pub(crate) fn remove_ipam(&self, bridge: &str, network: &str) -> Result<()> {
        let dir = self.ipam_dir(bridge).join(network);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(NetError::io("remove", dir, e)),
            _ => {}
        }
        let _ = std::fs::remove_dir(self.ipam_dir(bridge));
        Ok(())
    }
}

/// The file in a state directory naming the network namespace it belongs to by its cookie.
const COOKIE_FILE: &str = "netns-cookie";

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h, Linux 5.14), which the libc crate
/// does not export for every architecture.
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The caller's network namespace's cookie: unique for the boot, unlike its inode number,
/// which a namespace made after this one is gone may be given again. `None` on kernels
/// without `SO_NETNS_COOKIE`.
fn netns_cookie() -> Option<u64> {
    use std::os::fd::AsRawFd;
    let sock = rustix::net::socket(rustix::net::AddressFamily::UNIX, rustix::net::SocketType::DGRAM, None).ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `sock` is an open socket for the whole call; `cookie` and `len` are live,
    // writable locals and `len` holds the size of `cookie`, so the kernel writes at most
    // that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

/// Makes `dir` (a `netns-<inode>` state directory) the caller's namespace's: when it was
/// left by a namespace that is gone and whose inode number the caller's now has (another
/// cookie recorded), its reservations and roots describe nothing that exists, so it is
/// moved aside and removed; then the caller's cookie is recorded. A directory without a
/// cookie (made by an older vessel) is taken as the caller's. Best effort: when the cookie
/// cannot be read or written, `dir` is used as it is.
fn forget_stale(dir: &Path) {
    let Some(cookie) = netns_cookie() else {
        return;
    };
    let file = dir.join(COOKIE_FILE);
    let want = cookie.to_string();
    let recorded = || std::fs::read_to_string(&file).ok().map(|t| t.trim().to_string());
    if recorded().as_deref() == Some(want.as_str()) {
        return;
    }
    // A sibling lock: the directory itself may be about to move.
    let Ok(_lock) = util::Lock::take(&dir.with_extension("lock")) else {
        return;
    };
    match recorded() {
        Some(r) if r == want => return,
        Some(_) => {
            let aside = dir.with_extension(format!("stale-{cookie}"));
            if std::fs::rename(dir, &aside).is_ok() {
                let _ = std::fs::remove_dir_all(&aside);
            }
        }
        None => {}
    }
    let _ = util::write_atomic(&file, want.as_bytes());
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// 16 hex digits of the FNV-1a hash of `root`'s bytes.
fn root_key(root: &Path) -> String {
    let h = root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
        });
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// State left by a namespace whose inode number the caller's now has (another cookie)
    /// is dropped; the caller's own state, and an older vessel's without a cookie, stay.
    #[test]
    fn state_of_a_gone_namespace_with_the_same_inode_is_dropped() {
        let Some(cookie) = netns_cookie() else {
            eprintln!("no SO_NETNS_COOKIE on this kernel: nothing to check");
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("netns-4026531840");
        let held = dir.join("ipam/vessel0/vessel/10.88.0.2");
        std::fs::create_dir_all(held.parent().unwrap()).unwrap();
        std::fs::write(&held, "c1").unwrap();
        // An older vessel's directory: no cookie yet; kept, and the cookie recorded.
        forget_stale(&dir);
        assert!(held.exists());
        assert_eq!(
            std::fs::read_to_string(dir.join(COOKIE_FILE)).unwrap(),
            cookie.to_string()
        );
        // The caller's own: kept.
        forget_stale(&dir);
        assert!(held.exists());
        // Another namespace's: dropped, with nothing left beside it but the lock.
        std::fs::write(dir.join(COOKIE_FILE), (cookie + 1).to_string()).unwrap();
        forget_stale(&dir);
        assert!(!held.exists());
        assert_eq!(
            std::fs::read_to_string(dir.join(COOKIE_FILE)).unwrap(),
            cookie.to_string()
        );
        let mut names: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["netns-4026531840", "netns-4026531840.lock"]);
    }

    #[test]
    fn registry() {
        let t = tempfile::tempdir().unwrap();
        let s = HostState::at(&t.path().join("state"));
        assert!(s.roots().unwrap().is_empty());
        let a = s.register(Path::new("/srv/a")).unwrap();
        assert_eq!(s.register(Path::new("/srv/a")).unwrap(), a);
        let b = s.register(Path::new("/srv/b")).unwrap();
        assert_ne!(a, b);
        let roots = s.roots().unwrap();
        assert_eq!(
            roots.iter().map(|r| r.root.to_str().unwrap()).collect::<Vec<_>>(),
            ["/srv/a", "/srv/b"]
        );
        assert_eq!(roots[0].state, a);
        assert!(roots[0].bridges.is_empty());
        s.register_bridge(Path::new("/srv/a"), "vessel0").unwrap();
        s.register_bridge(Path::new("/srv/a"), "vessel3").unwrap();
        assert_eq!(s.roots().unwrap()[0].bridges, ["vessel0", "vessel3"]);
        assert!(s.register_bridge(Path::new("/srv/a"), "../x").is_err());
        s.unregister(Path::new("/srv/a")).unwrap();
        assert_eq!(s.roots().unwrap().len(), 1);
        assert_eq!(s.ipam_dir("vessel0"), t.path().join("state/ipam/vessel0"));
    }
}
