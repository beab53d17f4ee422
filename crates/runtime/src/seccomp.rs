//! seccomp filters (runtime-spec config-linux.md "Seccomp"; seccomp(2),
//! seccomp_rule_add(3)) built with libseccomp: default action and errno, the
//! architectures, flags, syscall rules with argument conditions, and the user
//! notification fd for SCMP_ACT_NOTIFY.
//!
//! libseccomp takes 20 to 30 ms to build and compile a profile of docker's or podman's
//! size (400 syscalls on three architectures) on the development machines, more than
//! all the rest of `create`. So the compiled BPF program is cached under the runtime
//! root (`<root>/@seccomp/<sha256>.bpf`, a name no container id can take), keyed by
//! the SHA-256 of the `linux.seccomp` JSON together with libseccomp's version and API
//! level, the kernel release and the architecture; the filter is then loaded with
//! seccomp(2) itself. The directory is root's alone (0700): its files are trusted.

use std::io::{Read, Seek};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall};

use crate::error::{Error, Result};

fn bad(msg: impl Into<String>) -> Error {
    Error::Invalid(format!("linux.seccomp: {}", msg.into()))
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn compare(arg: &oci_spec::runtime::LinuxSeccompArg) -> ScmpArgCompare {
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // The spec's value is the mask and valueTwo the datum (as in libseccomp).
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            (ScmpCompareOp::MaskedEqual(arg.value()), arg.value_two().unwrap_or(0))
        }
    };
    ScmpArgCompare::new(arg.index() as u32, op, datum)
}

/// A compiled filter, ready to load just before the capability change and execve.
pub struct Filter {
    /// The BPF program (struct sock_filter instructions).
    program: Vec<libc::sock_filter>,
    /// seccomp(2) SECCOMP_FILTER_FLAG_* bits.
    flags: libc::c_ulong,
    notify: bool,
}

/// The cache directory of compiled filters under a runtime root.
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join("@seccomp")
}

const SECCOMP_FILTER_FLAG_TSYNC: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_LOG: libc::c_ulong = 2;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 4;
const SECCOMP_FILTER_FLAG_NEW_LISTENER: libc::c_ulong = 8;
const SECCOMP_FILTER_FLAG_TSYNC_ESRCH: libc::c_ulong = 16;
const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: libc::c_ulong = 32;
/// The kernel's limit on one filter's length (BPF_MAXINSNS).
const MAX_INSNS: usize = 4096;
/// Size of one struct sock_filter.
const INSN: usize = 8;

/// Whether a config uses SCMP_ACT_NOTIFY anywhere (then a listener must receive the fd).
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

fn add_rule(ctx: &mut ScmpFilterContext, rule: &LinuxSyscall, default: ScmpAction) -> Result<()> {
    let act = action(rule.action(), rule.errno_ret());
    if act == default {
        // libseccomp refuses rules that repeat the default action; they change nothing.
        return Ok(());
    }
    let args = rule.args().as_deref().unwrap_or(&[]);
    // Conditions on one argument index are alternatives (one rule each, as runc does);
    // conditions on distinct indexes must all hold (one rule with all of them).
    let repeated = args
        .iter()
        .enumerate()
        .any(|(i, a)| args[..i].iter().any(|b| b.index() == a.index()));
    for name in rule.names() {
        let sc = ScmpSyscall::from_name(name).map_err(|_| {
            bad(format!(
                "unknown syscall {name:?}: libseccomp on this host does not know it"
            ))
        })?;
        let res = if args.is_empty() {
            ctx.add_rule(act, sc)
        } else if repeated {
            args.iter()
                .try_for_each(|a| ctx.add_rule_conditional(act, sc, &[compare(a)]).map(|_| ()))
                .map(|_| ctx as &mut ScmpFilterContext)
        } else {
            ctx.add_rule_conditional(act, sc, &args.iter().map(compare).collect::<Vec<_>>())
        };
        res.map_err(|e| bad(format!("rule for {name}: {e}")))?;
    }
    Ok(())
}

/// The seccomp(2) flags for `s` (libseccomp's own mapping of its filter attributes).
fn flags(s: &LinuxSeccomp) -> libc::c_ulong {
    let notify = uses_notify(s);
    let mut f = if notify { SECCOMP_FILTER_FLAG_NEW_LISTENER } else { 0 };
    for flag in s.flags().iter().flatten() {
        f |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync if notify => {
                SECCOMP_FILTER_FLAG_TSYNC | SECCOMP_FILTER_FLAG_TSYNC_ESRCH
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        };
    }
    f
}

/// The cache key of `s`: SHA-256 over everything the compiled program depends on.
fn cache_key(s: &LinuxSeccomp) -> Result<String> {
    use sha2::Digest as _;
    let version = libseccomp::ScmpVersion::current()
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))
        .unwrap_or_default();
    let kernel = rustix::system::uname().release().to_string_lossy().into_owned();
    let json = serde_json::to_vec(s).map_err(|e| bad(e.to_string()))?;
    let mut h = sha2::Sha256::new();
    for part in [
        b"vessel seccomp cache 1".as_slice(),
        version.as_bytes(),
        &libseccomp::get_api().to_le_bytes(),
        kernel.as_bytes(),
        std::env::consts::ARCH.as_bytes(),
        &json,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds `s` with libseccomp and returns the compiled program's bytes.
fn compile(s: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| bad(e.to_string()))?;
    for arch in s.architectures().iter().flatten() {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let a = ScmpArch::from_str(&name).map_err(|_| bad(format!("unknown architecture {name}")))?;
        ctx.add_arch(a).map_err(|e| bad(format!("architecture {name}: {e}")))?;
    }
    for rule in s.syscalls().iter().flatten() {
        add_rule(&mut ctx, rule, default)?;
    }
    // The program goes through an anonymous file: libseccomp 2.5 exports to an fd only.
    let mut f = memfd("vessel-seccomp")?;
    ctx.export_bpf(&f)
        .map_err(|e| bad(format!("compile the filter: {e}")))?;
    let mut bytes = Vec::new();
    f.rewind()
        .and_then(|()| f.read_to_end(&mut bytes))
        .map_err(|e| Error::sys("read the compiled seccomp filter", e))?;
    Ok(bytes)
}

fn memfd(name: &str) -> Result<std::fs::File> {
    rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map(std::fs::File::from)
        .map_err(|e| Error::sys("memfd_create for the seccomp filter", std::io::Error::from(e)))
}

/// The program in `bytes`, if it has a loadable length.
fn program(bytes: &[u8]) -> Option<Vec<libc::sock_filter>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(INSN) || bytes.len() / INSN > MAX_INSNS {
        return None;
    }
    Some(
        bytes
            .chunks_exact(INSN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// Writes a cache entry atomically; a failure only costs the next create its time.
fn store(dir: &Path, key: &str, bytes: &[u8]) {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir);
    let tmp = dir.join(format!(".{key}.{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, dir.join(format!("{key}.bpf"))).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

impl Filter {
    /// Compiles the filter of `linux.seccomp`, or takes it from the cache directory
    /// `cache` (see [`cache_dir`]) when given and it has it; a fresh compilation is
    /// stored there. Meant to run in the runtime, before the container process is
    /// cloned (the cache is on the host).
    ///
    /// Errors: [`Error::Invalid`] naming an unknown syscall, architecture, or a rule
    /// libseccomp refuses.
    pub fn new(s: &LinuxSeccomp, cache: Option<&Path>) -> Result<Filter> {
        let make = |program| Filter {
            program,
            flags: flags(s),
            notify: uses_notify(s),
        };
        let key = match cache {
            Some(_) => Some(cache_key(s)?),
            None => None,
        };
        if let (Some(dir), Some(key)) = (cache, &key) {
            if let Some(p) = std::fs::read(dir.join(format!("{key}.bpf")))
                .ok()
                .as_deref()
                .and_then(program)
            {
                return Ok(make(p));
            }
        }
        let bytes = compile(s)?;
        let p = program(&bytes).ok_or_else(|| {
            bad(format!(
                "the compiled filter has {} bytes: not a program the kernel takes (at most {MAX_INSNS} instructions)",
                bytes.len()
            ))
        })?;
        if let (Some(dir), Some(key)) = (cache, &key) {
            store(dir, key, &bytes);
        }
        Ok(make(p))
    }

    /// Whether the filter has SCMP_ACT_NOTIFY rules: then it is loaded before the
    /// container process reports ready, so that its notify fd reaches the runtime.
    pub fn notifies(&self) -> bool {
        self.notify
    }

    /// Loads the filter into this process with seccomp(2). Returns the notification
    /// fd when the filter has SCMP_ACT_NOTIFY rules.
    ///
    /// Errors: [`Error::Invalid`] when the kernel refuses the filter (without
    /// no_new_privs, loading needs CAP_SYS_ADMIN).
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel
        // copies the program.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return Err(bad(format!("load the filter: {e}")));
        }
        if !self.notify {
            return Ok(None);
        }
        // SAFETY: with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns a new fd for
        // the listener; we own it from here.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as i32) }))
    }
}

/// Sends the notify fd to the seccomp agent at `listenerPath` with SCM_RIGHTS, with the
/// spec's container process state as the message (config-linux.md "Seccomp",
/// runtime.md "State": ociVersion, fds, pid, metadata, state).
///
/// Errors: [`Error::Invalid`] when notify rules have no listenerPath; [`Error::Sys`]
/// when the agent cannot be reached.
pub fn send_to_listener(s: &LinuxSeccomp, fd: OwnedFd, pid: i32, state: &str) -> Result<()> {
    let path = s
        .listener_path()
        .as_ref()
        .ok_or_else(|| bad("SCMP_ACT_NOTIFY needs listenerPath"))?;
    let sock = crate::console::connect(path)?;
    let msg = serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": s.listener_metadata().clone().unwrap_or_default(),
        "state": serde_json::from_str::<serde_json::Value>(state).unwrap_or_default(),
    });
    crate::console::send_fd(&sock, &fd, &msg.to_string())
}
