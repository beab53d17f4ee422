//! The file system a lazy layer is served as (FUSE, read only, through `fuser`): inodes
//! built from the TOC, with tar whiteouts given as overlayfs expects them of a lower
//! (`.wh.NAME` as a 0/0 character device, `.wh..wh..opq` as the directory's
//! `trusted.overlay.opaque` xattr), and file data read chunk by chunk through
//! [`ChunkSource`]: a chunk that fails its check is an EIO, never data.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use super::toc::{chunks_of, member_ends, Chunk, Toc};
use crate::digest::Digest;
use crate::error::Result;

/// A chunk that cannot be served (failed its check, or could not be fetched in time): the
/// reader gets EIO; the source has logged why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Gives a chunk's verified bytes (the server's cache and fetcher).
pub trait ChunkSource: Send + Sync + 'static {
    /// The uncompressed bytes of `chunk` of file `name`, checked against its digest.
    fn chunk(&self, name: &str, chunk: &Chunk) -> std::result::Result<Arc<Vec<u8>>, Refused>;

    /// Whether the blob span of `chunk` is local (no request needed to serve it).
    fn is_local(&self, chunk: &Chunk) -> bool;

    /// Makes the blob span of `chunks` (consecutive chunks of file `name`, adjacent in the
    /// blob) local with as few requests as possible (one when all of it is missing).
    fn load(&self, name: &str, chunks: &[Chunk]) -> std::result::Result<(), Refused>;
}

/// How far a file read sequentially is fetched ahead of the reader, bytes of blob: one
/// request of that size keeps the link busy (at 100 Mbit/s and 40 ms round trip, 8 MiB is
/// about 95% of the link) instead of one round trip per chunk.
pub const READ_AHEAD: u64 = 8 << 20;

struct Node {
    kind: FileType,
    perm: u16,
    size: u64,
    uid: u32,
    gid: u32,
    rdev: u32,
    mtime: SystemTime,
    nlink: u32,
    link: Vec<u8>,
    name: String,
    chunks: Vec<Chunk>,
    children: BTreeMap<OsString, u64>,
    parent: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    fn dir(parent: u64) -> Node {
        Node {
            kind: FileType::Directory,
            perm: 0o755,
            size: 4096,
            uid: 0,
            gid: 0,
            rdev: 0,
            mtime: UNIX_EPOCH,
            nlink: 2,
            link: Vec::new(),
            name: String::new(),
            chunks: Vec::new(),
            children: BTreeMap::new(),
            parent,
            xattrs: BTreeMap::new(),
        }
    }
}

/// A lazy layer's tree, served read only.
pub struct LayerFs<S: ChunkSource> {
    nodes: Vec<Node>,
    source: Arc<S>,
    /// Set while a background read-ahead ([`LayerFs::read_ahead_next`]) runs: at most
    /// one at a time.
    ahead: Arc<AtomicBool>,
}

const TTL: Duration = Duration::from_secs(3600);

fn clean(name: &str) -> String {
    let n = name.trim_start_matches("./").trim_start_matches('/');
    n.trim_end_matches('/').to_string()
}

impl<S: ChunkSource> LayerFs<S> {
    /// The tree of `toc` (whose TOC member starts at `toc_offset`) over `source`.
    ///
    /// # Errors
    /// [`crate::ImageError::Lazy`] for a TOC whose chunks cannot be located.
    pub fn new(layer: &Digest, toc: &Toc, toc_offset: u64, source: S) -> Result<LayerFs<S>> {
        // Inode n is nodes[n - 1]: the root is 1 (FUSE's root inode).
        let mut fs = LayerFs {
            nodes: vec![Node::dir(1)],
            source: Arc::new(source),
            ahead: Arc::new(AtomicBool::new(false)),
        };
        let starts = member_ends(toc, toc_offset);
        for (i, e) in toc.entries.iter().enumerate() {
            if e.kind == "chunk" {
                continue;
            }
            let path = clean(&e.name);
            let mtime = e
                .mod_time
                .as_deref()
                .and_then(crate::records::rfc3339_secs)
                .map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64))
                .unwrap_or(UNIX_EPOCH);
            let xattrs = e
                .xattrs
                .iter()
                .filter_map(|(k, v)| {
                    base64::engine::general_purpose::STANDARD
                        .decode(v)
                        .ok()
                        .map(|v| (k.clone(), v))
                })
                .collect();
            if path.is_empty() {
                let root = &mut fs.nodes[0];
                root.perm = (e.mode & 0o7777) as u16;
                root.uid = e.uid;
                root.gid = e.gid;
                root.mtime = mtime;
                root.xattrs = xattrs;
                continue;
            }
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            let parent = fs.ensure_dir(&dir);
            if base == ".wh..wh..opq" {
                fs.node_mut(parent)
                    .xattrs
                    .insert("trusted.overlay.opaque".into(), b"y".to_vec());
                continue;
            }
            if e.kind == "hardlink" {
                let target = clean(&e.link_name);
                if let Some(ino) = fs.find(&target) {
                    fs.node_mut(ino).nlink += 1;
                    fs.node_mut(parent).children.insert(OsString::from(&base), ino);
                }
                continue;
            }
            let (name, mut node) = if let Some(hidden) = base.strip_prefix(".wh.") {
                let mut n = Node::dir(parent);
                n.kind = FileType::CharDevice;
                n.perm = 0;
                n.size = 0;
                n.nlink = 1;
                (hidden.to_string(), n)
            } else {
                let mut n = Node::dir(parent);
                n.kind = match e.kind.as_str() {
                    "dir" => FileType::Directory,
                    "symlink" => FileType::Symlink,
                    "char" => FileType::CharDevice,
                    "block" => FileType::BlockDevice,
                    "fifo" => FileType::NamedPipe,
                    _ => FileType::RegularFile,
                };
                n.perm = (e.mode & 0o7777) as u16;
                n.uid = e.uid;
                n.gid = e.gid;
                n.mtime = mtime;
                n.xattrs = xattrs;
                n.rdev = libc::makedev(e.dev_major, e.dev_minor) as u32;
                n.nlink = if n.kind == FileType::Directory { 2 } else { 1 };
                n.size = match n.kind {
                    FileType::RegularFile => e.size,
                    FileType::Symlink => e.link_name.len() as u64,
                    FileType::Directory => 4096,
                    _ => 0,
                };
                n.link = e.link_name.as_bytes().to_vec();
                if n.kind == FileType::RegularFile && e.size > 0 {
                    n.chunks = chunks_of(layer, &toc.entries, i, &starts)?;
                }
                (base.clone(), n)
            };
            node.name = path.clone();
            let existing = fs.node(parent).children.get(OsStr::new(&name)).copied();
            match existing {
                // A directory named again (tar lists a dir after its children): new attrs.
                Some(ino) if node.kind == FileType::Directory && fs.node(ino).kind == FileType::Directory => {
                    let old = fs.node_mut(ino);
                    old.perm = node.perm;
                    old.uid = node.uid;
                    old.gid = node.gid;
                    old.mtime = node.mtime;
                    old.xattrs.extend(node.xattrs);
                }
                _ => {
                    node.parent = parent;
                    fs.nodes.push(node);
                    let ino = fs.nodes.len() as u64;
                    fs.node_mut(parent).children.insert(OsString::from(name), ino);
                }
            }
        }
        Ok(fs)
    }

    fn node(&self, ino: u64) -> &Node {
        &self.nodes[(ino - 1) as usize]
    }

    fn node_mut(&mut self, ino: u64) -> &mut Node {
        &mut self.nodes[(ino - 1) as usize]
    }

    fn get(&self, ino: INodeNo) -> Option<&Node> {
        let i = ino.0.checked_sub(1)? as usize;
        self.nodes.get(i)
    }

    fn find(&self, path: &str) -> Option<u64> {
        let mut cur = 1u64;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = *self.node(cur).children.get(OsStr::new(part))?;
        }
        Some(cur)
    }

    fn ensure_dir(&mut self, path: &str) -> u64 {
        let mut cur = 1u64;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = match self.node(cur).children.get(OsStr::new(part)) {
                Some(i) => *i,
                None => {
                    let mut n = Node::dir(cur);
                    n.name = part.to_string();
                    self.nodes.push(n);
                    let ino = self.nodes.len() as u64;
                    self.node_mut(cur).children.insert(OsString::from(part), ino);
                    ino
                }
            };
        }
        cur
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let n = self.node(ino);
        FileAttr {
            ino: INodeNo(ino),
            size: n.size,
            blocks: n.size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: n.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Bytes `[offset, offset + size)` of regular file `ino`.
    fn read_at(&self, ino: u64, offset: u64, size: u64) -> std::result::Result<Vec<u8>, Refused> {
        let n = self.node(ino);
        let end = (offset + size).min(n.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        self.load_ahead(n, offset, end)?;
        for c in &n.chunks {
            let (cs, ce) = (c.file_offset, c.file_offset + c.size);
            if ce <= offset || cs >= end {
                continue;
            }
            let data = self.source.chunk(&n.name, c)?;
            let from = offset.max(cs) - cs;
            let to = end.min(ce) - cs;
            out.extend_from_slice(data.get(from as usize..to as usize).ok_or(Refused)?);
        }
        Ok(out)
    }
}

impl<S: ChunkSource> LayerFs<S> {
    /// Before serving `[offset, end)` of `n`: when a chunk it needs is missing, fetches it
    /// in one request together with the missing chunks after it, as far as
    /// [`READ_AHEAD`] when the file is being read sequentially (the chunk before the
    /// first one needed is local), else only the chunks the read needs.
    fn load_ahead(&self, n: &Node, offset: u64, end: u64) -> std::result::Result<(), Refused> {
        let first = n.chunks.iter().position(|c| c.file_offset + c.size > offset);
        let Some(i) = first else { return Ok(()) };
        let mut j = i;
        while j < n.chunks.len() && n.chunks[j].file_offset < end {
            j += 1;
        }
        let sequential = i > 0 && self.source.is_local(&n.chunks[i - 1]);
        if n.chunks[i..j].iter().all(|c| self.source.is_local(c)) {
            if sequential {
                self.read_ahead_next(n, i, j);
            }
            return Ok(());
        }
        if sequential {
            let from = n.chunks[i].start;
            while j < n.chunks.len() && n.chunks[j].end - from <= READ_AHEAD && !self.source.is_local(&n.chunks[j]) {
                j += 1;
            }
        }
        self.source.load(&n.name, &n.chunks[i..j.max(i + 1)])?;
        if sequential {
            self.read_ahead_next(n, i, j.max(i + 1));
        }
        Ok(())
    }

    /// Starts fetching the next [`READ_AHEAD`] bytes of blob of `n` from the first chunk
    /// from `k` on that is not local, in the background, when that chunk is less than
    /// [`READ_AHEAD`] of blob past chunk `at` (where the reader is) and no other
    /// read-ahead runs: a reader
    /// going through a file sequentially then finds the next window arriving while it
    /// reads this one, and the link never idles between requests (one request at a time
    /// left it idle for a round trip and a TCP slow start each window). Errors are the
    /// reader's to meet: it fetches what is still missing itself.
    fn read_ahead_next(&self, n: &Node, at: usize, k: usize) {
        let Some(first) = (k..n.chunks.len()).find(|&x| !self.source.is_local(&n.chunks[x])) else {
            return;
        };
        let from = n.chunks[first].start;
        if from.saturating_sub(n.chunks[at].start) > READ_AHEAD {
            return;
        }
        let mut last = first + 1;
        while last < n.chunks.len() && n.chunks[last].end - from <= READ_AHEAD && !self.source.is_local(&n.chunks[last])
        {
            last += 1;
        }
        if self.ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        let (source, ahead, name) = (Arc::clone(&self.source), Arc::clone(&self.ahead), n.name.clone());
        let chunks = n.chunks[first..last].to_vec();
        let started = std::thread::Builder::new().name("read-ahead".into()).spawn(move || {
            let _ = source.load(&name, &chunks);
            ahead.store(false, Ordering::Release);
        });
        if started.is_err() {
            self.ahead.store(false, Ordering::Release);
        }
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(Errno::from_i32(libc::ERANGE));
    }
}

impl<S: ChunkSource> Filesystem for LayerFs<S> {
    /// Opts in to idmapped mounts (`FUSE_ALLOW_IDMAP`, Linux 6.12+; the mount has
    /// `default_permissions`, which the kernel requires for it): a container in its own
    /// user namespace gets this mount as an idmapped overlay lower like any other layer.
    /// An older kernel without the flag leaves the mount as it was.
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if config.add_capabilities(InitFlags::FUSE_ALLOW_IDMAP).is_err() {
            eprintln!(
                "vessel-lazy: the kernel has no FUSE_ALLOW_IDMAP (Linux 6.12+): no idmapped mounts of this layer"
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.get(parent).and_then(|p| p.children.get(name)) {
            Some(ino) => reply.entry(&TTL, &self.attr(*ino), Generation(0)),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.get(ino) {
            Some(_) => reply.attr(&TTL, &self.attr(ino.0)),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.get(ino) {
            Some(n) if n.kind == FileType::Symlink => reply.data(&n.link),
            _ => reply.error(Errno::from_i32(libc::EINVAL)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::from_i32(libc::EROFS));
        }
        match self.get(ino) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            None => reply.error(Errno::from_i32(libc::ENOENT)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.get(ino).is_none() {
            return reply.error(Errno::from_i32(libc::ENOENT));
        }
        match self.read_at(ino.0, offset, size as u64) {
            Ok(data) => reply.data(&data),
            Err(Refused) => reply.error(Errno::EIO),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(n) = self.get(ino) else {
            return reply.error(Errno::from_i32(libc::ENOENT));
        };
        let mut all: Vec<(u64, FileType, &OsStr)> = vec![
            (ino.0, FileType::Directory, OsStr::new(".")),
            (n.parent, FileType::Directory, OsStr::new("..")),
        ];
        all.extend(
            n.children
                .iter()
                .map(|(name, i)| (*i, self.node(*i).kind, name.as_os_str())),
        );
        for (k, (i, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), (k + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(n) = self.get(ino) else {
            return reply.error(Errno::from_i32(libc::ENOENT));
        };
        match name.to_str().and_then(|k| n.xattrs.get(k)) {
            Some(v) => reply_xattr(reply, size, v),
            None => reply.error(Errno::from_i32(libc::ENODATA)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let Some(n) = self.get(ino) else {
            return reply.error(Errno::from_i32(libc::ENOENT));
        };
        let mut list = Vec::new();
        for k in n.xattrs.keys() {
            list.extend_from_slice(OsStr::new(k).as_bytes());
            list.push(0);
        }
        reply_xattr(reply, size, &list);
    }
}
