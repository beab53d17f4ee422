//! Loop block devices (loop(4)): attaching a file (LOOP_CTL_GET_FREE, then LOOP_CONFIGURE
//! with LO_FLAGS_AUTOCLEAR, so the device detaches itself once its last user, the mounted
//! file system, is gone), growing one after its file grew (LOOP_SET_CAPACITY), finding the
//! devices that a file backs (sysfs `loop/backing_file`) and detaching them (LOOP_CLR_FD).
//! The constants and structures are those of `<linux/loop.h>`, which the libc crate lacks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `<linux/loop.h>` (LOOP_CONFIGURE, Linux 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, open (read-write). Dropping it closes the device; with the
/// autoclear flag the kernel detaches it once nothing (no open file, no mount) uses it.
#[derive(Debug)]
pub struct LoopDevice {
    file: File,
    /// `/dev/loopN`.
    pub path: PathBuf,
}

impl LoopDevice {
    /// Attaches `backing` (read-write) to a free loop device, with LO_FLAGS_AUTOCLEAR.
    /// Another process may take the free device first: then the next free one is tried.
    ///
    /// # Errors
    /// [`Error::Io`] when /dev/loop-control or the file cannot be opened or no device can
    /// be attached.
    pub fn attach(backing: &Path) -> Result<LoopDevice> {
        let ctl_path = Path::new("/dev/loop-control");
        let ctl = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(ctl_path)
            .at("open (is the loop module there?)", ctl_path)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(backing)
            .at("open", backing)?;
        let mut last = io::Error::other("no free loop device");
        for _ in 0..32 {
            // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
            let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
            if n < 0 {
                return Err(Error::io(
                    "find a free loop device",
                    ctl_path,
                    io::Error::last_os_error(),
                ));
            }
            let path = PathBuf::from(format!("/dev/loop{n}"));
            let dev = match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(d) => d,
                // Taken and removed by someone else between the two calls.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    last = e;
                    continue;
                }
                Err(e) => return Err(Error::io("open", path, e)),
            };
            match configure(&dev, &file, backing) {
                Ok(()) => return Ok(LoopDevice { file: dev, path }),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = e,
                Err(e) => return Err(Error::io("attach a loop device to", backing, e)),
            }
        }
        Err(Error::io("attach a loop device to", backing, last))
    }

    /// Opens the attached loop device `path` (`/dev/loopN`).
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be opened.
    pub fn open(path: &Path) -> Result<LoopDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .at("open", path)?;
        Ok(LoopDevice {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Makes the device take the current size of its backing file (after the file grew).
    ///
    /// # Errors
    /// [`Error::Io`] with the kernel's error.
    pub fn refresh_capacity(&self) -> Result<()> {
        // SAFETY: LOOP_SET_CAPACITY takes no argument; the fd is an open loop device.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_SET_CAPACITY as _, 0) };
        if r < 0 {
            return Err(Error::io("resize loop device", &self.path, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Detaches the device from its file (LOOP_CLR_FD). On a device still in use (mounted,
    /// open elsewhere) the kernel only marks it to detach when the last user is gone.
    ///
    /// # Errors
    /// [`Error::Io`] with the kernel's error (ENXIO: it was not attached).
    pub fn detach(self) -> Result<()> {
        // SAFETY: LOOP_CLR_FD takes no argument; the fd is an open loop device.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        if r < 0 {
            return Err(Error::io("detach loop device", &self.path, io::Error::last_os_error()));
        }
        Ok(())
    }
}

fn name_field(backing: &Path) -> [u8; LO_NAME_SIZE] {
    let mut name = [0u8; LO_NAME_SIZE];
    let bytes = backing.as_os_str().as_bytes();
    let n = bytes.len().min(LO_NAME_SIZE - 1);
    name[..n].copy_from_slice(&bytes[..n]);
    name
}

fn empty_info(backing: &Path) -> LoopInfo64 {
    LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR,
        lo_file_name: name_field(backing),
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    }
}

/// LOOP_CONFIGURE, or on kernels before 5.8 LOOP_SET_FD + LOOP_SET_STATUS64.
fn configure(dev: &File, backing: &File, name: &Path) -> io::Result<()> {
    let cfg = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: empty_info(name),
        reserved: [0; 8],
    };
    // SAFETY: cfg is a valid struct loop_config that outlives the call; the kernel only
    // reads it.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE as _, &cfg as *const LoopConfig) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOTTY)) {
        return Err(e);
    }
    // SAFETY: LOOP_SET_FD takes the backing file's fd as its argument.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD as _, backing.as_raw_fd()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let info = empty_info(name);
    // SAFETY: info is a valid struct loop_info64 that outlives the call.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64 as _, &info as *const LoopInfo64) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // SAFETY: LOOP_CLR_FD takes no argument: undo the half-made attachment.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD as _, 0) };
        return Err(e);
    }
    Ok(())
}

/// An attached loop device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// Its `major:minor`, as /proc/self/mountinfo names the device of a mount.
    pub dev: String,
    /// The backing file's path as the kernel shows it (without a " (deleted)" suffix).
    pub backing: PathBuf,
    /// The backing file was deleted while attached.
    pub deleted: bool,
}

/// Every attached loop device of the host (those with a backing file).
pub fn attached() -> Vec<Attached> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let Ok(dev) = fs::read_to_string(e.path().join("dev")) else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let (backing, deleted) = match backing.strip_suffix(" (deleted)") {
            Some(b) => (b, true),
            None => (backing, false),
        };
        out.push(Attached {
            path: PathBuf::from(format!("/dev/{name}")),
            dev: dev.trim().to_string(),
            backing: PathBuf::from(backing),
            deleted,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The attached loop devices whose backing file is `file` (compared by the kernel's
/// path for it, so `file` is made canonical first).
pub fn backed_by(file: &Path) -> Vec<Attached> {
    let want = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    attached().into_iter().filter(|a| a.backing == want).collect()
}
