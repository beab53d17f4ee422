//! Image-to-bundle: the OCI runtime config (config.json, runtime-spec config.md and
//! config-linux.md) of a container, made from its image's config (OCI image-spec
//! config.md) and the user's `vessel run` flags, with the defaults docker and podman
//! give (docker run reference): the command from Entrypoint and Cmd, the environment,
//! user, capabilities, namespaces, the standard mounts, /etc/hostname, /etc/hosts and
//! /etc/resolv.conf, tmpfs and volumes, resources, devices, masked and read-only paths,
//! and the seccomp profile.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability, Linux, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory,
    LinuxNamespace, LinuxNamespaceType, LinuxPids, LinuxResources, Mount, Process, Root, Spec, User,
};

use crate::error::{Error, IoContext, Result};
use crate::options::{RunOptions, Seccomp};
use crate::{seccomp_profile, users};

/// The default capability set: podman's (containers.conf `default_capabilities`), which
/// is docker's (docker run reference, "Runtime privilege and Linux capabilities") minus
/// CAP_MKNOD, CAP_NET_RAW and CAP_AUDIT_WRITE. `ping` works without CAP_NET_RAW
/// through ICMP sockets: see [`PING_GROUP_RANGE`].
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
];

/// `net.ipv4.ping_group_range` for a container with its own network namespace, as
/// podman sets it: every group may open ICMP echo sockets (icmp(7)), so `ping` works
/// without CAP_NET_RAW. The sysctl is per network namespace; the host's is untouched.
pub const PING_GROUP_RANGE: (&str, &str) = ("net.ipv4.ping_group_range", "0 2147483647");

/// Every capability, indexed by its number (linux/capability.h; capabilities(7)).
const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// PATH when neither the image nor the user sets one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `--init` puts the init binary inside the container.
pub const INIT_PATH: &str = "/run/vessel-init";

/// CFS period for `--cpus`, in microseconds (docker's).
const CPU_PERIOD: u64 = 100_000;

/// The smallest `--memory` docker accepts: 6 MiB.
const MIN_MEMORY: i64 = 6 << 20;

/// docker's masked paths (what `--privileged` lifts): files and directories of /proc and
/// /sys that expose the host.
const MASKED_PATHS: &[&str] = &[
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
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// What [`build`] turns into a config.json.
pub struct BuildInput<'a> {
    /// The container id: 64 hex digits (its first 12 are the default hostname).
    pub id: &'a str,
    /// The user's flags.
    pub opts: &'a RunOptions,
    /// The image's config (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
    pub image_config: &'a ImageConfiguration,
    /// The mounted root file system (absolute): `root.path`.
    pub rootfs: &'a Path,
    /// Where etc/passwd and etc/group are looked up (the rootfs, or "/" for the host image).
    pub users_root: &'a Path,
    /// The bundle directory: [`build`] writes `hostname`, `hosts` and `resolv.conf` here
    /// and bind-mounts them on /etc/hostname, /etc/hosts and /etc/resolv.conf.
    pub bundle: &'a Path,
    /// Mounts the root file system needs (the host image's /usr...), added after the
    /// standard mounts and before tmpfs and volumes.
    pub extra_mounts: Vec<Mount>,
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(source: &Path, dest: &Path, read_only: bool) -> Mount {
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
fn standard_mounts(privileged: bool) -> Vec<Mount> {
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

/// `CAP_SYS_ADMIN` from "sys_admin", "CAP_SYS_ADMIN", "Sys_Admin"; "ALL" stays "ALL".
fn normalize_cap(c: &str) -> String {
    let upper = c.trim().to_ascii_uppercase();
    if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// The capabilities a container can be given here, in number order: those this kernel
/// has (/proc/sys/kernel/cap_last_cap) that are also in our own bounding set (CapBnd of
/// /proc/self/status), as docker's and podman's "all capabilities" are. A root without
/// CAP_SYS_RESOURCE (as on some hosts) cannot hand it on: capset(2) would fail.
pub(crate) fn available_capabilities() -> &'static [&'static str] {
    static AVAILABLE: OnceLock<Vec<&'static str>> = OnceLock::new();
    AVAILABLE.get_or_init(|| {
        let last = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(ALL_CAPABILITIES.len() - 1);
        let bounding = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX);
        ALL_CAPABILITIES
            .iter()
            .enumerate()
            .filter(|(i, _)| *i <= last && bounding & (1u64 << i) != 0)
            .map(|(_, c)| *c)
            .collect()
    })
}

/// Checks and normalizes the names of `--cap-add` or `--cap-drop` (`available`: whether
/// each must be one a container can be given here).
fn cap_names(flag: &str, names: &[String], available: bool) -> Result<Vec<String>> {
    names
        .iter()
        .map(|n| {
            let c = normalize_cap(n);
            let usable = c == "ALL"
                || available_capabilities().contains(&c.as_str())
                || (!available && ALL_CAPABILITIES.contains(&c.as_str()));
            if usable {
                Ok(c)
            } else if ALL_CAPABILITIES.contains(&c.as_str()) {
                Err(Error::BadInput(format!(
                    "invalid {flag} {n:?}: {c} is not available here (not supported by the kernel, or not in vessel's own bounding set)"
                )))
            } else {
                Err(Error::BadInput(format!(
                    "invalid {flag} {n:?}: unknown capability {c} (see capabilities(7); ALL means every one)"
                )))
            }
        })
        .collect()
}

/// The container's capability set (bounding, effective and permitted): docker's default
/// set with `--cap-drop` removed and `--cap-add` added (an added capability wins over
/// the same one dropped; `--cap-add ALL` means every capability except those dropped;
/// `--cap-drop ALL` means only those added), or every capability available with
/// `--privileged` (which ignores the two flags, as docker does). "Available" (for ALL
/// and `--privileged`) means known to the kernel and in vessel's own bounding set, as
/// docker and podman count them. Names are CAP_ names.
///
/// Errors: [`Error::BadInput`] for a name that is no capability, or `--cap-add` of one
/// that is not available here.
pub fn capabilities(opts: &RunOptions) -> Result<Vec<String>> {
    let add = cap_names("--cap-add", &opts.cap_add, true)?;
    let drop = cap_names("--cap-drop", &opts.cap_drop, false)?;
    let all = available_capabilities();
    if opts.privileged {
        return Ok(all.iter().map(|c| c.to_string()).collect());
    }
    let has = |v: &[String], c: &str| v.iter().any(|x| x == c);
    let mut caps: Vec<String> = if has(&add, "ALL") {
        all.iter().filter(|c| !has(&drop, c)).map(|c| c.to_string()).collect()
    } else if has(&drop, "ALL") {
        add.clone()
    } else {
        let mut v: Vec<String> = DEFAULT_CAPABILITIES
            .iter()
            .filter(|c| !has(&drop, c))
            .map(|c| c.to_string())
            .collect();
        v.extend(add.iter().cloned());
        v
    };
    let mut seen = HashSet::new();
    caps.retain(|c| c != "ALL" && seen.insert(c.clone()));
    Ok(caps)
}

/// The spec's capability values for CAP_ names (names oci-spec does not know are left
/// out; every name of [`ALL_CAPABILITIES`] is known to it).
pub(crate) fn to_spec_caps(names: &[String]) -> HashSet<Capability> {
    names
        .iter()
        .filter_map(|n| Capability::from_str(n.strip_prefix("CAP_").unwrap_or(n)).ok())
        .collect()
}

/// `--entrypoint`: one program, or podman's JSON array form (`["/bin/sh","-c"]`); an
/// empty string clears the image's Entrypoint.
fn entrypoint_flag(e: &str) -> Vec<String> {
    if e.is_empty() {
        return Vec::new();
    }
    if e.trim_start().starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(e) {
            return v;
        }
    }
    vec![e.to_string()]
}

/// process.args: Entrypoint + Cmd (docker's rules: the command after the image replaces
/// Cmd; `--entrypoint` replaces Entrypoint and drops the image's Cmd).
///
/// Errors: [`Error::BadInput`] "no command specified" when both are empty.
pub fn command(opts: &RunOptions, image: &ImageConfiguration) -> Result<Vec<String>> {
    let cfg = image.config().as_ref();
    let entrypoint = match &opts.entrypoint {
        Some(e) => entrypoint_flag(e),
        None => cfg.and_then(|c| c.entrypoint().clone()).unwrap_or_default(),
    };
    let cmd = if !opts.command.is_empty() {
        opts.command.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.and_then(|c| c.cmd().clone()).unwrap_or_default()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Error::BadInput(
            "no command specified: the image has no Entrypoint or Cmd; give a command after the image name".into(),
        ));
    }
    Ok(args)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces the entry of the same name, or appends (docker's ReplaceOrAppendEnvValues).
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// What a user's environment entry does.
#[derive(Debug, PartialEq, Eq)]
enum EnvEntry {
    /// `K=V`, or `K` that the caller's environment has: set K.
    Set(String),
    /// `K` that the caller's environment lacks: unset K, even the image's (docker).
    Unset(String),
}

/// A user entry `K=V`, or `K` (the caller's own value, or unset when the caller has none).
fn user_env(entry: &str, source: &str) -> Result<EnvEntry> {
    let key = env_key(entry);
    if key.is_empty() || key.chars().any(char::is_whitespace) {
        return Err(Error::BadInput(format!(
            "invalid environment variable {entry:?} in {source}: use NAME=VALUE or NAME"
        )));
    }
    if entry.contains('=') {
        return Ok(EnvEntry::Set(entry.to_string()));
    }
    Ok(match std::env::var_os(key) {
        Some(v) => EnvEntry::Set(format!("{key}={}", v.to_string_lossy())),
        None => EnvEntry::Unset(key.to_string()),
    })
}

/// Reads `--env-file` lines: `K=V` or `K`, blank lines and `#` comments skipped, leading
/// whitespace (and a byte-order mark) ignored; docker's format: values are taken as they
/// are, without quote processing.
fn env_file(path: &Path) -> Result<Vec<EnvEntry>> {
    let bytes = fs::read(path).at("read the --env-file", path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::BadInput(format!("invalid --env-file {}: it is not UTF-8 text", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(user_env(line, &format!("--env-file {}", path.display()))?);
    }
    Ok(out)
}

/// Applies a user entry to the environment being built.
fn apply_env(env: &mut Vec<String>, entry: EnvEntry) {
    match entry {
        EnvEntry::Set(e) => set_env(env, e),
        EnvEntry::Unset(k) => env.retain(|e| env_key(e) != k),
    }
}

/// process.env, docker's way: PATH (default), HOSTNAME and TERM=xterm (with a tty)
/// first, then the image's Env, the env files and `-e`, each replacing entries of the
/// same name (a bare `K` the caller has not set unsets K); HOME from the user's passwd
/// entry ("/" without one) unless set.
fn environment(
    opts: &RunOptions,
    image: &ImageConfiguration,
    hostname: &str,
    home: Option<&str>,
) -> Result<Vec<String>> {
    let mut env = vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}")];
    if opts.tty {
        env.push("TERM=xterm".into());
    }
    for e in image
        .config()
        .as_ref()
        .and_then(|c| c.env().as_ref())
        .into_iter()
        .flatten()
    {
        if !env_key(e).is_empty() {
            set_env(&mut env, e.clone());
        }
    }
    for f in &opts.env_files {
        for e in env_file(f)? {
            apply_env(&mut env, e);
        }
    }
    for e in &opts.env {
        apply_env(&mut env, user_env(e, "-e")?);
    }
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={}", home.filter(|h| !h.is_empty()).unwrap_or("/")));
    }
    Ok(env)
}

/// A hostname the kernel and resolvers take (RFC 1123 labels, at most 64 bytes).
fn check_hostname(h: &str) -> Result<()> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if h.len() > 64 || !h.split('.').all(label_ok) {
        return Err(Error::BadInput(format!(
            "invalid --hostname {h:?}: use letters, digits, '-' and '.' (at most 64 characters)"
        )));
    }
    Ok(())
}

/// A lexically clean absolute container path for `flag`, not "/" and without "..".
fn container_path(flag: &str, value: &str, p: &str) -> Result<PathBuf> {
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
fn tmpfs_mount(spec: &str) -> Result<Mount> {
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
fn write_bundle_file(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
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
fn hosts_file(hostname: &str) -> String {
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
fn resolv_conf(host: Option<&str>) -> String {
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

/// Whether the host's memory cgroup accounts swap (then `--memory` also limits
/// memory+swap to twice the memory, as docker does; without it docker limits memory
/// alone and so do we).
fn swap_accounting() -> bool {
    use vessel_runtime::cgroups::{hierarchy, Hierarchy, CGROUP_ROOT};
    match hierarchy() {
        Hierarchy::Unified => {
            // The root cgroup has no memory.swap.max: look at ours, then any child.
            let own = fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim_start_matches('/').to_string()))
            });
            let root = Path::new(CGROUP_ROOT);
            if let Some(own) = own.filter(|p| !p.is_empty()) {
                let dir = root.join(own);
                if dir.join("memory.max").exists() {
                    return dir.join("memory.swap.max").exists();
                }
            }
            fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.join("memory.max").exists())
                .is_some_and(|p| p.join("memory.swap.max").exists())
        }
        _ => Path::new(CGROUP_ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists(),
    }
}

/// linux.resources: memory (and memory+swap), CPU quota, pids, and the device rules
/// (deny all, the runtime then adds its default allow list; allow all when privileged).
fn resources(opts: &RunOptions) -> Result<LinuxResources> {
    let mut r = LinuxResources::default();
    if let Some(m) = opts.memory.filter(|m| *m > 0) {
        if m < MIN_MEMORY {
            return Err(Error::BadInput(format!(
                "invalid --memory {m}: the minimum memory limit is 6m"
            )));
        }
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        if swap_accounting() {
            mem.set_swap(m.checked_mul(2));
        }
        r.set_memory(Some(mem));
    }
    if let Some(c) = opts.cpus {
        if !c.is_finite() || c <= 0.0 {
            return Err(Error::BadInput(format!(
                "invalid --cpus {c}: use a positive number of CPUs (1.5)"
            )));
        }
        let mut cpu = LinuxCpu::default();
        // The kernel's smallest quota is 1 ms.
        cpu.set_quota(Some(((c * CPU_PERIOD as f64).round() as i64).max(1000)));
        cpu.set_period(Some(CPU_PERIOD));
        r.set_cpu(Some(cpu));
    }
    if let Some(p) = opts.pids_limit.filter(|p| *p > 0) {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(opts.privileged);
    all.set_access(Some("rwm".into()));
    r.set_devices(Some(vec![all]));
    Ok(r)
}

/// Every character and block device of the host's /dev (for `--privileged`), as runc's
/// `HostDevices` finds them: not under /dev/pts, /dev/shm, /dev/fd, /dev/mqueue and
/// udev's or lxc's private dirs, without /dev/console, symlinks not followed.
fn host_devices() -> Vec<LinuxDevice> {
    const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = fs::symlink_metadata(&path) else { continue };
            let ft = md.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if depth < 8 && !(depth == 0 && SKIP_DIRS.iter().any(|s| name == *s)) {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let mut d = LinuxDevice::default();
            d.set_path(path);
            d.set_typ(typ);
            d.set_major(i64::from(rustix::fs::major(md.rdev())));
            d.set_minor(i64::from(rustix::fs::minor(md.rdev())));
            d.set_file_mode(Some(md.mode() & 0o7777));
            d.set_uid(Some(md.uid()));
            d.set_gid(Some(md.gid()));
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// Builds the container's config.json (runtime-spec 1.2, `ociVersion`
/// [`vessel_runtime::OCI_VERSION`]) from the image config and the user's flags, as
/// docker and podman do; writes the bundle's `hostname`, `hosts` and `resolv.conf`.
///
/// - process: args = Entrypoint + Cmd ([`command`]); env (in this order: PATH,
///   HOSTNAME, TERM with a tty, image Env, env files, `-e` (a bare `K` takes
///   the caller's value, or unsets K when the caller has none), HOME); cwd `-w`, the
///   image's WorkingDir or "/"; the user of `-u` or the image's User ([`users::resolve`]);
///   terminal = `-t`; capabilities ([`capabilities()`]) in bounding, effective and
///   permitted, inheritable and ambient empty; noNewPrivileges false. `--init` runs
///   [`init_binary`], bound read-only at [`INIT_PATH`], as `INIT_PATH -- args...`.
/// - root: `input.rootfs`, read-only with `--read-only`; hostname `--hostname` or the
///   id's first 12 digits.
/// - mounts: /proc, /dev, /dev/pts, /dev/shm (64 MiB), /dev/mqueue, /sys and
///   /sys/fs/cgroup (read-only unless privileged), /etc/hostname, /etc/hosts and
///   /etc/resolv.conf (read-only with `--read-only`), `extra_mounts`, then `--tmpfs` and
///   `-v` together, shallower destinations first; a user mount on the destination of a
///   standard one replaces it.
/// - linux: new pid, mount, ipc, uts, network (empty) and cgroup namespaces; cgroupsPath
///   `/vessel/<id>` (or `--cgroup-parent`'s); resources from `--memory` (memory+swap twice as much where swap is
///   accounted), `--cpus` (quota per 100 ms period) and `--pids-limit`; device rules
///   deny-all (the runtime adds the standard allow list) or, privileged, allow-all with
///   every host device; docker's masked and read-only paths (none when privileged);
///   seccomp: the default profile, none (`seccomp=unconfined`, privileged), or a file.
///
/// Errors: [`Error::BadInput`] for flags that cannot be used (no command, bad
/// capability names, relative `-w`, bad hostname, unknown user, duplicate mount
/// points, memory below 6m, a missing init binary, a bad seccomp file); [`Error::Io`]
/// when the bundle files cannot be written.
pub fn build(input: &BuildInput) -> Result<Spec> {
    let opts = input.opts;
    let image = input.image_config;
    let id = input.id;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::BadInput(format!(
            "invalid container id {id:?}: use letters and digits"
        )));
    }

    // process
    let mut args = command(opts, image)?;
    let hostname = match &opts.hostname {
        Some(h) => {
            check_hostname(h)?;
            h.clone()
        }
        None => id.get(..12).unwrap_or(id).to_string(),
    };
    let image_user = image
        .config()
        .as_ref()
        .and_then(|c| c.user().clone())
        .filter(|u| !u.is_empty());
    let user = users::resolve(input.users_root, opts.user.as_deref().or(image_user.as_deref()))?;
    let env = environment(opts, image, &hostname, user.home.as_deref())?;
    let cwd = match &opts.workdir {
        Some(w) if !w.is_empty() => {
            if !w.starts_with('/') {
                return Err(Error::BadInput(format!(
                    "invalid -w {w:?}: the working directory must be an absolute path"
                )));
            }
            PathBuf::from(w)
        }
        _ => image
            .config()
            .as_ref()
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .map(|w| Path::new("/").join(w))
            .unwrap_or_else(|| PathBuf::from("/")),
    };
    let cap_names = capabilities(opts)?;
    let caps = to_spec_caps(&cap_names);
    let mut pcaps = LinuxCapabilities::default();
    pcaps.set_bounding(Some(caps.clone()));
    pcaps.set_effective(Some(caps.clone()));
    pcaps.set_permitted(Some(caps));
    pcaps.set_inheritable(Some(HashSet::new()));
    pcaps.set_ambient(Some(HashSet::new()));

    let mut spec_user = User::default();
    spec_user.set_uid(user.uid);
    spec_user.set_gid(user.gid);
    spec_user.set_additional_gids((!user.additional_gids.is_empty()).then(|| user.additional_gids.clone()));

    // mounts: everything checked before the bundle files are written
    let mut user_mounts = Vec::new();
    for t in &opts.tmpfs {
        user_mounts.push(tmpfs_mount(t)?);
    }
    for v in &opts.volumes {
        let shown = format!("{}:{}", v.host.display(), v.container.display());
        let dest = container_path("-v", &shown, &v.container.to_string_lossy())?;
        if !v.host.is_absolute() {
            return Err(Error::BadInput(format!(
                "invalid -v {shown:?}: the host path must be absolute"
            )));
        }
        user_mounts.push(bind(&v.host, &dest, v.read_only));
    }
    for (i, m) in user_mounts.iter().enumerate() {
        if user_mounts[..i].iter().any(|o| o.destination() == m.destination()) {
            return Err(Error::BadInput(format!(
                "duplicate mount point {}: give each --tmpfs and -v its own container path",
                m.destination().display()
            )));
        }
    }
    user_mounts.sort_by_key(|m| m.destination().components().count());
    let init = if opts.init { Some(init_binary()?) } else { None };
    let limits = resources(opts)?;
    let seccomp = match &opts.seccomp {
        _ if opts.privileged => None,
        Seccomp::Unconfined => None,
        Seccomp::Default => Some(seccomp_profile::default_profile(&cap_names)),
        Seccomp::File(p) => Some(seccomp_profile::load_file_for(p, &cap_names)?),
    };

    let mut mounts = standard_mounts(opts.privileged);
    let etc_ro = opts.read_only;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").ok();
    for (name, dest, contents) in [
        ("hostname", "/etc/hostname", format!("{hostname}\n")),
        ("hosts", "/etc/hosts", hosts_file(&hostname)),
        ("resolv.conf", "/etc/resolv.conf", resolv_conf(host_resolv.as_deref())),
    ] {
        let src = write_bundle_file(input.bundle, name, &contents)?;
        mounts.push(bind(&src, Path::new(dest), etc_ro));
    }
    mounts.extend(input.extra_mounts.iter().cloned());

    mounts.retain(|m| !user_mounts.iter().any(|u| u.destination() == m.destination()));
    mounts.extend(user_mounts);

    if let Some(init) = init {
        mounts.push(bind(&init, Path::new(INIT_PATH), true));
        args = [INIT_PATH.to_string(), "--".to_string()]
            .into_iter()
            .chain(args)
            .collect();
    }

    let mut process = Process::default();
    process.set_terminal(Some(opts.tty));
    process.set_user(spec_user);
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(cwd);
    process.set_capabilities(Some(pcaps));
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(false));

    // linux
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| {
        let mut n = LinuxNamespace::default();
        n.set_typ(t);
        n
    })
    .collect();
    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    let parent = opts.cgroup_parent.as_deref().unwrap_or("/vessel").trim_end_matches('/');
    linux.set_cgroups_path(Some(PathBuf::from(format!("{parent}/{id}"))));
    linux.set_resources(Some(limits));
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    let own_netns = matches!(
        crate::network::mode(opts),
        crate::network::Mode::None | crate::network::Mode::Bridge(_)
    );
    linux.set_sysctl(own_netns.then(|| {
        let (key, value) = PING_GROUP_RANGE;
        [(key.to_string(), value.to_string())].into()
    }));
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if opts.privileged {
        linux.set_devices(Some(host_devices()));
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        linux.set_devices(None);
        linux.set_masked_paths(Some(strings(MASKED_PATHS)));
        linux.set_readonly_paths(Some(strings(READONLY_PATHS)));
    }
    linux.set_seccomp(seccomp);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(opts.read_only));

    let mut spec = Spec::default();
    spec.set_version(vessel_runtime::OCI_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(Some(hostname));
    spec.set_domainname(None);
    spec.set_mounts(Some(mounts));
    spec.set_annotations(None);
    spec.set_hooks(None);
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The signal that stops a container: the image's StopSignal (a name like "SIGQUIT" or
/// "QUIT", "RTMIN+3", or a number), SIGTERM when it has none or it cannot be parsed
/// (image-spec config.md "StopSignal"; `docker stop`). Not part of config.json: the
/// engine sends it.
pub fn stop_signal(image_config: &ImageConfiguration) -> i32 {
    image_config
        .config()
        .as_ref()
        .and_then(|c| c.stop_signal().as_deref())
        .and_then(|s| vessel_runtime::signal::parse(s.trim()).ok())
        .unwrap_or(libc::SIGTERM)
}

/// Where `--init` binaries are looked for, best first: catatonit (statically linked in
/// Debian's package `catatonit`), then tini; the static tini before the dynamic one,
/// which needs a C library inside the image.
const INIT_CANDIDATES: &[&str] = &[
    "/usr/bin/catatonit",
    "/usr/libexec/podman/catatonit",
    "/usr/libexec/catatonit/catatonit",
    "/usr/bin/tini-static",
    "/usr/bin/docker-init",
    "/usr/bin/tini",
];

/// The init binary for `--init`: catatonit or tini, both of which, run as pid 1 with
/// `-- COMMAND...`, start the command, forward signals to it, reap zombies and exit with
/// its status.
///
/// Errors: [`Error::BadInput`] naming the package to install when none is found.
pub fn init_binary() -> Result<PathBuf> {
    INIT_CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            Error::BadInput(
                "--init needs catatonit or tini, and neither is installed: install the package catatonit (apt-get install catatonit)"
                    .into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Volume;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    struct Fixture {
        _dir: tempfile::TempDir,
        rootfs: PathBuf,
        bundle: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        let bundle = dir.path().join("bundle");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::create_dir_all(&bundle).unwrap();
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        fs::write(rootfs.join("etc/group"), "root:x:0:\nwheel:x:10:root\napp:x:1000:\n").unwrap();
        Fixture {
            _dir: dir,
            rootfs,
            bundle,
        }
    }

    fn image(config: &str) -> ImageConfiguration {
        serde_json::from_str(&format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"config":{config}}}"#
        ))
        .unwrap()
    }

    fn build_with(f: &Fixture, opts: &RunOptions, img: &ImageConfiguration) -> Result<Spec> {
        build(&BuildInput {
            id: ID,
            opts,
            image_config: img,
            rootfs: &f.rootfs,
            users_root: &f.rootfs,
            bundle: &f.bundle,
            extra_mounts: Vec::new(),
        })
    }

    fn args(s: &Spec) -> Vec<String> {
        s.process().as_ref().unwrap().args().clone().unwrap()
    }

    fn env(s: &Spec) -> Vec<String> {
        s.process().as_ref().unwrap().env().clone().unwrap()
    }

    fn caps(s: &Spec) -> HashSet<Capability> {
        let c = s.process().as_ref().unwrap().capabilities().as_ref().unwrap();
        assert_eq!(c.bounding(), c.effective());
        assert_eq!(c.bounding(), c.permitted());
        assert_eq!(c.inheritable().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(c.ambient().as_ref().map(|s| s.len()), Some(0));
        c.bounding().clone().unwrap()
    }

    fn mount_at<'a>(s: &'a Spec, dest: &str) -> Option<&'a Mount> {
        s.mounts().iter().flatten().find(|m| m.destination() == Path::new(dest))
    }

    fn opts(f: impl FnOnce(&mut RunOptions)) -> RunOptions {
        let mut o = RunOptions {
            image: "test".into(),
            ..Default::default()
        };
        f(&mut o);
        o
    }

    #[test]
    fn entrypoint_and_cmd() {
        let f = fixture();
        let img = image(r#"{"Entrypoint":["/ep","-x"],"Cmd":["a","b"]}"#);
        let run = |o: RunOptions| build_with(&f, &o, &img).map(|s| args(&s));
        assert_eq!(run(opts(|_| {})).unwrap(), ["/ep", "-x", "a", "b"]);
        assert_eq!(run(opts(|o| o.command = vec!["c".into()])).unwrap(), ["/ep", "-x", "c"]);
        assert_eq!(run(opts(|o| o.entrypoint = Some("/new".into()))).unwrap(), ["/new"]);
        assert_eq!(
            run(opts(|o| {
                o.entrypoint = Some("/new".into());
                o.command = vec!["c".into()];
            }))
            .unwrap(),
            ["/new", "c"]
        );
        assert_eq!(
            run(opts(|o| {
                o.entrypoint = Some(String::new());
                o.command = vec!["sh".into()];
            }))
            .unwrap(),
            ["sh"]
        );
        assert_eq!(
            run(opts(|o| o.entrypoint = Some(r#"["/bin/sh","-c"]"#.into()))).unwrap(),
            ["/bin/sh", "-c"]
        );
        let e = run(opts(|o| o.entrypoint = Some(String::new()))).unwrap_err();
        assert!(
            matches!(&e, Error::BadInput(m) if m.starts_with("no command specified")),
            "{e}"
        );

        let only_cmd = image(r#"{"Cmd":["/bin/sh"]}"#);
        let s = build_with(&f, &opts(|_| {}), &only_cmd).unwrap();
        assert_eq!(args(&s), ["/bin/sh"]);
        let empty = image("{}");
        assert!(build_with(&f, &opts(|_| {}), &empty).is_err());
        let s = build_with(&f, &opts(|o| o.command = vec!["true".into()]), &empty).unwrap();
        assert_eq!(args(&s), ["true"]);
    }

    #[test]
    fn defaults() {
        let f = fixture();
        let s = build_with(&f, &opts(|o| o.command = vec!["sh".into()]), &image("{}")).unwrap();
        assert_eq!(s.version(), vessel_runtime::OCI_VERSION);
        assert_eq!(s.hostname().as_deref(), Some("0123456789ab"));
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.terminal(), Some(false));
        assert_eq!(p.no_new_privileges(), Some(false));
        assert!(p.rlimits().is_none());
        assert_eq!((p.user().uid(), p.user().gid()), (0, 0));
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[10][..]));
        let want: HashSet<Capability> = DEFAULT_CAPABILITIES
            .iter()
            .map(|c| Capability::from_str(&c[4..]).unwrap())
            .collect();
        assert_eq!(caps(&s), want);
        let root = s.root().as_ref().unwrap();
        assert_eq!(root.path(), &f.rootfs);
        assert_eq!(root.readonly(), Some(false));

        let linux = s.linux().as_ref().unwrap();
        let ns: Vec<_> = linux.namespaces().as_ref().unwrap().iter().map(|n| n.typ()).collect();
        for t in [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Cgroup,
        ] {
            assert!(ns.contains(&t), "{t:?}");
        }
        assert!(!ns.contains(&LinuxNamespaceType::User));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new(&format!("/vessel/{ID}")))
        );
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/kcore"));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p == "/proc/sys"));
        assert!(linux.devices().is_none());
        let r = linux.resources().as_ref().unwrap();
        assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
        let dev = &r.devices().as_ref().unwrap()[0];
        assert!(!dev.allow() && dev.access().as_deref() == Some("rwm"));
        let sc = linux.seccomp().as_ref().unwrap();
        assert_eq!(sc.default_errno_ret(), Some(1));

        for (dest, typ) in [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
            ("/sys/fs/cgroup", "cgroup"),
            ("/etc/hostname", "bind"),
            ("/etc/hosts", "bind"),
            ("/etc/resolv.conf", "bind"),
        ] {
            let m = mount_at(&s, dest).unwrap_or_else(|| panic!("no mount at {dest}"));
            assert_eq!(m.typ().as_deref(), Some(typ), "{dest}");
        }
        assert!(mount_at(&s, "/sys")
            .unwrap()
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));
        let hosts = mount_at(&s, "/etc/hosts").unwrap();
        assert_eq!(hosts.source().as_deref(), Some(f.bundle.join("hosts").as_path()));
        assert!(!hosts.options().as_ref().unwrap().contains(&"ro".to_string()));
        assert_eq!(fs::read_to_string(f.bundle.join("hostname")).unwrap(), "0123456789ab\n");
        let h = fs::read_to_string(f.bundle.join("hosts")).unwrap();
        assert!(
            h.starts_with("127.0.0.1\tlocalhost\n") && h.contains("\t0123456789ab\n"),
            "{h}"
        );
        assert!(fs::read_to_string(f.bundle.join("resolv.conf"))
            .unwrap()
            .contains("nameserver"));

        // The result is a config the runtime takes.
        fs::write(f.bundle.join("config.json"), serde_json::to_vec(&s).unwrap()).unwrap();
        let back = vessel_runtime::spec::load(&f.bundle).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn environment_precedence() {
        let f = fixture();
        let dir = tempfile::tempdir().unwrap();
        let envfile = dir.path().join("env");
        fs::write(
            &envfile,
            "\u{feff}# comment\n\nB=from-file\n  C=file\nVESSEL_CFG_TEST_UNSET_VAR\nVESSEL_CFG_TEST_FILE_VAR\nSPACES= a b \n",
        )
        .unwrap();
        std::env::set_var("VESSEL_CFG_TEST_FILE_VAR", "caller-file");
        std::env::set_var("VESSEL_CFG_TEST_CLI_VAR", "caller-cli");
        let img = image(r#"{"Cmd":["sh"],"Env":["PATH=/img/bin","A=image","B=image","C=image"]}"#);
        let o = opts(|o| {
            o.env_files = vec![envfile.clone()];
            o.env = vec![
                "C=cli".into(),
                "D=cli".into(),
                "VESSEL_CFG_TEST_CLI_VAR".into(),
                "VESSEL_CFG_TEST_UNSET_VAR".into(),
                "EMPTY=".into(),
                "A".into(),
            ];
            o.tty = true;
            o.user = Some("app".into());
        });
        let e = env(&build_with(&f, &o, &img).unwrap());
        assert_eq!(
            e,
            [
                "PATH=/img/bin",
                "HOSTNAME=0123456789ab",
                "TERM=xterm",
                "B=from-file",
                "C=cli",
                "VESSEL_CFG_TEST_FILE_VAR=caller-file",
                "SPACES= a b ",
                "D=cli",
                "VESSEL_CFG_TEST_CLI_VAR=caller-cli",
                "EMPTY=",
                "HOME=/home/app",
            ]
        );

        // Defaults: PATH added, no TERM without a tty, HOME of root; -e overrides HOSTNAME and HOME.
        let e = env(&build_with(&f, &opts(|o| o.command = vec!["sh".into()]), &image("{}")).unwrap());
        assert_eq!(
            e,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=0123456789ab".into(),
                "HOME=/root".into()
            ]
        );
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.env = vec!["HOSTNAME=h".into(), "HOME=/x".into()];
            o.user = Some("4242".into());
        });
        let e = env(&build_with(&f, &o, &image("{}")).unwrap());
        assert!(
            e.contains(&"HOSTNAME=h".to_string()) && e.contains(&"HOME=/x".to_string()),
            "{e:?}"
        );
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.user = Some("4242".into());
        });
        assert!(env(&build_with(&f, &o, &image("{}")).unwrap()).contains(&"HOME=/".to_string()));

        for bad in ["=x", "A B=c"] {
            let o = opts(|o| {
                o.command = vec!["sh".into()];
                o.env = vec![bad.into()];
            });
            let e = build_with(&f, &o, &image("{}")).unwrap_err();
            assert!(
                matches!(&e, Error::BadInput(m) if m.contains("invalid environment variable")),
                "{e}"
            );
        }
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.env_files = vec![dir.path().join("missing")];
        });
        assert!(matches!(build_with(&f, &o, &image("{}")), Err(Error::Io { .. })));
    }

    #[test]
    fn user_and_workdir() {
        let f = fixture();
        let img = image(r#"{"Cmd":["sh"],"User":"app","WorkingDir":"/srv"}"#);
        let s = build_with(&f, &opts(|_| {}), &img).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1000));
        assert!(p.user().additional_gids().is_none());
        assert_eq!(p.cwd(), Path::new("/srv"));
        let o = opts(|o| {
            o.user = Some("0:10".into());
            o.workdir = Some("/tmp".into());
        });
        let s = build_with(&f, &o, &img).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!((p.user().uid(), p.user().gid()), (0, 10));
        assert_eq!(p.cwd(), Path::new("/tmp"));
        let e = build_with(&f, &opts(|o| o.workdir = Some("tmp".into())), &img).unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = build_with(&f, &opts(|o| o.user = Some("nobody".into())), &img).unwrap_err();
        assert!(e.to_string().contains("unable to find user nobody"), "{e}");
        let e = build_with(&f, &opts(|o| o.hostname = Some("bad_name".into())), &img).unwrap_err();
        assert!(e.to_string().contains("--hostname"), "{e}");
        let s = build_with(&f, &opts(|o| o.hostname = Some("web-1.example".into())), &img).unwrap();
        assert_eq!(s.hostname().as_deref(), Some("web-1.example"));
    }

    #[test]
    fn ping_group_range_only_in_an_own_network_namespace() {
        let f = fixture();
        let sysctl = |net: Option<&str>| {
            let o = opts(|o| {
                o.command = vec!["sh".into()];
                o.network = net.map(String::from);
            });
            let s = build_with(&f, &o, &image("{}")).unwrap();
            s.linux().as_ref().unwrap().sysctl().clone().unwrap_or_default()
        };
        for net in [None, Some("none"), Some("web")] {
            assert_eq!(
                sysctl(net).get("net.ipv4.ping_group_range").map(String::as_str),
                Some("0 2147483647"),
                "{net:?}"
            );
        }
        for net in ["host", "container:other"] {
            assert!(sysctl(Some(net)).is_empty(), "{net}");
        }
        for c in ["CAP_NET_RAW", "CAP_MKNOD", "CAP_AUDIT_WRITE"] {
            assert!(!DEFAULT_CAPABILITIES.contains(&c), "{c}");
        }
    }

    #[test]
    fn capability_flags() {
        let base = |f: &dyn Fn(&mut RunOptions)| {
            let mut o = RunOptions::default();
            f(&mut o);
            capabilities(&o)
        };
        let c = base(&|o| {
            o.cap_add = vec!["sys_admin".into(), "CAP_NET_ADMIN".into(), "Sys_Time".into()];
            o.cap_drop = vec!["CAP_CHOWN".into(), "net_raw".into()];
        })
        .unwrap();
        assert!(c.contains(&"CAP_SYS_ADMIN".into()) && c.contains(&"CAP_NET_ADMIN".into()));
        assert!(c.contains(&"CAP_SYS_TIME".into()) && c.contains(&"CAP_KILL".into()));
        assert!(!c.contains(&"CAP_CHOWN".into()) && !c.contains(&"CAP_NET_RAW".into()));
        // Added and dropped: the add wins (docker).
        let c = base(&|o| {
            o.cap_add = vec!["CHOWN".into()];
            o.cap_drop = vec!["chown".into()];
        })
        .unwrap();
        assert_eq!(c.iter().filter(|x| *x == "CAP_CHOWN").count(), 1);
        let c = base(&|o| {
            o.cap_drop = vec!["all".into()];
            o.cap_add = vec!["kill".into()];
        })
        .unwrap();
        assert_eq!(c, ["CAP_KILL"]);
        let c = base(&|o| {
            o.cap_add = vec!["ALL".into()];
            o.cap_drop = vec!["SYS_ADMIN".into()];
        })
        .unwrap();
        assert_eq!(c.len(), available_capabilities().len() - 1);
        assert!(!c.contains(&"CAP_SYS_ADMIN".into()));
        for (add, drop) in [(vec!["CAP_FOO"], vec![]), (vec![], vec!["bogus"])] {
            let e = base(&|o| {
                o.cap_add = add.iter().map(|s| s.to_string()).collect();
                o.cap_drop = drop.iter().map(|s| s.to_string()).collect();
            })
            .unwrap_err();
            assert!(
                matches!(&e, Error::BadInput(m) if m.contains("unknown capability")),
                "{e}"
            );
        }

        // A capability vessel itself lacks cannot be added (capset would fail at start).
        if let Some(missing) = ALL_CAPABILITIES.iter().find(|c| !available_capabilities().contains(c)) {
            let e = base(&|o| o.cap_add = vec![missing.to_string()]).unwrap_err();
            assert!(e.to_string().contains("not available here"), "{e}");
            // Dropping it is fine.
            base(&|o| o.cap_drop = vec![missing.to_string()]).unwrap();
        }

        // Through build: the seccomp profile follows the bounding set.
        let f = fixture();
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.cap_add = vec!["SYS_ADMIN".into()];
            o.cap_drop = vec!["MKNOD".into()];
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        let c = caps(&s);
        assert!(c.contains(&Capability::SysAdmin) && !c.contains(&Capability::Mknod));
        let sc = s.linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert!(sc
            .syscalls()
            .iter()
            .flatten()
            .any(|r| r.names().iter().any(|n| n == "mount")));
    }

    #[test]
    fn privileged() {
        let f = fixture();
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.privileged = true;
            o.cap_drop = vec!["SYS_ADMIN".into()];
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        assert_eq!(caps(&s).len(), available_capabilities().len());
        let linux = s.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().is_none() && linux.readonly_paths().is_none());
        let devices = linux.devices().as_ref().unwrap();
        let null = devices.iter().find(|d| d.path() == Path::new("/dev/null")).unwrap();
        assert_eq!((null.typ(), null.major(), null.minor()), (LinuxDeviceType::C, 1, 3));
        assert!(!devices
            .iter()
            .any(|d| d.path().starts_with("/dev/pts") || d.path() == Path::new("/dev/console")));
        let rule = &linux.resources().as_ref().unwrap().devices().as_ref().unwrap()[0];
        assert!(rule.allow());
        assert!(!mount_at(&s, "/sys")
            .unwrap()
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));
        assert!(!mount_at(&s, "/sys/fs/cgroup")
            .unwrap()
            .options()
            .as_ref()
            .unwrap()
            .contains(&"ro".to_string()));

        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.seccomp = Seccomp::Unconfined;
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        assert!(s.linux().as_ref().unwrap().seccomp().is_none());
    }

    #[test]
    fn mounts_read_only_tmpfs_volumes() {
        let f = fixture();
        let host = tempfile::tempdir().unwrap();
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.read_only = true;
            o.tmpfs = vec!["/data/cache:size=1m,exec".into(), "/dev/shm:size=128m".into()];
            o.volumes = vec![
                Volume {
                    host: host.path().to_path_buf(),
                    container: "/data".into(),
                    read_only: false,
                },
                Volume {
                    host: host.path().to_path_buf(),
                    container: "/etc/resolv.conf".into(),
                    read_only: true,
                },
            ];
        });
        let mut extra = Mount::default();
        extra.set_destination("/usr".into());
        extra.set_typ(Some("bind".into()));
        extra.set_source(Some("/usr".into()));
        let s = build(&BuildInput {
            id: ID,
            opts: &o,
            image_config: &image("{}"),
            rootfs: &f.rootfs,
            users_root: &f.rootfs,
            bundle: &f.bundle,
            extra_mounts: vec![extra],
        })
        .unwrap();
        assert_eq!(s.root().as_ref().unwrap().readonly(), Some(true));
        let ro = |dest: &str| {
            mount_at(&s, dest)
                .unwrap()
                .options()
                .as_ref()
                .unwrap()
                .contains(&"ro".to_string())
        };
        assert!(ro("/etc/hosts") && ro("/etc/hostname"));
        let dests: Vec<&Path> = s.mounts().iter().flatten().map(|m| m.destination().as_path()).collect();
        let pos = |d: &str| dests.iter().position(|x| *x == Path::new(d)).unwrap();
        assert!(pos("/etc/hosts") < pos("/usr") && pos("/usr") < pos("/data"));
        assert!(pos("/data") < pos("/data/cache"), "{dests:?}");
        // User mounts replace the standard ones at the same place.
        assert_eq!(dests.iter().filter(|d| **d == Path::new("/dev/shm")).count(), 1);
        assert_eq!(dests.iter().filter(|d| **d == Path::new("/etc/resolv.conf")).count(), 1);
        let shm = mount_at(&s, "/dev/shm").unwrap();
        assert_eq!(
            shm.options().as_deref().unwrap(),
            ["nosuid", "nodev", "noexec", "size=128m"]
        );
        let cache = mount_at(&s, "/data/cache").unwrap();
        assert_eq!(
            cache.options().as_deref().unwrap(),
            ["nosuid", "nodev", "noexec", "size=1m", "exec"]
        );
        let data = mount_at(&s, "/data").unwrap();
        assert_eq!(data.source().as_deref(), Some(host.path()));
        assert_eq!(data.options().as_deref().unwrap(), ["rbind", "rprivate"]);
        let resolv = mount_at(&s, "/etc/resolv.conf").unwrap();
        assert_eq!(resolv.source().as_deref(), Some(host.path()));
        assert_eq!(resolv.options().as_deref().unwrap(), ["rbind", "rprivate", "ro"]);

        for (tmpfs, vol, want) in [
            (vec!["/a", "/a"], None, "duplicate mount point /a"),
            (vec!["/a"], Some("/a"), "duplicate mount point /a"),
            (vec!["rel"], None, "--tmpfs"),
            (vec!["/"], None, "--tmpfs"),
            (vec![], Some("/x/../y"), "-v"),
        ] {
            let o = opts(|o| {
                o.command = vec!["sh".into()];
                o.tmpfs = tmpfs.iter().map(|s| s.to_string()).collect();
                o.volumes = vol
                    .iter()
                    .map(|c| Volume {
                        host: host.path().to_path_buf(),
                        container: c.into(),
                        read_only: false,
                    })
                    .collect();
            });
            let e = build_with(&f, &o, &image("{}")).unwrap_err();
            assert!(matches!(&e, Error::BadInput(m) if m.contains(want)), "{want}: {e}");
        }
    }

    #[test]
    fn init() {
        let f = fixture();
        let o = opts(|o| {
            o.command = vec!["sleep".into(), "1".into()];
            o.init = true;
        });
        match init_binary() {
            Ok(bin) => {
                let s = build_with(&f, &o, &image(r#"{"Entrypoint":["/ep"]}"#)).unwrap();
                assert_eq!(args(&s), [INIT_PATH, "--", "/ep", "sleep", "1"]);
                let m = mount_at(&s, INIT_PATH).unwrap();
                assert_eq!(m.source().as_deref(), Some(bin.as_path()));
                assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
                assert_eq!(s.mounts().as_ref().unwrap().last(), Some(m));
            }
            Err(e) => {
                assert!(e.to_string().contains("catatonit"), "{e}");
                assert!(build_with(&f, &o, &image("{}")).is_err());
            }
        }
    }

    #[test]
    fn resource_limits() {
        let f = fixture();
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.memory = Some(512 << 20);
            o.cpus = Some(1.5);
            o.pids_limit = Some(100);
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
        let m = r.memory().unwrap();
        assert_eq!(m.limit(), Some(512 << 20));
        assert_eq!(m.swap(), swap_accounting().then_some(1 << 30));
        let c = r.cpu().as_ref().unwrap();
        assert_eq!((c.quota(), c.period()), (Some(150_000), Some(100_000)));
        assert_eq!(r.pids().unwrap().limit(), 100);
        // Resource values pass the runtime's checks.
        vessel_runtime::cgroups::limits::validate(&r).unwrap();

        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.memory = Some(1 << 20);
        });
        let e = build_with(&f, &o, &image("{}")).unwrap_err();
        assert!(e.to_string().contains("minimum memory"), "{e}");
        let o = opts(|o| {
            o.command = vec!["sh".into()];
            o.memory = Some(0);
            o.pids_limit = Some(-1);
        });
        let s = build_with(&f, &o, &image("{}")).unwrap();
        let r = s.linux().as_ref().unwrap().resources().clone().unwrap();
        assert!(r.memory().is_none() && r.pids().is_none());
    }

    #[test]
    fn resolv_conf_filters_loopback() {
        let host = "# generated\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\noptions edns0\n";
        assert_eq!(
            resolv_conf(Some(host)),
            "# generated\nsearch example.com\nnameserver 10.0.0.2\noptions edns0\n"
        );
        assert_eq!(
            resolv_conf(Some("nameserver 127.0.0.1\n")),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(None), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn stop_signals() {
        assert_eq!(stop_signal(&image("{}")), libc::SIGTERM);
        assert_eq!(stop_signal(&image(r#"{"StopSignal":"SIGQUIT"}"#)), libc::SIGQUIT);
        assert_eq!(stop_signal(&image(r#"{"StopSignal":"usr1"}"#)), libc::SIGUSR1);
        assert_eq!(stop_signal(&image(r#"{"StopSignal":"9"}"#)), 9);
        assert_eq!(stop_signal(&image(r#"{"StopSignal":"RTMIN+3"}"#)), libc::SIGRTMIN() + 3);
        assert_eq!(stop_signal(&image(r#"{"StopSignal":"NOPE"}"#)), libc::SIGTERM);
        let no_config: ImageConfiguration =
            serde_json::from_str(r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
                .unwrap();
        assert_eq!(stop_signal(&no_config), libc::SIGTERM);
    }
}
