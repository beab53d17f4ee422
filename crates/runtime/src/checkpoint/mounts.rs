//! Mounts of a container that CRIU cannot dump as its own: bind mounts of a part of a
//! file system whose root the container does not see (criu's mount.c refuses them:
//! "doesn't have a proper root mount"). A container in its own user namespace has
//! them: it cannot make device nodes, so the runtime binds the host's /dev/null,
//! /dev/zero... (devtmpfs `/null`) onto its /dev and onto its masked files. runc does
//! the same and hands CRIU those mounts as external (its `addMaskPaths` and device
//! mounts); here every such mount is found in the init's mount table, named external
//! at dump (`--external mnt[PATH]:PATH`), and its host source is written to
//! [`EXTERNAL_MOUNTS`] in the image dir, from which restore maps it back
//! (`--ext-mount-map PATH:SOURCE`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::error::{Context, Error, Result};
use crate::rootfs::unescape_mountinfo;

/// The file in the image dir that maps each such mount's path in the container to its
/// source on the host: a JSON object `{"/dev/null": "/dev/null", ...}`.
pub const EXTERNAL_MOUNTS: &str = "external-mounts.json";

/// The source [`EXTERNAL_MOUNTS`] names for /dev/console when it was a bind of the
/// container's terminal: restore binds the new pty's slave there.
pub const NEW_CONSOLE: &str = "@console";

/// One line of a mountinfo file (proc(5)): the fields used here.
struct Line {
    /// `MAJOR:MINOR` of the file system.
    dev: String,
    /// The mount's root within its file system.
    root: String,
    /// Where it is mounted.
    mount_point: String,
}

fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some(Line {
                dev: f.get(2)?.to_string(),
                root: unescape_mountinfo(f.get(3)?),
                mount_point: unescape_mountinfo(f.get(4)?),
            })
        })
        .collect()
}

/// The mounts of process `pid`'s mount namespace that CRIU cannot dump (a subtree of a
/// file system none of whose mounts there shows its root), leaving out `known` (mount
/// points already named external), each with its source on this host as seen in our
/// own mount table: (path in the container, host path).
///
/// Errors: [`Error::Sys`] when a mount table cannot be read; [`Error::Invalid`] for such
/// a mount whose file system this host does not show (nothing to map it back to).
pub fn foreign_binds(pid: i32, known: &[String]) -> Result<Vec<(String, String)>> {
    let path = format!("/proc/{pid}/mountinfo");
    let inside = parse(&fs::read_to_string(&path).ctx(|| format!("read {path}"))?);
    let ours = parse(&fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?);
    let rooted: BTreeSet<&str> = inside
        .iter()
        .filter(|m| m.root == "/")
        .map(|m| m.dev.as_str())
        .collect();
    let mut out = Vec::new();
    for m in inside.iter().skip(1) {
        if m.root == "/" || rooted.contains(m.dev.as_str()) || known.contains(&m.mount_point) {
            continue;
        }
        // The host mount of the same file system whose root holds this one's root,
        // the closest first.
        let host = ours
            .iter()
            .filter(|h| h.dev == m.dev)
            .filter_map(|h| {
                let rest = Path::new(&m.root).strip_prefix(&h.root).ok()?;
                Some((h.root.len(), Path::new(&h.mount_point).join(rest)))
            })
            .max_by_key(|(n, _)| *n)
            .map(|(_, p)| p.to_string_lossy().into_owned());
        match host {
            Some(h) => out.push((m.mount_point.clone(), h)),
            None => {
                return Err(Error::Invalid(format!(
                    "cannot checkpoint: the container's mount {} (root {} of file system {}) is not visible on this host, so CRIU could not restore it",
                    m.mount_point, m.root, m.dev
                )))
            }
        }
    }
    Ok(out)
}

/// Writes [`EXTERNAL_MOUNTS`] into the image dir `images`.
///
/// Errors: [`Error::Sys`] when it cannot be written.
pub fn save(images: &Path, binds: &[(String, String)]) -> Result<()> {
    let map: BTreeMap<&str, &str> = binds.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = images.join(EXTERNAL_MOUNTS);
    let text = serde_json::to_vec_pretty(&map).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
    fs::write(&p, text).ctx(|| format!("write {}", p.display()))
}

/// Reads [`EXTERNAL_MOUNTS`] of the image dir `images` (empty when the dump had none).
///
/// Errors: [`Error::Config`] for a file that is not such a map.
pub fn load(images: &Path) -> Result<Vec<(String, String)>> {
    let p = images.join(EXTERNAL_MOUNTS);
    let Ok(text) = fs::read(&p) else {
        return Ok(vec![]);
    };
    let map: BTreeMap<String, String> = serde_json::from_slice(&text).map_err(|e| Error::Config {
        path: p.clone(),
        msg: format!("{e}: not a map of external mounts"),
    })?;
    Ok(map.into_iter().collect())
}
