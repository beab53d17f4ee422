//! Checkpoint and restore of a container (podman's `container checkpoint` and
//! `restore`) through the runtime's CRIU support ([`vessel_runtime::checkpoint`]).
//!
//! The monitor is the container's parent and holds its stdio pipes. A dump without
//! `leave_running` ends the init; the monitor reaps it as any exit, but a marker in
//! its run dir ([`CHECKPOINTED`]) keeps an `--rm` container's files and record. A
//! restore starts a new monitor (`vessel __monitor ID --restore DIR`) which makes new
//! pipes and has the runtime restore the container with CRIU, which reconnects the
//! dumped init's stdio to them (`--inherit-fd`); the restored init is the monitor's
//! child, so its exit is reaped and recorded as after `run`.

use std::path::{Path, PathBuf};

use vessel_runtime::checkpoint::CheckpointOptions;

use crate::db::State;
use crate::error::{Error, IoContext, Result};
use crate::Engine;

/// Name of the marker a dump leaves in the monitor's run dir before it ends the init.
pub const CHECKPOINTED: &str = "checkpointed";

/// What `vessel checkpoint` asks for besides the images dir.
#[derive(Debug, Clone, Copy, Default)]
pub struct DumpOptions {
    /// Keep the container running.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
}

/// Where `vessel checkpoint` keeps a container's CRIU images:
/// `ROOT/containers/<id>/checkpoint`.
pub fn images_dir(engine: &Engine, id: &str) -> PathBuf {
    engine.paths.bundle(id).join("checkpoint")
}

/// Dumps the running container `id` into `images_dir` (made if missing; emptied
/// first); unless `leave_running`, the container then is exited, its files kept.
/// For stateful snapshots: the writable layer is not copied here.
///
/// Errors: [`Error::WrongState`] unless running or paused; the runtime's CRIU errors.
pub fn dump(engine: &Engine, id: &str, images_dir: &Path, leave_running: bool) -> Result<()> {
    dump_with(
        engine,
        id,
        images_dir,
        DumpOptions {
            leave_running,
            ..Default::default()
        },
    )
}

/// [`dump`] with every option.
pub fn dump_with(engine: &Engine, id: &str, images_dir: &Path, opts: DumpOptions) -> Result<()> {
    let r = engine.db.get(id)?.ok_or_else(|| Error::NoSuchContainer(id.into()))?;
    if !matches!(r.state, State::Running | State::Paused) {
        return Err(Error::WrongState(format!(
            "cannot checkpoint container {}: it is {}, not running",
            r.name,
            r.state.as_str()
        )));
    }
    let c = engine.runtime(id).ok_or_else(|| {
        Error::WrongState(format!(
            "container {} has no runtime state: run `vessel system check`",
            r.name
        ))
    })?;
    let spec = engine.spec(&r)?;
    if images_dir.exists() {
        std::fs::remove_dir_all(images_dir).at("remove old checkpoint", images_dir)?;
    }
    let marker = engine.paths.run_dir(id).join(CHECKPOINTED);
    if !opts.leave_running {
        std::fs::write(&marker, b"").at("write", &marker)?;
    }
    let done = c.checkpoint(
        &spec,
        &CheckpointOptions {
            image_path: images_dir.to_path_buf(),
            leave_running: opts.leave_running,
            tcp_established: opts.tcp_established,
            ..Default::default()
        },
    );
    if let Err(e) = done {
        let _ = std::fs::remove_file(&marker);
        return Err(e.into());
    }
    if !opts.leave_running && !engine.wait_exit(id, Some(std::time::Duration::from_secs(30)))? {
        return Err(Error::WrongState(format!(
            "container {} was dumped but its monitor did not record the exit",
            r.name
        )));
    }
    Ok(())
}

/// Restores container `id` (its record, bundle and root file system already in
/// place, and not running) from the CRIU images in `images_dir`, through a new monitor.
/// Returns the restored init's pid.
///
/// Errors: [`Error::WrongState`] when it runs; the monitor's restore errors.
pub fn restore_from(engine: &Engine, id: &str, images_dir: &Path) -> Result<i32> {
    let r = engine.db.get(id)?.ok_or_else(|| Error::NoSuchContainer(id.into()))?;
    if r.state.is_live() {
        return Err(Error::WrongState(format!(
            "cannot restore container {}: it is {}",
            r.name,
            r.state.as_str()
        )));
    }
    if !images_dir.join("inventory.img").exists() {
        return Err(Error::BadInput(format!(
            "{} holds no checkpoint of container {}: run `vessel checkpoint {}` first",
            images_dir.display(),
            r.name,
            r.name
        )));
    }
    let images = std::path::absolute(images_dir).at("resolve", images_dir)?;
    engine.spawn_monitor_with(id, Some(&images))
}
