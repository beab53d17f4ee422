//! Idmapped volumes (`-v SRC:DST:idmap`, `--mount type=bind,...,idmap`; podman's option):
//! a volume seen through an idmapped mount (mount_setattr(2) `MOUNT_ATTR_IDMAP`) made with
//! the container's id range, so a file of host uid N shows as uid N inside and what the
//! container's root writes belongs to host uid 0.
//!
//! The idmapped mounts are made in the host's mount namespace (only there does host root
//! hold CAP_SYS_ADMIN over the volume's file system, which the kernel requires) on
//! `<bundle>/idmap-volumes/<N>` (N: the volume's index in the container's options), and
//! config.json binds that path into the container: a bind of an idmapped mount keeps its
//! idmapping. They are made with the rootfs, before each start, and go with it
//! ([`crate::rootfs::unmount`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::options::{IdMappings, Volume};

/// The bundle's directory holding the idmapped volume mounts.
const DIR: &str = "idmap-volumes";

/// Where volume number `index` of a container is mounted idmapped on the host
/// (`<bundle>/idmap-volumes/<index>`): config.json's bind source for it.
pub fn staged_path(bundle: &Path, index: usize) -> PathBuf {
    bundle.join(DIR).join(index.to_string())
}

/// Whether volume `v` is mounted idmapped for a container with `ids`: it asks for `idmap`
/// and the container has a user namespace of its own (without one the host's ids are the
/// container's and an idmapped mount would change nothing).
pub fn wanted(v: &Volume, ids: Option<&IdMappings>) -> bool {
    v.idmap && ids.is_some()
}

/// Mounts every volume of `volumes` that asks for `idmap` on its staged path, idmapped with
/// `ids`. Already mounted ones are left as they are (a restart). On error, what this call
/// mounted is unmounted again.
///
/// # Errors
/// [`Error::IdmapUnsupported`] when the volume's file system cannot be idmapped (EINVAL),
/// [`Error::Io`] for other failures (the source is gone, EPERM when not host root).
pub fn mount(bundle: &Path, volumes: &[Volume], ids: Option<&IdMappings>) -> Result<()> {
    let Some(ids) = ids else { return Ok(()) };
    if !volumes.iter().any(|v| v.idmap) {
        return Ok(());
    }
    let userns = super::idmapped::userns_fd(ids)?;
    let done = (|| {
        for (i, v) in volumes.iter().enumerate().filter(|(_, v)| v.idmap) {
            let at = staged_path(bundle, i);
            if super::is_mount_point(&at)? {
                continue;
            }
            let meta = fs::metadata(&v.host).at("stat the volume", &v.host)?;
            if meta.is_dir() {
                fs::create_dir_all(&at).at("create", &at)?;
            } else {
                fs::create_dir_all(bundle.join(DIR)).at("create", bundle.join(DIR))?;
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&at)
                    .at("create", &at)?;
            }
            super::idmapped::bind_tree(&v.host, &at, &userns).map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => Error::IdmapUnsupported {
                    path: v.host.clone(),
                    fs: fs_name(&v.host),
                },
                _ => Error::io("make an idmapped mount of", &v.host, e),
            })?;
        }
        Ok(())
    })();
    if done.is_err() {
        let _ = unmount(bundle);
    }
    done
}

/// Unmounts and removes `<bundle>/idmap-volumes`. Idempotent.
///
/// # Errors
/// [`Error::Io`] when a mount cannot be taken off or the directory removed.
pub fn unmount(bundle: &Path) -> Result<()> {
    let dir = bundle.join(DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    for e in entries {
        let p = e.at("read", &dir)?.path();
        super::unmount_all(&p)?;
        let gone = if p.is_dir() {
            fs::remove_dir(&p)
        } else {
            fs::remove_file(&p)
        };
        gone.at("remove", &p)?;
    }
    fs::remove_dir(&dir).at("remove", &dir)
}

/// The name of the file system `path` is on (statfs(2) `f_type`), for error messages.
fn fs_name(path: &Path) -> String {
    let Ok(st) = rustix::fs::statfs(path) else {
        return "unknown".into();
    };
    // linux/magic.h
    let name = match st.f_type as u64 {
        0xEF53 => "ext4",
        0x0102_1994 => "tmpfs",
        0x8584_58f6 => "ramfs",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794c_7630 => "overlay",
        0x6573_5546 => "fuse",
        0x6969 => "nfs",
        0x9fa0 => "proc",
        0x6265_6572 => "sysfs",
        0x4d44 => "vfat",
        0x0102_1997 => "9p",
        0xFF53_4D42 => "cifs",
        0x2FC1_2FC1 => "zfs",
        other => return format!("file system magic {other:#x}"),
    };
    name.into()
}
