//! Host-independent checks and unit conversions of `linux.resources` values
//! (runtime-spec config-linux.md "Control groups"): what every value must satisfy before
//! any cgroup file is written, and the v1 -> v2 conversions runc applies (cpu shares to
//! cpu.weight, blkio weight to io.weight, memory+swap to memory.swap.max).

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};

/// Kernel bounds of cpu.shares (kernel/sched: MIN_SHARES, MAX_SHARES).
pub const SHARES_MIN: u64 = 2;
/// Upper bound of cpu.shares.
pub const SHARES_MAX: u64 = 262_144;
/// Default CFS period in microseconds (100 ms), used on v2 when only a quota is given.
pub const DEFAULT_PERIOD_US: u64 = 100_000;

/// An [`Error::Invalid`] naming the `linux.resources` field and why it cannot be applied.
pub(super) fn invalid(field: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("linux.resources.{field}: {why}"))
}

/// `memory.checkBeforeUpdate` (runc's rule): refuses a memory limit (bytes) at or below
/// the cgroup's current usage, read from `usage_file` (v1 memory.usage_in_bytes, v2
/// memory.current), and a memory+swap limit `mem_swap` at or below the memory+swap usage,
/// the sum of `mem_swap_usage` (v1 memory.memsw.usage_in_bytes; v2 memory.current and
/// memory.swap.current), when the host accounts swap. Zero and -1 limits are not checked.
///
/// Errors: [`Error::Invalid`] naming the field, the value and the usage.
pub(super) fn check_before_update(
    limit: i64,
    usage_file: &std::path::Path,
    mem_swap: i64,
    mem_swap_usage: &[std::path::PathBuf],
) -> Result<()> {
    let num = |f: &std::path::Path| super::plan::read(f).and_then(|s| s.parse::<i64>().ok());
    if limit > 0 {
        let usage = num(usage_file).unwrap_or(0);
        if limit <= usage {
            return Err(invalid(
                "memory.limit",
                format!("{limit} bytes is not above the current usage of {usage} bytes ({}), and checkBeforeUpdate is set: the limit was left as it was; free memory in the container or choose a higher limit", usage_file.display()),
            ));
        }
    }
    if mem_swap > 0 {
        let parts: Option<Vec<i64>> = mem_swap_usage.iter().map(|f| num(f)).collect();
        if let Some(usage) = parts.map(|p| p.iter().sum::<i64>()) {
            if mem_swap <= usage {
                return Err(invalid(
                    "memory.swap",
                    format!("memory+swap {mem_swap} bytes is not above the current memory+swap usage of {usage} bytes, and checkBeforeUpdate is set: the limit was left as it was"),
                ));
            }
        }
    }
    Ok(())
}

/// A byte or count limit: positive, or -1 for "no limit"; 0 means unset.
fn check_limit(field: &str, v: Option<i64>) -> Result<()> {
    match v {
        None | Some(0) | Some(-1) => Ok(()),
        Some(n) if n > 0 => Ok(()),
        Some(n) => Err(invalid(
            field,
            format!("{n} is negative: use a positive value, or -1 for no limit"),
        )),
    }
}

/// Checks a cpuset list ("0-3,5"): digits, commas and ranges with low <= high.
pub fn check_cpuset_list(field: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() {
        return Ok(());
    }
    for part in s.trim().split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        match (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) {
            (Ok(l), Ok(h)) if l <= h => {}
            _ => return Err(invalid(field, format!("{s:?} is not a cpu/node list like \"0-3,5\""))),
        }
    }
    Ok(())
}

/// Checks every value of `r` that does not depend on the host: negative limits, ranges
/// of weights, swappiness, CFS period, cpuset syntax, page sizes, unified keys.
///
/// Errors: [`Error::Invalid`] naming the first bad field.
pub fn validate(r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        check_limit("memory.limit", m.limit())?;
        check_limit("memory.reservation", m.reservation())?;
        check_limit("memory.swap", m.swap())?;
        check_limit("memory.kernel", m.kernel())?;
        check_limit("memory.kernelTCP", m.kernel_tcp())?;
        if let Some(s) = m.swappiness().filter(|s| *s > 100) {
            return Err(invalid("memory.swappiness", format!("{s} is above 100")));
        }
        if let (Some(l), Some(s)) = (m.limit(), m.swap()) {
            if l > 0 && s > 0 && s < l {
                return Err(invalid("memory.swap", format!("memory+swap {s} must be at least memory.limit {l} (swap counts memory plus swap, as on cgroup v1)")));
            }
        }
    }
    if let Some(c) = r.cpu() {
        check_limit("cpu.quota", c.quota())?;
        if let Some(p) = c.period().filter(|p| *p != 0 && !(1000..=1_000_000).contains(p)) {
            return Err(invalid(
                "cpu.period",
                format!("{p} µs is outside 1000..1000000 (1 ms to 1 s)"),
            ));
        }
        if let Some(q) = c.quota().filter(|q| *q > 0 && *q < 1000) {
            return Err(invalid(
                "cpu.quota",
                format!("{q} µs is below the kernel's minimum of 1000 (1 ms)"),
            ));
        }
        if let Some(rt) = c.realtime_runtime().filter(|v| *v < -1) {
            return Err(invalid(
                "cpu.realtimeRuntime",
                format!("{rt} is negative: use a positive value or -1"),
            ));
        }
        if let Some(i) = c.idle().filter(|i| !(0..=1).contains(i)) {
            return Err(invalid("cpu.idle", format!("{i} must be 0 or 1")));
        }
        if let Some(s) = c.cpus() {
            check_cpuset_list("cpu.cpus", s)?;
        }
        if let Some(s) = c.mems() {
            check_cpuset_list("cpu.mems", s)?;
        }
    }
    if let Some(p) = r.pids() {
        check_limit("pids.limit", Some(p.limit()))?;
    }
    if let Some(b) = r.block_io() {
        let weight = |field: &str, w: Option<u16>| match w {
            Some(w) if w != 0 && !(10..=1000).contains(&w) => Err(invalid(field, format!("{w} is outside 10..1000"))),
            _ => Ok(()),
        };
        weight("blockIO.weight", b.weight())?;
        weight("blockIO.leafWeight", b.leaf_weight())?;
        for d in b.weight_device().iter().flatten() {
            weight("blockIO.weightDevice.weight", d.weight())?;
            weight("blockIO.weightDevice.leafWeight", d.leaf_weight())?;
            check_dev("blockIO.weightDevice", d.major(), d.minor())?;
        }
        for (field, list) in [
            ("blockIO.throttleReadBpsDevice", b.throttle_read_bps_device()),
            ("blockIO.throttleWriteBpsDevice", b.throttle_write_bps_device()),
            ("blockIO.throttleReadIOPSDevice", b.throttle_read_iops_device()),
            ("blockIO.throttleWriteIOPSDevice", b.throttle_write_iops_device()),
        ] {
            for d in list.iter().flatten() {
                check_dev(field, d.major(), d.minor())?;
            }
        }
    }
    for h in r.hugepage_limits().iter().flatten() {
        page_size_bytes(h.page_size()).ok_or_else(|| {
            invalid(
                "hugepageLimits.pageSize",
                format!("{:?} is not a size like \"2MB\" or \"1GB\"", h.page_size()),
            )
        })?;
        check_limit("hugepageLimits.limit", Some(h.limit()))?;
    }
    for (k, _) in r.unified().iter().flatten() {
        if k.contains('/')
            || !k.contains('.')
            || k.starts_with('.')
            || matches!(k.as_str(), "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control")
        {
            return Err(invalid(
                "unified",
                format!("key {k:?} is not a cgroup interface file name like \"memory.high\""),
            ));
        }
    }
    Ok(())
}

fn check_dev(field: &str, major: i64, minor: i64) -> Result<()> {
    if major < 0 || minor < 0 || major > i64::from(u32::MAX) || minor > i64::from(u32::MAX) {
        return Err(invalid(
            field,
            format!("device {major}:{minor} is not a valid major:minor"),
        ));
    }
    Ok(())
}

/// Bytes of a hugepage size as the spec writes it ("64KB", "2MB", "1GB"; binary units).
pub fn page_size_bytes(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "B" => 1,
        "KB" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// cpu shares (cgroup v1, 2..262144, default 1024) to cpu.weight (v2, 1..10000,
/// default 100), runc's linear formula `1 + ((shares - 2) * 9999) / 262142`; 0 = unset.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(SHARES_MIN, SHARES_MAX);
    1 + ((s - 2) * 9999) / 262_142
}

/// blkio weight (v1, 10..1000) to io.weight (v2, 1..10000), runc's
/// `1 + (weight - 10) * 9999 / 990`; 0 = unset.
pub fn blkio_weight_to_io(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// The v2 `memory.swap.max` value for the spec's memory+swap `swap` and `limit` (runc's
/// ConvertMemorySwapToCgroupV2Value): -1 = max, 0 = leave alone, else swap - limit.
///
/// Errors: [`Error::Invalid`] for swap without a memory limit, or below it.
pub fn swap_to_v2(swap: i64, limit: i64) -> Result<i64> {
    if limit == -1 && swap == 0 {
        return Ok(-1);
    }
    if swap == -1 || swap == 0 {
        return Ok(swap);
    }
    if limit == 0 || limit == -1 {
        return Err(invalid(
            "memory.swap",
            "a swap limit needs a memory limit on cgroup v2 (swap counts memory plus swap)",
        ));
    }
    if swap < limit {
        return Err(invalid(
            "memory.swap",
            format!("memory+swap {swap} must be at least memory.limit {limit}"),
        ));
    }
    Ok(swap - limit)
}

/// A limit for v1 files: "-1" for unlimited, else the number.
pub fn v1_value(v: i64) -> String {
    v.to_string()
}

/// A limit for v2 files: "max" for -1, else the number.
pub fn v2_value(v: i64) -> String {
    if v == -1 {
        "max".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn shares_weight() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1, "clamped to the kernel's minimum");
        assert_eq!(shares_to_weight(1 << 40), 10_000);
    }

    #[test]
    fn io_weight() {
        assert_eq!(blkio_weight_to_io(0), 0);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(500), 1 + 490 * 9999 / 990);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
    }

    #[test]
    fn swap() {
        assert_eq!(swap_to_v2(0, -1).unwrap(), -1);
        assert_eq!(swap_to_v2(-1, 100).unwrap(), -1);
        assert_eq!(swap_to_v2(0, 100).unwrap(), 0);
        assert_eq!(swap_to_v2(300, 100).unwrap(), 200);
        assert_eq!(swap_to_v2(100, 100).unwrap(), 0);
        assert!(swap_to_v2(50, 100).is_err());
        assert!(swap_to_v2(50, 0).is_err());
        assert_eq!(v2_value(-1), "max");
        assert_eq!(v1_value(-1), "-1");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size_bytes("2MB"), Some(2 << 20));
        assert_eq!(page_size_bytes("1GB"), Some(1 << 30));
        assert_eq!(page_size_bytes("64KB"), Some(64 << 10));
        assert_eq!(page_size_bytes("2M"), None);
        assert_eq!(page_size_bytes("MB"), None);
    }

    #[test]
    fn validation() {
        validate(&res(r#"{"memory":{"limit":33554432,"swap":-1},"pids":{"limit":-1},"cpu":{"cpus":"0-1,3","quota":50000,"period":100000}}"#)).unwrap();
        validate(&res(r#"{}"#)).unwrap();
        for (bad, field) in [
            (r#"{"memory":{"limit":-5}}"#, "memory.limit"),
            (r#"{"memory":{"limit":100,"swap":50}}"#, "memory.swap"),
            (r#"{"memory":{"swappiness":101}}"#, "memory.swappiness"),
            (r#"{"pids":{"limit":-2}}"#, "pids.limit"),
            (r#"{"cpu":{"period":10}}"#, "cpu.period"),
            (r#"{"cpu":{"quota":-7}}"#, "cpu.quota"),
            (r#"{"cpu":{"cpus":"1-0"}}"#, "cpu.cpus"),
            (r#"{"cpu":{"mems":"abc"}}"#, "cpu.mems"),
            (r#"{"blockIO":{"weight":5}}"#, "blockIO.weight"),
            (
                r#"{"hugepageLimits":[{"pageSize":"2XB","limit":1}]}"#,
                "hugepageLimits.pageSize",
            ),
            (r#"{"unified":{"../x":"1"}}"#, "unified"),
            (r#"{"unified":{"cgroup.procs":"1"}}"#, "unified"),
        ] {
            let e = validate(&res(bad)).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
