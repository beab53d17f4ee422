//! Persistent network namespaces as files, the way `ip netns add` makes them
//! (ip-netns(8)): a new namespace bind-mounted from /proc/thread-self/ns/net onto a
//! file, which keeps it alive without any process in it.
//!
//! The namespace switches happen in a short-lived helper thread, so the calling
//! thread never changes namespace (nothing to restore, nothing to leak if a step
//! fails); the helper is joined before the call returns, so a single-threaded caller
//! (the per-container monitor) is single-threaded again afterwards.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, UnshareFlags};

use crate::error::{IoContext, NetError, Result};

/// statfs(2) magic of the nsfs file system (`NSFS_MAGIC`, linux/magic.h).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is a namespace file (an nsfs bind mount or a /proc/PID/ns link).
#[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
pub fn is_netns(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == NSFS_MAGIC)
}

fn in_thread<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(_) => Err(NetError::BadRequest("network namespace helper thread panicked".into())),
    })
}

/// Makes a new network namespace and pins it on the file `path` (created, with its
/// parent directories; a leftover empty file from an interrupted call is reused).
/// The namespace has only a `lo`, down: see [`crate::setup_loopback`].
///
/// Errors: [`NetError::Netns`] when `path` already holds a namespace or the unshare or
/// bind mount fails (needs CAP_SYS_ADMIN), [`NetError::Io`] for the file.
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).at("create", dir)?;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if is_netns(path) {
                return Err(NetError::netns(
                    "create",
                    path,
                    io::Error::from(io::ErrorKind::AlreadyExists),
                ));
            }
        }
        Err(e) => return Err(NetError::io("create", path, e)),
    }
    let made = in_thread(|| {
        // SAFETY: only CLONE_NEWNET is unshared, in this helper thread: the file
        // descriptor table and memory stay shared, so no other thread can observe
        // a changed view of them. The thread ends right after the bind mount.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }
            .map_err(|e| NetError::netns("unshare", path, e))?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", path).map_err(|e| NetError::netns("bind mount", path, e))
    });
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Releases the namespace pinned on `path` and removes the file: a lazy unmount
/// (MNT_DETACH; processes still in it keep it alive) then unlink. Idempotent: a
/// missing file or one that is no mount point is fine.
///
/// Errors: [`NetError::Netns`] when the unmount fails otherwise, [`NetError::Io`].
pub fn remove(path: &Path) -> Result<()> {
    // Stacked mounts (two creates racing) are undone one by one.
    for _ in 0..8 {
        match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => continue,
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => break,
            Err(e) => return Err(NetError::netns("unmount", path, e)),
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Runs `f` in the network namespace `path` (a namespace file or /proc/PID/ns/net), in a
/// helper thread; sockets that `f` opens belong to that namespace for their lifetime.
///
/// Errors: [`NetError::Netns`] when `path` cannot be opened or entered, else what `f` returns.
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let ns = std::fs::File::open(path).map_err(|e| NetError::netns("open", path, e))?;
    in_thread(|| {
        rustix::thread::move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
            .map_err(|e| NetError::netns("setns", path, e))?;
        f()
    })
}
