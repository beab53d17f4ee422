//! cgroup v1 (and hybrid hosts): the container gets the same path in every mounted v1
//! hierarchy, and in the cgroup2 at /sys/fs/cgroup/unified when the host is hybrid
//! (as runc does), found from /proc/self/mountinfo.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::stats::{self, Stats, V1Dirs};
use super::{read_pids, resources_v1, rmdir, write, CgroupManager, Entry, OomWatcher};
use crate::error::{Context, Error, Result};

/// A container cgroup across the v1 hierarchies.
pub struct Manager {
    /// (hierarchy mount point, controllers it carries) for each v1 hierarchy.
    mounts: Vec<(PathBuf, String)>,
    path: PathBuf,
}

impl Manager {
    /// Finds the v1 hierarchies (and the unified one on hybrid hosts).
    pub fn new(path: &Path, hybrid: bool) -> Manager {
        let mut mounts: Vec<(PathBuf, String)> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (pre, post) = line.split_once(" - ")?;
                let mut post = post.split(' ');
                if post.next()? != "cgroup" {
                    return None;
                }
                let opts = post.nth(1)?;
                let mnt = pre.split(' ').nth(4)?;
                let ctrls: Vec<&str> = opts
                    .split(',')
                    .filter(|o| !["rw", "ro", "relatime", "noatime", "nosuid", "nodev", "noexec"].contains(o))
                    .collect();
                Some((PathBuf::from(mnt), ctrls.join(",")))
            })
            // A hierarchy covered by another mount (a tmpfs over /sys/fs/cgroup) is
            // listed but cannot be reached.
            .filter(|(mnt, _)| super::is_cgroup_v1(mnt))
            .collect();
        // The first mount of each hierarchy is the host's; later ones (a container
        // without a mount namespace mounts cgroups under its rootfs in ours) are not
        // where the runtime manages cgroups (runc takes the first one too).
        let mut seen = std::collections::HashSet::new();
        mounts.retain(|(_, ctrls)| seen.insert(ctrls.clone()));
        if hybrid {
            mounts.push((PathBuf::from("/sys/fs/cgroup/unified"), String::new()));
        }
        Manager {
            mounts,
            path: path.to_path_buf(),
        }
    }

    fn dirs(&self) -> impl Iterator<Item = (PathBuf, &str)> + '_ {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path).to_path_buf();
        self.mounts.iter().map(move |(m, c)| (m.join(&rel), c.as_str()))
    }

    /// The container's directory in the hierarchy that carries controller `name`.
    pub(crate) fn controller_dir(&self, name: &str) -> Option<PathBuf> {
        if name.is_empty() {
            return None;
        }
        self.dirs()
            .find(|(_, c)| c.split(',').any(|x| x == name))
            .map(|(d, _)| d)
    }

    /// The container's directory in the hybrid host's cgroup2 (/sys/fs/cgroup/unified).
    pub(crate) fn unified_dir(&self) -> Option<PathBuf> {
        self.dirs().find(|(_, c)| c.is_empty()).map(|(d, _)| d)
    }
}

/// A new cpuset cgroup has empty cpus and mems, and refuses tasks until they are set:
/// copy them from the nearest ancestor that has them.
fn init_cpuset(dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut chain = vec![dir.to_path_buf()];
        let mut value = String::new();
        let mut cur = dir.parent();
        while let Some(p) = cur {
            match fs::read_to_string(p.join(file)) {
                Ok(v) if !v.trim().is_empty() => {
                    value = v.trim().to_string();
                    break;
                }
                Ok(_) => chain.push(p.to_path_buf()),
                Err(_) => break,
            }
            cur = p.parent();
        }
        for d in chain.iter().rev() {
            if fs::read_to_string(d.join(file)).is_ok_and(|v| v.trim().is_empty()) {
                write(&d.join(file), &value)?;
            }
        }
    }
    Ok(())
}

impl Manager {
    /// Whether no hierarchy at all is visible (see [`super::no_hierarchy`]).
    pub(crate) fn has_none(&self) -> bool {
        self.mounts.is_empty()
    }

    /// Makes the directory in every hierarchy (cpuset ones with cpus and mems).
    ///
    /// Errors: [`super::no_hierarchy`] when no hierarchy is visible.
    fn create(&self) -> Result<()> {
        if self.has_none() {
            return Err(super::no_hierarchy());
        }
        for (dir, ctrls) in self.dirs() {
            fs::create_dir_all(&dir).ctx(|| format!("create cgroup {}", dir.display()))?;
            if ctrls.split(',').any(|c| c == "cpuset") {
                init_cpuset(&dir)?;
            }
        }
        Ok(())
    }
}

impl CgroupManager for Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        self.create()?;
        for (dir, _) in self.dirs() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn entry(&self, create: bool) -> Result<Entry> {
        if create {
            self.create()?;
        }
        let v1 = self.dirs().filter(|(_, c)| !c.is_empty()).map(|(d, _)| d);
        Entry::open(v1, self.unified_dir())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let dir = ["pids", "memory", "freezer", "devices"]
            .iter()
            .find_map(|c| self.controller_dir(c))
            .or_else(|| self.dirs().next().map(|(d, _)| d));
        match dir {
            Some(d) => read_pids(&d.join("cgroup.procs")),
            None => Ok(vec![]),
        }
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let dir = self.controller_dir("freezer").ok_or_else(|| {
            crate::Error::Invalid("no freezer cgroup hierarchy is mounted on this host: pause needs one".into())
        })?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        for _ in 0..1000 {
            write(&dir.join("freezer.state"), want)?;
            let now = fs::read_to_string(dir.join("freezer.state"))
                .ctx(|| format!("read {}/freezer.state", dir.display()))?;
            if now.trim() == want {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(crate::Error::Invalid(format!(
            "cgroup {} did not reach {want}",
            dir.display()
        )))
    }

    fn remove(&self) -> Result<()> {
        for (dir, _) in self.dirs() {
            rmdir(&dir)?;
        }
        Ok(())
    }

    fn set(&self, r: &LinuxResources) -> Result<()> {
        resources_v1::plan(self, r)?.apply()
    }

    fn stats(&self) -> Result<Stats> {
        let find = |c: &str| self.controller_dir(c).filter(|d| d.is_dir());
        Ok(stats::v1(&V1Dirs {
            dir: &find,
            unified: self.unified_dir(),
        }))
    }

    fn oom_watcher(&self) -> Result<OomWatcher> {
        let dir = self.controller_dir("memory").ok_or_else(|| {
            Error::Invalid("no memory cgroup hierarchy is mounted on this cgroup v1 host: OOM events need one".into())
        })?;
        OomWatcher::v1(&dir)
    }
}
