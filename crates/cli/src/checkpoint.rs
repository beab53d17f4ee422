//! `vessel checkpoint` and `vessel restore` (podman's `container checkpoint` and
//! `container restore`): parsing and printing over [`vessel_engine::checkpoint`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use vessel_engine::checkpoint::{self, DumpOptions};
use vessel_engine::Engine;

/// `vessel checkpoint` flags.
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Keep the container running after the checkpoint.
    #[arg(long = "leave-running", short = 'R')]
    pub(crate) leave_running: bool,
    /// Checkpoint established TCP connections.
    #[arg(long = "tcp-established")]
    pub(crate) tcp_established: bool,
    /// Also write the checkpoint to this archive (zstd tar: CRIU images, config,
    /// record, writable layer), for `vessel restore --import` here or on another host.
    #[arg(long, short = 'e')]
    pub(crate) export: Option<PathBuf>,
    /// The container (name, id or id prefix).
    pub(crate) container: String,
}

/// `vessel restore` flags.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Restore from an archive made by `vessel checkpoint --export`.
    #[arg(long, short = 'i', conflicts_with = "container")]
    pub(crate) import: Option<PathBuf>,
    /// With --import: the restored container's name (default: the archived one).
    #[arg(long, short = 'n', requires = "import")]
    pub(crate) name: Option<String>,
    /// The container (name, id or id prefix).
    #[arg(required_unless_present = "import")]
    pub(crate) container: Option<String>,
}

/// `vessel checkpoint NAME`: the CRIU images go to `ROOT/containers/<id>/checkpoint`;
/// prints the container's name.
pub fn checkpoint(engine: &Engine, a: &CheckpointArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    checkpoint::dump_with(
        engine,
        &r.id,
        &checkpoint::images_dir(engine, &r.id),
        DumpOptions {
            leave_running: a.leave_running,
            tcp_established: a.tcp_established,
            page_server: None,
        },
    )?;
    if let Some(file) = &a.export {
        checkpoint::export(engine, &r.id, file)?;
    }
    println!("{}", r.name);
    Ok(0)
}

/// `vessel restore NAME` (from the images `vessel checkpoint` left) or
/// `vessel restore --import FILE [--name NEW]`; prints the name.
pub fn restore(engine: &Engine, a: &RestoreArgs) -> Result<i32> {
    if let Some(file) = &a.import {
        let mut pull = crate::containers::puller(None);
        let r = checkpoint::import(engine, file, a.name.as_deref(), &mut pull)?;
        println!("{}", r.name);
        return Ok(0);
    }
    let Some(name) = &a.container else {
        anyhow::bail!("name a container or --import FILE");
    };
    let r = engine.find(name)?;
    checkpoint::restore_from(engine, &r.id, &checkpoint::images_dir(engine, &r.id))?;
    println!("{}", r.name);
    Ok(0)
}
