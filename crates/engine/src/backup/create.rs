//! Writing a backup: the archive to a temp file renamed into place (or to stdout), the
//! container frozen while its writable layer is read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use vessel_image::layout::{self, Location};
use vessel_image::{ImageRecord, Reference, Store};

use super::{
    owner_alive, owner_tag, tmp_root, tree, CreateOptions, Header, ImageRef, Index, Summary, TmpDir, TreeWriter,
    FORMAT, HEADER, INDEX, INDEX_SUM, VERSION,
};
use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::rootfs::HOST_IMAGE;

/// The archive's zstd level: 1, zstd's fastest standard level (a backup is written every
/// night and read back rarely; see bench/README.md "backup" for level 3 against 1).
const ZSTD_LEVEL: i32 = 1;

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
    // A stopped container with a disk quota has its upper on its own file system.
    let _writable = crate::rootfs::writable(store, &engine.paths.bundle(&r.id), &r.id)?;
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
        let mut enc = zstd::stream::write::Encoder::new(&mut *out, ZSTD_LEVEL)?;
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
