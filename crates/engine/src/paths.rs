//! Where an engine instance keeps its state (docs/design.md "State on disk"): everything
//! under `root` (default /var/lib/vessel), and run-time state (the runtime's
//! state.json files, monitor sockets) under `runroot` (default /run/vessel; ROOT/run
//! when only `--root` is given, so tests and several instances never meet).

use std::path::{Path, PathBuf};

/// The directories of one engine instance.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Images, snapshots, bundles, records.
    pub root: PathBuf,
    /// Run-time state: lost at reboot, as /run is.
    pub runroot: PathBuf,
}

impl Paths {
    /// Paths of an instance.
    pub fn new(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>) -> Paths {
        Paths {
            root: root.into(),
            runroot: runroot.into(),
        }
    }

    /// The container's bundle: config.json, rootfs/, ctr.log.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// The container's log file (k8s-file format, see [`crate::logs`]).
    pub fn log(&self, id: &str) -> PathBuf {
        self.bundle(id).join("ctr.log")
    }

    /// The vessel-runtime state root (its `--root`).
    pub fn oci_root(&self) -> PathBuf {
        self.runroot.join("oci")
    }

    /// The monitor's directory (its attach socket).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join("monitors").join(id)
    }

    /// The root of the image store (the same as `root`).
    pub fn store_root(&self) -> &Path {
        &self.root
    }
}
