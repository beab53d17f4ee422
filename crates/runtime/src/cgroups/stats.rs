//! Resource usage of a container's cgroup, in the shape of runc's `types.Stats` (the JSON
//! `runc events --stats` prints under `data`, with the same field names and the same
//! omit-when-zero rules), read from v1 files (cpuacct.*, cpu.stat, memory.*, pids.*,
//! blkio.*, hugetlb.*) or v2 files (cpu.stat, memory.current/max/stat/events,
//! memory.swap.*, pids.*, io.stat, hugetlb.*). Files a host lacks leave their numbers 0.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plan::read;

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// CPU time, in nanoseconds (runc `types.CpuUsage`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuUsage {
    /// Total CPU time consumed, ns.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Per-CPU time, ns (v1 only: cpuacct.usage_percpu).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Per-CPU kernel time, ns (v1 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    /// Per-CPU user time, ns (v1 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// Time in kernel mode, ns.
    #[serde(default)]
    pub kernel: u64,
    /// Time in user mode, ns.
    #[serde(default)]
    pub user: u64,
}

/// CFS bandwidth throttling (runc `types.Throttling`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(default, rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Total time throttled, ns.
    #[serde(default, rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// CPU statistics (runc `types.Cpu`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cpu {
    /// Usage.
    #[serde(default)]
    pub usage: CpuUsage,
    /// Throttling.
    #[serde(default)]
    pub throttling: Throttling,
}

/// One memory counter set, bytes (runc `types.MemoryEntry`). A limit of "max" is
/// u64::MAX on v2 and the kernel's page-rounded huge number on v1, as runc reports them.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryEntry {
    /// Limit, bytes.
    #[serde(default)]
    pub limit: u64,
    /// Current usage, bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest usage seen, bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// Memory statistics (runc `types.Memory`). `swap` is memory+swap, as v1 counts it (on
/// v2 runc adds memory to swap for the same meaning).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    /// Page cache, bytes (v1 memory.stat `cache`, v2 `file`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory.
    #[serde(default)]
    pub usage: MemoryEntry,
    /// Memory plus swap.
    #[serde(default)]
    pub swap: MemoryEntry,
    /// Kernel memory (v1 memory.kmem.*).
    #[serde(default)]
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1 memory.kmem.tcp.*).
    #[serde(default, rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// Every memory.stat counter.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Task counts (runc `types.Pids`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Pids {
    /// Tasks now.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub current: u64,
    /// pids.max; 0 for "max".
    #[serde(default, skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// One block I/O counter (runc `types.BlkioEntry`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlkioEntry {
    /// Device major.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// "Read", "Write", "Sync", "Async", "Discard", "Total".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// Bytes or operations.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block I/O statistics (runc `types.Blkio`; only the two fields runc fills on v2).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Blkio {
    /// Bytes transferred per device and op.
    #[serde(default, rename = "ioServiceBytesRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// Operations per device and op.
    #[serde(default, rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// Huge page usage of one page size, bytes (runc `types.Hugetlb`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hugetlb {
    /// Usage, bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Highest usage (v1), bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// Everything `events --stats` reports (runc `types.Stats`; cpuset, intel_rdt and
/// network_interfaces are printed empty, as runc does without those features).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// CPU.
    pub cpu: Cpu,
    /// cpuset (not collected: an empty object).
    #[serde(default)]
    pub cpuset: serde_json::Map<String, serde_json::Value>,
    /// Memory.
    pub memory: Memory,
    /// Pids.
    pub pids: Pids,
    /// Block I/O.
    pub blkio: Blkio,
    /// Huge pages by size name ("2MB").
    #[serde(default)]
    pub hugetlb: BTreeMap<String, Hugetlb>,
    /// Intel RDT (not collected: an empty object).
    #[serde(default)]
    pub intel_rdt: serde_json::Map<String, serde_json::Value>,
    /// Network interfaces (not collected: null, as runc prints it).
    #[serde(default)]
    pub network_interfaces: Option<Vec<serde_json::Value>>,
}

fn num(path: &Path) -> u64 {
    read(path).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A number, or u64::MAX for "max".
fn num_or_max(path: &Path) -> u64 {
    match read(path).as_deref() {
        Some("max") => u64::MAX,
        Some(s) => s.parse().unwrap_or(0),
        None => 0,
    }
}

/// "key value" lines (memory.stat, cpu.stat, memory.events, cpuacct.stat).
pub(crate) fn flat_keyed(path: &Path) -> BTreeMap<String, u64> {
    read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Huge page size names of this host ("2MB", "1GB"), from /sys/kernel/mm/hugepages.
pub fn hugepage_sizes() -> Vec<String> {
    let mut v: Vec<(u64, String)> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = n.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let name = if kb >= 1 << 20 {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            };
            Some((kb, name))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Clock ticks per second (USER_HZ) for cpuacct.stat.
fn clk_tck() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Directories of a v1 container cgroup by controller, for [`v1`].
pub(crate) struct V1Dirs<'a> {
    /// Finds the directory of a controller.
    pub dir: &'a dyn Fn(&str) -> Option<std::path::PathBuf>,
    /// The hybrid host's cgroup2 directory of the container.
    pub unified: Option<std::path::PathBuf>,
}

/// Stats from v1 hierarchies.
pub(crate) fn v1(d: &V1Dirs<'_>) -> Stats {
    let mut s = Stats::default();
    if let Some(dir) = (d.dir)("cpuacct") {
        s.cpu.usage.total = num(&dir.join("cpuacct.usage"));
        s.cpu.usage.percpu = read(&dir.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // cpuacct.usage_all: "cpu user system" header, then one line per cpu, ns.
        for line in read(&dir.join("cpuacct.usage_all")).unwrap_or_default().lines().skip(1) {
            let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            if f.len() == 3 {
                s.cpu.usage.percpu_user.push(f[1]);
                s.cpu.usage.percpu_kernel.push(f[2]);
            }
        }
        let st = flat_keyed(&dir.join("cpuacct.stat"));
        let ns_per_tick = 1_000_000_000 / clk_tck();
        s.cpu.usage.user = st.get("user").copied().unwrap_or(0) * ns_per_tick;
        s.cpu.usage.kernel = st.get("system").copied().unwrap_or(0) * ns_per_tick;
    }
    if let Some(dir) = (d.dir)("cpu") {
        let st = flat_keyed(&dir.join("cpu.stat"));
        s.cpu.throttling = Throttling {
            periods: st.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: st.get("throttled_time").copied().unwrap_or(0),
        };
    }
    if let Some(dir) = (d.dir)("memory") {
        let entry = |prefix: &str| MemoryEntry {
            limit: num(&dir.join(format!("{prefix}limit_in_bytes"))),
            usage: num(&dir.join(format!("{prefix}usage_in_bytes"))),
            max: num(&dir.join(format!("{prefix}max_usage_in_bytes"))),
            failcnt: num(&dir.join(format!("{prefix}failcnt"))),
        };
        s.memory.usage = entry("memory.");
        s.memory.swap = entry("memory.memsw.");
        s.memory.kernel = entry("memory.kmem.");
        s.memory.kernel_tcp = entry("memory.kmem.tcp.");
        s.memory.raw = flat_keyed(&dir.join("memory.stat"));
        s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
    }
    if let Some(dir) = (d.dir)("pids") {
        s.pids.current = num(&dir.join("pids.current"));
        s.pids.limit = num(&dir.join("pids.max"));
    }
    if let Some(dir) = (d.dir)("blkio") {
        let pick = |base: &str| {
            [
                format!("blkio.{base}"),
                format!("blkio.bfq.{base}"),
                format!("blkio.throttle.{base}"),
            ]
            .into_iter()
            .map(|f| blkio_v1(&dir.join(f)))
            .find(|v| !v.is_empty())
            .unwrap_or_default()
        };
        s.blkio.io_service_bytes_recursive = pick("io_service_bytes_recursive");
        s.blkio.io_serviced_recursive = pick("io_serviced_recursive");
    }
    let hugetlb_dir = (d.dir)("hugetlb");
    for size in hugepage_sizes() {
        let h = match (&hugetlb_dir, &d.unified) {
            (Some(dir), _) => Hugetlb {
                usage: num(&dir.join(format!("hugetlb.{size}.usage_in_bytes"))),
                max: num(&dir.join(format!("hugetlb.{size}.max_usage_in_bytes"))),
                failcnt: num(&dir.join(format!("hugetlb.{size}.failcnt"))),
            },
            (None, Some(u)) if u.join(format!("hugetlb.{size}.current")).exists() => hugetlb_v2(u, &size),
            _ => continue,
        };
        s.hugetlb.insert(size, h);
    }
    s
}

/// v1 blkio lines: "8:0 Read 1234" (and a final "Total N", skipped).
fn blkio_v1(path: &Path) -> Vec<BlkioEntry> {
    read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 3 {
                return None;
            }
            let (ma, mi) = f[0].split_once(':')?;
            Some(BlkioEntry {
                major: ma.parse().ok()?,
                minor: mi.parse().ok()?,
                op: f[1].to_string(),
                value: f[2].parse().ok()?,
            })
        })
        .collect()
}

fn hugetlb_v2(dir: &Path, size: &str) -> Hugetlb {
    Hugetlb {
        usage: num(&dir.join(format!("hugetlb.{size}.current"))),
        max: 0,
        failcnt: flat_keyed(&dir.join(format!("hugetlb.{size}.events")))
            .get("max")
            .copied()
            .unwrap_or(0),
    }
}

/// Stats from a v2 cgroup directory.
pub(crate) fn v2(dir: &Path) -> Stats {
    let mut s = Stats::default();
    let cpu = flat_keyed(&dir.join("cpu.stat"));
    let g = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    s.cpu.usage.total = g(&cpu, "usage_usec") * 1000;
    s.cpu.usage.user = g(&cpu, "user_usec") * 1000;
    s.cpu.usage.kernel = g(&cpu, "system_usec") * 1000;
    s.cpu.throttling = Throttling {
        periods: g(&cpu, "nr_periods"),
        throttled_periods: g(&cpu, "nr_throttled"),
        throttled_time: g(&cpu, "throttled_usec") * 1000,
    };
    let events = flat_keyed(&dir.join("memory.events"));
    s.memory.usage = MemoryEntry {
        limit: num_or_max(&dir.join("memory.max")),
        usage: num(&dir.join("memory.current")),
        max: num(&dir.join("memory.peak")),
        failcnt: g(&events, "max"),
    };
    if dir.join("memory.swap.current").exists() {
        let swap_limit = num_or_max(&dir.join("memory.swap.max"));
        s.memory.swap = MemoryEntry {
            usage: num(&dir.join("memory.swap.current")) + s.memory.usage.usage,
            limit: if swap_limit == u64::MAX {
                u64::MAX
            } else {
                swap_limit.saturating_add(s.memory.usage.limit)
            },
            max: 0,
            failcnt: flat_keyed(&dir.join("memory.swap.events"))
                .get("max")
                .copied()
                .unwrap_or(0),
        };
    }
    s.memory.raw = flat_keyed(&dir.join("memory.stat"));
    s.memory.cache = g(&s.memory.raw, "file");
    s.pids.current = num(&dir.join("pids.current"));
    s.pids.limit = match read(&dir.join("pids.max")).as_deref() {
        Some("max") | None => 0,
        Some(v) => v.parse().unwrap_or(0),
    };
    // io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0".
    for line in read(&dir.join("io.stat")).unwrap_or_default().lines() {
        let mut f = line.split_whitespace();
        let Some((ma, mi)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else { continue };
            let Ok(value) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut s.blkio.io_service_bytes_recursive, "Read"),
                "wbytes" => (&mut s.blkio.io_service_bytes_recursive, "Write"),
                "rios" => (&mut s.blkio.io_serviced_recursive, "Read"),
                "wios" => (&mut s.blkio.io_serviced_recursive, "Write"),
                _ => continue,
            };
            list.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    for size in hugepage_sizes() {
        if dir.join(format!("hugetlb.{size}.current")).exists() {
            s.hugetlb.insert(size.clone(), hugetlb_v2(dir, &size));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_field_names_are_runcs() {
        let mut s = Stats::default();
        s.memory.usage.usage = 5;
        s.memory.kernel_tcp.limit = 1;
        s.cpu.throttling.throttled_periods = 2;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 3,
        });
        s.hugetlb.insert("2MB".into(), Hugetlb::default());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["memory"]["usage"]["usage"], 5);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0, "failcnt is never omitted");
        assert!(v["memory"]["usage"].get("max").is_none(), "max is omitted when 0");
        assert_eq!(v["memory"]["kernelTCP"]["limit"], 1);
        assert_eq!(v["cpu"]["throttling"]["throttledPeriods"], 2);
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert_eq!(v["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
        assert_eq!(v["hugetlb"]["2MB"]["failcnt"], 0);
        assert!(v["network_interfaces"].is_null() && v["intel_rdt"].is_object() && v["cpuset"].is_object());
    }

    #[test]
    fn v2_files() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, v: &str| std::fs::write(d.path().join(f), v).unwrap();
        w(
            "cpu.stat",
            "usage_usec 10\nuser_usec 7\nsystem_usec 3\nnr_periods 4\nnr_throttled 1\nthrottled_usec 2\n",
        );
        w("memory.max", "max\n");
        w("memory.current", "4096\n");
        w("memory.swap.current", "0\n");
        w("memory.swap.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.stat", "anon 100\nfile 200\n");
        w("pids.current", "3\n");
        w("pids.max", "max\n");
        w("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        let s = v2(d.path());
        assert_eq!(s.cpu.usage.total, 10_000);
        assert_eq!(s.cpu.throttling.throttled_time, 2000);
        assert_eq!(s.memory.usage.limit, u64::MAX);
        assert_eq!(s.memory.usage.failcnt, 3);
        assert_eq!(s.memory.swap.usage, 4096);
        assert_eq!(s.memory.cache, 200);
        assert_eq!((s.pids.current, s.pids.limit), (3, 0));
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);
        assert_eq!(
            s.blkio.io_serviced_recursive[1],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Write".into(),
                value: 2
            }
        );
    }

    #[test]
    fn v1_blkio_lines() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x");
        std::fs::write(&f, "8:0 Read 10\n8:0 Write 20\nTotal 30\n").unwrap();
        let v = blkio_v1(&f);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].value, 20);
    }
}
