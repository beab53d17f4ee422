//! `vessel system check|prune`, in docker's and podman's conventions. Parsing and
//! printing only; the engine does the work.

use anyhow::Result;
use clap::Subcommand;
use vessel_engine::Engine;

/// `vessel system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Report leftovers (dead monitors, stray mounts, runtime state, bundles) and repair them.
    Check {
        /// Only report.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove exited containers and images no container uses.
    Prune {
        /// Do not ask (kept for docker's command line; vessel never asks).
        #[arg(short = 'f', long)]
        force: bool,
    },
}

pub fn system(engine: &Engine, c: &SystemCommand) -> Result<i32> {
    match c {
        SystemCommand::Check { dry_run } => {
            let found = engine.check(!dry_run)?;
            for f in &found {
                println!("{f}{}", if *dry_run { "" } else { ": repaired" });
            }
            if found.is_empty() {
                println!("no problems found");
            }
            Ok(if found.is_empty() || !dry_run { 0 } else { 1 })
        }
        SystemCommand::Prune { .. } => {
            let (containers, images) = engine.prune()?;
            println!("Deleted containers: {}", containers.len());
            for c in containers {
                println!("  {c}");
            }
            println!("Deleted images: {}", images.len());
            for i in images {
                println!("  {i}");
            }
            let warm = vessel_engine::network::drain_all(&engine.paths)?;
            println!("Released warm network attachments: {warm}");
            Ok(0)
        }
    }
}
