//! Rootless networking through pasta (passt(1), Debian's `passt` package): a user
//! mode network stack that gives a container's network namespace a tap interface with
//! the host's addresses and routes copied (`--config-net`), carries its traffic through
//! ordinary sockets of the caller, and forwards published host ports (`-t`, `-u`) into
//! the namespace. Used where the caller may not make veths and bridges (podman's
//! rootless default since 5.0).
//!
//! pasta needs /dev/net/tun to be openable by the caller (mode 0666, as Debian's udev
//! rules make it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{NetError, Result};
use crate::ports::{PortMapping, Protocol};

/// The pasta binary: `$VESSEL_PASTA`, else `pasta` on PATH, else /usr/bin/pasta.
pub fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("VESSEL_PASTA").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("pasta"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/pasta"))
}

/// pasta's arguments for `ports`: `-t [IP/]HOSTPORT:CTRPORT` (TCP) or `-u` (UDP).
pub fn port_args(ports: &[PortMapping]) -> Vec<String> {
    let mut args = Vec::new();
    for p in ports {
        args.push(if p.protocol == Protocol::Udp { "-u" } else { "-t" }.to_string());
        let ip = p
            .host_ip
            .as_deref()
            .filter(|ip| !matches!(*ip, "" | "0.0.0.0" | "::"))
            .map(|ip| format!("{ip}/"))
            .unwrap_or_default();
        args.push(format!("{ip}{}:{}", p.host_port, p.container_port));
    }
    args
}

/// Starts pasta for the network namespace `netns` (a path such as /proc/PID/ns/net;
/// the caller must own its user namespace), forwarding `ports` from the caller's
/// namespace; pasta runs in the background and writes its pid to `pid_file`.
/// Returns once the namespace is configured.
///
/// Errors: [`NetError::Exec`] when pasta cannot be run (install `passt`),
/// [`NetError::Command`] with pasta's message when it fails.
pub fn start(netns: &Path, ports: &[PortMapping], pid_file: &Path) -> Result<()> {
    let prog = program();
    let mut args: Vec<String> = vec![
        "--config-net".into(),
        "--quiet".into(),
        "--netns".into(),
        netns.display().to_string(),
        "--pid".into(),
        pid_file.display().to_string(),
        // Runs as the caller: as root of a rootless session, it would otherwise
        // switch to nobody and could not write its pid file.
        "--runas".into(),
        "0".into(),
    ];
    if ports.is_empty() {
        args.extend(["-t".into(), "none".into(), "-u".into(), "none".into()]);
    } else {
        args.extend(port_args(ports));
        if !ports.iter().any(|p| p.protocol == Protocol::Udp) {
            args.extend(["-u".into(), "none".into()]);
        }
        if !ports.iter().any(|p| p.protocol == Protocol::Tcp) {
            args.extend(["-t".into(), "none".into()]);
        }
    }
    args.extend(["-T".into(), "none".into(), "-U".into(), "none".into()]);
    let out = Command::new(&prog).args(&args).output().map_err(|e| NetError::Exec {
        program: prog.clone(),
        source: std::io::Error::new(e.kind(), format!("{e} (install Debian's passt package)")),
    })?;
    if !out.status.success() {
        let msg: Vec<_> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("Failed to send") && !l.contains("IPv6"))
            .map(str::to_string)
            .collect();
        return Err(NetError::Command {
            program: prog.display().to_string(),
            args: args.join(" "),
            msg: format!(
                "{} ({}; pasta needs a host interface with a route and /dev/net/tun readable and writable by the user)",
                msg.join("; "),
                out.status
            ),
        });
    }
    Ok(())
}

/// Ends the pasta whose pid is in `pid_file` (SIGTERM) and removes the file. A missing
/// file or process is fine.
pub fn stop(pid_file: &Path) {
    if let Some(pid) = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    {
        // SAFETY: kill with a pid pasta wrote for us and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = |ip: Option<&str>, h, c, protocol| PortMapping {
            host_ip: ip.map(str::to_string),
            host_port: h,
            container_port: c,
            protocol,
        };
        assert_eq!(
            port_args(&[
                p(None, 8080, 80, Protocol::Tcp),
                p(Some("127.0.0.1"), 5353, 53, Protocol::Udp),
                p(Some("0.0.0.0"), 1, 2, Protocol::Tcp)
            ]),
            ["-t", "8080:80", "-u", "127.0.0.1/5353:53", "-t", "1:2"]
        );
    }
}
