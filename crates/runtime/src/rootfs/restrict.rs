//! Masked and read-only paths (config-linux.md "Masked Paths", "Readonly Paths"), done
//! in the container's root after pivot_root, by file descriptor: every mount here is
//! made with open_tree(2)/fsmount(2) and attached with move_mount(2) onto a descriptor,
//! never by a path that a symlink in the rootfs could redirect. A file is masked with
//! the container's /dev/null only after fstat(2) on the open descriptor shows the null
//! device (char 1:3), not whatever an image put there (CVE-2025-31133).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use super::mounts::{is_enoent, set_attr_recursive};
use crate::error::{Context, Error, Result};

/// Major and minor number of the null device (devices.txt: char 1:3).
const NULL_DEV: (u32, u32) = (1, 3);

/// Opens `path` in `root` (the container's "/") with `O_PATH`, following symlinks inside the
/// root but no magic links (a /proc/self/fd link cannot lead to a runtime fd).
fn open_target(root: &OwnedFd, path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(root, path, flags, Mode::empty(), resolve) {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Attaches the detached mount `tree` on the file or directory `target`.
pub(crate) fn attach(tree: &OwnedFd, target: &OwnedFd) -> io::Result<()> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// A detached copy of the mount at `fd` (with its submounts when `recursive`).
pub(crate) fn clone_tree(fd: &OwnedFd, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    Ok(rustix::mount::open_tree(fd.as_fd(), "", flags)?)
}

/// Makes `path` read-only with the mounts below it: a recursive copy of it, set
/// read-only while detached, attached on top of it. A missing path is skipped, as
/// runc does.
pub(crate) fn readonly_path(root: &OwnedFd, path: &Path) -> io::Result<()> {
    let target = match open_target(root, path) {
        Err(e) if is_enoent(&e) => return Ok(()),
        r => r?,
    };
    let tree = clone_tree(&target, true)?;
    set_attr_recursive(&tree, libc::MOUNT_ATTR_RDONLY, 0)?;
    attach(&tree, &target)
}

/// The container's /dev/null, opened without following a symlink and accepted only
/// when it is the null device.
///
/// Errors: [`Error::Invalid`] saying what /dev/null is instead.
pub(crate) fn trusted_dev_null(root: &OwnedFd) -> Result<OwnedFd> {
    let dev_null = Path::new("/dev/null");
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let refuse = |what: &str| {
        Error::Invalid(format!(
            "/dev/null in the container {what}, not the null device (char 1:3): refusing to mask \
             linux.maskedPaths with it; mount a tmpfs on /dev in config.json or fix the image"
        ))
    };
    let fd = match rustix::fs::openat2(
        root,
        dev_null,
        flags,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => return Err(refuse("is reached through a symlink")),
        Err(e) => return Err(Error::sys("open /dev/null in the container", e)),
    };
    let st = rustix::fs::fstat(&fd).ctx(|| "stat /dev/null in the container")?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::CharacterDevice => {
            let dev = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
            if dev == NULL_DEV {
                Ok(fd)
            } else {
                Err(refuse(&format!("is the char device {}:{}", dev.0, dev.1)))
            }
        }
        FileType::Symlink => Err(refuse("is a symlink")),
        FileType::RegularFile => Err(refuse("is a regular file")),
        _ => Err(refuse("is not a character device")),
    }
}

/// Masks `path`: a read-only empty tmpfs over a directory, a copy of the verified
/// /dev/null mount over anything else (`dev_null` opens it once, on first need). A
/// missing path is skipped, as runc does.
pub(crate) fn mask_path(root: &OwnedFd, path: &Path, dev_null: &mut Option<OwnedFd>) -> Result<()> {
    let target = match open_target(root, path) {
        Err(e) if is_enoent(&e) => return Ok(()),
        r => r.ctx(|| format!("open {}", path.display()))?,
    };
    let st = rustix::fs::fstat(&target).ctx(|| format!("stat {}", path.display()))?;
    let tree = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        empty_readonly_tmpfs().ctx(|| "make an empty read-only tmpfs")?
    } else {
        let null = match dev_null {
            Some(fd) => fd,
            None => dev_null.insert(trusted_dev_null(root)?),
        };
        clone_tree(null, false).ctx(|| "copy the /dev/null mount")?
    };
    attach(&tree, &target).ctx(|| format!("mount on {}", path.display()))
}

fn empty_readonly_tmpfs() -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_create(&fs)?;
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    Ok(rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}
