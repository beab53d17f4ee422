//! Per-container disk quotas (`--storage-opt size=`, podman's flag): the writable layer of
//! a container with a quota lives on a file system of its own, as OpenVZ's ploop does. A
//! sparse image file `<bundle>/disk.img` formatted xfs (journaled, for crash safety; xfs
//! because it grows online with CAP_SYS_ADMIN alone, where ext4's online resize also needs
//! CAP_SYS_RESOURCE, which root lacks on some hosts) is attached to a loop device (autoclear: it detaches itself once unmounted) and
//! mounted on the container's active snapshot dir (`ROOT/snapshots/active/<id>`), so the
//! overlay's upper and work dirs are on it; for the `host` image its /etc overlay dirs too
//! (`<bundle>/host-etc` is a bind of a dir of that file system). Writes past the size get
//! ENOSPC inside the container; the host's file system and other containers are untouched.
//!
//! The image file's length is the limit: growing ([`grow`]) extends the file first, then the
//! loop device (LOOP_SET_CAPACITY) and the mounted file system (`xfs_growfs`); a file
//! system found smaller than its file when mounted ([`mount`]: a grow of a stopped
//! container, or one interrupted) is grown then. Shrinking is refused. This works on any
//! store file system (ext4 on these machines); project quotas of a store on xfs are not
//! used. The limit counts the file system's own metadata (xfs's log is 64 MiB).

pub mod loopdev;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, UnmountFlags};

use crate::error::{Error, IoContext, Result};
use loopdev::{Attached, LoopDevice};

/// The disk image of a container with a quota, in its bundle.
pub const DISK_IMAGE: &str = "disk.img";

/// The smallest quota: mkfs.xfs makes no file system below 300 MiB.
pub const MIN_SIZE: u64 = 300 << 20;

/// The dir on the container's file system that `<bundle>/host-etc` is a bind of.
const HOST_ETC_ON_DISK: &str = "host-etc";

/// `--storage-opt KEY=VALUE` options, checked: only `size` is known (podman's option
/// for overlay on xfs). Returns them as a map (for the record and `inspect`).
///
/// # Errors
/// [`Error::BadInput`] for a malformed option, an unknown key or a bad size.
pub fn parse_storage_opts(opts: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for o in opts {
        let Some((key, value)) = o.split_once('=') else {
            return Err(Error::BadInput(format!(
                "invalid --storage-opt {o:?}: use size=SIZE (e.g. size=2G)"
            )));
        };
        match key {
            "size" => {
                parse_size(value)?;
            }
            _ => {
                return Err(Error::BadInput(format!(
                    "invalid --storage-opt {o:?}: unknown option {key:?}: only size=SIZE is supported"
                )))
            }
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// The size limit in bytes that checked `--storage-opt` options set, if any.
///
/// # Errors
/// [`Error::BadInput`] when `size` is malformed.
pub fn size_limit(opts: &BTreeMap<String, String>) -> Result<Option<u64>> {
    opts.get("size").map(|s| parse_size(s)).transpose()
}

/// A size as podman takes it: a number with an optional unit b, k, m, g, t (base 1024,
/// case-insensitive, `2G` = 2 GiB), at least [`MIN_SIZE`].
///
/// # Errors
/// [`Error::BadInput`] for a malformed, zero or too small size.
pub fn parse_size(value: &str) -> Result<u64> {
    let bytes = crate::units::parse_bytes("--storage-opt size", value)?;
    if bytes <= 0 {
        return Err(Error::BadInput(format!(
            "invalid --storage-opt size={value}: the size must be more than 0"
        )));
    }
    let bytes = bytes as u64;
    if bytes < MIN_SIZE {
        return Err(Error::BadInput(format!(
            "invalid --storage-opt size={value}: at least {}M is needed (the smallest xfs file system)",
            MIN_SIZE >> 20
        )));
    }
    Ok(bytes)
}

/// `<bundle>/disk.img`.
pub fn disk_image(bundle: &Path) -> PathBuf {
    bundle.join(DISK_IMAGE)
}

/// Whether the container of `bundle` has a quota (its disk image exists).
pub fn has_disk(bundle: &Path) -> bool {
    disk_image(bundle).is_file()
}

/// Finds an xfsprogs tool (also where PATH lacks /sbin).
fn tool(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::BadInput(format!(
                "{name} not found: --storage-opt needs xfsprogs (apt-get install xfsprogs)"
            ))
        })
}

/// Runs an xfsprogs tool; its stderr becomes the error.
fn run_tool(name: &str, args: &[&std::ffi::OsStr], on: &Path) -> Result<()> {
    let out = Command::new(tool(name)?)
        .args(args)
        .output()
        .at("run xfsprogs tool on", on)?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::io(
        "format or resize",
        on,
        io::Error::other(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    ))
}

/// Makes the disk image of a container with a `size`-byte quota: a sparse file formatted
/// xfs (`mkfs.xfs -q -K`: no discard, so it stays sparse), made as `disk.img.tmp`, synced
/// and renamed into place.
///
/// # Errors
/// [`Error::Io`] when the file cannot be made or mkfs.xfs fails, [`Error::BadInput`] when
/// xfsprogs is missing.
pub fn create(bundle: &Path, size: u64) -> Result<()> {
    let img = disk_image(bundle);
    let tmp = bundle.join(format!("{DISK_IMAGE}.tmp"));
    let made = (|| {
        let f = File::create(&tmp).at("create", &tmp)?;
        f.set_len(size).at("size", &tmp)?;
        run_tool(
            "mkfs.xfs",
            &["-q".as_ref(), "-f".as_ref(), "-K".as_ref(), tmp.as_os_str()],
            &tmp,
        )?;
        f.sync_all().at("fsync", &tmp)?;
        fs::rename(&tmp, &img).at("rename into place", &img)
    })();
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made
}

/// The mount points of device `dev` (`major:minor`) in our mount namespace, in mount order.
fn mounts_of(dev: &str) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let dev_field = f.nth(2)?;
            let target = f.nth(1)?;
            (dev_field == dev).then(|| PathBuf::from(unescape(target)))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space): the runtime's reading.
fn unescape(s: &str) -> String {
    vessel_runtime::rootfs::unescape_mountinfo(s)
}

/// The size in bytes of the xfs file system in `img`, from its superblock (big-endian
/// `sb_magicnum` "XFSB" at 0, `sb_blocksize` at 4, `sb_dblocks` at 8).
fn fs_size(img: &Path) -> Result<u64> {
    let mut sb = [0u8; 16];
    let mut f = File::open(img).at("open", img)?;
    f.read_exact(&mut sb).at("read superblock of", img)?;
    if &sb[0..4] != b"XFSB" {
        return Err(Error::io(
            "read superblock of",
            img,
            io::Error::other("not an xfs file system: remove the container"),
        ));
    }
    let block_size = u32::from_be_bytes([sb[4], sb[5], sb[6], sb[7]]);
    let blocks = u64::from_be_bytes([sb[8], sb[9], sb[10], sb[11], sb[12], sb[13], sb[14], sb[15]]);
    Ok(blocks.saturating_mul(u64::from(block_size)))
}

/// Mounts the container's file system on its active snapshot dir `dir` (attaching its disk
/// image to a loop device) and makes what the snapshot needs there: `upper` (mode 0755),
/// `work`, and the `parent` file the dir had. Grows the file system when its image file is
/// larger. Does nothing when it is mounted there already. Returns whether it mounted it.
///
/// # Errors
/// [`Error::Io`] when the loop device cannot be attached, the mount fails (the mount and
/// loop device are undone), or the dirs cannot be made.
pub fn mount(bundle: &Path, dir: &Path) -> Result<bool> {
    let img = disk_image(bundle);
    let here = fs::canonicalize(dir).at("resolve", dir)?;
    if backed_by_mounted(&img).contains(&here) {
        return Ok(false);
    }
    let parent = match fs::read(dir.join("parent")) {
        Ok(p) => Some(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", dir.join("parent"), e)),
    };
    let grow = fs_size(&img)? < fs::metadata(&img).at("stat", &img)?.len();
    // The snapshot's own (empty) upper and work go: while the file system is not mounted,
    // a reader of `<dir>/upper` then fails instead of seeing an empty layer.
    for name in ["upper", "work"] {
        let d = dir.join(name);
        match fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::io(
                    "remove (files were written there while the container's file system was not mounted)",
                    d,
                    e,
                ))
            }
        }
    }
    let dev = LoopDevice::attach(&img)?;
    // nouuid: a copy of an image (a backup restored beside its original) mounts too.
    rustix::mount::mount(&dev.path, dir, "xfs", MountFlags::empty(), c"nouuid").map_err(|e| {
        Error::io(
            "mount the container's file system on",
            dir,
            io::Error::other(format!("mount {} (from {}): {e}", dev.path.display(), img.display())),
        )
    })?;
    let made = (|| {
        for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
            let d = dir.join(name);
            if !d.is_dir() {
                fs::create_dir(&d).at("create", &d)?;
                fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(mode)).at("chmod", &d)?;
            }
        }
        if let Some(p) = &parent {
            let f = dir.join("parent");
            if !f.exists() {
                fs::write(&f, p).at("write", &f)?;
            }
        }
        if grow {
            run_tool("xfs_growfs", &["-d".as_ref(), dir.as_os_str()], &img)?;
        }
        Ok(())
    })();
    // The mount keeps the device; closing ours lets autoclear detach it at unmount.
    drop(dev);
    if made.is_err() {
        let _ = unmount(bundle);
    }
    made.map(|()| true)
}

/// Binds `<dir>/host-etc` (made when missing) of the mounted container file system onto
/// `host_etc` (`<bundle>/host-etc`, made when missing): the `host` image's /etc overlay
/// dirs are then on the quota'd file system.
///
/// # Errors
/// [`Error::Io`] when a dir cannot be made or the bind fails.
pub fn bind_host_etc(dir: &Path, host_etc: &Path) -> Result<()> {
    let src = dir.join(HOST_ETC_ON_DISK);
    for d in [&src, &host_etc.to_path_buf()] {
        if !d.is_dir() {
            fs::create_dir_all(d).at("create", d)?;
        }
    }
    rustix::mount::mount_bind(&src, host_etc).at("bind the container's file system onto", host_etc)
}

/// The mount points (ours) of the loop devices backed by `img`.
fn backed_by_mounted(img: &Path) -> Vec<PathBuf> {
    loopdev::backed_by(img).iter().flat_map(|a| mounts_of(&a.dev)).collect()
}

/// Unmounts every mount of the container's file system in our mount namespace (newest
/// first; a busy one lazily) and detaches its loop device when nothing else holds it.
/// Idempotent: a container without a quota or not mounted is fine.
///
/// # Errors
/// [`Error::Io`] when the kernel refuses an unmount (other than busy).
pub fn unmount(bundle: &Path) -> Result<()> {
    for a in loopdev::backed_by(&disk_image(bundle)) {
        release(&a)?;
    }
    Ok(())
}

/// Unmounts every mount of the loop device `a` in our mount namespace (newest first, a busy
/// one lazily), then detaches it (when another namespace still mounts it, the kernel
/// detaches it once that mount is gone).
///
/// # Errors
/// [`Error::Io`] when the kernel refuses an unmount (other than busy).
pub fn release(a: &Attached) -> Result<()> {
    for m in mounts_of(&a.dev).iter().rev() {
        match rustix::mount::unmount(m, UnmountFlags::NOFOLLOW) {
            Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::BUSY) => {
                rustix::mount::unmount(m, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH).at("unmount (lazily)", m)?
            }
            Err(e) => return Err(Error::io("unmount", m, e.into())),
        }
    }
    // Autoclear has detached it when the unmount freed it; otherwise ask for the detach.
    if Path::new(&format!("/sys/block/{}/loop", file_name(&a.path))).exists() {
        if let Ok(dev) = LoopDevice::open(&a.path) {
            match dev.detach() {
                Ok(()) => {}
                Err(Error::Io { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENXIO) | Some(libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Grows the quota of the container of `bundle` to `size` bytes: extends its disk image,
/// then, when attached, the loop device and the mounted file system (`xfs_growfs -d`).
/// A stopped container's file system grows at its next [`mount`].
///
/// # Errors
/// [`Error::BadInput`] when the container has no quota or `size` is below the current
/// limit (shrinking is refused); [`Error::Io`] when the file, device or file system cannot
/// be grown (a later mount finishes it).
pub fn grow(bundle: &Path, size: u64) -> Result<()> {
    let img = disk_image(bundle);
    let f = OpenOptions::new().write(true).open(&img).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::BadInput(format!(
                "{}: the container was made without --storage-opt size: a quota can only be given at create",
                img.display()
            ))
        } else {
            Error::io("open", &img, e)
        }
    })?;
    let cur = f.metadata().at("stat", &img)?.len();
    if size < cur {
        return Err(Error::BadInput(format!(
            "--storage-opt size={size} is below the current limit of {cur} bytes: shrinking a quota is not supported"
        )));
    }
    if size == cur {
        return Ok(());
    }
    f.set_len(size).at("grow", &img)?;
    f.sync_all().at("fsync", &img)?;
    for a in loopdev::backed_by(&img) {
        LoopDevice::open(&a.path)?.refresh_capacity()?;
        if let Some(m) = mounts_of(&a.dev).first() {
            run_tool("xfs_growfs", &["-d".as_ref(), m.as_os_str()], &img)?;
        }
    }
    Ok(())
}

/// A container's disk limit and use, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// The quota: the disk image's size.
    pub limit: u64,
    /// Blocks in use on its file system (as df(1) counts them); None while not mounted.
    pub used: Option<u64>,
    /// Blocks free for writes; None while not mounted.
    pub available: Option<u64>,
}

/// The disk limit and use of the container of `bundle`; None without a quota.
///
/// # Errors
/// [`Error::Io`] when the image or the mounted file system cannot be examined.
pub fn usage(bundle: &Path) -> Result<Option<Usage>> {
    let img = disk_image(bundle);
    let limit = match fs::metadata(&img) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("stat", img, e)),
    };
    let mut u = Usage {
        limit,
        used: None,
        available: None,
    };
    if let Some(m) = backed_by_mounted(&img).first() {
        let st = rustix::fs::statvfs(m).at("statvfs", m)?;
        u.used = Some(st.f_blocks.saturating_sub(st.f_bfree) * st.f_frsize);
        u.available = Some(st.f_bavail * st.f_frsize);
    }
    Ok(Some(u))
}

/// The loop devices of this store: those whose backing file is a container's disk image
/// under `root` (`ROOT/containers/<id>/disk.img` or its `.tmp`), with the container id.
pub fn loops_under(root: &Path) -> Vec<(String, Attached)> {
    let containers = fs::canonicalize(root)
        .unwrap_or_else(|_| root.to_path_buf())
        .join("containers");
    loopdev::attached()
        .into_iter()
        .filter_map(|a| {
            let name = a.backing.file_name()?.to_str()?;
            if name != DISK_IMAGE && name != format!("{DISK_IMAGE}.tmp") {
                return None;
            }
            let bundle = a.backing.parent()?;
            (bundle.parent()? == containers).then(|| (file_name(bundle), a.clone()))
        })
        .collect()
}

impl crate::Engine {
    /// `vessel update --storage-opt size=SIZE`: grows the disk quota of container `r`
    /// (running or not, [`grow`]) and records the new value.
    ///
    /// # Errors
    /// [`Error::BadInput`] for options other than `size`, a container made without a quota,
    /// or a size below its current limit (shrinking is refused); [`Error::Io`] when the disk
    /// cannot be grown.
    pub fn update_storage(&self, r: &crate::db::Record, opts: &BTreeMap<String, String>) -> Result<()> {
        let Some(size) = size_limit(opts)? else {
            return Err(Error::BadInput(
                "vessel update --storage-opt: only size=SIZE can be changed".into(),
            ));
        };
        let bundle = self.paths.bundle(&r.id);
        if !has_disk(&bundle) {
            return Err(Error::BadInput(format!(
                "container {} was made without --storage-opt size: a quota can only be given at create",
                r.name
            )));
        }
        grow(&bundle, size).map_err(|e| match e {
            Error::BadInput(m) => Error::BadInput(format!("container {}: {m}", r.name)),
            e => e,
        })?;
        let mut options = r.options.clone();
        options.storage_opt.extend(opts.clone());
        self.db
            .set_config(&r.id, &r.image_id, &options, &r.command, r.stop_signal)
    }

    /// The disk limit and use of container `r`; None without a quota.
    ///
    /// # Errors
    /// [`Error::Io`] when its disk image or file system cannot be examined.
    pub fn disk_usage(&self, r: &crate::db::Record) -> Result<Option<Usage>> {
        usage(&self.paths.bundle(&r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_podmans() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("300m").unwrap(), 300 << 20);
        assert_eq!(parse_size("307200k").unwrap(), 300 << 20);
        for bad in ["abc", "0", "", "-1G", "1k", "12q", "64m"] {
            assert!(matches!(parse_size(bad), Err(Error::BadInput(_))), "{bad}");
        }
    }

    #[test]
    fn storage_opts_know_only_size() {
        let m = parse_storage_opts(&["size=1g".into()]).unwrap();
        assert_eq!(size_limit(&m).unwrap(), Some(1 << 30));
        assert!(size_limit(&BTreeMap::new()).unwrap().is_none());
        for bad in ["inodes=5", "size", "size=abc", "size=0"] {
            let e = parse_storage_opts(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("--storage-opt"), "{e}");
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
