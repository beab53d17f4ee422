//! `vessel migrate` (live migration to another vessel host) and its hidden helpers:
//! `migrate-receive` (the target's side, started through the transport) and
//! `__migrate-guard` (finishes or undoes a migration whose command died). Parsing and
//! printing over [`vessel_engine::migrate`].

use std::io::{BufReader, Write};

use anyhow::Result;
use clap::Args;
use vessel_engine::migrate::{self, receive, MigrateOptions};
use vessel_engine::Engine;

/// `vessel migrate` flags.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The vessel binary on the target [default: `vessel` on its PATH].
    #[arg(long = "remote-vessel")]
    remote_vessel: Option<String>,
    /// Keep established TCP connections (CRIU --tcp-established).
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// The running container (name, id or id prefix).
    container: String,
    /// The target: a remote added with `vessel remote add` (its `vessel serve
    /// --listen`, mutual TLS), ssh://[user@]HOST[:PORT][/ROOT] (ROOT: the target's
    /// --root), or local:///ROOT (another root on this same host only).
    // Its own id: `remote` is the global `--remote` flag's, which would take it.
    #[arg(id = "target", value_name = "REMOTE")]
    remote: String,
}

/// `vessel migrate-receive` flags (internal).
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// Receive a migration under this token (the protocol on stdin/stdout).
    #[arg(long, conflicts_with = "status", required_unless_present = "status")]
    token: Option<String>,
    /// Print the outcome of the receive TOKEN (`running NAME` or `absent`).
    #[arg(long)]
    status: Option<String>,
}

/// `vessel __migrate-guard` flags (internal).
#[derive(Args, Debug)]
pub struct GuardArgs {
    #[arg(long)]
    token: String,
    /// The target as `vessel migrate` was given it (not `--remote`: that is the global
    /// flag's).
    #[arg(long = "target")]
    remote: String,
    #[arg(long = "remote-vessel")]
    remote_vessel: Option<String>,
    /// The source container's id.
    id: String,
}

/// `vessel migrate NAME REMOTE`: prints the mode, each step and the frozen time.
pub fn migrate(engine: &Engine, a: &MigrateArgs) -> Result<i32> {
    let opts = MigrateOptions {
        tcp_established: a.tcp_established,
        remote_vessel: a.remote_vessel.clone(),
    };
    let mut say = |s: &str| {
        println!("{s}");
        let _ = std::io::stdout().flush();
    };
    let dir = client_dir(engine);
    let r = crate::migrate_api::transport(&dir, &a.remote, a.remote_vessel.as_deref())?;
    let s = migrate::migrate_via(engine, &a.container, &a.remote, r, &opts, &mut say)?;
    println!(
        "migrated {} to {}: frozen {} ms (dump {} ms), page stream {} bytes, archive {} bytes, total {} ms",
        s.name,
        a.remote,
        s.frozen.as_millis(),
        s.dump.as_millis(),
        s.page_bytes,
        s.archive_bytes,
        s.total.as_millis()
    );
    Ok(0)
}

/// `vessel migrate-receive --token T` (the protocol) or `--status T`.
pub fn receive(engine: &Engine, a: &ReceiveArgs) -> Result<i32> {
    if let Some(t) = &a.status {
        match receive::status(engine, t)? {
            Some(name) => println!("running {name}"),
            None => println!("absent"),
        }
        return Ok(0);
    }
    let Some(token) = &a.token else {
        anyhow::bail!("give --token or --status");
    };
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut out = std::io::stdout().lock();
    let mut pull = crate::containers::puller(None);
    receive::receive(engine, token, &mut input, &mut out, &mut pull)?;
    Ok(0)
}

/// `vessel __migrate-guard`: waits on stdin for the migrate command's steps.
pub fn guard(engine: &Engine, a: &GuardArgs) -> Result<i32> {
    let r = crate::migrate_api::transport(&client_dir(engine), &a.remote, a.remote_vessel.as_deref())?;
    let mut input = BufReader::new(std::io::stdin().lock());
    if let Some(done) = migrate::guard(engine, &a.id, r.as_ref(), &a.token, &mut input)? {
        eprintln!("vessel: migration of {} ended without its command: {done}", a.id);
    }
    Ok(0)
}

/// The client configuration of this root (`vessel remote add`'s remotes): migration
/// runs as root, whose configuration is `ROOT/client`.
pub fn client_dir(engine: &Engine) -> std::path::PathBuf {
    crate::remote::client_dir(&engine.paths.root, true)
}
