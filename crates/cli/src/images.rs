//! Image commands: pull, images, image inspect/rm/import/export/prune, rmi, login, logout.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use vessel_image::auth::{self, Credentials};
use vessel_image::pull::{LayerOutcome, Progress, PullOptions, Registry};
use vessel_image::{layout, records, Digest, ImageRecord, Platform, Reference, Store};

/// Output format.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// A table for people.
    Table,
    /// JSON for programs.
    Json,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference: registry[:port]/repo[:tag][@digest] (short names mean docker.io).
    pub reference: String,
    /// Platform to take from a multi-arch index, os/arch[/variant] (default: this machine's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Require https and valid certificates (--tls-verify=false: plain http; default: https
    /// except for registries on localhost/127.0.0.1).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tls_verify: Option<bool>,
    /// Credentials USER:PASSWORD (default: from `vessel login` and auth.json files).
    #[arg(long)]
    pub creds: Option<String>,
    /// Print only the image id.
    #[arg(short, long)]
    pub quiet: bool,
    /// Pull an eStargz image lazily: manifest, config and each layer's table of contents
    /// now, the files when read (and the rest in the background); other images whole.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set, default_value_t = false)]
    pub lazy: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Names or ids of images.
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Remove images that containers use (as docker: the containers keep the layers they
    /// stand on until they are removed).
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host[:port].
    pub registry: String,
    /// User name.
    #[arg(short, long)]
    pub username: String,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// As for pull.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub tls_verify: Option<bool>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port].
    pub registry: String,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Pull an image (as `vessel pull`).
    Pull(PullArgs),
    /// List images (as `vessel images`).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show an image's record, manifest and config as JSON.
    Inspect {
        /// Name or id.
        image: String,
    },
    /// Remove images (as `vessel rmi`).
    Rm(RmiArgs),
    /// Import from oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE.
    Import {
        /// Source.
        source: String,
        /// Name to give the image (default: from the source).
        name: Option<String>,
        /// Platform to take from a multi-arch layout.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Export an image to oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    Export {
        /// Name or id.
        image: String,
        /// Destination.
        dest: String,
    },
    /// Remove blobs and layer snapshots that no image uses.
    Prune {
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Give an image more names (as `vessel tag`).
    Tag(crate::commit::TagArgs),
    /// Push an image to a registry (as `vessel push`).
    Push(crate::commit::PushArgs),
    /// Convert a local image: `--estargz` writes eStargz layers (lazy pulling), no prefetch.
    Convert(crate::estargz::ConvertArgs),
    /// Run the image's command (or CMD) without network, record the files it opens in its
    /// first seconds, and write an eStargz image with those first (prefetched by lazy runs).
    Optimize(crate::estargz::OptimizeArgs),
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

/// Progress on a terminal: one bar per layer; otherwise one line per layer event.
pub(crate) struct Bars {
    pub(crate) multi: Option<MultiProgress>,
    pub(crate) bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    /// A bar for blob `digest` of `size` bytes (on a terminal only).
    pub(crate) fn start(&self, digest: &Digest, size: u64) {
        if let Some(m) = &self.multi {
            let pb = m.add(ProgressBar::new(size));
            pb.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            pb.set_prefix(format!("blob {}", digest.short()));
            if let Ok(mut b) = self.bars.lock() {
                b.insert(digest.clone(), pb);
            }
        }
    }

    /// `n` more bytes of blob `digest`.
    pub(crate) fn advance(&self, digest: &Digest, n: u64) {
        if let Ok(b) = self.bars.lock() {
            if let Some(pb) = b.get(digest) {
                pb.inc(n);
            }
        }
    }

    /// Blob `digest` is done: its bar ends with `what` (a line without a terminal).
    pub(crate) fn finish(&self, digest: &Digest, what: &str) {
        match self.bars.lock().ok().and_then(|mut b| b.remove(digest)) {
            Some(pb) => pb.finish_with_message(what.to_string()),
            None => eprintln!("Copying blob {digest} {what}"),
        }
    }
}

impl Progress for Bars {
    fn resolved(&self, reference: &str, manifest: &Digest, layers: usize) {
        let line = format!("Resolved {reference} to {manifest} ({layers} layers)");
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
    fn layer_start(&self, digest: &Digest, size: u64) {
        self.start(digest, size);
    }
    fn layer_bytes(&self, digest: &Digest, n: u64) {
        self.advance(digest, n);
    }
    fn layer_done(&self, digest: &Digest, outcome: LayerOutcome) {
        self.finish(
            digest,
            match outcome {
                LayerOutcome::AlreadyPresent => "already present",
                LayerOutcome::UnpackedFromStore => "unpacked from the store",
                LayerOutcome::Downloaded => "done",
            },
        );
    }
    fn devices_skipped(&self, digest: &Digest, n: u64) {
        let line = format!(
            "WARNING: layer {digest}: {n} device node(s) left out (creating them needs root; \
             the container's /dev is its own)"
        );
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

fn parse_platform(p: &Option<String>) -> Result<Option<Platform>> {
    match p {
        Some(s) => Ok(Some(Platform::parse(s).map_err(anyhow::Error::msg)?)),
        None => Ok(None),
    }
}

pub(crate) fn parse_creds(c: &Option<String>) -> Result<Option<Credentials>> {
    match c {
        Some(s) => {
            let Some((u, p)) = s.split_once(':') else {
                bail!("--creds must be USER:PASSWORD")
            };
            Ok(Some(Credentials {
                username: u.into(),
                password: p.into(),
            }))
        }
        None => Ok(None),
    }
}

/// `vessel pull`.
pub fn pull(root: &Path, a: PullArgs) -> Result<()> {
    let store = Store::open(root)?;
    let reference = Reference::parse(&a.reference)?;
    let opts = PullOptions {
        platform: parse_platform(&a.platform)?,
        tls_verify: a.tls_verify,
        credentials: parse_creds(&a.creds)?,
        ..Default::default()
    };
    let quiet = a.quiet;
    if a.lazy {
        if let Some(rec) = pull_lazy(&store, &reference, &opts)? {
            println!("{}", rec.id.hex());
            return Ok(());
        }
    }
    let multi = (!quiet && std::io::stderr().is_terminal()).then(MultiProgress::new);
    let progress: Arc<dyn Progress> = if quiet {
        Arc::new(vessel_image::pull::NoProgress)
    } else {
        Arc::new(Bars {
            multi,
            bars: Mutex::new(HashMap::new()),
        })
    };
    let rec = runtime()?.block_on(vessel_image::pull::pull(&store, &reference, &opts, progress))?;
    if !quiet {
        eprintln!("Writing manifest to image destination");
    }
    println!("{}", rec.id.hex());
    Ok(())
}

/// Pulls `reference` lazily ([`vessel_image::lazy::pull`]) and starts its layers' servers
/// (the background fetch begins); None, with a note on stderr, when it is not eStargz.
pub(crate) fn pull_lazy(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> vessel_image::Result<Option<ImageRecord>> {
    match vessel_image::lazy::pull(store, reference, opts)? {
        Some(rec) => {
            if let Some(top) = rec.top_chain_id() {
                vessel_image::lazy::ensure_served(store, top)?;
            }
            Ok(Some(rec))
        }
        None => {
            eprintln!(
                "note: {reference} is not an eStargz image (a layer has no {} annotation): pulling it whole",
                vessel_image::lazy::toc::TOC_DIGEST_ANNOTATION
            );
            Ok(None)
        }
    }
}

/// How long ago `secs` (since the Unix epoch) was, in docker's words.
fn ago(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let d = now.saturating_sub(secs).max(0);
    let (n, unit) = match d {
        0..=59 => (d, "second"),
        60..=3599 => (d / 60, "minute"),
        3600..=86399 => (d / 3600, "hour"),
        86400..=1_209_599 => (d / 86400, "day"),
        1_209_600..=5_183_999 => (d / 604_800, "week"),
        5_184_000..=31_535_999 => (d / 2_592_000, "month"),
        _ => (d / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `bytes` in docker's decimal units (`1.234 MB`).
pub(crate) fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.3} {}", units[i])
    }
}

fn split_name(n: &str) -> (String, String) {
    match Reference::parse(n) {
        Ok(r) => (r.name(), r.tag.unwrap_or_else(|| "<none>".into())),
        Err(_) => (n.to_string(), "<none>".into()),
    }
}

/// `vessel images`.
pub fn list(root: &Path, a: ListArgs) -> Result<()> {
    let store = Store::open(root)?;
    let mut images = store.images()?;
    for rec in &mut images {
        rec.unpacked_size = rec.unpacked_size(&store);
    }
    if a.format == Format::Json {
        let mut out = Vec::new();
        for rec in &images {
            let mut v = serde_json::to_value(rec)?;
            v["lazy"] = lazy_json(&store, rec);
            out.push(v);
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    // A LOCAL column (how much of each image's layers is here) once some image is lazy.
    let any_lazy = images.iter().any(|r| vessel_image::lazy::local_bytes(&store, r).2);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    let mut head = vec!["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];
    if any_lazy {
        head.push("LOCAL");
    }
    t.set_header(head);
    for rec in &images {
        let names: Vec<String> = if rec.names.is_empty() {
            vec!["<none>".into()]
        } else {
            rec.names.clone()
        };
        for n in names {
            let (repo, tag) = if n == "<none>" {
                ("<none>".to_string(), "<none>".to_string())
            } else {
                split_name(&n)
            };
            let mut row = vec![
                repo,
                tag,
                rec.id.short().to_string(),
                rec.created_secs().map_or_else(|| "N/A".to_string(), ago),
                human(rec.unpacked_size(&store)),
            ];
            if any_lazy {
                row.push(local_column(&store, rec));
            }
            t.add_row(row);
        }
    }
    println!("{t}");
    Ok(())
}

/// The LOCAL column: `LAZY 34%` (share of the layer blobs' bytes here) while a layer is
/// lazy, `complete` otherwise.
fn local_column(store: &Store, rec: &ImageRecord) -> String {
    let (have, total, lazy) = vessel_image::lazy::local_bytes(store, rec);
    if lazy {
        format!("LAZY {}%", (have * 100).checked_div(total).unwrap_or(0))
    } else {
        "complete".into()
    }
}

/// `{"State": "lazy"|"complete", "LocalBytes": n, "Bytes": n}` of an image's layer blobs.
fn lazy_json(store: &Store, rec: &ImageRecord) -> serde_json::Value {
    let (have, total, lazy) = vessel_image::lazy::local_bytes(store, rec);
    serde_json::json!({
        "State": if lazy { "lazy" } else { "complete" },
        "LocalBytes": have,
        "Bytes": total,
    })
}

fn inspect_json(store: &Store, rec: &ImageRecord) -> Result<serde_json::Value> {
    let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&rec.manifest)?)?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&rec.id)?)?;
    Ok(serde_json::json!({
        "Id": rec.id.hex(),
        "Digest": rec.manifest.to_string(),
        "RepoTags": rec.names,
        "Platform": rec.platform,
        "Size": rec.unpacked_size(store),
        "CompressedSize": rec.size,
        "Created": rec.created,
        "Lazy": lazy_json(store, rec),
        "Record": rec,
        "Manifest": manifest,
        "Config": config,
    }))
}

/// `vessel rmi` / `vessel image rm`: each image is untagged (one of several names) or
/// removed; an image that containers use is refused unless `force`. Layers and blobs no
/// image uses any more are freed when something was removed. Every failure is printed once;
/// the last one is the command's error.
pub fn rmi(root: &Path, a: RmiArgs) -> Result<()> {
    let store = Store::open(root)?;
    // No database yet: no containers (and none is made by looking).
    let db = if root.join("vessel.db").exists() {
        Some(vessel_engine::db::Db::open(root)?)
    } else {
        None
    };
    let mut errors = Vec::new();
    let mut removed = false;
    for name in &a.images {
        match vessel_engine::images::remove(&store, db.as_ref(), name, a.force) {
            Ok(rec) => {
                println!("Untagged/removed: {name} ({})", rec.id.short());
                removed = true;
            }
            Err(e) => errors.push(anyhow::Error::from(e)),
        }
    }
    if removed {
        records::prune(&store)?;
    }
    let last = errors.pop();
    for e in errors {
        eprintln!("vessel: {e:#}");
    }
    match last {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `vessel image ...`.
pub fn image(root: &Path, c: ImageCommand) -> Result<()> {
    match c {
        ImageCommand::Pull(a) => pull(root, a),
        ImageCommand::Ls(a) => list(root, a),
        ImageCommand::Rm(a) => rmi(root, a),
        ImageCommand::Inspect { image } => {
            let store = Store::open(root)?;
            let rec = records::find_image(&store, &image)?;
            println!("{}", serde_json::to_string_pretty(&vec![inspect_json(&store, &rec)?])?);
            Ok(())
        }
        ImageCommand::Import { source, name, platform } => {
            let store = Store::open(root)?;
            let src = layout::Location::parse(&source)?;
            let bars = Bars {
                multi: None,
                bars: Mutex::new(HashMap::new()),
            };
            let rec = layout::import_with_progress(
                &store,
                &src,
                name.as_deref(),
                parse_platform(&platform)?.as_ref(),
                &bars,
            )?;
            println!("{}", rec.id.hex());
            Ok(())
        }
        ImageCommand::Export { image, dest } => {
            let store = Store::open(root)?;
            let rec = records::find_image(&store, &image)?;
            let dst = layout::Location::parse(&dest)?;
            layout::export(&store, &rec, &dst)?;
            Ok(())
        }
        ImageCommand::Tag(a) => crate::commit::tag(root, &a).map(|_| ()),
        ImageCommand::Push(a) => crate::commit::push(root, &a).map(|_| ()),
        ImageCommand::Convert(a) => crate::estargz::convert(root, &a),
        ImageCommand::Optimize(_) => {
            anyhow::bail!("vessel image optimize runs containers: it is dispatched with the engine")
        }
        ImageCommand::Prune { format } => {
            let store = Store::open(root)?;
            let r = records::prune(&store)?;
            if format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "Removed {} blobs, {} snapshots and {} partial files, {} freed",
                    r.blobs.len(),
                    r.snapshots.len(),
                    r.partials,
                    human(r.bytes)
                );
            }
            Ok(())
        }
    }
}

/// `vessel login`.
pub fn login(root: &Path, a: LoginArgs) -> Result<()> {
    let password = match (a.password, a.password_stdin) {
        (Some(p), false) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("read the password from standard input")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        _ => bail!("give exactly one of --password and --password-stdin"),
    };
    let creds = Credentials {
        username: a.username,
        password,
    };
    let reference = Reference::parse(&format!("{}/vessel/login-check", a.registry))?;
    let opts = PullOptions {
        tls_verify: a.tls_verify,
        credentials: Some(creds.clone()),
        ..Default::default()
    };
    let store = Store::open(root)?;
    let reg = Registry::connect(&store, &reference, &opts)?;
    runtime()?.block_on(reg.check_login())?;
    auth::save(root, &reference.registry, &creds)?;
    println!("Login Succeeded!");
    Ok(())
}

/// `vessel logout`.
pub fn logout(root: &Path, a: LogoutArgs) -> Result<()> {
    let registry = Reference::parse(&format!("{}/x", a.registry))?.registry;
    if auth::remove(root, &registry)? {
        println!("Removed login credentials for {registry}");
        Ok(())
    } else {
        bail!("not logged in to {registry}")
    }
}
