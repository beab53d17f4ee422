//! Directory trees in a tar stream, every attribute kept: ownership, modes, mtimes
//! (seconds), extended attributes (`SCHILY.xattr.*` PAX records, `trusted.overlay.*`
//! included), overlay whiteouts (char 0:0 devices), device nodes, fifos, symlinks,
//! hardlinks (by inode) and sparse files (PAX `VESSEL.sparse`: the real size and the data
//! segments; the member's data is the segments back to back).
//!
//! Each member gets a digest: sha256 of a canonical line of its attributes followed by its
//! data ([`meta_line`]), so a changed mode, owner, xattr or byte is caught on restore. The
//! reader ([`Extractor`]) recomputes it from what it reads and writes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// One member of an archive as its manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The member's name in the tar (escaped with [`escape`] when not UTF-8).
    pub path: String,
    /// Bytes of data the member carries in the tar.
    pub size: u64,
    /// `sha256:<hex>` of [`meta_line`] followed by the data.
    pub sha256: String,
}

/// The PAX key of a sparse file's map: `REALSIZE;OFF:LEN,OFF:LEN...`.
const SPARSE_KEY: &str = "VESSEL.sparse";
/// The PAX key prefix of extended attributes (GNU tar's and star's).
const XATTR_PREFIX: &str = "SCHILY.xattr.";
/// The PAX key prefix of extended attributes whose value holds a newline (overlayfs's
/// binary `origin` and `uuid`), which PAX readers split records at: the value in hex.
const XATTR_HEX_PREFIX: &str = "VESSEL.xattr.hex.";

/// A name's bytes as a manifest string: UTF-8 as is, other bytes and `%` as `%XX`.
pub fn escape(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.contains('%') => s.to_string(),
        _ => {
            let mut out = String::new();
            for chunk in name.utf8_chunks() {
                for c in chunk.valid().chars() {
                    if c == '%' {
                        out.push_str("%25");
                    } else {
                        out.push(c);
                    }
                }
                for b in chunk.invalid() {
                    let _ = write!(out, "%{b:02X}");
                }
            }
            out
        }
    }
}

/// The attributes of a member that its digest covers.
#[derive(Debug, Default, Clone)]
pub struct Meta {
    /// The tar entry type byte (`0` file, `5` dir, `2` symlink, `1` hardlink, `3` char, `4` block, `6` fifo).
    pub kind: u8,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: u64,
    pub rdev: (u32, u32),
    /// Symlink or hardlink target.
    pub link: Vec<u8>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// A sparse file's map: real size and data segments (offset, length).
    pub sparse: Option<(u64, Vec<(u64, u64)>)>,
}

/// The canonical line a member's digest starts with.
pub fn meta_line(name: &[u8], m: &Meta) -> Vec<u8> {
    let mut s = Vec::with_capacity(128);
    s.extend_from_slice(name);
    let _ = write!(
        s,
        "\0{}\0{:o}\0{}\0{}\0{}\0{}:{}\0",
        m.kind as char, m.mode, m.uid, m.gid, m.mtime, m.rdev.0, m.rdev.1
    );
    s.extend_from_slice(&m.link);
    for (k, v) in &m.xattrs {
        s.push(0);
        s.extend_from_slice(k.as_bytes());
        s.push(b'=');
        for b in v {
            let _ = write!(s, "{b:02x}");
        }
    }
    if let Some((size, segs)) = &m.sparse {
        let _ = write!(s, "\0{}", sparse_value(*size, segs));
    }
    s.push(b'\n');
    s
}

fn sparse_value(size: u64, segs: &[(u64, u64)]) -> String {
    let mut v = format!("{size};");
    for (i, (o, l)) in segs.iter().enumerate() {
        if i > 0 {
            v.push(',');
        }
        let _ = write!(v, "{o}:{l}");
    }
    v
}

fn parse_sparse(v: &[u8]) -> Option<(u64, Vec<(u64, u64)>)> {
    let v = std::str::from_utf8(v).ok()?;
    let (size, rest) = v.split_once(';')?;
    let mut segs = Vec::new();
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        let (o, l) = part.split_once(':')?;
        segs.push((o.parse().ok()?, l.parse().ok()?));
    }
    Some((size.parse().ok()?, segs))
}

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

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
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

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}

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
