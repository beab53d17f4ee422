//! One layer tar to one eStargz blob (containerd/stargz-snapshotter docs/estargz.md): the
//! tar's entries in their order (prioritized files and their parent directories first, then
//! the prefetch landmark), tar headers in shared gzip members, each regular file's data in
//! gzip members of its own (one per chunk of at most `chunk_size` bytes, with `chunkOffset`,
//! `chunkSize` and `chunkDigest` in the TOC), the TOC `stargz.index.json` as the last tar
//! entry in a member of its own, and the 51-byte footer pointing at that member.
//!
//! The whole blob is one gzip stream of a valid tar (the TOC entry included): its sha256
//! uncompressed is the layer's diff id. The blob goes to the content store only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use base64::Engine as _;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::lazy::toc::{Toc, TocEntry, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_NAME};
use crate::store::{tmp_name, BlobWriter, Store};

/// Default largest chunk of a regular file, bytes (stargz-snapshotter's default is 4 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// The byte a landmark file holds (stargz-snapshotter's `landmarkContents`).
const LANDMARK_CONTENTS: u8 = 0x0f;

/// How to write a layer.
#[derive(Clone, Debug)]
pub struct WriteOptions {
    /// Largest chunk of a regular file, bytes (> 0).
    pub chunk_size: u64,
    /// Paths (inside the layer, `/usr/bin/x` or `usr/bin/x`) to put first, in this order;
    /// those the layer does not hold are skipped. Empty: `.no.prefetch.landmark` first.
    pub prioritized: Vec<String>,
    /// gzip level (0-9).
    pub level: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            prioritized: Vec::new(),
            level: 6,
        }
    }
}

/// An eStargz layer blob written to the store.
#[derive(Clone, Debug)]
pub struct EstargzLayer {
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size, bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar stream (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Size of the uncompressed tar stream, bytes.
    pub uncompressed_size: u64,
    /// sha256 of the TOC JSON (the `containerd.io/snapshot/stargz/toc.digest` annotation).
    pub toc_digest: Digest,
    /// The TOC written.
    pub toc: Toc,
    /// How many prioritized files the layer held (0: no-prefetch landmark).
    pub prioritized: usize,
}

/// Canonical TOC name: no leading `./` or `/`, no trailing `/`.
pub(crate) fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// One tar entry of the source: where its bytes are and its TOC entry.
struct Item {
    /// Start of its header blocks (extension headers included).
    header_start: u64,
    /// Start of its data.
    data_start: u64,
    /// Data length in the archive, bytes.
    data_len: u64,
    /// Its TOC entry (without offsets and digests).
    entry: TocEntry,
}

/// Removes the temporary uncompressed tar.
struct TempTar(PathBuf);
impl Drop for TempTar {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn padding(len: u64) -> u64 {
    (512 - len % 512) % 512
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

/// The TOC entry of a source tar entry (no offsets or digests yet); None for entries that
/// are not files (pax global headers and the like: their bytes go with the next entry).
fn toc_entry<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Option<TocEntry>> {
    use tar::EntryType as T;
    let h = e.header().clone();
    let kind = match h.entry_type() {
        T::Regular | T::Continuous => "reg",
        T::Directory => "dir",
        T::Symlink => "symlink",
        T::Link => "hardlink",
        T::Char => "char",
        T::Block => "block",
        T::Fifo => "fifo",
        _ => return Ok(None),
    };
    let name = clean_name(&String::from_utf8_lossy(&e.path_bytes()));
    let link_name = e
        .link_name_bytes()
        .map(|l| {
            let l = String::from_utf8_lossy(&l).into_owned();
            // A hardlink names a path of the layer; a symlink's target is kept as written.
            if kind == "hardlink" {
                clean_name(&l)
            } else {
                l
            }
        })
        .unwrap_or_default();
    let mut xattrs = BTreeMap::new();
    if let Some(pax) = e.pax_extensions()? {
        for ext in pax.flatten() {
            if let Some(k) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                xattrs.insert(
                    k.to_string(),
                    base64::engine::general_purpose::STANDARD.encode(ext.value_bytes()),
                );
            }
        }
    }
    Ok(Some(TocEntry {
        name,
        kind: kind.into(),
        size: if kind == "reg" { e.size() } else { 0 },
        mod_time: h.mtime().ok().map(rfc3339),
        link_name,
        mode: h.mode().unwrap_or(0o644),
        uid: h.uid().unwrap_or(0) as u32,
        gid: h.gid().unwrap_or(0) as u32,
        dev_major: h.device_major().ok().flatten().unwrap_or(0),
        dev_minor: h.device_minor().ok().flatten().unwrap_or(0),
        xattrs,
        ..TocEntry::default()
    }))
}

/// Where every entry of the tar file at `path` is.
fn scan(path: &std::path::Path) -> io::Result<Vec<Item>> {
    let mut archive = tar::Archive::new(File::open(path)?);
    let mut items = Vec::new();
    let mut next_start = 0u64;
    for e in archive.entries_with_seek()? {
        let mut e = e?;
        let data_start = e.raw_file_position();
        let data_len = e.header().entry_size()?;
        let Some(entry) = toc_entry(&mut e)? else {
            continue;
        };
        items.push(Item {
            header_start: next_start,
            data_start,
            data_len,
            entry,
        });
        next_start = data_start + data_len + padding(data_len);
    }
    Ok(items)
}

/// The order to write `items` in: each prioritized file after its parent directories (and
/// a hardlink after its target), then the rest in tar order. Returns the order and how
/// many of its first items are prioritized.
fn order(items: &[Item], prioritized: &[String]) -> (Vec<usize>, usize) {
    let by_name: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.entry.name.as_str(), i))
        .collect();
    let mut placed = HashSet::new();
    let mut out = Vec::new();
    fn place(
        i: usize,
        items: &[Item],
        by_name: &HashMap<&str, usize>,
        placed: &mut HashSet<usize>,
        out: &mut Vec<usize>,
        depth: usize,
    ) {
        if placed.contains(&i) || depth > 64 {
            return;
        }
        let name = &items[i].entry.name;
        let mut parent = String::new();
        for part in name.split('/').take(name.split('/').count().saturating_sub(1)) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if let Some(&p) = by_name.get(parent.as_str()) {
                place(p, items, by_name, placed, out, depth + 1);
            }
        }
        if items[i].entry.kind == "hardlink" {
            if let Some(&t) = by_name.get(items[i].entry.link_name.as_str()) {
                place(t, items, by_name, placed, out, depth + 1);
            }
        }
        if placed.insert(i) {
            out.push(i);
        }
    }
    let mut files = 0;
    for p in prioritized {
        if let Some(&i) = by_name.get(clean_name(p).as_str()) {
            if !placed.contains(&i) && items[i].entry.kind != "dir" {
                place(i, items, &by_name, &mut placed, &mut out, 0);
                files += 1;
            }
        }
    }
    let first = if files > 0 { out.len() } else { 0 };
    for i in 0..items.len() {
        if placed.insert(i) {
            out.push(i);
        }
    }
    (out, first)
}

/// The blob being written: gzip members one after another, the uncompressed stream hashed.
struct Out {
    blob: BlobWriter,
    member: Option<GzEncoder<Vec<u8>>>,
    level: u32,
    diff: Sha256,
    tar_len: u64,
}

impl Out {
    fn open(&mut self) {
        if self.member.is_none() {
            self.member = Some(GzEncoder::new(Vec::new(), flate2::Compression::new(self.level)));
        }
    }

    /// Ends the open member (if any); returns the blob offset after it.
    fn close(&mut self) -> io::Result<u64> {
        if let Some(gz) = self.member.take() {
            let bytes = gz.finish()?;
            self.blob.write_all(&bytes)?;
        }
        Ok(self.blob.len())
    }

    /// Uncompressed bytes into the open member (one is opened when none is).
    fn put(&mut self, data: &[u8]) -> io::Result<()> {
        self.open();
        if let Some(gz) = self.member.as_mut() {
            gz.write_all(data)?;
        }
        self.diff.update(data);
        self.tar_len += data.len() as u64;
        Ok(())
    }

    /// A regular file's data: each chunk in a member of its own, the tar padding at the end
    /// of the last one. Returns the TOC entries (the file's, then `chunk` entries).
    fn file(
        &mut self,
        mut entry: TocEntry,
        src: &mut dyn Read,
        len: u64,
        chunk_size: u64,
    ) -> io::Result<Vec<TocEntry>> {
        let mut entries = Vec::new();
        let mut whole = Sha256::new();
        let mut done = 0u64;
        let chunked = len > chunk_size;
        while done < len {
            let n = chunk_size.min(len - done);
            let offset = self.close()?;
            let mut buf = vec![0u8; n as usize];
            src.read_exact(&mut buf)?;
            whole.update(&buf);
            self.put(&buf)?;
            if done + n == len {
                self.put(&vec![0u8; padding(len) as usize])?;
            }
            let mut e = if done == 0 {
                std::mem::take(&mut entry)
            } else {
                TocEntry {
                    name: entry_name(&entries),
                    kind: "chunk".into(),
                    ..TocEntry::default()
                }
            };
            e.offset = offset;
            e.chunk_offset = done;
            e.chunk_size = if chunked { n } else { 0 };
            e.chunk_digest = Digest::of_bytes(&buf).to_string();
            entries.push(e);
            done += n;
        }
        self.close()?;
        if let Some(first) = entries.first_mut() {
            first.digest = Digest::from_hasher(whole).to_string();
        }
        Ok(entries)
    }
}

fn entry_name(entries: &[TocEntry]) -> String {
    entries.first().map(|e| e.name.clone()).unwrap_or_default()
}

/// A ustar header for a file vessel adds (landmarks, the TOC).
fn new_header(name: &str, size: u64) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

/// Writes the landmark file `name` (one byte) and its TOC entry.
fn landmark(out: &mut Out, toc: &mut Vec<TocEntry>, name: &str, chunk_size: u64) -> io::Result<()> {
    let h = new_header(name, 1)?;
    out.put(h.as_bytes())?;
    let entry = TocEntry {
        name: name.into(),
        kind: "reg".into(),
        size: 1,
        mode: 0o644,
        mod_time: Some(rfc3339(0)),
        ..TocEntry::default()
    };
    toc.extend(out.file(entry, &mut &[LANDMARK_CONTENTS][..], 1, chunk_size)?);
    Ok(())
}

/// The 51-byte footer: an empty gzip member whose extra field holds subfield `SG` with
/// `%016x` of the TOC member's offset then `STARGZ`.
fn footer(toc_offset: u64) -> Vec<u8> {
    let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty final stored block, then CRC-32 and ISIZE of nothing.
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    f
}

/// Writes the uncompressed layer tar read from `tar` as an eStargz blob into `store`
/// (`layer` names the source layer in errors); see the module's doc.
///
/// # Errors
/// [`ImageError::Estargz`] for a stream that is not a tar, [`ImageError::Io`] for the
/// store's temporary files, the store's errors.
pub fn write_layer(store: &Store, layer: &Digest, tar: &mut dyn Read, opts: &WriteOptions) -> Result<EstargzLayer> {
    let bad = |what: &str, e: io::Error| ImageError::Estargz {
        layer: layer.clone(),
        reason: format!("{what}: {e}"),
        hint: ": check that the layer is a tar (vessel image inspect shows its media type)",
    };
    // The source, uncompressed, in a temporary file: prioritized files are read out of order.
    let tmp = TempTar(store.root().join("content/tmp").join(format!("estargz-{}", tmp_name())));
    {
        let mut f = File::create(&tmp.0).ctx("create", &tmp.0)?;
        io::copy(tar, &mut f).map_err(|e| bad("read the layer", e))?;
        f.sync_data().ctx("write", &tmp.0)?;
    }
    let items = scan(&tmp.0).map_err(|e| bad("read the layer's tar", e))?;
    let (order, prioritized) = order(&items, &opts.prioritized);
    let chunk_size = opts.chunk_size.max(1);
    let mut src = BufReader::new(File::open(&tmp.0).ctx("open", &tmp.0)?);
    let mut out = Out {
        blob: store.blob_writer()?,
        member: None,
        level: opts.level.min(9),
        diff: Sha256::new(),
        tar_len: 0,
    };
    let mut toc = Vec::new();
    let w = |e: io::Error| bad("write the eStargz blob", e);
    if prioritized == 0 {
        landmark(&mut out, &mut toc, NO_PREFETCH_LANDMARK, chunk_size).map_err(w)?;
    }
    for (n, &i) in order.iter().enumerate() {
        let it = &items[i];
        src.seek(SeekFrom::Start(it.header_start)).map_err(w)?;
        let mut header = vec![0u8; (it.data_start - it.header_start) as usize];
        src.read_exact(&mut header)
            .map_err(|e| bad("read the layer's tar", e))?;
        out.put(&header).map_err(w)?;
        if it.entry.kind == "reg" && it.data_len > 0 {
            let mut data = (&mut src).take(it.data_len);
            toc.extend(
                out.file(it.entry.clone(), &mut data, it.data_len, chunk_size)
                    .map_err(w)?,
            );
        } else {
            // Data of entries other than regular files is kept as it is, with the headers.
            let mut data = vec![0u8; (it.data_len + padding(it.data_len)) as usize];
            src.read_exact(&mut data).map_err(|e| bad("read the layer's tar", e))?;
            out.put(&data).map_err(w)?;
            toc.push(it.entry.clone());
        }
        if prioritized > 0 && n + 1 == prioritized {
            landmark(&mut out, &mut toc, PREFETCH_LANDMARK, chunk_size).map_err(w)?;
        }
    }
    drop(src);
    drop(tmp);

    let toc = Toc {
        version: 1,
        entries: toc,
    };
    let json = serde_json::to_vec(&toc).map_err(|source| ImageError::Json {
        what: format!("eStargz TOC of layer {layer}"),
        source,
    })?;
    let toc_digest = Digest::of_bytes(&json);
    let toc_offset = out.close().map_err(w)?;
    let h = new_header(TOC_NAME, json.len() as u64).map_err(w)?;
    out.put(h.as_bytes()).map_err(w)?;
    out.put(&json).map_err(w)?;
    out.put(&vec![0u8; padding(json.len() as u64) as usize + 1024])
        .map_err(w)?;
    out.close().map_err(w)?;
    out.blob.write_all(&footer(toc_offset)).map_err(w)?;
    let diff_id = Digest::from_hasher(out.diff);
    let uncompressed_size = out.tar_len;
    let (digest, size) = out.blob.commit_computed("eStargz layer blob")?;
    Ok(EstargzLayer {
        digest,
        size,
        diff_id,
        uncompressed_size,
        toc_digest,
        toc,
        prioritized,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, kind: &str, link: &str) -> Item {
        Item {
            header_start: 0,
            data_start: 0,
            data_len: 0,
            entry: TocEntry {
                name: name.into(),
                kind: kind.into(),
                link_name: link.into(),
                ..TocEntry::default()
            },
        }
    }

    #[test]
    fn prioritized_files_after_their_parents_and_link_targets() {
        let items = [
            item("a", "dir", ""),
            item("a/b", "dir", ""),
            item("a/b/x", "reg", ""),
            item("c", "dir", ""),
            item("c/y", "reg", ""),
            item("c/z", "hardlink", "a/b/x"),
            item("d", "reg", ""),
        ];
        let (o, first) = order(&items, &["/c/z".into(), "./c/y".into(), "/missing".into(), "/a".into()]);
        assert_eq!(o, [3, 0, 1, 2, 5, 4, 6]);
        assert_eq!(first, 6);
        let (o, first) = order(&items, &["/missing".into()]);
        assert_eq!(o, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(first, 0);
    }

    #[test]
    fn names_and_footer() {
        assert_eq!(clean_name("./usr/bin/"), "usr/bin");
        assert_eq!(clean_name("/a/./b/../c"), "a/c");
        let f = footer(0x1234);
        assert_eq!(f.len(), 51);
        let d = Digest::of_bytes(b"x");
        assert_eq!(crate::lazy::toc::parse_footer(&d, &f).unwrap(), 0x1234);
        // The footer is a gzip member of nothing.
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&f[..]).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
