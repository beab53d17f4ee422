//! `vessel snapshot create|ls|show|rm|restore|run-due`, with Incus's verbs. Parsing and
//! printing only; `vessel_engine::snapshots` does the work.

use anyhow::Result;
use clap::Subcommand;
use vessel_engine::snapshots::{self, CreateOptions, SnapshotInfo};
use vessel_engine::Engine;

use crate::containers::Format;

/// `vessel snapshot ...`.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Take a snapshot of a container's files (a running container is frozen meanwhile).
    Create {
        /// The container.
        container: String,
        /// The snapshot's name [default: the next snapN: snap0, snap1, ...].
        snapshot: Option<String>,
        /// Also checkpoint the processes (CRIU).
        #[arg(long)]
        stateful: bool,
        /// Remove the snapshot this long after it is taken (7d, 12h, 30m) when `vessel
        /// snapshot run-due` runs [default: the container's --snapshot-expiry, or never].
        #[arg(long)]
        expiry: Option<String>,
    },
    /// List a container's snapshots.
    #[command(alias = "list")]
    Ls {
        /// The container.
        container: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show a snapshot (JSON).
    Show {
        /// The container.
        container: String,
        /// The snapshot.
        snapshot: String,
    },
    /// Remove a snapshot.
    #[command(alias = "delete")]
    Rm {
        /// The container.
        container: String,
        /// The snapshot.
        snapshot: String,
    },
    /// Put a container's files back as they were in a snapshot (a running container is
    /// stopped and started again around it).
    Restore {
        /// The container.
        container: String,
        /// The snapshot.
        snapshot: String,
        /// Also restore the processes from the snapshot's checkpoint (CRIU).
        #[arg(long)]
        stateful: bool,
    },
    /// Take the snapshots that containers' schedules make due and remove expired ones
    /// (for a systemd timer: contrib/systemd/vessel-snapshot.timer).
    RunDue {
        /// Only say what would be done.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `vessel snapshot` command; returns the exit code.
pub fn snapshot(engine: &Engine, c: &SnapshotCommand) -> Result<i32> {
    match c {
        SnapshotCommand::Create {
            container,
            snapshot,
            stateful,
            expiry,
        } => {
            let r = engine.find(container)?;
            let opts = CreateOptions {
                name: snapshot.clone(),
                expiry: expiry.clone(),
                stateful: *stateful,
            };
            let info = snapshots::create(engine, &r, &opts)?;
            println!("{}", info.name);
        }
        SnapshotCommand::Ls { container, format } => {
            let r = engine.find(container)?;
            let all = snapshots::list(engine, &r)?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => print_table(&all),
            }
        }
        SnapshotCommand::Show { container, snapshot } => {
            let r = engine.find(container)?;
            let info = snapshots::show(engine, &r, snapshot)?;
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        SnapshotCommand::Rm { container, snapshot } => {
            let r = engine.find(container)?;
            snapshots::remove(engine, &r, snapshot)?;
            println!("{snapshot}");
        }
        SnapshotCommand::Restore {
            container,
            snapshot,
            stateful,
        } => {
            let r = engine.find(container)?;
            snapshots::restore(engine, &r, snapshot, *stateful)?;
            println!("{snapshot}");
        }
        SnapshotCommand::RunDue { dry_run } => {
            let (lines, ok) = snapshots::run_due(engine, *dry_run)?;
            for l in &lines {
                println!("{l}");
            }
            return Ok(if ok { 0 } else { 1 });
        }
    }
    Ok(0)
}

pub(crate) fn print_table(all: &[SnapshotInfo]) {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(vec!["NAME", "CREATED", "EXPIRES", "SIZE", "STATEFUL"]);
    for s in all {
        t.add_row(vec![
            s.name.clone(),
            s.created.clone(),
            s.expires.clone().unwrap_or_else(|| "never".into()),
            crate::images::human(s.size),
            if s.stateful { "yes" } else { "no" }.to_string(),
        ]);
    }
    println!("{t}");
}
