//! The eStargz table of contents: the 51-byte footer that locates it, the gzip member with
//! its tar entry `stargz.index.json`, and the JSON entries (files, chunks, landmarks), as
//! containerd/stargz-snapshotter's docs/estargz.md specifies.

use std::collections::BTreeSet;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The manifest annotation of an eStargz layer: sha256 of its uncompressed TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer annotation with the uncompressed size of the layer (optional).
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
/// Size of the eStargz footer, bytes.
pub const FOOTER_SIZE: u64 = 51;
/// The TOC's name inside its tar entry.
pub const TOC_NAME: &str = "stargz.index.json";
/// Marks the end of the files to prefetch (everything before it in blob order).
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Says that nothing is to be prefetched.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
/// Largest TOC accepted, bytes (compressed and uncompressed).
pub const MAX_TOC_SIZE: u64 = 64 << 20;

/// The TOC JSON (`{"version": 1, "entries": [...]}`); read by the lazy layers, written by
/// [`crate::estargz`].
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Toc {
    /// Format version (1).
    pub version: u32,
    /// Entries in blob order.
    pub entries: Vec<TocEntry>,
}

/// One TOC entry: a file system object, or (`type: chunk`) a further chunk of a regular file.
/// Written as stargz-snapshotter writes it: empty and zero fields are left out.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TocEntry {
    /// Path inside the layer, without leading `./` or `/`.
    pub name: String,
    /// `dir`, `reg`, `symlink`, `hardlink`, `char`, `block`, `fifo` or `chunk`.
    #[serde(rename = "type")]
    pub kind: String,
    /// File size, bytes (`reg`).
    #[serde(skip_serializing_if = "is_zero")]
    pub size: u64,
    /// Modification time, RFC 3339 (`modtime` in stargz-snapshotter's JSON).
    #[serde(rename = "modtime", alias = "modTime", skip_serializing_if = "Option::is_none")]
    pub mod_time: Option<String>,
    /// Symlink target, or the path a hardlink names.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    /// Permission and mode bits (tar's).
    pub mode: u32,
    /// Owner.
    #[serde(skip_serializing_if = "is_zero32")]
    pub uid: u32,
    /// Group.
    #[serde(skip_serializing_if = "is_zero32")]
    pub gid: u32,
    /// Device numbers (`char`, `block`).
    #[serde(skip_serializing_if = "is_zero32")]
    pub dev_major: u32,
    /// Device numbers (`char`, `block`).
    #[serde(skip_serializing_if = "is_zero32")]
    pub dev_minor: u32,
    /// Extended attributes, values base64 (Go's []byte JSON).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub xattrs: std::collections::BTreeMap<String, String>,
    /// sha256 of the whole file (`reg`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub digest: String,
    /// Blob offset of the gzip member holding this chunk's data.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Offset of this chunk inside the file.
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// Size of this chunk (0: the rest of the file).
    #[serde(skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    /// sha256 of this chunk's uncompressed bytes.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
    /// Bytes to skip in the decompressed member before this chunk's data.
    #[serde(skip_serializing_if = "is_zero")]
    pub inner_offset: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero32(n: &u32) -> bool {
    *n == 0
}

/// Where the TOC's gzip member starts, from the footer: a gzip member with an empty body
/// whose header's extra field holds subfield `SG` with `%016x` of the offset then `STARGZ`.
///
/// # Errors
/// [`ImageError::Lazy`] when `footer` is not an eStargz footer.
pub fn parse_footer(layer: &Digest, footer: &[u8]) -> Result<u64> {
    let bad = |why: &str| ImageError::Lazy {
        layer: layer.clone(),
        reason: format!("not an eStargz footer: {why}"),
        hint: ": pull it without --lazy",
    };
    if footer.len() != FOOTER_SIZE as usize {
        return Err(bad("wrong length"));
    }
    if footer[0] != 0x1f || footer[1] != 0x8b || footer[3] & 0x04 == 0 {
        return Err(bad("no gzip header with an extra field"));
    }
    let xlen = u16::from_le_bytes([footer[10], footer[11]]) as usize;
    if xlen != 26 || &footer[12..14] != b"SG" || u16::from_le_bytes([footer[14], footer[15]]) != 22 {
        return Err(bad("no SG subfield"));
    }
    let payload = &footer[16..38];
    if &payload[16..] != b"STARGZ" {
        return Err(bad("no STARGZ magic"));
    }
    let hex = std::str::from_utf8(&payload[..16]).map_err(|_| bad("offset is not hex"))?;
    u64::from_str_radix(hex, 16).map_err(|_| bad("offset is not hex"))
}

/// The TOC from its gzip member (the blob's bytes from the footer's offset up to the
/// footer), checked against `expected` (the layer's TOC digest annotation).
///
/// # Errors
/// [`ImageError::Lazy`] for a member without `stargz.index.json`, bad JSON or a digest that
/// is not the annotation's.
pub fn parse_toc(layer: &Digest, member: &[u8], expected: &Digest) -> Result<(Toc, Vec<u8>)> {
    let err = |reason: String| ImageError::Lazy {
        layer: layer.clone(),
        reason,
        hint: ": the registry served a damaged layer, or the image is not eStargz",
    };
    let gz = flate2::read::GzDecoder::new(member);
    let mut tar = tar::Archive::new(gz.take(MAX_TOC_SIZE + 1024));
    let entries = tar.entries().map_err(|e| err(format!("read TOC tar: {e}")))?;
    for e in entries {
        let mut e = e.map_err(|e| err(format!("read TOC tar: {e}")))?;
        let is_toc = e.path().map(|p| p.to_str() == Some(TOC_NAME)).unwrap_or(false);
        if !is_toc {
            continue;
        }
        let mut json = Vec::new();
        (&mut e)
            .take(MAX_TOC_SIZE)
            .read_to_end(&mut json)
            .map_err(|e| err(format!("read TOC: {e}")))?;
        let actual = Digest::of_bytes(&json);
        if actual != *expected {
            return Err(err(format!(
                "TOC has digest {actual}, the manifest's {TOC_DIGEST_ANNOTATION} says {expected}"
            )));
        }
        let toc: Toc = serde_json::from_slice(&json).map_err(|e| err(format!("TOC JSON: {e}")))?;
        return Ok((toc, json));
    }
    Err(err(format!("no {TOC_NAME} in the TOC member")))
}

/// A chunk of a regular file: the span of the blob holding it and how to check it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Offset of the chunk in the file.
    pub file_offset: u64,
    /// Uncompressed length, bytes.
    pub size: u64,
    /// Blob span of its gzip member: `[start, end)`.
    pub start: u64,
    /// End of the member (the next member's start, or the TOC's).
    pub end: u64,
    /// Bytes to skip after decompressing.
    pub inner_offset: u64,
    /// sha256 of its uncompressed bytes.
    pub digest: Digest,
}

/// The end of the gzip member starting at each offset: the next larger member start in
/// the TOC (or the TOC's own offset).
pub(crate) fn member_ends(toc: &Toc, toc_offset: u64) -> BTreeSet<u64> {
    // Only payload members start where an offset points (other entries' offsets, where
    // set, may point inside a member).
    let mut starts: BTreeSet<u64> = toc
        .entries
        .iter()
        .filter(|e| (e.kind == "reg" && e.size > 0) || e.kind == "chunk")
        .map(|e| e.offset)
        .collect();
    starts.insert(toc_offset);
    starts
}

/// The chunks of the regular file whose first entry is `entries[i]` (that entry and the
/// `chunk` entries following it).
///
/// # Errors
/// [`ImageError::Lazy`] for a chunk without a valid `chunkDigest`.
pub(crate) fn chunks_of(layer: &Digest, entries: &[TocEntry], i: usize, starts: &BTreeSet<u64>) -> Result<Vec<Chunk>> {
    let file = &entries[i];
    let mut out = Vec::new();
    let mut j = i;
    while j < entries.len() && (j == i || entries[j].kind == "chunk") {
        let e = &entries[j];
        let size = if e.chunk_size > 0 {
            e.chunk_size
        } else {
            file.size.saturating_sub(e.chunk_offset)
        };
        let end = starts
            .range(e.offset + 1..)
            .next()
            .copied()
            .ok_or_else(|| ImageError::Lazy {
                layer: layer.clone(),
                reason: format!("{}: chunk at {} has no end in the TOC", file.name, e.offset),
                hint: "",
            })?;
        let digest = Digest::parse(&e.chunk_digest).map_err(|_| ImageError::Lazy {
            layer: layer.clone(),
            reason: format!("{}: chunk at {} has no valid chunkDigest", file.name, e.chunk_offset),
            hint: ": eStargz layers name a sha256 chunkDigest for every chunk",
        })?;
        out.push(Chunk {
            file_offset: e.chunk_offset,
            size,
            start: e.offset,
            end,
            inner_offset: e.inner_offset,
            digest,
        });
        j += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn footer(off: u64) -> Vec<u8> {
        let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
        f.extend_from_slice(format!("{off:016x}STARGZ").as_bytes());
        f.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        f
    }

    #[test]
    fn footer_offset() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(parse_footer(&d, &footer(0x1234)).unwrap(), 0x1234);
        let mut bad = footer(1);
        bad[40] ^= 1;
        bad[33] = b'x';
        assert!(parse_footer(&d, &bad).is_err());
        assert!(parse_footer(&d, &footer(1)[..50]).is_err());
    }
}
