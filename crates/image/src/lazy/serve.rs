//! The server of one lazy layer (the `vessel-lazy` process): mounts the layer's FUSE file
//! system on `ROOT/snapshots/lazy/<chain>/mnt`, answers reads from the local blob copy or
//! with range requests, fills the copy in the background (the prefetch landmark's files
//! first), and once the copy is whole and matches the layer digest, unpacks it into an
//! ordinary snapshot, waits until no overlay uses the mount, unmounts it and exits.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::BlobCache;
use super::fetch::Fetcher;
use super::fs::{ChunkSource, LayerFs, Refused};
use super::toc::{Chunk, Toc, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK};
use super::{detach, is_mount_point, LazyLayer, LazyPaths};
use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::layer::{ingest_layer, Compression, LayerSpec};
use crate::reference::Reference;
use crate::store::Store;
use crate::unpack::{DeviceNodes, UnpackOptions};

/// Size of one background request, bytes.
const PIECE: u64 = 1 << 20;
/// The background fetch waits while a read fetched from the registry this recently, ms:
/// the program's next reads then do not queue behind a background piece on the link.
const YIELD_MS: u64 = 200;

/// When a read last fetched from the registry, ms since the server started.
struct Demand {
    start: std::time::Instant,
    last: std::sync::atomic::AtomicU64,
}

impl Demand {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn touch(&self) {
        self.last.store(self.now().max(1), std::sync::atomic::Ordering::Relaxed);
    }
    /// Waits until no read has fetched for [`YIELD_MS`].
    fn wait_quiet(&self) {
        loop {
            let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
            if last == 0 || self.now().saturating_sub(last) >= YIELD_MS {
                return;
            }
            std::thread::sleep(Duration::from_millis(YIELD_MS / 4));
        }
    }
}
/// Decompressed chunks kept in memory.
const RECENT: usize = 32;

struct Source {
    layer: Digest,
    cache: Arc<BlobCache>,
    fetcher: Arc<Fetcher>,
    recent: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
    demand: Arc<Demand>,
}

/// The chunk's bytes from its gzip member, or why they are not the chunk.
fn decode(raw: &[u8], c: &Chunk) -> std::result::Result<Vec<u8>, String> {
    let mut gz = flate2::read::GzDecoder::new(raw);
    if c.inner_offset > 0 {
        std::io::copy(&mut (&mut gz).take(c.inner_offset), &mut std::io::sink()).map_err(|e| e.to_string())?;
    }
    let mut out = Vec::with_capacity(c.size as usize);
    (&mut gz)
        .take(c.size)
        .read_to_end(&mut out)
        .map_err(|e| format!("gunzip: {e}"))?;
    if out.len() as u64 != c.size {
        return Err(format!("{} bytes instead of {}", out.len(), c.size));
    }
    let actual = Digest::of_bytes(&out);
    if actual != c.digest {
        return Err(format!(
            "content has digest {actual}, the TOC's chunkDigest is {}",
            c.digest
        ));
    }
    Ok(out)
}

impl Source {
    fn remember(&self, start: u64, data: Arc<Vec<u8>>) {
        if let Ok(mut r) = self.recent.lock() {
            if r.len() >= RECENT {
                r.pop_front();
            }
            r.push_back((start, data));
        }
    }
}

impl ChunkSource for Source {
    fn chunk(&self, name: &str, c: &Chunk) -> std::result::Result<Arc<Vec<u8>>, Refused> {
        if let Ok(r) = self.recent.lock() {
            if let Some((_, d)) = r.iter().find(|(s, _)| *s == c.start) {
                return Ok(d.clone());
            }
        }
        if let Some(raw) = self.cache.get(c.start, c.end) {
            match decode(&raw, c) {
                Ok(d) => {
                    let d = Arc::new(d);
                    self.remember(c.start, d.clone());
                    return Ok(d);
                }
                Err(why) => {
                    eprintln!(
                        "vessel-lazy: layer {}: local copy of chunk {name}@{} (blob bytes {}-{}) failed its check ({why}): fetching it again",
                        self.layer, c.file_offset, c.start, c.end - 1
                    );
                    let _ = self.cache.forget(c.start, c.end);
                }
            }
        }
        self.demand.touch();
        let raw = self.fetcher.range(c.start, c.end).map_err(|e| {
            eprintln!("vessel-lazy: {name}@{}: {e}", c.file_offset);
            Refused
        })?;
        self.demand.touch();
        match decode(&raw, c) {
            Ok(d) => {
                if let Err(e) = self.cache.put(c.start, &raw) {
                    eprintln!("vessel-lazy: layer {}: {e}", self.layer);
                }
                let d = Arc::new(d);
                self.remember(c.start, d.clone());
                Ok(d)
            }
            Err(why) => {
                eprintln!(
                    "vessel-lazy: layer {}: chunk {name}@{} (blob bytes {}-{}) refused: {why}",
                    self.layer,
                    c.file_offset,
                    c.start,
                    c.end - 1
                );
                Err(Refused)
            }
        }
    }
}

/// The blob span to fetch first: up to the end of the prefetch landmark's member (None
/// without a landmark, or with the no-prefetch landmark).
fn prefetch_end(toc: &Toc, toc_offset: u64) -> Option<u64> {
    if toc
        .entries
        .iter()
        .any(|e| e.name.trim_start_matches("./") == NO_PREFETCH_LANDMARK)
    {
        return None;
    }
    let mark = toc
        .entries
        .iter()
        .find(|e| e.name.trim_start_matches("./") == PREFETCH_LANDMARK)?;
    let ends = super::toc::member_ends(toc, toc_offset);
    ends.range(mark.offset + 1..).next().copied()
}

/// Serves the lazy layer `chain` of the store at `root` until it is complete and unused.
/// `ready` is called once the mount is up (the engine waits for it).
///
/// # Errors
/// [`ImageError::Lazy`] for a missing or damaged lazy layer, [`ImageError::Io`] when the
/// mount fails.
pub fn serve(root: &Path, chain: &Digest, ready: impl FnOnce()) -> Result<()> {
    let store = Store::open(root)?;
    let paths = LazyPaths::new(&store, chain);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock())
        .ctx("open", paths.lock())?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        // Another server has it.
        ready();
        return Ok(());
    }
    let meta = LazyLayer::read(&paths)?;
    let toc = meta.toc(&paths)?;
    if is_mount_point(&paths.mnt()) {
        detach(&paths.mnt());
    }
    let cache = Arc::new(BlobCache::open(&paths.dir, meta.size)?);
    let reference = Reference::parse(&meta.reference)?;
    let fetcher = Arc::new(Fetcher::new(&store, &reference, meta.tls_verify, meta.digest.clone())?);
    let demand = Arc::new(Demand {
        start: std::time::Instant::now(),
        last: std::sync::atomic::AtomicU64::new(0),
    });
    let source = Source {
        layer: meta.digest.clone(),
        cache: cache.clone(),
        fetcher: fetcher.clone(),
        recent: Mutex::new(VecDeque::new()),
        demand: demand.clone(),
    };
    let fs = LayerFs::new(&meta.digest, &toc, meta.toc_offset, source)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::FSName(format!("vessel-lazy:{}", meta.digest.short())),
        fuser::MountOption::Subtype("vessel-lazy".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    let session = fuser::spawn_mount(fs, paths.mnt(), &config).ctx("mount FUSE on", paths.mnt())?;
    let pid_file = paths.dir.join("serve.pid");
    std::fs::write(&pid_file, std::process::id().to_string()).ctx("write", &pid_file)?;
    ready();
    if !background() {
        // Only what is read is fetched: served until the mount goes away.
        let _ = session.join();
        return Ok(());
    }
    match fill(&cache, &fetcher, &toc, &meta, &demand) {
        Ok(()) => match complete(&store, &cache, &meta) {
            Ok(()) => {
                eprintln!(
                    "vessel-lazy: layer {} complete: snapshot {}",
                    meta.digest, meta.chain_id
                );
                wait_unused(&paths.mnt());
                drop(session);
                let _ = std::fs::remove_dir_all(&paths.dir);
                return Ok(());
            }
            Err(e) => eprintln!("vessel-lazy: {e}"),
        },
        Err(e) => eprintln!("vessel-lazy: {e}"),
    }
    // Not completable: serve until the mount goes away.
    let _ = session.join();
    Ok(())
}

/// The environment variable that turns the background fetch off (`0`): only what is read
/// is fetched and the layer stays lazy (stargz-snapshotter's `no_background_fetch`).
pub const BACKGROUND_ENV: &str = "VESSEL_LAZY_BACKGROUND";
/// The environment variable that turns the prefetch of the landmark's files off (`0`).
pub const PREFETCH_ENV: &str = "VESSEL_LAZY_PREFETCH";

fn background() -> bool {
    std::env::var(BACKGROUND_ENV).map(|v| v != "0").unwrap_or(true)
}

/// Fetches every missing byte of the blob, the prefetch span first, retrying a piece that
/// fails every few seconds (a registry that comes back is used again); after the prefetch
/// span, each piece waits until reads have not fetched for [`YIELD_MS`].
fn fill(cache: &BlobCache, fetcher: &Fetcher, toc: &Toc, meta: &LazyLayer, demand: &Demand) -> Result<()> {
    let mut spans = Vec::new();
    let prefetch = std::env::var(PREFETCH_ENV).map(|v| v != "0").unwrap_or(true);
    if let Some(end) = prefetch_end(toc, meta.toc_offset).filter(|_| prefetch) {
        spans.push((0, end));
    }
    spans.push((0, meta.size));
    for (from, to) in spans {
        for (s, e) in cache.ranges().gaps(from, to) {
            let mut at = s;
            while at < e {
                // The prefetch span goes in one request; the rest in pieces, each after
                // the program's own reads have paused.
                let end = if to < meta.size {
                    e
                } else {
                    demand.wait_quiet();
                    (at + PIECE).min(e)
                };
                match fetcher.range(at, end) {
                    Ok(b) => {
                        cache.put(at, &b)?;
                        at = end;
                    }
                    Err(err) => {
                        eprintln!("vessel-lazy: background fetch: {err}");
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks the whole copy against the layer digest and diff id and unpacks it into the
/// layer's snapshot (the blob goes into the content store).
fn complete(store: &Store, cache: &BlobCache, meta: &LazyLayer) -> Result<()> {
    let _gc = store.gc_lock(false)?;
    if store.snapshots().has(&meta.chain_id) {
        return Ok(());
    }
    let spec = LayerSpec {
        digest: meta.digest.clone(),
        size: meta.size,
        compression: Compression::Gzip,
        diff_id: meta.diff_id.clone(),
        chain_id: meta.chain_id.clone(),
        parent: meta.parent.clone(),
    };
    let opts = UnpackOptions {
        devices: DeviceNodes::for_this_user(),
        keep_setuid: true,
        keep_ownership: true,
    };
    let r = std::io::BufReader::with_capacity(256 * 1024, cache.reader()?);
    ingest_layer(store, r, &spec, true, &opts).map_err(|e| ImageError::Lazy {
        layer: meta.digest.clone(),
        reason: format!("the complete copy failed its check: {e}"),
        hint: ": it stays served lazily; pull the image again without --lazy",
    })?;
    Ok(())
}

/// Unmounts `mnt` once no overlay stands on it (EBUSY until then), checking every second.
fn wait_unused(mnt: &Path) {
    loop {
        match rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::empty()) {
            Ok(()) => return,
            Err(rustix::io::Errno::BUSY) => std::thread::sleep(Duration::from_secs(1)),
            Err(_) => return,
        }
    }
}
