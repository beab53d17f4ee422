//! Layers from a container's writable upper dir (`vessel commit`) and the list of its changes
//! (`vessel diff`).
//!
//! The upper of an overlay mount holds what the container changed: new and modified files
//! (copied up whole), whiteouts (character devices 0:0) for deleted entries, and directories
//! marked `trusted.overlay.opaque=y` whose lower content is hidden. A layer turns these into
//! the OCI image spec's form (image-spec `layer.md`, "Whiteouts"): `.wh.NAME` for a deleted
//! entry and `.wh..wh..opq` inside an opaque directory. The tar is deterministic (entries in
//! byte order of their names, numeric owners, no user or group names, gzip header without
//! time or name), long names and xattrs go in PAX headers, and files linked more than once in
//! the upper become hardlink entries to the first name. The blob goes through the content
//! store ([`Store::blob_writer`]), the only writer of blobs.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::store::Store;

mod tar_writer;
use tar_writer::{Hashing, TarWriter};

/// The media type of the layers vessel writes: OCI, gzip.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The xattr overlayfs sets on an opaque directory.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A layer made from an upper dir and stored as a blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLayer {
    /// The gzip blob's digest (the manifest's layer descriptor).
    pub digest: Digest,
    /// The blob's size, bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the uncompressed tar, bytes.
    pub tar_size: u64,
    /// [`LAYER_MEDIA_TYPE`].
    pub media_type: &'static str,
}

/// What happened to a path, in `docker diff`'s letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// `A`: the path is not in the image's layers.
    Added,
    /// `C`: the path is in the layers and was changed (or is a directory with changes below).
    Changed,
    /// `D`: the path was deleted.
    Deleted,
}

impl ChangeKind {
    /// `A`, `C` or `D`.
    pub fn letter(self) -> char {
        match self {
            ChangeKind::Added => 'A',
            ChangeKind::Changed => 'C',
            ChangeKind::Deleted => 'D',
        }
    }
}

/// One line of `vessel diff`: a kind and an absolute path inside the container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Change {
    /// The absolute path (`/etc/motd`).
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// What one entry of the upper dir is.
enum Kind {
    /// A 0:0 character device: the lower entry of that name is deleted.
    Whiteout,
    /// A directory; `opaque` when the lower content is hidden.
    Dir { opaque: bool },
    /// Anything else (file, symlink, device, fifo, socket).
    Other,
}

fn kind(meta: &fs::Metadata, path: &Path) -> Kind {
    let ft = meta.file_type();
    if ft.is_char_device() && meta.rdev() == 0 {
        Kind::Whiteout
    } else if ft.is_dir() {
        Kind::Dir {
            opaque: opaque_value(path),
        }
    } else {
        Kind::Other
    }
}

fn opaque_value(path: &Path) -> bool {
    let mut v = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OPAQUE_XATTR, &mut v[..]), Ok(1) if v[0] == b'y')
}

/// The names in `dir`, sorted bytewise (a deterministic order).
fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .ctx("list", dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .ctx("list", dir)?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Whether `rel` exists in any of `lowers` (not following a final symlink).
fn in_lowers(lowers: &[PathBuf], rel: &Path) -> bool {
    lowers.iter().any(|l| fs::symlink_metadata(l.join(rel)).is_ok())
}

/// The changes of upper dir `upper` over `lowers` (topmost first), sorted by path: `D` for
/// whiteouts, `A` for entries no lower has, `C` for the others (a directory copied up because
/// something below it changed is `C`, as docker shows it). Inside an opaque directory that a
/// lower has, the lower entries not in the upper are `D`. Paths in `skip` (relative, see
/// [`placeholders`]) are left out.
///
/// # Errors
/// [`crate::ImageError::Io`] when the upper dir cannot be read.
pub fn changes(upper: &Path, lowers: &[PathBuf], skip: &HashSet<PathBuf>) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_changes(upper, Path::new(""), lowers, skip, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk_changes(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    skip: &HashSet<PathBuf>,
    out: &mut Vec<Change>,
) -> Result<()> {
    let dir = upper.join(rel);
    let names = sorted_names(&dir)?;
    for name in &names {
        let r = rel.join(name);
        if skip.contains(&r) {
            continue;
        }
        let p = upper.join(&r);
        let meta = fs::symlink_metadata(&p).ctx("stat", &p)?;
        let path = format!("/{}", r.display());
        match kind(&meta, &p) {
            Kind::Whiteout => out.push(Change {
                path,
                kind: ChangeKind::Deleted,
            }),
            k => {
                let existed = in_lowers(lowers, &r);
                out.push(Change {
                    path: path.clone(),
                    kind: if existed {
                        ChangeKind::Changed
                    } else {
                        ChangeKind::Added
                    },
                });
                if let Kind::Dir { opaque } = k {
                    if opaque && existed {
                        for l in lowers {
                            let Ok(rd) = fs::read_dir(l.join(&r)) else { continue };
                            for e in rd.flatten() {
                                let n = e.file_name();
                                if !names_contains(&p, &n) {
                                    out.push(Change {
                                        path: format!("{path}/{}", Path::new(&n).display()),
                                        kind: ChangeKind::Deleted,
                                    });
                                }
                            }
                        }
                    }
                    walk_changes(upper, &r, lowers, skip, out)?;
                }
            }
        }
    }
    out.dedup();
    Ok(())
}

fn names_contains(dir: &Path, name: &std::ffi::OsStr) -> bool {
    fs::symlink_metadata(dir.join(name)).is_ok()
}

/// The entries of `upper` that only the runtime made: for each mount point in `mount_points`
/// (absolute paths inside the container: config.json's mount destinations), the upper's
/// entry when no lower has it and it is an empty file or an empty directory (what the
/// runtime creates to mount on), and then each parent directory whose every entry is such a
/// placeholder and which is new or a copy-up with the lower's mode and owners. Returned relative to the root, for [`changes`] and
/// [`write_layer`] to leave out, as docker's init layer keeps `/etc/hosts`, `/proc`, ...
/// out of `docker diff` and `docker commit`. With `owners` (a container in its own user
/// namespace) the upper's owners are compared as the container sees them.
pub fn placeholders(
    upper: &Path,
    lowers: &[PathBuf],
    mount_points: &[PathBuf],
    owners: Option<&OwnerMap>,
) -> HashSet<PathBuf> {
    let mut skip = HashSet::new();
    for m in mount_points {
        let rel = m.strip_prefix("/").unwrap_or(m);
        if rel.as_os_str().is_empty() || in_lowers(lowers, rel) {
            continue;
        }
        let p = upper.join(rel);
        let Ok(meta) = fs::symlink_metadata(&p) else { continue };
        let empty = if meta.is_dir() {
            fs::read_dir(&p).map(|mut d| d.next().is_none()).unwrap_or(false)
        } else {
            meta.is_file() && meta.len() == 0
        };
        if empty {
            skip.insert(rel.to_path_buf());
        }
    }
    // Parents made only to hold placeholders, deepest first.
    let mut parents: Vec<PathBuf> = skip
        .iter()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf).collect::<Vec<_>>())
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    parents.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    parents.dedup();
    for d in parents {
        if skip.contains(&d) || !copied_up_unchanged(upper, lowers, &d, owners) {
            continue;
        }
        let all_skipped = fs::read_dir(upper.join(&d))
            .map(|rd| rd.flatten().all(|e| skip.contains(&d.join(e.file_name()))))
            .unwrap_or(false);
        if all_skipped {
            skip.insert(d);
        }
    }
    skip
}

/// Whether directory `rel` of the upper is new (no lower has it), or a copy-up of the
/// topmost lower's with the same mode and owners (copied up only to hold a mount point).
fn copied_up_unchanged(upper: &Path, lowers: &[PathBuf], rel: &Path, owners: Option<&OwnerMap>) -> bool {
    let Ok(u) = fs::symlink_metadata(upper.join(rel)) else {
        return false;
    };
    match lowers.iter().find_map(|l| fs::symlink_metadata(l.join(rel)).ok()) {
        None => u.is_dir(),
        Some(l) => {
            u.is_dir()
                && l.is_dir()
                && u.mode() == l.mode()
                && owners.map_or(u.uid(), |o| o.uid_of(u.uid())) == l.uid()
                && owners.map_or(u.gid(), |o| o.gid_of(u.gid())) == l.gid()
                && !opaque_value(&upper.join(rel))
        }
    }
}

/// The id maps of a container in its own user namespace, so that a layer made from its
/// upper dir (host ids of its range) carries the ids the container sees: lines
/// `(container, host, size)` as in `/proc/PID/uid_map`. Host ids outside every line become
/// 65534 (the kernel's overflow id, "nobody").
#[derive(Debug, Clone, Default)]
pub struct OwnerMap {
    /// Uid map lines.
    pub uid: Vec<(u32, u32, u32)>,
    /// Gid map lines.
    pub gid: Vec<(u32, u32, u32)>,
}

impl OwnerMap {
    fn map(lines: &[(u32, u32, u32)], host: u32) -> u32 {
        lines
            .iter()
            .find(|(_, h, n)| host >= *h && u64::from(host) < u64::from(*h) + u64::from(*n))
            .map_or(65534, |(c, h, _)| c + (host - h))
    }

    /// The container uid of host uid `host`.
    pub fn uid_of(&self, host: u32) -> u32 {
        OwnerMap::map(&self.uid, host)
    }

    /// The container gid of host gid `host`.
    pub fn gid_of(&self, host: u32) -> u32 {
        OwnerMap::map(&self.gid, host)
    }
}

/// Makes a gzip layer blob of upper dir `upper` in `store` (see the module's doc) and returns
/// its digests, leaving out the paths in `skip` (relative, see [`placeholders`]). Nothing is
/// kept when it fails. With `owners`, file owners are written as the container sees them.
///
/// # Errors
/// [`crate::ImageError::Io`] when the upper dir cannot be read or the blob written.
pub fn write_layer(
    store: &Store,
    upper: &Path,
    skip: &HashSet<PathBuf>,
    owners: Option<&OwnerMap>,
) -> Result<NewLayer> {
    let blob = store.blob_writer()?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(blob, flate2::Compression::default());
    let mut tar = TarWriter {
        out: Hashing {
            inner: gz,
            hasher: Sha256::new(),
            count: 0,
        },
        links: HashMap::new(),
        skip,
        owners,
    };
    tar.dir(upper, Path::new(""))?;
    // The end of the archive: two zero blocks.
    tar.out.write_all(&[0u8; 1024]).ctx("write layer", upper)?;
    let Hashing {
        inner: gz,
        hasher,
        count: tar_size,
    } = tar.out;
    let diff_id = Digest::from_hasher(hasher);
    let blob = gz.finish().ctx("compress layer", upper)?;
    let (digest, size) = blob.commit_computed("layer blob")?;
    Ok(NewLayer {
        digest,
        size,
        diff_id,
        tar_size,
        media_type: LAYER_MEDIA_TYPE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn entries(store: &Store, layer: &NewLayer) -> Vec<(String, tar::EntryType, Vec<u8>)> {
        let f = store.open_blob(&layer.digest).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let t = e.header().entry_type();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.push((name, t, data));
        }
        out
    }

    #[test]
    fn whiteouts_opaque_dirs_long_names_and_hardlinks() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("root")).unwrap();
        let upper = t.path().join("upper");
        let lower = t.path().join("lower");
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("opq")).unwrap();
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("opq")).unwrap();
        fs::write(lower.join("etc/gone"), "x").unwrap();
        fs::write(lower.join("opq/old"), "x").unwrap();
        fs::write(upper.join("etc/new"), "new\n").unwrap();
        fs::hard_link(upper.join("etc/new"), upper.join("etc/new2")).unwrap();
        let long = "l".repeat(150);
        fs::write(upper.join(&long), "long").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("etc/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        rustix::fs::setxattr(upper.join("opq"), OPAQUE_XATTR, b"y", rustix::fs::XattrFlags::empty()).unwrap();
        let none = HashSet::new();
        let layer = write_layer(&store, &upper, &none, None).unwrap();
        let again = write_layer(&store, &upper, &none, None).unwrap();
        assert_eq!(layer, again, "the same upper makes the same blob");
        let names: Vec<(String, tar::EntryType)> =
            entries(&store, &layer).into_iter().map(|(n, t, _)| (n, t)).collect();
        assert!(
            names.contains(&("etc/.wh.gone".into(), tar::EntryType::Regular)),
            "{names:?}"
        );
        assert!(
            names.contains(&("opq/.wh..wh..opq".into(), tar::EntryType::Regular)),
            "{names:?}"
        );
        assert!(names.contains(&("etc/new2".into(), tar::EntryType::Link)), "{names:?}");
        assert!(names.contains(&(long.clone(), tar::EntryType::Regular)), "{names:?}");
        let changes = changes(&upper, std::slice::from_ref(&lower), &none).unwrap();
        let lines: Vec<String> = changes
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect();
        assert_eq!(
            lines,
            [
                "C /etc".to_string(),
                "D /etc/gone".into(),
                "A /etc/new".into(),
                "A /etc/new2".into(),
                format!("A /{long}"),
                "C /opq".into(),
                "D /opq/old".into(),
            ]
        );
    }

    #[test]
    fn runtime_mount_points_are_placeholders() {
        let t = tempfile::tempdir().unwrap();
        let (upper, lower) = (t.path().join("upper"), t.path().join("lower"));
        for d in ["proc", "etc", "new/deep/m", "tmp"] {
            fs::create_dir_all(upper.join(d)).unwrap();
        }
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("tmp")).unwrap();
        fs::write(upper.join("etc/hosts"), "").unwrap();
        fs::write(upper.join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        let mounts: Vec<PathBuf> = ["/proc", "/etc/hosts", "/etc/resolv.conf", "/new/deep/m", "/tmp"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let skip = placeholders(&upper, std::slice::from_ref(&lower), &mounts, None);
        let mut got: Vec<String> = skip.iter().map(|p| p.display().to_string()).collect();
        got.sort();
        assert_eq!(got, ["etc/hosts", "new", "new/deep", "new/deep/m", "proc"]);
        let lines: Vec<String> = changes(&upper, std::slice::from_ref(&lower), &skip)
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c.kind.letter(), c.path))
            .collect();
        assert_eq!(lines, ["C /etc", "A /etc/resolv.conf", "C /tmp"]);
        // A lower dir copied up only for a placeholder is one too.
        fs::remove_file(upper.join("etc/resolv.conf")).unwrap();
        let skip2 = placeholders(&upper, std::slice::from_ref(&lower), &mounts, None);
        assert!(skip2.contains(Path::new("etc")), "{skip2:?}");
    }
}
