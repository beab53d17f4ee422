//! Backup and recovery of one container (Incus's export/import, named `vessel backup` so
//! that docker's `export`/`import` keep their meaning): one zstd-compressed tar holding the
//! container's record, its writable layer, and optionally its snapshots and its image, with
//! a manifest of every member's digest (docs/design.md "Backup format").
//!
//! Members, in order: `backup.json` ([`Header`]); `layer/upper` (the active snapshot's
//! upper dir) and, for the `host` image, `layer/host-etc` (its private /etc upper); `ctr.log`;
//! `snapshots/<S>` (each snapshot dir, with `--include-snapshots`); `image/` (an OCI layout
//! of the image, with `--include-image`); then `index.json` ([`Index`]: every member above
//! with its size and digest) and `index.json.sha256` (the digest of index.json). A restore
//! streams the members into a temp dir inside the root, checks every digest against the
//! index and only then moves the files into place and writes the record, last.

mod tree;

pub(crate) use tree::TreeWriter;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vessel_image::layout::{self, Location};
use vessel_image::{ImageRecord, Reference, Store};

use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::names;
use crate::paths::Paths;
use crate::rootfs::{self, Source, HOST_IMAGE};

pub use tree::Member;

/// The `format` of every backup.
pub const FORMAT: &str = "vessel-backup";
/// The format version this vessel writes and reads.
pub const VERSION: u32 = 1;

const HEADER: &str = "backup.json";
const INDEX: &str = "index.json";
const INDEX_SUM: &str = "index.json.sha256";
/// Under the root: temp dirs of restores and markers of backups being written.
const TMP_DIR: &str = "backups-tmp";
/// Largest index.json read, bytes.
const MAX_INDEX: u64 = 1 << 30;

/// What the image of a backed-up container was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference the container was made from, fully qualified (`127.0.0.1:5000/bb:1`).
    pub reference: String,
    /// The image id (config digest, `sha256:...`).
    pub id: String,
    /// The platform manifest digest: what a restore pulls by when the image is missing.
    pub manifest: String,
}

/// `backup.json`: the first member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// When the backup was made (RFC 3339).
    pub created: String,
    /// The container's record as it was (name, image, options, command, last exit).
    pub container: Record,
    /// Its image (None for the `host` image).
    pub image: Option<ImageRef>,
    /// Whether `layer/host-etc` is in the archive.
    pub host_etc: bool,
    /// The snapshots in the archive (`snapshots/<S>`).
    pub snapshots: Vec<String>,
    /// Whether `image/` (an OCI layout of the image) is in the archive.
    pub image_included: bool,
}

/// `index.json`: the manifest of every member before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Every member, in archive order.
    pub members: Vec<Member>,
}

/// What `vessel backup create` adds besides the writable layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// `--include-snapshots`: every snapshot dir of the container.
    pub include_snapshots: bool,
    /// `--include-image`: the image's manifest, config and layers (an OCI layout).
    pub include_image: bool,
}

/// What a backup or restore moved.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Members in the archive.
    pub members: usize,
    /// Bytes of member data (uncompressed).
    pub bytes: u64,
}

/// A tag for temp names: this process's pid and start time, and a counter, so that
/// `vessel system check` can tell a live owner from a dead one.
pub(crate) fn owner_tag() -> String {
    let pid = std::process::id() as i32;
    let start = vessel_runtime::state::process_start_time(pid)
        .map(|(t, _)| t)
        .unwrap_or(0);
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{pid}-{start}-{n}{nanos}")
}

/// Whether the process named by an [`owner_tag`] (`PID-START-...`) still runs.
fn owner_alive(tag: &str) -> bool {
    let mut it = tag.splitn(3, '-');
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
        return false;
    };
    vessel_runtime::state::process_start_time(pid).is_some_and(|(t, zombie)| t == start && !zombie)
}

/// A writer that remembers whether the failure came from the output (not from reading the
/// container's files).
struct Output<W> {
    inner: W,
    failed: bool,
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| self.failed = true)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Keeps a running container frozen (its cgroup) while its files are read; thawed on drop.
struct Freeze<'a> {
    engine: &'a Engine,
    rec: Option<Record>,
}

impl<'a> Freeze<'a> {
    fn new(engine: &'a Engine, r: &Record) -> Result<Self> {
        let rec = if r.state == State::Running {
            engine.pause(r, true)?;
            Some(r.clone())
        } else {
            None
        };
        Ok(Freeze { engine, rec })
    }
}

impl Drop for Freeze<'_> {
    fn drop(&mut self) {
        if let Some(r) = &self.rec {
            if let Err(e) = self.engine.pause(r, false) {
                eprintln!(
                    "vessel: warning: container {} stays paused: {e}: run `vessel unpause`",
                    r.name
                );
            }
        }
    }
}

/// A temp dir removed on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tmp_root(paths: &Paths) -> PathBuf {
    paths.root.join(TMP_DIR)
}

/// `vessel backup create NAME FILE`: writes the backup of container `what` to `dest`
/// (stdout when None). A file is written as `FILE.tmp-<owner>` (fsynced) and renamed onto
/// `FILE` once whole, so a killed or failed backup never leaves a partial `FILE`; such temp
/// files are removed by the next backup to the same FILE and by `vessel system check`. A
/// running container is frozen while its writable layer is read.
///
/// # Errors
/// [`Error::NoSuchContainer`]; [`Error::Backup`] when the archive cannot be written (the
/// disk is full: nothing is left at FILE and the container is as it was) or
/// `--include-image` is asked for an image no longer in the store; [`Error::Io`] when the
/// container's files cannot be read.
pub fn create(engine: &Engine, what: &str, dest: Option<&Path>, opts: &CreateOptions) -> Result<Summary> {
    let r = engine.find(what)?;
    let store = engine.store()?;
    let label = dest.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into());
    let image = if r.image_id == HOST_IMAGE {
        None
    } else {
        vessel_image::records::find_image(&store, &r.image_id).ok()
    };
    if opts.include_image && r.image_id != HOST_IMAGE && image.is_none() {
        return Err(Error::Backup {
            file: label,
            reason: format!(
                "image {} of container {} is no longer in the store: pull {} again or leave out --include-image",
                r.image_id, r.name, r.image
            ),
        });
    }
    let Some(path) = dest else {
        let mut out = Output {
            inner: io::stdout().lock(),
            failed: false,
        };
        return write_archive(engine, &r, &store, image.as_ref(), opts, &mut out, &label);
    };
    remove_stale_outputs(path);
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), owner_tag()));
    let marker_dir = tmp_root(&engine.paths);
    fs::create_dir_all(&marker_dir).at("create", &marker_dir)?;
    let marker = marker_dir.join(format!("create-{}", owner_tag()));
    let abs_tmp = std::path::absolute(&tmp).at("resolve", &tmp)?;
    fs::write(&marker, abs_tmp.as_os_str().as_encoded_bytes()).at("write", &marker)?;
    let res = (|| -> Result<Summary> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .at("create", &tmp)?;
        let mut out = Output {
            inner: BufWriter::with_capacity(1 << 20, f),
            failed: false,
        };
        let sum = write_archive(engine, &r, &store, image.as_ref(), opts, &mut out, &label)?;
        let write_err = |e: io::Error| Error::Backup {
            file: label.clone(),
            reason: format!("write: {e}{}", full_hint(&e)),
        };
        let f = out.inner.into_inner().map_err(|e| write_err(e.into_error()))?;
        f.sync_all().map_err(write_err)?;
        fs::rename(&tmp, path).at("rename into place", path)?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(sum)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let _ = fs::remove_file(&marker);
    res
}

fn full_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
        ": free space there or write the backup elsewhere (the container is untouched)"
    } else {
        ""
    }
}

/// Removes `FILE.tmp-<owner>` files next to `path` whose writer is gone.
fn remove_stale_outputs(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{name}.tmp-");
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(tag) = n.strip_prefix(&prefix) {
            if !owner_alive(tag) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

fn write_archive<W: Write>(
    engine: &Engine,
    r: &Record,
    store: &Store,
    image: Option<&ImageRecord>,
    opts: &CreateOptions,
    out: &mut Output<W>,
    label: &str,
) -> Result<Summary> {
    let bundle = engine.paths.bundle(&r.id);
    let host = r.image_id == HOST_IMAGE;
    let snapshots = if opts.include_snapshots {
        snapshot_names(&bundle.join("snapshots"))
    } else {
        Vec::new()
    };
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created: vessel_runtime::state::now_rfc3339(),
        container: r.clone(),
        image: image.map(|i| ImageRef {
            reference: i.names.iter().find(|n| **n == r.image).cloned().unwrap_or_else(|| {
                Reference::parse(&r.image)
                    .map(|x| x.to_string())
                    .unwrap_or_else(|_| r.image.clone())
            }),
            id: i.id.to_string(),
            manifest: i.manifest.to_string(),
        }),
        host_etc: host,
        snapshots: snapshots.clone(),
        image_included: opts.include_image && image.is_some(),
    };
    let active = store.snapshots().active(&r.id)?;
    let mut image_dir = None;
    if let (true, Some(img)) = (header.image_included, image) {
        let root = tmp_root(&engine.paths);
        fs::create_dir_all(&root).at("create", &root)?;
        let dir = TmpDir(root.join(format!("image-{}", owner_tag())));
        layout::export(store, img, &Location::OciDir(dir.0.clone(), None))?;
        image_dir = Some(dir);
    }
    let failed = |out: &Output<W>, e: io::Error, what: &str| -> Error {
        if out.failed {
            Error::Backup {
                file: label.into(),
                reason: format!("write: {e}{}", full_hint(&e)),
            }
        } else {
            Error::Backup {
                file: label.into(),
                reason: format!("read {what}: {e}"),
            }
        }
    };
    let header_bytes = serde_json::to_vec_pretty(&header).map_err(|e| Error::BadInput(format!("backup.json: {e}")))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8) as u32;
    let result = (|| -> io::Result<Summary> {
        let mut enc = zstd::stream::write::Encoder::new(&mut *out, 3)?;
        enc.include_checksum(true)?;
        if threads > 1 {
            enc.multithread(threads)?;
        }
        let mut w = TreeWriter::new(enc, true);
        w.add_bytes(HEADER, &header_bytes)?;
        w.add_dir("layer")?;
        {
            let _frozen = Freeze::new(engine, r).map_err(io::Error::other)?;
            w.add_tree(&active.upper, "layer/upper")?;
            if host {
                w.add_tree(&bundle.join("host-etc/upper"), "layer/host-etc")?;
            }
        }
        let log = engine.paths.log(&r.id);
        if log.is_file() {
            w.add_file("ctr.log", &log)?;
        }
        if !snapshots.is_empty() {
            w.add_dir("snapshots")?;
            for s in &snapshots {
                w.add_tree(&bundle.join("snapshots").join(s), &format!("snapshots/{s}"))?;
            }
        }
        if let Some(dir) = &image_dir {
            w.add_tree(&dir.0, "image")?;
        }
        let sum = Summary {
            members: w.members.len(),
            bytes: w.bytes,
        };
        let index = Index {
            format: FORMAT.into(),
            version: VERSION,
            members: std::mem::take(&mut w.members),
        };
        let index_bytes = serde_json::to_vec(&index)?;
        w.add_bytes(INDEX, &index_bytes)?;
        let digest = format!("sha256:{}\n", tree::hex(&Sha256::digest(&index_bytes)));
        w.add_bytes(INDEX_SUM, digest.as_bytes())?;
        let enc = w.finish()?;
        enc.finish()?.flush()?;
        Ok(sum)
    })();
    result.map_err(|e| failed(out, e, "the container's files"))
}

/// The names of the complete snapshots under `dir` (those with a `snapshot.json`; the
/// `.tmp-*` dirs of unfinished ones are left out), sorted.
fn snapshot_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("snapshot.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

/// `vessel backup restore FILE [--name NEW]`: makes a container from the backup read from
/// `src` (`label` names it in messages), in state `exited`, with a new id. Nothing is
/// written to the root outside a temp dir (`ROOT/backups-tmp/restore-*`) until every
/// member's digest matched the archive's index; then the image is imported from the
/// archive, found in the store or pulled by digest with `pull` (the registry of the
/// recorded reference), the container's files are moved into place and its record is
/// written last. On any error, or when killed, nothing of it is left but that temp dir,
/// which `vessel system check` removes.
///
/// # Errors
/// [`Error::Backup`] for an archive that is not whole (truncated, a member's digest or
/// size differs from the index, members missing or added, not a vessel backup);
/// [`Error::NameInUse`] when the name is taken (restore with `--name NEW`); the image
/// errors of the import or pull; [`Error::Io`].
pub fn restore(
    engine: &Engine,
    src: &mut dyn Read,
    label: &str,
    new_name: Option<&str>,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<Record> {
    let name_free = |n: &str| -> Result<()> {
        match engine.db.find(n) {
            Ok(r) if r.name == n => Err(Error::BadInput(format!(
                "the container name \"{n}\" is already in use: restore with --name NEW (or remove that container)"
            ))),
            _ => Ok(()),
        }
    };
    if let Some(n) = new_name {
        names::check(n)?;
        name_free(n)?;
    }
    let root = tmp_root(&engine.paths);
    fs::create_dir_all(&root).at("create", &root)?;
    let tmp = TmpDir(root.join(format!("restore-{}", owner_tag())));
    let contents = tmp.0.join("contents");
    fs::create_dir_all(&contents).at("create", &contents)?;
    let header = read_archive(src, &contents, label, &mut |h: &Header| match new_name {
        Some(_) => Ok(()),
        None => name_free(&h.container.name),
    })?;
    let name = new_name
        .map(String::from)
        .unwrap_or_else(|| header.container.name.clone());
    let store = engine.store()?;
    let source = image_source(&store, &header, &contents, label, pull)?;
    let host = matches!(source, Source::Host);
    let old = &header.container;
    let mut options = old.options.clone();
    options.name = Some(name.clone());
    let mut rec = Record {
        id: names::new_id()?,
        name,
        image: old.image.clone(),
        image_id: String::new(),
        options,
        command: Vec::new(),
        stop_signal: old.stop_signal,
        state: State::Exited,
        pid: None,
        monitor_pid: None,
        monitor_start: None,
        exit_code: old.exit_code,
        created_at: vessel_runtime::state::now_rfc3339(),
        started_at: None,
        finished_at: old.finished_at.clone(),
        oom_killed: false,
    };
    let id = rec.id.clone();
    let bundle = engine.paths.bundle(&id);
    let mut fill = |bundle: &Path| -> Result<()> {
        rootfs::unmount(bundle)?;
        let active = store.snapshots().active(&id)?;
        replace_dir(&contents.join("layer/upper"), &active.upper)?;
        if host {
            replace_dir(&contents.join("layer/host-etc"), &bundle.join("host-etc/upper"))?;
        }
        rootfs::mount(&store, bundle, &id, host)
    };
    let made = engine.make_bundle(&store, &mut rec, &source, &mut fill).and_then(|()| {
        rootfs::unmount(&bundle)?;
        let log = contents.join("ctr.log");
        if log.is_file() {
            fs::rename(&log, engine.paths.log(&id)).at("move", &log)?;
        }
        let snaps = contents.join("snapshots");
        if snaps.is_dir() {
            fs::rename(&snaps, bundle.join("snapshots")).at("move", &snaps)?;
        }
        let d = File::open(&engine.paths.root).at("open", &engine.paths.root)?;
        rustix::fs::syncfs(&d).at("sync", &engine.paths.root)?;
        engine.db.insert(&rec)
    });
    if let Err(e) = made {
        let _ = engine.purge(&rec);
        return Err(e);
    }
    Ok(rec)
}

/// Replaces the directory `dst` by `src` (a rename: both are under the root).
fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        fs::remove_dir_all(dst).at("remove", dst)?;
    }
    fs::rename(src, dst).at("move into place", dst)
}

/// The image the restored container stands on: the store's when it has the id, else the
/// archive's OCI layout, else a pull by manifest digest from the recorded registry.
fn image_source(
    store: &Store,
    header: &Header,
    contents: &Path,
    label: &str,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<Source> {
    let want = &header.container.image_id;
    if want == HOST_IMAGE {
        return Ok(Source::Host);
    }
    if let Ok(rec) = vessel_image::records::find_image(store, want) {
        if rec.id.to_string() == *want {
            return Ok(Source::Image(rec));
        }
    }
    let img = header.image.as_ref().ok_or_else(|| Error::Backup {
        file: label.into(),
        reason: format!("backup.json names image {want} but not its reference: cannot find it"),
    })?;
    let rec = if header.image_included {
        let dir = contents.join("image");
        layout::import(store, &Location::OciDir(dir, None), Some(&img.reference), None)?
    } else {
        let r = Reference::parse(&img.reference)?;
        pull(store, &format!("{}@{}", r.name(), img.manifest))?
    };
    if rec.id.to_string() != *want {
        return Err(Error::Backup {
            file: label.into(),
            reason: format!(
                "the image found for the backup is {} where the container had {want}",
                rec.id
            ),
        });
    }
    Ok(Source::Image(rec))
}

/// Streams the archive into `contents`, checks every member against the index and
/// returns the header. `early` sees the header as soon as it is read (a taken name is
/// refused before the rest is read).
fn read_archive(
    src: &mut dyn Read,
    contents: &Path,
    label: &str,
    early: &mut dyn FnMut(&Header) -> Result<()>,
) -> Result<Header> {
    let bad = |reason: String| Error::Backup {
        file: label.into(),
        reason,
    };
    let corrupt = |e: &dyn std::fmt::Display| bad(format!("truncated or corrupt: {e}: make the backup again"));
    let dec = zstd::stream::read::Decoder::new(BufReader::with_capacity(1 << 20, src))
        .map_err(|e| corrupt(&format!("not a zstd stream ({e})")))?;
    let mut ar = tar::Archive::new(dec);
    let mut ex = tree::Extractor::new(contents);
    let mut seen: Vec<Member> = Vec::new();
    let mut index: Option<Vec<u8>> = None;
    let mut sum: Option<Vec<u8>> = None;
    let mut header: Option<Header> = None;
    for entry in ar.entries().map_err(|e| corrupt(&e))? {
        let mut e = entry.map_err(|e| corrupt(&e))?;
        let name = e.path_bytes().into_owned();
        if sum.is_some() {
            return Err(bad(format!("member {} after {INDEX_SUM}", tree::escape(&name))));
        }
        if name == INDEX.as_bytes() || name == INDEX_SUM.as_bytes() {
            if e.size() > MAX_INDEX {
                return Err(bad(format!("{INDEX} larger than {MAX_INDEX} bytes")));
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(|e| corrupt(&e))?;
            if name == INDEX.as_bytes() {
                index = Some(data);
            } else if index.is_none() {
                return Err(bad(format!("{INDEX_SUM} before {INDEX}")));
            } else {
                sum = Some(data);
            }
            continue;
        }
        if index.is_some() {
            return Err(bad(format!("member {} after {INDEX}", tree::escape(&name))));
        }
        let m = ex.extract(&mut e).map_err(|e| match e {
            tree::ExtractError::Io { ref source, .. } if source.kind() != io::ErrorKind::Other => {
                if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    bad(format!("{e}: free space under the root"))
                } else {
                    corrupt(&e)
                }
            }
            e => corrupt(&e),
        })?;
        if seen.is_empty() {
            if m.path != HEADER {
                return Err(bad(format!(
                    "the first member is {}, not {HEADER}: not a vessel backup",
                    m.path
                )));
            }
            let h: Header = serde_json::from_slice(&fs::read(contents.join(HEADER)).at("read", contents.join(HEADER))?)
                .map_err(|e| bad(format!("{HEADER}: {e}")))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(bad(format!(
                    "format {} version {}: this vessel reads {FORMAT} version {VERSION}",
                    h.format, h.version
                )));
            }
            early(&h)?;
            header = Some(h);
        }
        seen.push(m);
    }
    // The rest of the zstd stream: its checksum is verified at its end.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(|e| corrupt(&e))?;
    ex.finish().map_err(|(p, e)| Error::io("set times of", p, e))?;
    let (Some(index), Some(sum)) = (index, sum) else {
        return Err(bad(format!(
            "truncated: {} missing (the archive ends early): make the backup again",
            if seen.is_empty() { HEADER } else { INDEX }
        )));
    };
    let digest = format!("sha256:{}", tree::hex(&Sha256::digest(&index)));
    if String::from_utf8_lossy(&sum).trim() != digest {
        return Err(bad(format!("{INDEX} does not match {INDEX_SUM} (tampered or corrupt)")));
    }
    let index: Index = serde_json::from_slice(&index).map_err(|e| bad(format!("{INDEX}: {e}")))?;
    for (i, want) in index.members.iter().enumerate() {
        let Some(got) = seen.get(i) else {
            return Err(bad(format!("member {} listed in {INDEX} is missing", want.path)));
        };
        if got.path != want.path {
            return Err(bad(format!(
                "member {} where {INDEX} lists {} (members added, removed or reordered)",
                got.path, want.path
            )));
        }
        if got.size != want.size || got.sha256 != want.sha256 {
            return Err(bad(format!(
                "member {}: digest {} ({} bytes) where {INDEX} says {} ({} bytes): the archive was altered or is corrupt",
                got.path, got.sha256, got.size, want.sha256, want.size
            )));
        }
    }
    if let Some(extra) = seen.get(index.members.len()) {
        return Err(bad(format!("member {} is not listed in {INDEX}", extra.path)));
    }
    header.ok_or_else(|| bad(format!("no {HEADER}: not a vessel backup")))
}

/// What killed backups and restores left under the root (`ROOT/backups-tmp`): restore
/// temp dirs and the `FILE.tmp-*` of unfinished backups, when the process that made
/// them is gone. With `repair` they are removed. One line per finding.
///
/// # Errors
/// [`Error::Io`] when a leftover cannot be removed.
pub fn check(paths: &Paths, repair: bool) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in fs::read_dir(tmp_root(paths)).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some((kind, tag)) = n.split_once('-') else { continue };
        if owner_alive(tag) {
            continue;
        }
        let p = e.path();
        match kind {
            "create" => {
                let out = PathBuf::from(fs::read_to_string(&p).unwrap_or_default());
                let ours = out.file_name().is_some_and(|f| f.to_string_lossy().contains(".tmp-"));
                if ours && out.exists() {
                    found.push(format!(
                        "backups: partial archive {} of a killed `backup create`",
                        out.display()
                    ));
                    if repair {
                        fs::remove_file(&out).at("remove", &out)?;
                    }
                }
                if repair {
                    fs::remove_file(&p).at("remove", &p)?;
                }
            }
            _ => {
                found.push(format!("backups: temp dir {} of a killed `backup {kind}`", p.display()));
                if repair {
                    fs::remove_dir_all(&p).at("remove", &p)?;
                }
            }
        }
    }
    Ok(found)
}
