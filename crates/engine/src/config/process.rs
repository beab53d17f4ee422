//! The container's process in config.json: its command (Entrypoint and Cmd), environment,
//! capabilities, hostname check, stop signal and `--init` binary, with docker's and
//! podman's defaults.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Capability;

use crate::error::{Error, IoContext, Result};
use crate::options::RunOptions;

/// The default capability set: podman's (containers.conf `default_capabilities`), which
/// is docker's (docker run reference, "Runtime privilege and Linux capabilities") minus
/// CAP_MKNOD, CAP_NET_RAW and CAP_AUDIT_WRITE. `ping` works without CAP_NET_RAW
/// through ICMP sockets: see [`super::PING_GROUP_RANGE`].
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

/// Every capability, indexed by its number (linux/capability.h; capabilities(7)).
pub(super) const ALL_CAPABILITIES: &[&str] = &[
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

/// `CAP_SYS_ADMIN` from "sys_admin", "CAP_SYS_ADMIN", "Sys_Admin"; "ALL" stays "ALL".
pub(super) fn normalize_cap(c: &str) -> String {
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
pub(super) fn cap_names(flag: &str, names: &[String], available: bool) -> Result<Vec<String>> {
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
pub(super) fn entrypoint_flag(e: &str) -> Vec<String> {
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

pub(super) fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces the entry of the same name, or appends (docker's ReplaceOrAppendEnvValues).
pub(super) fn set_env(env: &mut Vec<String>, entry: String) {
    let key = env_key(&entry).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// What a user's environment entry does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum EnvEntry {
    /// `K=V`, or `K` that the caller's environment has: set K.
    Set(String),
    /// `K` that the caller's environment lacks: unset K, even the image's (docker).
    Unset(String),
}

/// A user entry `K=V`, or `K` (the caller's own value, or unset when the caller has none).
pub(super) fn user_env(entry: &str, source: &str) -> Result<EnvEntry> {
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
pub(super) fn env_file(path: &Path) -> Result<Vec<EnvEntry>> {
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
pub(super) fn apply_env(env: &mut Vec<String>, entry: EnvEntry) {
    match entry {
        EnvEntry::Set(e) => set_env(env, e),
        EnvEntry::Unset(k) => env.retain(|e| env_key(e) != k),
    }
}

/// process.env, docker's way: PATH (default), HOSTNAME and TERM=xterm (with a tty)
/// first, then the image's Env, the env files and `-e`, each replacing entries of the
/// same name (a bare `K` the caller has not set unsets K); HOME from the user's passwd
/// entry ("/" without one) unless set.
pub(super) fn environment(
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
pub(super) fn check_hostname(h: &str) -> Result<()> {
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
pub(super) const INIT_CANDIDATES: &[&str] = &[
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
