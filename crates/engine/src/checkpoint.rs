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

pub mod archive;
mod userns;

use std::path::{Path, PathBuf};

use vessel_image::{ImageRecord, Store};
use vessel_runtime::checkpoint::CheckpointOptions;

use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::Engine;

/// Name of the marker a dump leaves in the monitor's run dir before it ends the init.
pub const CHECKPOINTED: &str = "checkpointed";

/// What `vessel checkpoint` asks for besides the images dir.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// Keep the container running.
    pub leave_running: bool,
    /// Dump established TCP connections.
    pub tcp_established: bool,
    /// Send the memory pages to a CRIU page server at `ADDR:PORT` instead of the
    /// images dir (a migration's target).
    pub page_server: Option<String>,
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
    crate::timing::mark("checkpoint: criu dump");
    let done = c.checkpoint(
        &spec,
        &CheckpointOptions {
            image_path: images_dir.to_path_buf(),
            leave_running: opts.leave_running,
            tcp_established: opts.tcp_established,
            page_server: opts.page_server.clone(),
            ..Default::default()
        },
    );
    if let Err(e) = done {
        let _ = std::fs::remove_file(&marker);
        return Err(e.into());
    }
    crate::timing::mark("checkpoint: dumped");
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
    crate::timing::mark("restore: spawn the monitor");
    let pid = engine.spawn_monitor_with(id, Some(&images));
    crate::timing::mark("restore: the monitor reported");
    pid
}

/// The writable layer (overlay upper dir) of container `id`.
pub fn upper_dir(engine: &Engine, id: &str) -> PathBuf {
    engine
        .paths
        .store_root()
        .join("snapshots")
        .join("active")
        .join(id)
        .join("upper")
}

/// Writes the checkpointed (exited) container `id` to the archive `file`: its record,
/// config, CRIU images (as [`dump`] left them in [`images_dir`]) and writable layer.
///
/// Errors: [`Error::WrongState`] while it runs; [`Error::BadInput`] without images.
pub fn export(engine: &Engine, id: &str, file: &Path) -> Result<()> {
    export_with(engine, id, file, true)
}

/// [`export`]; `durable`: the archive is synced to disk before it is renamed into
/// place (a migration's archive, sent at once and removed, is not).
///
/// Errors: those of [`export`].
pub fn export_with(engine: &Engine, id: &str, file: &Path, durable: bool) -> Result<()> {
    let r = engine.db.get(id)?.ok_or_else(|| Error::NoSuchContainer(id.into()))?;
    let images = images_dir(engine, id);
    if !images.join("inventory.img").exists() {
        return Err(Error::BadInput(format!(
            "container {} has no checkpoint to export: run `vessel checkpoint {}` first",
            r.name, r.name
        )));
    }
    archive::export(
        file,
        &r,
        &engine.paths.bundle(id).join("config.json"),
        &images,
        &upper_dir(engine, id),
        durable,
    )
}

/// Brings back the container of a checkpoint archive (made by [`export`], on this or
/// another root), running, under its name or `name`. Every member's digest is checked
/// before anything is made; the image must be here (or `pull` gets it). On error
/// nothing is left of it.
///
/// Errors: [`Error::BadInput`] for a damaged or altered archive; [`Error::NameInUse`]
/// when the name is taken; the restore's errors.
pub fn import(
    engine: &Engine,
    file: &Path,
    name: Option<&str>,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<Record> {
    import_with(engine, file, name, pull, None, &mut |_| Ok(()))
}

/// [`import`] for a migration: the CRIU page images (`pagemap-*.img`, `pages-*.img`)
/// that a page server received into `pages` are moved beside the archive's images
/// before the restore, and `made` is told the new container's record as soon as it
/// exists (so that a killed receiver's leftovers can be found).
///
/// Errors: those of [`import`].
pub fn import_with(
    engine: &Engine,
    file: &Path,
    name: Option<&str>,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
    pages: Option<&Path>,
    made: &mut dyn FnMut(&Record) -> Result<()>,
) -> Result<Record> {
    crate::timing::mark("import: verify the archive");
    let old = archive::verify(file)?;
    let rec = prepare_import(engine, &old, name, pull, made)?;
    restore_prepared(engine, file, &old, &rec, pages)
}

/// The first half of an import: makes the container of the record `old` (from a
/// checkpoint archive, or sent ahead by a migration's source while the container still
/// runs there) under its name or `name`, with its bundle, root file system and config,
/// and its overlay unmounted so that the writable layer can be filled; `made` is told
/// the new record first. [`restore_prepared`] finishes it. On error nothing is left.
///
/// Errors: [`Error::NameInUse`] when the name is taken; image and bundle errors.
pub fn prepare_import(
    engine: &Engine,
    old: &Record,
    name: Option<&str>,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
    made: &mut dyn FnMut(&Record) -> Result<()>,
) -> Result<Record> {
    let mut opts = old.options.clone();
    let name = name.unwrap_or(&old.name).to_string();
    if engine.db.find(&name).is_ok() {
        return Err(Error::NameInUse(name));
    }
    opts.name = Some(name);
    opts.rm = old.options.rm;
    crate::timing::mark("import: make the container");
    let rec = engine.make(opts, pull, false)?;
    let done = (|| -> Result<()> {
        made(&rec)?;
        // The overlay is written only while unmounted; the monitor mounts it again.
        crate::rootfs::unmount(&engine.paths.bundle(&rec.id))
    })();
    if let Err(e) = done {
        let _ = engine.purge(&rec);
        return Err(e);
    }
    Ok(rec)
}

/// The second half of an import: fills the writable layer and CRIU images of the
/// container `rec` made by [`prepare_import`] from the archive `file` (checked by the
/// caller with [`archive::verify`], which gave `old`, the record it holds; the writable
/// layer and CRIU's user namespace images move from `old`'s id range to `rec`'s), moves in the page images a page server received
/// into `pages`, and restores it. On error nothing is left of it.
///
/// Errors: the archive's and the restore's errors.
pub fn restore_prepared(
    engine: &Engine,
    file: &Path,
    old: &Record,
    rec: &Record,
    pages: Option<&Path>,
) -> Result<Record> {
    let restored = (|| -> Result<()> {
        let images = images_dir(engine, &rec.id);
        std::fs::create_dir_all(&images).at("create", &images)?;
        crate::timing::mark("import: extract the archive");
        let upper = upper_dir(engine, &rec.id);
        archive::extract(file, &images, &upper)?;
        // A container in its own user namespace got this root's range: its files and
        // the user namespace CRIU restores move to it.
        let (old_ids, new_ids) = (old.options.id_mappings.as_ref(), rec.options.id_mappings.as_ref());
        if old_ids != new_ids {
            crate::rootfs::idmapped::remap_tree(&upper, old_ids, new_ids)?;
            if let Some(ids) = new_ids {
                userns::remap(&images, ids)?;
            }
        }
        if let Some(pages) = pages {
            for e in std::fs::read_dir(pages).at("read", pages)? {
                let e = e.at("read", pages)?;
                let to = images.join(e.file_name());
                std::fs::rename(e.path(), &to).at("move page image to", &to)?;
            }
        }
        crate::timing::mark("import: restore through a new monitor");
        restore_from(engine, &rec.id, &images).map(|_| ())
    })();
    if let Err(e) = restored {
        let _ = engine.purge(rec);
        return Err(e);
    }
    crate::timing::mark("import: running");
    engine.db.get(&rec.id)?.ok_or(Error::NoSuchContainer(rec.id.clone()))
}
