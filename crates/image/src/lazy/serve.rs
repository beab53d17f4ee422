//! The server of one lazy layer (the `vessel-lazy` process): mounts the layer's FUSE file
//! system on `ROOT/snapshots/lazy/<chain>/mnt`, answers reads from the local blob copy or
//! with range requests, fills the copy in the background (the prefetch landmark's files
//! first), and once the copy is whole and matches the layer digest, unpacks it into an
//! ordinary snapshot, waits until no overlay uses the mount, unmounts it and exits.

use std::collections::VecDeque;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::cache::BlobCache;
use super::fetch::Fetcher;
use super::fs::{ChunkSource, LayerFs, Refused};
use super::load::{Loader, Why};
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
/// Largest request of the prefetch span, bytes: a longer span goes in several requests,
/// each well inside the fetcher's retry time at 100 Mbit/s (64 MiB: about 5 s).
const PREFETCH_REQUEST: u64 = 64 << 20;
/// How long the server waits for the prefetch span before it says the mount is ready
/// (stargz-snapshotter's `prefetch_timeout_sec`, 10 s by default): the container starts
/// once the files it reads first are local, or after this time with the rest arriving.
const PREFETCH_WAIT: Duration = Duration::from_secs(10);
/// Decompressed chunks kept in memory.
const RECENT: usize = 32;

struct Source {
    layer: Digest,
    loader: Arc<Loader>,
    recent: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
    /// Chunks (by blob start) being decompressed now: a second reader waits for them.
    decoding: Mutex<Vec<u64>>,
    decoded: Condvar,
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

    fn recent(&self, start: u64) -> Option<Arc<Vec<u8>>> {
        let r = self.recent.lock().ok()?;
        r.iter().find(|(s, _)| *s == start).map(|(_, d)| d.clone())
    }

    /// The chunk decompressed and checked, from the local copy (fetched when missing or
    /// when the local bytes fail their check).
    fn decode_chunk(&self, name: &str, c: &Chunk) -> std::result::Result<Arc<Vec<u8>>, Refused> {
        let cache = self.loader.cache();
        if let Some(raw) = cache.get(c.start, c.end) {
            match decode(&raw, c) {
                Ok(d) => return Ok(Arc::new(d)),
                Err(why) => {
                    eprintln!(
                        "vessel-lazy: layer {}: local copy of chunk {name}@{} (blob bytes {}-{}) failed its check ({why}): fetching it again",
                        self.layer, c.file_offset, c.start, c.end - 1
                    );
                    let _ = cache.forget(c.start, c.end);
                }
            }
        }
        self.load(name, std::slice::from_ref(c))?;
        let raw = cache.get(c.start, c.end).ok_or(Refused)?;
        match decode(&raw, c) {
            Ok(d) => Ok(Arc::new(d)),
            Err(why) => {
                eprintln!(
                    "vessel-lazy: layer {}: chunk {name}@{} (blob bytes {}-{}) refused: {why}",
                    self.layer,
                    c.file_offset,
                    c.start,
                    c.end - 1
                );
                let _ = cache.forget(c.start, c.end);
                Err(Refused)
            }
        }
    }
}

/// Takes a chunk off the decoding list when its decoding ends, however it ends.
struct Decoding<'a>(&'a Source, u64);

impl Drop for Decoding<'_> {
    fn drop(&mut self) {
        if let Ok(mut d) = self.0.decoding.lock() {
            d.retain(|s| *s != self.1);
        }
        self.0.decoded.notify_all();
    }
}

impl ChunkSource for Source {
    fn chunk(&self, name: &str, c: &Chunk) -> std::result::Result<Arc<Vec<u8>>, Refused> {
        // One decoding per chunk: readers of the same chunk (the kernel's read-ahead sends
        // several reads at once) wait for the first.
        let _mine = {
            let mut d = self.decoding.lock().map_err(|_| Refused)?;
            loop {
                if let Some(data) = self.recent(c.start) {
                    return Ok(data);
                }
                if !d.contains(&c.start) {
                    break;
                }
                d = self.decoded.wait(d).map_err(|_| Refused)?;
            }
            d.push(c.start);
            Decoding(self, c.start)
        };
        let data = self.decode_chunk(name, c)?;
        self.remember(c.start, data.clone());
        Ok(data)
    }

    fn is_local(&self, c: &Chunk) -> bool {
        self.loader.cache().ranges().contains(c.start, c.end)
    }

    fn load(&self, name: &str, chunks: &[Chunk]) -> std::result::Result<(), Refused> {
        let (Some(first), Some(last)) = (chunks.first(), chunks.last()) else {
            return Ok(());
        };
        self.loader.ensure(first.start, last.end, Why::Read).map_err(|e| {
            eprintln!("vessel-lazy: {name}@{}: {e}", first.file_offset);
            Refused
        })
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
    let loader = Arc::new(Loader::new(cache.clone(), fetcher));
    let source = Source {
        layer: meta.digest.clone(),
        loader: loader.clone(),
        recent: Mutex::new(VecDeque::new()),
        decoding: Mutex::new(Vec::new()),
        decoded: Condvar::new(),
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
    // The prefetch span first, in one or few requests, before the container starts.
    let prefetcher = prefetch(&loader, &toc, &meta);
    if let Some((_, done)) = &prefetcher {
        let _ = done.recv_timeout(PREFETCH_WAIT);
    }
    ready();
    if let Some((t, _)) = prefetcher {
        let _ = t.join();
    }
    if !background() {
        // Only what is read is fetched: served until the mount goes away.
        let _ = session.join();
        return Ok(());
    }
    match fill(&loader, &meta) {
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

/// Starts fetching the prefetch span (up to the end of the prefetch landmark's member;
/// [`PREFETCH_ENV`]`=0` turns it off) in requests of at most [`PREFETCH_REQUEST`] bytes;
/// returns the thread and a channel that hears when it is done.
fn prefetch(
    loader: &Arc<Loader>,
    toc: &Toc,
    meta: &LazyLayer,
) -> Option<(std::thread::JoinHandle<()>, std::sync::mpsc::Receiver<()>)> {
    let on = std::env::var(PREFETCH_ENV).map(|v| v != "0").unwrap_or(true);
    let end = prefetch_end(toc, meta.toc_offset).filter(|_| on)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let loader = loader.clone();
    let t = std::thread::spawn(move || {
        let mut at = 0;
        while at < end {
            let to = (at + PREFETCH_REQUEST).min(end);
            match loader.ensure(at, to, Why::Background) {
                Ok(()) => at = to,
                Err(e) => {
                    eprintln!("vessel-lazy: prefetch: {e}");
                    break;
                }
            }
        }
        let _ = tx.send(());
    });
    Some((t, rx))
}

/// Fetches every missing byte of the blob in pieces of [`PIECE`], each once readers have
/// not needed the registry for [`super::load::YIELD_MS`], retrying a piece that fails
/// every few seconds (a registry that comes back is used again).
fn fill(loader: &Loader, meta: &LazyLayer) -> Result<()> {
    for (s, e) in loader.cache().ranges().gaps(0, meta.size) {
        let mut at = s;
        while at < e {
            loader.demand.wait_quiet();
            let end = (at + PIECE).min(e);
            match loader.ensure(at, end, Why::Background) {
                Ok(()) => at = end,
                Err(err) => {
                    eprintln!("vessel-lazy: background fetch: {err}");
                    std::thread::sleep(Duration::from_secs(2));
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
