//! `vessel volume create|ls|inspect|rm|prune`, in docker's and podman's conventions.
//! Parsing and printing only; `vessel_engine::volumes` keeps the volumes.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap::Subcommand;
use vessel_engine::{volumes, Engine};

use crate::containers::Format;

/// `vessel volume ...`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a named volume (an existing one is left as it is).
    Create {
        /// `KEY=VALUE` labels.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The volume's name.
        name: String,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Print only the names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show volumes (JSON).
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while containers use them).
    Rm {
        /// A missing volume is no error.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Do not ask for confirmation (prune never asks; accepted for docker's scripts).
        #[arg(short, long)]
        force: bool,
    },
}

fn labels(given: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in given {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            None if !l.is_empty() => {
                out.insert(l.clone(), String::new());
            }
            _ => bail!("invalid --label {l:?}: give KEY=VALUE"),
        }
    }
    Ok(out)
}

pub fn volume(engine: &Engine, c: &VolumeCommand) -> Result<i32> {
    let (paths, db) = (&engine.paths, &engine.db);
    match c {
        VolumeCommand::Create { labels: l, name } => {
            let (v, _) = volumes::create(paths, db, name, &labels(l)?)?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls { format, quiet } => {
            let list = volumes::list(paths, db)?;
            if *format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if *quiet {
                for v in list {
                    println!("{}", v.name);
                }
            } else {
                let mut t = comfy_table::Table::new();
                t.load_preset(comfy_table::presets::NOTHING);
                t.set_header(["DRIVER", "VOLUME NAME"]);
                for v in list {
                    t.add_row([v.driver, v.name]);
                }
                println!("{t}");
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(volumes::find(paths, db, n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { force, names } => {
            for n in names {
                volumes::remove(engine, n, *force)?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune { force: _ } => {
            let (gone, bytes) = volumes::prune(engine, None)?;
            if !gone.is_empty() {
                println!("Deleted Volumes:");
                for n in &gone {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", crate::images::human(bytes));
        }
    }
    Ok(0)
}
