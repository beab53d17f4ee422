//! Copy-on-write snapshots: unpacked layers shared read-only by chain id, and per-container
//! active snapshots (an overlayfs upper and work dir over those lowers). The model is
//! containerd's snapshotter: `prepare`, `mount`, `commit`, `remove`.
//!
//! Layout under `ROOT/snapshots`: `<hex>/fs` a committed snapshot's files (an overlay lower,
//! with overlay whiteouts), `<hex>/parent` the parent's id, `<hex>/size` the layer's
//! uncompressed tar size in bytes (decimal); `active/<key>/{upper,work,parent}`;
//! `tmp/` snapshots being unpacked (renamed into place once complete and synced).

use std::fs;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::store::tmp_name;

/// The snapshots of one store.
#[derive(Clone, Debug)]
pub struct Snapshotter {
    root: PathBuf,
}

/// An active snapshot, ready to mount: the engine gives `upper` and `work` to overlayfs
/// (through [`Snapshotter::mount`]) or keeps them for a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveSnapshot {
    /// The caller's key (a container id).
    pub key: String,
    /// The writable overlay upper dir.
    pub upper: PathBuf,
    /// The overlay work dir (same file system as `upper`).
    pub work: PathBuf,
    /// Lower dirs, topmost first (empty for a snapshot without parent).
    pub lowers: Vec<PathBuf>,
}

/// A layer snapshot being unpacked under `tmp/`; removed on drop unless committed.
pub(crate) struct PendingSnapshot {
    dir: PathBuf,
    done: bool,
}

impl PendingSnapshot {
    /// The directory to unpack into.
    pub(crate) fn fs_dir(&self) -> PathBuf {
        self.dir.join("fs")
    }

    /// Records the layer's uncompressed tar size, bytes (published with the snapshot).
    pub(crate) fn set_size(&self, bytes: u64) -> Result<()> {
        let f = self.dir.join("size");
        fs::write(&f, bytes.to_string()).ctx("write", &f)
    }
}

/// Sum of the sizes of the regular files and symlinks under `dir`, bytes (not following
/// symlinks); unreadable entries count 0.
fn du(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Snapshotter {
    /// The snapshotter over `root` (normally `ROOT/snapshots`).
    pub fn new(root: PathBuf) -> Self {
        Snapshotter { root }
    }

    /// The directory of committed snapshot `id` (its files are in `fs/`).
    pub fn dir(&self, id: &Digest) -> PathBuf {
        self.root.join(id.hex())
    }

    /// Whether committed snapshot `id` exists.
    pub fn has(&self, id: &Digest) -> bool {
        self.root.join(id.hex()).join("fs").is_dir()
    }

    fn parent_of(&self, dir: &Path) -> Result<Option<Digest>> {
        let p = dir.join("parent");
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(Digest::from_hex(s.trim())?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io("read", p, e)),
        }
    }

    /// The unpacked size of committed layer snapshot `id`, bytes: its uncompressed tar size
    /// as recorded at unpack, or (for a snapshot made before vessel recorded it) the sum of
    /// its files' sizes. 0 when it does not exist.
    pub fn unpacked_size(&self, id: &Digest) -> u64 {
        let dir = self.dir(id);
        match fs::read_to_string(dir.join("size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            Some(n) => n,
            None => du(&dir.join("fs")),
        }
    }

    /// The lower dirs of committed snapshot `id` and its ancestors, topmost first (a layer
    /// still lazy gives its FUSE mount point, `lazy/<hex>/mnt`).
    ///
    /// # Errors
    /// [`ImageError::SnapshotNotFound`] when `id` or an ancestor is missing.
    pub fn lowers(&self, id: &Digest) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = Some(id.clone());
        while let Some(c) = cur {
            // A layer still lazy (crate::lazy) stands in through its FUSE mount.
            let lazy = self.root.join("lazy").join(c.hex());
            if !self.has(&c) && lazy.join("layer.json").is_file() && out.len() <= 500 {
                out.push(lazy.join("mnt"));
                cur = self.parent_of(&lazy)?;
                continue;
            }
            if !self.has(&c) || out.len() > 500 {
                return Err(ImageError::SnapshotNotFound {
                    key: c.to_string(),
                    root: self.root.clone(),
                });
            }
            let dir = self.dir(&c);
            out.push(dir.join("fs"));
            cur = self.parent_of(&dir)?;
        }
        Ok(out)
    }

    pub(crate) fn begin(&self) -> Result<PendingSnapshot> {
        let dir = self.root.join("tmp").join(tmp_name());
        let fsdir = dir.join("fs");
        fs::create_dir_all(&fsdir).ctx("create snapshot directory", &fsdir)?;
        Ok(PendingSnapshot { dir, done: false })
    }

    /// Publishes a pending snapshot as `id`: records the parent, syncs the file system, and
    /// renames it into place (if another process made `id` meanwhile, ours is dropped).
    pub(crate) fn commit_pending(&self, mut p: PendingSnapshot, id: &Digest, parent: Option<&Digest>) -> Result<()> {
        if let Some(parent) = parent {
            let f = p.dir.join("parent");
            fs::write(&f, parent.hex()).ctx("write", &f)?;
        }
        let fd = rustix::fs::open(
            &p.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ctx("open", &p.dir)?;
        rustix::fs::syncfs(&fd).ctx("syncfs", &p.dir)?;
        let dest = self.dir(id);
        match fs::rename(&p.dir, &dest) {
            Ok(()) => {
                p.done = true;
                Ok(())
            }
            Err(_) if self.has(id) => Ok(()),
            Err(e) => Err(ImageError::io("rename snapshot into place", dest, e)),
        }
    }

    /// Ids of all committed layer snapshots.
    pub(crate) fn layer_snapshots(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).ctx("list", &self.root)?.flatten() {
            if let Some(d) = e.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Committed snapshots that active snapshots stand on (with their ancestors).
    pub(crate) fn referenced_by_containers(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let active = self.root.join("active");
        if let Ok(rd) = fs::read_dir(&active) {
            for e in rd.flatten() {
                let mut cur = self.parent_of(&e.path())?;
                while let Some(c) = cur {
                    if out.contains(&c) || !self.has(&c) {
                        break;
                    }
                    cur = self.parent_of(&self.dir(&c))?;
                    out.push(c);
                }
            }
        }
        Ok(out)
    }

    /// Removes committed snapshot `id` (prune; no check that nothing stands on it).
    pub(crate) fn remove_committed(&self, id: &Digest) -> Result<()> {
        let d = self.dir(id);
        // Rename first so a half-removed snapshot never looks whole.
        let gone = self.root.join("tmp").join(tmp_name());
        fs::rename(&d, &gone).ctx("remove snapshot", &d)?;
        fs::remove_dir_all(&gone).ctx("remove snapshot", &gone)
    }

    fn active_dir(&self, key: &str) -> Result<PathBuf> {
        if !valid_key(key) {
            return Err(ImageError::SnapshotConflict {
                key: key.into(),
                reason: "keys are 1-128 of [A-Za-z0-9_.-], not starting with '.'".into(),
            });
        }
        Ok(self.root.join("active").join(key))
    }

    /// Creates active snapshot `key` on top of committed snapshot `parent` (an image's top
    /// chain id; None for an empty root file system).
    ///
    /// # Errors
    /// [`ImageError::SnapshotConflict`] when `key` exists or is malformed,
    /// [`ImageError::SnapshotNotFound`] when `parent` is missing.
    pub fn prepare(&self, key: &str, parent: Option<&Digest>) -> Result<ActiveSnapshot> {
        let dir = self.active_dir(key)?;
        let lowers = match parent {
            Some(p) => self.lowers(p)?,
            None => Vec::new(),
        };
        if let Err(e) = fs::create_dir(&dir) {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(ImageError::SnapshotConflict {
                    key: key.into(),
                    reason: "an active snapshot with this key exists".into(),
                });
            }
            return Err(ImageError::io("create", dir, e));
        }
        let r = (|| {
            for d in ["upper", "work"] {
                fs::create_dir(dir.join(d)).ctx("create", dir.join(d))?;
            }
            fs::set_permissions(dir.join("upper"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .ctx("chmod", dir.join("upper"))?;
            if let Some(p) = parent {
                fs::write(dir.join("parent"), p.hex()).ctx("write", dir.join("parent"))?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(ActiveSnapshot {
            key: key.into(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            lowers,
        })
    }

    /// The active snapshot `key`.
    ///
    /// # Errors
    /// [`ImageError::SnapshotNotFound`].
    pub fn active(&self, key: &str) -> Result<ActiveSnapshot> {
        let dir = self.active_dir(key)?;
        if !dir.is_dir() {
            return Err(ImageError::SnapshotNotFound {
                key: key.into(),
                root: self.root.join("active"),
            });
        }
        let lowers = match self.parent_of(&dir)? {
            Some(p) => self.lowers(&p)?,
            None => Vec::new(),
        };
        Ok(ActiveSnapshot {
            key: key.into(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            lowers,
        })
    }

    /// Mounts active snapshot `key` on `target` (an existing directory): overlayfs with the
    /// parent chain as lowers and the snapshot's upper and work dirs. Unmount with [`unmount`].
    ///
    /// # Errors
    /// [`ImageError::SnapshotNotFound`], [`ImageError::Mount`].
    pub fn mount(&self, key: &str, target: &Path) -> Result<()> {
        let a = self.active(key)?;
        let mut lowers = a.lowers.clone();
        if lowers.is_empty() {
            // overlayfs needs one lower: an empty directory beside upper.
            let empty = self.root.join("active").join(key).join("empty");
            fs::create_dir_all(&empty).ctx("create", &empty)?;
            lowers.push(empty);
        }
        mount_overlay(&lowers, Some((&a.upper, &a.work)), target)
    }

    /// Turns active snapshot `key` (unmounted) into a committed snapshot whose parent is the
    /// active one's parent, and returns its id (sha256 of key, parent and time: a name, not a
    /// content hash). The upper dir becomes the new lower as it is.
    ///
    /// # Errors
    /// [`ImageError::SnapshotNotFound`], [`ImageError::Io`].
    pub fn commit(&self, key: &str) -> Result<Digest> {
        let dir = self.active_dir(key)?;
        if !dir.is_dir() {
            return Err(ImageError::SnapshotNotFound {
                key: key.into(),
                root: self.root.join("active"),
            });
        }
        let parent = self.parent_of(&dir)?;
        let id = Digest::of_bytes(format!("commit {key} {parent:?} {}", tmp_name()).as_bytes());
        let p = self.begin()?;
        fs::remove_dir(p.fs_dir()).ctx("prepare commit", p.fs_dir())?;
        fs::rename(dir.join("upper"), p.fs_dir()).ctx("move upper", dir.join("upper"))?;
        self.commit_pending(p, &id, parent.as_ref())?;
        fs::remove_dir_all(&dir).ctx("remove", &dir)?;
        Ok(id)
    }

    /// Removes active snapshot `key` (unmount it first).
    ///
    /// # Errors
    /// [`ImageError::SnapshotNotFound`], [`ImageError::Io`].
    pub fn remove(&self, key: &str) -> Result<()> {
        let dir = self.active_dir(key)?;
        if !dir.is_dir() {
            return Err(ImageError::SnapshotNotFound {
                key: key.into(),
                root: self.root.join("active"),
            });
        }
        fs::remove_dir_all(&dir).ctx("remove snapshot", &dir)
    }
}

/// Mounts overlayfs on `target`: `lowers` topmost first, with an upper and work dir or read
/// only. Uses the new mount API with one `lowerdir+` per layer (kernel 6.8+: no page-size
/// limit on the layer count), falling back to a `lowerdir=a:b` option string.
///
/// # Errors
/// [`ImageError::Mount`] with the kernel's error.
pub fn mount_overlay(lowers: &[PathBuf], upper: Option<(&Path, &Path)>, target: &Path) -> Result<()> {
    let joined = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let err = |e: std::io::Error| ImageError::Mount {
        target: target.to_path_buf(),
        lowers: joined.clone(),
        source: e,
    };
    let new_api = (|| -> rustix::io::Result<()> {
        let fsfd = rustix::mount::fsopen("overlay", rustix::mount::FsOpenFlags::FSOPEN_CLOEXEC)?;
        for l in lowers {
            rustix::mount::fsconfig_set_string(&fsfd, "lowerdir+", l)?;
        }
        if let Some((u, w)) = upper {
            rustix::mount::fsconfig_set_string(&fsfd, "upperdir", u)?;
            rustix::mount::fsconfig_set_string(&fsfd, "workdir", w)?;
        }
        let _ = rustix::mount::fsconfig_set_string(&fsfd, "index", "off");
        rustix::mount::fsconfig_create(&fsfd)?;
        let mfd = rustix::mount::fsmount(
            &fsfd,
            rustix::mount::FsMountFlags::FSMOUNT_CLOEXEC,
            rustix::mount::MountAttrFlags::empty(),
        )?;
        rustix::mount::move_mount(
            &mfd,
            "",
            rustix::fs::CWD,
            target,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })();
    match new_api {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOSYS) => {
            let mut data = format!("lowerdir={joined}");
            if let Some((u, w)) = upper {
                data.push_str(&format!(",upperdir={},workdir={}", u.display(), w.display()));
            }
            let data = std::ffi::CString::new(data).map_err(|e| err(std::io::Error::other(e)))?;
            rustix::mount::mount(
                "overlay",
                target,
                "overlay",
                rustix::mount::MountFlags::empty(),
                Some(data.as_c_str()),
            )
            .map_err(|e| err(e.into()))
        }
        Err(e) => Err(err(e.into())),
    }
}

/// Unmounts `target` (lazily when busy is not acceptable: a plain unmount).
///
/// # Errors
/// [`ImageError::Io`].
pub fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, rustix::mount::UnmountFlags::empty()).ctx("unmount", target)
}
