//! `vessel cp`: files and directories between a container's root file system and the host,
//! with docker's semantics (a file or directory copied into an existing directory goes
//! inside it under its own name; `SRC/.` copies a directory's content; a missing destination
//! is created; symlinks are copied as symlinks; owners become root unless `-a`).
//!
//! Paths inside the container are resolved in the merged view of its root (`<bundle>/rootfs`,
//! mounted for the copy when the container is stopped) with openat2(2) `RESOLVE_IN_ROOT`:
//! a symlink in the container (`/x -> /etc`) resolves inside the container, never to the
//! host's files. Below the resolved directory every entry is opened by name relative to its
//! parent's descriptor with `O_NOFOLLOW`, so nothing is ever followed out of the root.
//! Mounts made inside the container (volumes, tmpfs) are not part of that view. `-` (a tar
//! stream on stdin or stdout) is in [`stream`].

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps};
use rustix::io::Errno;

mod stream;

use crate::containers::Engine;
use crate::db::Record;
use crate::error::{Error, IoContext, Result};
use crate::rootfs;

/// The container's root, mounted for as long as this lives (unmounted on drop when it was
/// mounted for the copy).
struct RootView {
    fd: OwnedFd,
    bundle: PathBuf,
    mounted_here: bool,
    name: String,
}

impl Drop for RootView {
    fn drop(&mut self) {
        if self.mounted_here {
            if let Err(e) = rootfs::unmount(&self.bundle) {
                eprintln!("vessel: warning: unmount the root of {}: {e}", self.name);
            }
        }
    }
}

/// A path in a container split into the directory part and the last name (None for `/`),
/// and whether it ends in `/.` (copy a directory's content).
struct CtrPath {
    dir: PathBuf,
    name: Option<OsString>,
    contents: bool,
    trailing_slash: bool,
}

fn split(path: &str) -> CtrPath {
    let contents = path.ends_with("/.") || path == ".";
    let trailing_slash = path.ends_with('/');
    let trimmed = path.trim_end_matches("/.").trim_end_matches('/');
    let p = Path::new(trimmed);
    let name = p
        .file_name()
        .filter(|n| *n != "." && *n != "..")
        .map(OsStr::to_os_string);
    let dir = match (&name, p.parent()) {
        (Some(_), Some(parent)) => parent.to_path_buf(),
        _ => p.to_path_buf(),
    };
    CtrPath {
        dir,
        name,
        contents,
        trailing_slash,
    }
}

/// The container-side path for messages: `NAME:PATH`.
fn shown(r: &Record, path: &Path) -> PathBuf {
    PathBuf::from(format!("{}:{}", r.name, path.display()))
}

/// Opens `rel` (relative to the root, `/` allowed) inside `root` with `RESOLVE_IN_ROOT`.
fn open_in_root(root: &OwnedFd, rel: &Path, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            // A rename raced with the lookup: the kernel asks for a retry.
            Err(Errno::AGAIN) | Err(Errno::INTR) if tries < 16 => tries += 1,
            other => return other,
        }
    }
}

/// `statat` without following a final symlink.
fn lstat_at(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

impl Engine {
    fn root_view(&self, r: &Record) -> Result<RootView> {
        let bundle = self.paths.bundle(&r.id);
        let mounted_here = if rootfs::is_mounted(&bundle)? {
            false
        } else {
            let store = self.store()?;
            rootfs::mount(
                &store,
                &bundle,
                &r.id,
                r.image_id == rootfs::HOST_IMAGE,
                r.options.id_mappings.as_ref(),
            )?;
            true
        };
        let root = bundle.join("rootfs");
        let fd = match rustix::fs::open(&root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                if mounted_here {
                    let _ = rootfs::unmount(&bundle);
                }
                return Err(Error::io("open", root, e.into()));
            }
        };
        Ok(RootView {
            fd,
            bundle,
            mounted_here,
            name: r.name.clone(),
        })
    }

    /// `vessel cp NAME:SRC DEST`: copies `src` out of the container to the host path `dest`.
    /// With `archive`, owners are kept; otherwise the copies belong to the caller.
    ///
    /// # Errors
    /// [`Error::BadInput`] when `src` does not exist in the container or `dest`'s parent does
    /// not exist; [`Error::Io`] for what cannot be read or written (with the path).
    pub fn copy_out(&self, r: &Record, src: &str, dest: &Path, archive: bool) -> Result<()> {
        let view = self.root_view(r)?;
        let sp = split(src);
        let missing = || Error::BadInput(format!("could not find the file {src} in container {}", r.name));
        let parent = match open_in_root(&view.fd, &sp.dir, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(Error::io("open", shown(r, &sp.dir), e.into())),
        };
        let (src_dir, name) = match &sp.name {
            Some(n) => (parent, n.clone()),
            None => (parent, OsString::from(".")),
        };
        let st = match lstat_at(&src_dir, &name) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(Error::io("stat", shown(r, Path::new(src)), e.into())),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if sp.trailing_slash && !is_dir {
            return Err(Error::BadInput(format!(
                "{src} in container {} is not a directory",
                r.name
            )));
        }
        let dest_meta = fs::metadata(dest).ok();
        let copy = Copy {
            archive,
            ids: r.options.id_mappings.clone(),
        };
        if is_dir && sp.contents {
            if dest_meta.is_none() {
                fs::create_dir(dest).at("create", dest)?;
            }
            let d = open_dir(&src_dir, &name, Path::new(src))?;
            return copy.dir_out(&d, dest, Path::new(src));
        }
        let target = match &dest_meta {
            Some(m) if m.is_dir() => dest.join(if name == "." { OsStr::new("rootfs") } else { &name }),
            Some(_) if is_dir => {
                return Err(Error::BadInput(format!(
                    "cannot copy directory {src} onto the file {}",
                    dest.display()
                )))
            }
            _ => {
                if dest.as_os_str().as_bytes().ends_with(b"/") {
                    return Err(Error::BadInput(format!(
                        "destination directory {} must exist",
                        dest.display()
                    )));
                }
                dest.to_path_buf()
            }
        };
        copy.entry_out(&src_dir, &name, &target, Path::new(src))
    }

    /// `vessel cp SRC NAME:DEST`: copies the host path `src` into the container at `dest`.
    /// Copies belong to root (uid and gid 0 in the container's root) unless `archive`, which
    /// keeps the source's owners.
    ///
    /// # Errors
    /// [`Error::BadInput`] when `src` does not exist or `dest`'s parent does not exist in the
    /// container; [`Error::Io`] for what cannot be read or written.
    pub fn copy_in(&self, r: &Record, src: &Path, dest: &str, archive: bool) -> Result<()> {
        let meta = fs::symlink_metadata(src)
            .map_err(|_| Error::BadInput(format!("could not find the file {} on the host", src.display())))?;
        let view = self.root_view(r)?;
        let contents = src.as_os_str().as_bytes().ends_with(b"/.");
        let src_name = src
            .file_name()
            .map(OsStr::to_os_string)
            .unwrap_or_else(|| OsString::from("rootfs"));
        let copy = Copy {
            archive,
            ids: r.options.id_mappings.clone(),
        };
        // An existing directory at DEST: the copy goes inside it.
        if let Ok(d) = open_in_root(&view.fd, Path::new(dest), OFlags::RDONLY | OFlags::DIRECTORY) {
            if meta.is_dir() && contents {
                return copy.dir_in(src, &d, Path::new(dest));
            }
            return copy.entry_in(src, &meta, &d, &src_name, &Path::new(dest).join(&src_name));
        }
        let dp = split(dest);
        let Some(name) = dp.name else {
            return Err(Error::BadInput(format!(
                "cannot copy onto {dest} in container {}",
                r.name
            )));
        };
        if dp.trailing_slash {
            return Err(Error::BadInput(format!(
                "destination directory {dest} must exist in container {}",
                r.name
            )));
        }
        let parent = match open_in_root(&view.fd, &dp.dir, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => {
                return Err(Error::BadInput(format!(
                    "the directory {} does not exist in container {}",
                    dp.dir.display(),
                    r.name
                )))
            }
            Err(e) => return Err(Error::io("open", shown(r, &dp.dir), e.into())),
        };
        if meta.is_dir() && contents {
            let d = make_dir(&parent, &name, Path::new(dest))?;
            return copy.dir_in(src, &d, Path::new(dest));
        }
        copy.entry_in(src, &meta, &parent, &name, Path::new(dest))
    }
}

/// Opens directory `name` under `dir` for reading, not following a symlink.
fn open_dir(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", shown)
}

/// Makes (or reuses) directory `name` under `dir` and opens it, never through a symlink.
fn make_dir(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<OwnedFd> {
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::io("create", shown, e.into())),
    }
    match open_dir(dir, name, shown) {
        Err(Error::Io { source, .. }) if matches!(source.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
            Err(Error::BadInput(format!(
                "cannot overwrite the non-directory {} with a directory",
                shown.display()
            )))
        }
        other => other,
    }
}

/// The rules of one copy.
struct Copy {
    archive: bool,
    /// The container's maps when it has its own user namespace: owners inside are its ids.
    ids: Option<crate::options::IdMappings>,
}

/// The host ids that container ids `(uid, gid)` are under `ids` (the same without maps;
/// 65534 for ids the maps leave out, the kernel's overflow id).
pub(crate) fn to_host(ids: Option<&crate::options::IdMappings>, (uid, gid): (u32, u32)) -> (u32, u32) {
    match ids {
        None => (uid, gid),
        Some(m) => (
            crate::idmap::to_host(&m.uid, uid).unwrap_or(65534),
            crate::idmap::to_host(&m.gid, gid).unwrap_or(65534),
        ),
    }
}

/// The container ids that host ids `(uid, gid)` are under `ids` (the same without maps;
/// 65534 for host ids outside the range, as the kernel shows them inside).
pub(crate) fn to_container(ids: Option<&crate::options::IdMappings>, (uid, gid): (u32, u32)) -> (u32, u32) {
    match ids {
        None => (uid, gid),
        Some(m) => (
            crate::idmap::to_container(&m.uid, uid).unwrap_or(65534),
            crate::idmap::to_container(&m.gid, gid).unwrap_or(65534),
        ),
    }
}

impl Copy {
    /// Owners of a copy: the source's with `archive` (as the container sees them), else
    /// root (in) or the caller (out).
    fn owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        if self.archive {
            to_container(self.ids.as_ref(), (uid, gid))
        } else {
            (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw())
        }
    }

    /// Copies entry `name` of container directory `dir` to host path `target`.
    fn entry_out(&self, dir: &OwnedFd, name: &OsStr, target: &Path, shown: &Path) -> Result<()> {
        let st = lstat_at(dir, name).at("stat", shown)?;
        let (uid, gid) = self.owner(st.st_uid, st.st_gid);
        let mode = st.st_mode & 0o7777;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                match fs::create_dir(target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                    Err(e) => return Err(Error::io("create", target, e)),
                }
                let d = open_dir(dir, name, shown)?;
                self.dir_out(&d, target, shown)?;
                fs::set_permissions(target, fs::Permissions::from_mode(mode)).at("chmod", target)?;
                std::os::unix::fs::lchown(target, Some(uid), Some(gid)).at("chown", target)?;
            }
            FileType::Symlink => {
                let link = rustix::fs::readlinkat(dir, name, Vec::new()).at("read link", shown)?;
                let _ = fs::remove_file(target);
                std::os::unix::fs::symlink(OsStr::from_bytes(link.as_bytes()), target).at("create", target)?;
                std::os::unix::fs::lchown(target, Some(uid), Some(gid)).at("chown", target)?;
            }
            FileType::RegularFile => {
                let src = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .at("open", shown)?;
                let mut from = fs::File::from(src);
                // Never write through a symlink that is at the destination.
                if fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
                    fs::remove_file(target).at("remove", target)?;
                }
                let mut to = fs::File::create(target).at("create", target)?;
                io::copy(&mut from, &mut to).at("copy to", target)?;
                to.set_permissions(fs::Permissions::from_mode(mode))
                    .at("chmod", target)?;
                std::os::unix::fs::fchown(&to, Some(uid), Some(gid)).at("chown", target)?;
                let times = Timestamps {
                    last_access: st_time(st.st_atime, st.st_atime_nsec as i64),
                    last_modification: st_time(st.st_mtime, st.st_mtime_nsec as i64),
                };
                rustix::fs::futimens(&to, &times).at("set times of", target)?;
            }
            _ => {
                return Err(Error::BadInput(format!(
                    "{} is a device, fifo or socket: vessel cp copies files, directories and symlinks",
                    shown.display()
                )))
            }
        }
        Ok(())
    }

    fn dir_out(&self, d: &OwnedFd, target: &Path, shown: &Path) -> Result<()> {
        for name in dir_names(d, shown)? {
            self.entry_out(d, &name, &target.join(&name), &shown.join(&name))?;
        }
        Ok(())
    }

    /// Copies host path `src` (whose metadata is `meta`) to entry `name` of container dir `dir`.
    fn entry_in(&self, src: &Path, meta: &fs::Metadata, dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
        let (uid, gid) = to_host(
            self.ids.as_ref(),
            if self.archive { (meta.uid(), meta.gid()) } else { (0, 0) },
        );
        let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
        let ft = meta.file_type();
        if ft.is_dir() {
            let d = make_dir(dir, name, shown)?;
            self.dir_in(src, &d, shown)?;
            rustix::fs::fchmod(&d, mode).at("chmod", shown)?;
            rustix::fs::fchown(
                &d,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .at("chown", shown)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(src).at("read link", src)?;
            remove_non_dir(dir, name, shown)?;
            rustix::fs::symlinkat(target.as_os_str(), dir, name).at("create", shown)?;
            rustix::fs::chownat(
                dir,
                name,
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .at("chown", shown)?;
        } else if ft.is_file() {
            let mut from = fs::File::open(src).at("open", src)?;
            let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => fd,
                // A symlink (ELOOP) or something else that is not a file there: replace it.
                Err(Errno::LOOP) | Err(Errno::ISDIR) | Err(Errno::NXIO) => {
                    remove_non_dir(dir, name, shown)?;
                    rustix::fs::openat(dir, name, flags | OFlags::EXCL, Mode::from_raw_mode(0o600))
                        .at("create", shown)?
                }
                Err(e) => return Err(Error::io("create", shown, e.into())),
            };
            let mut to = fs::File::from(fd);
            io::copy(&mut from, &mut to).at("copy to", shown)?;
            rustix::fs::fchown(
                to.as_fd(),
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            )
            .at("chown", shown)?;
            // After chown, which clears set-user-id bits.
            rustix::fs::fchmod(to.as_fd(), mode).at("chmod", shown)?;
            let times = Timestamps {
                last_access: st_time(meta.atime(), meta.atime_nsec()),
                last_modification: st_time(meta.mtime(), meta.mtime_nsec()),
            };
            rustix::fs::futimens(to.as_fd(), &times).at("set times of", shown)?;
        } else {
            return Err(Error::BadInput(format!(
                "{} is a device, fifo or socket: vessel cp copies files, directories and symlinks",
                src.display()
            )));
        }
        Ok(())
    }

    fn dir_in(&self, src: &Path, d: &OwnedFd, shown: &Path) -> Result<()> {
        let mut names: Vec<OsString> = fs::read_dir(src)
            .at("list", src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .at("list", src)?;
        names.sort();
        for name in names {
            let p = src.join(&name);
            let meta = fs::symlink_metadata(&p).at("stat", &p)?;
            self.entry_in(&p, &meta, d, &name, &shown.join(&name))?;
        }
        Ok(())
    }
}

/// Removes entry `name` of `dir` unless it is a directory (missing is fine).
fn remove_non_dir(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM)
            if lstat_at(dir, name).is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory) =>
        {
            Err(Error::BadInput(format!(
                "cannot overwrite the directory {} with a non-directory",
                shown.display()
            )))
        }
        Err(e) => Err(Error::io("remove", shown, e.into())),
    }
}

/// The names in directory `d` (not `.` and `..`), sorted.
fn dir_names(d: &OwnedFd, shown: &Path) -> Result<Vec<OsString>> {
    let dup = rustix::fs::openat(
        d,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", shown)?;
    let mut out = Vec::new();
    for e in rustix::fs::Dir::new(dup).at("list", shown)? {
        let e = e.at("list", shown)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    out.sort();
    Ok(out)
}

fn st_time(secs: i64, nsecs: i64) -> rustix::fs::Timespec {
    rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nsecs as _,
    }
}

#[cfg(test)]
mod tests {
    use super::split;
    use std::path::Path;

    #[test]
    fn container_paths() {
        let p = split("/etc/motd");
        assert_eq!(
            (p.dir.as_path(), p.name.as_deref()),
            (Path::new("/etc"), Some("motd".as_ref()))
        );
        let p = split("/srv/.");
        assert!(p.contents);
        assert_eq!(
            (p.dir.as_path(), p.name.as_deref()),
            (Path::new("/"), Some("srv".as_ref()))
        );
        let p = split("/");
        assert_eq!(p.name, None);
        let p = split("/data/");
        assert!(p.trailing_slash);
        assert_eq!(p.name.as_deref(), Some("data".as_ref()));
    }
}
