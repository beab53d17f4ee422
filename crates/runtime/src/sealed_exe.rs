//! CVE-2019-5736: a container process must never reach the runtime's binary on the
//! host through /proc/PID/exe (directly, or by running `#!/proc/self/exe` while the
//! runtime enters the container) and overwrite it. Before a command that enters a
//! container, the runtime re-executes itself from a sealed memfd copy (memfd_create(2)
//! with F_SEAL_WRITE, SHRINK, GROW, SEAL), as runc does: /proc/PID/exe then names an
//! anonymous, unwritable copy.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{MemfdFlags, SealFlags};

use crate::error::{Context, Error, Result};

const MARK: &str = "_VESSEL_SEALED_EXE";

/// Whether this process already runs from a sealed memfd copy.
pub fn is_sealed() -> bool {
    std::fs::read_link("/proc/self/exe").is_ok_and(|p| p.as_os_str().as_bytes().starts_with(b"/memfd:"))
}

/// Re-executes the current binary from a sealed memfd unless it already runs from
/// one. Returns only when nothing had to be done (or on error).
///
/// Errors: [`Error::Sys`] naming the step (memfd_create, copy, seal, execveat).
pub fn ensure() -> Result<()> {
    if std::env::var_os(MARK).is_some() {
        std::env::remove_var(MARK);
        if is_sealed() {
            return Ok(());
        }
    }
    let mut src = std::fs::File::open("/proc/self/exe").ctx(|| "open /proc/self/exe")?;
    let memfd = rustix::fs::memfd_create("vessel-oci", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ctx(|| "memfd_create")?;
    let mut dst = std::fs::File::from(memfd);
    std::io::copy(&mut src, &mut dst).ctx(|| "copy the runtime binary into a memfd")?;
    rustix::fs::fcntl_add_seals(&dst, SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE).ctx(|| "seal the memfd")?;
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
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open, the path is an empty C string with AT_EMPTY_PATH, and argv
    // and envp are NULL-terminated arrays of C strings that outlive the call.
    unsafe {
        libc::syscall(libc::SYS_execveat, dst.as_raw_fd(), c"".as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr(), libc::AT_EMPTY_PATH);
    }
    Err(Error::sys("re-execute the runtime from a sealed memfd", std::io::Error::last_os_error()))
}
