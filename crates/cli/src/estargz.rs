//! `vessel image convert --estargz` and `vessel image optimize`: eStargz images from local
//! images (the writing is vessel-image's `estargz` module).

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use vessel_image::estargz::{self, WriteOptions, DEFAULT_CHUNK_SIZE};
use vessel_image::{records, Reference, Store};

/// `vessel image convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Write eStargz layers (the only conversion there is; required, as in `ctr-remote
    /// image convert --estargz`).
    #[arg(long)]
    pub estargz: bool,
    /// Largest chunk of a regular file in the eStargz layers, bytes.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub estargz_chunk_size: u64,
    /// A local image (name or id).
    pub source: String,
    /// The new image's name, registry[:port]/repo[:tag].
    pub destination: String,
}

/// Converts `src` to eStargz under `dest` with `opts`; prints the new image id.
pub(crate) fn convert_to(root: &Path, src: &str, dest: &str, opts: &WriteOptions) -> Result<()> {
    let store = Store::open(root)?;
    let rec = records::find_image(&store, src)?;
    let name = Reference::parse(dest)?.to_string();
    let (new, layers) = estargz::convert(&store, &rec, &name, opts)?;
    for l in &layers {
        eprintln!(
            "Converted layer {} to {} (TOC {}, {} prioritized files)",
            l.from.short(),
            l.digest,
            l.toc_digest,
            l.prioritized
        );
    }
    println!("{}", new.id.hex());
    Ok(())
}

/// `vessel image convert --estargz SRC DST`.
pub fn convert(root: &Path, a: &ConvertArgs) -> Result<()> {
    if !a.estargz {
        bail!("vessel image convert: say which format: --estargz (the only one vessel writes)");
    }
    if a.estargz_chunk_size == 0 {
        bail!("--estargz-chunk-size must be more than 0 bytes");
    }
    let opts = WriteOptions {
        chunk_size: a.estargz_chunk_size,
        ..WriteOptions::default()
    };
    convert_to(root, &a.source, &a.destination, &opts)
}

/// `vessel image optimize`.
#[derive(Args, Debug)]
pub struct OptimizeArgs {
    /// How long to record the files the command opens, seconds.
    #[arg(long, default_value_t = 10)]
    pub period: u64,
    /// Largest chunk of a regular file in the eStargz layers, bytes.
    #[arg(long, default_value_t = DEFAULT_CHUNK_SIZE)]
    pub estargz_chunk_size: u64,
    /// A local image (name or id).
    pub source: String,
    /// The new image's name, registry[:port]/repo[:tag].
    pub destination: String,
    /// The command to run instead of the image's CMD (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `vessel image optimize SRC DST [-- CMD]`: runs the image's command (or CMD) in a
/// container without network for `--period` seconds, records the files it opens, and
/// writes an eStargz image with those first, followed by the prefetch landmark.
pub fn optimize(engine: &vessel_engine::Engine, a: &OptimizeArgs) -> Result<i32> {
    if a.estargz_chunk_size == 0 {
        bail!("--estargz-chunk-size must be more than 0 bytes");
    }
    let opts = vessel_engine::options::RunOptions {
        image: a.source.clone(),
        command: a.command.clone(),
        network: Some("none".into()),
        // As `vessel run` takes it (its --cgroup-parent's environment variable).
        cgroup_parent: std::env::var("VESSEL_CGROUP_PARENT").ok().filter(|p| !p.is_empty()),
        ..Default::default()
    };
    let mut no_pull = |_: &Store, name: &str| -> vessel_image::Result<vessel_image::ImageRecord> {
        records::find_image(&Store::open(&engine.paths.root)?, name)
    };
    let files = engine.record_opens(opts, std::time::Duration::from_secs(a.period), &mut no_pull)?;
    eprintln!("Recorded {} files opened in the first {} s", files.len(), a.period);
    let opts = WriteOptions {
        chunk_size: a.estargz_chunk_size,
        prioritized: files,
        ..WriteOptions::default()
    };
    convert_to(&engine.paths.root, &a.source, &a.destination, &opts)?;
    Ok(0)
}
