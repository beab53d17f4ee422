//! Lifecycle hooks (runtime-spec config.md "POSIX-platform Hooks", runtime.md
//! "Lifecycle"): each hook runs with the container's state JSON on stdin, its own args
//! and env (without env: the runtime's environment, or `process.env` for
//! startContainer), and an optional timeout in seconds. prestart, createRuntime,
//! createContainer and startContainer failures fail the operation; poststart and
//! poststop failures are only warned about and the remaining hooks still run, as the
//! spec and crun say.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Error, Result};

/// The phase a hook list belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Deprecated, runs with createRuntime: after namespaces exist, before pivot_root.
    Prestart,
    /// In the runtime's namespaces, after the container's namespaces are made.
    CreateRuntime,
    /// In the container's namespaces, before pivot_root.
    CreateContainer,
    /// In the container, after `start`, before the user program.
    StartContainer,
    /// In the runtime's namespaces, after the user program started.
    Poststart,
    /// In the runtime's namespaces, after the container was deleted.
    Poststop,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }
}

/// The hooks of one phase in config.json, empty if none.
pub fn of(spec: &Spec, phase: Phase) -> &[Hook] {
    let Some(h) = spec.hooks().as_ref() else { return &[] };
    let list = match phase {
        Phase::Prestart => h.prestart(),
        Phase::CreateRuntime => h.create_runtime(),
        Phase::CreateContainer => h.create_container(),
        Phase::StartContainer => h.start_container(),
        Phase::Poststart => h.poststart(),
        Phase::Poststop => h.poststop(),
    };
    list.as_deref().unwrap_or(&[])
}

/// Runs the hooks of `phase` in order with `state` (the state JSON) on stdin; stops at
/// the first failure. A hook without `env` inherits the runtime's environment, as with
/// runc and crun.
///
/// Errors: [`Error::Invalid`] naming the phase, the hook's path and its exit status,
/// stderr text or timeout.
pub fn run(spec: &Spec, phase: Phase, state: &str) -> Result<()> {
    run_with_env(spec, phase, state, None)
}

/// Runs the startContainer hooks inside the container, where a hook without `env` of
/// its own gets `process.env` (the container process's environment, which runc's and
/// crun's init hold when they run these hooks), not the runtime's.
///
/// Errors: as [`run`].
pub fn run_in_container(spec: &Spec, state: &str, process_env: &[String]) -> Result<()> {
    run_with_env(spec, Phase::StartContainer, state, Some(process_env))
}

fn run_with_env(spec: &Spec, phase: Phase, state: &str, default_env: Option<&[String]>) -> Result<()> {
    for hook in of(spec, phase) {
        run_one(hook, state, default_env).map_err(|msg| failed(phase, hook, &msg))?;
    }
    Ok(())
}

fn failed(phase: Phase, hook: &Hook, msg: &str) -> Error {
    Error::Invalid(format!("{} hook {}: {msg}", phase.name(), hook.path().display()))
}

/// Runs every hook of a phase whose failures are only warnings (poststart, poststop:
/// runtime-spec runtime.md "Lifecycle" and crun): a failing hook is reported on stderr
/// and the remaining hooks still run.
pub fn run_warn(spec: &Spec, phase: Phase, state: &str) {
    for hook in of(spec, phase) {
        if let Err(msg) = run_one(hook, state, None) {
            crate::error::warn(&failed(phase, hook, &msg).to_string());
        }
    }
}

fn run_one(hook: &Hook, state: &str, default_env: Option<&[String]>) -> std::result::Result<(), String> {
    let args = hook.args().as_deref().unwrap_or(&[]);
    let mut cmd = Command::new(hook.path());
    if let Some(argv0) = args.first() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
    }
    cmd.args(args.iter().skip(1))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(env) = hook.env().as_deref().or(default_env) {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine (EPIPE is ignored).
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                // Output is captured (as runc does) and reported on failure; a hook that
                // writes more than a pipe holds (64 KiB) before exiting would block.
                let mut err = String::new();
                for out in [
                    child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read>),
                    child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read>),
                ]
                .into_iter()
                .flatten()
                {
                    let mut out = out;
                    let _ = out.read_to_string(&mut err);
                }
                return Err(format!(
                    "{status}{}{}",
                    if err.is_empty() { "" } else { ": " },
                    err.trim()
                ));
            }
            None if deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {}s", hook.timeout().unwrap_or(0)));
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}
