//! seccomp filters (runtime-spec config-linux.md "Seccomp"; seccomp(2),
//! seccomp_rule_add(3)) built with libseccomp: default action and errno, the
//! architectures, flags, syscall rules with argument conditions, and the user
//! notification fd for SCMP_ACT_NOTIFY.

use std::os::fd::{FromRawFd, OwnedFd};
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

/// A compiled filter, ready to load as the last step before execve.
pub struct Filter {
    ctx: ScmpFilterContext,
    notify: bool,
}

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

impl Filter {
    /// Builds the filter of `linux.seccomp`.
    ///
    /// Errors: [`Error::Invalid`] naming an unknown syscall, architecture, or a rule
    /// libseccomp refuses.
    pub fn new(s: &LinuxSeccomp) -> Result<Filter> {
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
        for flag in s.flags().iter().flatten() {
            let r = match flag {
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
            };
            r.map_err(|e| bad(format!("flag {flag:?}: {e}")))?;
        }
        // no_new_privs is ours to set (process.noNewPrivileges), not libseccomp's.
        ctx.set_ctl_nnp(false).map_err(|e| bad(e.to_string()))?;
        for rule in s.syscalls().iter().flatten() {
            add_rule(&mut ctx, rule, default)?;
        }
        Ok(Filter {
            ctx,
            notify: uses_notify(s),
        })
    }

    /// Loads the filter into this process. Returns the notification fd when the filter
    /// has SCMP_ACT_NOTIFY rules.
    ///
    /// Errors: [`Error::Invalid`] when the kernel refuses the filter (without
    /// no_new_privs, loading needs CAP_SYS_ADMIN).
    pub fn load(&self) -> Result<Option<OwnedFd>> {
        self.ctx.load().map_err(|e| bad(format!("load the filter: {e}")))?;
        if !self.notify {
            return Ok(None);
        }
        let fd = self.ctx.get_notify_fd().map_err(|e| bad(format!("notify fd: {e}")))?;
        // SAFETY: libseccomp hands us a new fd for the listener; we own it from here.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
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
