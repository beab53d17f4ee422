//! The name-resolution files a container gets: /etc/resolv.conf derived from the
//! host's (resolv.conf(5)), as docker does, and /etc/hosts (hosts(5)).

use std::net::IpAddr;

/// docker's fallback name servers when the host has only loopback ones.
pub const FALLBACK_DNS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// Whether a `nameserver` value is a loopback address (127.0.0.0/8, ::1), which means
/// the host's own resolver and is unreachable from a container's namespace.
fn is_loopback(ns: &str) -> bool {
    // An IPv6 server may carry a zone (`fe80::1%eth0`).
    let addr = ns.split('%').next().unwrap_or(ns);
    addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The container's /etc/resolv.conf made from `host` (the host file's text): its
/// `search`, `domain` and `options` lines are kept, its name servers are replaced by
/// `dns` when given, else kept without the loopback ones; when none is left, docker's
/// [`FALLBACK_DNS`].
pub fn resolv_conf_from(host: &str, dns: &[String]) -> String {
    let mut out = String::new();
    let mut servers: Vec<String> = Vec::new();
    for line in host.lines() {
        let t = line.trim();
        let mut words = t.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ns) = words.next() {
                    if dns.is_empty() && !is_loopback(ns) {
                        servers.push(ns.to_string());
                    }
                }
            }
            Some("search") | Some("domain") | Some("options") => {
                out.push_str(t);
                out.push('\n');
            }
            _ => {}
        }
    }
    if !dns.is_empty() {
        servers = dns
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
    }
    if servers.is_empty() {
        servers = FALLBACK_DNS.iter().map(|s| s.to_string()).collect();
    }
    for s in servers {
        out.push_str("nameserver ");
        out.push_str(&s);
        out.push('\n');
    }
    out
}

/// The container's /etc/resolv.conf from the host's /etc/resolv.conf (an unreadable or
/// missing file counts as empty): see [`resolv_conf_from`].
pub fn resolv_conf(dns: &[String]) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    resolv_conf_from(&host, dns)
}

/// The container's /etc/hosts: the loopback names, then `hostname` on each of its
/// addresses (`ips`), or on 127.0.1.1 when it has none (`--network none`).
pub fn hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if ips.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for ip in ips {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nnameserver ::1\nsearch example.com\noptions edns0 trust-ad\n";

    #[test]
    fn drops_loopback() {
        assert_eq!(
            resolv_conf_from(HOST, &[]),
            "search example.com\noptions edns0 trust-ad\nnameserver 10.0.0.2\n"
        );
    }

    #[test]
    fn falls_back() {
        assert_eq!(
            resolv_conf_from("nameserver 127.0.0.53\n", &[]),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf_from("", &[]), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn given_servers() {
        let dns = vec!["1.1.1.1".to_string(), "2606:4700::1111".to_string()];
        assert_eq!(
            resolv_conf_from(HOST, &dns),
            "search example.com\noptions edns0 trust-ad\nnameserver 1.1.1.1\nnameserver 2606:4700::1111\n"
        );
    }

    #[test]
    fn host_file() {
        let h = hosts("web", &["10.88.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.88.0.2\tweb\n"));
        assert!(hosts("box", &[]).ends_with("127.0.1.1\tbox\n"));
        // Whatever the machine's file holds, a server is always present.
        assert!(resolv_conf(&[]).contains("nameserver "));
    }
}
