//! Paths inside a rootfs: every lookup goes through `openat2(RESOLVE_IN_ROOT)` on a
//! descriptor of the rootfs, so a symlink or ".." in the container's files can never
//! lead a mount or a device node out of it (runtime-spec config.md "Mounts":
//! destinations are resolved inside the container's root).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};

/// What a mount target or a device path must be when it has to be created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory (most mounts).
    Dir,
    /// An empty regular file (bind of a file or a device node).
    File,
}

/// The container's root, held open so that every lookup is relative to it.
#[derive(Debug)]
pub(crate) struct Root {
    fd: OwnedFd,
    host: PathBuf,
}

impl Root {
    /// Opens `host` (the rootfs as the caller sees it) as the root of later lookups.
    pub(crate) fn open(host: &Path) -> Result<Root> {
        let fd = rustix::fs::open(host, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .ctx(|| format!("open rootfs {}", host.display()))?;
        Ok(Root {
            fd,
            host: host.to_path_buf(),
        })
    }

    /// The rootfs path on the host side, for messages.
    pub(crate) fn host(&self) -> &Path {
        &self.host
    }

    /// Opens `path` (container-absolute or relative to the root) with `O_PATH`,
    /// resolving symlinks and ".." as if the rootfs were "/".
    pub(crate) fn open_path(&self, path: &Path) -> io::Result<OwnedFd> {
        self.open_with(path, OFlags::empty())
    }

    fn open_with(&self, path: &Path, extra: OFlags) -> io::Result<OwnedFd> {
        let rel = relative(path);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let flags = OFlags::PATH | OFlags::CLOEXEC | extra;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        // openat2 asks to retry when a rename raced with the lookup.
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(self.fd.as_fd(), rel, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// Opens `path` with `O_PATH | O_NOFOLLOW`, refusing a symlink in any of its
    /// parents (ELOOP); a trailing symlink is returned as itself.
    pub(crate) fn open_nofollow(&self, path: &Path) -> io::Result<OwnedFd> {
        let rel = relative(path);
        let rel: &Path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        };
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS;
        let mut tries = 0;
        loop {
            match rustix::fs::openat2(self.fd.as_fd(), rel, flags, Mode::empty(), resolve) {
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                r => return r.map_err(io::Error::from),
            }
        }
    }

    /// An `O_PATH` descriptor of the directory `path`, created when missing, for a
    /// file system that must sit on an ordinary directory (`fs` is "proc" or "sysfs"):
    /// a symlink there, or in a directory above it, is refused rather than followed
    /// (runc and crun refuse it too; CVE-2023-27561 class).
    ///
    /// Errors: [`Error::Invalid`] saying what `path` is instead.
    pub(crate) fn ordinary_dir(&self, path: &Path, fs: &str) -> Result<OwnedFd> {
        let refuse = |what: &str| {
            Error::Invalid(format!(
                "{fs} must be mounted on an ordinary directory, and {} {what} (in rootfs {}): \
                 make it a directory in the image",
                path.display(),
                self.host.display()
            ))
        };
        let fd = match self.open_nofollow(path) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.mkdir_all(path)?;
                self.open_nofollow(path).map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => refuse("is reached through a symlink"),
                    _ => self.err("open directory", path, e),
                })?
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refuse("is reached through a symlink")),
            Err(e) => return Err(self.err("open directory", path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| self.err("stat", path, e.into()))?;
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => Ok(fd),
            rustix::fs::FileType::Symlink => Err(refuse("is a symlink")),
            _ => Err(refuse("is not a directory")),
        }
    }

    /// Creates every missing directory of `path` inside the root (mode 0755) and
    /// returns an `O_PATH` descriptor of the last one.
    pub(crate) fn mkdir_all(&self, path: &Path) -> Result<OwnedFd> {
        let mut done = PathBuf::new();
        let mut dir = self
            .open_with(&done, OFlags::DIRECTORY)
            .ctx(|| format!("open rootfs {}", self.host.display()))?;
        for c in relative(path).components() {
            match c {
                Component::Normal(name) => {
                    let next = done.join(name);
                    dir = match self.open_with(&next, OFlags::DIRECTORY) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                                Ok(()) | Err(Errno::EXIST) => {}
                                Err(e) => return Err(self.err("mkdir", &next, e.into())),
                            }
                            // A dangling symlink stays ENOENT here: refuse it rather
                            // than guess where it was meant to lead.
                            self.open_with(&next, OFlags::DIRECTORY)
                                .map_err(|e| self.err("open directory", &next, e))?
                        }
                        Err(e) => return Err(self.err("open directory", &next, e)),
                    };
                    done = next;
                }
                Component::ParentDir => done.push(".."),
                _ => {}
            }
        }
        Ok(dir)
    }

    /// Returns an `O_PATH` descriptor of `path`, creating it (and its parents) as
    /// `kind` when missing. An existing entry of another kind is kept: the mount
    /// that follows reports the mismatch.
    pub(crate) fn ensure(&self, path: &Path, kind: Kind) -> Result<OwnedFd> {
        let (parent, name) = split(path);
        let name = match (kind, name) {
            (Kind::File, Some(name)) => name,
            _ => return self.mkdir_all(path),
        };
        match self.open_path(path) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.err("open", path, e)),
        }
        let dir = self.mkdir_all(parent)?;
        create_file(&dir, name).map_err(|e| self.err("create file", path, e))?;
        self.open_path(path).map_err(|e| self.err("open", path, e))
    }

    /// An [`Error::Sys`] naming the path inside the container and on the host.
    pub(crate) fn err(&self, what: &str, path: &Path, e: io::Error) -> Error {
        Error::sys(
            format!("{what} {} in rootfs {}", path.display(), self.host.display()),
            e,
        )
    }
}

/// Creates an empty file `name` in `dir` without following a symlink there; an
/// existing entry is fine.
pub(crate) fn create_file(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let flags = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o644)) {
        Ok(_) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `path` without its root and with "." and ".." taken away lexically, as runc
/// cleans a destination before it checks it: "/a/../proc/./sys" -> "proc/sys".
pub(crate) fn clean_relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// `path` without its root: "/a/b" -> "a/b".
pub(crate) fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

/// The parent and the last name of `path`; no name for "/", "." or a path ending in "..".
pub(crate) fn split(path: &Path) -> (&Path, Option<&OsStr>) {
    match path.components().next_back() {
        Some(Component::Normal(name)) => (path.parent().unwrap_or(Path::new("/")), Some(name)),
        _ => (path, None),
    }
}

/// The magic link through which a mount reaches the file behind `fd`.
pub(crate) fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn split_and_relative() {
        assert_eq!(relative(Path::new("/a//b/./c")), PathBuf::from("a/b/c"));
        assert_eq!(
            split(Path::new("/dev/null")),
            (Path::new("/dev"), Some(OsStr::new("null")))
        );
        assert_eq!(split(Path::new("/")).1, None);
        assert_eq!(split(Path::new("/a/..")).1, None);
    }

    #[test]
    fn mkdir_all_stays_inside_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
        symlink("/", rootfs.join("etc/evil")).expect("symlink");
        symlink("../../../../..", rootfs.join("etc/up")).expect("symlink");
        let unique = format!("vessel-rootfs-test-{}", std::process::id());
        let root = Root::open(&rootfs).expect("open root");

        root.mkdir_all(&Path::new("/etc/evil/tmp").join(&unique).join("x"))
            .expect("mkdir through symlink");
        assert!(rootfs.join("tmp").join(&unique).join("x").is_dir());
        assert!(!Path::new("/tmp").join(&unique).exists(), "escaped to the host's /tmp");

        root.ensure(&Path::new("/../../etc/up/tmp").join(&unique).join("f"), Kind::File)
            .expect("create file");
        assert!(rootfs.join("tmp").join(&unique).join("f").is_file());
        assert!(!Path::new("/tmp").join(&unique).exists(), "escaped to the host's /tmp");

        // A dangling symlink is refused, not followed out of the root.
        symlink(format!("/tmp/{unique}-dangling"), rootfs.join("etc/dangling")).expect("symlink");
        assert!(root.mkdir_all(Path::new("/etc/dangling/x")).is_err());
        assert!(!Path::new(&format!("/tmp/{unique}-dangling")).exists());
    }
}
