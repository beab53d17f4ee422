//! Images from containers and to registries: commit, diff, push, tag (docker's and podman's
//! commands and flags).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::Args;
use indicatif::MultiProgress;
use vessel_engine::commit::CommitRequest;
use vessel_engine::Engine;
use vessel_image::pull::PullOptions;
use vessel_image::push::{NoPushProgress, PushProgress};
use vessel_image::{records, Digest, Reference, Store};

use crate::images::{parse_creds, runtime, Bars, Format};

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// The container (name, id or id prefix).
    pub container: String,
    /// The new image's name, IMAGE[:TAG] (none: an image without a name).
    pub image: Option<String>,
    /// Commit message (the history entry's comment).
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author ("Name <email>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// A Dockerfile instruction for the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
    /// WORKDIR, STOPSIGNAL, VOLUME (`CMD ["sh"]`, `ENV=K=V`); may be repeated.
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Pause a running container while its changes are read.
    #[arg(short, long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set)]
    pub pause: bool,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The container (name, id or id prefix).
    pub container: String,
    /// Output format: docker's `A|C|D PATH` lines, or JSON.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// A local image (name or id).
    pub image: String,
    /// Where to push, registry[:port]/repo[:tag] (`docker://` allowed); default: the
    /// image's own name.
    pub destination: Option<String>,
    /// As for pull: --tls-verify=false for a plain-http registry.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tls_verify: Option<bool>,
    /// Credentials USER:PASSWORD (default: from `vessel login` and auth.json files).
    #[arg(long)]
    pub creds: Option<String>,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// A local image (name or id).
    pub image: String,
    /// New names, registry[:port]/repo[:tag].
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `vessel commit`.
pub fn commit(e: &Engine, a: &CommitArgs) -> Result<i32> {
    let r = e.find(&a.container)?;
    let req = CommitRequest {
        name: a.image.clone(),
        message: a.message.clone(),
        author: a.author.clone(),
        changes: a.changes.clone(),
        pause: a.pause,
    };
    let rec = e.commit(&r, &req)?;
    println!("{}", rec.id.hex());
    Ok(0)
}

/// `vessel diff`.
pub fn diff(e: &Engine, a: &DiffArgs) -> Result<i32> {
    let r = e.find(&a.container)?;
    let changes = e.diff(&r)?;
    if a.format == Format::Json {
        let v: Vec<serde_json::Value> = changes
            .iter()
            .map(|c| serde_json::json!({"Path": c.path, "Kind": c.kind.letter().to_string()}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for c in changes {
            println!("{} {}", c.kind.letter(), c.path);
        }
    }
    Ok(0)
}

impl PushProgress for Bars {
    fn blob_start(&self, digest: &Digest, size: u64) {
        self.start(digest, size);
    }
    fn blob_bytes(&self, digest: &Digest, n: u64) {
        self.advance(digest, n);
    }
    fn blob_done(&self, digest: &Digest, skipped: bool) {
        self.finish(digest, if skipped { "skipped: already exists" } else { "done" });
    }
}

/// `vessel push`.
pub fn push(root: &Path, a: &PushArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let rec = records::find_image(&store, &a.image)?;
    let dest = match &a.destination {
        Some(d) => Reference::parse(d.strip_prefix("docker://").unwrap_or(d))?,
        None => Reference::parse(&a.image)
            .ok()
            .filter(|r| rec.names.contains(&r.to_string()))
            .or_else(|| rec.names.first().and_then(|n| Reference::parse(n).ok()))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "image {} has no name to push to: give a destination (vessel push IMAGE REGISTRY/REPO:TAG)",
                    a.image
                )
            })?,
    };
    let opts = PullOptions {
        tls_verify: a.tls_verify,
        credentials: parse_creds(&a.creds)?,
        ..Default::default()
    };
    let progress: Arc<dyn PushProgress> = if a.quiet {
        Arc::new(NoPushProgress)
    } else {
        Arc::new(Bars {
            multi: std::io::stderr().is_terminal().then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
        })
    };
    if !a.quiet {
        eprintln!("Pushing {} to {dest}", rec.id.short());
    }
    let report = runtime()?.block_on(vessel_image::push::push(&store, &rec, &dest, &opts, progress))?;
    if !a.quiet {
        eprintln!("Writing manifest to image destination");
        if let Some(m) = report.manifest {
            println!("{m}");
        }
    }
    Ok(0)
}

/// `vessel tag` / `vessel image tag`.
pub fn tag(root: &Path, a: &TagArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let mut rec = records::find_image(&store, &a.image)?;
    let mut names = Vec::new();
    for n in &a.names {
        names.push(Reference::parse(n)?.to_string());
    }
    rec.names = names;
    records::add_image(&store, rec)?;
    Ok(0)
}
