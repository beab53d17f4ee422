//! The routes of the calling process's network namespace, read from /proc/net/route
//! (IPv4, main table) and /proc/net/ipv6_route (IPv6), for the subnet overlap checks of
//! `network create` (proc(5), "/proc/net/route").

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// One route of the host: its destination and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    /// The destination prefix.
    pub dst: IpNet,
    /// The output device.
    pub dev: String,
}

impl std::fmt::Display for HostRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the host's route {} dev {}", self.dst, self.dev)
    }
}

/// The routes of the current network namespace that can conflict with a new subnet:
/// default routes (prefix 0), IPv6 link-local, multicast and loopback are left out.
/// Unreadable files give no routes (IPv6 may be disabled).
pub fn host_routes() -> Vec<HostRoute> {
    let mut out = std::fs::read_to_string("/proc/self/net/route")
        .map(|t| parse_v4(&t))
        .unwrap_or_default();
    out.extend(
        std::fs::read_to_string("/proc/self/net/ipv6_route")
            .map(|t| parse_v6(&t))
            .unwrap_or_default(),
    );
    out
}

/// Parses /proc/net/route: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`,
/// addresses as the kernel's in-memory (network order) u32 printed in hex.
fn parse_v4(text: &str) -> Vec<HostRoute> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else {
            continue;
        };
        let dst = Ipv4Addr::from(dst.to_ne_bytes());
        let prefix = u32::from_be_bytes(mask.to_ne_bytes()).count_ones() as u8;
        if prefix == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(dst, prefix) {
            out.push(HostRoute {
                dst: IpNet::V4(net.trunc()),
                dev: f[0].to_string(),
            });
        }
    }
    out
}

/// Parses /proc/net/ipv6_route: `dst plen src plen nexthop metric refcnt use flags dev`,
/// addresses as 32 hex digits in network order.
fn parse_v6(text: &str) -> Vec<HostRoute> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[0].len() != 32 {
            continue;
        }
        let (Ok(dst), Ok(prefix)) = (u128::from_str_radix(f[0], 16), u8::from_str_radix(f[1], 16)) else {
            continue;
        };
        let dst = Ipv6Addr::from(dst);
        let link_local = (dst.segments()[0] & 0xffc0) == 0xfe80;
        if prefix == 0 || link_local || dst.is_multicast() || dst.is_loopback() || f[9] == "lo" {
            continue;
        }
        if let Ok(net) = Ipv6Net::new(dst, prefix) {
            out.push(HostRoute {
                dst: IpNet::V6(net.trunc()),
                dev: f[9].to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            cni0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_v4(text);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].dst.to_string(), "192.168.0.0/24");
        assert_eq!(r[1].dst.to_string(), "10.88.0.0/16");
        assert_eq!(r[1].dev, "cni0");
        assert_eq!(r[1].to_string(), "the host's route 10.88.0.0/16 dev cni0");
    }

    #[test]
    fn v6() {
        let text = "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
            fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     br0\n\
            00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo\n";
        let r = parse_v6(text);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].dst.to_string(), "fd00::/64");
    }

    #[test]
    fn reads_current() {
        // Whatever the machine has: it parses without panicking.
        let _ = host_routes();
    }
}
