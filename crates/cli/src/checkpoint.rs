//! `vessel checkpoint` and `vessel restore` (podman's `container checkpoint` and
//! `container restore`): parsing and printing over [`vessel_engine::checkpoint`].

use anyhow::Result;
use clap::Args;
use vessel_engine::checkpoint::{self, DumpOptions};
use vessel_engine::Engine;

/// `vessel checkpoint` flags.
#[derive(Args, Debug)]
pub struct CheckpointArgs {
    /// Keep the container running after the checkpoint.
    #[arg(long = "leave-running", short = 'R')]
    leave_running: bool,
    /// Checkpoint established TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// The container (name, id or id prefix).
    container: String,
}

/// `vessel restore` flags.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The container (name, id or id prefix).
    container: String,
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
        },
    )?;
    println!("{}", r.name);
    Ok(0)
}

/// `vessel restore NAME`: from the images `vessel checkpoint` left; prints the name.
pub fn restore(engine: &Engine, a: &RestoreArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    checkpoint::restore_from(engine, &r.id, &checkpoint::images_dir(engine, &r.id))?;
    println!("{}", r.name);
    Ok(0)
}
