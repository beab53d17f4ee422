//! Root filesystem of a container: the mounts of config.json in order, the default and
//! configured devices, pivot_root (or the no-pivot fallback), read-only root, masked and
//! read-only paths (runtime-spec config.md "Root", "Mounts"; config-linux.md "Devices",
//! "Masked Paths", "Readonly Paths", "Rootfs Mount Propagation").
//!
//! Every function here runs inside the container init, after it entered its new mount
//! namespace (and, with a user namespace, after its id maps were written), as root of
//! that namespace. Mount targets are resolved inside the rootfs, never through a symlink
//! that points out of it.

mod cgroup;
pub use cgroup::unescape as unescape_mountinfo;
pub(crate) use cgroup::{parse_mountinfo, read_mountinfo};
mod devices;
mod mounts;
mod options;
mod paths;
mod restrict;
#[cfg(test)]
mod tests;

use std::path::Path;

use libc::c_ulong;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use rustix::fs::{Mode, OFlags};
use rustix::mount::UnmountFlags;

use crate::error::{Context, Error, Result};
use crate::procfs::ProcFs;
use mounts::{current_flags, sys_mount, Env};
use paths::Root;

/// Whether the container gets a mount namespace of its own. Without one (runc
/// accepts that), the container shares the runtime's mount namespace: the config's
/// mounts and devices are made there, under the rootfs, and the init chroots into it,
/// as runc does; the runtime changes no propagation there and never remounts "/".
pub fn has_mount_namespace(spec: &Spec) -> bool {
    crate::spec::has_namespace(spec, LinuxNamespaceType::Mount)
}

/// Checks what the rootfs steps need from a config before anything is made.
///
/// Errors: [`Error::Invalid`] for `linux.maskedPaths` or `linux.readonlyPaths`
/// without a mount namespace (they would change the runtime's own mounts; runc
/// refuses them the same way).
pub fn check(spec: &Spec) -> Result<()> {
    if has_mount_namespace(spec) {
        return Ok(());
    }
    let linux = spec.linux().as_ref();
    let masked = linux
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|v| !v.is_empty());
    let readonly = linux
        .and_then(|l| l.readonly_paths().as_ref())
        .is_some_and(|v| !v.is_empty());
    if masked || readonly {
        return Err(Error::Invalid(
            "linux.maskedPaths and linux.readonlyPaths need a mount namespace of the container's own: \
             add {\"type\": \"mount\"} to linux.namespaces or empty those lists"
                .into(),
        ));
    }
    Ok(())
}

/// Sets up the rootfs and switches the calling process into it.
///
/// `rootfs` is the absolute host path of the container's root (root.path resolved
/// against the bundle). Steps: make "/" a slave (or what `linux.rootfsPropagation`
/// names), bind the rootfs onto itself, do `spec.mounts()` in order, create the
/// default devices and `linux.devices`, the /dev symlinks (fd, stdin, stdout, stderr,
/// core, ptmx), then `pivot_root` (or `MS_MOVE` + `chroot` when `no_pivot`), detach
/// the old root and chdir to "/".
///
/// The process's cwd must be the bundle directory: relative bind sources are relative
/// to it. On a cgroup v1 host without a cgroup namespace, a `cgroup` mount shows the
/// cgroups the process is in when this is called: join the container's cgroups first.
///
/// Errors: [`crate::Error::Sys`] naming the mount, its destination and the failed call.
pub fn prepare(spec: &Spec, rootfs: &Path, no_pivot: bool) -> Result<()> {
    prepare_with(spec, rootfs, no_pivot, &mut || Ok(()))
}

/// [`prepare`], calling `cgroup_ready` once before anything that depends on the
/// process's cgroup membership: before the first `cgroup` mount, or after the mounts when
/// there is none. The runtime joins the init's cgroup while the init builds the mounts
/// before that point (the first cgroup migration can wait for an RCU grace period).
pub fn prepare_with(
    spec: &Spec,
    rootfs: &Path,
    no_pivot: bool,
    cgroup_ready: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    let shared_ns = !has_mount_namespace(spec);
    let mut cgroup_ready = Some(cgroup_ready);
    let env = env_of(spec);
    let rootfs = std::fs::canonicalize(rootfs).ctx(|| format!("rootfs {} (root.path)", rootfs.display()))?;
    let propagation = rootfs_propagation(spec)?;

    if !shared_ns {
        // Nothing done below may propagate back to the host's mounts. An unbindable "/"
        // could not give the bind of the rootfs below: that one is applied at the end
        // (as crun does).
        let first = match propagation {
            Some(p) if p & libc::MS_UNBINDABLE == 0 => p,
            _ => libc::MS_SLAVE | libc::MS_REC,
        };
        sys_mount(None, Path::new("/"), None, first, None)
            .ctx(|| "set the propagation of \"/\" (linux.rootfsPropagation)")?;
        make_parent_private(&rootfs)?;
        sys_mount(
            Some(rootfs.as_os_str()),
            &rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .ctx(|| format!("bind the rootfs {} onto itself", rootfs.display()))?;
    }

    let root = Root::open(&rootfs)?;
    let spec_mounts = spec.mounts().as_deref().unwrap_or(&[]);
    for m in spec_mounts {
        if m.typ().as_deref() == Some("cgroup") {
            if let Some(ready) = cgroup_ready.take() {
                ready()?;
            }
        }
        mounts::mount_entry(&root, env, m)?;
    }
    if let Some(ready) = cgroup_ready.take() {
        ready()?;
    }
    // As runc: a /dev bound from elsewhere is taken as it is.
    let dev_bound = spec_mounts.iter().any(|m| is_dest(m, "dev") && is_bind(m));
    if !dev_bound {
        let linux_devices = spec
            .linux()
            .as_ref()
            .and_then(|l| l.devices().as_deref())
            .unwrap_or(&[]);
        let wanted = devices::wanted(linux_devices)?;
        let _umask = devices::Umask::set(0);
        for d in &wanted {
            devices::create(&root, d, env.userns)?;
        }
        let ptmx = spec_mounts
            .iter()
            .any(|m| is_dest(m, "dev/pts") && m.typ().as_deref() == Some("devpts"));
        devices::symlinks(&root, ptmx)?;
    }
    drop(root);
    // The procfs handle for sysctls and process attributes is taken now, while the
    // host's /proc is ours, never from what the rootfs put at /proc.
    ProcFs::get()?;

    if shared_ns {
        // The runtime's mount namespace is not the container's to reshape (runc
        // chroots here too); what was mounted stays there until unmounted.
        chroot_root(&rootfs)?;
        return Ok(());
    }
    if no_pivot {
        move_root(&rootfs)?;
    } else {
        pivot_root(&rootfs)?;
    }
    if let Some(p) = propagation {
        sys_mount(None, Path::new("/"), None, p, None)
            .ctx(|| "set the propagation of the new \"/\" (linux.rootfsPropagation)")?;
    }
    Ok(())
}

/// Remounts "/" read-only when `root.readonly` is true (config.md "Root"). Called
/// after `prepare`, once the console is mounted. Keeps the nosuid, nodev, noexec and
/// atime flags "/" has.
pub fn finalize_root(spec: &Spec) -> Result<()> {
    if !has_mount_namespace(spec) {
        return Ok(());
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) != Some(true) {
        return Ok(());
    }
    let fd = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).ctx(|| "open \"/\"")?;
    let keep = current_flags(&fd).ctx(|| "statvfs \"/\"")? & !libc::MS_RDONLY;
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep;
    sys_mount(None, Path::new("/"), None, flags, None).ctx(|| "remount \"/\" read-only (root.readonly)")
}

/// Applies `linux.readonlyPaths` (a recursive copy of the path, made read-only,
/// on top of it) and `linux.maskedPaths` (the verified /dev/null over files, a
/// read-only empty tmpfs over directories), config-linux.md "Readonly Paths" and
/// "Masked Paths", by file descriptor (see `restrict`). Called after the sysctls are
/// written, in the container's root. Paths that do not exist in the rootfs are
/// skipped, as runc does.
///
/// Errors: [`Error::Invalid`] when a file is to be masked and the container's
/// /dev/null is not the null device; [`Error::Sys`] naming the path otherwise.
pub fn restrict_paths(spec: &Spec) -> Result<()> {
    let Some(linux) = spec.linux().as_ref() else {
        return Ok(());
    };
    let ro = linux.readonly_paths().as_deref().unwrap_or(&[]);
    let masked = linux.masked_paths().as_deref().unwrap_or(&[]);
    if ro.is_empty() && masked.is_empty() {
        return Ok(());
    }
    let root = rustix::fs::open("/", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .ctx(|| "open the container's \"/\"")?;
    for p in ro {
        restrict::readonly_path(&root, Path::new(p)).ctx(|| format!("make {p} read-only (linux.readonlyPaths)"))?;
    }
    let mut dev_null = None;
    for p in masked {
        restrict::mask_path(&root, Path::new(p), &mut dev_null).map_err(|e| match e {
            Error::Sys { context, source } => Error::sys(format!("mask {p} (linux.maskedPaths): {context}"), source),
            Error::Invalid(m) => Error::Invalid(format!("mask {p} (linux.maskedPaths): {m}")),
            e => e,
        })?;
    }
    Ok(())
}

/// Which namespaces of the config change how mounts are done.
fn env_of(spec: &Spec) -> Env {
    let ns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[]);
    let has = |t: LinuxNamespaceType| ns.iter().any(|n| n.typ() == t);
    Env {
        userns: has(LinuxNamespaceType::User),
        netns: has(LinuxNamespaceType::Network),
        cgroupns: has(LinuxNamespaceType::Cgroup),
    }
}

/// `linux.rootfsPropagation` as mount(2) flags; `None` when unset.
fn rootfs_propagation(spec: &Spec) -> Result<Option<c_ulong>> {
    match spec.linux().as_ref().and_then(|l| l.rootfs_propagation().as_deref()) {
        None | Some("") => Ok(None),
        Some(p) => options::propagation(p).map(Some).ok_or_else(|| {
            Error::Invalid(format!(
                "linux.rootfsPropagation {p:?}: use shared, slave, private or unbindable (or their r-forms)"
            ))
        }),
    }
}

fn is_dest(m: &Mount, rel: &str) -> bool {
    paths::relative(m.destination()) == Path::new(rel)
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind") || options::parse(m.options().as_deref().unwrap_or(&[])).is_bind()
}

/// pivot_root(2) refuses a new root whose parent mount is shared: make that mount
/// private (in this namespace only), as runc does.
fn make_parent_private(rootfs: &Path) -> Result<()> {
    let infos = cgroup::read_mountinfo()?;
    let parent = infos
        .iter()
        .filter(|mi| rootfs.starts_with(&mi.mount_point))
        .max_by_key(|mi| mi.mount_point.len());
    if let Some(mi) = parent {
        if mi.optional.iter().any(|o| o.starts_with("shared:")) {
            sys_mount(None, Path::new(&mi.mount_point), None, libc::MS_PRIVATE, None)
                .ctx(|| format!("make {} private (the mount holding the rootfs)", mi.mount_point))?;
        }
    }
    Ok(())
}

/// Switches into `rootfs` with pivot_root(".", ".") and detaches the old root.
fn pivot_root(rootfs: &Path) -> Result<()> {
    let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let old = rustix::fs::open("/", dir, Mode::empty()).ctx(|| "open the old root")?;
    let new = rustix::fs::open(rootfs, dir, Mode::empty()).ctx(|| format!("open the rootfs {}", rootfs.display()))?;
    rustix::process::fchdir(&new).ctx(|| format!("chdir to the rootfs {}", rootfs.display()))?;
    rustix::process::pivot_root(".", ".").ctx(|| format!("pivot_root to {}", rootfs.display()))?;
    // The old root now sits under the new one, at "."; reach it and let it go.
    rustix::process::fchdir(&old).ctx(|| "chdir to the old root")?;
    sys_mount(None, Path::new("."), None, libc::MS_SLAVE | libc::MS_REC, None).ctx(|| "make the old root a slave")?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).ctx(|| "detach the old root")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")
}

/// Without a mount namespace: chroot into the rootfs (runc's way there).
fn chroot_root(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).ctx(|| format!("chdir to the rootfs {}", rootfs.display()))?;
    rustix::process::chroot(".").ctx(|| "chroot into the rootfs (no mount namespace)")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")
}

/// The no-pivot way (runc's --no-pivot): move the rootfs mount onto "/" and chroot.
fn move_root(rootfs: &Path) -> Result<()> {
    rustix::process::chdir(rootfs).ctx(|| format!("chdir to the rootfs {}", rootfs.display()))?;
    sys_mount(Some(rootfs.as_os_str()), Path::new("/"), None, libc::MS_MOVE, None)
        .ctx(|| format!("move the rootfs {} onto \"/\"", rootfs.display()))?;
    rustix::process::chroot(".").ctx(|| "chroot into the rootfs")?;
    rustix::process::chdir("/").ctx(|| "chdir to the new root")
}
