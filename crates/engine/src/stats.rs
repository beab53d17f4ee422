//! Usage of a running container for `vessel stats` and its process list for `vessel top`,
//! computed the way docker computes them. A [`Sample`] joins the runtime's cgroup
//! statistics (runc's `types.Stats`, from vessel-runtime's cgroup manager) with what
//! docker's daemon reads beside them: the host's CPU time and cpu count from
//! /proc/stat, MemTotal from /proc/meminfo and the network counters of the container's
//! network namespace from /proc/<init pid>/net/dev. [`cpu_percent`] and
//! [`format_bytes`] are docker CLI's formulas; [`top`] is `docker top`: the host's
//! `ps` filtered to the container's cgroup.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use vessel_runtime::cgroups::{self, stats::Memory, Stats};
use vessel_runtime::{Container, Status};

use crate::error::{Error, IoContext, Result};

/// One sample of a running container's usage. Counters (`cpu_ns`, `system_ns`, block
/// and network bytes) grow over the container's life: rates come from two samples
/// ([`cpu_percent`]); `mem_usage`, `mem_limit` and `pids` are values at `at`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Sample {
    /// Total CPU time used by the container's cgroup, ns (v1 cpuacct.usage, v2
    /// cpu.stat usage_usec × 1000).
    pub cpu_ns: u64,
    /// The host's total CPU time over all cpus at the same moment, ns: the sum of the
    /// first seven fields (user nice system idle iowait irq softirq) of /proc/stat's
    /// `cpu` line, as docker's daemon computes `system_cpu_usage`.
    pub system_ns: u64,
    /// Online cpus: the `cpuN` lines of /proc/stat (docker's `online_cpus`).
    pub online_cpus: u32,
    /// When the sample was taken: CLOCK_MONOTONIC, ns.
    pub at: u64,
    /// Memory in use, bytes, without the reclaimable page cache, as docker's CLI shows
    /// it: usage minus `total_inactive_file` (v1) or `inactive_file` (v2) of memory.stat.
    pub mem_usage: u64,
    /// Memory limit, bytes; the host's MemTotal when the cgroup is unlimited (any limit
    /// above MemTotal is shown as MemTotal).
    pub mem_limit: u64,
    /// Tasks in the cgroup (pids.current; the number of processes when the host has no
    /// pids controller).
    pub pids: u64,
    /// Bytes read from block devices (the `Read` entries of io_service_bytes_recursive).
    pub blk_read: u64,
    /// Bytes written to block devices (the `Write` entries).
    pub blk_write: u64,
    /// Bytes received on every interface but `lo` of the container's network
    /// namespace (/proc/<init pid>/net/dev); 0 when it shares the host's namespace, as
    /// docker reports for `--network host`.
    pub net_rx: u64,
    /// Bytes sent, counted like `net_rx`.
    pub net_tx: u64,
}

/// Takes one [`Sample`] of container `id` of the vessel-runtime state root `oci_root`
/// (the `--root` of vessel-oci). The container must be created, running or paused.
///
/// Errors: [`Error::Runtime`] with [`vessel_runtime::Error::NotExist`] or
/// `InvalidId` for an unknown id, or the cgroup manager's errors;
/// [`Error::WrongState`] when the container has stopped; [`Error::Io`] when /proc/stat,
/// /proc/meminfo or the init's net/dev cannot be read.
pub fn sample(oci_root: &Path, id: &str) -> Result<Sample> {
    let c = Container::load(oci_root, id)?;
    if c.state.status == Status::Stopped {
        return Err(Error::WrongState(format!("container {id} is not running")));
    }
    let manager = cgroups::manager(&c.state.cgroup_path);
    let stats = manager.stats()?;
    let at = monotonic_ns();
    let proc_stat = std::fs::read_to_string("/proc/stat").at("read", "/proc/stat")?;
    let (system_ns, online_cpus) = parse_proc_stat(&proc_stat, clock_ticks());
    let meminfo = std::fs::read_to_string("/proc/meminfo").at("read", "/proc/meminfo")?;
    let mem_total = parse_mem_total(&meminfo);
    let pids = match stats.pids.current {
        0 => manager.pids()?.len() as u64,
        n => n,
    };
    let (blk_read, blk_write) = block_io(&stats);
    let (net_rx, net_tx) = net_bytes(c.state.pid)?;
    Ok(Sample {
        cpu_ns: stats.cpu.usage.total,
        system_ns,
        online_cpus,
        at,
        mem_usage: mem_usage_no_cache(&stats.memory),
        mem_limit: mem_limit(stats.memory.usage.limit, mem_total),
        pids,
        blk_read,
        blk_write,
        net_rx,
        net_tx,
    })
}

/// How many processes the kernel's OOM killer has killed in the memory cgroup at
/// `cgroup_path` (a container's `cgroup_path` from its runtime state): the `oom_kill`
/// counter of v1 memory.oom_control or v2 memory.events (cgroup-v1/memory.rst "OOM
/// Control", cgroup-v2.rst "memory.events"). 0 when no memory hierarchy serves the
/// cgroup, the file cannot be read, or the kernel does not count (before 4.13).
pub fn oom_kills(cgroup_path: &Path) -> u64 {
    let rel = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    let file = match cgroups::hierarchy() {
        cgroups::Hierarchy::Unified => Path::new(cgroups::CGROUP_ROOT).join(rel).join("memory.events"),
        _ => match memory_v1_mount() {
            Some(m) => m.join(rel).join("memory.oom_control"),
            None => return 0,
        },
    };
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// The mount point of the v1 hierarchy that carries the memory controller, from
/// /proc/self/mountinfo.
fn memory_v1_mount() -> Option<std::path::PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split(' ');
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        opts.split(',')
            .any(|o| o == "memory")
            .then(|| pre.split(' ').nth(4).map(std::path::PathBuf::from))?
    })
}

/// CPU use between two samples in percent, docker's formula: (Δcpu_ns / Δsystem_ns) ×
/// online_cpus × 100, so one busy cpu is 100 and the whole host is online_cpus × 100.
/// 0 when either delta is not positive (the same sample twice, counters reset).
pub fn cpu_percent(prev: &Sample, cur: &Sample) -> f64 {
    let cpu_delta = cur.cpu_ns as f64 - prev.cpu_ns as f64;
    let system_delta = cur.system_ns as f64 - prev.system_ns as f64;
    if cpu_delta > 0.0 && system_delta > 0.0 {
        cpu_delta / system_delta * f64::from(cur.online_cpus) * 100.0
    } else {
        0.0
    }
}

/// A byte count for people, as docker prints sizes in `docker stats` (go-units'
/// `BytesSize`): binary units B, KiB, MiB, GiB, TiB, PiB, EiB, with at most four
/// significant digits and no trailing zeros: "0B", "512B", "1.5KiB", "1.945MiB",
/// "1000KiB", "16EiB".
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit < UNITS.len() - 1 {
        size /= 1024.0;
        unit += 1;
    }
    format!("{}{}", four_significant(size), UNITS[unit])
}

/// Go's `%.4g` for 0 <= x < 10000: four significant digits, trailing zeros removed.
fn four_significant(x: f64) -> String {
    let decimals = if x < 10.0 {
        3
    } else if x < 100.0 {
        2
    } else if x < 1000.0 {
        1
    } else {
        0
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The processes of container `id` (of vessel-runtime state root `oci_root`), like
/// `docker top`: runs the host's `ps` with `ps_args` (`-ef` when empty), finds the `PID`
/// column in its header and keeps the rows whose pid is in the container's cgroup.
/// Returns the header's column titles and the rows, each split into as many fields as
/// there are titles (the last field, the command, keeps its spaces). Pids are the
/// host's.
///
/// Errors: [`Error::Runtime`] for an unknown container or an unreadable cgroup;
/// [`Error::WrongState`] when it has stopped; [`Error::Io`] when `ps` cannot be run;
/// [`Error::BadInput`] when `ps` rejects the options or prints no PID column.
pub fn top(oci_root: &Path, id: &str, ps_args: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let c = Container::load(oci_root, id)?;
    if c.state.status == Status::Stopped {
        return Err(Error::WrongState(format!("container {id} is not running")));
    }
    let default_args = ["-ef".to_string()];
    let args = if ps_args.is_empty() { &default_args[..] } else { ps_args };
    let out = Command::new("ps").args(args).output().at("run", "ps")?;
    if !out.status.success() {
        return Err(Error::BadInput(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // The pids are read after ps ran: a process that ps saw and that has exited since
    // is left out rather than a host process that reused its pid kept.
    let pids: HashSet<i32> = cgroups::manager(&c.state.cgroup_path).pids()?.into_iter().collect();
    filter_ps(&String::from_utf8_lossy(&out.stdout), &pids)
}

/// Puts two columns first (podman's `huser` and `user` descriptors, by number): `HUID`, the
/// process's real uid on the host, and `CUID`, that uid inside the container's user
/// namespace (`/proc/PID/uid_map`); `?` for a process gone meanwhile.
/// `vessel top` adds them to [`top`]'s table (the Docker API's top keeps ps's columns).
pub fn with_uids(titles: &mut Vec<String>, rows: &mut [Vec<String>]) {
    let Some(col) = titles.iter().position(|t| t == "PID") else {
        return;
    };
    titles.splice(0..0, ["HUID".to_string(), "CUID".to_string()]);
    for row in rows.iter_mut() {
        let pid = row[col].clone();
        let host = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
            });
        let inside = host.and_then(|h| {
            let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()?;
            crate::idmap::to_container(&crate::idmap::parse_proc_map(&map), h)
        });
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
        row.splice(0..0, [show(host), show(inside)]);
    }
}

/// Splits `ps` output into titles and rows and keeps the rows whose PID is in `pids`
/// (docker's `parsePSOutput`).
fn filter_ps(out: &str, pids: &HashSet<i32>) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let col = titles.iter().position(|t| t == "PID").ok_or_else(|| {
        Error::BadInput("ps output has no PID column: pass ps options that print one (-ef, aux, -o pid,...)".into())
    })?;
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        if !fields[col].parse::<i32>().is_ok_and(|p| pids.contains(&p)) {
            continue;
        }
        let last = titles.len() - 1;
        let mut row: Vec<String> = fields[..last].iter().map(|f| f.to_string()).collect();
        row.push(fields[last..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

/// CLOCK_MONOTONIC now, ns.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}

/// Clock ticks per second (USER_HZ), the unit of /proc/stat.
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// From /proc/stat: the host's CPU time in ns (first seven fields of the `cpu` line, as
/// docker sums them) and the number of `cpuN` lines.
pub(crate) fn parse_proc_stat(s: &str, ticks_per_sec: u64) -> (u64, u32) {
    let mut ticks = 0u64;
    let mut cpus = 0u32;
    for line in s.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("cpu") => ticks = f.take(7).filter_map(|v| v.parse::<u64>().ok()).sum(),
            Some(name)
                if name.len() > 3 && name.starts_with("cpu") && name[3..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                cpus += 1
            }
            _ => {}
        }
    }
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_sec.max(1));
    (u64::try_from(ns).unwrap_or(u64::MAX), cpus)
}

/// MemTotal of /proc/meminfo, bytes (0 when absent).
pub(crate) fn parse_mem_total(s: &str) -> u64 {
    s.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// docker CLI's `calculateMemUsageUnixNoCache`: usage minus `total_inactive_file` on
/// v1 (the key exists only there), else minus `inactive_file` (v2), when smaller.
pub(crate) fn mem_usage_no_cache(m: &Memory) -> u64 {
    let usage = m.usage.usage;
    if let Some(&v) = m.raw.get("total_inactive_file") {
        if v < usage {
            return usage - v;
        }
    }
    match m.raw.get("inactive_file") {
        Some(&v) if v < usage => usage - v,
        _ => usage,
    }
}

/// The cgroup's limit, or MemTotal when unlimited (0, v2's u64::MAX, v1's huge
/// page-rounded value) or above it.
fn mem_limit(limit: u64, mem_total: u64) -> u64 {
    if mem_total > 0 && (limit == 0 || limit > mem_total) {
        mem_total
    } else {
        limit
    }
}

/// Bytes read and written: the `Read` and `Write` entries of io_service_bytes_recursive
/// over every device (docker CLI's `calculateBlockIO`).
fn block_io(s: &Stats) -> (u64, u64) {
    let mut read = 0u64;
    let mut write = 0u64;
    for e in &s.blkio.io_service_bytes_recursive {
        if e.op.eq_ignore_ascii_case("read") {
            read = read.saturating_add(e.value);
        } else if e.op.eq_ignore_ascii_case("write") {
            write = write.saturating_add(e.value);
        }
    }
    (read, write)
}

/// Received and sent bytes of the network namespace of process `pid`, every interface
/// but `lo`; (0, 0) when it is the caller's own namespace (the container shares the
/// host's network) or the process is gone.
fn net_bytes(pid: i32) -> Result<(u64, u64)> {
    if pid <= 0 {
        return Ok((0, 0));
    }
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"));
    let own = std::fs::read_link("/proc/self/ns/net");
    match (ns, own) {
        (Ok(a), Ok(b)) if a == b => return Ok((0, 0)),
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        _ => {}
    }
    let path = format!("/proc/{pid}/net/dev");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(parse_net_dev(&s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => Ok((0, 0)),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Sums /proc/net/dev's receive bytes (first field after `name:`) and transmit bytes
/// (ninth) over every interface but `lo`.
fn parse_net_dev(s: &str) -> (u64, u64) {
    let mut rx = 0u64;
    let mut tx = 0u64;
    for line in s.lines() {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() >= 16 {
            rx = rx.saturating_add(f[0]);
            tx = tx.saturating_add(f[8]);
        }
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_runtime::cgroups::stats::BlkioEntry;

    fn at(cpu_ns: u64, system_ns: u64, online_cpus: u32) -> Sample {
        Sample {
            cpu_ns,
            system_ns,
            online_cpus,
            ..Sample::default()
        }
    }

    #[test]
    fn cpu_percent_is_dockers_formula() {
        // One of two cpus busy: half the host's time, times 2 cpus = 100%.
        let p = cpu_percent(&at(0, 0, 2), &at(1_000_000_000, 2_000_000_000, 2));
        assert!((p - 100.0).abs() < 1e-9, "{p}");
        let p = cpu_percent(&at(500, 1000, 4), &at(750, 2000, 4));
        assert!((p - 100.0).abs() < 1e-9, "{p}");
        let p = cpu_percent(&at(0, 0, 1), &at(10, 1000, 1));
        assert!((p - 1.0).abs() < 1e-9, "{p}");
        // No host time passed, or counters went back: 0.
        assert_eq!(cpu_percent(&at(0, 5, 2), &at(100, 5, 2)), 0.0);
        assert_eq!(cpu_percent(&at(100, 0, 2), &at(50, 10, 2)), 0.0);
        assert_eq!(cpu_percent(&at(0, 10, 2), &at(0, 5, 2)), 0.0);
    }

    #[test]
    fn format_bytes_is_go_units_bytes_size() {
        let cases = [
            (0, "0B"),
            (1, "1B"),
            (512, "512B"),
            (1023, "1023B"),
            (1024, "1KiB"),
            (1536, "1.5KiB"),
            (512 * 1024, "512KiB"),
            (1024 * 1024 - 1, "1024KiB"),
            (1024 * 1024, "1MiB"),
            (1_572_864, "1.5MiB"),
            (2_039_808, "1.945MiB"),
            (1000 * 1024, "1000KiB"),
            (10_400, "10.16KiB"),
            (123_456_789, "117.7MiB"),
            (8_232_734_720, "7.667GiB"),
            (1 << 40, "1TiB"),
            (u64::MAX, "16EiB"),
        ];
        for (n, want) in cases {
            assert_eq!(format_bytes(n), want, "{n}");
        }
    }

    #[test]
    fn proc_stat() {
        let s = "cpu  736211 0 129572 1129604 8012 0 1762 730 0 0\n\
                 cpu0 361827 0 61290 577071 1948 0 169 371 0 0\n\
                 cpu1 374383 0 68282 552533 6063 0 1593 358 0 0\n\
                 intr 1 2 3\nctxt 5\ncpufreq 1\n";
        let (ns, cpus) = parse_proc_stat(s, 100);
        // Steal (730) is not counted, as docker does not.
        assert_eq!(ns, (736211 + 129572 + 1129604 + 8012 + 1762) * 10_000_000);
        assert_eq!(cpus, 2);
        assert_eq!(parse_proc_stat("", 100), (0, 0));
    }

    #[test]
    fn meminfo() {
        assert_eq!(
            parse_mem_total("MemTotal:        8039784 kB\nMemFree: 1 kB\n"),
            8039784 * 1024
        );
        assert_eq!(parse_mem_total("garbage"), 0);
    }

    #[test]
    fn memory_without_cache() {
        let mut m = Memory::default();
        m.usage.usage = 1000;
        m.raw.insert("total_inactive_file".into(), 300);
        m.raw.insert("inactive_file".into(), 100);
        assert_eq!(mem_usage_no_cache(&m), 700, "v1 takes total_inactive_file");
        m.raw.remove("total_inactive_file");
        assert_eq!(mem_usage_no_cache(&m), 900, "v2 takes inactive_file");
        m.raw.insert("inactive_file".into(), 5000);
        assert_eq!(mem_usage_no_cache(&m), 1000, "never below zero");
    }

    #[test]
    fn memory_limit() {
        assert_eq!(mem_limit(u64::MAX, 8 << 30), 8 << 30);
        assert_eq!(mem_limit(0x7FFF_FFFF_FFFF_F000, 8 << 30), 8 << 30);
        assert_eq!(mem_limit(0, 8 << 30), 8 << 30);
        assert_eq!(mem_limit(512 << 20, 8 << 30), 512 << 20);
    }

    #[test]
    fn block_io_sums_reads_and_writes() {
        let mut s = Stats::default();
        let e = |minor, op: &str, value| BlkioEntry {
            major: 8,
            minor,
            op: op.into(),
            value,
        };
        s.blkio.io_service_bytes_recursive = vec![
            e(0, "Read", 10),
            e(0, "Write", 20),
            e(0, "Sync", 30),
            e(0, "Total", 30),
            e(16, "Read", 1),
            e(16, "Write", 2),
        ];
        assert_eq!(block_io(&s), (11, 22));
    }

    #[test]
    fn net_dev() {
        let s = "Inter-|   Receive                                                |  Transmit\n \
                 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                 lo: 6667963127  262553    0    0    0     0          0         0 6667963127  262553    0    0    0     0       0          0\n  \
                 eth0: 490414298   18725    0    0    0     0          0         0   991140   10893    0    0    0     0       0          0\n  \
                 eth1:10 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n";
        assert_eq!(parse_net_dev(s), (490414308, 991145));
    }

    #[test]
    fn ps_filter() {
        let out = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                   root           1       0  0 10:00 ?        00:00:01 /sbin/init\n\
                   root          42       1  0 10:00 ?        00:00:00 sleep 1000\n\
                   root          43      42  0 10:00 ?        00:00:00 sh -c while :; do :; done\n";
        let (titles, rows) = filter_ps(out, &HashSet::from([42, 43])).unwrap();
        assert_eq!(titles, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][7], "sleep 1000");
        assert_eq!(rows[1][7], "sh -c while :; do :; done");
        assert!(rows.iter().all(|r| r.len() == titles.len()));
        assert!(matches!(
            filter_ps("USER COMMAND\nroot x\n", &HashSet::new()),
            Err(Error::BadInput(_))
        ));
        assert!(matches!(filter_ps("", &HashSet::new()), Err(Error::BadInput(_))));
    }

    #[test]
    fn unknown_container_is_not_exist() {
        let d = tempfile::tempdir().unwrap();
        let e = sample(d.path(), "vessel-no-such").unwrap_err();
        assert!(matches!(e, Error::Runtime(vessel_runtime::Error::NotExist(_))), "{e}");
        let e = top(d.path(), "vessel-no-such", &[]).unwrap_err();
        assert!(matches!(e, Error::Runtime(vessel_runtime::Error::NotExist(_))), "{e}");
    }
}
