//! The content store: blobs by digest under `ROOT/content/blobs/sha256/<hex>`, each written to a
//! temporary file, verified (digest and size), fsynced and renamed into place; the image
//! records (`ROOT/images.json`); and the lock that keeps garbage collection away from pulls.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::records::ImageRecord;
use crate::snapshot::Snapshotter;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unique temporary name that embeds our pid, so that garbage collection can tell leftovers
/// of dead processes (`<pid>-<n>-<nanos>`).
pub(crate) fn tmp_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The content store and everything else under one vessel root.
///
/// Layout (all under `root`): `content/blobs/sha256/<hex>` blobs, `content/tmp/` blobs being
/// written, `snapshots/` (see [`Snapshotter`]), `images.json` the image records, `images.lock`
/// and `gc.lock` advisory locks, `auth.json` credentials saved by `vessel login`.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A held advisory lock (released on drop).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

fn lock(path: &Path, exclusive: bool) -> Result<LockGuard> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .ctx("open lock file", path)?;
    let op = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&file, op).ctx("lock", path)?;
    Ok(LockGuard { _file: file })
}

impl Store {
    /// Opens (creating its directories when missing) the store under `root`.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        for d in [
            "content/blobs/sha256",
            "content/tmp",
            "snapshots/tmp",
            "snapshots/active",
        ] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx("create directory", &p)?;
        }
        // Blobs and snapshots of images are not for other users to browse. The root itself
        // is only searchable (0711, as podman's overlay dir): a container's root in its own
        // user namespace, an unprivileged host id, reaches its bundle under it.
        let _ = fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711));
        for d in ["content", "snapshots"] {
            let _ = fs::set_permissions(root.join(d), std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        Ok(Store { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `digest` lives (whether or not it is present).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("content/blobs/sha256").join(digest.hex())
    }

    /// Whether the blob is present (present blobs were verified when written).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (manifests, configs) and checks its digest again.
    ///
    /// # Errors
    /// [`ImageError::Io`] when missing, [`ImageError::DigestMismatch`] when the file was altered.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest);
        let data = fs::read(&p).ctx("read blob", &p)?;
        let actual = Digest::of_bytes(&data);
        if &actual != digest {
            return Err(ImageError::DigestMismatch {
                what: "stored blob".into(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Opens a blob for streaming reads (layers).
    ///
    /// # Errors
    /// [`ImageError::Io`] when missing.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest);
        File::open(&p).ctx("open blob", &p)
    }

    /// Size in bytes of a present blob.
    pub fn blob_size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.blob_path(digest)).ok().map(|m| m.len())
    }

    /// Starts writing a blob to a temporary file; [`BlobWriter::commit`] verifies and publishes it.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the temporary file cannot be created.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let tmp = self.root.join("content/tmp").join(tmp_name());
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .ctx("create temporary blob", &tmp)?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            hasher: Sha256::new(),
            count: 0,
            store: self.clone(),
        })
    }

    /// Writes `data` as the blob `expected` (and `size`, when known), verified.
    ///
    /// # Errors
    /// [`ImageError::DigestMismatch`], [`ImageError::SizeMismatch`], [`ImageError::Io`].
    pub fn put_blob(&self, what: &str, data: &[u8], expected: &Digest, size: Option<u64>) -> Result<()> {
        if self.has_blob(expected) {
            // Still verify what we were given: a caller must not learn "ok" for bad bytes.
            let actual = Digest::of_bytes(data);
            if &actual != expected {
                return Err(ImageError::DigestMismatch {
                    what: what.into(),
                    expected: expected.clone(),
                    actual,
                });
            }
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).ctx("write temporary blob", w.tmp.clone())?;
        w.commit(what, expected, size)
    }

    /// Copies the blob from `reader`, verifying it against `expected` and `size`.
    ///
    /// # Errors
    /// As [`Store::put_blob`]; read errors as [`ImageError::Io`] on `source`.
    pub fn copy_blob(
        &self,
        what: &str,
        reader: &mut dyn Read,
        source: &Path,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<()> {
        let mut w = self.blob_writer()?;
        let limit = size.map_or(u64::MAX, |s| s.saturating_add(1));
        let mut r = reader.take(limit);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).ctx("read", source)?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n]).ctx("write temporary blob", w.tmp.clone())?;
        }
        w.commit(what, expected, size)
    }

    /// Removes a blob (garbage collection, failed pulls).
    pub(crate) fn remove_blob(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(ImageError::io("remove blob", p, e)),
            _ => Ok(()),
        }
    }

    /// Removes what pulls, imports and prunes that did not finish left in `content/tmp` and
    /// `snapshots/tmp` ([`Store::remove_partials`]), best effort: errors are ignored, the
    /// leftovers are never used as content.
    pub fn remove_stale_tmp(&self) {
        let _ = self.remove_partials();
    }

    /// The snapshotter over `ROOT/snapshots`.
    pub fn snapshots(&self) -> Snapshotter {
        Snapshotter::new(self.root.join("snapshots"))
    }

    /// Takes the garbage-collection lock: shared for pulls and imports, exclusive for prune.
    ///
    /// # Errors
    /// [`ImageError::Io`] when the lock file cannot be opened or locked.
    pub fn gc_lock(&self, exclusive: bool) -> Result<LockGuard> {
        lock(&self.root.join("gc.lock"), exclusive)
    }

    fn images_path(&self) -> PathBuf {
        self.root.join("images.json")
    }

    /// All image records, in the order they were added.
    ///
    /// # Errors
    /// [`ImageError::Io`] or [`ImageError::Json`] when `images.json` cannot be read.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let _l = lock(&self.root.join("images.lock"), false)?;
        self.read_images()
    }

    fn read_images(&self) -> Result<Vec<ImageRecord>> {
        let p = self.images_path();
        match fs::read(&p) {
            Ok(data) => serde_json::from_slice(&data).map_err(|source| ImageError::Json {
                what: p.display().to_string(),
                source,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(ImageError::io("read", p, e)),
        }
    }

    /// Changes the image records under the records lock and writes them back atomically
    /// (not at all when `f` changed nothing: a warm pull does no write and no fsync).
    ///
    /// # Errors
    /// What `f` returns, or [`ImageError::Io`] / [`ImageError::Json`] for the file.
    pub fn update_images<T>(&self, f: impl FnOnce(&mut Vec<ImageRecord>) -> Result<T>) -> Result<T> {
        let _l = lock(&self.root.join("images.lock"), true)?;
        let mut images = self.read_images()?;
        let before = images.clone();
        let out = f(&mut images)?;
        if images == before && self.images_path().exists() {
            return Ok(out);
        }
        let p = self.images_path();
        let data = serde_json::to_vec_pretty(&images).map_err(|source| ImageError::Json {
            what: p.display().to_string(),
            source,
        })?;
        write_atomic(&p, &data)?;
        Ok(out)
    }
}

/// Writes `data` to `path` through a temporary sibling, fsync and rename.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        tmp_name()
    ));
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .ctx("create", &tmp)?;
    let r = f
        .write_all(data)
        .and_then(|_| f.sync_all())
        .and_then(|_| fs::rename(&tmp, path));
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(ImageError::io("write", path, e));
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A blob being written: a temporary file that hashes what it is given. Dropped without
/// [`BlobWriter::commit`], the temporary file is removed.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    hasher: Sha256,
    count: u64,
    store: Store,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Publishes the blob under the digest of what was written (for blobs vessel makes
    /// itself: committed layers); returns that digest and the size, bytes.
    ///
    /// # Errors
    /// [`ImageError::Io`] when it cannot be synced or renamed.
    pub fn commit_computed(self, what: &str) -> Result<(Digest, u64)> {
        let digest = Digest::from_hasher(self.hasher.clone());
        let size = self.count;
        self.commit(what, &digest, Some(size))?;
        Ok((digest, size))
    }

    /// Checks digest and size, fsyncs, and renames the blob into place.
    ///
    /// # Errors
    /// [`ImageError::DigestMismatch`] / [`ImageError::SizeMismatch`] (the temporary file is
    /// removed), [`ImageError::Io`].
    pub fn commit(mut self, what: &str, expected: &Digest, size: Option<u64>) -> Result<()> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(s) = size {
            if s != self.count {
                return Err(ImageError::SizeMismatch {
                    what: what.into(),
                    digest: expected.clone(),
                    expected: s,
                    actual: self.count,
                });
            }
        }
        if &actual != expected {
            return Err(ImageError::DigestMismatch {
                what: what.into(),
                expected: expected.clone(),
                actual,
            });
        }
        let Some(file) = self.file.take() else {
            return Err(ImageError::io(
                "commit",
                &self.tmp,
                io::Error::other("already committed"),
            ));
        };
        file.sync_all().ctx("fsync", &self.tmp)?;
        drop(file);
        let dest = self.store.blob_path(expected);
        fs::rename(&self.tmp, &dest).ctx("rename blob into place", &dest)?;
        if let Some(parent) = dest.parent() {
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
