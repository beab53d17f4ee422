//! Unified cgroup v2: one directory under /sys/fs/cgroup per container.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::plan::{read, Plan, Restore};
use super::stats::{self, Stats};
use super::{bpf, read_pids, resources_v2, rmdir, write, CgroupManager, Entry, OomWatcher};
use crate::error::{Context, Result};

/// A container cgroup on a unified v2 host.
pub struct Manager {
    dir: PathBuf,
}

impl Manager {
    /// The cgroup at `path` below the v2 mount `root`.
    pub fn new(root: &Path, path: &Path) -> Manager {
        Manager {
            dir: root.join(path.strip_prefix("/").unwrap_or(path)),
        }
    }
}

/// Adds to `plan` the writes that enable `controllers` in the cgroup.subtree_control
/// of every ancestor of `dir` from `root` down, where they are available and not yet
/// enabled (so that `dir` gets their interface files).
pub(crate) fn enable_controllers(root: &Path, dir: &Path, controllers: &[&str], plan: &mut Plan) {
    let Ok(rel) = dir.strip_prefix(root) else { return };
    let mut cur = root.to_path_buf();
    let mut parents = vec![cur.clone()];
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        cur.push(c);
        parents.push(cur.clone());
    }
    for p in parents {
        let have = read(&p.join("cgroup.controllers")).unwrap_or_default();
        let on = read(&p.join("cgroup.subtree_control")).unwrap_or_default();
        for c in controllers {
            if have.split(' ').any(|x| x == *c) && !on.split(' ').any(|x| x == *c) {
                plan.write_with(
                    "cgroup.subtree_control",
                    p.join("cgroup.subtree_control"),
                    format!("+{c}"),
                    Restore::No,
                );
            }
        }
    }
}

impl Manager {
    fn create(&self) -> Result<()> {
        // Enable every controller the root offers down to our parent (as runc does), so
        // that the container's cgroup has the files `set` writes.
        let root = Path::new(super::CGROUP_ROOT);
        let offered = read(&root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<&str> = offered.split(' ').filter(|c| !c.is_empty()).collect();
        if let Some(parent) = self.dir.parent() {
            fs::create_dir_all(parent).ctx(|| format!("create cgroup {}", parent.display()))?;
        }
        let mut plan = Plan::default();
        enable_controllers(root, &self.dir, &wanted, &mut plan);
        for w in plan.writes {
            // A controller refused here (threaded subtree, busy parent) only makes its
            // fields fail later, with their own message.
            let _ = fs::write(&w.path, &w.value);
        }
        fs::create_dir_all(&self.dir).ctx(|| format!("create cgroup {}", self.dir.display()))
    }
}

impl CgroupManager for Manager {
    fn apply(&self, pid: i32) -> Result<()> {
        self.create()?;
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn entry(&self, create: bool) -> Result<Entry> {
        if create {
            self.create()?;
        }
        Entry::open([], Some(self.dir.clone()))
    }

    fn set(&self, r: &LinuxResources) -> Result<()> {
        let (plan, program) = resources_v2::plan(&self.dir, r)?;
        // The eBPF program is generated before any write so that a bad rule changes nothing.
        let insns = program.as_ref().map(bpf::generate).transpose()?;
        plan.apply()?;
        if let Some(insns) = insns {
            match bpf::load(&insns).and_then(|prog| bpf::attach(&self.dir, &prog)) {
                Ok(()) => {}
                // A caller that is not root cannot load or attach BPF programs (its
                // delegated subtree notwithstanding); as runc does, its device rules are
                // left to what it may do anyway: it cannot make device nodes, and it
                // opens the host's only with its own permissions.
                Err(_) if crate::rootless::is_rootless() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<Stats> {
        Ok(stats::v2(&self.dir))
    }

    fn oom_watcher(&self) -> Result<OomWatcher> {
        OomWatcher::v2(&self.dir)
    }

    fn pids(&self) -> Result<Vec<i32>> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        write(&self.dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        for _ in 0..1000 {
            let events = fs::read_to_string(self.dir.join("cgroup.events"))
                .ctx(|| format!("read {}/cgroup.events", self.dir.display()))?;
            if events.lines().any(|l| l == want) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Err(crate::Error::Invalid(format!(
            "cgroup {} did not reach {want}",
            self.dir.display()
        )))
    }

    fn remove(&self) -> Result<()> {
        rmdir(&self.dir)
    }
}
