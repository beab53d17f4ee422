//! The last steps before a container process becomes the user's program
//! (runtime-spec config.md "Process"): finding the executable, closing every fd the
//! runtime holds beyond stdio and `--preserve-fds` (CVE-2024-21626), a cwd checked to
//! lie inside the rootfs, default signal dispositions, the user change, and then,
//! under the seccomp filter, only the capability sets and execve(2).
//!
//! The split is what keeps a seccomp profile from breaking the runtime: everything the
//! process does for itself happens in [`prepare`], before the filter; [`Prepared::confine`]
//! loads the filter and sets the capabilities, and [`Prepared::exec`] is one execve.

use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};
use crate::seccomp::Filter;
use crate::security::{self, CapMasks, CapSets};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A program ready for execve(2): resolved path, argv, envp, and their NULL-terminated
/// pointer arrays, built in advance so that [`Program::exec`] allocates nothing.
pub struct Program {
    path: CString,
    // Kept alive for the pointers below (a CString's bytes do not move with it).
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
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
        let argv: Vec<CString> = args.iter().map(|a| cstring(a, "argument")).collect::<Result<_>>()?;
        let envp: Vec<CString> = env
            .iter()
            .map(|e| cstring(e, "environment entry"))
            .collect::<Result<_>>()?;
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter().map(|s| s.as_ptr()).chain([std::ptr::null()]).collect()
        };
        Ok(Program {
            path: CString::new(path.as_os_str().as_bytes())
                .map_err(|_| Error::Invalid("program path has a NUL byte".into()))?,
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            _argv: argv,
            _envp: envp,
        })
    }

    /// Calls execve(2) and nothing else (the signal dispositions were reset by
    /// [`prepare`]). Returns only on failure, with the error.
    pub fn exec(&self) -> Error {
        // SAFETY: path is a NUL-terminated C string; argv_ptrs and envp_ptrs are
        // NULL-terminated arrays of pointers into the CStrings this struct owns, which
        // live until execve returns (it only returns on failure).
        unsafe { libc::execve(self.path.as_ptr(), self.argv_ptrs.as_ptr(), self.envp_ptrs.as_ptr()) };
        Error::sys(format!("exec {:?}", self.path), std::io::Error::last_os_error())
    }
}

/// A container process (init or `exec`) that has done everything it does for itself:
/// what remains is [`Prepared::confine`] and [`Prepared::exec`].
pub struct Prepared {
    program: Program,
    caps: CapMasks,
    nnp: bool,
}

/// Everything a container process does for itself before its seccomp filter (runc's
/// order, with the filter moved past all of it): bounding set, cwd (as root first, as
/// the user when root may not enter it, as runc does) checked inside the root with
/// getcwd(2), the AppArmor/SELinux exec labels, the user change (groups, gid, uid,
/// umask), the program lookup, the final capability sets computed and checked,
/// no_new_privs, every fd from `3 + preserve_fds` up close-on-exec, and default signal
/// dispositions. Without no_new_privs, every permitted capability is left effective
/// for the filter's load (it needs CAP_SYS_ADMIN).
///
/// Errors: the step that failed, with its path or id.
pub fn prepare(process: &Process, preserve_fds: u32) -> Result<Prepared> {
    let cwd = process.cwd();
    let caps = CapSets::new(process.capabilities().as_ref());
    caps.drop_bounding()?;
    let chdir_as_user = match std::env::set_current_dir(cwd) {
        Ok(()) => false,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => true,
        Err(e) => return Err(Error::sys(format!("chdir to cwd {}", cwd.display()), e)),
    };
    security::set_lsm_labels(process)?;
    security::set_user(process)?;
    if chdir_as_user {
        std::env::set_current_dir(cwd).ctx(|| format!("chdir to cwd {} as the container's user", cwd.display()))?;
    }
    check_cwd(cwd)?;
    let program = Program::new(process)?;
    let masks = caps.masks()?;
    let nnp = process.no_new_privileges() == Some(true);
    if !nnp {
        security::raise_permitted()?;
    }
    security::set_no_new_privs(process)?;
    cloexec_from(3 + preserve_fds)?;
    reset_signals();
    Ok(Prepared {
        program,
        caps: masks,
        nnp,
    })
}

impl Prepared {
    /// Loads the seccomp filter and sets the final capabilities: without no_new_privs
    /// the filter first (it needs CAP_SYS_ADMIN, as runc does), with it the
    /// capabilities first, so that as little as possible runs under the filter. Returns
    /// the notify fd of a filter with SCMP_ACT_NOTIFY rules.
    ///
    /// Errors: the kernel's refusal of the filter or of the capability sets.
    pub fn confine(&self, filter: Option<&Filter>) -> Result<Option<OwnedFd>> {
        let mut notify = None;
        if let Some(f) = filter.filter(|_| !self.nnp) {
            notify = f.load()?;
        }
        self.caps.apply()?;
        if let Some(f) = filter.filter(|_| self.nnp) {
            notify = f.load()?;
        }
        Ok(notify)
    }

    /// execve(2) of the program; returns only on failure.
    pub fn exec(&self) -> Error {
        self.program.exec()
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

/// Checks that the kernel can name the current directory (`process.cwd`, just
/// entered) from the current root: a cwd reached through a leaked fd (CVE-2024-21626)
/// is not below the root, and getcwd(2) then fails or answers "(unreachable)".
///
/// Errors: [`Error::Invalid`] naming the cwd.
fn check_cwd(cwd: &Path) -> Result<()> {
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
