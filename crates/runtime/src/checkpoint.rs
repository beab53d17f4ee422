//! Checkpoint and restore of a container through CRIU's command line (criu(8)), the
//! way runc and crun drive it: the runtime hands CRIU the mounts, cgroups and
//! namespaces it made. Bind mounts of the config and the container's cgroup mounts are
//! external mounts (`--external mnt[...]` at dump, `--ext-mount-map` at restore); a
//! network or pid namespace joined by path is an external namespace (`extRootNetNS`,
//! `extRootPidNS`) that restore hands back with `--inherit-fd`; the init's stdio, when
//! it is a pipe or a host file, is recorded in `descriptors.json` and reconnected to
//! the restoring process's stdio with `--inherit-fd`. Restore re-enters the state
//! machine of [`crate::container`]: a new state dir with the restored init's pid.
//!
//! Restore runs CRIU in a private mount namespace of its own, where the rootfs is
//! bind-mounted at `<state dir>/criu-root`: whatever CRIU mounts there (the root, its
//! `.criu.cgyard.*` cgroup yards) goes with that namespace when CRIU exits, even when
//! it is killed, and nothing of it reaches the host's mount table.

mod criu;
mod lazy;
mod mounts;
mod restore;

pub use criu::{criu_path, log_errors, require_feature, PRIVATE_CRIU};
pub use lazy::{require_lazy_dump, LAZY_PIPE_BYTES};
pub use mounts::EXTERNAL_MOUNTS;
pub use restore::restore;

use std::ffi::OsString;
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::{self, Hierarchy, CGROUP_ROOT};
use crate::container::Container;
use crate::error::{Context, Error, Result};
use crate::state::Status;

use criu::Run;

/// Name of the file in the image dir that says what the init's fds 0, 1 and 2 were:
/// a JSON array of three CRIU keys (`pipe:[INODE]`, `file[MNT_ID:INODE]` or
/// `tty[RDEV:DEV]` in hex), or `""` for one that restore need not reconnect.
pub const DESCRIPTORS: &str = "descriptors.json";
/// CRIU's log of a dump or pre-dump, in the work dir.
pub const DUMP_LOG: &str = "dump.log";
/// CRIU's log of a restore, in the work dir.
pub const RESTORE_LOG: &str = "restore.log";
/// The key of an external network namespace (as runc and crun name it).
const EXT_NETNS: &str = "extRootNetNS";
/// The key of an external pid namespace.
const EXT_PIDNS: &str = "extRootPidNS";

/// CRIU's `--manage-cgroups` modes (criu(8)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CgroupMode {
    /// Restore cgroup properties only of cgroups CRIU creates (runc's default).
    #[default]
    Soft,
    /// Restore every property.
    Full,
    /// Fail when a cgroup differs.
    Strict,
    /// Leave cgroups alone.
    Ignore,
}

impl std::str::FromStr for CgroupMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "soft" => Ok(CgroupMode::Soft),
            "full" => Ok(CgroupMode::Full),
            "strict" => Ok(CgroupMode::Strict),
            "ignore" => Ok(CgroupMode::Ignore),
            _ => Err(Error::Invalid(format!(
                "--manage-cgroups-mode {s:?}: use soft, full, strict or ignore"
            ))),
        }
    }
}

impl CgroupMode {
    fn arg(self) -> &'static str {
        match self {
            CgroupMode::Soft => "--manage-cgroups=soft",
            CgroupMode::Full => "--manage-cgroups=full",
            CgroupMode::Strict => "--manage-cgroups=strict",
            CgroupMode::Ignore => "--manage-cgroups=ignore",
        }
    }
}

/// Options of `checkpoint` (runc's flags, runc-checkpoint(8)).
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// Where CRIU writes its images (`--image-path`); made if missing.
    pub image_path: PathBuf,
    /// Where CRIU writes its log (`--work-path`); the image path when None.
    pub work_path: Option<PathBuf>,
    /// Keep the container running after the dump.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Allow external unix sockets.
    pub ext_unix_sk: bool,
    /// The container is a shell job (its tty is the caller's).
    pub shell_job: bool,
    /// Dump file locks.
    pub file_locks: bool,
    /// Only dump memory, tracking changes (needs soft-dirty bits in the kernel).
    pub pre_dump: bool,
    /// Images of an earlier pre-dump to diff against (`--prev-images-dir`).
    pub parent_path: Option<PathBuf>,
    /// Send pages to a CRIU page server at ADDR:PORT (`criu page-server`); with
    /// `lazy_pages`, the address the dump itself listens on for `criu lazy-pages`.
    pub page_server: Option<String>,
    /// How CRIU handles cgroups.
    pub manage_cgroups_mode: CgroupMode,
    /// Namespaces to dump empty (`--empty-ns net`).
    pub empty_ns: Vec<String>,
    /// An fd CRIU writes a byte to when lazy pages are ready to be served.
    pub status_fd: Option<i32>,
    /// Leave memory pages to be fetched by a lazy-pages daemon (userfaultfd): the dump
    /// serves them on `page_server` (required) and returns once the restoring side's
    /// `criu lazy-pages` has taken them all.
    pub lazy_pages: bool,
}

/// Options of `restore` (runc's flags, runc-restore(8)).
#[derive(Debug, Default)]
pub struct RestoreOptions {
    /// CRIU's images (`--image-path`).
    pub image_path: PathBuf,
    /// Where CRIU writes its log; the image path when None.
    pub work_path: Option<PathBuf>,
    /// Restore established TCP connections.
    pub tcp_established: bool,
    /// Allow external unix sockets.
    pub ext_unix_sk: bool,
    /// The container is a shell job.
    pub shell_job: bool,
    /// Restore file locks.
    pub file_locks: bool,
    /// How CRIU handles cgroups.
    pub manage_cgroups_mode: CgroupMode,
    /// Memory pages come from a lazy-pages daemon.
    pub lazy_pages: bool,
    /// Accepted for runc compatibility: CRIU's restore sets up the root itself.
    pub no_pivot: bool,
    /// A connected console socket (`--console-socket`), for a container with a
    /// terminal: restore makes a new pty, sends its master there (as runc sends the
    /// master CRIU makes for it) and gives CRIU its slave for the dumped one.
    pub console: Option<OwnedFd>,
}

/// The namespaces of a config joined by path that CRIU must treat as external: (type,
/// path, key).
fn external_namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, PathBuf, &'static str)> {
    let Some(nss) = spec.linux().as_ref().and_then(|l| l.namespaces().clone()) else {
        return vec![];
    };
    nss.iter()
        .filter_map(|ns| {
            let key = match ns.typ() {
                LinuxNamespaceType::Network => EXT_NETNS,
                LinuxNamespaceType::Pid => EXT_PIDNS,
                _ => return None,
            };
            ns.path().clone().map(|p| (ns.typ(), p, key))
        })
        .collect()
}

/// Whether a config mount is a bind mount (type `bind`, or a `bind`/`rbind` option).
fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

/// The container-side mount points of the host's cgroup hierarchies as the runtime
/// bind-mounts them into a container (`/sys/fs/cgroup/<name>`, or `/sys/fs/cgroup`
/// itself on a unified host), with the host directory of `cgroup_path` in each.
fn cgroup_binds(cgroup_path: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    if cgroups::hierarchy() == Hierarchy::Unified {
        return Ok(vec![(PathBuf::from(CGROUP_ROOT), Path::new(CGROUP_ROOT).join(rel))]);
    }
    Ok(crate::rootfs::read_mountinfo()?
        .into_iter()
        .filter(|m| matches!(m.fstype.as_str(), "cgroup" | "cgroup2"))
        .filter_map(|m| {
            let p = PathBuf::from(&m.mount_point);
            (p.parent() == Some(Path::new(CGROUP_ROOT))).then(|| (p.clone(), p.join(rel)))
        })
        .collect())
}

/// The mount ids visible in a process's mount namespace.
fn mount_ids(pid: i32) -> Result<Vec<u64>> {
    let path = format!("/proc/{pid}/mountinfo");
    let text = fs::read_to_string(&path).ctx(|| format!("read {path}"))?;
    Ok(text.lines().filter_map(|l| l.split(' ').next()?.parse().ok()).collect())
}

/// The CRIU key of each of the init's fds 0, 1 and 2 that restore must reconnect to
/// its own stdio: a pipe (`pipe:[INODE]`), a file of a mount the container does not
/// see (`file[MNT_ID:INODE]`) or a pty slave (`tty[RDEV:DEV]`, in hex); the dump must
/// also name the last two with `--external`.
fn stdio_keys(pid: i32) -> Result<Vec<String>> {
    let inside = mount_ids(pid)?;
    let mut keys = Vec::new();
    for fd in 0..3 {
        let link = match fs::read_link(format!("/proc/{pid}/fd/{fd}")) {
            Ok(l) => l,
            Err(_) => {
                keys.push(String::new());
                continue;
            }
        };
        let link = link.to_string_lossy().into_owned();
        if link.starts_with("pipe:") {
            keys.push(link);
            continue;
        }
        let meta = fs::metadata(format!("/proc/{pid}/fd/{fd}")).ctx(|| format!("stat fd {fd} of {pid}"))?;
        if is_pty_slave(&meta) {
            // A terminal whose master is outside the container (the monitor's or the
            // console socket's): external, as runc and podman declare it; restore
            // hands in a new one with `--inherit-fd fd[N]:tty[RDEV:DEV]`.
            keys.push(format!("tty[{:x}:{:x}]", meta.rdev(), meta.dev()));
            continue;
        }
        if !link.starts_with('/') {
            keys.push(String::new());
            continue;
        }
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ctx(|| format!("read fdinfo of {pid}"))?;
        let mnt_id: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("mnt_id:")?.trim().parse().ok())
            .unwrap_or(0);
        if inside.contains(&mnt_id) {
            keys.push(String::new());
            continue;
        }
        let ino = fs::metadata(format!("/proc/{pid}/fd/{fd}"))
            .ctx(|| format!("stat fd {fd} of {pid}"))?
            .ino();
        keys.push(format!("file[{mnt_id:x}:{ino:x}]"));
    }
    Ok(keys)
}

/// The network namespace of the init (`/proc/PID/ns/net`, opened) when the config joins
/// one by path, for CRIU to run in with `--tcp-established`.
///
/// Errors: [`Error::Invalid`] with a page server (which CRIU reaches from the caller's
/// network namespace); [`Error::Sys`] when it cannot be opened.
pub(crate) fn tcp_netns(spec: &Spec, pid: i32, page_server: bool) -> Result<Option<OwnedFd>> {
    if !external_namespaces(spec)
        .iter()
        .any(|(t, _, _)| *t == LinuxNamespaceType::Network)
    {
        return Ok(None);
    }
    if page_server {
        return Err(Error::Invalid(
            "--tcp-established with a page server: the container's network namespace is joined by path (a bridge network), \
             where CRIU must lock its connections, and the page server is reached from the caller's; dump to an image dir instead"
                .into(),
        ));
    }
    let path = format!("/proc/{pid}/ns/net");
    Ok(Some(fs::File::open(&path).ctx(|| format!("open {path}"))?.into()))
}

/// In CRIU's child, before exec: joins the network namespace `fd`.
pub(crate) fn enter_netns(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns with an open namespace fd, in a freshly forked single-threaded child.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `meta` is a pty slave (Unix98 ptys: majors 136-143, devices.txt).
fn is_pty_slave(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let major = libc::major(meta.rdev());
    meta.file_type().is_char_device() && (136..=143).contains(&major)
}

/// The freezer CRIU uses to stop the container's processes: the v1 freezer
/// hierarchy, or the cgroup2 directory on a unified host.
fn freezer_dir(cgroup_path: &Path) -> PathBuf {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    match cgroups::hierarchy() {
        Hierarchy::Unified => Path::new(CGROUP_ROOT).join(rel),
        _ => Path::new(CGROUP_ROOT).join("freezer").join(rel),
    }
}

/// Makes a directory (and its parents) for CRIU's images or log, 0700.
fn make_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .ctx(|| format!("chmod {}", dir.display()))
}

/// `p` made absolute from the cwd: CRIU changes directory, so relative paths would
/// name other places.
fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).ctx(|| format!("make {} absolute", p.display()))
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl Container {
    /// `checkpoint`: dumps the running (or paused) container with CRIU into
    /// `opts.image_path`. Unless `leave_running` (or `pre_dump`), the container's
    /// processes end with the dump and the container is removed (cgroup and state), as
    /// runc does, so that `restore` can bring it back under the same id.
    ///
    /// Errors: [`Error::WrongState`] unless running or paused; [`Error::Criu`] when a
    /// needed CRIU feature is missing (pre-dump: `mem_dirty_track`; lazy pages:
    /// `uffd-noncoop` and pipes CRIU can grow, see [`require_lazy_dump`]) or the dump
    /// fails, with the log's last errors; [`Error::Invalid`] for `lazy_pages` without
    /// `page_server`.
    pub fn checkpoint(self, spec: &Spec, opts: &CheckpointOptions) -> Result<()> {
        if !matches!(self.state.status, Status::Running | Status::Paused) {
            return Err(Error::WrongState(format!(
                "cannot checkpoint container \"{}\": container not running ({}); only a running or paused container can be checkpointed",
                self.state.id, self.state.status
            )));
        }
        if opts.pre_dump {
            require_feature("mem_dirty_track", "--pre-dump")?;
        }
        if opts.parent_path.is_some() && !opts.pre_dump {
            require_feature("mem_dirty_track", "--parent-path (memory tracking against a pre-dump)")?;
        }
        if opts.lazy_pages {
            if opts.page_server.is_none() {
                return Err(Error::Invalid(
                    "--lazy-pages needs --page-server ADDRESS:PORT: where the dump serves the pages to `criu lazy-pages --page-server` on the restoring side".into(),
                ));
            }
            require_feature("uffd-noncoop", "--lazy-pages")?;
            require_lazy_dump("--lazy-pages")?;
        }
        let pid = self.state.pid;
        let images = absolute(&opts.image_path)?;
        make_dir(&images)?;
        let work = absolute(opts.work_path.as_deref().unwrap_or(&images))?;
        make_dir(&work)?;
        let log_name = DUMP_LOG;
        let mut args = vec![
            os("-t"),
            os(pid.to_string()),
            os("-D"),
            images.clone().into(),
            os("-W"),
            work.clone().into(),
            os("-o"),
            os(log_name),
            os("-v4"),
            os("--root"),
            self.state.rootfs.clone().into(),
            os(opts.manage_cgroups_mode.arg()),
        ];
        let freezer = freezer_dir(&self.state.cgroup_path);
        if freezer.exists() {
            args.extend([os("--freeze-cgroup"), freezer.into()]);
        }
        let inside: Vec<String> = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .ctx(|| format!("read /proc/{pid}/mountinfo"))
            .map(|t| {
                crate::rootfs::parse_mountinfo(&t)
                    .into_iter()
                    .map(|m| m.mount_point)
                    .collect()
            })?;
        let mut externals: Vec<String> = Vec::new();
        for (dest, _) in cgroup_binds(&self.state.cgroup_path)? {
            let d = dest.to_string_lossy().into_owned();
            if inside.contains(&d) {
                externals.push(format!("mnt[{d}]:{d}"));
            }
        }
        for m in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
            let d = m.destination().to_string_lossy().into_owned();
            externals.push(format!("mnt[{d}]:{d}"));
        }
        // The namespace the init is in (the config's path may name a file that was
        // replaced since, e.g. when a caller changed the config in memory only).
        for (_, _, key) in external_namespaces(spec) {
            let kind = if key == EXT_NETNS { "net" } else { "pid" };
            let ns = format!("/proc/{pid}/ns/{kind}");
            let ino = fs::metadata(&ns).ctx(|| format!("stat {ns}"))?.ino();
            externals.push(format!("{kind}[{ino}]:{key}"));
        }
        // Binds of host files the container cannot see the file system of (a user
        // namespace's device nodes and masked files), written for restore to map back.
        let known: Vec<String> = externals
            .iter()
            .filter_map(|e| Some(e.strip_prefix("mnt[")?.split_once(']')?.0.to_string()))
            .collect();
        let foreign = mounts::foreign_binds(pid, &known)?;
        for (d, _) in &foreign {
            externals.push(format!("mnt[{d}]:{d}"));
        }
        let keys = stdio_keys(pid)?;
        // The console (a bind of the pty slave, runtime-spec "Console") goes with its
        // terminal: restore binds the new slave there.
        let console = "/dev/console".to_string();
        let mut foreign = foreign;
        if keys.iter().any(|k| k.starts_with("tty[")) && inside.contains(&console) && !known.contains(&console) {
            externals.push(format!("mnt[{console}]:{console}"));
            foreign.push((console, mounts::NEW_CONSOLE.into()));
        }
        for k in keys.iter().filter(|k| k.starts_with("file[") || k.starts_with("tty[")) {
            if !externals.contains(k) {
                externals.push(k.clone());
            }
        }
        for e in externals {
            args.extend([os("--external"), os(e)]);
        }
        let flags = [
            (opts.leave_running && !opts.pre_dump, "--leave-running"),
            (opts.tcp_established, "--tcp-established"),
            (opts.ext_unix_sk, "--ext-unix-sk"),
            (opts.shell_job, "--shell-job"),
            (opts.file_locks, "--file-locks"),
            (opts.lazy_pages, "--lazy-pages"),
            (opts.pre_dump || opts.parent_path.is_some(), "--track-mem"),
        ];
        args.extend(flags.iter().filter(|(on, _)| *on).map(|(_, f)| os(*f)));
        if let Some(parent) = &opts.parent_path {
            // CRIU takes it relative to the image dir (runc passes it through as given).
            args.extend([os("--prev-images-dir"), parent.clone().into()]);
        }
        if let Some(ps) = &opts.page_server {
            let (addr, port) = ps
                .rsplit_once(':')
                .ok_or_else(|| Error::Invalid(format!("--page-server {ps:?}: use ADDRESS:PORT")))?;
            // With --lazy-pages the dump itself listens there for `criu lazy-pages`
            // (CRIU's RPC does the same with runc's page-server info); otherwise it
            // sends its pages to a `criu page-server` listening there.
            if !opts.lazy_pages {
                args.push(os("--page-server"));
            }
            if !addr.is_empty() {
                args.extend([os("--address"), os(addr)]);
            }
            args.extend([os("--port"), os(port)]);
        }
        for ns in &opts.empty_ns {
            args.extend([os("--empty-ns"), os(ns.as_str())]);
        }
        if let Some(fd) = opts.status_fd {
            args.extend([os("--status-fd"), os(fd.to_string())]);
        }
        if !opts.pre_dump {
            let path = images.join(DESCRIPTORS);
            let data = serde_json::to_vec(&keys).map_err(|e| Error::Invalid(e.to_string()))?;
            fs::write(&path, data).ctx(|| format!("write {}", path.display()))?;
            mounts::save(&images, &foreign)?;
        }
        // Established connections in a network namespace joined by path (one vessel
        // keeps for a bridge network): CRIU locks each with iptables rules in its own
        // network namespace, so it runs in the container's, where they take effect
        // (and never in the host's).
        let netns = if opts.tcp_established && !opts.pre_dump {
            tcp_netns(spec, pid, opts.page_server.is_some())?
        } else {
            None
        };
        let setup: Option<Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>> = match netns {
            Some(fd) => Some(Box::new(move || enter_netns(&fd))),
            None => None,
        };
        Run {
            action: if opts.pre_dump { "pre-dump" } else { "dump" },
            args,
            log: work.join(log_name),
        }
        .run(setup)?;
        if !opts.leave_running && !opts.pre_dump {
            let mut me = self;
            me.wait_stopped(std::time::Duration::from_secs(10));
            me.delete(true)?;
        }
        Ok(())
    }
}
