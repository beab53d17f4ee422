//! Host devices that per-device cgroup limits name: whether a block device takes a
//! per-device proportional weight (it needs the bfq scheduler, or io.cost on cgroup v2)
//! and whether an RDMA device exists, so that `set` can refuse such an entry with the
//! reason before the kernel answers a bare EOPNOTSUPP or ENODEV.

use std::fs;
use std::path::{Path, PathBuf};

/// Where a per-device weight goes for one block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightTarget {
    /// The device runs bfq: its weight file takes `M:m WEIGHT` in bfq's range.
    Bfq,
    /// io.cost is active on the device (cgroup v2): io.weight takes `M:m WEIGHT`.
    IoCost,
}

/// sysfs directory of block device `major:minor`.
fn sysfs_dir(major: i64, minor: i64) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
}

/// The device's kernel name (`vda`, `loop0`), for messages; `major:minor` if unknown.
fn name(major: i64, minor: i64) -> String {
    fs::canonicalize(sysfs_dir(major, minor))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// Checks that block device `major:minor` exists; gives its kernel name.
///
/// Errors: the reason, naming the sysfs path that is missing.
pub(crate) fn block_device(major: i64, minor: i64) -> Result<String, String> {
    let dir = sysfs_dir(major, minor);
    if !dir.exists() {
        return Err(format!(
            "there is no block device {major}:{minor} on this host ({} is missing): name an existing disk",
            dir.display()
        ));
    }
    Ok(name(major, minor))
}

/// The selected I/O scheduler of a whole disk (`[mq-deadline]` in queue/scheduler).
///
/// Errors: the reason, for a missing device or one without a request queue.
fn scheduler(major: i64, minor: i64) -> Result<String, String> {
    block_device(major, minor)?;
    let dir = sysfs_dir(major, minor);
    let text = fs::read_to_string(dir.join("queue/scheduler")).map_err(|_| {
        format!(
            "{} ({major}:{minor}) is a partition or has no request queue: weights apply to whole disks",
            name(major, minor)
        )
    })?;
    Ok(text
        .split_whitespace()
        .find_map(|s| s.strip_prefix('[').and_then(|s| s.strip_suffix(']')))
        .unwrap_or("none")
        .to_string())
}

/// Whether the v2 root cgroup's io.cost.qos (under `cgroup_root`) lists the device,
/// i.e. io.cost is set up for it and io.weight takes a per-device weight.
fn iocost_active(cgroup_root: &Path, major: i64, minor: i64) -> bool {
    fs::read_to_string(cgroup_root.join("io.cost.qos"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{major}:{minor} ")))
}

/// Where a per-device weight for `major:minor` can go: bfq's weight file when the device
/// runs bfq and `bfq_file` exists, else (on v2, `cgroup_root` given) io.weight when
/// io.cost is active on it.
///
/// Errors: why neither works, with the host-wide change that would make it work.
pub(crate) fn weight_target(
    major: i64,
    minor: i64,
    bfq_file: bool,
    cgroup_root: Option<&Path>,
) -> Result<WeightTarget, String> {
    let sched = scheduler(major, minor)?;
    if sched == "bfq" && bfq_file {
        return Ok(WeightTarget::Bfq);
    }
    if let Some(root) = cgroup_root {
        if iocost_active(root, major, minor) {
            return Ok(WeightTarget::IoCost);
        }
    }
    let dev = name(major, minor);
    let bfq_fix = if bfq_file {
        format!("select it with `echo bfq > /sys/block/{dev}/queue/scheduler`")
    } else {
        format!("load it (modprobe bfq) and select it with `echo bfq > /sys/block/{dev}/queue/scheduler`")
    };
    let iocost = if cgroup_root.is_some() {
        format!(
            ", or enable io.cost for it in the root cgroup's io.cost.qos (`echo \"{major}:{minor} enable=1\" > /sys/fs/cgroup/io.cost.qos`)"
        )
    } else {
        String::new()
    };
    Err(format!(
        "{dev} ({major}:{minor}) uses the {sched} I/O scheduler, and the kernel takes per-device weights only for disks on bfq{}: {bfq_fix}{iocost} (host-wide changes), or drop the entry",
        if cgroup_root.is_some() { " or io.cost" } else { "" }
    ))
}

/// Checks that the RDMA device `dev` exists (/sys/class/infiniband/DEV).
///
/// Errors: the reason, listing the devices the host has.
pub(crate) fn rdma_device(dev: &str) -> Result<(), String> {
    let class = Path::new("/sys/class/infiniband");
    if !dev.is_empty() && !dev.contains('/') && class.join(dev).exists() {
        return Ok(());
    }
    let mut have: Vec<String> = fs::read_dir(class)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    have.sort();
    let have = if have.is_empty() {
        "none".to_string()
    } else {
        have.join(", ")
    };
    Err(format!(
        "there is no RDMA device {dev:?} on this host (/sys/class/infiniband has: {have}): name one of those"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_devices_are_named() {
        let e = weight_target(4094, 1_048_570, true, None).unwrap_err();
        assert!(e.contains("no block device 4094:1048570"), "{e}");
        let e = rdma_device("vessel-no-such-hca").unwrap_err();
        assert!(
            e.contains("\"vessel-no-such-hca\"") && e.contains("/sys/class/infiniband"),
            "{e}"
        );
        assert!(rdma_device("../x").is_err());
    }
}
