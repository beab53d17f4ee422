//! The container's `linux.resources` in config.json: `--memory` (and memory+swap where
//! swap is accounted), `--cpus` and `--pids-limit`.

use std::fs;
use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxPids, LinuxResources};

use crate::error::{Error, Result};
use crate::options::RunOptions;

/// CFS period for `--cpus`, in microseconds (docker's).
pub(super) const CPU_PERIOD: u64 = 100_000;

/// The smallest `--memory` docker accepts: 6 MiB.
pub(super) const MIN_MEMORY: i64 = 6 << 20;

/// Whether the host's memory cgroup accounts swap (then `--memory` also limits
/// memory+swap to twice the memory, as docker does; without it docker limits memory
/// alone and so do we).
pub(super) fn swap_accounting() -> bool {
    use vessel_runtime::cgroups::{hierarchy, Hierarchy, CGROUP_ROOT};
    match hierarchy() {
        Hierarchy::Unified => {
            // The root cgroup has no memory.swap.max: look at ours, then any child.
            let own = fs::read_to_string("/proc/self/cgroup").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(|p| p.trim_start_matches('/').to_string()))
            });
            let root = Path::new(CGROUP_ROOT);
            if let Some(own) = own.filter(|p| !p.is_empty()) {
                let dir = root.join(own);
                if dir.join("memory.max").exists() {
                    return dir.join("memory.swap.max").exists();
                }
            }
            fs::read_dir(root)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.join("memory.max").exists())
                .is_some_and(|p| p.join("memory.swap.max").exists())
        }
        _ => Path::new(CGROUP_ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists(),
    }
}

/// linux.resources: memory (and memory+swap), CPU quota, pids, and the device rules
/// (deny all, the runtime then adds its default allow list; allow all when privileged).
pub(super) fn resources(opts: &RunOptions) -> Result<LinuxResources> {
    let mut r = LinuxResources::default();
    if let Some(m) = opts.memory.filter(|m| *m > 0) {
        if m < MIN_MEMORY {
            return Err(Error::BadInput(format!(
                "invalid --memory {m}: the minimum memory limit is 6m"
            )));
        }
        let mut mem = LinuxMemory::default();
        mem.set_limit(Some(m));
        if swap_accounting() {
            mem.set_swap(m.checked_mul(2));
        }
        r.set_memory(Some(mem));
    }
    if let Some(c) = opts.cpus {
        if !c.is_finite() || c <= 0.0 {
            return Err(Error::BadInput(format!(
                "invalid --cpus {c}: use a positive number of CPUs (1.5)"
            )));
        }
        let mut cpu = LinuxCpu::default();
        // The kernel's smallest quota is 1 ms.
        cpu.set_quota(Some(((c * CPU_PERIOD as f64).round() as i64).max(1000)));
        cpu.set_period(Some(CPU_PERIOD));
        r.set_cpu(Some(cpu));
    }
    if let Some(p) = opts.pids_limit.filter(|p| *p > 0) {
        let mut pids = LinuxPids::default();
        pids.set_limit(p);
        r.set_pids(Some(pids));
    }
    let mut all = LinuxDeviceCgroup::default();
    all.set_allow(opts.privileged);
    all.set_access(Some("rwm".into()));
    r.set_devices(Some(vec![all]));
    Ok(r)
}
