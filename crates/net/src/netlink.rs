//! A minimal rtnetlink client (rtnetlink(7)): list links, bring one up, delete one. Only
//! what the library does itself (loopback, bridge removal); everything else is the CNI
//! plugins' work. A socket talks to the network namespace it was created in.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::error::{NetError, Result};

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IFF_UP: u32 = 0x1;

/// One network interface as RTM_GETLINK reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The index of the bridge (or bond) it is enslaved to.
    pub master: Option<u32>,
    /// The link kind (`bridge`, `veth`), when it has one.
    pub kind: Option<String>,
    /// Whether IFF_UP is set.
    pub up: bool,
}

/// An rtnetlink socket of the namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn nl_err(op: impl Into<String>, e: impl Into<io::Error>) -> NetError {
    NetError::Netlink {
        op: op.into(),
        source: e.into(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The netlink attributes in `b`: (type, payload), stopping at the first malformed one.
fn attrs(b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u16_at(b, at), u16_at(b, at + 2)) {
        let len = len as usize;
        let Some(data) = b.get(at + 4..at + len.max(4)) else {
            break;
        };
        if len < 4 {
            break;
        }
        out.push((ty & NLA_TYPE_MASK, data));
        at += (len + 3) & !3;
    }
    out
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink> {
        let fd = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, None)
            .map_err(|e| nl_err("socket", e))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request and collects the payloads of the answers (for a dump, until
    /// NLMSG_DONE; otherwise until the acknowledgement).
    fn request(&mut self, op: &str, ty: u16, flags: u16, payload: &[u8]) -> Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDRLEN + payload.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        rustix::net::send(&self.fd, &msg, SendFlags::empty()).map_err(|e| nl_err(op, e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty()).map_err(|e| nl_err(op, e))?;
            let mut at = 0;
            while at + NLMSG_HDRLEN <= n {
                let (Some(mlen), Some(mty), Some(mseq)) =
                    (u32_at(&buf, at), u16_at(&buf, at + 4), u32_at(&buf, at + 8))
                else {
                    break;
                };
                let mlen = mlen as usize;
                if mlen < NLMSG_HDRLEN || at + mlen > n {
                    return Err(nl_err(
                        op,
                        io::Error::new(io::ErrorKind::InvalidData, "truncated answer"),
                    ));
                }
                let body = &buf[at + NLMSG_HDRLEN..at + mlen];
                at += (mlen + 3) & !3;
                if mseq != self.seq {
                    continue;
                }
                match mty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = u32_at(body, 0).map(|c| c as i32).unwrap_or(0);
                        if code < 0 {
                            return Err(nl_err(op, io::Error::from_raw_os_error(-code)));
                        }
                        return Ok(out);
                    }
                    _ => out.push(body.to_vec()),
                }
            }
        }
    }

    /// Every interface of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let req = [0u8; IFINFOMSG_LEN];
        let answers = self.request("RTM_GETLINK", RTM_GETLINK, NLM_F_DUMP, &req)?;
        let mut out = Vec::new();
        for body in answers {
            let (Some(index), Some(flags)) = (u32_at(&body, 4), u32_at(&body, 8)) else {
                continue;
            };
            let mut link = Link {
                index,
                name: String::new(),
                master: None,
                kind: None,
                up: flags & IFF_UP != 0,
            };
            for (ty, data) in attrs(body.get(IFINFOMSG_LEN..).unwrap_or_default()) {
                match ty {
                    IFLA_IFNAME => link.name = c_string(data),
                    IFLA_MASTER => link.master = u32_at(data, 0),
                    IFLA_LINKINFO => {
                        link.kind = attrs(data)
                            .into_iter()
                            .find(|(t, _)| *t == IFLA_INFO_KIND)
                            .map(|(_, d)| c_string(d))
                    }
                    _ => {}
                }
            }
            out.push(link);
        }
        Ok(out)
    }

    fn ifinfo(index: u32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
        let mut m = [0u8; IFINFOMSG_LEN];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        m[8..12].copy_from_slice(&flags.to_ne_bytes());
        m[12..16].copy_from_slice(&change.to_ne_bytes());
        m
    }

    /// Sets IFF_UP on the interface `index`.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let m = Self::ifinfo(index, IFF_UP, IFF_UP);
        self.request(&format!("set link {index} up"), RTM_NEWLINK, NLM_F_ACK, &m)
            .map(drop)
    }

    /// Deletes the interface `index`.
    pub fn delete_link(&mut self, index: u32, name: &str) -> Result<()> {
        let m = Self::ifinfo(index, 0, 0);
        self.request(&format!("delete link {name}"), RTM_DELLINK, NLM_F_ACK, &m)
            .map(drop)
    }
}

/// Whether an interface called `name` exists in the calling thread's network namespace.
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call;
    // if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Deletes the bridge `name` of the calling thread's network namespace when it exists,
/// is a bridge and has no interface enslaved (a container's veth). Otherwise leaves it.
pub fn remove_bridge_if_unused(name: &str) -> Result<()> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let Some(bridge) = links.iter().find(|l| l.name == name) else {
        return Ok(());
    };
    if bridge.kind.as_deref() != Some("bridge") || links.iter().any(|l| l.master == Some(bridge.index)) {
        return Ok(());
    }
    match nl.delete_link(bridge.index, name) {
        Err(NetError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        other => other,
    }
}

/// Brings up the loopback interface of the calling thread's network namespace.
pub(crate) fn loopback_up() -> Result<()> {
    let mut nl = Netlink::open()?;
    let lo = nl
        .links()?
        .into_iter()
        .find(|l| l.name == "lo")
        .ok_or_else(|| nl_err("find lo", io::Error::from_raw_os_error(libc::ENODEV)))?;
    if lo.up {
        return Ok(());
    }
    nl.set_up(lo.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_parsing() {
        // IFLA_IFNAME "lo\0" (len 7, padded to 8), then IFLA_MASTER 5.
        let mut b = vec![7, 0, 3, 0, b'l', b'o', 0, 0];
        b.extend_from_slice(&[8, 0, 10, 0]);
        b.extend_from_slice(&5u32.to_ne_bytes());
        let a = attrs(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(c_string(a[0].1), "lo");
        assert_eq!(u32_at(a[1].1, 0), Some(5));
        // Malformed lengths end the walk instead of panicking.
        assert!(attrs(&[200, 0, 3, 0, 1]).is_empty());
        assert!(attrs(&[2, 0, 3, 0]).is_empty());
    }

    #[test]
    fn lists_links_of_this_namespace() {
        // Read-only: the machine's own interfaces are listed, not changed.
        let links = Netlink::open().unwrap().links().unwrap();
        assert!(links.iter().any(|l| l.name == "lo"), "{links:?}");
        assert!(link_exists("lo"));
        assert!(!link_exists("vessel-nope-x"));
    }
}
