//! `vessel-oci update`: changes the resource limits of a created, running or paused
//! container, with runc's flags, or from a `linux.resources` JSON file (`-r FILE`, `-`
//! for stdin) as containerd's shim passes it. Everything is checked before the first
//! cgroup write; a refused write undoes the earlier ones.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxPids, LinuxResources};
use vessel_runtime::cgroups::{self, limits};
use vessel_runtime::container::Container;
use vessel_runtime::state::Status;

/// runc's `update` flags. Memory sizes take runc's units (`32m`, `1g`, bytes otherwise);
/// -1 means no limit.
#[derive(Args)]
pub struct UpdateArgs {
    /// linux.resources JSON to apply (`-` reads stdin); exclusive with the other flags.
    #[arg(long, short = 'r')]
    resources: Option<PathBuf>,
    /// Block I/O weight, 10..1000.
    #[arg(long = "blkio-weight")]
    blkio_weight: Option<u16>,
    /// CFS period, microseconds.
    #[arg(long = "cpu-period")]
    cpu_period: Option<u64>,
    /// CFS quota per period, microseconds (-1: none).
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// CPU shares (relative weight; cpu.weight on v2).
    #[arg(long = "cpu-share", alias = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// Realtime period, microseconds (v1).
    #[arg(long = "cpu-rt-period")]
    cpu_rt_period: Option<u64>,
    /// Realtime runtime, microseconds (v1).
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    cpu_rt_runtime: Option<i64>,
    /// CFS burst, microseconds.
    #[arg(long = "cpu-burst")]
    cpu_burst: Option<u64>,
    /// SCHED_IDLE for the group: 0 or 1.
    #[arg(long = "cpu-idle", allow_hyphen_values = true)]
    cpu_idle: Option<i64>,
    /// CPUs to run on ("0-2,4").
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    /// Memory nodes to use ("0").
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// Memory limit, bytes.
    #[arg(long, short = 'm', allow_hyphen_values = true)]
    memory: Option<String>,
    /// Memory soft limit, bytes.
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory plus swap limit, bytes.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Kernel memory limit, bytes (v1, where the kernel has it).
    #[arg(long = "kernel-memory", allow_hyphen_values = true)]
    kernel_memory: Option<String>,
    /// Kernel TCP buffer limit, bytes (v1).
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true)]
    kernel_memory_tcp: Option<String>,
    /// Maximum number of tasks (-1: none).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Container id.
    id: String,
}

/// A size as runc's `units.RAMInBytes` takes it: a number with an optional binary unit
/// (b, k, m, g, t, p, with optional "b"/"ib"), case-insensitive; "-1" for no limit.
pub fn parse_size(flag: &str, s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    if t.starts_with('-') {
        bail!("--{flag} {s:?}: a negative limit is not allowed (use -1 for no limit)");
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => bail!("--{flag} {s:?}: unknown unit (use a number of bytes or k, m, g, t, p)"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("--{flag} {s:?} is not a size like 512m or 1073741824"))?;
    let v = n * mult;
    if !(v.is_finite() && v < i64::MAX as f64) {
        bail!("--{flag} {s:?} is too large");
    }
    Ok(v as i64)
}

/// Reads a `linux.resources` JSON file, or stdin for `-`.
fn read_resources(path: &Path) -> Result<LinuxResources> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read resources from stdin")?;
    } else {
        text = std::fs::read_to_string(path).with_context(|| format!("read resources file {}", path.display()))?;
    }
    serde_json::from_str(&text).with_context(|| {
        format!(
            "resources file {} is not a valid linux.resources JSON object",
            path.display()
        )
    })
}

impl UpdateArgs {
    fn any_flag(&self) -> bool {
        self.blkio_weight.is_some()
            || self.cpu_period.is_some()
            || self.cpu_quota.is_some()
            || self.cpu_shares.is_some()
            || self.cpu_rt_period.is_some()
            || self.cpu_rt_runtime.is_some()
            || self.cpu_burst.is_some()
            || self.cpu_idle.is_some()
            || self.cpuset_cpus.is_some()
            || self.cpuset_mems.is_some()
            || self.memory.is_some()
            || self.memory_reservation.is_some()
            || self.memory_swap.is_some()
            || self.kernel_memory.is_some()
            || self.kernel_memory_tcp.is_some()
            || self.pids_limit.is_some()
    }

    /// The resources the flags ask for.
    fn to_resources(&self) -> Result<LinuxResources> {
        let size = |flag: &str, v: &Option<String>| v.as_deref().map(|s| parse_size(flag, s)).transpose();
        let mut r = LinuxResources::default();
        let mut mem = LinuxMemory::default();
        mem.set_limit(size("memory", &self.memory)?);
        mem.set_reservation(size("memory-reservation", &self.memory_reservation)?);
        mem.set_swap(size("memory-swap", &self.memory_swap)?);
        mem.set_kernel(size("kernel-memory", &self.kernel_memory)?);
        mem.set_kernel_tcp(size("kernel-memory-tcp", &self.kernel_memory_tcp)?);
        if mem != LinuxMemory::default() {
            r.set_memory(Some(mem));
        }
        let mut cpu = LinuxCpu::default();
        cpu.set_shares(self.cpu_shares);
        cpu.set_quota(self.cpu_quota);
        cpu.set_period(self.cpu_period);
        cpu.set_realtime_period(self.cpu_rt_period);
        cpu.set_realtime_runtime(self.cpu_rt_runtime);
        cpu.set_burst(self.cpu_burst);
        cpu.set_idle(self.cpu_idle);
        cpu.set_cpus(self.cpuset_cpus.clone());
        cpu.set_mems(self.cpuset_mems.clone());
        if cpu != LinuxCpu::default() {
            r.set_cpu(Some(cpu));
        }
        if let Some(l) = self.pids_limit {
            if l == 0 || l < -1 {
                bail!("--pids-limit {l}: use a positive number of tasks, or -1 for no limit");
            }
            let mut p = LinuxPids::default();
            p.set_limit(l);
            r.set_pids(Some(p));
        }
        if let Some(w) = self.blkio_weight {
            let mut b = LinuxBlockIo::default();
            b.set_weight(Some(w));
            r.set_block_io(Some(b));
        }
        Ok(r)
    }
}

/// Runs `update`.
pub fn run(root: &Path, a: &UpdateArgs) -> Result<()> {
    let mut r = match &a.resources {
        Some(_) if a.any_flag() => {
            bail!("--resources and the individual limit flags are exclusive: put every value in the file")
        }
        Some(path) => read_resources(path)?,
        None if !a.any_flag() => bail!("update needs --resources FILE or at least one limit flag (see --help)"),
        None => a.to_resources()?,
    };
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        // As runc: device rules are set at create only.
        eprintln!("vessel-oci: update does not change device rules; linux.resources.devices ignored");
    }
    r.set_devices(None);
    limits::validate(&r)?;
    let c = Container::load(root, &a.id)?;
    if c.state.status == Status::Stopped {
        bail!("cannot update container \"{}\": container not running", a.id);
    }
    cgroups::manager(&c.state.cgroup_path).set(&r)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("memory", "1024").unwrap(), 1024);
        assert_eq!(parse_size("memory", "32m").unwrap(), 32 << 20);
        assert_eq!(parse_size("memory", "32MB").unwrap(), 32 << 20);
        assert_eq!(parse_size("memory", "1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("memory", "1.5k").unwrap(), 1536);
        assert_eq!(parse_size("memory", "-1").unwrap(), -1);
        assert!(parse_size("memory", "-5").unwrap_err().to_string().contains("negative"));
        assert!(parse_size("memory", "lots").is_err());
        assert!(parse_size("memory", "5x").is_err());
    }
}
