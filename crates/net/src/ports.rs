//! Published ports: docker's `-p`/`--publish` syntax, free host ports, and the
//! `portMappings` capability of the CNI portmap plugin (CNI conventions,
//! "portMappings"; the portmap plugin's README).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};

/// The transport protocol of a published port.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`, as the portmap plugin and docker write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port: traffic to `host_ip:host_port` (every host address when
/// `host_ip` is None) is forwarded to the container's `container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on, None for all (`0.0.0.0` and `::` mean all too).
    pub host_ip: Option<String>,
    /// The host port, 1..=65535.
    pub host_port: u16,
    /// The container's port, 1..=65535.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl PortMapping {
    /// The entry of the portmap plugin's `runtimeConfig.portMappings`:
    /// `{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}`.
    pub(crate) fn to_cni(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.as_str(),
        });
        if let Some(ip) = self.host_ip.as_deref().filter(|ip| !ip.is_empty()) {
            v["hostIP"] = serde_json::Value::String(ip.to_string());
        }
        v
    }
}

/// A port the kernel considers free now on every address (bind to port 0, read the
/// port, close). Another process may take it before it is used: the race every
/// docker-style `-p 80` has.
///
/// Errors: [`NetError::Io`] when no socket can be bound.
pub fn free_port(proto: Protocol) -> Result<u16> {
    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    let addr = match proto {
        Protocol::Tcp => TcpListener::bind(any).and_then(|s| s.local_addr()),
        Protocol::Udp => UdpSocket::bind(any).and_then(|s| s.local_addr()),
    };
    addr.map(|a| a.port())
        .map_err(|e| NetError::io("bind a free port on", "0.0.0.0:0", e))
}

/// A port or an inclusive range `A-B`.
fn parse_range(spec: &str, s: &str, what: &str, allow_zero: bool) -> Result<(u16, u16)> {
    let bad = |reason: String| NetError::BadPublish {
        spec: spec.to_string(),
        reason,
    };
    let port = |p: &str| -> Result<u16> {
        let n: u16 = p
            .parse()
            .map_err(|_| bad(format!("{what} \"{p}\" is not a number between 1 and 65535")))?;
        if n == 0 && !allow_zero {
            return Err(bad(format!("{what} 0 is not allowed")));
        }
        Ok(n)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if a == 0 || b < a {
                return Err(bad(format!(
                    "{what} range \"{s}\" must be LOW-HIGH with 0 < LOW <= HIGH"
                )));
            }
            Ok((a, b))
        }
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
    }
}

/// Parses one docker `-p` value: `[IP:][HOSTPORT:]CTRPORT[/tcp|udp]`, where ports may be
/// ranges (`8000-8002:80-82`, same length on both sides) and IPv6 host addresses are
/// bracketed (`[::1]:8080:80`). A missing or 0 host port gets a free port chosen now
/// ([`free_port`]), one per container port.
///
/// Errors: [`NetError::BadPublish`] saying what is wrong; [`NetError::Io`] when no free
/// port can be found.
pub fn parse_publish(s: &str) -> Result<Vec<PortMapping>> {
    let bad = |reason: &str| NetError::BadPublish {
        spec: s.to_string(),
        reason: reason.to_string(),
    };
    let (rest, protocol) = match s.rsplit_once('/') {
        Some((r, "tcp")) | Some((r, "TCP")) => (r, Protocol::Tcp),
        Some((r, "udp")) | Some((r, "UDP")) => (r, Protocol::Udp),
        Some((_, p)) => return Err(bad(&format!("unknown protocol \"{p}\": use tcp or udp"))),
        None => (s, Protocol::Tcp),
    };
    // An IPv6 host address in brackets first, then the colon-separated fields.
    let (ip, fields): (Option<&str>, Vec<&str>) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after
            .split_once(']')
            .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
        let tail = tail
            .strip_prefix(':')
            .ok_or_else(|| bad("expected ':' after the bracketed address"))?;
        let f: Vec<&str> = tail.split(':').collect();
        if f.len() != 2 {
            return Err(bad("expected [IP]:HOSTPORT:CONTAINERPORT"));
        }
        (Some(ip), f)
    } else {
        let f: Vec<&str> = rest.split(':').collect();
        match f.len() {
            1 | 2 => (None, f),
            3 => (Some(f[0]), f[1..].to_vec()),
            _ => return Err(bad("too many ':' (bracket an IPv6 address: [::1]:8080:80)")),
        }
    };
    let host_ip = match ip {
        None | Some("") => None,
        Some(ip) => {
            let addr: IpAddr = ip.parse().map_err(|_| bad(&format!("\"{ip}\" is not an IP address")))?;
            if addr.is_unspecified() {
                None
            } else {
                Some(addr.to_string())
            }
        }
    };
    let (host, ctr) = match fields.as_slice() {
        [c] => (None, *c),
        [h, c] => (Some(*h).filter(|h| !h.is_empty()), *c),
        _ => return Err(bad("expected [IP:][HOSTPORT:]CONTAINERPORT")),
    };
    if ctr.is_empty() {
        return Err(bad("the container port is missing"));
    }
    let (c_lo, c_hi) = parse_range(s, ctr, "container port", false)?;
    let count = usize::from(c_hi - c_lo) + 1;
    let host_ports: Vec<u16> = match host {
        None => (0..count).map(|_| 0).collect(),
        Some(h) => {
            let (h_lo, h_hi) = parse_range(s, h, "host port", true)?;
            if usize::from(h_hi - h_lo) + 1 != count {
                return Err(bad("the host and container port ranges have different lengths"));
            }
            (h_lo..=h_hi).collect()
        }
    };
    let mut out: Vec<PortMapping> = Vec::with_capacity(count);
    for (i, host_port) in host_ports.into_iter().enumerate() {
        let mut host_port = host_port;
        // A closed socket's port may come back at once: ask again for one not chosen yet.
        for _ in 0..16 {
            if host_port != 0 && !out.iter().any(|m| m.host_port == host_port) {
                break;
            }
            host_port = free_port(protocol)?;
        }
        out.push(PortMapping {
            host_ip: host_ip.clone(),
            host_port,
            container_port: c_lo + i as u16,
            protocol,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> PortMapping {
        let v = parse_publish(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn forms() {
        let m = one("8080:80");
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.protocol),
            (None, 8080, 80, Protocol::Tcp)
        );
        let m = one("127.0.0.1:8080:80/udp");
        assert_eq!(m.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(m.protocol, Protocol::Udp);
        let m = one("[::1]:8080:80");
        assert_eq!(m.host_ip.as_deref(), Some("::1"));
        let m = one("0.0.0.0:9000:90");
        assert_eq!(m.host_ip, None);
        let m = one("80");
        assert_eq!(m.container_port, 80);
        assert_ne!(m.host_port, 0);
        let m = one("127.0.0.1::80");
        assert_ne!(m.host_port, 0);
        assert_eq!(m.host_ip.as_deref(), Some("127.0.0.1"));
        let m = one("0:80");
        assert_ne!(m.host_port, 0);
        let v = parse_publish("8000-8002:80-82").unwrap();
        assert_eq!(
            v.iter().map(|m| (m.host_port, m.container_port)).collect::<Vec<_>>(),
            vec![(8000, 80), (8001, 81), (8002, 82)]
        );
        let v = parse_publish("80-81/udp").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|m| m.host_port != 0 && m.protocol == Protocol::Udp));
    }

    #[test]
    fn errors() {
        for (s, want) in [
            ("", "container port"),
            ("8080:", "container port is missing"),
            ("80/sctp", "unknown protocol"),
            ("99999:80", "host port"),
            ("8080:0", "container port 0"),
            ("a:80", "host port"),
            ("1.2.3:80:80", "not an IP address"),
            ("8000-8001:80-82", "different lengths"),
            ("82-80", "range"),
            ("1:2:3:4", "too many"),
            ("[::1:80:80", "missing ']'"),
        ] {
            let e = parse_publish(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(e.contains(&format!("\"{s}\"")), "{s}: {e}");
        }
    }

    #[test]
    fn cni_entries() {
        let m = one("127.0.0.1:8080:80");
        assert_eq!(
            m.to_cni(),
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), "\"udp\"");
        assert!(free_port(Protocol::Udp).unwrap() > 0);
    }
}
