//! Safe unpacking of one untrusted layer tar into an empty directory, turning OCI whiteouts
//! into overlayfs whiteouts (image spec "Image Layer Filesystem Changeset").
//!
//! Every entry is created relative to a directory fd opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_MAGICLINKS)` below the layer root, and the final component is created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` (or the `*at` call that never follows it), so no entry can
//! create, follow or overwrite anything outside the directory: entries with `..` or absolute
//! names are refused, a path through a symlink that leads out fails with `EXDEV`, hardlink
//! targets must be inside, and device nodes and setuid/setgid bits are kept only when asked.
//!
//! Device nodes: an image runtime running as root creates them as podman and docker do
//! (a debootstrap image ships `/dev/null`, `/dev/console`, ...); they are harmless there
//! because a container gets its own `/dev` and the device cgroup refuses every node it does
//! not list. Without `CAP_MKNOD` (rootless) they are skipped and counted.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

use crate::error::{ImageError, IoContext, Result};

/// What an unpack does with character and block device entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceNodes {
    /// Such an entry is an error ([`ImageError::UnsafeEntry`]).
    Refuse,
    /// Create the node (needs `CAP_MKNOD`: root).
    Create,
    /// Leave the entry out and count it in [`UnpackStats::skipped_devices`] (rootless).
    Skip,
}

impl DeviceNodes {
    /// What podman and docker do for the user running this process: [`DeviceNodes::Create`]
    /// as root (effective uid 0) in the initial user namespace, [`DeviceNodes::Skip`]
    /// otherwise (rootless, uid 0 of a user namespace included: mknod needs CAP_MKNOD in
    /// the initial one).
    pub fn for_this_user() -> DeviceNodes {
        if rustix::process::geteuid().is_root() && !in_user_namespace() {
            DeviceNodes::Create
        } else {
            DeviceNodes::Skip
        }
    }
}

/// Whether this process runs in a user namespace other than the initial one (whose
/// `/proc/self/uid_map` maps the whole range `0 0 4294967295`).
fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}

/// What an unpack may keep from the layer.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// What to do with character and block device nodes.
    pub devices: DeviceNodes,
    /// Keep setuid and setgid bits on files (otherwise they are cleared).
    pub keep_setuid: bool,
    /// Keep the entries' uid/gid (otherwise files belong to the unpacking user).
    pub keep_ownership: bool,
}

impl Default for UnpackOptions {
    /// The cautious default: no devices, no setuid/setgid, ownership kept.
    fn default() -> Self {
        UnpackOptions {
            devices: DeviceNodes::Refuse,
            keep_setuid: false,
            keep_ownership: true,
        }
    }
}

/// Counts of what an unpack made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries applied (whiteouts included).
    pub entries: u64,
    /// Regular file bytes written.
    pub bytes: u64,
    /// Whiteouts (`.wh.NAME`) turned into 0:0 character devices.
    pub whiteouts: u64,
    /// Opaque directory markers turned into `trusted.overlay.opaque=y`.
    pub opaque_dirs: u64,
    /// Device node entries left out ([`DeviceNodes::Skip`]).
    pub skipped_devices: u64,
}

/// The xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> ImageError {
    ImageError::UnsafeEntry {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// Splits an entry name into its components, refusing absolute names and `..`; `.` and empty
/// components are dropped (`./a//b/` is `a/b`).
pub fn entry_components(name: &[u8]) -> Result<Vec<&[u8]>> {
    if name.first() == Some(&b'/') {
        return Err(unsafe_entry(name, "absolute path"));
    }
    if name.contains(&0) {
        return Err(unsafe_entry(name, "NUL byte in name"));
    }
    let mut out = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(name, "`..` component")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> PathBuf {
    if comps.is_empty() {
        return PathBuf::from(".");
    }
    PathBuf::from(OsString::from_vec(comps.join(&b'/')))
}

/// Unpacks the layer tar read from `reader` into `dest` (which must exist and should be
/// empty); see the module docs for the rules. Read errors of the stream are returned as
/// [`ImageError::LayerStream`] labelled `layer`/`compression`.
///
/// # Errors
/// [`ImageError::UnsafeEntry`] for a refused entry, [`ImageError::LayerStream`] for a bad
/// stream, [`ImageError::Io`] for file system failures.
pub fn unpack_tar<R: Read>(
    reader: R,
    dest: &Path,
    opts: &UnpackOptions,
    layer: &str,
    compression: &'static str,
) -> Result<UnpackStats> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx("open layer directory", dest)?;
    let mut u = Unpacker {
        root,
        dest,
        opts,
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        layer,
        compression,
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| u.stream_err(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| u.stream_err(e))?;
        u.apply(&mut entry)?;
    }
    // Directory times last, deepest first: creating entries inside changed them.
    let times = std::mem::take(&mut u.dir_times);
    for (path, mtime) in times.iter().rev() {
        let ts = timestamps(*mtime);
        let _ = rustix::fs::utimensat(&u.root, path, &ts, AtFlags::SYMLINK_NOFOLLOW);
    }
    Ok(u.stats)
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime.min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

struct Unpacker<'a> {
    root: OwnedFd,
    dest: &'a Path,
    opts: &'a UnpackOptions,
    stats: UnpackStats,
    dir_times: Vec<(PathBuf, u64)>,
    layer: &'a str,
    compression: &'static str,
}

enum Kind {
    Dir,
    File,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
    Device(rustix::fs::FileType, u32, u32),
    Fifo,
}

impl Unpacker<'_> {
    fn stream_err(&self, source: io::Error) -> ImageError {
        ImageError::LayerStream {
            layer: self.layer.to_string(),
            compression: self.compression,
            source,
        }
    }

    fn fs_err(&self, op: &'static str, rel: &Path, e: impl Into<io::Error>) -> ImageError {
        ImageError::io(op, self.dest.join(rel), e.into())
    }

    /// Opens (creating missing directories, mode 0755) the directory `comps` below the root,
    /// never leaving it.
    fn open_dir(&self, entry: &[u8], comps: &[&[u8]]) -> Result<OwnedFd> {
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let path = join(comps);
        match rustix::fs::openat2(&self.root, &path, flags, Mode::empty(), how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(e) => return Err(self.resolve_err(entry, &path, e)),
        }
        let mut cur = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).ctx("dup", self.dest)?;
        for (i, c) in comps.iter().enumerate() {
            let name = OsStr::from_bytes(c);
            match rustix::fs::openat2(&cur, name, flags, Mode::empty(), how) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.fs_err("create directory", &join(&comps[..=i]), e)),
                    }
                    cur = rustix::fs::openat2(&cur, name, flags, Mode::empty(), how)
                        .map_err(|e| self.resolve_err(entry, &join(&comps[..=i]), e))?;
                }
                Err(e) => return Err(self.resolve_err(entry, &join(&comps[..=i]), e)),
            }
        }
        Ok(cur)
    }

    fn resolve_err(&self, entry: &[u8], path: &Path, e: Errno) -> ImageError {
        match e {
            Errno::XDEV | Errno::LOOP => unsafe_entry(
                entry,
                format!(
                    "{} resolves through a symlink that leads outside the layer",
                    path.display()
                ),
            ),
            Errno::NOTDIR => unsafe_entry(entry, format!("{} is not a directory", path.display())),
            e => self.fs_err("open directory", path, e),
        }
    }

    /// Removes whatever is at `name` in `dir` (a directory with all it holds).
    fn remove_existing(&self, dir: BorrowedFd<'_>, name: &OsStr, rel: &Path) -> Result<()> {
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.fs_err("stat", rel, e)),
            Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fs_err("open", rel, e))?;
                remove_dir_contents(fd).map_err(|e| self.fs_err("remove", rel, e))?;
                rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(|e| self.fs_err("remove", rel, e))
            }
            Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| self.fs_err("remove", rel, e)),
        }
    }

    fn mode_of(&self, mode: u32, is_dir: bool) -> Mode {
        let mut m = mode & 0o7777;
        if !self.opts.keep_setuid && !is_dir {
            m &= !0o6000;
        }
        if !self.opts.keep_setuid && is_dir {
            m &= !0o4000;
        }
        Mode::from_raw_mode(m)
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw: Vec<u8> = entry.path_bytes().into_owned();
        let header = entry.header();
        let etype = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let uid = header.uid().unwrap_or(0).min(u32::MAX as u64) as u32;
        let gid = header.gid().unwrap_or(0).min(u32::MAX as u64) as u32;
        let mtime = header.mtime().unwrap_or(0);
        let kind = match etype {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Symlink => Kind::Symlink(
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?,
            ),
            tar::EntryType::Link => Kind::Hardlink(
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| unsafe_entry(&raw, "hardlink without a target"))?,
            ),
            tar::EntryType::Char | tar::EntryType::Block => {
                match self.opts.devices {
                    DeviceNodes::Create => {}
                    DeviceNodes::Refuse => {
                        return Err(unsafe_entry(
                            &raw,
                            "device node (devices are not allowed in this unpack)",
                        ))
                    }
                    DeviceNodes::Skip => {
                        // Still refuse a name that would lead out of the layer.
                        entry_components(&raw)?;
                        self.stats.skipped_devices += 1;
                        return Ok(());
                    }
                }
                let ft = if etype == tar::EntryType::Char {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                Kind::Device(
                    ft,
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                )
            }
            tar::EntryType::Fifo => Kind::Fifo,
            // Global PAX headers and anything unknown carry no file.
            _ => return Ok(()),
        };
        let xattrs = self.xattrs(entry)?;
        let comps = entry_components(&raw)?;
        self.stats.entries += 1;
        let Some((last, parent)) = comps.split_last() else {
            // The layer root itself ("./"): only its metadata.
            if matches!(kind, Kind::Dir) {
                let fd = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).ctx("dup", self.dest)?;
                self.set_meta(fd.as_fd(), uid, gid, mode, true, &xattrs, Path::new("."))?;
                self.dir_times.push((PathBuf::from("."), mtime));
            }
            return Ok(());
        };
        let rel = join(&comps);
        let name = OsStr::from_bytes(last);
        // Whiteouts.
        if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let dir = self.open_dir(&raw, parent)?;
            if *last == OPAQUE_MARKER.as_bytes() {
                let d = rustix::fs::openat(
                    &dir,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fs_err("open", &join(parent), e))?;
                rustix::fs::fsetxattr(&d, OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| self.fs_err("set trusted.overlay.opaque on", &join(parent), e))?;
                self.stats.opaque_dirs += 1;
                return Ok(());
            }
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) || target.is_empty() || target == b"." || target == b".."
            {
                // Other AUFS metadata (.wh..wh.plnk, ...): nothing for overlayfs.
                return Ok(());
            }
            let tname = OsStr::from_bytes(target);
            let trel = join(parent).join(tname);
            self.remove_existing(dir.as_fd(), tname, &trel)?;
            rustix::fs::mknodat(
                &dir,
                tname,
                rustix::fs::FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|e| self.fs_err("create whiteout", &trel, e))?;
            self.stats.whiteouts += 1;
            return Ok(());
        }
        let dir = self.open_dir(&raw, parent)?;
        match kind {
            Kind::Dir => {
                let existing = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW).ok();
                let is_dir = existing.is_some_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory
                });
                if !is_dir {
                    self.remove_existing(dir.as_fd(), name, &rel)?;
                    rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o700))
                        .map_err(|e| self.fs_err("create directory", &rel, e))?;
                }
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.fs_err("open directory", &rel, e))?;
                self.set_meta(fd.as_fd(), uid, gid, mode, true, &xattrs, &rel)?;
                self.dir_times.push((rel, mtime));
            }
            Kind::File => {
                self.remove_existing(dir.as_fd(), name, &rel)?;
                let fd = rustix::fs::openat(
                    &dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.fs_err("create file", &rel, e))?;
                let mut file = File::from(fd);
                let mut buf = vec![0u8; 128 * 1024];
                loop {
                    let n = entry.read(&mut buf).map_err(|e| self.stream_err(e))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).map_err(|e| self.fs_err("write", &rel, e))?;
                    self.stats.bytes += n as u64;
                }
                self.set_meta(file.as_fd(), uid, gid, mode, false, &xattrs, &rel)?;
                rustix::fs::futimens(&file, &timestamps(mtime)).map_err(|e| self.fs_err("set times of", &rel, e))?;
            }
            Kind::Symlink(target) => {
                self.remove_existing(dir.as_fd(), name, &rel)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, name)
                    .map_err(|e| self.fs_err("create symlink", &rel, e))?;
                if self.opts.keep_ownership {
                    rustix::fs::chownat(
                        &dir,
                        name,
                        Some(rustix::fs::Uid::from_raw(uid)),
                        Some(rustix::fs::Gid::from_raw(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| self.fs_err("chown", &rel, e))?;
                }
                let _ = rustix::fs::utimensat(&dir, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW);
            }
            Kind::Hardlink(target) => {
                let tcomps = entry_components(&target).map_err(|_| {
                    unsafe_entry(
                        &raw,
                        format!(
                            "hardlink target {:?} is outside the layer",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
                let Some((tlast, tparent)) = tcomps.split_last() else {
                    return Err(unsafe_entry(&raw, "hardlink to the layer root"));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tdir = match rustix::fs::openat2(
                    &self.root,
                    join(tparent),
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        return Err(unsafe_entry(&raw, "hardlink target does not exist in this layer"))
                    }
                    Err(e) => return Err(self.resolve_err(&raw, &join(tparent), e)),
                };
                let tname = OsStr::from_bytes(tlast);
                match rustix::fs::statat(&tdir, tname, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
                        return Err(unsafe_entry(&raw, "hardlink to a directory"));
                    }
                    Ok(_) => {}
                    Err(_) => return Err(unsafe_entry(&raw, "hardlink target does not exist in this layer")),
                }
                self.remove_existing(dir.as_fd(), name, &rel)?;
                rustix::fs::linkat(&tdir, tname, &dir, name, AtFlags::empty())
                    .map_err(|e| self.fs_err("create hardlink", &rel, e))?;
            }
            Kind::Device(ft, major, minor) => {
                self.remove_existing(dir.as_fd(), name, &rel)?;
                rustix::fs::mknodat(
                    &dir,
                    name,
                    ft,
                    Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| self.fs_err("create device node", &rel, e))?;
                self.node_meta(dir.as_fd(), name, &rel, uid, gid, mode, mtime)?;
            }
            Kind::Fifo => {
                self.remove_existing(dir.as_fd(), name, &rel)?;
                rustix::fs::mknodat(&dir, name, rustix::fs::FileType::Fifo, Mode::from_raw_mode(0o600), 0)
                    .map_err(|e| self.fs_err("create fifo", &rel, e))?;
                self.node_meta(dir.as_fd(), name, &rel, uid, gid, mode, mtime)?;
            }
        }
        Ok(())
    }

    /// Ownership and mode of a device node or fifo, through an O_PATH fd (never opening it).
    #[allow(clippy::too_many_arguments)]
    fn node_meta(
        &self,
        dir: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        uid: u32,
        gid: u32,
        mode: u32,
        mtime: u64,
    ) -> Result<()> {
        if self.opts.keep_ownership {
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| self.fs_err("chown", rel, e))?;
        }
        rustix::fs::chmodat(dir, name, self.mode_of(mode, false), AtFlags::empty())
            .map_err(|e| self.fs_err("chmod", rel, e))?;
        let _ = rustix::fs::utimensat(dir, name, &timestamps(mtime), AtFlags::SYMLINK_NOFOLLOW);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn set_meta(
        &self,
        fd: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
        mode: u32,
        is_dir: bool,
        xattrs: &[(String, Vec<u8>)],
        rel: &Path,
    ) -> Result<()> {
        if self.opts.keep_ownership {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .map_err(|e| self.fs_err("chown", rel, e))?;
        }
        for (k, v) in xattrs {
            rustix::fs::fsetxattr(fd, k.as_str(), v, rustix::fs::XattrFlags::empty())
                .map_err(|e| self.fs_err("set xattr on", rel, e))?;
        }
        // chmod after chown: chown clears setuid bits.
        rustix::fs::fchmod(fd, self.mode_of(mode, is_dir)).map_err(|e| self.fs_err("chmod", rel, e))
    }

    /// The entry's `SCHILY.xattr.*` PAX records, minus `trusted.overlay.*` (overlayfs's own
    /// attributes: a layer must not set redirects or opaque flags except through whiteouts).
    fn xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        let Some(exts) = entry.pax_extensions().map_err(|e| self.stream_err(e))? else {
            return Ok(out);
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.stream_err(e))?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if !name.starts_with("trusted.overlay.") && !name.is_empty() {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        Ok(out)
    }
}

/// Removes everything inside the directory `dir` without following symlinks.
fn remove_dir_contents(dir: OwnedFd) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    {
        let d = rustix::fs::Dir::read_from(&dir)?;
        for e in d {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push((n.to_vec(), e.file_type()));
            }
        }
    }
    for (n, ft) in names {
        let name = OsStr::from_bytes(&n);
        let is_dir = match ft {
            rustix::fs::FileType::Directory => true,
            rustix::fs::FileType::Unknown => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory),
            _ => false,
        };
        if is_dir {
            let sub = rustix::fs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            remove_dir_contents(sub)?;
            rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(&dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}
