//! `vessel exec`: the process to start in a running container, built from its
//! config.json's process and the user's flags (docker's `exec` semantics: the
//! container's env, user and capabilities unless overridden).

use oci_spec::runtime::{Capability, LinuxCapabilitiesBuilder, Process, UserBuilder};

use crate::db::Record;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::rootfs::HOST_IMAGE;
use crate::users;

/// What the user asked `exec` for.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The command and arguments.
    pub command: Vec<String>,
    /// `-e K=V` (appended; later entries win).
    pub env: Vec<String>,
    /// `-u USER[:GROUP]`.
    pub user: Option<String>,
    /// `-w DIR`.
    pub workdir: Option<String>,
    /// `-t`.
    pub tty: bool,
    /// `--privileged`: every capability available (see `run --privileged`).
    pub privileged: bool,
    /// With `tty`: the terminal's size, (rows, columns), set on the process's pty
    /// before it starts (OCI `process.consoleSize`), so that its first instruction
    /// already sees it.
    pub console_size: Option<(u16, u16)>,
}

/// The process for `exec` in container `r` whose config is `spec`.
///
/// Errors: [`Error::BadInput`] for an empty command, unknown users.
pub fn process(paths: &Paths, r: &Record, spec: &oci_spec::runtime::Spec, req: &ExecRequest) -> Result<Process> {
    if req.command.is_empty() {
        return Err(Error::BadInput("vessel exec: no command given".into()));
    }
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(req.command.clone()));
    p.set_terminal(Some(req.tty));
    let size = req.console_size.filter(|(h, w)| req.tty && *h > 0 && *w > 0);
    p.set_console_size(size.and_then(|(h, w)| {
        oci_spec::runtime::BoxBuilder::default()
            .height(u64::from(h))
            .width(u64::from(w))
            .build()
            .ok()
    }));
    let mut env = p.env().clone().unwrap_or_default();
    for e in &req.env {
        let (k, v) = match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match std::env::var(e) {
                Ok(v) => (e.clone(), v),
                Err(_) => continue,
            },
        };
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(a, _)| a) != k);
        env.push(format!("{k}={v}"));
    }
    if req.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    p.set_env(Some(env));
    if let Some(w) = &req.workdir {
        p.set_cwd(w.into());
    }
    if let Some(u) = &req.user {
        let root = if r.image_id == HOST_IMAGE {
            std::path::PathBuf::from("/")
        } else {
            paths.bundle(&r.id).join("rootfs")
        };
        let ru = users::resolve(&root, Some(u))?;
        p.set_user(
            UserBuilder::default()
                .uid(ru.uid)
                .gid(ru.gid)
                .additional_gids(ru.additional_gids)
                .build()
                .map_err(|e| Error::BadInput(format!("user {u}: {e}")))?,
        );
    }
    if req.privileged {
        // Every capability available here, as `run --privileged` counts them (the kernel's,
        // within vessel's own bounding set: more would make capset(2) fail).
        let names: Vec<String> = crate::config::available_capabilities()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let all: std::collections::HashSet<Capability> = crate::config::to_spec_caps(&names);
        p.set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(all.clone())
                .effective(all.clone())
                .permitted(all)
                // Empty, not the builder's default three: none are inherited across
                // execve (CVE-2022-27651), as with `run`.
                .inheritable(std::collections::HashSet::new())
                .ambient(std::collections::HashSet::new())
                .build()
                .map_err(|e| Error::BadInput(format!("capabilities: {e}")))?,
        ));
    }
    Ok(p)
}
