//! The last steps before a container process becomes the user's program
//! (runtime-spec config.md "Process"): finding the executable, closing every fd the
//! runtime holds beyond stdio and `--preserve-fds` (CVE-2024-21626), a cwd checked to
//! lie inside the rootfs, default signal dispositions, and execve(2).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program ready for execve(2): resolved path, argv, envp.
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn cstring(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Invalid(format!("{what} {s:?} contains a NUL byte")))
}

impl Program {
    /// Resolves `process.args[0]` the way execvp(3) would with the process's own PATH
    /// (runc's message when it is missing: `exec: "x": executable file not found in $PATH`).
    /// Call it inside the container's root, after chdir to the cwd.
    ///
    /// Errors: [`Error::Invalid`] for empty args or NUL bytes, [`Error::Sys`] with
    /// ENOENT or EACCES for a missing or non-executable program.
    pub fn new(process: &Process) -> Result<Program> {
        let args = process.args().as_deref().unwrap_or(&[]);
        let first = args
            .first()
            .ok_or_else(|| Error::Invalid("process.args is empty".into()))?;
        let env = process.env().as_deref().unwrap_or(&[]);
        let path_var = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        let path = if first.contains('/') {
            let p = PathBuf::from(first);
            check_executable(&p).map_err(|e| Error::sys(format!("exec: {first:?}"), e))?;
            p
        } else {
            path_var
                .split(':')
                .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(first))
                .find(|p| check_executable(p).is_ok())
                .ok_or_else(|| {
                    Error::sys(
                        format!("exec: {first:?}: executable file not found in $PATH"),
                        std::io::Error::from_raw_os_error(libc::ENOENT),
                    )
                })?
        };
        Ok(Program {
            path: CString::new(path.as_os_str().as_bytes())
                .map_err(|_| Error::Invalid("program path has a NUL byte".into()))?,
            argv: args.iter().map(|a| cstring(a, "argument")).collect::<Result<_>>()?,
            envp: env
                .iter()
                .map(|e| cstring(e, "environment entry"))
                .collect::<Result<_>>()?,
        })
    }

    /// Resets the signal mask and dispositions and calls execve(2). Returns only on
    /// failure, with the error.
    pub fn exec(&self) -> Error {
        reset_signals();
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: path, argv and envp are NUL-terminated C strings and NULL-terminated
        // arrays that live until execve returns (it only returns on failure).
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        Error::sys(format!("exec {:?}", self.path), std::io::Error::last_os_error())
    }
}

fn check_executable(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p)?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    Ok(())
}

/// Marks every fd from `first` up close-on-exec (close_range(2) with
/// CLOSE_RANGE_CLOEXEC), so nothing of the runtime reaches the container's program.
pub fn cloexec_from(first: u32) -> Result<()> {
    // SAFETY: close_range takes plain integers and changes only fd flags.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc != 0 {
        return Err(Error::sys("close_range", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Changes into `process.cwd` and checks that the kernel can name the result from the
/// current root: a cwd reached through a leaked fd (CVE-2024-21626) is not below the
/// root, and getcwd(2) then fails or answers "(unreachable)".
///
/// Errors: [`Error::Sys`] naming the cwd.
pub fn chdir_checked(cwd: &Path) -> Result<()> {
    std::env::set_current_dir(cwd).ctx(|| format!("chdir to cwd {}", cwd.display()))?;
    match std::env::current_dir() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => Err(Error::Invalid(format!(
            "cwd {} resolves outside the container's root",
            cwd.display()
        ))),
    }
}

/// Empties the signal mask and sets every disposition back to default (Rust ignores
/// SIGPIPE, and ignored signals survive execve).
pub fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: SIG_DFL is a valid disposition for every catchable signal.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set, initialised by sigemptyset, passed by pointer for the call.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}
