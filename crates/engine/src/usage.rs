//! A live container's resource usage in cAdvisor's terms, for the Prometheus endpoint
//! of `vessel serve` (`GET /metrics`): CPU split into user and system time, memory as
//! usage, working set, rss and cache, block I/O per device, network counters per
//! interface, the number of processes, and PSI pressure (cgroup-v2.rst "PSI", where the
//! container's cgroup2 directory has `*.pressure` files: unified hosts, and the
//! cgroup2 of hybrid hosts). The numbers come from the runtime's cgroup statistics
//! ([`vessel_runtime::cgroups::CgroupManager::stats`], v1, hybrid and v2), as
//! [`crate::stats::sample`] takes them for `vessel stats`, and from /proc.

use std::path::{Path, PathBuf};

use vessel_runtime::cgroups::{self, Hierarchy, Stats};
use vessel_runtime::{Container, Status};

use crate::error::{Error, IoContext, Result};
use crate::stats::{clock_ticks, mem_usage_no_cache, parse_mem_total, parse_proc_stat};

/// Bytes moved on one block device (cAdvisor's `container_fs_*_bytes_total`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// `/dev/NAME` from /sys/dev/block/MAJOR:MINOR/uevent, else `MAJOR:MINOR`.
    pub device: String,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// Counters of one network interface of the container's namespace (/proc/PID/net/dev).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// The interface's name inside the container (`eth0`).
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// Stall time of one resource (a `*.pressure` file), microseconds since the cgroup
/// was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stall {
    /// `some total=`: time at least one task waited (cAdvisor's `waiting`).
    pub some_us: u64,
    /// `full total=`: time every non-idle task was stalled at once (`stalled`).
    pub full_us: u64,
}

/// PSI of a cgroup: cpu.pressure, memory.pressure, io.pressure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    /// cpu.pressure.
    pub cpu: Stall,
    /// memory.pressure.
    pub memory: Stall,
    /// io.pressure.
    pub io: Stall,
}

/// One reading of a running (or created, or paused) container. Counters grow over the
/// container's life; the rest are values at the time of reading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// The container's cgroup path (its runtime state's `cgroup_path`), cAdvisor's `id`.
    pub cgroup: PathBuf,
    /// CPU time of the cgroup, ns.
    pub cpu_ns: u64,
    /// CPU time in user mode, ns.
    pub cpu_user_ns: u64,
    /// CPU time in kernel mode, ns.
    pub cpu_system_ns: u64,
    /// Memory charged to the cgroup, page cache included, bytes (v1
    /// memory.usage_in_bytes, v2 memory.current).
    pub mem_usage: u64,
    /// Usage without inactive file pages, bytes: what the kernel cannot reclaim
    /// cheaply (cAdvisor's and kubelet's working set; docker stats' MEM USAGE).
    pub mem_working_set: u64,
    /// Anonymous memory, bytes (v1 `total_rss`, v2 `anon` of memory.stat).
    pub mem_rss: u64,
    /// Page cache, bytes (v1 `total_cache`, v2 `file`).
    pub mem_cache: u64,
    /// The cgroup's memory limit in bytes; 0 when it has none.
    pub mem_limit: u64,
    /// Tasks in the cgroup (pids.current, else the number of its processes).
    pub processes: u64,
    /// Block I/O per device.
    pub block: Vec<DeviceIo>,
    /// Interfaces of the container's own network namespace but `lo`; none when it
    /// shares the host's.
    pub interfaces: Vec<Interface>,
    /// PSI, when the container's cgroup2 directory has pressure files.
    pub pressure: Option<Pressure>,
}

/// The host's totals (cAdvisor's `machine_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Machine {
    /// MemTotal of /proc/meminfo, bytes.
    pub memory_bytes: u64,
    /// Logical cpus online (the `cpuN` lines of /proc/stat).
    pub cpu_cores: u32,
}

/// Reads [`Machine`] from /proc/meminfo and /proc/stat.
///
/// Errors: [`Error::Io`] naming the /proc file that could not be read.
pub fn machine() -> Result<Machine> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").at("read", "/proc/meminfo")?;
    let stat = std::fs::read_to_string("/proc/stat").at("read", "/proc/stat")?;
    Ok(Machine {
        memory_bytes: parse_mem_total(&meminfo),
        cpu_cores: parse_proc_stat(&stat, clock_ticks()).1,
    })
}

/// Reads the [`Usage`] of container `id` of the vessel-runtime state root `oci_root`.
///
/// Errors: [`Error::Runtime`] for an unknown container or a cgroup the manager cannot
/// read; [`Error::WrongState`] when it has stopped; [`Error::Io`] when its network
/// counters cannot be read.
pub fn usage(oci_root: &Path, id: &str) -> Result<Usage> {
    let c = Container::load(oci_root, id)?;
    if c.state.status == Status::Stopped {
        return Err(Error::WrongState(format!("container {id} is not running")));
    }
    let manager = cgroups::manager(&c.state.cgroup_path);
    let stats = manager.stats()?;
    let processes = match stats.pids.current {
        0 => manager.pids()?.len() as u64,
        n => n,
    };
    let mut u = from_stats(&stats);
    u.cgroup = c.state.cgroup_path.clone();
    u.processes = processes;
    u.interfaces = interfaces(c.state.pid)?;
    u.pressure = pressure_dir(&c.state.cgroup_path).and_then(|d| pressure(&d));
    Ok(u)
}

/// The numbers of [`Usage`] that come from the cgroup statistics alone.
fn from_stats(s: &Stats) -> Usage {
    let raw = &s.memory.raw;
    // v1 has total_* (hierarchical) keys; v2's memory.stat is hierarchical already.
    let pick = |v1: &str, v2: &str| raw.get(v1).or_else(|| raw.get(v2)).copied().unwrap_or(0);
    let limit = s.memory.usage.limit;
    // v1's cpuacct.usage_all gives user and system time per cpu in ns; cpuacct.stat
    // only in clock ticks (10 ms). v2's cpu.stat is in µs.
    let (user, system) = if s.cpu.usage.percpu_user.is_empty() {
        (s.cpu.usage.user, s.cpu.usage.kernel)
    } else {
        (
            s.cpu.usage.percpu_user.iter().sum(),
            s.cpu.usage.percpu_kernel.iter().sum(),
        )
    };
    Usage {
        cpu_ns: s.cpu.usage.total,
        cpu_user_ns: user,
        cpu_system_ns: system,
        mem_usage: s.memory.usage.usage,
        mem_working_set: mem_usage_no_cache(&s.memory),
        mem_rss: pick("total_rss", "anon"),
        mem_cache: pick("total_cache", "file"),
        mem_limit: if is_unlimited(limit) { 0 } else { limit },
        block: block_devices(s),
        ..Usage::default()
    }
}

/// A memory limit that means none: v2's "max" (u64::MAX), v1's page-rounded
/// LONG_MAX (0x7FFFFFFFFFFFF000), or 0.
fn is_unlimited(limit: u64) -> bool {
    limit == 0 || limit >= 0x7FFF_FFFF_FFFF_F000
}

/// Read and written bytes per device from io_service_bytes_recursive.
fn block_devices(s: &Stats) -> Vec<DeviceIo> {
    let mut out: Vec<(u64, u64, DeviceIo)> = Vec::new();
    for e in &s.blkio.io_service_bytes_recursive {
        let read = e.op.eq_ignore_ascii_case("read");
        if !read && !e.op.eq_ignore_ascii_case("write") {
            continue;
        }
        let i = match out.iter().position(|(ma, mi, _)| *ma == e.major && *mi == e.minor) {
            Some(i) => i,
            None => {
                out.push((e.major, e.minor, DeviceIo::default()));
                out.len() - 1
            }
        };
        let d = &mut out[i].2;
        if read {
            d.read_bytes = d.read_bytes.saturating_add(e.value);
        } else {
            d.write_bytes = d.write_bytes.saturating_add(e.value);
        }
    }
    out.into_iter()
        .map(|(ma, mi, mut d)| {
            d.device = device_name(ma, mi);
            d
        })
        .collect()
}

/// `/dev/NAME` of block device MAJOR:MINOR (DEVNAME of its uevent), else "MAJOR:MINOR".
fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// The interfaces of process `pid`'s network namespace but `lo`; none when that is
/// the caller's own namespace (a container on the host's network) or `pid` is gone.
fn interfaces(pid: i32) -> Result<Vec<Interface>> {
    if pid <= 0 {
        return Ok(Vec::new());
    }
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    let own = std::fs::read_link("/proc/self/ns/net");
    match (ns, own) {
        (Ok(a), Ok(b)) if a == b => return Ok(Vec::new()),
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => {}
    }
    let path = format!("/proc/{pid}/net/dev");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(parse_interfaces(&s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Parses /proc/net/dev (proc_net(5)): per interface but `lo`, the receive fields
/// bytes packets errs drop (1-4) and the transmit ones (9-12).
fn parse_interfaces(s: &str) -> Vec<Interface> {
    s.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let name = name.trim();
            if name == "lo" || name.contains('|') {
                return None;
            }
            let f: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
            (f.len() >= 16).then(|| Interface {
                name: name.to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

/// The cgroup2 directory of cgroup `path` on this host: /sys/fs/cgroup/PATH on a
/// unified host, /sys/fs/cgroup/unified/PATH on a hybrid one, none on a v1-only host.
fn pressure_dir(path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    match cgroups::hierarchy() {
        Hierarchy::Unified => Some(Path::new(cgroups::CGROUP_ROOT).join(rel)),
        Hierarchy::Hybrid => Some(Path::new(cgroups::CGROUP_ROOT).join("unified").join(rel)),
        Hierarchy::Legacy => None,
    }
}

/// PSI of the cgroup2 directory `dir`; none when it has no cpu.pressure (a kernel
/// without CONFIG_PSI, booted with psi=0, or no such directory).
fn pressure(dir: &Path) -> Option<Pressure> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let cpu = parse_pressure(&read("cpu.pressure")?);
    Some(Pressure {
        cpu,
        memory: read("memory.pressure").map(|s| parse_pressure(&s)).unwrap_or_default(),
        io: read("io.pressure").map(|s| parse_pressure(&s)).unwrap_or_default(),
    })
}

/// Parses a pressure file: `some avg10=.. avg60=.. avg300=.. total=US` and the same
/// with `full`.
fn parse_pressure(s: &str) -> Stall {
    let mut st = Stall::default();
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let kind = f.next();
        let total = f
            .find_map(|kv| kv.strip_prefix("total=")?.parse::<u64>().ok())
            .unwrap_or(0);
        match kind {
            Some("some") => st.some_us = total,
            Some("full") => st.full_us = total,
            _ => {}
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_runtime::cgroups::stats::BlkioEntry;

    #[test]
    fn memory_on_v1_and_v2() {
        let mut s = Stats::default();
        s.memory.usage.usage = 10_000;
        s.memory.usage.limit = 0x7FFF_FFFF_FFFF_F000;
        for (k, v) in [
            ("total_rss", 3000),
            ("total_cache", 6000),
            ("total_inactive_file", 4000),
            ("rss", 1),
        ] {
            s.memory.raw.insert(k.into(), v);
        }
        let u = from_stats(&s);
        assert_eq!(
            (u.mem_usage, u.mem_working_set, u.mem_rss, u.mem_cache),
            (10_000, 6000, 3000, 6000)
        );
        assert_eq!(u.mem_limit, 0, "v1's unlimited value is no limit");

        let mut s = Stats::default();
        s.memory.usage.usage = 10_000;
        s.memory.usage.limit = 64 << 20;
        for (k, v) in [("anon", 2000), ("file", 7000), ("inactive_file", 5000)] {
            s.memory.raw.insert(k.into(), v);
        }
        let u = from_stats(&s);
        assert_eq!(
            (u.mem_working_set, u.mem_rss, u.mem_cache, u.mem_limit),
            (5000, 2000, 7000, 64 << 20)
        );
        s.memory.usage.limit = u64::MAX;
        assert_eq!(from_stats(&s).mem_limit, 0, "v2's max is no limit");
    }

    #[test]
    fn cpu_split() {
        let mut s = Stats::default();
        s.cpu.usage.total = 5;
        s.cpu.usage.user = 3;
        s.cpu.usage.kernel = 2;
        let u = from_stats(&s);
        assert_eq!((u.cpu_ns, u.cpu_user_ns, u.cpu_system_ns), (5, 3, 2));
        // v1 with cpuacct.usage_all: its ns per cpu win over cpuacct.stat's ticks.
        s.cpu.usage.percpu_user = vec![1, 10];
        s.cpu.usage.percpu_kernel = vec![100, 1000];
        let u = from_stats(&s);
        assert_eq!((u.cpu_user_ns, u.cpu_system_ns), (11, 1100));
    }

    #[test]
    fn block_io_per_device() {
        let mut s = Stats::default();
        let e = |major, minor, op: &str, value| BlkioEntry {
            major,
            minor,
            op: op.into(),
            value,
        };
        s.blkio.io_service_bytes_recursive = vec![
            e(4095, 0, "Read", 10),
            e(4095, 0, "Write", 20),
            e(4095, 0, "Total", 30),
            e(4095, 1, "Write", 2),
            e(4095, 0, "Read", 1),
        ];
        let b = block_devices(&s);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].device.as_str(), b[0].read_bytes, b[0].write_bytes),
            ("4095:0", 11, 20)
        );
        assert_eq!(
            (b[1].device.as_str(), b[1].read_bytes, b[1].write_bytes),
            ("4095:1", 0, 2)
        );
    }

    #[test]
    fn net_dev_per_interface() {
        let s = "Inter-|   Receive                                                |  Transmit\n \
                 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                 lo: 6667963127  262553    0    0    0     0          0         0 6667963127  262553    0    0    0     0       0          0\n  \
                 eth0: 490414298   18725    1    2    0     0          0         0   991140   10893    3    4    0     0       0          0\n  \
                 eth1:10 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n";
        let i = parse_interfaces(s);
        assert_eq!(i.len(), 2);
        assert_eq!(
            i[0],
            Interface {
                name: "eth0".into(),
                rx_bytes: 490414298,
                rx_packets: 18725,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 991140,
                tx_packets: 10893,
                tx_errors: 3,
                tx_dropped: 4,
            }
        );
        assert_eq!((i[1].name.as_str(), i[1].rx_bytes, i[1].tx_bytes), ("eth1", 10, 5));
    }

    #[test]
    fn pressure_files() {
        let s =
            "some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=789\n";
        assert_eq!(
            parse_pressure(s),
            Stall {
                some_us: 123456,
                full_us: 789
            }
        );
        assert_eq!(parse_pressure("garbage"), Stall::default());
        let d = tempfile::tempdir().unwrap();
        assert_eq!(pressure(d.path()), None, "no cpu.pressure: no PSI");
        std::fs::write(d.path().join("cpu.pressure"), s).unwrap();
        std::fs::write(d.path().join("io.pressure"), "some avg10=0 avg60=0 avg300=0 total=5\n").unwrap();
        let p = pressure(d.path()).unwrap();
        assert_eq!((p.cpu.some_us, p.memory.some_us, p.io.some_us), (123456, 0, 5));
    }

    #[test]
    fn unknown_container_is_not_exist() {
        let d = tempfile::tempdir().unwrap();
        let e = usage(d.path(), "vessel-no-such").unwrap_err();
        assert!(matches!(e, Error::Runtime(vessel_runtime::Error::NotExist(_))), "{e}");
        let m = machine().unwrap();
        assert!(m.memory_bytes > 0 && m.cpu_cores > 0, "{m:?}");
    }
}
