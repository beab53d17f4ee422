//! The cgroup of a rootless container where the host delegates none to the caller
//! (runc's rootless mode, crun's "cgroup manager disabled"): the container runs in the
//! caller's cgroup, without limits. Device rules are left to the user namespace (a
//! rootless container cannot create device nodes anyway); any other limit is refused,
//! since it could not be enforced.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use super::{CgroupManager, Entry, OomWatcher, Stats};
use crate::error::{Error, Result};

/// A cgroup manager that places nothing and limits nothing.
#[derive(Debug)]
pub struct Disabled {
    path: std::path::PathBuf,
}

impl Disabled {
    /// The manager standing for the cgroup `path` that could not be made.
    pub fn new(path: &Path) -> Disabled {
        Disabled {
            path: path.to_path_buf(),
        }
    }

    fn unavailable(&self, what: &str) -> Error {
        Error::Invalid(format!(
            "{what}: the container has no cgroup ({} could not be made: the caller is not root and no cgroup v2 \
             subtree is delegated to it)",
            self.path.display()
        ))
    }
}

/// True when `r` asks for a limit a cgroup would enforce (memory, cpu, pids, block
/// I/O, huge pages, network classes, RDMA or unified keys); device rules do not count.
pub fn has_limits(r: &LinuxResources) -> bool {
    r.memory().as_ref().is_some_and(|m| {
        m.limit().is_some()
            || m.reservation().is_some()
            || m.swap().is_some()
            || m.kernel().is_some()
            || m.kernel_tcp().is_some()
            || m.swappiness().is_some()
    }) || r.cpu().as_ref().is_some_and(|c| {
        c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.realtime_runtime().is_some()
            || c.realtime_period().is_some()
            || c.cpus().as_deref().is_some_and(|s| !s.is_empty())
            || c.mems().as_deref().is_some_and(|s| !s.is_empty())
            || c.idle().is_some()
    }) || r.pids().as_ref().is_some_and(|p| p.limit() > 0)
        || r.block_io().as_ref().is_some_and(|b| {
            b.weight().is_some()
                || b.leaf_weight().is_some()
                || b.weight_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_read_bps_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_write_bps_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_read_iops_device().as_ref().is_some_and(|v| !v.is_empty())
                || b.throttle_write_iops_device().as_ref().is_some_and(|v| !v.is_empty())
        })
        || r.hugepage_limits().as_ref().is_some_and(|v| !v.is_empty())
        || r.network().is_some()
        || r.rdma().as_ref().is_some_and(|v| !v.is_empty())
        || r.unified().as_ref().is_some_and(|v| !v.is_empty())
}

impl CgroupManager for Disabled {
    fn apply(&self, _pid: i32) -> Result<()> {
        Ok(())
    }

    fn entry(&self, _create: bool) -> Result<Entry> {
        Ok(Entry {
            tasks: Vec::new(),
            cgroup2: None,
        })
    }

    fn pids(&self) -> Result<Vec<i32>> {
        Ok(Vec::new())
    }

    fn freeze(&self, _frozen: bool) -> Result<()> {
        Err(self.unavailable("pause/resume"))
    }

    fn remove(&self) -> Result<()> {
        Ok(())
    }

    fn set(&self, r: &LinuxResources) -> Result<()> {
        if has_limits(r) {
            return Err(self.unavailable("linux.resources"));
        }
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        Err(self.unavailable("stats"))
    }

    fn oom_watcher(&self) -> Result<OomWatcher> {
        Err(self.unavailable("OOM events"))
    }
}
