//! `vessel system check|prune|reset`, in docker's and podman's conventions. Parsing and
//! printing only; the engine does the work.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Result};
use clap::Subcommand;
use vessel_engine::Engine;

/// `vessel system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Report leftovers (dead monitors, stray mounts, runtime state, bundles, network
    /// attachments of deleted roots, unfinished snapshot operations) and repair them.
    Check {
        /// Only report.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove stopped containers and dangling images (-a: every image no container uses),
    /// and release warm network attachments.
    Prune {
        /// Remove every image no container uses, not only dangling ones.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not ask (kept for docker's command line; vessel never asks).
        #[arg(short = 'f', long)]
        force: bool,
    },
    /// This host's load: running containers, their memory, the host's memory and PSI.
    Load {
        /// As JSON (what `vessel balance` reads).
        #[arg(long)]
        json: bool,
    },
    /// Remove everything of this root: containers, images, networks, warm attachments,
    /// and what vessel made on the host for it (the bridge vessel0 and the plugins'
    /// iptables chains once no other root uses them).
    Reset {
        /// Do not ask for confirmation.
        #[arg(short = 'f', long)]
        force: bool,
    },
}

/// Runs a `vessel system` command; returns the exit code.
pub fn system(engine: &Engine, c: &SystemCommand) -> Result<i32> {
    match c {
        SystemCommand::Check { dry_run } => {
            let mut found = engine.check(!dry_run)?;
            found.extend(vessel_engine::network::check_gone_roots(&engine.paths, !dry_run)?);
            found.extend(vessel_engine::snapshots::check(engine, !dry_run)?);
            found.extend(vessel_engine::idmap::check(&engine.db, !dry_run)?);
            for f in &found {
                println!("{f}{}", if *dry_run { "" } else { ": repaired" });
            }
            if found.is_empty() {
                println!("no problems found");
            }
            Ok(if found.is_empty() || !dry_run { 0 } else { 1 })
        }
        SystemCommand::Load { json } => crate::balance::load(engine, *json),
        SystemCommand::Prune { all, .. } => {
            let pruned = engine.prune_system(*all)?;
            println!("Deleted containers: {}", pruned.containers.len());
            for c in pruned.containers {
                println!("  {c}");
            }
            println!("Deleted images: {}", pruned.images.len());
            for i in pruned.images {
                println!("  {i}");
            }
            let warm = vessel_engine::network::drain_all(&engine.paths)?;
            println!("Released warm network attachments: {warm}");
            Ok(0)
        }
        SystemCommand::Reset { force } => {
            if !force && !confirm(engine)? {
                println!("nothing removed");
                return Ok(0);
            }
            for line in engine.reset()? {
                println!("removed {line}");
            }
            Ok(0)
        }
    }
}

/// Asks on the terminal whether to reset the root (podman's question); refuses when
/// stdin is not a terminal.
fn confirm(engine: &Engine) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!(
            "vessel system reset removes everything of {}: confirm on a terminal, or pass -f",
            engine.paths.root.display()
        );
    }
    print!(
        "WARNING! This will remove every container, image, network and warm network \
         attachment of {}.\nAre you sure you want to continue? [y/N] ",
        engine.paths.root.display()
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
