//! `vessel system prune` and `vessel system reset`: removing what a root holds, by
//! docker's rules for prune (stopped containers, then dangling images, or with `all`
//! every image no container uses) and podman's for reset (everything of the root, and
//! what vessel made on the host for it: see [`crate::network::reset`]).

use std::path::{Path, PathBuf};

use crate::containers::Engine;
use crate::error::{Error, IoContext, Result};
use crate::network;

/// What [`Engine::prune_system`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The names of the removed containers.
    pub containers: Vec<String>,
    /// The removed images: their first name, or their id when they had none.
    pub images: Vec<String>,
}

impl Engine {
    /// `vessel system prune [-a]`, as docker's: removes every container that is not
    /// running, then the dangling images (no name), or with `all` every image that no
    /// remaining container uses, then the blobs and snapshots nothing references.
    ///
    /// Errors: the first failure of a removal ([`Error::Image`], [`Error::Io`], ...).
    pub fn prune_system(&self, all: bool) -> Result<Pruned> {
        let mut out = Pruned::default();
        for r in self.db.list()? {
            if !r.state.is_live() {
                self.remove(&r, false)?;
                out.containers.push(r.name);
            }
        }
        let store = self.store()?;
        let used: Vec<String> = self.db.list()?.into_iter().map(|r| r.image_id).collect();
        for img in store.images()? {
            let id = img.id.to_string();
            if used.contains(&id) || !(all || img.names.is_empty()) {
                continue;
            }
            vessel_image::records::remove_image(&store, &id)?;
            out.images.push(img.names.first().cloned().unwrap_or(id));
        }
        vessel_image::records::prune(&store)?;
        Ok(out)
    }

    /// `vessel system reset`, as podman's: removes every container (running ones are
    /// killed), every image, every network and warm attachment of the root, what the
    /// root made on the host ([`network::reset`]), then everything under the root and
    /// the run root. Returns one line per thing removed.
    ///
    /// Errors: [`Error::WrongState`] when something is still mounted under the root
    /// afterwards (nothing under it is deleted then), else the first failure.
    pub fn reset(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for r in self.db.list()? {
            self.remove(&r, true)?;
            out.push(format!("container {}", r.name));
        }
        let store = self.store()?;
        for img in store.images()? {
            let id = img.id.to_string();
            vessel_image::records::remove_image(&store, &id)?;
            out.push(format!("image {}", img.names.first().cloned().unwrap_or(id)));
        }
        vessel_image::records::prune(&store)?;
        out.extend(network::reset(&self.paths)?);
        let dirs = [self.paths.root.clone(), self.paths.runroot.clone()];
        if let Some(m) = mounted_under(&dirs) {
            return Err(Error::WrongState(format!(
                "{} is still mounted: unmount it (or run `vessel system check`) and reset again",
                m.display()
            )));
        }
        for dir in dirs {
            empty_dir(&dir)?;
        }
        Ok(out)
    }
}

/// The first mount point under one of `dirs` (/proc/self/mountinfo), if any.
fn mounted_under(dirs: &[PathBuf]) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dirs: Vec<PathBuf> = dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .find(|p| dirs.iter().any(|d| p.starts_with(d)))
}

/// Removes everything inside `dir` (missing is fine), keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).at("read", dir),
    };
    for e in entries {
        let path = e.at("read", dir)?.path();
        let res = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match res {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).at("remove", &path),
            _ => {}
        }
    }
    Ok(())
}
