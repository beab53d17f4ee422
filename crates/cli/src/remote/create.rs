//! `run` and `create` flags of `vessel --remote` as the Docker API's create body
//! (moby `ContainerConfig` + `HostConfig`): the same flags as local `vessel run`. Host
//! paths of `-v` and host ports of `-p` are the remote host's (as with `docker -H`);
//! `--env-file` and `-e K` are read here. Flags the API does not take are refused by
//! name rather than dropped.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::containers as c;

/// `[IP:][HOSTPORT:]CTRPORT[/PROTO]` as docker's `PortBindings` entry:
/// (`CTRPORT/PROTO`, host IP, host port; `0`: one the remote picks). The remote checks
/// the numbers.
fn port_binding(spec: &str) -> Result<(String, String, String)> {
    let bad = || anyhow::anyhow!("invalid -p {spec:?}: use [IP:][HOSTPORT:]CTRPORT[/tcp|udp]");
    let (addr, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    if !matches!(proto, "tcp" | "udp") {
        return Err(bad());
    }
    // A bracketed IPv6 address first: [::1]:8080:80.
    let (ip, rest) = match addr.strip_prefix('[') {
        Some(v6) => {
            let (ip, tail) = v6.split_once("]:").ok_or_else(bad)?;
            (ip.to_string(), tail)
        }
        None => (String::new(), addr),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, ctr) = match (ip.is_empty(), parts.as_slice()) {
        (_, [c]) => (ip, "", *c),
        (_, [h, c]) => (ip, *h, *c),
        (true, [i, h, c]) => (i.to_string(), *h, *c),
        _ => return Err(bad()),
    };
    if ctr.is_empty() || !ctr.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        return Err(bad());
    }
    let host = if host.is_empty() { "0" } else { host };
    Ok((format!("{ctr}/{proto}"), ip, host.to_string()))
}

/// The environment: `--env-file` lines (read here, as the docker CLI does), then `-e`.
fn environment(a: &c::CreateArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("read --env-file {}", f.display()))?;
        env.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    env.extend(super::interactive::env_list(&a.env));
    Ok(env)
}

/// The create body of `a`; `attach`: the client attaches (foreground `run`).
pub(super) fn body(a: &c::CreateArgs, attach: bool) -> Result<Value> {
    let refused: Vec<&str> = [
        (!a.tmpfs.is_empty(), "--tmpfs"),
        (!a.mount.is_empty(), "--mount"),
        (!a.security_opt.is_empty(), "--security-opt"),
        (!a.dns.is_empty(), "--dns"),
        (!a.add_host.is_empty(), "--add-host"),
        (a.ip.is_some(), "--ip"),
        (a.mac_address.is_some(), "--mac-address"),
        (!a.storage_opt.is_empty(), "--storage-opt"),
        (!a.uidmap.is_empty() || !a.gidmap.is_empty(), "--uidmap/--gidmap"),
        (a.tls_verify.is_some(), "--tls-verify"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if !refused.is_empty() {
        bail!(
            "{} not sent to remotes yet: leave them out with --remote",
            refused.join(", ")
        );
    }
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in &a.publish {
        let (key, ip, host) = port_binding(p)?;
        ports
            .entry(key)
            .or_default()
            .push(json!({"HostIp": ip, "HostPort": host}));
    }
    let labels: BTreeMap<String, String> = a
        .label
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let mut body = json!({
        "Image": a.image,
        "Env": environment(a)?,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": a.interactive && attach,
        "AttachStdin": a.interactive && attach,
        "AttachStdout": attach,
        "AttachStderr": attach,
        "Labels": labels,
        "HostConfig": {
            "Binds": a.volume,
            "PortBindings": ports,
            "PublishAllPorts": a.publish_all,
            "Privileged": a.privileged,
            "ReadonlyRootfs": a.read_only,
            "Init": a.init,
            "CapAdd": a.cap_add,
            "CapDrop": a.cap_drop,
            "AutoRemove": a.rm,
        },
    });
    let host = &mut body["HostConfig"];
    if let Some(m) = a.limits.memory {
        host["Memory"] = json!(m);
    }
    if let Some(c) = a.limits.cpus {
        host["NanoCpus"] = json!((c * 1e9).round() as i64);
    }
    if let Some(p) = a.limits.pids_limit {
        host["PidsLimit"] = json!(p);
    }
    if let Some(n) = &a.network {
        host["NetworkMode"] = json!(n);
    }
    if !a.command.is_empty() {
        body["Cmd"] = json!(a.command);
    }
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(h) = &a.hostname {
        body["Hostname"] = json!(h);
    }
    if let Some(e) = &a.entrypoint {
        // "" clears the image's entrypoint, as docker's `--entrypoint ""`.
        body["Entrypoint"] = if e.is_empty() { json!([]) } else { json!([e]) };
    }
    if let Some(h) = a.health.healthcheck()? {
        body["Healthcheck"] = c::healthcheck_json(&h);
    }
    if !a.network_alias.is_empty() {
        let net = a.network.clone().unwrap_or_else(|| "bridge".into());
        body["NetworkingConfig"] = json!({"EndpointsConfig": {net: {"Aliases": a.network_alias}}});
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::port_binding;

    #[test]
    fn publish_specs_as_port_bindings() {
        let b = |s: &str| port_binding(s).unwrap();
        assert_eq!(b("80"), ("80/tcp".into(), "".into(), "0".into()));
        assert_eq!(b("8080:80"), ("80/tcp".into(), "".into(), "8080".into()));
        assert_eq!(
            b("127.0.0.1:8080:80/udp"),
            ("80/udp".into(), "127.0.0.1".into(), "8080".into())
        );
        assert_eq!(b("127.0.0.1::80"), ("80/tcp".into(), "127.0.0.1".into(), "0".into()));
        assert_eq!(b("[::1]:8080:80"), ("80/tcp".into(), "::1".into(), "8080".into()));
        for bad in ["", "80/sctp", "a:b:c:d", "x"] {
            assert!(port_binding(bad).is_err(), "{bad}");
        }
    }
}
