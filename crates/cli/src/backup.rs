//! `vessel backup create|restore` (a container with its files, records, snapshots and
//! image, Incus's export/import) and docker's `vessel export` and `vessel import` (a flat
//! file-system tar to and from a container or image).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use vessel_engine::backup::{self, CreateOptions};
use vessel_engine::Engine;
use vessel_image::import::ImportConfig;
use vessel_image::Store;

/// `vessel backup ...`.
#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Write a container's backup (zstd tar with a manifest of digests) to FILE (`-`: stdout).
    Create(CreateArgs),
    /// Make a container from a backup FILE (`-`: stdin), verified whole before anything is written.
    Restore(RestoreArgs),
}

/// `vessel backup create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The container (name, id or id prefix).
    pub name: String,
    /// Where to write the backup (`-`: stdout).
    pub file: String,
    /// Also the container's snapshots.
    #[arg(long)]
    pub include_snapshots: bool,
    /// Also the image (manifest, config and layers, as an OCI layout): restore then needs no registry.
    #[arg(long)]
    pub include_image: bool,
}

/// `vessel backup restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup (`-`: stdin).
    pub file: String,
    /// The restored container's name (default: the one in the backup).
    #[arg(long)]
    pub name: Option<String>,
    /// Require https when the image must be pulled (see `vessel pull --tls-verify`).
    #[arg(long)]
    pub tls_verify: Option<bool>,
}

/// `vessel export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The container (name, id or id prefix).
    pub name: String,
    /// Write to FILE instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// `vessel import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A flat tar of a root file system (`-`: stdin), as `vessel export` writes.
    pub source: String,
    /// The new image's name (IMAGE[:TAG]).
    pub reference: String,
    /// A Dockerfile instruction for the config: CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// EXPOSE, LABEL, STOPSIGNAL, VOLUME (`CMD ["sh"]`, `CMD=sh -c x`).
    #[arg(short, long)]
    pub change: Vec<String>,
    /// The history comment of the new image.
    #[arg(short, long)]
    pub message: Option<String>,
}

/// `vessel backup create|restore`.
pub fn backup(engine: &Engine, c: &BackupCommand) -> Result<i32> {
    match c {
        BackupCommand::Create(a) => {
            let dest = (a.file != "-").then(|| PathBuf::from(&a.file));
            if dest.is_none() && std::io::stdout().is_terminal() {
                bail!("refusing to write a backup to a terminal: name a FILE or redirect stdout");
            }
            let opts = CreateOptions {
                include_snapshots: a.include_snapshots,
                include_image: a.include_image,
            };
            let sum = backup::create(engine, &a.name, dest.as_deref(), &opts)?;
            if let Some(d) = dest {
                eprintln!(
                    "Backup of {} written to {} ({} members, {} bytes of data)",
                    a.name,
                    d.display(),
                    sum.members,
                    sum.bytes
                );
            }
            Ok(0)
        }
        BackupCommand::Restore(a) => {
            let mut input: Box<dyn Read> = if a.file == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?)
            };
            let rec = backup::restore(
                engine,
                &mut input,
                &a.file,
                a.name.as_deref(),
                &mut crate::containers::puller(a.tls_verify),
            )?;
            println!("{}", rec.id);
            Ok(0)
        }
    }
}

/// `vessel export`.
pub fn export(engine: &Engine, a: &ExportArgs) -> Result<i32> {
    match &a.output {
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a tar to a terminal: use -o FILE or redirect stdout");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            vessel_engine::export::export(engine, &a.name, &mut out)?;
            std::io::Write::flush(&mut out).context("write stdout")?;
        }
        Some(path) => {
            let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
            let res = (|| -> Result<()> {
                let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
                vessel_engine::export::export(engine, &a.name, &mut out)?;
                let f = out.into_inner().map_err(|e| e.into_error()).context("write")?;
                f.sync_all().with_context(|| format!("fsync {}", tmp.display()))?;
                std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
                Ok(())
            })();
            if res.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            res?;
        }
    }
    Ok(0)
}

/// `vessel import`: prints the new image's id.
pub fn import(root: &std::path::Path, a: &ImportArgs) -> Result<i32> {
    if a.source.contains("://") {
        bail!(
            "importing from a URL is not supported: download {} first and import the file",
            a.source
        );
    }
    let mut cfg = ImportConfig {
        message: a.message.clone(),
        ..ImportConfig::default()
    };
    for c in &a.change {
        apply_change(&mut cfg, c)?;
    }
    let store = Store::open(root)?;
    let input: Box<dyn Read> = if a.source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&a.source).with_context(|| format!("open {}", a.source))?)
    };
    let rec = vessel_image::import::import_tar(&store, input, &a.source, &a.reference, &cfg)?;
    println!("{}", rec.id);
    Ok(0)
}

/// A value in JSON array form (`["a","b"]`) or shell form (`a b`: `/bin/sh -c 'a b'`).
fn command(v: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(v) {
        Ok(list) => list,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), v.into()],
    }
}

/// Applies one `--change` instruction (`KEY VALUE` or `KEY=VALUE`, docker's and podman's forms).
fn apply_change(cfg: &mut ImportConfig, change: &str) -> Result<()> {
    let change = change.trim();
    let split = change.find([' ', '=']).unwrap_or(change.len());
    let (key, value) = (&change[..split], change[split..].get(1..).unwrap_or("").trim());
    match key.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(command(value)),
        "ENTRYPOINT" => cfg.entrypoint = Some(command(value)),
        "ENV" => {
            let kv = match value.split_once([' ', '=']) {
                Some((k, v)) => format!("{k}={}", v.trim()),
                None => bail!("--change {change:?}: ENV needs KEY=VALUE"),
            };
            cfg.env.push(kv);
        }
        "WORKDIR" => cfg.workdir = Some(value.into()),
        "USER" => cfg.user = Some(value.into()),
        "STOPSIGNAL" => cfg.stop_signal = Some(value.into()),
        "EXPOSE" => {
            for p in value.split_whitespace() {
                cfg.exposed_ports
                    .push(if p.contains('/') { p.into() } else { format!("{p}/tcp") });
            }
        }
        "LABEL" => {
            let Some((k, v)) = value.split_once('=') else {
                bail!("--change {change:?}: LABEL needs KEY=VALUE")
            };
            cfg.labels.push((k.trim().into(), v.trim().trim_matches('"').into()));
        }
        "VOLUME" => match serde_json::from_str::<Vec<String>>(value) {
            Ok(v) => cfg.volumes.extend(v),
            Err(_) => cfg.volumes.extend(value.split_whitespace().map(String::from)),
        },
        _ => bail!(
            "--change {change:?}: unknown instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, STOPSIGNAL, VOLUME)"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_in_docker_and_podman_forms() {
        let mut c = ImportConfig::default();
        apply_change(&mut c, r#"CMD ["sh","-c","echo hi"]"#).unwrap();
        assert_eq!(c.cmd.clone().unwrap(), ["sh", "-c", "echo hi"]);
        apply_change(&mut c, "CMD=/bin/true").unwrap();
        assert_eq!(c.cmd.clone().unwrap(), ["/bin/sh", "-c", "/bin/true"]);
        apply_change(&mut c, "ENV A=1").unwrap();
        apply_change(&mut c, "ENV=B 2").unwrap();
        assert_eq!(c.env, ["A=1", "B=2"]);
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
        apply_change(&mut c, "WORKDIR=/srv").unwrap();
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert!(apply_change(&mut c, "RUN rm -rf /").is_err());
    }
}
