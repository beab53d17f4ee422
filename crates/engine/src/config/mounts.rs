//! The container's mounts in config.json: the standard ones, /etc/hostname, /etc/hosts and
//! /etc/resolv.conf written into the bundle, `--tmpfs` and `-v`, and docker's masked and
//! read-only paths.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::error::{Error, IoContext, Result};

/// docker's masked paths (what `--privileged` lifts): files and directories of /proc and
/// /sys that expose the host.
pub(super) const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only paths.
pub(super) const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

pub(super) fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

pub(super) fn bind(source: &Path, dest: &Path, read_only: bool) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.to_path_buf());
    m.set_typ(Some("bind".to_string()));
    m.set_source(Some(source.to_path_buf()));
    let mut o = vec!["rbind".to_string(), "rprivate".to_string()];
    if read_only {
        o.push("ro".to_string());
    }
    m.set_options(Some(o));
    m
}

/// The standard mounts of a Linux container (docker's, as runc's `spec` has them, with
/// /dev/shm a 64 MiB tmpfs). `privileged` leaves /sys and the cgroup mount writable.
pub(super) fn standard_mounts(privileged: bool) -> Vec<Mount> {
    let sys_ro: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev"]
    } else {
        &["nosuid", "noexec", "nodev", "ro"]
    };
    let cgroup_ro: &[&str] = if privileged {
        &["nosuid", "noexec", "nodev", "relatime"]
    } else {
        &["nosuid", "noexec", "nodev", "relatime", "ro"]
    };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", sys_ro),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", cgroup_ro),
    ]
}

/// A lexically clean absolute container path for `flag`, not "/" and without "..".
pub(super) fn container_path(flag: &str, value: &str, p: &str) -> Result<PathBuf> {
    let path = Path::new(p);
    let ok = path.is_absolute() && path.components().all(|c| !matches!(c, std::path::Component::ParentDir));
    if !ok {
        return Err(Error::BadInput(format!(
            "invalid {flag} {value:?}: the path must be absolute and must not contain \"..\""
        )));
    }
    let clean: PathBuf = path.components().collect();
    if clean == Path::new("/") {
        return Err(Error::BadInput(format!(
            "invalid {flag} {value:?}: cannot mount over \"/\""
        )));
    }
    Ok(clean)
}

/// `--tmpfs PATH[:OPTIONS]`: a tmpfs with docker's defaults (nosuid, nodev, noexec), the
/// user's options after them (so `exec` wins over `noexec`).
pub(super) fn tmpfs_mount(spec: &str) -> Result<Mount> {
    let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
    let dest = container_path("--tmpfs", spec, path)?;
    let mut o: Vec<String> = ["nosuid", "nodev", "noexec"].iter().map(|s| s.to_string()).collect();
    o.extend(options.split(',').filter(|s| !s.is_empty()).map(String::from));
    let mut m = Mount::default();
    m.set_destination(dest);
    m.set_typ(Some("tmpfs".into()));
    m.set_source(Some(PathBuf::from("tmpfs")));
    m.set_options(Some(o));
    Ok(m)
}

/// Writes a bundle file: temp file, fsync, rename (so a crash leaves the old or the new).
pub(super) fn write_bundle_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = fs::File::create(&tmp).at("create", &tmp)?;
    f.write_all(contents.as_bytes()).at("write", &tmp)?;
    f.set_permissions(fs::Permissions::from_mode(0o644)).at("chmod", &tmp)?;
    f.sync_all().at("fsync", &tmp)?;
    fs::rename(&tmp, &path).at("rename into place", &path)?;
    Ok(path)
}

/// /etc/hosts of a container: the loopback names and the container's hostname.
pub(super) fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n\
         127.0.0.1\t{hostname}\n"
    )
}

/// /etc/resolv.conf of a container: the host's, without loopback nameservers (they are
/// the host's own resolver, unreachable from the container's network namespace), and
/// docker's defaults (8.8.8.8, 8.8.4.4) when no nameserver is left.
pub(super) fn resolv_conf(host: Option<&str>) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.unwrap_or("").lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let ip = addr.split('%').next().unwrap_or("").parse::<std::net::IpAddr>();
            if ip.is_ok_and(|ip| ip.is_loopback()) || addr == "localhost" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}
