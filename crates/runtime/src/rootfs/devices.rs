//! Device nodes and /dev symlinks (runtime-spec config-linux.md "Devices" and
//! "Default Devices", runtime-linux.md "Dev symbolic links"): mknod, or, in a user
//! namespace where mknod is refused, an empty file with the host's node bound on it.

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use rustix::fs::{AtFlags, FileType, Mode};
use rustix::io::Errno;

use super::mounts::sys_mount;
use super::paths::{create_file, fd_path, split, Root};
use crate::error::{Error, Result};

/// One device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Device {
    /// Absolute path inside the container.
    pub path: PathBuf,
    /// Character, block or FIFO.
    pub kind: FileType,
    /// Major and minor numbers.
    pub major: u32,
    pub minor: u32,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (config-linux.md "Default Devices").
pub(crate) fn defaults() -> Vec<Device> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Device {
        path: Path::new("/dev").join(name),
        kind: FileType::CharacterDevice,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

/// Converts one `linux.devices` entry, refusing values the kernel cannot take.
pub(crate) fn from_spec(d: &LinuxDevice) -> Result<Device> {
    let path = d.path();
    let bad = |why: &str| Error::Invalid(format!("linux.devices entry {}: {why}", path.display()));
    if !path.is_absolute() || split(path).1.is_none() {
        return Err(bad("the path must be absolute and name a file"));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
        LinuxDeviceType::B => FileType::BlockDevice,
        LinuxDeviceType::P => FileType::Fifo,
        LinuxDeviceType::A => return Err(bad("type \"a\" is only for the device cgroup; use c, b, u or p")),
    };
    let num = |v: i64, what: &str| u32::try_from(v).map_err(|_| bad(&format!("{what} number {v} out of range")));
    Ok(Device {
        path: path.clone(),
        kind,
        major: num(d.major(), "major")?,
        minor: num(d.minor(), "minor")?,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// The default devices overridden and extended by `linux.devices`, by path.
pub(crate) fn wanted(spec_devices: &[LinuxDevice]) -> Result<Vec<Device>> {
    let mut all = defaults();
    for d in spec_devices {
        let d = from_spec(d)?;
        all.retain(|x| x.path != d.path);
        all.push(d);
    }
    Ok(all)
}

/// Sets the umask for its lifetime (device modes must be exact) and restores it.
pub(crate) struct Umask(Mode);

impl Umask {
    /// Sets the umask to `mask`.
    pub(crate) fn set(mask: u32) -> Umask {
        Umask(rustix::process::umask(Mode::from_raw_mode(mask)))
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        rustix::process::umask(self.0);
    }
}

/// Creates `dev` inside `root`: mknod, or when `bind` (user namespace) or mknod is
/// refused, an empty file with the host's node of the same path bound on it. An
/// existing entry is kept, as runc does.
pub(crate) fn create(root: &Root, dev: &Device, bind: bool) -> Result<()> {
    let (parent, Some(name)) = split(&dev.path) else {
        return Err(Error::Invalid(format!(
            "device path {} names no file",
            dev.path.display()
        )));
    };
    let dir = root.mkdir_all(parent)?;
    let err = |what: &str, e: io::Error| root.err(what, &dev.path, e);
    if !bind || dev.kind == FileType::Fifo {
        let rdev = rustix::fs::makedev(dev.major, dev.minor);
        match rustix::fs::mknodat(&dir, name, dev.kind, Mode::from_raw_mode(dev.mode), rdev) {
            Ok(()) => {
                let (uid, gid) = (
                    rustix::fs::Uid::from_raw_unchecked(dev.uid),
                    rustix::fs::Gid::from_raw_unchecked(dev.gid),
                );
                rustix::fs::chownat(&dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| err("chown device", e.into()))?;
                return Ok(());
            }
            Err(Errno::EXIST) => return Ok(()),
            Err(Errno::PERM) if dev.kind != FileType::Fifo => {}
            Err(e) => return Err(err("mknod", e.into())),
        }
    }
    create_file(&dir, name).map_err(|e| err("create the bind target of device", e))?;
    let target = root.open_path(&dev.path).map_err(|e| err("open device", e))?;
    sys_mount(Some(dev.path.as_os_str()), &fd_path(&target), None, libc::MS_BIND, None)
        .map_err(|e| err(&format!("bind the host's {} onto device", dev.path.display()), e))
}

/// The /dev symlinks (runtime-linux.md "Dev symbolic links"); `/dev/ptmx` points to
/// `pts/ptmx` when `ptmx` (a devpts is mounted at /dev/pts), `/dev/core` exists when
/// the host has /proc/kcore. Existing entries are kept.
pub(crate) fn symlinks(root: &Root, ptmx: bool) -> Result<()> {
    let dev = Path::new("/dev");
    let dir = root.mkdir_all(dev)?;
    let mut links = vec![
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("core", "/proc/kcore"));
    }
    if ptmx {
        match rustix::fs::unlinkat(&dir, "ptmx", AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(root.err("remove", &dev.join("ptmx"), e.into())),
        }
        links.push(("ptmx", "pts/ptmx"));
    }
    for (name, target) in links {
        match rustix::fs::symlinkat(target, &dir, name) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(root.err("symlink", &dev.join(name), e.into())),
        }
    }
    Ok(())
}
