//! Image-to-bundle: the OCI runtime config (config.json, runtime-spec config.md and
//! config-linux.md) of a container, made from its image's config (OCI image-spec
//! config.md) and the user's `vessel run` flags, with the defaults docker and podman
//! give (docker run reference): the command from Entrypoint and Cmd, the environment,
//! user, capabilities, namespaces, the standard mounts, /etc/hostname, /etc/hosts and
//! /etc/resolv.conf, tmpfs and volumes, resources, devices, masked and read-only paths,
//! and the seccomp profile.

mod devices;
mod mounts;
mod process;
mod resources;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Linux, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, Mount, Process, Root, Spec, User,
};

use crate::error::{Error, Result};
use crate::options::{RunOptions, Seccomp};
use crate::{seccomp_profile, users};
use devices::*;
use mounts::*;
use process::*;
use resources::*;

pub(crate) use process::{available_capabilities, to_spec_caps};
pub use process::{capabilities, command, init_binary, stop_signal, DEFAULT_CAPABILITIES, DEFAULT_PATH, INIT_PATH};

/// `net.ipv4.ping_group_range` for a container with its own network namespace, as
/// podman sets it: every group may open ICMP echo sockets (icmp(7)), so `ping` works
/// without CAP_NET_RAW. The sysctl is per network namespace; the host's is untouched.
pub const PING_GROUP_RANGE: (&str, &str) = ("net.ipv4.ping_group_range", "0 2147483647");

/// `net.ipv4.ip_unprivileged_port_start` for a container with its own network
/// namespace, as docker (20.10+) sets it: any process may bind ports below 1024. Without
/// it a container in a user namespace (the default) could not listen on port 80 of a
/// network namespace the host made, since its root has no CAP_NET_BIND_SERVICE there.
/// Per network namespace; the host's is untouched.
pub const UNPRIVILEGED_PORT_START: (&str, &str) = ("net.ipv4.ip_unprivileged_port_start", "0");

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
    for (i, v) in opts.volumes.iter().enumerate() {
        let shown = format!("{}:{}", v.host.display(), v.container.display());
        let dest = container_path("-v", &shown, &v.container.to_string_lossy())?;
        if !v.host.is_absolute() {
            return Err(Error::BadInput(format!(
                "invalid -v {shown:?}: the host path must be absolute"
            )));
        }
        let source = if crate::rootfs::idmapped_volumes::wanted(v, opts.id_mappings.as_ref()) {
            crate::rootfs::idmapped_volumes::staged_path(input.bundle, i)
        } else {
            v.host.clone()
        };
        user_mounts.push(bind(&source, &dest, v.read_only));
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
    // The host image's /etc overlay before the files bound over its entries.
    mounts.extend(input.extra_mounts.iter().cloned());
    let etc_ro = opts.read_only;
    let host_resolv = fs::read_to_string("/etc/resolv.conf").ok();
    for (name, dest, contents) in [
        ("hostname", "/etc/hostname", format!("{hostname}\n")),
        ("hosts", "/etc/hosts", hosts_file(&hostname)),
        ("resolv.conf", "/etc/resolv.conf", {
            let r = resolv_conf(host_resolv.as_deref());
            // slirp4netns's DNS forwarder first, as podman writes it.
            if crate::network::mode(opts) == crate::network::Mode::Slirp4netns {
                format!("nameserver {}\n{r}", vessel_net::slirp::DNS_ADDR)
            } else {
                r
            }
        }),
    ] {
        let src = write_bundle_file(input.bundle, name, &contents)?;
        mounts.push(bind(&src, Path::new(dest), etc_ro));
    }

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
    if let Some(ids) = &opts.id_mappings {
        // The container's own user namespace, made first by the runtime, with its maps.
        let mut ns = linux.namespaces().clone().unwrap_or_default();
        let mut user = LinuxNamespace::default();
        user.set_typ(LinuxNamespaceType::User);
        ns.insert(0, user);
        linux.set_namespaces(Some(ns));
        let maps = |v: &[crate::options::IdMap]| {
            v.iter()
                .map(|m| {
                    oci_spec::runtime::LinuxIdMappingBuilder::default()
                        .container_id(m.container)
                        .host_id(m.host)
                        .size(m.size)
                        .build()
                        .map_err(|e| Error::BadInput(format!("id map: {e}")))
                })
                .collect::<Result<Vec<_>>>()
        };
        linux.set_uid_mappings(Some(maps(&ids.uid)?));
        linux.set_gid_mappings(Some(maps(&ids.gid)?));
    } else {
        linux.set_uid_mappings(None);
        linux.set_gid_mappings(None);
    }
    let own_netns = matches!(
        crate::network::mode(opts),
        crate::network::Mode::None
            | crate::network::Mode::Bridge(_)
            | crate::network::Mode::Pasta
            | crate::network::Mode::Slirp4netns
    );
    linux.set_sysctl(own_netns.then(|| {
        let (key, value) = PING_GROUP_RANGE;
        // In a user namespace the kernel takes only gids mapped there.
        let value = match &opts.id_mappings {
            Some(ids) => {
                let top = ids
                    .gid
                    .iter()
                    .map(|m| u64::from(m.container) + u64::from(m.size) - 1)
                    .max()
                    .unwrap_or(0)
                    .min(2_147_483_647);
                format!("0 {top}")
            }
            None => crate::rootless::ping_group_range().unwrap_or_else(|| value.to_string()),
        };
        let (port_key, port_value) = UNPRIVILEGED_PORT_START;
        [(key.to_string(), value), (port_key.to_string(), port_value.to_string())].into()
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
