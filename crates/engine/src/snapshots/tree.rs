//! Copies of a container's writable layer (an overlay upper dir) for snapshots: every
//! entry kept as overlayfs needs it (owner, mode, times, xattrs including `trusted.overlay.*`,
//! whiteouts as 0:0 character devices, hardlinks, symlinks, fifos, sparse files).
//!
//! Regular files are cloned with the FICLONE ioctl where the file system shares extents
//! (xfs with reflink, btrfs): copy-on-write, no data copied. Elsewhere (ext4, tmpfs) the data
//! is copied in the kernel with copy_file_range(2), segment by segment for sparse files
//! (lseek(2) SEEK_DATA/SEEK_HOLE), so holes stay holes.
//!
//! Symlinks are never followed: the walk goes through directory file descriptors (openat
//! with O_NOFOLLOW, statat with AT_SYMLINK_NOFOLLOW), and the attributes of entries that
//! cannot be opened are set through the `l*`/AT_SYMLINK_NOFOLLOW calls.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, SeekFrom, Stat, Timespec, Timestamps, Uid, XattrFlags, CWD};

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
/// Works on directory file descriptors (openat, statat, mkdirat...), not paths: no path is
/// walked twice, and no symlink is followed. Sets the process's umask to 0 while it runs
/// (files are created with their final mode).
///
/// # Errors
/// [`CopyError`] with the first failing operation; what was made so far stays for the
/// caller to remove (callers copy into a temporary directory).
pub fn copy_tree(src: &Path, dst: &Path) -> Result<Copied> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sfd = at(rustix::fs::open(src, dir_flags, Mode::empty()), "open", src)?;
    let st = at(rustix::fs::fstat(&sfd), "stat", src)?;
    at(rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)), "create", dst)?;
    let dfd = at(rustix::fs::open(dst, dir_flags, Mode::empty()), "open", dst)?;
    let old_umask = rustix::process::umask(Mode::empty());
    let mut c = Copier {
        links: HashMap::new(),
        out: Copied::default(),
        clone_works: true,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
    };
    let r = c
        .dir(&sfd, &dfd, src, dst)
        .and_then(|()| c.attrs_fd(&sfd, &dfd, &st, true, dst));
    rustix::process::umask(old_umask);
    r.map(|()| {
        c.out.entries += 1;
        c.out
    })
}

fn join(base: &Path, name: &CStr) -> PathBuf {
    base.join(OsStr::from_bytes(name.to_bytes()))
}

struct Copier {
    /// Destination path of each source inode with several links (dev, ino) seen so far.
    links: HashMap<(u64, u64), PathBuf>,
    out: Copied,
    /// False once FICLONE was refused (no use asking again for every file).
    clone_works: bool,
    /// Who we create files as: chown only where the source differs.
    uid: u32,
    gid: u32,
}

impl Copier {
    /// Copies the entries of directory `sfd` into directory `dfd` (`spath`, `dpath`: their
    /// paths, for errors and hardlinks).
    fn dir(&mut self, sfd: &OwnedFd, dfd: &OwnedFd, spath: &Path, dpath: &Path) -> Result<()> {
        let mut names: Vec<CString> = Vec::new();
        for e in at(rustix::fs::Dir::read_from(sfd), "list", spath)? {
            let e = at(e, "list", spath)?;
            let n = e.file_name();
            if n != c"." && n != c".." {
                names.push(n.to_owned());
            }
        }
        // Sorted: a stable order keeps hardlink choice and errors reproducible.
        names.sort();
        for name in &names {
            self.entry(sfd, dfd, name, spath, dpath)?;
        }
        Ok(())
    }

    fn entry(&mut self, sfd: &OwnedFd, dfd: &OwnedFd, name: &CStr, spath: &Path, dpath: &Path) -> Result<()> {
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        let st = at(rustix::fs::statat(sfd, name, nofollow), "stat", &join(spath, name))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        self.out.entries += 1;
        if ft == FileType::Directory {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let (sp, dp) = (join(spath, name), join(dpath, name));
            let sub_s = at(rustix::fs::openat(sfd, name, flags, Mode::empty()), "open", &sp)?;
            at(
                rustix::fs::mkdirat(dfd, name, Mode::from_raw_mode(0o700)),
                "create",
                &dp,
            )?;
            let sub_d = at(rustix::fs::openat(dfd, name, flags, Mode::empty()), "open", &dp)?;
            self.dir(&sub_s, &sub_d, &sp, &dp)?;
            // Owner before mode (chown clears set-id bits); times last (children changed them).
            return self.attrs_fd(&sub_s, &sub_d, &st, true, &dp);
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let dp = join(dpath, name);
                return at(
                    rustix::fs::linkat(CWD, first, dfd, name, AtFlags::empty()),
                    "hardlink",
                    &dp,
                );
            }
            self.links.insert(key, join(dpath, name));
        }
        match ft {
            FileType::RegularFile => self.file(sfd, dfd, name, &st, spath, dpath),
            FileType::Symlink => {
                let target = at(
                    rustix::fs::readlinkat(sfd, name, Vec::new()),
                    "read link",
                    &join(spath, name),
                )?;
                self.out.bytes += target.as_bytes().len() as u64;
                at(
                    rustix::fs::symlinkat(target.as_c_str(), dfd, name),
                    "create symlink",
                    &join(dpath, name),
                )?;
                self.attrs_at(dfd, name, &st, spath, dpath, false)
            }
            _ => {
                // Whiteouts (char 0:0), device nodes, fifos; a socket becomes a dead node, as cp -a.
                at(
                    rustix::fs::mknodat(dfd, name, ft, Mode::from_raw_mode(st.st_mode & 0o777), st.st_rdev),
                    "create node",
                    &join(dpath, name),
                )?;
                self.attrs_at(dfd, name, &st, spath, dpath, true)
            }
        }
    }

    fn file(&mut self, sfd: &OwnedFd, dfd: &OwnedFd, name: &CStr, st: &Stat, spath: &Path, dpath: &Path) -> Result<()> {
        let from = at(
            rustix::fs::openat(
                sfd,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            "open",
            &join(spath, name),
        )?;
        let to = at(
            rustix::fs::openat(
                dfd,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(st.st_mode & 0o777),
            ),
            "create",
            &join(dpath, name),
        )?;
        let len = st.st_size as u64;
        self.out.bytes += len;
        if len > 0 {
            self.data(&from, &to, st, &|| join(spath, name))?;
        }
        self.attrs_fd(&from, &to, st, false, &join(dpath, name))
    }

    /// Copies the data of one regular file: a clone where the file system can, else in the
    /// kernel, keeping holes.
    fn data(&mut self, from: &OwnedFd, to: &OwnedFd, st: &Stat, path: &dyn Fn() -> PathBuf) -> Result<()> {
        if self.clone_works {
            match rustix::fs::ioctl_ficlone(to, from) {
                Ok(()) => {
                    self.out.cloned += 1;
                    return Ok(());
                }
                // Another file system (EXDEV) is per file; the rest say this one cannot clone.
                Err(rustix::io::Errno::XDEV) => {}
                Err(_) => self.clone_works = false,
            }
        }
        let len = st.st_size as u64;
        // Fewer blocks than the length: holes to keep.
        if (st.st_blocks as u64).saturating_mul(512) < len {
            copy_sparse(from, to, len, &path())
        } else {
            copy_range(from, to, 0, len, &path())
        }
    }

    /// Owner, mode, xattrs and times from the open source `sfd` onto the open copy `dfd`.
    /// `mode_unset`: its mode still differs (a directory made 0700); otherwise only set-id
    /// and sticky bits, or a chown, call for a chmod.
    fn attrs_fd(&self, sfd: &OwnedFd, dfd: &OwnedFd, st: &Stat, mode_unset: bool, dpath: &Path) -> Result<()> {
        let chown = st.st_uid != self.uid || st.st_gid != self.gid;
        if chown {
            at(
                rustix::fs::fchown(dfd, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid))),
                "chown",
                dpath,
            )?;
        }
        if mode_unset || chown || st.st_mode & 0o7000 != 0 {
            at(
                rustix::fs::fchmod(dfd, Mode::from_raw_mode(st.st_mode & 0o7777)),
                "chmod",
                dpath,
            )?;
        }
        copy_xattrs(
            |buf| rustix::fs::flistxattr(sfd, buf),
            |n, buf| rustix::fs::fgetxattr(sfd, n, buf),
            |n, v| rustix::fs::fsetxattr(dfd, n, v, XattrFlags::empty()),
            dpath,
        )?;
        at(rustix::fs::futimens(dfd, &times(st)), "set times of", dpath)
    }

    /// [`Self::attrs_fd`] for entries that cannot be opened (symlinks, device nodes):
    /// by name in the directory `dfd`, never following a symlink.
    fn attrs_at(&self, dfd: &OwnedFd, name: &CStr, st: &Stat, spath: &Path, dpath: &Path, chmod: bool) -> Result<()> {
        let nofollow = AtFlags::SYMLINK_NOFOLLOW;
        let dp = join(dpath, name);
        let chown = st.st_uid != self.uid || st.st_gid != self.gid;
        if chown {
            at(
                rustix::fs::chownat(
                    dfd,
                    name,
                    Some(Uid::from_raw(st.st_uid)),
                    Some(Gid::from_raw(st.st_gid)),
                    nofollow,
                ),
                "chown",
                &dp,
            )?;
        }
        if chmod && (chown || st.st_mode & 0o7000 != 0) {
            at(
                rustix::fs::chmodat(dfd, name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty()),
                "chmod",
                &dp,
            )?;
        }
        let sp = join(spath, name);
        copy_xattrs(
            |buf| rustix::fs::llistxattr(&sp, buf),
            |n, buf| rustix::fs::lgetxattr(&sp, n, buf),
            |n, v| rustix::fs::lsetxattr(&dp, n, v, XattrFlags::empty()),
            &dp,
        )?;
        at(
            rustix::fs::utimensat(dfd, name, &times(st), nofollow),
            "set times of",
            &dp,
        )
    }
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
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

/// Copies every extended attribute (`trusted.overlay.*` of opaque dirs and redirects,
/// `security.capability`, ACLs, `user.*`) through the given list, get and set calls.
fn copy_xattrs(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    get: impl Fn(&CStr, &mut [u8]) -> rustix::io::Result<usize>,
    set: impl Fn(&CStr, &[u8]) -> rustix::io::Result<()>,
    dpath: &Path,
) -> Result<()> {
    let mut small = [0u8; 512];
    let mut big = Vec::new();
    let names: &[u8] = match list(&mut small) {
        Ok(0) => return Ok(()),
        Ok(n) => &small[..n],
        Err(rustix::io::Errno::RANGE) => {
            let mut n = 4096;
            loop {
                big.resize(n, 0);
                match list(&mut big) {
                    Ok(len) => break &big[..len],
                    Err(rustix::io::Errno::RANGE) if n < 1 << 20 => n *= 4,
                    Err(e) => return at(Err(e), "list xattrs for", dpath),
                }
            }
        }
        // A file system without xattrs has none to copy.
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return at(Err(e), "list xattrs for", dpath),
    };
    let mut value = vec![0u8; 256];
    for name in names.split_inclusive(|b| *b == 0) {
        let Ok(name) = CStr::from_bytes_with_nul(name) else {
            continue;
        };
        let len = loop {
            match get(name, &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) if value.len() < 1 << 20 => value.resize(value.len() * 4, 0),
                Err(e) => return at(Err(e), "read xattr for", dpath),
            }
        };
        at(set(name, &value[..len]), "set xattr on", dpath)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

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
        rustix::fs::setxattr(src.join("d"), "trusted.overlay.opaque", b"y", XattrFlags::empty()).unwrap();
        std::os::unix::fs::chown(src.join("d/f"), Some(1000), Some(1001)).unwrap();
        fs::set_permissions(src.join("d/f"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
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
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(dst.join("d"), "trusted.overlay.opaque", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"y");
        let f = fs::metadata(dst.join("d/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o4755));
        assert_eq!(c.bytes, 5 + (64 << 20) + "/nowhere".len() as u64);
    }
}
