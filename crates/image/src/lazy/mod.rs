//! Lazy layers (eStargz, containerd/stargz-snapshotter docs/estargz.md): a layer whose
//! manifest descriptor carries the `containerd.io/snapshot/stargz/toc.digest` annotation is
//! pulled as its footer and TOC only, and served through FUSE by a `vessel-lazy` process
//! per layer (shared by every container on it) until its blob has arrived in the
//! background; then it becomes an ordinary snapshot and the server exits.
//!
//! - [`toc`]: the footer and the TOC JSON.
//! - [`fetch`]: range requests with `vessel pull`'s credentials and a bounded retry time.
//! - [`cache`]: the local blob copy (every chunk checked against its `chunkDigest`).
//! - [`load`]: missing spans into the copy, each byte fetched once (readers, prefetch and
//!   background fetch share it; the background yields to readers).
//! - [`fs`]: the FUSE file system; [`serve`]: the server process's life.
//!
//! On disk, per layer: `ROOT/snapshots/lazy/<chain-id hex>/` with `layer.json` (where the
//! blob is and what it must be), `toc.json`, `parent`, `mnt/` (the FUSE mount, an overlay
//! lower while the layer is lazy), `blob` + `ranges.json` (the copy), `serve.lock` (held by
//! the live server) and `serve.log` (its log: refused chunks, fetch failures).

pub mod cache;
pub mod fetch;
pub mod fs;
pub mod load;
pub mod serve;
pub mod toc;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::pull::PullOptions;
use crate::records::ImageRecord;
use crate::reference::Reference;
use crate::store::{tmp_name, Store};
use fetch::Fetcher;
use toc::{parse_footer, parse_toc, Toc, FOOTER_SIZE, MAX_TOC_SIZE, TOC_DIGEST_ANNOTATION};

/// The server binary's name, installed beside `vessel`.
pub const SERVER: &str = "vessel-lazy";

/// The files of one lazy layer.
#[derive(Clone, Debug)]
pub struct LazyPaths {
    /// `ROOT/snapshots/lazy/<chain-id hex>`.
    pub dir: PathBuf,
}

impl LazyPaths {
    /// The paths of lazy layer `chain` in `store`.
    pub fn new(store: &Store, chain: &Digest) -> LazyPaths {
        LazyPaths {
            dir: lazy_root(store).join(chain.hex()),
        }
    }
    /// The FUSE mount point.
    pub fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
    /// The lock the live server holds.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("serve.lock")
    }
    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("serve.log")
    }
    /// Whether this lazy layer exists.
    pub fn exists(&self) -> bool {
        self.dir.join("layer.json").is_file()
    }
}

fn lazy_root(store: &Store) -> PathBuf {
    store.root().join("snapshots").join("lazy")
}

/// What a lazy layer is and where its blob is (`layer.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LazyLayer {
    /// The image reference pulled (its registry and repository hold the blob).
    pub reference: String,
    /// `--tls-verify` of the pull.
    pub tls_verify: Option<bool>,
    /// Blob digest.
    pub digest: Digest,
    /// Blob size, bytes.
    pub size: u64,
    /// The uncompressed tar's digest (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The snapshot it becomes.
    pub chain_id: Digest,
    /// The snapshot below it.
    pub parent: Option<Digest>,
    /// sha256 of the TOC JSON (the manifest annotation).
    pub toc_digest: Digest,
    /// Where the TOC's gzip member starts in the blob.
    pub toc_offset: u64,
}

impl LazyLayer {
    /// Reads `layer.json`.
    ///
    /// # Errors
    /// [`ImageError::Io`], [`ImageError::Json`].
    pub fn read(paths: &LazyPaths) -> Result<LazyLayer> {
        let f = paths.dir.join("layer.json");
        let text = std::fs::read(&f).ctx("read", &f)?;
        serde_json::from_slice(&text).map_err(|e| ImageError::Json {
            what: f.display().to_string(),
            source: e,
        })
    }

    /// The stored TOC, checked again against its digest.
    ///
    /// # Errors
    /// [`ImageError::Lazy`] when it was changed, [`ImageError::Io`].
    pub fn toc(&self, paths: &LazyPaths) -> Result<Toc> {
        let f = paths.dir.join("toc.json");
        let text = std::fs::read(&f).ctx("read", &f)?;
        let actual = Digest::of_bytes(&text);
        if actual != self.toc_digest {
            return Err(ImageError::Lazy {
                layer: self.digest.clone(),
                reason: format!("{} has digest {actual}, not {}", f.display(), self.toc_digest),
                hint: ": remove the image and pull it again",
            });
        }
        serde_json::from_slice(&text).map_err(|e| ImageError::Json {
            what: f.display().to_string(),
            source: e,
        })
    }
}

/// Whether `path` is a mount point (a dead FUSE mount, whose stat fails with ENOTCONN,
/// counts).
pub fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else { return false };
    match (rustix::fs::stat(path), rustix::fs::stat(parent)) {
        (Err(rustix::io::Errno::NOTCONN), _) => true,
        (Ok(a), Ok(b)) => a.st_dev != b.st_dev,
        _ => false,
    }
}

/// Detaches the mount on `path` (MNT_DETACH: gone from the tree at once).
pub fn detach(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
}

/// Pulls `reference` lazily: manifest, config, and each layer's footer and TOC (checked
/// against the layer's TOC digest annotation); the image record is written and the
/// layers wait under `ROOT/snapshots/lazy/` for [`ensure_served`]. Returns None, having
/// fetched nothing but the manifest and config, when a layer is not eStargz (the caller
/// pulls normally then).
///
/// Call it outside an async runtime (it runs its own).
///
/// # Errors
/// Registry and verification errors, [`ImageError::Lazy`] for a bad footer or TOC.
pub fn pull(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<Option<ImageRecord>> {
    let _gc = store.gc_lock(false)?;
    store.remove_stale_tmp();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ImageError::io("start the async runtime", store.root(), e))?;
    let (_reg, resolved, m) = rt.block_on(crate::pull::resolve_remote(store, reference, opts))?;
    drop(rt);
    let mut tocs = Vec::new();
    for l in m.layers() {
        let ann = l.annotations().as_ref().and_then(|a| a.get(TOC_DIGEST_ANNOTATION));
        match ann.map(|a| Digest::parse(a)) {
            Some(Ok(d)) => tocs.push(d),
            _ => return Ok(None),
        }
    }
    let root = lazy_root(store);
    std::fs::create_dir_all(&root).ctx("create", &root)?;
    let snaps = store.snapshots();
    for ((spec, _), toc_digest) in resolved.layers.iter().zip(tocs) {
        let paths = LazyPaths::new(store, &spec.chain_id);
        if (snaps.has(&spec.chain_id) && store.has_blob(&spec.digest)) || paths.exists() {
            continue;
        }
        if spec.size <= FOOTER_SIZE {
            return Err(ImageError::Lazy {
                layer: spec.digest.clone(),
                reason: format!("{} bytes is too small for an eStargz layer", spec.size),
                hint: ": pull it without --lazy",
            });
        }
        let fetcher = Fetcher::new(store, reference, opts.tls_verify, spec.digest.clone())?;
        let footer = fetcher.range(spec.size - FOOTER_SIZE, spec.size)?;
        let toc_offset = parse_footer(&spec.digest, &footer)?;
        if toc_offset >= spec.size - FOOTER_SIZE || spec.size - FOOTER_SIZE - toc_offset > MAX_TOC_SIZE {
            return Err(ImageError::Lazy {
                layer: spec.digest.clone(),
                reason: format!("footer names TOC offset {toc_offset}, outside the blob"),
                hint: ": pull it without --lazy",
            });
        }
        let member = fetcher.range(toc_offset, spec.size - FOOTER_SIZE)?;
        let (_toc, json) = parse_toc(&spec.digest, &member, &toc_digest)?;
        let meta = LazyLayer {
            reference: reference.to_string(),
            tls_verify: opts.tls_verify,
            digest: spec.digest.clone(),
            size: spec.size,
            diff_id: spec.diff_id.clone(),
            chain_id: spec.chain_id.clone(),
            parent: spec.parent.clone(),
            toc_digest,
            toc_offset,
        };
        let tmp = root.join(format!(".tmp-{}", tmp_name()));
        let r = (|| {
            std::fs::create_dir_all(tmp.join("mnt")).ctx("create", tmp.join("mnt"))?;
            std::fs::write(tmp.join("toc.json"), &json).ctx("write", tmp.join("toc.json"))?;
            if let Some(p) = &meta.parent {
                std::fs::write(tmp.join("parent"), p.hex()).ctx("write", tmp.join("parent"))?;
            }
            let text = serde_json::to_vec_pretty(&meta).unwrap_or_default();
            std::fs::write(tmp.join("layer.json"), text).ctx("write", tmp.join("layer.json"))?;
            std::fs::rename(&tmp, &paths.dir).ctx("rename into place", &paths.dir)
        })();
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&tmp);
            if !paths.exists() {
                return Err(e);
            }
        }
    }
    crate::pull::finish(store, resolved, vec![reference.to_string()]).map(Some)
}

/// The server program: `$VESSEL_LAZY_SERVER`, else [`SERVER`] beside the running binary.
///
/// # Errors
/// The running binary cannot be found.
pub fn program() -> std::io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VESSEL_LAZY_SERVER") {
        return Ok(PathBuf::from(p));
    }
    Ok(std::env::current_exe()?.with_file_name(SERVER))
}

/// The layer an active snapshot (a container's) stands on, if any.
pub fn active_parent(store: &Store, key: &str) -> Option<Digest> {
    let f = store.root().join("snapshots").join("active").join(key).join("parent");
    std::fs::read_to_string(f)
        .ok()
        .and_then(|s| Digest::from_hex(s.trim()).ok())
}

/// The lazy layers in the chain from `top` down (topmost first).
pub fn lazy_chain(store: &Store, top: &Digest) -> Vec<Digest> {
    let snaps = store.snapshots();
    let mut out = Vec::new();
    let mut cur = Some(top.clone());
    while let Some(c) = cur.take() {
        if out.len() > 500 {
            break;
        }
        let dir = if snaps.has(&c) {
            snaps.dir(&c)
        } else {
            let p = LazyPaths::new(store, &c);
            if !p.exists() {
                break;
            }
            out.push(c.clone());
            p.dir
        };
        cur = std::fs::read_to_string(dir.join("parent"))
            .ok()
            .and_then(|s| Digest::from_hex(s.trim()).ok());
    }
    out
}

/// Makes sure each lazy layer under `top` has a live server and mount: a dead server's
/// mount is detached and a new server started (it finds what was cached). Returns once
/// every mount is up.
///
/// # Errors
/// [`ImageError::Lazy`] when a server cannot be started or fails before its mount is up
/// (its log's last line is in the message).
pub fn ensure_served(store: &Store, top: &Digest) -> Result<()> {
    for chain in lazy_chain(store, top) {
        let paths = LazyPaths::new(store, &chain);
        if !is_stale(&paths)? && is_mount_point(&paths.mnt()) {
            continue;
        }
        if is_mount_point(&paths.mnt()) {
            detach(&paths.mnt());
        }
        start(store, &paths, &chain)?;
    }
    Ok(())
}

/// Whether the layer has no live server (its lock is free).
fn is_stale(paths: &LazyPaths) -> Result<bool> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock())
        .ctx("open", paths.lock())?;
    Ok(rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared).is_ok())
}

fn start(store: &Store, paths: &LazyPaths, chain: &Digest) -> Result<()> {
    let layer = LazyLayer::read(paths)?.digest;
    let fail = |reason: String| ImageError::Lazy {
        layer: layer.clone(),
        reason,
        hint: ": see the log named above",
    };
    let prog = program().map_err(|e| fail(format!("find the {SERVER} program: {e}")))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .ctx("open", paths.log())?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(&prog)
            .arg("--root")
            .arg(store.root())
            .arg(chain.hex())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("start {}: {e}", prog.display())))?
    };
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    // The program forks the server off and exits (no zombie of ours); reap it.
    let _ = child.wait();
    if line.trim() != "ready" {
        let tail = std::fs::read_to_string(paths.log()).unwrap_or_default();
        let last = tail.lines().last().unwrap_or("").to_string();
        return Err(fail(format!(
            "{SERVER} exited before its mount was up: {last} (log: {})",
            paths.log().display()
        )));
    }
    Ok(())
}

/// Detaches the mounts of lazy layers whose server is gone (killed): nothing stays stuck.
/// Returns the mount points cleaned.
pub fn reap(store: &Store) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(lazy_root(store)) else {
        return out;
    };
    for e in rd.flatten() {
        let paths = LazyPaths { dir: e.path() };
        if paths.exists() && is_mount_point(&paths.mnt()) && is_stale(&paths).unwrap_or(false) {
            detach(&paths.mnt());
            out.push(paths.mnt());
        }
    }
    out
}

/// How much of an image is local: (bytes of its layer blobs present, their total, whether
/// some layer is still lazy).
pub fn local_bytes(store: &Store, rec: &ImageRecord) -> (u64, u64, bool) {
    let snaps = store.snapshots();
    let (mut have, mut total, mut lazy) = (0, 0, false);
    for l in &rec.layers {
        total += l.size;
        let paths = LazyPaths::new(store, &l.chain_id);
        if snaps.has(&l.chain_id) {
            have += l.size;
        } else if paths.exists() {
            lazy = true;
            have += cache::present_bytes(&paths.dir).min(l.size);
        }
    }
    (have, total, lazy)
}

/// The environment variable bounding the partial blob copies of lazy layers that no server
/// is using, bytes (default [`DEFAULT_CACHE_LIMIT`]); `vessel image prune` enforces it.
pub const CACHE_LIMIT_ENV: &str = "VESSEL_LAZY_CACHE_MAX";
/// Default bound of idle partial copies: 10 GiB.
pub const DEFAULT_CACHE_LIMIT: u64 = 10 << 30;

/// The bound of idle partial copies ([`CACHE_LIMIT_ENV`] or [`DEFAULT_CACHE_LIMIT`]).
pub fn cache_limit() -> u64 {
    std::env::var(CACHE_LIMIT_ENV)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_CACHE_LIMIT)
}

fn copy_bytes(dir: &Path) -> u64 {
    // Allocated blocks: the copy is sparse.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join("blob"))
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Cleans the lazy layers no server is using (none is touched while its server lives): a
/// layer that became a plain snapshot, or that no image (`referenced`: chain ids) and no
/// container stands on, goes whole (its mount detached first); then, while the idle
/// partial copies together exceed `limit` bytes, the largest copies are dropped (their
/// TOC stays: the layer is fetched again when read). Returns (layers cleaned, bytes freed).
pub fn prune(store: &Store, referenced: &std::collections::HashSet<Digest>, limit: u64) -> (usize, u64) {
    let mut used = referenced.clone();
    if let Ok(rd) = std::fs::read_dir(store.root().join("snapshots").join("active")) {
        for e in rd.flatten() {
            if let Some(top) = e.file_name().to_str().and_then(|k| active_parent(store, k)) {
                used.extend(lazy_chain(store, &top));
            }
        }
    }
    let snaps = store.snapshots();
    let (mut n, mut freed) = (0, 0);
    let mut idle = Vec::new();
    let Ok(rd) = std::fs::read_dir(lazy_root(store)) else {
        return (0, 0);
    };
    for e in rd.flatten() {
        let Some(chain) = e.file_name().to_str().and_then(|h| Digest::from_hex(h).ok()) else {
            // An interrupted lazy pull's temp dir.
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
            continue;
        };
        let paths = LazyPaths { dir: e.path() };
        if !is_stale(&paths).unwrap_or(false) {
            continue;
        }
        if snaps.has(&chain) || !used.contains(&chain) {
            if is_mount_point(&paths.mnt()) {
                detach(&paths.mnt());
            }
            let b = copy_bytes(&paths.dir);
            if std::fs::remove_dir_all(&paths.dir).is_ok() {
                n += 1;
                freed += b;
            }
        } else {
            idle.push((copy_bytes(&paths.dir), paths));
        }
    }
    let mut total: u64 = idle.iter().map(|(b, _)| b).sum();
    idle.sort_by_key(|(b, _)| std::cmp::Reverse(*b));
    for (b, paths) in idle {
        if total <= limit {
            break;
        }
        let _ = std::fs::remove_file(paths.dir.join("ranges.json"));
        if std::fs::remove_file(paths.dir.join("blob")).is_ok() {
            n += 1;
            freed += b;
            total -= b;
        }
    }
    (n, freed)
}
