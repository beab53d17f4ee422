//! `vessel cp` with `-`: a tar stream out of the container (`cp NAME:SRC -`, the entry under
//! its own name, as docker writes it) and a tar stream into a directory of the container
//! (`cp - NAME:DIR`). Entries are read and made with the same descriptor-relative,
//! `O_NOFOLLOW` steps as the file copies: a name with `..` or a path through a symlink is
//! refused, and nothing is written outside the directory.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;

use super::{dir_names, lstat_at, make_dir, open_dir, open_in_root, remove_non_dir, split, st_time};
use crate::containers::Engine;
use crate::db::Record;
use crate::error::{Error, IoContext, Result};

impl Engine {
    /// `vessel cp NAME:SRC -`: writes a tar of `src` (named by its last component; `SRC/.`:
    /// its content) to `out`, owners and modes as they are in the container (for a
    /// container in its own user namespace: its ids, not the host's; 65534 for host ids
    /// outside its range).
    ///
    /// # Errors
    /// [`Error::BadInput`] when `src` does not exist; [`Error::Io`] for reads and writes.
    pub fn copy_out_tar(&self, r: &Record, src: &str, out: &mut dyn Write) -> Result<()> {
        let view = self.root_view(r)?;
        let sp = split(src);
        let missing = || Error::BadInput(format!("could not find the file {src} in container {}", r.name));
        let dir = match open_in_root(&view.fd, &sp.dir, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Err(missing()),
            Err(e) => return Err(Error::io("open", src, e.into())),
        };
        let name = sp.name.clone().unwrap_or_else(|| OsString::from("."));
        if let Err(Errno::NOENT) = lstat_at(&dir, &name) {
            return Err(missing());
        }
        let ids = r.options.id_mappings.as_ref();
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        if sp.contents || sp.name.is_none() {
            let d = open_dir(&dir, &name, Path::new(src))?;
            for n in dir_names(&d, Path::new(src))? {
                entry_to_tar(&mut tar, ids, &d, &n, Path::new(&n), Path::new(src))?;
            }
        } else {
            entry_to_tar(&mut tar, ids, &dir, &name, Path::new(&name), Path::new(src))?;
        }
        tar.finish().at("write tar of", src)
    }

    /// `vessel cp - NAME:DIR`: unpacks the tar on `input` into the directory `dest` of the
    /// container (which must exist). Owners become root unless `archive` (then the tar's).
    /// Regular files, directories, symlinks and hardlinks within the stream are made; other
    /// entry types are refused.
    ///
    /// # Errors
    /// [`Error::BadInput`] for a missing `dest`, an entry name with `..` or through a
    /// symlink, a device entry; [`Error::Io`] for reads and writes.
    pub fn copy_in_tar(&self, r: &Record, input: &mut dyn Read, dest: &str, archive: bool) -> Result<()> {
        let view = self.root_view(r)?;
        let dir = match open_in_root(&view.fd, Path::new(dest), OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(_) => {
                return Err(Error::BadInput(format!(
                    "destination directory {dest} must exist in container {} for a tar stream",
                    r.name
                )))
            }
        };
        let mut a = tar::Archive::new(input);
        for entry in a.entries().at("read tar from", "stdin")? {
            let mut e = entry.at("read tar from", "stdin")?;
            let raw = e.path_bytes().into_owned();
            let rel = clean(&raw).ok_or_else(|| {
                Error::BadInput(format!(
                    "tar entry {:?} leads out of the destination: refused",
                    String::from_utf8_lossy(&raw)
                ))
            })?;
            let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
                continue;
            };
            let shown = Path::new(dest).join(&rel);
            let parent = walk(&dir, rel.parent().unwrap_or(Path::new("")), &shown)?;
            let h = e.header();
            let mode = Mode::from_raw_mode(h.mode().at("read tar header of", &shown)? & 0o7777);
            let (uid, gid) = if archive {
                (
                    h.uid().at("read tar header of", &shown)? as u32,
                    h.gid().at("read tar header of", &shown)? as u32,
                )
            } else {
                (0, 0)
            };
            let (uid, gid) = super::to_host(r.options.id_mappings.as_ref(), (uid, gid));
            let mtime = h.mtime().unwrap_or(0) as i64;
            let owner = (
                Some(rustix::fs::Uid::from_raw(uid)),
                Some(rustix::fs::Gid::from_raw(gid)),
            );
            match h.entry_type() {
                tar::EntryType::Directory => {
                    let d = make_dir(&parent, &name, &shown)?;
                    rustix::fs::fchown(&d, owner.0, owner.1).at("chown", &shown)?;
                    rustix::fs::fchmod(&d, mode).at("chmod", &shown)?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    remove_if_symlink(&parent, &name, &shown)?;
                    let fd = rustix::fs::openat(&parent, &name, flags, Mode::from_raw_mode(0o600)).at("create", &shown)?;
                    let mut f = std::fs::File::from(fd);
                    io::copy(&mut e, &mut f).at("write", &shown)?;
                    rustix::fs::fchown(f.as_fd(), owner.0, owner.1).at("chown", &shown)?;
                    rustix::fs::fchmod(f.as_fd(), mode).at("chmod", &shown)?;
                    let t = st_time(mtime, 0);
                    let times = Timestamps {
                        last_access: t,
                        last_modification: st_time(mtime, 0),
                    };
                    rustix::fs::futimens(f.as_fd(), &times).at("set times of", &shown)?;
                }
                tar::EntryType::Symlink => {
                    let target = e
                        .link_name_bytes()
                        .ok_or_else(|| Error::BadInput(format!("tar symlink {} has no target", shown.display())))?
                        .into_owned();
                    remove_non_dir(&parent, &name, &shown)?;
                    rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, &name).at("create", &shown)?;
                    rustix::fs::chownat(&parent, &name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW)
                        .at("chown", &shown)?;
                }
                tar::EntryType::Link => {
                    let target = e
                        .link_name_bytes()
                        .and_then(|t| clean(&t))
                        .ok_or_else(|| Error::BadInput(format!("tar hardlink {} leads out: refused", shown.display())))?;
                    let Some(tname) = target.file_name() else {
                        return Err(Error::BadInput(format!("tar hardlink {} has no target", shown.display())));
                    };
                    let tparent = walk(&dir, target.parent().unwrap_or(Path::new("")), &shown)?;
                    remove_non_dir(&parent, &name, &shown)?;
                    rustix::fs::linkat(&tparent, tname, &parent, &name, AtFlags::empty()).at("link", &shown)?;
                }
                _ => {
                    return Err(Error::BadInput(format!(
                        "tar entry {} is a device, fifo or other special file: vessel cp makes files, directories and links",
                        shown.display()
                    )))
                }
            }
        }
        Ok(())
    }
}

/// A tar entry name as a relative path without `.`, or None when it has `..` (a leading `/`
/// is dropped, as tar does).
fn clean(raw: &[u8]) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Opens (making them when missing) the directories of `rel` under `dir`, never through a
/// symlink.
fn walk(dir: &OwnedFd, rel: &Path, shown: &Path) -> Result<OwnedFd> {
    let mut cur = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .at("open", shown)?;
    let mut so_far = PathBuf::new();
    for c in rel.components() {
        let n = c.as_os_str();
        so_far.push(n);
        cur = match make_dir(&cur, n, shown) {
            Err(Error::BadInput(_)) => {
                return Err(Error::BadInput(format!(
                    "tar entry {} passes through {}, which is a symlink or a file in the container: refused",
                    shown.display(),
                    so_far.display()
                )))
            }
            other => other?,
        };
    }
    Ok(cur)
}

/// Removes entry `name` of `dir` when it is a symlink (a file is then made in its place).
fn remove_if_symlink(dir: &OwnedFd, name: &OsStr, shown: &Path) -> Result<()> {
    match lstat_at(dir, name) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => remove_non_dir(dir, name, shown),
        _ => Ok(()),
    }
}

/// Appends entry `name` of container dir `dir` (and what is below it) to `tar` as `path`,
/// its owners as the container with maps `ids` sees them.
fn entry_to_tar<W: Write>(
    tar: &mut tar::Builder<W>,
    ids: Option<&crate::options::IdMappings>,
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    shown: &Path,
) -> Result<()> {
    let st = lstat_at(dir, name).at("stat", shown)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    let (uid, gid) = super::to_container(ids, (st.st_uid, st.st_gid));
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            // Directory names end in `/`, as tar(1) and docker write them.
            let mut dname = path.as_os_str().to_os_string();
            dname.push("/");
            tar.append_data(&mut h, Path::new(&dname), io::empty())
                .at("write tar of", shown)?;
            let d = open_dir(dir, name, shown)?;
            for n in dir_names(&d, shown)? {
                entry_to_tar(tar, ids, &d, &n, &path.join(&n), &shown.join(&n))?;
            }
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(dir, name, Vec::new()).at("read link", shown)?;
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, path, OsStr::from_bytes(target.as_bytes()))
                .at("write tar of", shown)?;
        }
        FileType::RegularFile => {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .at("open", shown)?;
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(st.st_size as u64);
            // Exactly the size in the header, whatever happens to the file meanwhile.
            let f = std::fs::File::from(fd).take(st.st_size as u64);
            let padded = f.chain(io::repeat(0)).take(st.st_size as u64);
            tar.append_data(&mut h, path, padded).at("write tar of", shown)?;
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

#[cfg(test)]
mod tests {
    use super::clean;
    use std::path::Path;

    #[test]
    fn tar_names() {
        assert_eq!(clean(b"./a/b").as_deref(), Some(Path::new("a/b")));
        assert_eq!(clean(b"/etc/x").as_deref(), Some(Path::new("etc/x")));
        assert_eq!(clean(b"a/../../x"), None);
    }
}
