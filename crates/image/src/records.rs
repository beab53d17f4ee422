//! Image records (what `vessel images` lists), name and id look-up, removal and garbage
//! collection of unreferenced blobs and snapshots.

use std::collections::HashSet;
use std::fs;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::reference::Reference;
use crate::store::Store;

/// One layer of an image, as recorded after a pull or import.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// The (usually compressed) blob digest from the manifest.
    pub digest: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// Blob size, bytes.
    pub size: u64,
    /// sha256 of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Chain id of the stack up to and including this layer: its snapshot's name.
    pub chain_id: Digest,
}

/// A local image: names pointing at one platform manifest, its config and layers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The image id: the config blob digest (as Docker and podman show it).
    pub id: Digest,
    /// Fully qualified names (`docker.io/library/busybox:latest`); empty names a dangling image.
    pub names: Vec<String>,
    /// The platform manifest digest.
    pub manifest: Digest,
    /// The manifest's media type (OCI or Docker schema2).
    pub manifest_media_type: String,
    /// The index (manifest list) the manifest was chosen from, when there was one.
    pub index: Option<Digest>,
    /// `os/arch[/variant]` from the config.
    pub platform: String,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// Config plus layer blob sizes, bytes (what was downloaded: the compressed size).
    pub size: u64,
    /// Sum of the layers' uncompressed tar sizes, bytes (what `vessel images` shows as SIZE,
    /// as podman and docker do); 0 in records written before vessel kept it (see
    /// [`ImageRecord::unpacked_size`]).
    #[serde(default)]
    pub unpacked_size: u64,
    /// The config's `created` time (RFC 3339), when it has one.
    pub created: Option<String>,
    /// When it was pulled or imported, seconds since the Unix epoch.
    pub added: u64,
}

impl ImageRecord {
    /// The chain id of the top layer: the parent for a container snapshot (None for an image
    /// without layers).
    pub fn top_chain_id(&self) -> Option<&Digest> {
        self.layers.last().map(|l| &l.chain_id)
    }

    /// The unpacked size, bytes: the recorded one, or for an older record the sum of its
    /// layer snapshots' sizes in `store`.
    pub fn unpacked_size(&self, store: &Store) -> u64 {
        if self.unpacked_size > 0 || self.layers.is_empty() {
            return self.unpacked_size;
        }
        let snaps = store.snapshots();
        self.layers.iter().map(|l| snaps.unpacked_size(&l.chain_id)).sum()
    }

    /// The config's creation time, seconds since the Unix epoch (None when the config has
    /// none or it is not RFC 3339).
    pub fn created_secs(&self) -> Option<i64> {
        self.created.as_deref().and_then(rfc3339_secs)
    }
}

/// What [`prune`] removed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs: Vec<Digest>,
    /// Layer snapshots removed (chain ids).
    pub snapshots: Vec<Digest>,
    /// Partial files of unfinished pulls, imports and prunes removed.
    pub partials: usize,
    /// Lazy layers removed, or whose partial blob copy was dropped ([`crate::lazy::prune`]).
    pub lazy_layers: usize,
    /// Bytes freed: blobs, layer snapshots (their unpacked size) and partial files.
    pub bytes: u64,
}

fn matches_name(rec: &ImageRecord, r: &Reference) -> bool {
    if let Some(d) = &r.digest {
        let same_repo = rec
            .names
            .iter()
            .any(|n| Reference::parse(n).is_ok_and(|nr| nr.name() == r.name()));
        return (rec.manifest == *d || rec.index.as_ref() == Some(d)) && (same_repo || r.tag.is_none());
    }
    rec.names.iter().any(|n| *n == r.to_string())
}

/// Finds the image that `name` means: a name (`busybox`, `host:5000/x:tag`, `x@sha256:..`),
/// a full id (`sha256:<hex>`) or a prefix of at least 3 hex digits of the id.
///
/// # Errors
/// [`ImageError::ImageNotFound`], [`ImageError::AmbiguousImage`], or store read errors.
pub fn find_image(store: &Store, name: &str) -> Result<ImageRecord> {
    find_in(&store.images()?, name).cloned()
}

fn find_in<'a>(images: &'a [ImageRecord], name: &str) -> Result<&'a ImageRecord> {
    if let Ok(r) = Reference::parse(name) {
        if let Some(rec) = images.iter().find(|rec| matches_name(rec, &r)) {
            return Ok(rec);
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 3 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hex = hex.to_ascii_lowercase();
        let found: Vec<&ImageRecord> = images
            .iter()
            .filter(|rec| rec.id.hex().starts_with(&hex) || rec.manifest.hex().starts_with(&hex))
            .collect();
        match found.len() {
            0 => {}
            1 => return Ok(found[0]),
            _ => {
                // Several names of one id are one image.
                if found.iter().all(|f| f.id == found[0].id) {
                    return Ok(found[0]);
                }
                return Err(ImageError::AmbiguousImage {
                    name: name.into(),
                    candidates: found
                        .iter()
                        .map(|f| f.id.short().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
    }
    Err(ImageError::ImageNotFound { name: name.into() })
}

/// Adds `rec` to the records: an existing record of the same manifest gains its names, and
/// those names are taken away from any other record (a re-pulled tag moves to the new image).
///
/// # Errors
/// Store write errors.
pub fn add_image(store: &Store, rec: ImageRecord) -> Result<ImageRecord> {
    store.update_images(|images| {
        for other in images.iter_mut() {
            if other.manifest != rec.manifest {
                other.names.retain(|n| !rec.names.contains(n));
            }
        }
        if let Some(existing) = images.iter_mut().find(|i| i.manifest == rec.manifest) {
            for n in &rec.names {
                if !existing.names.contains(n) {
                    existing.names.push(n.clone());
                }
            }
            if existing.index.is_none() {
                existing.index = rec.index.clone();
            }
            return Ok(existing.clone());
        }
        images.push(rec.clone());
        Ok(rec)
    })
}

/// Removes what `name` means: given a name, only that name goes (the record goes with its last
/// name); given an id, the whole record goes. Blobs and snapshots are freed by [`prune`].
///
/// # Errors
/// [`ImageError::ImageNotFound`], [`ImageError::AmbiguousImage`], store errors.
pub fn remove_image(store: &Store, name: &str) -> Result<ImageRecord> {
    store.update_images(|images| {
        let rec = find_in(images, name)?.clone();
        let by_name = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none() && rec.names.contains(&r.to_string()));
        match by_name {
            Some(r) => {
                let full = r.to_string();
                if let Some(i) = images.iter_mut().find(|i| i.manifest == rec.manifest) {
                    i.names.retain(|n| *n != full);
                }
                images.retain(|i| i.manifest != rec.manifest || !i.names.is_empty());
            }
            None => images.retain(|i| i.manifest != rec.manifest),
        }
        Ok(rec)
    })
}

/// Removes every blob and layer snapshot that no image record, and no active or committed
/// container snapshot, references; and the partial files of unfinished pulls, imports and
/// prunes ([`Store::remove_partials`]). Takes the
/// exclusive garbage-collection lock, so it waits for running pulls.
///
/// # Errors
/// Store read errors, [`ImageError::Io`] when removal fails.
pub fn prune(store: &Store) -> Result<PruneReport> {
    let _gc = store.gc_lock(true)?;
    let images = store.images()?;
    let mut blobs: HashSet<Digest> = HashSet::new();
    let mut snaps: HashSet<Digest> = HashSet::new();
    for rec in &images {
        blobs.insert(rec.id.clone());
        blobs.insert(rec.manifest.clone());
        if let Some(i) = &rec.index {
            blobs.insert(i.clone());
        }
        for l in &rec.layers {
            blobs.insert(l.digest.clone());
            snaps.insert(l.chain_id.clone());
        }
    }
    let snapshotter = store.snapshots();
    snaps.extend(snapshotter.referenced_by_containers()?);
    let mut report = PruneReport::default();
    let blob_dir = store.root().join("content/blobs/sha256");
    for entry in fs::read_dir(&blob_dir).map_err(|e| ImageError::io("list", &blob_dir, e))? {
        let entry = entry.map_err(|e| ImageError::io("list", &blob_dir, e))?;
        let name = entry.file_name();
        let Some(d) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else {
            continue;
        };
        if !blobs.contains(&d) {
            report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            store.remove_blob(&d)?;
            report.blobs.push(d);
        }
    }
    for id in snapshotter.layer_snapshots()? {
        if !snaps.contains(&id) {
            report.bytes += snapshotter.unpacked_size(&id);
            snapshotter.remove_committed(&id)?;
            report.snapshots.push(id);
        }
    }
    let (lazy_layers, lazy_bytes) = crate::lazy::prune(store, &snaps, crate::lazy::cache_limit());
    report.lazy_layers = lazy_layers;
    report.bytes += lazy_bytes;
    let partials = store.remove_partials()?;
    report.partials = partials.count();
    report.bytes += partials.bytes;
    Ok(report)
}

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-05-01T12:00:00.5Z`,
/// `...+02:00`); fractions are dropped. None when it is not one.
pub fn rfc3339_secs(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let oh = o.get(1..3)?.parse::<i64>().ok()?;
            let om = o.get(4..6)?.parse::<i64>().ok()?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_secs;

    #[test]
    fn rfc3339_times_of_image_configs() {
        assert_eq!(rfc3339_secs("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_secs("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(rfc3339_secs("2024-05-01T12:00:00.123456789+02:00"), Some(1_714_557_600));
        assert_eq!(rfc3339_secs("1969-12-31T23:59:59Z"), Some(-1));
        for bad in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-05-01T12:00:00.Z",
        ] {
            assert_eq!(rfc3339_secs(bad), None, "{bad}");
        }
    }
}
