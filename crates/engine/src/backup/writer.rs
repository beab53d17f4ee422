//! Writing trees into the archive: a depth-first walk (names sorted) that keeps every
//! attribute (see [`super::tree`]) and hashes each member as it goes.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::tree::{
    escape, hex, meta_line, sparse_value, Hashing, Member, Meta, SPARSE_KEY, XATTR_HEX_PREFIX, XATTR_PREFIX,
};

/// The extended attributes of `path` (not following a symlink), sorted by name.
fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            // File systems and node types without xattrs.
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else { continue };
        let mut val = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name, &mut val[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => val.resize(val.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break usize::MAX,
                Err(e) => return Err(e.into()),
            }
        };
        if len != usize::MAX {
            val.truncate(len);
            out.push((name.to_string(), val));
        }
    }
    out.sort();
    Ok(out)
}

/// The data segments of `file` (`size` bytes), or None when it has no holes.
fn data_segments(file: &File, size: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let mut segs = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start))?.min(size);
        if end > start {
            segs.push((start, end - start));
        }
        pos = end;
    }
    let data: u64 = segs.iter().map(|s| s.1).sum();
    if data == size {
        return Ok(None);
    }
    Ok(Some(segs))
}

/// Reads the given segments of a file one after the other.
struct Segments<'a> {
    file: &'a File,
    segs: std::vec::IntoIter<(u64, u64)>,
    left: u64,
}

impl Read for Segments<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some((off, len)) = self.segs.next() else {
                return Ok(0);
            };
            let mut f = self.file;
            f.seek(SeekFrom::Start(off))?;
            self.left = len;
        }
        let want = buf.len().min(self.left as usize);
        let mut f = self.file;
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes members into a tar stream and keeps their manifest entries.
pub struct TreeWriter<W: Write> {
    tar: tar::Builder<W>,
    /// The members written so far, in order.
    pub members: Vec<Member>,
    /// Bytes of member data written.
    pub bytes: u64,
    /// Whether to record digests (off for docker's flat export).
    digests: bool,
}

impl<W: Write> TreeWriter<W> {
    /// A writer over `out`; `digests` says whether members are hashed into [`TreeWriter::members`].
    pub fn new(out: W, digests: bool) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Complete);
        TreeWriter {
            tar,
            members: Vec::new(),
            bytes: 0,
            digests,
        }
    }

    /// Adds a regular file member `name` holding `data` (mode 0644, root, mtime 0).
    pub fn add_bytes(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let meta = Meta {
            kind: b'0',
            mode: 0o644,
            ..Meta::default()
        };
        self.append(name.as_bytes(), &meta, data.len() as u64, &mut &data[..])
    }

    /// Adds a directory member `name` (mode 0755, root, mtime 0).
    pub fn add_dir(&mut self, name: &str) -> io::Result<()> {
        let meta = Meta {
            kind: b'5',
            mode: 0o755,
            ..Meta::default()
        };
        self.append(name.as_bytes(), &meta, 0, &mut io::empty())
    }

    /// Adds the regular file `path` as member `name` (mode 0644, root, mtime 0).
    pub fn add_file(&mut self, name: &str, path: &Path) -> io::Result<()> {
        let mut f = File::open(path)?;
        let size = f.metadata()?.len();
        let meta = Meta {
            kind: b'0',
            mode: 0o644,
            ..Meta::default()
        };
        self.append(name.as_bytes(), &meta, size, &mut f)
    }

    /// Adds the tree at `dir` under the member name `prefix` (its root directory is the
    /// member `prefix` itself unless `prefix` is empty), depth first, names sorted.
    pub fn add_tree(&mut self, dir: &Path, prefix: &str) -> io::Result<()> {
        let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        if !prefix.is_empty() {
            self.add_entry(dir, prefix.as_bytes().to_vec(), &mut links)?;
        } else {
            self.add_children(dir, Vec::new(), &mut links)?;
        }
        Ok(())
    }

    fn add_children(&mut self, dir: &Path, name: Vec<u8>, links: &mut HashMap<(u64, u64), Vec<u8>>) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let mut child = name.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(e.file_name().as_bytes());
            self.add_entry(&e.path(), child, links)?;
        }
        Ok(())
    }

    fn add_entry(&mut self, path: &Path, name: Vec<u8>, links: &mut HashMap<(u64, u64), Vec<u8>>) -> io::Result<()> {
        let md = fs::symlink_metadata(path)?;
        let ft = md.file_type();
        let mut meta = Meta {
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime().max(0) as u64,
            xattrs: read_xattrs(path)?,
            ..Meta::default()
        };
        if !ft.is_dir() && md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(target) = links.get(&key) {
                meta.kind = b'1';
                meta.link = target.clone();
                meta.xattrs.clear();
                return self.append(&name, &meta, 0, &mut io::empty());
            }
            links.insert(key, name.clone());
        }
        if ft.is_dir() {
            meta.kind = b'5';
            self.append(&name, &meta, 0, &mut io::empty())?;
            return self.add_children(path, name, links);
        }
        if ft.is_symlink() {
            meta.kind = b'2';
            meta.link = fs::read_link(path)?.as_os_str().as_bytes().to_vec();
            return self.append(&name, &meta, 0, &mut io::empty());
        }
        if ft.is_char_device() || ft.is_block_device() {
            meta.kind = if ft.is_char_device() { b'3' } else { b'4' };
            let rdev = md.rdev();
            meta.rdev = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
            return self.append(&name, &meta, 0, &mut io::empty());
        }
        if ft.is_fifo() {
            meta.kind = b'6';
            return self.append(&name, &meta, 0, &mut io::empty());
        }
        if ft.is_socket() {
            // Sockets are not files one can restore (tar leaves them out too).
            return Ok(());
        }
        meta.kind = b'0';
        let file = File::open(path)?;
        let size = md.len();
        // Fewer blocks than the size needs: look for holes.
        if md.blocks() * 512 < size {
            if let Some(segs) = data_segments(&file, size)? {
                let data: u64 = segs.iter().map(|s| s.1).sum();
                meta.sparse = Some((size, segs.clone()));
                let mut r = Segments {
                    file: &file,
                    segs: segs.into_iter(),
                    left: 0,
                };
                return self.append(&name, &meta, data, &mut r);
            }
        }
        let mut r = &file;
        self.append(&name, &meta, size, &mut r)
    }

    fn append(&mut self, name: &[u8], meta: &Meta, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = meta
            .xattrs
            .iter()
            .map(|(k, v)| {
                if v.contains(&b'\n') {
                    (format!("{XATTR_HEX_PREFIX}{k}"), hex(v).into_bytes())
                } else {
                    (format!("{XATTR_PREFIX}{k}"), v.clone())
                }
            })
            .collect();
        if let Some((real, segs)) = &meta.sparse {
            pax.push((SPARSE_KEY.to_string(), sparse_value(*real, segs).into_bytes()));
        }
        if !pax.is_empty() {
            self.tar
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::new(meta.kind));
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(size);
        if matches!(meta.kind, b'3' | b'4') {
            h.set_device_major(meta.rdev.0)?;
            h.set_device_minor(meta.rdev.1)?;
        }
        let path = Path::new(std::ffi::OsStr::from_bytes(name));
        let mut hashing = Hashing {
            inner: data.take(size),
            hash: Sha256::new(),
        };
        if self.digests {
            hashing.hash.update(meta_line(name, meta));
        }
        match meta.kind {
            b'1' | b'2' => {
                let target = Path::new(std::ffi::OsStr::from_bytes(&meta.link));
                self.tar.append_link(&mut h, path, target)?;
            }
            _ => self.tar.append_data(&mut h, path, &mut hashing)?,
        }
        self.bytes += size;
        if self.digests {
            let hex = hex(&hashing.hash.finalize());
            self.members.push(Member {
                path: escape(name),
                size,
                sha256: format!("sha256:{hex}"),
            });
        }
        Ok(())
    }

    /// Writes the end of the archive and returns the output.
    pub fn finish(self) -> io::Result<W> {
        self.tar.into_inner()
    }
}
