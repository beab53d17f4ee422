//! Backup and recovery of one container (Incus's export/import, named `vessel backup` so
//! that docker's `export`/`import` keep their meaning): one zstd-compressed tar holding the
//! container's record, its writable layer, and optionally its snapshots and its image, with
//! a manifest of every member's digest (docs/design.md "Backup format").
//!
//! Members, in order: `backup.json` ([`Header`]); `layer/upper` (the active snapshot's
//! upper dir) and, for the `host` image, `layer/host-etc` (its private /etc upper); `ctr.log`;
//! `snapshots/<S>` (each snapshot dir, with `--include-snapshots`); `image/` (an OCI layout
//! of the image, with `--include-image`); then `index.json` ([`Index`]: every member above
//! with its size and digest) and `index.json.sha256` (the digest of index.json). A restore
//! streams the members into a temp dir inside the root, checks every digest against the
//! index and only then moves the files into place and writes the record, last.

mod create;
mod extract;
mod restore;
mod tree;
mod writer;

pub(crate) use writer::TreeWriter;

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::db::Record;
use crate::error::{IoContext, Result};
use crate::paths::Paths;

pub use create::create;
pub use restore::restore;
pub use tree::Member;

/// The `format` of every backup.
pub const FORMAT: &str = "vessel-backup";
/// The format version this vessel writes and reads.
pub const VERSION: u32 = 1;

const HEADER: &str = "backup.json";
const INDEX: &str = "index.json";
const INDEX_SUM: &str = "index.json.sha256";
/// Under the root: temp dirs of restores and markers of backups being written.
const TMP_DIR: &str = "backups-tmp";
/// Largest index.json read, bytes.
const MAX_INDEX: u64 = 1 << 30;

/// What the image of a backed-up container was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference the container was made from, fully qualified (`127.0.0.1:5000/bb:1`).
    pub reference: String,
    /// The image id (config digest, `sha256:...`).
    pub id: String,
    /// The platform manifest digest: what a restore pulls by when the image is missing.
    pub manifest: String,
}

/// `backup.json`: the first member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// When the backup was made (RFC 3339).
    pub created: String,
    /// The container's record as it was (name, image, options, command, last exit).
    pub container: Record,
    /// Its image (None for the `host` image).
    pub image: Option<ImageRef>,
    /// Whether `layer/host-etc` is in the archive.
    pub host_etc: bool,
    /// The snapshots in the archive (`snapshots/<S>`).
    pub snapshots: Vec<String>,
    /// Whether `image/` (an OCI layout of the image) is in the archive.
    pub image_included: bool,
}

/// `index.json`: the manifest of every member before it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// Every member, in archive order.
    pub members: Vec<Member>,
}

/// What `vessel backup create` adds besides the writable layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// `--include-snapshots`: every snapshot dir of the container.
    pub include_snapshots: bool,
    /// `--include-image`: the image's manifest, config and layers (an OCI layout).
    pub include_image: bool,
}

/// What a backup or restore moved.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Members in the archive.
    pub members: usize,
    /// Bytes of member data (uncompressed).
    pub bytes: u64,
}

/// A tag for temp names: this process's pid and start time, and a counter, so that
/// `vessel system check` can tell a live owner from a dead one.
pub(crate) fn owner_tag() -> String {
    let pid = std::process::id() as i32;
    let start = vessel_runtime::state::process_start_time(pid)
        .map(|(t, _)| t)
        .unwrap_or(0);
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{pid}-{start}-{n}{nanos}")
}

/// Whether the process named by an [`owner_tag`] (`PID-START-...`) still runs.
fn owner_alive(tag: &str) -> bool {
    let mut it = tag.splitn(3, '-');
    let (Some(pid), Some(start)) = (it.next(), it.next()) else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<i32>(), start.parse::<u64>()) else {
        return false;
    };
    vessel_runtime::state::process_start_time(pid).is_some_and(|(t, zombie)| t == start && !zombie)
}

/// A temp dir removed on drop.
struct TmpDir(PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tmp_root(paths: &Paths) -> PathBuf {
    paths.root.join(TMP_DIR)
}

/// What killed backups and restores left under the root (`ROOT/backups-tmp`): restore
/// temp dirs and the `FILE.tmp-*` of unfinished backups, when the process that made
/// them is gone. With `repair` they are removed. One line per finding.
///
/// # Errors
/// [`Error::Io`] when a leftover cannot be removed.
pub fn check(paths: &Paths, repair: bool) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for e in fs::read_dir(tmp_root(paths)).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some((kind, tag)) = n.split_once('-') else { continue };
        if owner_alive(tag) {
            continue;
        }
        let p = e.path();
        match kind {
            "create" => {
                let out = PathBuf::from(fs::read_to_string(&p).unwrap_or_default());
                let ours = out.file_name().is_some_and(|f| f.to_string_lossy().contains(".tmp-"));
                if ours && out.exists() {
                    found.push(format!(
                        "backups: partial archive {} of a killed `backup create`",
                        out.display()
                    ));
                    if repair {
                        fs::remove_file(&out).at("remove", &out)?;
                    }
                }
                if repair {
                    fs::remove_file(&p).at("remove", &p)?;
                }
            }
            _ => {
                found.push(format!("backups: temp dir {} of a killed `backup {kind}`", p.display()));
                if repair {
                    fs::remove_dir_all(&p).at("remove", &p)?;
                }
            }
        }
    }
    Ok(found)
}
