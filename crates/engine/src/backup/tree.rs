//! Directory trees in a tar stream, every attribute kept: ownership, modes, mtimes
//! (seconds), extended attributes (`SCHILY.xattr.*` PAX records, `trusted.overlay.*`
//! included), overlay whiteouts (char 0:0 devices), device nodes, fifos, symlinks,
//! hardlinks (by inode) and sparse files (PAX `VESSEL.sparse`: the real size and the data
//! segments; the member's data is the segments back to back).
//!
//! Each member gets a digest: sha256 of a canonical line of its attributes followed by its
//! data ([`meta_line`]), so a changed mode, owner, xattr or byte is caught on restore.
//! [`super::writer`] writes trees this way, [`super::extract`] reads them back and
//! recomputes each digest from what it reads and writes.

use std::fmt::Write as _;
use std::io::{self, Read, Write as _};

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
pub(super) const SPARSE_KEY: &str = "VESSEL.sparse";
/// The PAX key prefix of extended attributes (GNU tar's and star's).
pub(super) const XATTR_PREFIX: &str = "SCHILY.xattr.";
/// The PAX key prefix of extended attributes whose value holds a newline (overlayfs's
/// binary `origin` and `uuid`), which PAX readers split records at: the value in hex.
pub(super) const XATTR_HEX_PREFIX: &str = "VESSEL.xattr.hex.";

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

pub(super) fn sparse_value(size: u64, segs: &[(u64, u64)]) -> String {
    let mut v = format!("{size};");
    for (i, (o, l)) in segs.iter().enumerate() {
        if i > 0 {
            v.push(',');
        }
        let _ = write!(v, "{o}:{l}");
    }
    v
}

pub(super) fn parse_sparse(v: &[u8]) -> Option<(u64, Vec<(u64, u64)>)> {
    let v = std::str::from_utf8(v).ok()?;
    let (size, rest) = v.split_once(';')?;
    let mut segs = Vec::new();
    for part in rest.split(',').filter(|p| !p.is_empty()) {
        let (o, l) = part.split_once(':')?;
        segs.push((o.parse().ok()?, l.parse().ok()?));
    }
    Some((size.parse().ok()?, segs))
}

/// A reader that hashes what passes through it.
pub(super) struct Hashing<R> {
    pub(super) inner: R,
    pub(super) hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
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

pub(super) fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if s.len() & 1 == 1 {
        return None;
    }
    s.chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect()
}
