//! The mounts of config.json (runtime-spec config.md "Mounts"), done in order onto
//! targets resolved inside the rootfs: binds (with the read-only/nosuid/... remount
//! a bind needs), filesystems by type, the user-namespace fallbacks runc has for
//! sysfs and mqueue, propagation changes, recursive attributes and "tmpcopyup".

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libc::c_ulong;
use oci_spec::runtime::Mount;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::cgroup;
use super::options::{self, MountOptions};
use super::paths::{fd_path, Kind, Root};
use crate::error::{Context, Error, Result};

/// Namespaces of the container that change how some mounts are done.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Env {
    /// A user namespace: no mknod, locked mount flags, no sysfs without a netns.
    pub userns: bool,
    /// A new or joined network namespace.
    pub netns: bool,
    /// A new or joined cgroup namespace.
    pub cgroupns: bool,
}

/// Flags that a bind remount can change on the mount point.
const PER_MOUNT: c_ulong = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME
    | libc::MS_NOSYMFOLLOW;
const ATIME: c_ulong = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a mount argument"))
}

/// mount(2), with every argument as the kernel takes it.
pub(crate) fn sys_mount(
    source: Option<&OsStr>,
    target: &Path,
    fstype: Option<&str>,
    flags: c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target.as_os_str())?;
    let fstype = fstype.map(|s| cstr(OsStr::new(s))).transpose()?;
    let data = data.map(|s| cstr(OsStr::new(s))).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive until the call returns.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast::<libc::c_void>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mount_setattr(2) on the mount whose root `fd` is, recursively.
pub(crate) fn set_attr_recursive(fd: &OwnedFd, set: u64, clear: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let empty: &CStr = c"";
    // SAFETY: fd is open, `empty` is a static NUL-terminated string, attr lives across
    // the call and its size is passed along.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The per-mount flags (`MS_*`) that the mount holding `fd` has now.
pub(crate) fn current_flags(fd: impl AsFd) -> io::Result<c_ulong> {
    let st = rustix::fs::fstatvfs(fd)?;
    let bits = st.f_flag.bits();
    let map = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(map
        .iter()
        .filter(|(st, _)| bits & *st != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// Remounts the bind mount `target` (a path or a `/proc/self/fd` link) with `flags`.
/// Flags the mount already has and cannot lose (locked in a user namespace) are kept
/// when the kernel refuses the plain request, as runc does.
pub(crate) fn remount_bind(target: &Path, flags: c_ulong) -> io::Result<()> {
    let want = libc::MS_REMOUNT | libc::MS_BIND | (flags & PER_MOUNT);
    match sys_mount(None, target, None, want, None) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let fd = rustix::fs::open(target, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?;
            let have = current_flags(&fd)?;
            let mut keep = have & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
            if want & ATIME == 0 {
                keep |= have & (ATIME | libc::MS_NODIRATIME);
            }
            sys_mount(None, target, None, want | keep, None)
        }
        r => r,
    }
}

fn describe(m: &Mount) -> String {
    let src = m
        .source()
        .as_deref()
        .map(|s| s.display().to_string())
        .unwrap_or_default();
    let opts = m.options().as_deref().map(|o| o.join(",")).unwrap_or_default();
    format!(
        "mount {} {src:?} on {} (options {opts:?})",
        m.typ().as_deref().unwrap_or("(no type)"),
        m.destination().display()
    )
}

/// Does one config.json mount inside `root`.
pub(crate) fn mount_entry(root: &Root, env: Env, m: &Mount) -> Result<()> {
    let what = describe(m);
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = options::parse(m.options().as_deref().unwrap_or(&[]));
    if opts.idmap || m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(Error::Invalid(format!("{what}: id-mapped mounts are not supported")));
    }
    let bind = opts.is_bind() || typ == "bind";
    check_proc_mount(&what, dest, typ, bind, m.source().as_deref())?;
    if typ == "cgroup" && !bind {
        return cgroup::mount_cgroup(root, env, dest, &opts).map_err(|e| match e {
            Error::Sys { context, source } => Error::sys(format!("{what}: {context}"), source),
            e => e,
        });
    }
    let sys = |call: &str| format!("{what}: {call} in rootfs {}", root.host().display());

    if bind {
        let src = m
            .source()
            .as_deref()
            .ok_or_else(|| Error::Invalid(format!("{what}: a bind mount needs a source")))?;
        let meta =
            std::fs::metadata(src).ctx(|| sys("stat the source (relative sources are relative to the bundle)"))?;
        let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
        let target = root.ensure(dest, kind)?;
        bind_host(root, dest, &target, src, opts.flags & libc::MS_REC != 0, opts.flags).ctx(|| sys("bind"))?;
    } else if typ.is_empty() {
        return Err(Error::Invalid(format!(
            "{what}: a mount needs a type (or the \"bind\" option)"
        )));
    } else {
        let target = match typ {
            "proc" | "sysfs" => root.ordinary_dir(dest, typ)?,
            _ => root.ensure(dest, Kind::Dir)?,
        };
        let host_fallback = match typ {
            "sysfs" if env.userns => Some("/sys"),
            "mqueue" if env.userns => Some("/dev/mqueue"),
            _ => None,
        };
        let source = m.source().as_deref().map(Path::as_os_str).unwrap_or(OsStr::new(typ));
        let data = opts.data();
        let result = if typ == "sysfs" && env.userns && !env.netns {
            // The kernel ties sysfs to the network namespace's owner: mounting it needs
            // a netns of our own, so take the host's, as runc does.
            Err(io::Error::from_raw_os_error(libc::EPERM))
        } else if opts.tmpcopyup && typ == "tmpfs" {
            tmpfs_copyup(root, dest, &target, source, &opts)
        } else {
            sys_mount(Some(source), &fd_path(&target), Some(typ), opts.flags, data.as_deref())
        };
        match (result, host_fallback) {
            (Ok(()), _) => {}
            (Err(e), Some(host)) if e.raw_os_error() == Some(libc::EPERM) => {
                bind_host(root, dest, &target, Path::new(host), true, opts.flags)
                    .ctx(|| sys(&format!("bind the host's {host} instead")))?;
            }
            (Err(e), _) => return Err(Error::sys(sys("mount"), e)),
        }
    }

    if !opts.propagation.is_empty() || opts.attr_set != 0 || opts.attr_clr != 0 {
        let target = root.open_path(dest).map_err(|e| root.err("reopen mount", dest, e))?;
        for &p in &opts.propagation {
            sys_mount(None, &fd_path(&target), None, p, None).ctx(|| sys("change propagation"))?;
        }
        if opts.attr_set != 0 || opts.attr_clr != 0 {
            set_attr_recursive(&target, opts.attr_set, opts.attr_clr)
                .ctx(|| sys("mount_setattr (recursive options)"))?;
        }
    }
    Ok(())
}

/// Files under /proc that a mount may cover: those lxcfs emulates (runc's list).
const PROC_MOUNTS_ALLOWED: &[&str] = &[
    "proc/cpuinfo",
    "proc/diskstats",
    "proc/meminfo",
    "proc/stat",
    "proc/swaps",
    "proc/uptime",
    "proc/loadavg",
    "proc/slabinfo",
    "proc/net/dev",
    "proc/sys/kernel/ns_last_pid",
];

/// Refuses what runc refuses on /proc (its checkProcMount): on /proc itself only a
/// procfs, or a bind of one; below it only the files lxcfs emulates. Anything else
/// would put files of the config's choosing where the runtime writes sysctls and
/// process attributes, or hide what masked paths hide.
fn check_proc_mount(what: &str, dest: &Path, typ: &str, bind: bool, source: Option<&Path>) -> Result<()> {
    let rel = super::paths::clean_relative(dest);
    if !rel.starts_with("proc") {
        return Ok(());
    }
    if rel == Path::new("proc") {
        let ok = if bind {
            source
                .and_then(|s| rustix::fs::statfs(s).ok())
                .is_some_and(|st| st.f_type == rustix::fs::PROC_SUPER_MAGIC)
        } else {
            typ == "proc"
        };
        return if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "{what}: only a procfs (type proc, or a bind of one) may be mounted on /proc"
            )))
        };
    }
    if PROC_MOUNTS_ALLOWED.iter().any(|a| rel == Path::new(a)) {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{what}: {} cannot be mounted because it is inside /proc; below /proc only {} may be \
         covered (as runc allows, for lxcfs)",
        dest.display(),
        PROC_MOUNTS_ALLOWED
            .iter()
            .map(|a| format!("/{a}"))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Binds the host path `src` onto `dest` inside `root` (`target` is its `O_PATH`
/// fd), then remounts the bind with the per-mount `flags` if any is set.
pub(crate) fn bind_host(
    root: &Root,
    dest: &Path,
    target: &OwnedFd,
    src: &Path,
    recursive: bool,
    flags: c_ulong,
) -> io::Result<()> {
    let rec = if recursive { libc::MS_REC } else { 0 };
    sys_mount(Some(src.as_os_str()), &fd_path(target), None, libc::MS_BIND | rec, None)?;
    if flags & PER_MOUNT != 0 {
        // `target` still names the covered directory; a fresh lookup by name lands on
        // the root of the bind, which is what the remount must change.
        let top = root.open_path(dest)?;
        remount_bind(&fd_path(&top), flags)?;
    }
    Ok(())
}

/// Mounts a tmpfs on `target` filled with a copy of what the directory held
/// ("tmpcopyup", an extension runc and crun share; podman asks for it).
fn tmpfs_copyup(root: &Root, dest: &Path, target: &OwnedFd, source: &OsStr, opts: &MountOptions) -> io::Result<()> {
    let old = rustix::fs::openat(
        target,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let data = opts.data();
    sys_mount(
        Some(source),
        &fd_path(target),
        Some("tmpfs"),
        opts.flags & !libc::MS_RDONLY,
        data.as_deref(),
    )?;
    let top = root.open_path(dest)?;
    let new = rustix::fs::openat(
        &top,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // A "mode=" of the config wins over the mode of the directory underneath.
    if !opts.data.iter().any(|d| d.starts_with("mode=")) {
        copy_owner_mode(&new, &rustix::fs::fstat(&old)?)?;
    }
    copy_tree(&old, &new)?;
    if opts.flags & libc::MS_RDONLY != 0 {
        remount_bind(&fd_path(&top), opts.flags)?;
    }
    Ok(())
}

/// Owners that this user namespace does not map cannot be given: keep ours then.
fn unmapped_ok(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Err(rustix::io::Errno::INVAL) => Ok(()),
        r => Ok(r?),
    }
}

fn copy_owner_mode(fd: &OwnedFd, st: &rustix::fs::Stat) -> io::Result<()> {
    unmapped_ok(rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw_unchecked(st.st_uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(st.st_gid)),
    ))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(st.st_mode))?;
    Ok(())
}

/// Copies the tree under `from` into `to`, keeping modes and owners.
fn copy_tree(from: &OwnedFd, to: &OwnedFd) -> io::Result<()> {
    let dir = rustix::fs::Dir::read_from(from)?;
    for entry in dir {
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ro = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                rustix::fs::mkdirat(to, name, Mode::from_raw_mode(0o700))?;
                let src = rustix::fs::openat(from, name, ro | OFlags::DIRECTORY, Mode::empty())?;
                let dst = rustix::fs::openat(to, name, ro | OFlags::DIRECTORY, Mode::empty())?;
                copy_owner_mode(&dst, &st)?;
                copy_tree(&src, &dst)?;
            }
            FileType::RegularFile => {
                let src = rustix::fs::openat(from, name, ro, Mode::empty())?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let dst = rustix::fs::openat(to, name, flags, Mode::from_raw_mode(0o600))?;
                io::copy(&mut File::from(src), &mut File::from(dst.try_clone()?))?;
                copy_owner_mode(&dst, &st)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), to, name)?;
                lchown_at(to, name, &st)?;
            }
            kind => {
                rustix::fs::mknodat(to, name, kind, Mode::from_raw_mode(st.st_mode), st.st_rdev)?;
                lchown_at(to, name, &st)?;
                rustix::fs::chmodat(to, name, Mode::from_raw_mode(st.st_mode), AtFlags::empty())?;
            }
        }
    }
    Ok(())
}

fn lchown_at(dir: &OwnedFd, name: &CStr, st: &rustix::fs::Stat) -> io::Result<()> {
    unmapped_ok(rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw_unchecked(st.st_uid)),
        Some(rustix::fs::Gid::from_raw_unchecked(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    ))
}

/// Whether `err` is "no such file" (a skipped path for masked and read-only paths).
pub(crate) fn is_enoent(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOENT)
}
