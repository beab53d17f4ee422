//! Exported checkpoints: one zstd-compressed tar holding `manifest.json` (first), the
//! container's record (`record.json`) and config (`config.json`), its CRIU images
//! (`checkpoint/`) and its writable layer (`upper/`, the overlay upper dir). The
//! manifest holds a SHA-256 digest of every other member (its path, kind, mode, link
//! target and content): an import reads the whole archive and checks every digest,
//! and that no member is missing or added, before it writes anything.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::db::Record;
use crate::error::{Error, IoContext, Result};

/// The first member: what the others must be.
pub const MANIFEST: &str = "manifest.json";
/// The container's record as exported.
pub const RECORD: &str = "record.json";

/// `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// `sha256:<hex>` of each member, by path.
    pub members: BTreeMap<String, String>,
}

fn bad(file: &Path, msg: impl std::fmt::Display) -> Error {
    Error::BadInput(format!(
        "checkpoint archive {}: {msg}: it is damaged or was altered; nothing was restored",
        file.display()
    ))
}

/// The digest of one tar member: its header's path, kind, mode, link target and
/// device numbers, and its content (read from `content`).
fn digest_of(path: &str, h: &tar::Header, content: &mut dyn Read) -> std::io::Result<String> {
    let kind = format!("{:?}", h.entry_type());
    let mode = h.mode().unwrap_or(0);
    let link = h
        .link_name()
        .ok()
        .flatten()
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dev = (h.device_major().ok().flatten(), h.device_minor().ok().flatten());
    let mut sha = Sha256::new();
    sha.update(format!("{path}\0{kind}\0{mode:o}\0{link}\0{dev:?}\0").as_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = content.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    let hex: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// [`digest_of`] a member as read from an archive: (path, digest).
fn member_digest<R: Read>(entry: &mut tar::Entry<'_, R>) -> std::io::Result<(String, String)> {
    let path = entry.path()?.to_string_lossy().into_owned();
    let h = entry.header().clone();
    let d = digest_of(&path, &h, entry)?;
    Ok((path, d))
}

/// Writes the archive `out`: `record`, the bundle's config, the images in `images` and
/// the upper dir `upper`. Written to a temp file beside `out` (synced when `durable`),
/// then renamed.
pub fn export(out: &Path, record: &Record, config: &Path, images: &Path, upper: &Path, durable: bool) -> Result<()> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let payload = tempfile::NamedTempFile::new_in(parent).at("create temp file in", parent)?;
    {
        let mut b = tar::Builder::new(payload.as_file().try_clone().at("open", payload.path())?);
        b.follow_symlinks(false);
        let rec = serde_json::to_vec_pretty(record).map_err(|e| Error::BadInput(e.to_string()))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(rec.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, RECORD, rec.as_slice()).at("archive", RECORD)?;
        b.append_path_with_name(config, "config.json").at("archive", config)?;
        b.append_dir_all("checkpoint", images).at("archive", images)?;
        b.append_dir_all("upper", upper).at("archive", upper)?;
        b.finish().at("write", payload.path())?;
    }
    // The digests, from the payload as written.
    let mut members = BTreeMap::new();
    let mut a = tar::Archive::new(fs::File::open(payload.path()).at("open", payload.path())?);
    for e in a.entries().at("read", payload.path())? {
        let mut e = e.at("read", payload.path())?;
        let (p, d) = member_digest(&mut e).at("read", payload.path())?;
        members.insert(p, d);
    }
    let manifest =
        serde_json::to_vec_pretty(&Manifest { version: 1, members }).map_err(|e| Error::BadInput(e.to_string()))?;
    let tmp = tempfile::NamedTempFile::new_in(parent).at("create temp file in", parent)?;
    {
        let z = zstd::Encoder::new(tmp.as_file().try_clone().at("open", tmp.path())?, 3).at("compress", tmp.path())?;
        let mut b = tar::Builder::new(z);
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, MANIFEST, manifest.as_slice())
            .at("archive", MANIFEST)?;
        let mut a = tar::Archive::new(fs::File::open(payload.path()).at("open", payload.path())?);
        for e in a.entries().at("read", payload.path())? {
            let e = e.at("read", payload.path())?;
            let mut h = e.header().clone();
            let path = e.path().at("read", payload.path())?.into_owned();
            b.append_data(&mut h, &path, e).at("archive", &path)?;
        }
        let z = b.into_inner().at("write", tmp.path())?;
        let mut f = z.finish().at("compress", tmp.path())?;
        f.flush().at("write", tmp.path())?;
        if durable {
            f.sync_all().at("sync", tmp.path())?;
        }
    }
    tmp.persist(out).map_err(|e| Error::io("rename into", out, e.error))?;
    Ok(())
}

fn open(file: &Path) -> Result<tar::Archive<zstd::Decoder<'static, std::io::BufReader<fs::File>>>> {
    let f = fs::File::open(file).at("open", file)?;
    Ok(tar::Archive::new(zstd::Decoder::new(f).map_err(|e| bad(file, e))?))
}

/// Reads the whole archive and checks every member against the manifest. Returns the
/// record it holds.
///
/// Errors: [`Error::BadInput`] for a truncated, altered or foreign archive.
pub fn verify(file: &Path) -> Result<Record> {
    let mut a = open(file)?;
    let mut entries = a.entries().map_err(|e| bad(file, e))?;
    let mut first = entries
        .next()
        .ok_or_else(|| bad(file, "empty"))?
        .map_err(|e| bad(file, e))?;
    if first.path().map_err(|e| bad(file, e))?.as_os_str() != MANIFEST {
        return Err(bad(file, "its first member is not manifest.json"));
    }
    let mut text = Vec::new();
    first.read_to_end(&mut text).map_err(|e| bad(file, e))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| bad(file, e))?;
    let mut seen = BTreeMap::new();
    let mut record = None;
    for e in entries {
        let mut e = e.map_err(|e| bad(file, e))?;
        let path = e.path().map_err(|e| bad(file, e))?.to_string_lossy().into_owned();
        let (p, d) = if path == RECORD {
            let mut t = Vec::new();
            e.read_to_end(&mut t).map_err(|e| bad(file, e))?;
            let h = e.header().clone();
            let d = digest_of(&path, &h, &mut t.as_slice()).map_err(|e| bad(file, e))?;
            record = Some(t);
            (path, d)
        } else {
            member_digest(&mut e).map_err(|e| bad(file, e))?
        };
        match manifest.members.get(&p) {
            Some(want) if *want == d => {}
            Some(_) => return Err(bad(file, format!("member {p} does not match its digest"))),
            None => return Err(bad(file, format!("member {p} is not in the manifest"))),
        }
        seen.insert(p, d);
    }
    if let Some(missing) = manifest.members.keys().find(|k| !seen.contains_key(*k)) {
        return Err(bad(file, format!("member {missing} is missing")));
    }
    let record = record.ok_or_else(|| bad(file, "no record.json"))?;
    serde_json::from_slice(&record).map_err(|e| bad(file, e))
}

/// Extracts a verified archive: `checkpoint/` into `images`, `upper/` into `upper`.
/// Entry paths are checked to stay inside their target.
pub fn extract(file: &Path, images: &Path, upper: &Path) -> Result<()> {
    let mut a = open(file)?;
    // The writable layer's owners (a user namespace's range) come back as they were.
    a.set_preserve_ownerships(true);
    for e in a.entries().map_err(|e| bad(file, e))? {
        let mut e = e.map_err(|e| bad(file, e))?;
        let path = e.path().map_err(|e| bad(file, e))?.into_owned();
        let (dir, rest) = match path.strip_prefix("checkpoint") {
            Ok(r) => (images, r.to_path_buf()),
            Err(_) => match path.strip_prefix("upper") {
                Ok(r) => (upper, r.to_path_buf()),
                Err(_) => continue,
            },
        };
        if rest.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(bad(file, format!("member {} leaves its directory", path.display())));
        }
        if rest.as_os_str().is_empty() {
            continue;
        }
        let target: PathBuf = dir.join(&rest);
        if e.header().entry_type().is_hard_link() {
            let link = e
                .link_name()
                .map_err(|e| bad(file, e))?
                .ok_or_else(|| bad(file, "hard link without target"))?;
            let rel = link
                .strip_prefix("upper")
                .or_else(|_| link.strip_prefix("checkpoint"))
                .map_err(|_| bad(file, "hard link out of the archive"))?;
            if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(file, "hard link out of its directory"));
            }
            fs::hard_link(dir.join(rel), &target).at("link", &target)?;
            continue;
        }
        // No symlink on the way (an earlier member could have made one).
        let mut at = dir.to_path_buf();
        for c in rest.parent().into_iter().flat_map(|p| p.components()) {
            at.push(c);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(bad(file, format!("member {} goes through a symlink", path.display())));
            }
        }
        if let Some(p) = target.parent() {
            fs::create_dir_all(p).at("create", p)?;
        }
        e.set_preserve_permissions(true);
        e.set_preserve_mtime(true);
        e.unpack(&target).map_err(|err| Error::io("unpack", &target, err))?;
    }
    Ok(())
}
