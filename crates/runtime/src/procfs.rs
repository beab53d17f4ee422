//! A procfs the runtime has verified, through which it makes every write into /proc
//! (sysctls, oom_score_adj, uid_map/gid_map, timens_offsets, LSM attributes) and the
//! reads it bases a security decision on (setgroups). proc(5); config-linux.md "Sysctl";
//! the CVE-2025-52881 class: a rootfs whose `proc/sys/...` is a symlink, or a config that
//! puts another file system over /proc, must not redirect those writes.
//!
//! The handle is, in order of preference, a private procfs instance of the caller's
//! pid namespace that is mounted nowhere (fsopen(2) + fsmount(2)), or the "/proc" of
//! the caller's root, accepted only when it is the root of a procfs (fstatfs(2)
//! `PROC_SUPER_MAGIC`, inode 1). Every file is opened from that root with openat2(2)
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`, and checked to be on
//! procfs again before a byte is written. The per-process directory is found by reading
//! the handle's own `self` link (which names the caller as that procfs's pid namespace
//! sees it), never by following it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use crate::error::{Context, Error, Result};

/// The inode number of a procfs root directory (fs/proc/root.c `PROC_ROOT_INO`).
const PROC_ROOT_INO: u64 = 1;

/// A verified procfs root (see the module docs).
#[derive(Debug)]
pub struct ProcFs {
    root: OwnedFd,
}

static HANDLE: OnceLock<ProcFs> = OnceLock::new();

impl ProcFs {
    /// The process's handle, opened on first use with [`ProcFs::open`] and kept (close
    /// on exec) until the process execs. The container's init opens it before
    /// pivot_root, while the host's /proc is still its own.
    ///
    /// Errors: as [`ProcFs::open`].
    pub fn get() -> Result<&'static ProcFs> {
        if let Some(p) = HANDLE.get() {
            return Ok(p);
        }
        let p = ProcFs::open()?;
        Ok(HANDLE.get_or_init(|| p))
    }

    /// Opens a private procfs instance, or where the kernel refuses one (no
    /// CAP_SYS_ADMIN, a seccomp filter, a user namespace without a fully visible
    /// procfs), the "/proc" of the caller's root after checking it is a procfs root.
    ///
    /// Errors: [`Error::Sys`] when "/proc" cannot be opened, or is not the root of a
    /// procfs (then nothing is written: mount a procfs on /proc).
    pub fn open() -> Result<ProcFs> {
        if let Ok(root) = private_instance() {
            if verify_root(&root).is_ok() {
                return Ok(ProcFs { root });
            }
        }
        let root = rustix::fs::open(
            "/proc",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| "open /proc (the runtime writes sysctls and process attributes there)")?;
        verify_root(&root).ctx(|| "check that /proc is a procfs: mount a procfs (type proc) on /proc")?;
        Ok(ProcFs { root })
    }

    /// Opens `rel` (relative to the procfs root, e.g. `sys/net/ipv4/ip_forward`) with
    /// `flags`, refusing symlinks, ".." out of the root and crossings into other
    /// mounts (ELOOP, EXDEV), and checks the result is on procfs.
    pub fn open_file(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
        let mut tries = 0;
        let fd = loop {
            match rustix::fs::openat2(self.root.as_fd(), rel, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => break r?,
            }
        };
        if !on_procfs(&fd)? {
            return Err(io::Error::other(format!("/proc/{rel} is not on procfs")));
        }
        Ok(fd)
    }

    /// The calling process's directory in this procfs ("1234"), read from its `self`
    /// link without following it.
    pub fn self_dir(&self) -> io::Result<String> {
        let link = rustix::fs::readlinkat(&self.root, "self", Vec::new())?;
        let name = link.to_string_lossy().into_owned();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(io::Error::other(format!(
                "/proc/self of this procfs points to {name:?}"
            )));
        }
        Ok(name)
    }

    /// Opens the file behind this process's descriptor `fd` anew with `flags` (an
    /// `O_PATH` fd of a fifo becomes a writable one) through `/proc/<self>/fd`: the
    /// pid directory is reached without symlinks, and only the fd's own magic link is
    /// followed, so a /proc the rootfs made up cannot redirect it.
    ///
    /// Errors: [`Error::Sys`] naming the fd.
    pub fn reopen(&self, fd: BorrowedFd<'_>, flags: OFlags) -> Result<OwnedFd> {
        let n = fd.as_raw_fd();
        let dir = self
            .self_dir()
            .and_then(|d| self.open_file(&d, OFlags::PATH | OFlags::DIRECTORY))
            .ctx(|| "open /proc/self")?;
        rustix::fs::openat(&dir, format!("fd/{n}"), flags | OFlags::CLOEXEC, Mode::empty())
            .ctx(|| format!("reopen fd {n} through /proc/self/fd"))
    }

    /// Writes `data` into `rel` with one write(2) (sysctls and id maps take one).
    ///
    /// Errors: [`Error::Sys`] naming `/proc/<rel>`.
    pub fn write(&self, rel: &str, data: &[u8]) -> Result<()> {
        let fd = self
            .open_file(rel, OFlags::WRONLY)
            .ctx(|| format!("open /proc/{rel} for writing"))?;
        let n = rustix::io::write(&fd, data).ctx(|| format!("write /proc/{rel}"))?;
        if n != data.len() {
            return Err(Error::sys(
                format!("write /proc/{rel}: {n} of {} bytes taken", data.len()),
                io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        Ok(())
    }

    /// [`ProcFs::write`] into `/proc/self/<rel>`.
    pub fn write_self(&self, rel: &str, data: &[u8]) -> Result<()> {
        let dir = self.self_dir().ctx(|| "read /proc/self")?;
        self.write(&format!("{dir}/{rel}"), data)
    }

    /// [`ProcFs::write`] into `/proc/<pid>/<rel>` (pid as this procfs numbers it).
    pub fn write_pid(&self, pid: i32, rel: &str, data: &[u8]) -> Result<()> {
        self.write(&format!("{pid}/{rel}"), data)
    }

    /// Reads `/proc/self/<rel>` (a small text file).
    ///
    /// Errors: the io error, ENOENT when the file does not exist.
    pub fn read_self(&self, rel: &str) -> io::Result<String> {
        let dir = self.self_dir()?;
        let fd = self.open_file(&format!("{dir}/{rel}"), OFlags::RDONLY)?;
        io::read_to_string(std::fs::File::from(fd))
    }

    /// Whether `/proc/self/<rel>` exists (and is reachable without symlinks).
    pub fn self_exists(&self, rel: &str) -> bool {
        self.self_dir()
            .and_then(|dir| self.open_file(&format!("{dir}/{rel}"), OFlags::PATH))
            .is_ok()
    }
}

/// A procfs of the caller's pid namespace, mounted nowhere.
fn private_instance() -> io::Result<OwnedFd> {
    let fs = rustix::mount::fsopen("proc", FsOpenFlags::FSOPEN_CLOEXEC)?;
    rustix::mount::fsconfig_create(&fs)?;
    let attrs =
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    Ok(rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}

fn on_procfs(fd: &OwnedFd) -> io::Result<bool> {
    Ok(rustix::fs::fstatfs(fd)?.f_type == rustix::fs::PROC_SUPER_MAGIC)
}

/// Accepts only the root directory of a procfs.
fn verify_root(fd: &OwnedFd) -> io::Result<()> {
    if !on_procfs(fd)? {
        return Err(io::Error::other("not a procfs (fstatfs type is not PROC_SUPER_MAGIC)"));
    }
    if rustix::fs::fstat(fd)?.st_ino != PROC_ROOT_INO {
        return Err(io::Error::other("not the root of a procfs"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_reads_own_status_and_refuses_symlinks() {
        let p = ProcFs::open().expect("procfs");
        let dir = p.self_dir().expect("self");
        assert!(dir.parse::<u32>().is_ok(), "{dir}");
        assert!(p.read_self("status").expect("status").contains("Pid:"));
        // "self" is a symlink: refused where a path would follow it.
        assert!(p.open_file("self/status", OFlags::RDONLY).is_err());
        assert!(p.open_file("../etc/passwd", OFlags::RDONLY).is_err());
    }
}
