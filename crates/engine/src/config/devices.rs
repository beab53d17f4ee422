//! The container's devices in config.json: every host device for `--privileged`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

/// Every character and block device of the host's /dev (for `--privileged`), as runc's
/// `HostDevices` finds them: not under /dev/pts, /dev/shm, /dev/fd, /dev/mqueue and
/// udev's or lxc's private dirs, without /dev/console, symlinks not followed.
pub(super) fn host_devices() -> Vec<LinuxDevice> {
    const SKIP_DIRS: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
    let mut out = Vec::new();
    let mut stack = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = fs::symlink_metadata(&path) else { continue };
            let ft = md.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if depth < 8 && !(depth == 0 && SKIP_DIRS.iter().any(|s| name == *s)) {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let mut d = LinuxDevice::default();
            d.set_path(path);
            d.set_typ(typ);
            d.set_major(i64::from(rustix::fs::major(md.rdev())));
            d.set_minor(i64::from(rustix::fs::minor(md.rdev())));
            d.set_file_mode(Some(md.mode() & 0o7777));
            d.set_uid(Some(md.uid()));
            d.set_gid(Some(md.gid()));
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}
