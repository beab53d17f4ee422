//! OCI image layouts (image spec "Image Layout"): import from `oci:DIR[:TAG]`,
//! `oci-archive:FILE[:TAG]` and `docker-archive:FILE` (`docker save`), export to `oci:DIR[:TAG]`
//! and `oci-archive:FILE[:TAG]`. Every blob read from a layout is verified like a pulled one.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::layer::Compression;
use crate::manifest::{self, choose_platform, parse_manifestish, Manifestish, Platform};
use crate::pull::{import_manifest, NoProgress, Progress, MAX_MANIFEST_SIZE};
use crate::records::ImageRecord;
use crate::reference::Reference;
use crate::store::{tmp_name, write_atomic, Store};
use crate::unpack::{entry_components, DeviceNodes, UnpackOptions};

/// The annotation naming an image in a layout's index.json.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where an image is imported from or exported to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `oci:DIR[:TAG]`: an OCI layout directory.
    OciDir(PathBuf, Option<String>),
    /// `oci-archive:FILE[:TAG]`: a tar of an OCI layout.
    OciArchive(PathBuf, Option<String>),
    /// `docker-archive:FILE`: the output of `docker save`.
    DockerArchive(PathBuf),
}

impl Location {
    /// Parses `transport:path[:tag]`.
    ///
    /// # Errors
    /// [`ImageError::Layout`] for an unknown transport.
    pub fn parse(s: &str) -> Result<Location> {
        let bad = |reason: &str| ImageError::Layout {
            location: s.into(),
            reason: reason.into(),
        };
        let (transport, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE"))?;
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.rsplit_once(':') {
                Some((p, t)) if !t.is_empty() && !t.contains('/') => (PathBuf::from(p), Some(t.to_string())),
                _ => (PathBuf::from(rest), None),
            }
        };
        if rest.is_empty() {
            return Err(bad("empty path"));
        }
        match transport {
            "oci" => {
                let (p, t) = split(rest);
                Ok(Location::OciDir(p, t))
            }
            "oci-archive" => {
                let (p, t) = split(rest);
                Ok(Location::OciArchive(p, t))
            }
            "docker-archive" => Ok(Location::DockerArchive(PathBuf::from(rest))),
            _ => Err(bad("unknown transport (oci, oci-archive, docker-archive)")),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::OciDir(p, t) => write!(
                f,
                "oci:{}{}",
                p.display(),
                t.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
            ),
            Location::OciArchive(p, t) => write!(
                f,
                "oci-archive:{}{}",
                p.display(),
                t.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
            ),
            Location::DockerArchive(p) => write!(f, "docker-archive:{}", p.display()),
        }
    }
}

/// A temporary directory under the store, removed on drop.
struct TmpDir(PathBuf);
impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Extracts the regular files of an archive into `dir` (names checked as layer entries are;
/// symlinks recorded, not created), returning the symlinks as path → target path.
fn extract_files(archive: &Path, dir: &Path, loc: &str) -> Result<HashMap<PathBuf, PathBuf>> {
    let f = File::open(archive).ctx("open", archive)?;
    let mut a = tar::Archive::new(BufReader::new(f));
    let mut links = HashMap::new();
    let bad = |e: io::Error| ImageError::Layout {
        location: loc.into(),
        reason: format!("not a readable tar: {e}"),
    };
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let raw = e.path_bytes().into_owned();
        let comps = entry_components(&raw)?;
        if comps.is_empty() {
            continue;
        }
        let rel: PathBuf = comps.iter().map(|c| std::ffi::OsStr::from_bytes(c)).collect();
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = dir.join(&rel);
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).ctx("create", p)?;
                }
                let mut out = fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&dest)
                    .ctx("create", &dest)?;
                io::copy(&mut e, &mut out).map_err(bad)?;
            }
            tar::EntryType::Symlink => {
                if let Some(t) = e.link_name_bytes() {
                    let base = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                    links.insert(rel, base.join(std::ffi::OsStr::from_bytes(&t)));
                }
            }
            _ => {}
        }
    }
    Ok(links)
}

/// Lexically resolves `p` inside the extracted archive through the recorded symlinks.
fn resolve_in(dir: &Path, links: &HashMap<PathBuf, PathBuf>, p: &Path, loc: &str) -> Result<PathBuf> {
    let mut cur = p.to_path_buf();
    for _ in 0..8 {
        let mut norm = PathBuf::new();
        for c in cur.components() {
            match c {
                std::path::Component::Normal(n) => norm.push(n),
                std::path::Component::ParentDir if !norm.pop() => {
                    return Err(ImageError::Layout {
                        location: loc.into(),
                        reason: format!("{} leads outside the archive", p.display()),
                    });
                }
                _ => {}
            }
        }
        match links.get(&norm) {
            Some(t) => cur = t.clone(),
            None => return Ok(dir.join(norm)),
        }
    }
    Err(ImageError::Layout {
        location: loc.into(),
        reason: format!("{}: too many symlinks", p.display()),
    })
}

fn read_limited(path: &Path, loc: &str) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| ImageError::Layout {
        location: loc.into(),
        reason: format!("{}: {e}", path.display()),
    })?;
    let mut v = Vec::new();
    f.take(MAX_MANIFEST_SIZE + 1).read_to_end(&mut v).ctx("read", path)?;
    if v.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(ImageError::Layout {
            location: loc.into(),
            reason: format!("{} is larger than 8 MiB", path.display()),
        });
    }
    Ok(v)
}

/// Imports an image; `name` overrides the name taken from the source.
///
/// # Errors
/// [`ImageError::Layout`], [`ImageError::MissingBlob`], verification and unpack errors.
pub fn import(store: &Store, loc: &Location, name: Option<&str>, platform: Option<&Platform>) -> Result<ImageRecord> {
    import_with_progress(store, loc, name, platform, &NoProgress)
}

/// [`import`], telling `progress` of device nodes left out of a layer
/// ([`Progress::devices_skipped`]: rootless).
///
/// # Errors
/// As [`import`].
pub fn import_with_progress(
    store: &Store,
    loc: &Location,
    name: Option<&str>,
    platform: Option<&Platform>,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let _gc = store.gc_lock(false)?;
    store.remove_stale_tmp();
    let want = platform.cloned().unwrap_or_else(Platform::host);
    let opts = UnpackOptions {
        devices: DeviceNodes::for_this_user(),
        keep_setuid: true,
        keep_ownership: true,
    };
    let name = name.map(|n| Reference::parse(n).map(|r| r.to_string())).transpose()?;
    match loc {
        Location::OciDir(dir, tag) => import_oci_dir(
            store,
            dir,
            tag.as_deref(),
            name,
            &want,
            &opts,
            &loc.to_string(),
            progress,
        ),
        Location::OciArchive(file, tag) => {
            let tmp = TmpDir(store.root().join("content/tmp").join(tmp_name()));
            fs::create_dir_all(&tmp.0).ctx("create", &tmp.0)?;
            extract_files(file, &tmp.0, &loc.to_string())?;
            let name = name.or_else(|| default_name(file, tag.as_deref()));
            import_oci_dir(
                store,
                &tmp.0,
                tag.as_deref(),
                name,
                &want,
                &opts,
                &loc.to_string(),
                progress,
            )
        }
        Location::DockerArchive(file) => {
            import_docker_archive(store, file, name, &want, &opts, &loc.to_string(), progress)
        }
    }
}

fn default_name(path: &Path, tag: Option<&str>) -> Option<String> {
    let base = path.file_stem()?.to_str()?.to_ascii_lowercase();
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Reference::parse(&format!(
        "localhost/{}:{}",
        base.trim_matches(|c: char| !c.is_ascii_alphanumeric()),
        tag.unwrap_or("latest")
    ))
    .ok()
    .map(|r| r.to_string())
}

#[allow(clippy::too_many_arguments)]
fn import_oci_dir(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    name: Option<String>,
    want: &Platform,
    opts: &UnpackOptions,
    loc: &str,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let layout_err = |reason: String| ImageError::Layout {
        location: loc.into(),
        reason,
    };
    let index_bytes = read_limited(&dir.join("index.json"), loc)?;
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&index_bytes).map_err(|e| layout_err(format!("index.json: {e}")))?;
    let candidates: Vec<&oci_spec::image::Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match tag {
            Some(t) => d
                .annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|r| r == t || r.ends_with(&format!(":{t}"))),
            None => true,
        })
        .collect();
    let desc = match candidates.as_slice() {
        [d] => *d,
        [] => {
            return Err(layout_err(format!(
                "no image named {:?} in index.json",
                tag.unwrap_or("")
            )))
        }
        _ => return Err(layout_err("index.json lists several images: name one with :TAG".into())),
    };
    let blob = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
    let read_verified = |d: &Digest, size: u64, what: &str| -> Result<Vec<u8>> {
        let p = blob(d);
        if !p.is_file() {
            return Err(ImageError::MissingBlob {
                digest: d.clone(),
                referrer: what.into(),
                source_name: loc.into(),
            });
        }
        let data = read_limited(&p, loc)?;
        if data.len() as u64 != size {
            return Err(ImageError::SizeMismatch {
                what: what.into(),
                digest: d.clone(),
                expected: size,
                actual: data.len() as u64,
            });
        }
        let actual = Digest::of_bytes(&data);
        if &actual != d {
            return Err(ImageError::DigestMismatch {
                what: what.into(),
                expected: d.clone(),
                actual,
            });
        }
        Ok(data)
    };
    let mut digest = Digest::parse(desc.digest().as_ref())?;
    let mut bytes = read_verified(&digest, desc.size(), "manifest")?;
    if let Manifestish::Index(i) = parse_manifestish(&bytes, &digest)? {
        let (d, _, size) = choose_platform(&i, &digest, loc, want)?;
        bytes = read_verified(&d, size, "manifest")?;
        digest = d;
    }
    let Manifestish::Manifest(m) = parse_manifestish(&bytes, &digest)? else {
        return Err(layout_err(format!("{digest} is a nested index")));
    };
    let config_digest = Digest::parse(m.config().digest().as_ref())?;
    let config = read_verified(&config_digest, m.config().size(), "image config")?;
    let ref_name = desc.annotations().as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    let name = name
        .or_else(|| {
            ref_name
                .as_deref()
                .filter(|r| r.contains('/'))
                .and_then(|r| Reference::parse(r).ok())
                .map(|r| r.to_string())
        })
        .or_else(|| {
            default_name(
                &dir.canonicalize().unwrap_or(dir.to_path_buf()),
                tag.or(ref_name.as_deref()),
            )
        });
    let referrer = digest.to_string();
    import_manifest(
        store,
        bytes,
        digest,
        config,
        name.into_iter().collect(),
        want,
        opts,
        progress,
        |spec| {
            let p = blob(&spec.digest);
            let f = File::open(&p).map_err(|_| ImageError::MissingBlob {
                digest: spec.digest.clone(),
                referrer: format!("manifest {referrer}"),
                source_name: loc.into(),
            })?;
            Ok(Some(Box::new(BufReader::with_capacity(256 * 1024, f))))
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn import_docker_archive(
    store: &Store,
    file: &Path,
    name: Option<String>,
    want: &Platform,
    opts: &UnpackOptions,
    loc: &str,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let layout_err = |reason: String| ImageError::Layout {
        location: loc.into(),
        reason,
    };
    let tmp = TmpDir(store.root().join("content/tmp").join(tmp_name()));
    fs::create_dir_all(&tmp.0).ctx("create", &tmp.0)?;
    let links = extract_files(file, &tmp.0, loc)?;
    let mj: serde_json::Value = serde_json::from_slice(&read_limited(&tmp.0.join("manifest.json"), loc)?)
        .map_err(|e| layout_err(format!("manifest.json: {e}")))?;
    let first = mj
        .as_array()
        .and_then(|a| a.first())
        .ok_or_else(|| layout_err("manifest.json lists no image".into()))?;
    let config_path = first
        .get("Config")
        .and_then(|c| c.as_str())
        .ok_or_else(|| layout_err("manifest.json: no Config".into()))?;
    let config = read_limited(&resolve_in(&tmp.0, &links, Path::new(config_path), loc)?, loc)?;
    let config_digest = Digest::of_bytes(&config);
    let mut layers = Vec::new();
    let mut paths = HashMap::new();
    for l in first
        .get("Layers")
        .and_then(|l| l.as_array())
        .ok_or_else(|| layout_err("manifest.json: no Layers".into()))?
    {
        let p = resolve_in(&tmp.0, &links, Path::new(l.as_str().unwrap_or("")), loc)?;
        let mut f = File::open(&p).map_err(|e| layout_err(format!("layer {}: {e}", p.display())))?;
        let mut head = [0u8; 4];
        let n = f.read(&mut head).ctx("read", &p)?;
        let mut f = File::open(&p).ctx("open", &p)?;
        let mut h = crate::digest::HashingReader::<_, io::Sink>::new(&mut f, None);
        h.drain().ctx("read", &p)?;
        let (d, size, _, _) = h.finish();
        let mt = match Compression::sniff(&head[..n]) {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        layers.push(serde_json::json!({ "mediaType": mt, "digest": d.to_string(), "size": size }));
        paths.insert(d, p);
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": { "mediaType": manifest::OCI_CONFIG, "digest": config_digest.to_string(), "size": config.len() },
        "layers": layers,
    });
    let bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
        what: loc.into(),
        source,
    })?;
    let digest = Digest::of_bytes(&bytes);
    let names: Vec<String> = match name {
        Some(n) => vec![n],
        None => first
            .get("RepoTags")
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str())
                    .filter_map(|t| Reference::parse(t).ok())
                    .map(|r| r.to_string())
                    .collect()
            })
            .unwrap_or_default(),
    };
    import_manifest(store, bytes, digest, config, names, want, opts, progress, |spec| {
        let p = paths
            .get(&spec.digest)
            .ok_or_else(|| layout_err(format!("layer {} vanished", spec.digest)))?;
        Ok(Some(Box::new(BufReader::with_capacity(
            256 * 1024,
            File::open(p).ctx("open", p)?,
        ))))
    })
}

fn blobs_of(rec: &ImageRecord) -> Vec<Digest> {
    let mut v = vec![rec.manifest.clone(), rec.id.clone()];
    v.extend(rec.layers.iter().map(|l| l.digest.clone()));
    v
}

fn tag_for(rec: &ImageRecord, tag: Option<&str>) -> String {
    tag.map(str::to_string)
        .or_else(|| {
            rec.names
                .first()
                .and_then(|n| Reference::parse(n).ok())
                .and_then(|r| r.tag)
        })
        .unwrap_or_else(|| "latest".into())
}

fn index_entry(store: &Store, rec: &ImageRecord, tag: &str) -> Result<serde_json::Value> {
    let size = store.blob_size(&rec.manifest).ok_or_else(|| ImageError::MissingBlob {
        digest: rec.manifest.clone(),
        referrer: format!("image {}", rec.id),
        source_name: "the local store".into(),
    })?;
    Ok(serde_json::json!({
        "mediaType": rec.manifest_media_type,
        "digest": rec.manifest.to_string(),
        "size": size,
        "annotations": { REF_NAME: tag },
    }))
}

/// Exports `rec` (its platform manifest, config and layers).
///
/// # Errors
/// [`ImageError::Io`], [`ImageError::Layout`] for a docker-archive destination.
pub fn export(store: &Store, rec: &ImageRecord, loc: &Location) -> Result<()> {
    match loc {
        Location::OciDir(dir, tag) => {
            let tag = tag_for(rec, tag.as_deref());
            let bdir = dir.join("blobs/sha256");
            fs::create_dir_all(&bdir).ctx("create", &bdir)?;
            for d in blobs_of(rec) {
                let dest = bdir.join(d.hex());
                if dest.exists() {
                    continue;
                }
                let src = store.blob_path(&d);
                let tmp = bdir.join(format!(".{}.tmp", tmp_name()));
                if fs::hard_link(&src, &tmp).is_err() {
                    fs::copy(&src, &tmp).ctx("copy blob", &src)?;
                }
                fs::rename(&tmp, &dest).ctx("rename", &dest)?;
            }
            write_atomic(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
            let ipath = dir.join("index.json");
            let mut index: serde_json::Value = match fs::read(&ipath) {
                Ok(b) => serde_json::from_slice(&b).map_err(|source| ImageError::Json {
                    what: ipath.display().to_string(),
                    source,
                })?,
                Err(_) => serde_json::json!({ "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [] }),
            };
            let entry = index_entry(store, rec, &tag)?;
            if let Some(ms) = index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
                ms.retain(|m| {
                    m.pointer(&format!("/annotations/{}", REF_NAME.replace('/', "~1")))
                        .and_then(|v| v.as_str())
                        != Some(tag.as_str())
                });
                ms.push(entry);
            }
            let data = serde_json::to_vec_pretty(&index).map_err(|source| ImageError::Json {
                what: ipath.display().to_string(),
                source,
            })?;
            write_atomic(&ipath, &data)
        }
        Location::OciArchive(file, tag) => {
            let tag = tag_for(rec, tag.as_deref());
            let dir = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = dir.join(format!(".{}.tmp", tmp_name()));
            let r = (|| -> io::Result<()> {
                let out = File::create(&tmp)?;
                let mut b = tar::Builder::new(io::BufWriter::new(out));
                let mut add = |name: &str, data: &mut dyn Read, size: u64| -> io::Result<()> {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(size);
                    h.set_mode(0o644);
                    h.set_entry_type(tar::EntryType::Regular);
                    b.append_data(&mut h, name, data)
                };
                add("oci-layout", &mut &br#"{"imageLayoutVersion":"1.0.0"}"#[..], 30)?;
                let index = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": manifest::OCI_INDEX,
                    "manifests": [index_entry(store, rec, &tag).map_err(io::Error::other)?],
                });
                let ib = serde_json::to_vec(&index)?;
                add("index.json", &mut &ib[..], ib.len() as u64)?;
                for d in blobs_of(rec) {
                    let mut f = File::open(store.blob_path(&d))?;
                    let size = f.metadata()?.len();
                    add(&format!("blobs/sha256/{}", d.hex()), &mut f, size)?;
                }
                let w = b.into_inner()?;
                w.into_inner().map_err(|e| e.into_error())?.sync_all()
            })();
            match r.and_then(|_| fs::rename(&tmp, file)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    Err(ImageError::io("write archive", file, e))
                }
            }
        }
        Location::DockerArchive(_) => Err(ImageError::Layout {
            location: loc.to_string(),
            reason: "export to docker-archive is not supported; use oci-archive".into(),
        }),
    }
}
