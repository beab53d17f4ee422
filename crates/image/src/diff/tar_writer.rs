//! The tar stream of a layer: entries in byte order of names, numeric owners, PAX headers
//! for long names, link targets and xattrs, hardlinks to the first name, OCI whiteouts.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::{kind, sorted_names, Kind};
use crate::error::{IoContext, Result};

/// Writes what it is given to the inner writer and hashes it.
pub(super) struct Hashing<W: Write> {
    pub(super) inner: W,
    pub(super) hasher: Sha256,
    pub(super) count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tar stream being written, and the first name of each multiply-linked file.
pub(super) struct TarWriter<'s, W: Write> {
    pub(super) out: Hashing<W>,
    pub(super) links: HashMap<(u64, u64), String>,
    pub(super) skip: &'s HashSet<PathBuf>,
    /// Host ids of the upper dir to the container's ids (a container in its own user
    /// namespace); None: written as they are.
    pub(super) owners: Option<&'s super::OwnerMap>,
}

/// One PAX record: `LEN key=value\n`, LEN counting the whole record in decimal.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// The user xattrs of `path` (`trusted.overlay.*`, overlayfs's own, left out).
fn xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            let need = rustix::fs::llistxattr(path, &mut [0u8; 0][..]).ctx("list xattrs of", path)?;
            names = vec![0u8; need];
            rustix::fs::llistxattr(path, &mut names[..]).ctx("list xattrs of", path)?
        }
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("list xattrs of", path),
    };
    let mut out = Vec::new();
    for raw in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(raw) else { continue };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let len = rustix::fs::lgetxattr(path, name, &mut [0u8; 0][..]).ctx("read xattr of", path)?;
        let mut v = vec![0u8; len];
        let got = rustix::fs::lgetxattr(path, name, &mut v[..]).ctx("read xattr of", path)?;
        v.truncate(got);
        out.push((name.to_string(), v));
    }
    out.sort();
    Ok(out)
}

/// What one tar entry is made of.
struct Entry<'a> {
    name: String,
    kind: tar::EntryType,
    meta: Option<&'a fs::Metadata>,
    link: Option<Vec<u8>>,
    xattrs: Vec<(String, Vec<u8>)>,
    size: u64,
}

impl<W: Write> TarWriter<'_, W> {
    pub(super) fn dir(&mut self, upper: &Path, rel: &Path) -> Result<()> {
        let dir = upper.join(rel);
        for name in sorted_names(&dir)? {
            let r = rel.join(&name);
            if self.skip.contains(&r) {
                continue;
            }
            let p = upper.join(&r);
            let meta = fs::symlink_metadata(&p).ctx("stat", &p)?;
            let tar_name = String::from_utf8_lossy(r.as_os_str().as_bytes()).into_owned();
            match kind(&meta, &p) {
                Kind::Whiteout => {
                    let wh = match r.parent().filter(|p| !p.as_os_str().is_empty()) {
                        Some(parent) => format!("{}/.wh.{}", parent.display(), name.to_string_lossy()),
                        None => format!(".wh.{}", name.to_string_lossy()),
                    };
                    self.marker(wh, &meta, &p)?;
                }
                Kind::Dir { opaque } => {
                    self.entry(
                        Entry {
                            name: format!("{tar_name}/"),
                            kind: tar::EntryType::Directory,
                            meta: Some(&meta),
                            link: None,
                            xattrs: xattrs(&p)?,
                            size: 0,
                        },
                        &p,
                        None,
                    )?;
                    if opaque {
                        self.marker(format!("{tar_name}/.wh..wh..opq"), &meta, &p)?;
                    }
                    self.dir(upper, &r)?;
                }
                Kind::Other => self.other(tar_name, &meta, &p)?,
            }
        }
        Ok(())
    }

    /// An empty regular file marking a whiteout, with the time of what it stands for.
    fn marker(&mut self, name: String, meta: &fs::Metadata, p: &Path) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h.set_mtime(meta.mtime().max(0) as u64);
        self.write_header(h, &name, None, &[], p)
    }

    fn other(&mut self, name: String, meta: &fs::Metadata, p: &Path) -> Result<()> {
        let ft = meta.file_type();
        let xattrs = xattrs(p)?;
        if ft.is_file() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                return self.entry(
                    Entry {
                        name,
                        kind: tar::EntryType::Link,
                        meta: Some(meta),
                        link: Some(first.into_bytes()),
                        xattrs: Vec::new(),
                        size: 0,
                    },
                    p,
                    None,
                );
            }
            self.links.insert(key, name.clone());
        }
        let (kind, link, size) = if ft.is_file() {
            (tar::EntryType::Regular, None, meta.len())
        } else if ft.is_symlink() {
            let target = fs::read_link(p).ctx("read link", p)?;
            (tar::EntryType::Symlink, Some(target.as_os_str().as_bytes().to_vec()), 0)
        } else if ft.is_char_device() {
            (tar::EntryType::Char, None, 0)
        } else if ft.is_block_device() {
            (tar::EntryType::Block, None, 0)
        } else if ft.is_fifo() {
            (tar::EntryType::Fifo, None, 0)
        } else {
            // Sockets have no tar form; docker leaves them out too.
            return Ok(());
        };
        let file = if ft.is_file() {
            Some(
                fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(p)
                    .ctx("open", p)?,
            )
        } else {
            None
        };
        self.entry(
            Entry {
                name,
                kind,
                meta: Some(meta),
                link,
                xattrs,
                size,
            },
            p,
            file,
        )
    }

    fn entry(&mut self, e: Entry<'_>, p: &Path, file: Option<fs::File>) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(e.kind);
        if let Some(m) = e.meta {
            h.set_mode(m.mode() & 0o7777);
            let (uid, gid) = match self.owners {
                Some(o) => (o.uid_of(m.uid()), o.gid_of(m.gid())),
                None => (m.uid(), m.gid()),
            };
            h.set_uid(u64::from(uid));
            h.set_gid(u64::from(gid));
            h.set_mtime(m.mtime().max(0) as u64);
            if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
                let rdev = m.rdev();
                h.set_device_major(libc::major(rdev)).ctx("tar header of", p)?;
                h.set_device_minor(libc::minor(rdev)).ctx("tar header of", p)?;
            }
        }
        h.set_size(e.size);
        self.write_header(h, &e.name, e.link.as_deref(), &e.xattrs, p)?;
        if let Some(f) = file {
            // Exactly the size in the header: a file that changes under us must not make
            // the archive inconsistent (the container is paused, but be safe).
            let mut r = f.take(e.size);
            let n = io::copy(&mut r, &mut self.out).ctx("read", p)?;
            if n < e.size {
                io::copy(&mut io::repeat(0).take(e.size - n), &mut self.out).ctx("write layer", p)?;
            }
            let pad = (512 - e.size % 512) % 512;
            self.out.write_all(&vec![0u8; pad as usize]).ctx("write layer", p)?;
        }
        Ok(())
    }

    /// Writes the header (preceded by a PAX header when the name or link target is too long
    /// for ustar, or there are xattrs).
    fn write_header(
        &mut self,
        mut h: tar::Header,
        name: &str,
        link: Option<&[u8]>,
        xattrs: &[(String, Vec<u8>)],
        p: &Path,
    ) -> Result<()> {
        let mut pax = Vec::new();
        if h.set_path(name).is_err() {
            pax.extend(pax_record("path", name.as_bytes()));
            set_truncated_name(&mut h, name.as_bytes());
        }
        if let Some(l) = link {
            if l.len() > 100 || h.set_link_name_literal(l).is_err() {
                pax.extend(pax_record("linkpath", l));
                let cut = &l[..l.len().min(100)];
                h.set_link_name_literal(cut).ctx("tar header of", p)?;
            }
        }
        for (k, v) in xattrs {
            pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        if !pax.is_empty() {
            let mut x = tar::Header::new_ustar();
            x.set_entry_type(tar::EntryType::XHeader);
            let short: String = name.chars().filter(|c| *c != '/').take(80).collect();
            set_truncated_name(&mut x, format!("PaxHeaders/{short}").as_bytes());
            x.set_mode(0o644);
            x.set_size(pax.len() as u64);
            x.set_mtime(0);
            x.set_cksum();
            self.out.write_all(x.as_bytes()).ctx("write layer", p)?;
            let pad = (512 - pax.len() % 512) % 512;
            pax.extend(std::iter::repeat_n(0u8, pad));
            self.out.write_all(&pax).ctx("write layer", p)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes()).ctx("write layer", p)
    }
}

/// Puts the first 99 bytes of `name` in the header's name field (the PAX `path` record
/// carries the whole name).
fn set_truncated_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    let n = name.len().min(99);
    field[..n].copy_from_slice(&name[..n]);
}
