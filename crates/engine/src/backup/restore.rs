//! Restoring a backup: the archive streamed into a temp dir under the root and verified
//! whole, then the image found, imported or pulled, the container's files renamed into a
//! new bundle and its record written last.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::Path;

use sha2::{Digest as _, Sha256};
use vessel_image::layout::{self, Location};
use vessel_image::{ImageRecord, Reference, Store};

use super::{
    extract, owner_tag, tmp_root, tree, Header, Index, Member, TmpDir, FORMAT, HEADER, INDEX, INDEX_SUM, MAX_INDEX,
    VERSION,
};
use crate::containers::Engine;
use crate::db::{Record, State};
use crate::error::{Error, IoContext, Result};
use crate::names;
use crate::rootfs::{self, Source, HOST_IMAGE};

/// `vessel backup restore FILE [--name NEW]`: makes a container from the backup read from
/// `src` (`label` names it in messages), in state `exited`, with a new id. Nothing is
/// written to the root outside a temp dir (`ROOT/backups-tmp/restore-*`) until every
/// member's digest matched the archive's index; then the image is imported from the
/// archive, found in the store or pulled by digest with `pull` (the registry of the
/// recorded reference), the container's files are moved into place and its record is
/// written last. On any error, or when killed, nothing of it is left but that temp dir,
/// which `vessel system check` removes.
///
/// # Errors
/// [`Error::Backup`] for an archive that is not whole (truncated, a member's digest or
/// size differs from the index, members missing or added, not a vessel backup);
/// [`Error::BadInput`] when the name is taken (restore with `--name NEW`); the image
/// errors of the import or pull; [`Error::Io`].
pub fn restore(
    engine: &Engine,
    src: &mut dyn Read,
    label: &str,
    new_name: Option<&str>,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<Record> {
    let name_free = |n: &str| -> Result<()> {
        match engine.db.find(n) {
            Ok(r) if r.name == n => Err(Error::BadInput(format!(
                "the container name \"{n}\" is already in use: restore with --name NEW (or remove that container)"
            ))),
            _ => Ok(()),
        }
    };
    if let Some(n) = new_name {
        names::check(n)?;
        name_free(n)?;
    }
    let root = tmp_root(&engine.paths);
    fs::create_dir_all(&root).at("create", &root)?;
    let tmp = TmpDir(root.join(format!("restore-{}", owner_tag())));
    let contents = tmp.0.join("contents");
    fs::create_dir_all(&contents).at("create", &contents)?;
    let header = read_archive(src, &contents, label, &mut |h: &Header| match new_name {
        Some(_) => Ok(()),
        None => name_free(&h.container.name),
    })?;
    let name = new_name
        .map(String::from)
        .unwrap_or_else(|| header.container.name.clone());
    let store = engine.store()?;
    let source = image_source(&store, &header, &contents, label, pull)?;
    let host = matches!(source, Source::Host);
    let old = &header.container;
    let mut options = old.options.clone();
    options.name = Some(name.clone());
    // A range of its own (the old one may be another container's now); the layer's owners
    // are moved into it below.
    let old_ids = old.options.id_mappings.clone();
    options.id_mappings = crate::idmap::resolve(&engine.db, &options)?;
    let mut rec = Record {
        id: names::new_id()?,
        name,
        image: old.image.clone(),
        image_id: String::new(),
        options,
        command: Vec::new(),
        stop_signal: old.stop_signal,
        state: State::Exited,
        pid: None,
        monitor_pid: None,
        monitor_start: None,
        exit_code: old.exit_code,
        created_at: vessel_runtime::state::now_rfc3339(),
        started_at: None,
        finished_at: old.finished_at.clone(),
        oom_killed: false,
    };
    let id = rec.id.clone();
    let new_ids = rec.options.id_mappings.clone();
    let bundle = engine.paths.bundle(&id);
    let mut fill = |bundle: &Path| -> Result<()> {
        rootfs::unmount(bundle)?;
        // With a disk quota the uppers are on the container's own file system.
        let w = rootfs::writable(&store, bundle, &id)?;
        replace_dir(&contents.join("layer/upper"), &w.upper)?;
        rootfs::idmapped::remap_tree(&w.upper, old_ids.as_ref(), new_ids.as_ref())?;
        if host {
            let etc = bundle.join("host-etc/upper");
            replace_dir(&contents.join("layer/host-etc"), &etc)?;
            rootfs::idmapped::remap_tree(&etc, old_ids.as_ref(), new_ids.as_ref())?;
        }
        rootfs::mount(&store, bundle, &id, host, new_ids.as_ref())
    };
    let made = engine.make_bundle(&store, &mut rec, &source, &mut fill).and_then(|()| {
        rootfs::unmount(&bundle)?;
        let log = contents.join("ctr.log");
        if log.is_file() {
            fs::rename(&log, engine.paths.log(&id)).at("move", &log)?;
        }
        let snaps = contents.join("snapshots");
        if snaps.is_dir() {
            fs::rename(&snaps, bundle.join("snapshots")).at("move", &snaps)?;
        }
        let d = File::open(&engine.paths.root).at("open", &engine.paths.root)?;
        rustix::fs::syncfs(&d).at("sync", &engine.paths.root)?;
        engine.db.insert(&rec)
    });
    if let Err(e) = made {
        let _ = engine.purge(&rec);
        return Err(e);
    }
    Ok(rec)
}

/// Replaces the directory `dst` by `src` (a rename: both are under the root).
fn replace_dir(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        fs::remove_dir_all(dst).at("remove", dst)?;
    }
    match fs::rename(src, dst) {
        // Onto another file system (a disk quota's): copied, then the source removed.
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            crate::snapshots::tree::copy_tree(src, dst).map_err(|e| Error::io(e.op, e.path, e.source))?;
            fs::remove_dir_all(src).at("remove", src)
        }
        r => r.at("move into place", dst),
    }
}

/// The image the restored container stands on: the store's when it has the id, else the
/// archive's OCI layout, else a pull by manifest digest from the recorded registry.
fn image_source(
    store: &Store,
    header: &Header,
    contents: &Path,
    label: &str,
    pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
) -> Result<Source> {
    let want = &header.container.image_id;
    if want == HOST_IMAGE {
        return Ok(Source::Host);
    }
    if let Ok(rec) = vessel_image::records::find_image(store, want) {
        if rec.id.to_string() == *want {
            return Ok(Source::Image(rec));
        }
    }
    let img = header.image.as_ref().ok_or_else(|| Error::Backup {
        file: label.into(),
        reason: format!("backup.json names image {want} but not its reference: cannot find it"),
    })?;
    let rec = if header.image_included {
        let dir = contents.join("image");
        layout::import(store, &Location::OciDir(dir, None), Some(&img.reference), None)?
    } else {
        let r = Reference::parse(&img.reference)?;
        let pinned = format!("{}@{}", r.name(), img.manifest);
        pull(store, &pinned).map_err(|e| Error::Backup {
            file: label.into(),
            reason: format!(
                "its image is neither in this root nor in the backup, and pulling {pinned} failed: {e}: \
                 make the registry reachable, or make the backup with --include-image"
            ),
        })?
    };
    if rec.id.to_string() != *want {
        return Err(Error::Backup {
            file: label.into(),
            reason: format!(
                "the image found for the backup is {} where the container had {want}",
                rec.id
            ),
        });
    }
    Ok(Source::Image(rec))
}

/// Streams the archive into `contents`, checks every member against the index and
/// returns the header. `early` sees the header as soon as it is read (a taken name is
/// refused before the rest is read).
fn read_archive(
    src: &mut dyn Read,
    contents: &Path,
    label: &str,
    early: &mut dyn FnMut(&Header) -> Result<()>,
) -> Result<Header> {
    let bad = |reason: String| Error::Backup {
        file: label.into(),
        reason,
    };
    let corrupt = |e: &dyn std::fmt::Display| bad(format!("truncated or corrupt: {e}: make the backup again"));
    let dec = zstd::stream::read::Decoder::new(BufReader::with_capacity(1 << 20, src))
        .map_err(|e| corrupt(&format!("not a zstd stream ({e})")))?;
    let mut ar = tar::Archive::new(dec);
    let mut ex = extract::Extractor::new(contents);
    let mut seen: Vec<Member> = Vec::new();
    let mut index: Option<Vec<u8>> = None;
    let mut sum: Option<Vec<u8>> = None;
    let mut header: Option<Header> = None;
    for entry in ar.entries().map_err(|e| corrupt(&e))? {
        let mut e = entry.map_err(|e| corrupt(&e))?;
        let name = e.path_bytes().into_owned();
        if sum.is_some() {
            return Err(bad(format!("member {} after {INDEX_SUM}", tree::escape(&name))));
        }
        if name == INDEX.as_bytes() || name == INDEX_SUM.as_bytes() {
            if e.size() > MAX_INDEX {
                return Err(bad(format!("{INDEX} larger than {MAX_INDEX} bytes")));
            }
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(|e| corrupt(&e))?;
            if name == INDEX.as_bytes() {
                index = Some(data);
            } else if index.is_none() {
                return Err(bad(format!("{INDEX_SUM} before {INDEX}")));
            } else {
                sum = Some(data);
            }
            continue;
        }
        if index.is_some() {
            return Err(bad(format!("member {} after {INDEX}", tree::escape(&name))));
        }
        let m = ex.extract(&mut e).map_err(|e| match e {
            extract::ExtractError::Io { ref source, .. } if source.kind() != io::ErrorKind::Other => {
                if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) {
                    bad(format!("{e}: free space under the root"))
                } else {
                    corrupt(&e)
                }
            }
            e => corrupt(&e),
        })?;
        if seen.is_empty() {
            if m.path != HEADER {
                return Err(bad(format!(
                    "the first member is {}, not {HEADER}: not a vessel backup",
                    m.path
                )));
            }
            let h: Header = serde_json::from_slice(&fs::read(contents.join(HEADER)).at("read", contents.join(HEADER))?)
                .map_err(|e| bad(format!("{HEADER}: {e}")))?;
            if h.format != FORMAT || h.version != VERSION {
                return Err(bad(format!(
                    "format {} version {}: this vessel reads {FORMAT} version {VERSION}",
                    h.format, h.version
                )));
            }
            early(&h)?;
            header = Some(h);
        }
        seen.push(m);
    }
    // The rest of the zstd stream: its checksum is verified at its end.
    io::copy(&mut ar.into_inner(), &mut io::sink()).map_err(|e| corrupt(&e))?;
    ex.finish().map_err(|(p, e)| Error::io("set times of", p, e))?;
    let (Some(index), Some(sum)) = (index, sum) else {
        return Err(bad(format!(
            "truncated: {} missing (the archive ends early): make the backup again",
            if seen.is_empty() { HEADER } else { INDEX }
        )));
    };
    let digest = format!("sha256:{}", tree::hex(&Sha256::digest(&index)));
    if String::from_utf8_lossy(&sum).trim() != digest {
        return Err(bad(format!("{INDEX} does not match {INDEX_SUM} (tampered or corrupt)")));
    }
    let index: Index = serde_json::from_slice(&index).map_err(|e| bad(format!("{INDEX}: {e}")))?;
    for (i, want) in index.members.iter().enumerate() {
        let Some(got) = seen.get(i) else {
            return Err(bad(format!("member {} listed in {INDEX} is missing", want.path)));
        };
        if got.path != want.path {
            return Err(bad(format!(
                "member {} where {INDEX} lists {} (members added, removed or reordered)",
                got.path, want.path
            )));
        }
        if got.size != want.size || got.sha256 != want.sha256 {
            return Err(bad(format!(
                "member {}: digest {} ({} bytes) where {INDEX} says {} ({} bytes): the archive was altered or is corrupt",
                got.path, got.sha256, got.size, want.sha256, want.size
            )));
        }
    }
    if let Some(extra) = seen.get(index.members.len()) {
        return Err(bad(format!("member {} is not listed in {INDEX}", extra.path)));
    }
    header.ok_or_else(|| bad(format!("no {HEADER}: not a vessel backup")))
}
