//! Copies of a container's writable layer (an overlay upper dir) for snapshots: every
//! entry kept as overlayfs needs it (owner, mode, times, xattrs including `trusted.overlay.*`,
//! whiteouts as 0:0 character devices, hardlinks, symlinks, fifos, sparse files).
//!
//! Regular files are cloned with the FICLONE ioctl where the file system shares extents
//! (xfs with reflink, btrfs): copy-on-write, no data copied. Elsewhere (ext4, tmpfs) the data
//! is copied in the kernel with copy_file_range(2), segment by segment for sparse files
//! (lseek(2) SEEK_DATA/SEEK_HOLE), so holes stay holes.
//!
//! Symlinks are never followed: entries are examined with lstat, regular files are opened
//! with O_NOFOLLOW, and attributes are set through the `l*`/AT_SYMLINK_NOFOLLOW calls.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, SeekFrom, Timespec, Timestamps, CWD};

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Bytes of regular files (each hardlinked inode once) and symlink targets.
    pub bytes: u64,
    /// Entries made (directories, files, links, devices).
    pub entries: u64,
    /// Regular files cloned with FICLONE (copy-on-write) rather than copied.
    pub cloned: u64,
}

/// A failed copy: the operation, the path it concerned, and the kernel's error.
#[derive(Debug)]
pub struct CopyError {
    /// What was being done (`copy data of`, `create`, ...).
    pub op: &'static str,
    /// The path (source or destination) it concerned.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

impl CopyError {
    /// Whether the file system ran out of space (ENOSPC) or quota (EDQUOT).
    pub fn is_no_space(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }
}

type Result<T> = std::result::Result<T, CopyError>;

fn at<T, E: Into<io::Error>>(r: std::result::Result<T, E>, op: &'static str, path: &Path) -> Result<T> {
    r.map_err(|e| CopyError {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// Copies the tree `src` (a directory) to `dst`, which must not exist; its parent must.
/// `dst` gets `src`'s own owner, mode, xattrs and times too.
///
/// # Errors
/// [`CopyError`] with the first failing operation; what was made so far stays for the
/// caller to remove (callers copy into a temporary directory).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<Copied> {
    let mut c = Copier {
        links: HashMap::new(),
        out: Copied::default(),
        clone_works: true,
    };
    let meta = at(fs::symlink_metadata(src), "stat", src)?;
    if !meta.is_dir() {
        return Err(CopyError {
            op: "copy",
            path: src.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    c.dir(src, dst, &meta)?;
    Ok(c.out)
}

struct Copier {
    /// Destination path of each source inode with several links (dev, ino) seen so far.
    links: HashMap<(u64, u64), PathBuf>,
    out: Copied,
    /// False once FICLONE was refused (no use asking again for every file).
    clone_works: bool,
}

impl Copier {
    fn dir(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        at(fs::create_dir(dst), "create", dst)?;
        self.out.entries += 1;
        // Entries sorted: a stable order keeps hardlink choice and errors reproducible.
        let mut names: Vec<_> = at(fs::read_dir(src), "list", src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(|e| CopyError {
                op: "list",
                path: src.to_path_buf(),
                source: e,
            })?;
        names.sort();
        for name in names {
            self.entry(&src.join(&name), &dst.join(&name))?;
        }
        // Owner before mode (chown clears set-id bits); times last (children changed them).
        attrs(src, dst, meta)
    }

    fn entry(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let meta = at(fs::symlink_metadata(src), "stat", src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            return self.dir(src, dst, &meta);
        }
        if meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                at(fs::hard_link(first, dst), "hardlink", dst)?;
                self.out.entries += 1;
                return Ok(());
            }
            self.links.insert((meta.dev(), meta.ino()), dst.to_path_buf());
        }
        if ft.is_file() {
            self.file(src, dst, &meta)?;
        } else if ft.is_symlink() {
            let target = at(fs::read_link(src), "read link", src)?;
            at(std::os::unix::fs::symlink(&target, dst), "create symlink", dst)?;
            self.out.bytes += target.as_os_str().len() as u64;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            // Whiteouts (char 0:0), device nodes, fifos; a socket becomes a dead node, as cp -a.
            let kind = rustix::fs::FileType::from_raw_mode(meta.mode());
            at(
                rustix::fs::mknodat(CWD, dst, kind, Mode::from_raw_mode(meta.mode() & 0o7777), meta.rdev()),
                "create node",
                dst,
            )?;
        }
        self.out.entries += 1;
        attrs(src, dst, &meta)
    }

    fn file(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
        let from = at(
            rustix::fs::open(src, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()),
            "open",
            src,
        )?;
        let to = at(
            rustix::fs::open(
                dst,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ),
            "create",
            dst,
        )?;
        self.out.bytes += meta.len();
        if meta.len() == 0 {
            return Ok(());
        }
        if self.clone_works {
            match rustix::fs::ioctl_ficlone(&to, &from) {
                Ok(()) => {
                    self.out.cloned += 1;
                    return Ok(());
                }
                // Another file system (EXDEV) is per file; the rest say this one cannot clone.
                Err(rustix::io::Errno::XDEV) => {}
                Err(_) => self.clone_works = false,
            }
        }
        // Fewer blocks than the length: holes to keep.
        let sparse = meta.blocks().saturating_mul(512) < meta.len();
        if sparse {
            copy_sparse(&from, &to, meta.len(), src)?;
        } else {
            copy_range(&from, &to, 0, meta.len(), src)?;
        }
        Ok(())
    }
}

/// Copies bytes `[start, end)` of `from` to the same offsets of `to` in the kernel.
fn copy_range(from: &impl AsFd, to: &impl AsFd, start: u64, end: u64, path: &Path) -> Result<()> {
    let (mut off_in, mut off_out) = (start, start);
    while off_in < end {
        let want = usize::try_from(end - off_in).unwrap_or(usize::MAX).min(1 << 30);
        let n = match rustix::fs::copy_file_range(from, Some(&mut off_in), to, Some(&mut off_out), want) {
            Ok(n) => n,
            // Kernels or file systems without it between these two files: plain reads and writes.
            Err(rustix::io::Errno::XDEV) | Err(rustix::io::Errno::NOSYS) | Err(rustix::io::Errno::OPNOTSUPP) => {
                return copy_plain(from, to, off_in, end, path)
            }
            Err(e) => return at(Err(e), "copy data of", path),
        };
        if n == 0 {
            // The file shrank while we copied: what is there is copied.
            break;
        }
    }
    Ok(())
}

fn copy_plain(from: &impl AsFd, to: &impl AsFd, mut off: u64, end: u64, path: &Path) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    while off < end {
        let want = usize::try_from(end - off).unwrap_or(usize::MAX).min(buf.len());
        let n = at(rustix::io::pread(from, &mut buf[..want], off), "read", path)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += at(
                rustix::io::pwrite(to, &buf[done..n], off + done as u64),
                "write copy of",
                path,
            )?;
        }
        off += n as u64;
    }
    Ok(())
}

/// Copies the data segments of a sparse file and sets its length: holes stay holes.
fn copy_sparse(from: &impl AsFd, to: &impl AsFd, len: u64, path: &Path) -> Result<()> {
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(from, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // No data after pos: the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return at(Err(e), "seek data in", path),
        };
        let hole = at(rustix::fs::seek(from, SeekFrom::Hole(data)), "seek hole in", path)?;
        copy_range(from, to, data, hole.min(len), path)?;
        pos = hole;
    }
    at(rustix::fs::ftruncate(to, len), "set length of", path)
}

/// Gives `dst` the owner, mode (not for symlinks), xattrs and times of `src`.
fn attrs(src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<()> {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    at(
        rustix::fs::chownat(
            CWD,
            dst,
            Some(rustix::fs::Uid::from_raw(meta.uid())),
            Some(rustix::fs::Gid::from_raw(meta.gid())),
            nofollow,
        ),
        "chown",
        dst,
    )?;
    if !meta.file_type().is_symlink() {
        at(
            rustix::fs::chmodat(CWD, dst, Mode::from_raw_mode(meta.mode() & 0o7777), AtFlags::empty()),
            "chmod",
            dst,
        )?;
    }
    xattrs(src, dst)?;
    let ts = |s: i64, ns: i64| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    let times = Timestamps {
        last_access: ts(meta.atime(), meta.atime_nsec()),
        last_modification: ts(meta.mtime(), meta.mtime_nsec()),
    };
    at(rustix::fs::utimensat(CWD, dst, &times, nofollow), "set times of", dst)
}

/// Copies every extended attribute of `src` to `dst` (neither followed if a symlink):
/// `trusted.overlay.*` (opaque dirs, redirects), `security.capability`, ACLs, `user.*`.
fn xattrs(src: &Path, dst: &Path) -> Result<()> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(src, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            // A file system without xattrs has none to copy.
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return at(Err(e), "list xattrs of", src),
        }
    };
    let mut value = vec![0u8; 256];
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = OsStr::from_bytes(name);
        let len = loop {
            match rustix::fs::lgetxattr(src, name, &mut value[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return at(Err(e), "read xattr of", src),
            }
        };
        at(
            rustix::fs::lsetxattr(dst, name, &value[..len], rustix::fs::XattrFlags::empty()),
            "set xattr on",
            dst,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_links_sparse_files_and_attributes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d/e")).unwrap();
        fs::write(src.join("d/f"), b"hello").unwrap();
        fs::hard_link(src.join("d/f"), src.join("g")).unwrap();
        std::os::unix::fs::symlink("/nowhere", src.join("l")).unwrap();
        let f = fs::File::create(src.join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        rustix::io::pwrite(&f, b"x", 32 << 20).unwrap();
        drop(f);
        rustix::fs::mknodat(
            CWD,
            src.join("wh"),
            rustix::fs::FileType::CharacterDevice,
            Mode::empty(),
            0,
        )
        .unwrap();
        fs::set_permissions(src.join("d"), std::os::unix::fs::PermissionsExt::from_mode(0o1750)).unwrap();
        let dst = t.path().join("dst");
        let c = copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("g")).unwrap(), b"hello");
        let (a, b) = (
            fs::metadata(dst.join("g")).unwrap(),
            fs::metadata(dst.join("d/f")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "hardlink kept");
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("/nowhere"));
        let s = fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(s.len(), 64 << 20);
        assert!(s.blocks() * 512 < 1 << 20, "holes kept: {} blocks", s.blocks());
        let wh = fs::symlink_metadata(dst.join("wh")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!(fs::metadata(dst.join("d")).unwrap().mode() & 0o7777, 0o1750);
        assert_eq!(c.bytes, 5 + (64 << 20) + "/nowhere".len() as u64);
    }
}
