//! Extracting members from the archive into a temp dir: names confined to it, every
//! attribute set back, each member's digest computed as the writer did.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::tree::{
    escape, hex, meta_line, parse_sparse, unhex, Hashing, Member, Meta, SPARSE_KEY, XATTR_HEX_PREFIX, XATTR_PREFIX,
};

/// Why a member could not be extracted.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The member's name or link leads out of its tree, repeats a name, or is not a kind
    /// of entry a backup holds.
    #[error("member {name}: {reason}")]
    Bad { name: String, reason: String },
    /// The file system refused.
    #[error("member {name}: {op} {path}: {source}")]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// Extracts members into a directory, refusing names that lead out of it, and computes
/// each member's digest as [`TreeWriter`] did.
pub struct Extractor {
    root: PathBuf,
    /// Directories made from members (relative names): the only parents allowed.
    dirs: HashSet<Vec<u8>>,
    /// Non-directories made from members (possible hardlink targets).
    files: HashSet<Vec<u8>>,
    /// Directories whose mtime is set once everything is in.
    dir_times: Vec<(PathBuf, u64)>,
}

impl Extractor {
    /// An extractor into `root` (an existing empty directory).
    pub fn new(root: &Path) -> Self {
        Extractor {
            root: root.to_path_buf(),
            dirs: HashSet::new(),
            files: HashSet::new(),
            dir_times: Vec::new(),
        }
    }

    /// Extracts `entry` and returns its manifest entry (digest of attributes and data).
    ///
    /// # Errors
    /// [`ExtractError::Bad`] for a name with `..`, `.`, an absolute path or empty parts,
    /// a parent that is not a directory member seen before, a name seen before, a hardlink
    /// to something not extracted before, an unknown entry type; [`ExtractError::Io`]
    /// when the data cannot be read or written.
    pub fn extract<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<Member, ExtractError> {
        let name = entry.path_bytes().into_owned();
        let shown = escape(&name);
        let bad = |reason: &str| ExtractError::Bad {
            name: shown.clone(),
            reason: reason.into(),
        };
        let parts: Vec<&[u8]> = name.split(|b| *b == b'/').collect();
        if name.is_empty() || parts.iter().any(|p| p.is_empty() || *p == b"." || *p == b"..") {
            return Err(bad("not a plain relative name"));
        }
        if parts.len() > 1 {
            let parent = &name[..name.len() - parts[parts.len() - 1].len() - 1];
            if !self.dirs.contains(parent) {
                return Err(bad("its directory is not an earlier member of the archive"));
            }
        }
        if self.dirs.contains(&name) || self.files.contains(&name) {
            return Err(bad("appears twice"));
        }
        let h = entry.header();
        let kind = h.entry_type().as_byte();
        let mut meta = Meta {
            kind: if kind == 0 { b'0' } else { kind },
            mode: h.mode().map_err(|e| bad(&e.to_string()))? & 0o7777,
            uid: h.uid().map_err(|e| bad(&e.to_string()))?,
            gid: h.gid().map_err(|e| bad(&e.to_string()))?,
            mtime: h.mtime().map_err(|e| bad(&e.to_string()))?,
            link: entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default(),
            ..Meta::default()
        };
        if matches!(meta.kind, b'3' | b'4') {
            let h = entry.header();
            meta.rdev = (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            );
        }
        if let Some(exts) = entry.pax_extensions().map_err(|e| bad(&format!("PAX records: {e}")))? {
            for ext in exts {
                let ext = ext.map_err(|e| bad(&format!("PAX records: {e}")))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(x) = key.strip_prefix(XATTR_PREFIX) {
                    meta.xattrs.push((x.to_string(), ext.value_bytes().to_vec()));
                } else if let Some(x) = key.strip_prefix(XATTR_HEX_PREFIX) {
                    let v = unhex(ext.value_bytes()).ok_or_else(|| bad("bad hex xattr value"))?;
                    meta.xattrs.push((x.to_string(), v));
                } else if key == SPARSE_KEY {
                    meta.sparse = Some(parse_sparse(ext.value_bytes()).ok_or_else(|| bad("bad sparse map"))?);
                }
            }
        }
        meta.xattrs.sort();
        let size = entry.size();
        let mut hash = Sha256::new();
        hash.update(meta_line(&name, &meta));
        let path = self.root.join(std::ffi::OsStr::from_bytes(&name));
        let io_err = |op: &'static str, p: &Path, source: io::Error| ExtractError::Io {
            name: shown.clone(),
            op,
            path: p.to_path_buf(),
            source,
        };
        match meta.kind {
            b'5' => {
                fs::create_dir(&path).map_err(|e| io_err("create", &path, e))?;
                self.dirs.insert(name.clone());
                self.dir_times.push((path.clone(), meta.mtime));
            }
            b'0' | b'7' => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|e| io_err("create", &path, e))?;
                let mut r = Hashing {
                    inner: &mut *entry,
                    hash,
                };
                match &meta.sparse {
                    None => {
                        io::copy(&mut r, &mut f).map_err(|e| io_err("write", &path, e))?;
                    }
                    Some((real, segs)) => {
                        for (off, len) in segs {
                            f.seek(SeekFrom::Start(*off)).map_err(|e| io_err("seek", &path, e))?;
                            let n =
                                io::copy(&mut (&mut r).take(*len), &mut f).map_err(|e| io_err("write", &path, e))?;
                            if n != *len {
                                return Err(bad("sparse data shorter than its map"));
                            }
                        }
                        f.set_len(*real).map_err(|e| io_err("truncate", &path, e))?;
                    }
                }
                // Whatever the map said, the member's data must be read to its end.
                io::copy(&mut r, &mut io::sink()).map_err(|e| io_err("read", &path, e))?;
                hash = r.hash;
                self.files.insert(name.clone());
            }
            b'2' => {
                let target = std::ffi::OsStr::from_bytes(&meta.link);
                std::os::unix::fs::symlink(target, &path).map_err(|e| io_err("symlink", &path, e))?;
                self.files.insert(name.clone());
            }
            b'1' => {
                if !self.files.contains(&meta.link) {
                    return Err(bad("hardlink to something not extracted before it"));
                }
                let target = self.root.join(std::ffi::OsStr::from_bytes(&meta.link));
                fs::hard_link(&target, &path).map_err(|e| io_err("link", &path, e))?;
                self.files.insert(name.clone());
                return Ok(Member {
                    path: shown.clone(),
                    size,
                    sha256: format!("sha256:{}", hex(&hash.finalize())),
                });
            }
            b'3' | b'4' | b'6' => {
                let ft = match meta.kind {
                    b'3' => rustix::fs::FileType::CharacterDevice,
                    b'4' => rustix::fs::FileType::BlockDevice,
                    _ => rustix::fs::FileType::Fifo,
                };
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &path,
                    ft,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    rustix::fs::makedev(meta.rdev.0, meta.rdev.1),
                )
                .map_err(|e| io_err("mknod", &path, e.into()))?;
                self.files.insert(name.clone());
            }
            _ => {
                return Err(bad(&format!(
                    "entry type {:?} is not one a backup holds",
                    meta.kind as char
                )))
            }
        }
        self.set_meta(&path, &meta).map_err(|(op, e)| io_err(op, &path, e))?;
        Ok(Member {
            path: shown,
            size,
            sha256: format!("sha256:{}", hex(&hash.finalize())),
        })
    }

    fn set_meta(&self, path: &Path, m: &Meta) -> Result<(), (&'static str, io::Error)> {
        let uid = u32::try_from(m.uid).map_err(|_| ("chown", io::Error::other("uid out of range")))?;
        let gid = u32::try_from(m.gid).map_err(|_| ("chown", io::Error::other("gid out of range")))?;
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| ("chown", e.into()))?;
        for (k, v) in &m.xattrs {
            rustix::fs::lsetxattr(path, k.as_str(), v, rustix::fs::XattrFlags::empty())
                .map_err(|e| ("set xattr on", e.into()))?;
        }
        if m.kind != b'2' {
            // After chown, which clears setuid and setgid.
            rustix::fs::chmod(path, rustix::fs::Mode::from_raw_mode(m.mode)).map_err(|e| ("chmod", e.into()))?;
        }
        if m.kind != b'5' {
            set_mtime(path, m.mtime).map_err(|e| ("set times of", e))?;
        }
        Ok(())
    }

    /// Sets the directories' mtimes (last: their children changed them).
    ///
    /// # Errors
    /// The failing directory's path with the error.
    pub fn finish(self) -> Result<(), (PathBuf, io::Error)> {
        for (p, t) in self.dir_times.iter().rev() {
            set_mtime(p, *t).map_err(|e| (p.clone(), e))?;
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, secs: u64) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: secs as i64,
        tv_nsec: 0,
    };
    let ts = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &ts, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}
