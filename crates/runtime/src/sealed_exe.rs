//! CVE-2019-5736: a container process must never reach the runtime's binary on the
//! host through /proc/PID/exe (directly, or by running `#!/proc/self/exe` while the
//! runtime enters the container) and overwrite it. Before a command that enters a
//! container, the runtime re-executes itself from a read-only, detached bind mount of
//! its own binary (open_tree(2) with OPEN_TREE_CLONE, mount_setattr(2) with
//! MOUNT_ATTR_RDONLY, then execveat(2)): /proc/PID/exe then names a file on a mount
//! that is read-only and attached nowhere, so no one can remount it, and no copy is
//! made (runc 1.2 protects itself with a private read-only overlayfs to the same end).
//! Where the kernel lacks these calls, a sealed memfd copy is the fallback (runc 1.1).

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Context, Error, Result};

const MARK: &str = "_VESSEL_SEALED_EXE";

/// Whether /proc/self/exe is protected: on a read-only mount, or a sealed memfd.
pub fn is_sealed() -> bool {
    if std::fs::read_link("/proc/self/exe").is_ok_and(|p| p.as_os_str().as_bytes().starts_with(b"/memfd:")) {
        return true;
    }
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Re-executes the current binary from a protected place unless it already runs from
/// one. Returns only when nothing had to be done (or on error).
///
/// Errors: [`Error::Sys`] naming the step that failed.
pub fn ensure() -> Result<()> {
    if std::env::var_os(MARK).is_some() {
        std::env::remove_var(MARK);
        if is_sealed() {
            return Ok(());
        }
    }
    let fd = match read_only_mount() {
        Ok(fd) => fd,
        Err(_) => memfd_copy()?,
    };
    execveat(&fd)
}

/// A detached, read-only bind mount of /proc/self/exe (an O_PATH fd on the file).
fn read_only_mount() -> Result<OwnedFd> {
    // SAFETY: open_tree takes a dirfd, a NUL-terminated path and flags; it returns a new
    // fd that we own from here on.
    let raw = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/proc/self/exe".as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(Error::sys("open_tree /proc/self/exe", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd returned by open_tree, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our fd with AT_EMPTY_PATH; `attr` is valid for the call
    // and its size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(Error::sys(
            "make the binary's mount read-only",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// A sealed memfd copy of /proc/self/exe.
fn memfd_copy() -> Result<OwnedFd> {
    let src = std::fs::File::open("/proc/self/exe").ctx(|| "open /proc/self/exe")?;
    let len = src.metadata().ctx(|| "stat /proc/self/exe")?.len();
    let memfd = rustix::fs::memfd_create("vessel-oci", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .ctx(|| "memfd_create")?;
    let mut left = len;
    while left > 0 {
        let n =
            rustix::fs::sendfile(&memfd, &src, None, left as usize).ctx(|| "copy the runtime binary into a memfd")?;
        if n == 0 {
            return Err(Error::Invalid("the runtime binary shrank while it was copied".into()));
        }
        left -= n as u64;
    }
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .ctx(|| "seal the memfd")?;
    Ok(memfd)
}

fn execveat(fd: &OwnedFd) -> Result<()> {
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| Error::Invalid("argument with a NUL byte".into())))
        .collect::<Result<_>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let env: Vec<CString> = std::env::vars_os()
        .chain([(MARK.into(), "1".into())])
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .collect();
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: the fd is open, the path is an empty C string with AT_EMPTY_PATH, and argv
    // and envp are NULL-terminated arrays of C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv_ptrs.as_ptr(),
            env_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Err(Error::sys(
        "re-execute the runtime from a protected copy",
        std::io::Error::last_os_error(),
    ))
}
