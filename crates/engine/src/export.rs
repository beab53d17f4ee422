//! docker's `export`: a container's root file system as one flat tar (the merged view of
//! its image's layers and its writable layer, no whiteouts), for a running or a stopped
//! container. Uncompressed, names relative (`bin/sh`), as `docker export` writes it.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use crate::backup::TreeWriter;
use crate::containers::Engine;
use crate::error::{Error, IoContext, Result};

/// Unmounts (when mounted) and removes a directory on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        let _ = fs::remove_dir(&self.0);
    }
}

/// Writes the root file system of container `what` to `out` as a tar and returns the
/// bytes of file data written. A stopped container's layers are mounted read-only (an
/// overlay of its writable layer over its image's layers) in a mount namespace of this
/// process's own, so nothing stays mounted however the process ends: call it from a
/// single-threaded process. For a container of the `host` image this is its own root
/// (the skeleton, /var, /home, /root, /tmp): the host's /usr and /etc are not in it.
///
/// # Errors
/// [`Error::NoSuchContainer`]; [`Error::Image`] when its snapshot is gone; [`Error::Io`]
/// when the mount namespace, the mount or a file fails, or `out` refuses the data.
pub fn export(engine: &Engine, what: &str, out: &mut dyn Write) -> Result<u64> {
    let r = engine.find(what)?;
    let bundle = engine.paths.bundle(&r.id);
    // SAFETY: NEWNS only gives this process its own copy of the mount table; no file
    // descriptor table is unshared, so no thread can see a file descriptor go away.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .map_err(|e| Error::io("unshare the mount namespace for", &bundle, e.into()))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| Error::io("make private", "/", e.into()))?;
    let mut dirs = Vec::new();
    let mut _writable = None;
    let root = if crate::rootfs::is_mounted(&bundle)? {
        bundle.join("rootfs")
    } else {
        let store = engine.store()?;
        let active = store.snapshots().active(&r.id)?;
        // A stopped container with a disk quota: its file system, mounted while we export.
        _writable = Some(crate::rootfs::writable(&store, &bundle, &r.id)?);
        let tmp = engine.paths.root.join("backups-tmp");
        fs::create_dir_all(&tmp).at("create", &tmp)?;
        let tag = crate::backup::owner_tag();
        let target = tmp.join(format!("export-{tag}"));
        fs::create_dir_all(&target).at("create", &target)?;
        let mut lowers = vec![active.upper.clone()];
        lowers.extend(active.lowers.iter().cloned());
        if lowers.len() == 1 {
            // A read-only overlay needs two lowers: an empty one below (the host image).
            let empty = tmp.join(format!("export-{tag}-empty"));
            fs::create_dir_all(&empty).at("create", &empty)?;
            dirs.push(Dir(empty.clone()));
            lowers.push(empty);
        }
        // Pushed last: dropped first, so the mount goes before its lower dir.
        dirs.push(Dir(target.clone()));
        vessel_image::snapshot::mount_overlay(&lowers, None, &target)?;
        target
    };
    let mut w = TreeWriter::new(out, false);
    w.add_tree(&root, "").at("export", &root)?;
    let bytes = w.bytes;
    w.finish().at("write the end of the tar of", &root)?;
    while let Some(d) = dirs.pop() {
        drop(d);
    }
    Ok(bytes)
}
