//! What a user asks for when making a container: the flags of `vessel run` and
//! `vessel create` (docker's and podman's names), already parsed. Stored with the
//! container's record so `inspect` shows them and `restart` reuses them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `-v HOST:CTR[:ro]`: a bind mount of a host path; `-v NAME:CTR[:ro]`: a named volume
/// ([`crate::volumes`]), bind-mounted from its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Absolute host path (must exist); for a named volume its data directory
    /// (`ROOT/volumes/NAME/_data`), filled in when the container is made (empty before).
    pub host: PathBuf,
    /// The named volume's name, for `-v NAME:CTR`; None for a host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absolute path inside the container.
    pub container: PathBuf,
    /// Mounted read-only (`:ro`).
    pub read_only: bool,
    /// Mounted idmapped with the container's id range (`:idmap`, podman's option):
    /// [`crate::rootfs::idmapped_volumes`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idmap: bool,
}

/// `--security-opt seccomp=...`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// The default profile (docker's and podman's), [`crate::seccomp_profile`].
    #[default]
    Default,
    /// `seccomp=unconfined`: no filter.
    Unconfined,
    /// `seccomp=FILE`: a profile in docker's JSON format, or an OCI `linux.seccomp` object.
    File(PathBuf),
}

/// One line of a uid or gid map (user_namespaces(7), runtime-spec config-linux.md "User
/// namespace mappings"): `size` ids from `container` on inside map to `host` on outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First id inside the container.
    pub container: u32,
    /// First id on the host.
    pub host: u32,
    /// How many ids.
    pub size: u32,
}

/// The host ids a container's range starts at ([`crate::idmap`]): `size` uids from
/// `uid_start` and as many gids from `gid_start`, recorded in the records' `idmaps` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First host uid of the range (root inside the container).
    pub uid_start: u32,
    /// First host gid of the range.
    pub gid_start: u32,
    /// Ids in the range ([`crate::idmap::RANGE_SIZE`]).
    pub size: u32,
}

/// A container's user namespace as made at create: its uid and gid maps, and the range
/// allocated to it (none for `--uidmap`/`--gidmap` or root's `--userns=keep-id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMappings {
    /// `linux.uidMappings`.
    pub uid: Vec<IdMap>,
    /// `linux.gidMappings`.
    pub gid: Vec<IdMap>,
    /// The range taken from the `vessel` user's subordinate ids, when one was.
    pub range: Option<IdRange>,
}

/// Every option of `vessel run`/`vessel create` that shapes the container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// `--name`; a generated name when None.
    pub name: Option<String>,
    /// The image as the user named it (`busybox`, `localhost:5000/x:1`, `host`).
    pub image: String,
    /// `CMD...` after the image: replaces the image's Cmd.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's Entrypoint (an empty string clears it).
    pub entrypoint: Option<String>,
    /// `-e K=V` or `-e K` (then the value is the caller's own, or the entry is dropped).
    pub env: Vec<String>,
    /// `--env-file F`: lines `K=V` (or `K`), `#` comments and blank lines skipped.
    pub env_files: Vec<PathBuf>,
    /// `-v HOST:CTR[:ro]`.
    pub volumes: Vec<Volume>,
    /// `--tmpfs PATH[:OPTIONS]` (options as mount(8): `size=64m,mode=1777`).
    pub tmpfs: Vec<String>,
    /// `-w DIR`: absolute working directory.
    pub workdir: Option<String>,
    /// `-u USER[:GROUP]`: names or numbers, resolved against the image's /etc/passwd and /etc/group.
    pub user: Option<String>,
    /// `--hostname`; the first 12 hex digits of the id when None.
    pub hostname: Option<String>,
    /// `--read-only`: the root file system mounted read-only.
    pub read_only: bool,
    /// `--memory`, in bytes.
    pub memory: Option<i64>,
    /// `--cpus`: CPUs worth of time (1.5 = quota 150000 per period 100000).
    pub cpus: Option<f64>,
    /// `--pids-limit`; -1 or 0 for no limit.
    pub pids_limit: Option<i64>,
    /// `--cap-add` (names with or without `CAP_`, or `ALL`).
    pub cap_add: Vec<String>,
    /// `--cap-drop` (names with or without `CAP_`, or `ALL`).
    pub cap_drop: Vec<String>,
    /// `--security-opt seccomp=...`.
    pub seccomp: Seccomp,
    /// `--userns`: `auto` (a private range of host ids, the default when None), `host`
    /// (the host's ids, no user namespace) or `keep-id` (podman's modes).
    pub userns: Option<String>,
    /// `--uidmap CONTAINER:HOST:SIZE` (repeatable): the uid map as given.
    pub uidmap: Vec<IdMap>,
    /// `--gidmap CONTAINER:HOST:SIZE` (repeatable); the uid map when empty and `--uidmap` is set.
    pub gidmap: Vec<IdMap>,
    /// The user namespace the container was made with (resolved at create from `userns`,
    /// `uidmap`, `gidmap` and `privileged`); None: the host's ids.
    pub id_mappings: Option<IdMappings>,
    /// `--privileged`: every capability, no seccomp, all host devices, no masked or read-only paths.
    pub privileged: bool,
    /// `--init`: a small init (catatonit or tini) as pid 1 that reaps zombies and forwards signals.
    pub init: bool,
    /// `-t`: a pseudo-terminal.
    pub tty: bool,
    /// `-i`: keep stdin open.
    pub interactive: bool,
    /// `--rm`: remove the container when it exits.
    pub rm: bool,
    /// `--cgroup-parent`: the cgroup under which the container's own is made
    /// (`/vessel` when None): its cgroupsPath is `PARENT/ID`.
    pub cgroup_parent: Option<String>,
    /// `--network`: `bridge` (default: the network `vessel`), `none`, `host`,
    /// `container:NAME` or a network's name.
    pub network: Option<String>,
    /// The networks beyond the first (`docker network connect` of a bridge-networked
    /// container, `vessel network connect`): each is one more interface, `eth1`, ...,
    /// attached whenever the container starts ([`crate::network_more`]).
    pub more_networks: Vec<String>,
    /// `-p [IP:]HOSTPORT:CTRPORT[/tcp|udp]` (and `-P`'s, resolved at create).
    pub publish: Vec<vessel_net::PortMapping>,
    /// `-P`: publish every port the image exposes on a free host port.
    pub publish_all: bool,
    /// `--dns`: nameservers for /etc/resolv.conf instead of the host's.
    pub dns: Vec<String>,
    /// `--add-host NAME:IP`: extra /etc/hosts lines.
    pub add_hosts: Vec<String>,
    /// `--ip`: the address on a user network.
    pub ip: Option<String>,
    /// `--mac-address`.
    pub mac: Option<String>,
    /// `--storage-opt KEY=VALUE`, checked ([`crate::quota::parse_storage_opts`]): `size` is
    /// the container's disk quota as the user gave it (`2G`; `vessel update` changes it).
    pub storage_opt: std::collections::BTreeMap<String, String>,
    /// `vessel update --snapshot-schedule`: when `vessel snapshot run-due` takes a
    /// snapshot (`@hourly`, `@daily`, `@weekly` or 5 cron fields, local time); None: never.
    pub snapshot_schedule: Option<String>,
    /// `vessel update --snapshot-expiry`: how long snapshots live (`14d`); applied to
    /// scheduled snapshots and to `snapshot create` without `--expiry`. None: forever.
    pub snapshot_expiry: Option<String>,
    /// When the schedule was set or last took a snapshot (RFC 3339): the schedule is due
    /// once it fires after this time.
    pub snapshot_schedule_from: Option<String>,
    /// `--health-cmd` and the other `--health-*` flags (the Docker API's
    /// `Config.Healthcheck`): run by the monitor ([`crate::health`]).
    pub healthcheck: Option<crate::health::Healthcheck>,
    /// `--label KEY=VALUE` (the Docker API's `Config.Labels`: docker compose finds its
    /// containers by them).
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--network-alias` (the Docker API's `EndpointsConfig.Aliases`: docker compose
    /// gives each container its service's name): more names its peers find it by.
    pub network_aliases: Vec<String>,
}
