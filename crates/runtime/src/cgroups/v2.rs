//! Unified cgroup v2: one directory under /sys/fs/cgroup per container.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{read_pids, rmdir, write, CgroupManager};
use crate::error::{Context, Result};

/// A container cgroup on a unified v2 host.
pub struct Manager {
    dir: PathBuf,
}

impl Manager {
    /// The cgroup at `path` below the v2 mount `root`.
    pub fn new(root: &Path, path: &Path) -> Manager {
        Manager { dir: root.join(path.strip_prefix("/").unwrap_or(path)) }
    }
}

impl CgroupManager for Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        fs::create_dir_all(&self.dir).ctx(|| format!("create cgroup {}", self.dir.display()))?;
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..1000 {
            let events = fs::read_to_string(self.dir.join("cgroup.events")).ctx(|| format!("read {}/cgroup.events", self.dir.display()))?;
            if events.lines().any(|l| l == want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(crate::Error::Invalid(format!("cgroup {} did not reach {want}", self.dir.display())))
    }

    fn remove(&self) -> Result<()> {
        rmdir(&self.dir)
    }
}
