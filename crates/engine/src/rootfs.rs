//! A container's root file system: an overlay of the image's layer snapshots with a private
//! writable upper (the active snapshot named by the container id), mounted at
//! `<bundle>/rootfs`; or, for the built-in image [`HOST_IMAGE`], a sparse root that shares the
//! host's /usr (`rootfs/host.rs`).
//!
//! Only the rootfs overlay is mounted in the caller's mount namespace. Whatever else a root
//! needs (the host image's /usr binds and /etc overlay) is returned as config.json mounts
//! ([`Prepared::extra_mounts`]), done by the runtime inside the container's own namespace.

mod host;
pub mod idmapped;
pub mod idmapped_volumes;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
use rustix::mount::UnmountFlags;
use vessel_image::snapshot::ActiveSnapshot;
use vessel_image::{ImageError, ImageRecord, Store};

use crate::error::{Error, IoContext, Result};
use crate::options::IdMappings;
use crate::quota;

pub use host::host_image_config;

/// The name of the built-in image whose root is the host's own /usr (`vessel run host ...`).
pub const HOST_IMAGE: &str = "host";

/// The directory of a bundle that holds the mounted root file system.
const ROOTFS_DIR: &str = "rootfs";

/// What a container's root file system comes from.
// Made once per container and passed by reference: the size of the record does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Source {
    /// A pulled or imported image: its layer snapshots are the overlay's lowers.
    Image(ImageRecord),
    /// The built-in image [`HOST_IMAGE`]: the host's /usr, a private copy-on-write /etc.
    Host,
}

/// A prepared root file system.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `<bundle>/rootfs`, mounted (config.json's `root.path`).
    pub rootfs: PathBuf,
    /// Mounts config.json must add, in this order and before any mount below them (for the
    /// host image: the read-only binds of /usr and of /bin, /lib, ... where they are
    /// directories, then the /etc overlay; mounts of /etc/hosts, /etc/resolv.conf or
    /// /etc/hostname must come after it). Empty for images.
    pub extra_mounts: Vec<oci_spec::runtime::Mount>,
    /// The image's configuration (for the host image a synthesized one: `PATH`, and `Cmd`
    /// /bin/bash when the host has bash, /bin/sh otherwise).
    pub image_config: ImageConfiguration,
    /// Where `etc/passwd` and `etc/group` are looked up: the rootfs for images, "/" for the
    /// host image (whose /etc starts as the host's).
    pub users_root: PathBuf,
    /// The image id: the config digest (`sha256:...`) for images, `host` for the host image.
    pub image_id: String,
}

/// Prepares the root file system of container `key` in `bundle`: creates the active
/// snapshot `key` (over the image's top chain id, or with no parent for the host image),
/// creates `<bundle>/rootfs` (and `bundle`) when missing and mounts the overlay there.
/// For the host image it also makes the skeleton root (once per store and host layout) and
/// the dirs of the private /etc overlay (`<bundle>/host-etc/{upper,work}`). When `bundle`
/// holds a disk quota's image ([`quota::create`] made it), the container's own file system
/// is mounted on the snapshot's dir first, so the upper and work dirs (and the host image's
/// /etc ones) are on it.
///
/// With `ids` (the container's own user namespace) the lowers are idmapped mounts made with
/// those maps and the upper dir is owned by the range's root ([`idmapped`]); for the host
/// image its /etc overlay is mounted here too, on `<rootfs>/etc`, over an idmapped host /etc.
///
/// On error nothing is left behind: no snapshot, no mount, no directory this call created.
///
/// # Errors
/// - [`Error::Image`] with `SnapshotNotFound` when the image's layer snapshots are missing
///   (pull the image again), `SnapshotConflict` when `key` is malformed or already has a
///   snapshot, `Mount` when the overlay mount fails, or the store's errors reading the
///   image config;
/// - [`Error::BadInput`] when `<bundle>/rootfs` is already a mount point, or (host image) the
///   bundle path holds a character overlay options cannot carry (`,`, `\`);
/// - [`Error::Io`] for directories that cannot be made.
pub fn prepare(store: &Store, bundle: &Path, key: &str, source: &Source, ids: Option<&IdMappings>) -> Result<Prepared> {
    let rootfs = bundle.join(ROOTFS_DIR);
    if is_mount_point(&rootfs)? {
        return Err(Error::BadInput(format!(
            "{} is already mounted: remove the container (or unmount it) first",
            rootfs.display()
        )));
    }
    match source {
        Source::Image(rec) => prepare_image(store, bundle, &rootfs, key, rec, ids),
        Source::Host => host::prepare(store, bundle, &rootfs, key, Path::new("/"), ids),
    }
}

fn prepare_image(
    store: &Store,
    bundle: &Path,
    rootfs: &Path,
    key: &str,
    rec: &ImageRecord,
    ids: Option<&IdMappings>,
) -> Result<Prepared> {
    // Held until the active snapshot stands on the layers: a prune then keeps them.
    let _gc = store.gc_lock(false)?;
    let image_config = image_config(store, rec)?;
    let snapshots = store.snapshots();
    if let Some(top) = rec.top_chain_id() {
        // Lazy layers need their FUSE servers up before they can be lowers.
        vessel_image::lazy::ensure_served(store, top)?;
    }
    let mut undo = Undo::new(store);
    let active = snapshots.prepare(key, rec.top_chain_id())?;
    undo.snapshot = Some(key.to_string());
    undo.make_dirs(bundle, rootfs)?;
    undo.mount_disk(bundle, &active, false)?;
    mount_active(store, &active, rootfs, ids)?;
    undo.mounted = Some(rootfs.to_path_buf());
    undo.disarm();
    Ok(Prepared {
        rootfs: rootfs.to_path_buf(),
        extra_mounts: Vec::new(),
        image_config,
        users_root: rootfs.to_path_buf(),
        image_id: rec.id.to_string(),
    })
}

/// Mounts the root file system of an existing container again (after a reboot, or before
/// restarting a stopped container): the overlay of its active snapshot `key` on
/// `<bundle>/rootfs`. Does nothing when `<bundle>/rootfs` is already a mount point.
/// `host` says the container was made from the host image (its skeleton is made again when
/// missing, as for the host's current layout; the /etc overlay dirs too).
///
/// # Errors
/// [`Error::Image`] (`SnapshotNotFound` when the container's snapshot or its image's layers
/// are gone, `Mount`), [`Error::Io`].
pub fn mount(store: &Store, bundle: &Path, key: &str, host: bool, ids: Option<&IdMappings>) -> Result<()> {
    let rootfs = bundle.join(ROOTFS_DIR);
    if is_mount_point(&rootfs)? {
        return Ok(());
    }
    // Checked before anything is made: a missing snapshot leaves no new directory.
    let active = store.snapshots().active(key)?;
    if let Some(top) = vessel_image::lazy::active_parent(store, key) {
        vessel_image::lazy::ensure_served(store, &top)?;
    }
    if !rootfs.is_dir() {
        fs::create_dir_all(&rootfs).at("create", &rootfs)?;
    }
    let mut undo = Undo::new(store);
    undo.mount_disk(bundle, &active, host)?;
    if host {
        host::mount(store, bundle, &rootfs, key, Path::new("/"), ids)?;
    } else {
        mount_active(store, &active, &rootfs, ids)?;
    }
    undo.disarm();
    Ok(())
}

/// Mounts the overlay of the active snapshot `active` on `rootfs`: as the snapshotter does,
/// or with `ids` over idmapped lowers and an upper owned by the range's root.
fn mount_active(store: &Store, active: &ActiveSnapshot, rootfs: &Path, ids: Option<&IdMappings>) -> Result<()> {
    let Some(ids) = ids else {
        return Ok(store.snapshots().mount(&active.key, rootfs)?);
    };
    let mut lowers = active.lowers.clone();
    if lowers.is_empty() {
        // overlayfs needs one lower: an empty directory beside upper (as the snapshotter).
        let empty = active.upper.with_file_name("empty");
        fs::create_dir_all(&empty).at("create", &empty)?;
        lowers.push(empty);
    }
    idmapped::chown_to_root(&active.upper, ids)?;
    let userns = idmapped::userns_fd(ids)?;
    let stage = stage_dir(rootfs);
    idmapped::mount_overlay(&lowers, &active.upper, &active.work, rootfs, &userns, &stage)
}

/// Where the idmapped lowers of the rootfs at `<bundle>/rootfs` are attached while the
/// overlay is mounted (`<bundle>/idmap-stage`, gone afterwards).
fn stage_dir(rootfs: &Path) -> PathBuf {
    rootfs.with_file_name("idmap-stage")
}

/// Unmounts `<bundle>/rootfs` (every mount stacked there), and for a container with a disk
/// quota its own file system ([`quota::unmount`]: its loop device then detaches itself).
/// Idempotent: a bundle or rootfs that does not exist or is not mounted is fine. A busy
/// mount is detached lazily (it goes from the mount table at once, the kernel frees it when
/// its last user is gone).
///
/// # Errors
/// [`Error::Io`] when the kernel refuses the unmount for another reason (EPERM).
pub fn unmount(bundle: &Path) -> Result<()> {
    unmount_all(&bundle.join(ROOTFS_DIR))?;
    idmapped_volumes::unmount(bundle)?;
    if quota::has_disk(bundle) {
        quota::unmount(bundle)?;
    }
    Ok(())
}

/// Removes a container's root file system: unmounts it, removes the active snapshot `key`,
/// the host image's /etc overlay dirs, the disk quota's image (`disk.img`) and the empty
/// `<bundle>/rootfs`. Idempotent: missing pieces are fine. The bundle itself (config.json, logs) stays for the caller to remove.
///
/// # Errors
/// [`Error::Io`] when the rootfs cannot be unmounted or a directory cannot be removed (the
/// snapshot stays while its mount does), [`Error::Image`] when the snapshot cannot be removed
/// or `key` is malformed.
pub fn remove(store: &Store, bundle: &Path, key: &str) -> Result<()> {
    let rootfs = bundle.join(ROOTFS_DIR);
    unmount(bundle)?;
    if is_mount_point(&rootfs)? {
        return Err(Error::io(
            "unmount",
            &rootfs,
            io::Error::other("still mounted after unmount: find its users with `fuser -m`"),
        ));
    }
    match store.snapshots().remove(key) {
        Ok(()) | Err(ImageError::SnapshotNotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    host::remove_dirs(bundle)?;
    let disk = quota::disk_image(bundle);
    match fs::remove_file(&disk) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("remove", disk, e)),
        _ => {}
    }
    match fs::remove_dir(&rootfs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // Files written into the bare mount point while it was not mounted: the bundle's own.
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => fs::remove_dir_all(&rootfs).at("remove", &rootfs),
        Err(e) => Err(Error::io("remove", rootfs, e)),
    }
}

/// The writable layer of a container, reachable while its rootfs may not be mounted (for
/// snapshots, backups, commit, diff). For a container with a disk quota its file system is
/// mounted for as long as this value lives (unless the rootfs was mounted already).
#[derive(Debug)]
pub struct Writable {
    /// The overlay upper dir (`ROOT/snapshots/active/<key>/upper`).
    pub upper: PathBuf,
    /// The host image's /etc overlay upper dir (`<bundle>/host-etc/upper`), for host containers.
    pub host_etc_upper: Option<PathBuf>,
    /// The bundle whose quota'd file system this value mounted (unmounted on drop).
    mounted: Option<PathBuf>,
}

impl Drop for Writable {
    fn drop(&mut self) {
        if let Some(bundle) = &self.mounted {
            // A start meanwhile mounted the rootfs on it: it stays.
            if !is_mounted(bundle).unwrap_or(true) {
                let _ = quota::unmount(bundle);
            }
        }
    }
}

/// The writable layer of container `key` in `bundle`, mounting its disk quota's file
/// system when it is not (a stopped container with `--storage-opt size`: its upper dir is
/// on that file system, see [`quota`]).
///
/// # Errors
/// [`Error::Image`] (`SnapshotNotFound`) when the container has no active snapshot,
/// [`Error::Io`] when its file system cannot be mounted.
pub fn writable(store: &Store, bundle: &Path, key: &str) -> Result<Writable> {
    let active = store.snapshots().active(key)?;
    let host_etc = bundle.join(host::HOST_ETC_DIR);
    let host = host_etc.is_dir();
    let mut mounted = None;
    if quota::has_disk(bundle) && !is_mounted(bundle)? {
        let mut undo = Undo::new(store);
        undo.mount_disk(bundle, &active, host)?;
        mounted = undo.disk.take();
        undo.disarm();
    }
    Ok(Writable {
        upper: active.upper.clone(),
        host_etc_upper: host.then(|| host_etc.join("upper")),
        mounted,
    })
}

/// The skeleton root that containers of the host image have as their overlay's lower (made
/// when missing, for this host's layout).
///
/// # Errors
/// [`Error::Io`] when the host's layout cannot be read or the skeleton made.
pub fn host_skeleton(store: &Store) -> Result<PathBuf> {
    host::skeleton(store)
}

/// Reads and parses the configuration blob of `rec` (its id is the config digest).
///
/// # Errors
/// [`Error::Image`]: `Io` when the blob is missing (pull the image again), `DigestMismatch`
/// when it was altered, `Json` when it is not an OCI image configuration.
pub fn image_config(store: &Store, rec: &ImageRecord) -> Result<ImageConfiguration> {
    let data = store.read_blob(&rec.id)?;
    serde_json::from_slice(&data).map_err(|source| {
        Error::Image(ImageError::Json {
            what: format!("image config {}", rec.id),
            source,
        })
    })
}

/// Whether the root file system of `bundle` is mounted (`<bundle>/rootfs` is a mount root).
///
/// Errors: [`Error::Io`] when it cannot be examined.
pub fn is_mounted(bundle: &Path) -> Result<bool> {
    is_mount_point(&bundle.join("rootfs"))
}

/// Whether `path` is the root of a mount (false when it does not exist).
fn is_mount_point(path: &Path) -> Result<bool> {
    let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
    match rustix::fs::statx(rustix::fs::CWD, path, flags, StatxFlags::INO) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(st) => {
            // Kernels before 5.8: a mount root has another device than its parent (or is
            // the parent's root: "/" and bind mounts of a directory onto itself are missed).
            let parent = path.parent().unwrap_or(Path::new("/"));
            let p = rustix::fs::stat(parent).at("stat", parent)?;
            Ok(p.st_dev != rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor))
        }
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(false),
        Err(e) => Err(Error::io("stat", path, e.into())),
    }
}

/// Unmounts everything mounted on `target` (not following a symlink there), detaching
/// lazily what is busy.
fn unmount_all(target: &Path) -> Result<()> {
    // Each round takes one stacked mount off; more than a few means something keeps mounting.
    for _ in 0..32 {
        match rustix::mount::unmount(target, UnmountFlags::NOFOLLOW) {
            Ok(()) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(target, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    .at("unmount (lazily)", target)?;
            }
            // Not a mount point (EINVAL), or not there at all.
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => {
                return Ok(())
            }
            Err(e) => return Err(Error::io("unmount", target, e.into())),
        }
    }
    Err(Error::io(
        "unmount",
        target,
        io::Error::other("still mounted after 32 unmounts"),
    ))
}

/// What a failing [`prepare`] undoes when dropped armed: the mount, the snapshot, and the
/// directories it made (newest first).
struct Undo<'a> {
    store: &'a Store,
    armed: bool,
    mounted: Option<PathBuf>,
    /// The bundle whose quota'd file system this call mounted ([`quota::mount`]).
    disk: Option<PathBuf>,
    snapshot: Option<String>,
    /// Directories made by this call, removed when empty (newest last).
    dirs: Vec<PathBuf>,
    /// Trees made by this call, removed whole.
    trees: Vec<PathBuf>,
}

impl<'a> Undo<'a> {
    fn new(store: &'a Store) -> Self {
        Undo {
            store,
            armed: true,
            mounted: None,
            disk: None,
            snapshot: None,
            dirs: Vec::new(),
            trees: Vec::new(),
        }
    }

    /// Makes `bundle` and `rootfs` (its child) when missing, remembering what was made.
    fn make_dirs(&mut self, bundle: &Path, rootfs: &Path) -> Result<()> {
        if !bundle.is_dir() {
            fs::create_dir_all(bundle).at("create bundle", bundle)?;
            self.dirs.push(bundle.to_path_buf());
        }
        match fs::create_dir(rootfs) {
            Ok(()) => self.dirs.push(rootfs.to_path_buf()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && rootfs.is_dir() => {}
            Err(e) => return Err(Error::io("create", rootfs, e)),
        }
        Ok(())
    }

    /// For a container with a quota (a disk image in `bundle`): mounts its file system on
    /// the active snapshot's dir, so that `upper` and `work` are on it, and with `host_etc`
    /// binds a dir of it onto `<bundle>/host-etc` (the host image's /etc overlay dirs).
    /// Nothing for a container without a quota.
    fn mount_disk(&mut self, bundle: &Path, active: &ActiveSnapshot, host_etc: bool) -> Result<()> {
        if !quota::has_disk(bundle) {
            return Ok(());
        }
        let dir = active.upper.parent().unwrap_or(&active.upper);
        if quota::mount(bundle, dir)? {
            self.disk = Some(bundle.to_path_buf());
        }
        let etc = bundle.join(host::HOST_ETC_DIR);
        if host_etc && !is_mount_point(&etc)? {
            quota::bind_host_etc(dir, &etc)?;
        }
        Ok(())
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(m) = &self.mounted {
            if unmount_all(m).is_err() {
                // A mount we cannot take off keeps its upper dir: leave the snapshot too.
                return;
            }
        }
        if let Some(b) = &self.disk {
            if quota::unmount(b).is_err() {
                return;
            }
        }
        if let Some(key) = &self.snapshot {
            let _ = self.store.snapshots().remove(key);
        }
        for t in &self.trees {
            let _ = fs::remove_dir_all(t);
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}
