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
