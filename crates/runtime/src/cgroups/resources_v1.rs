//! `linux.resources` on cgroup v1 (and hybrid) hosts: each field to the file of its
//! controller's hierarchy (Documentation/admin-guide/cgroup-v1/{memory,cpusets,blkio-
//! controller,hugetlb,net_cls,net_prio,pids,rdma}.rst, kernel/sched for cpu.*), with
//! runc's write order. Only `linux.resources.unified` and, where no v1 hugetlb hierarchy
//! exists, hugepage limits go to the hybrid host's cgroup2 directory.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBlockIo, LinuxResources, LinuxThrottleDevice};

use super::devices;
use super::hostdevs;
use super::limits::{self, invalid, v1_value};
use super::plan::{read, Plan, Restore};
use super::v1::Manager;
use crate::error::Result;

/// The host's cgroup version in messages.
const HOST: &str = "this cgroup v1 host";

fn need(m: &Manager, controller: &str, field: &str) -> Result<PathBuf> {
    if m.has_none() {
        return Err(super::no_hierarchy());
    }
    m.controller_dir(controller).ok_or_else(|| {
        invalid(
            field,
            format!("{HOST} has no {controller} cgroup hierarchy mounted, so the field cannot be honoured: mount one (cgroup v1, -o {controller}) or drop the field"),
        )
    })
}

fn need_file(dir: &Path, file: &str, field: &str, why: &str) -> Result<PathBuf> {
    let p = dir.join(file);
    if p.exists() {
        Ok(p)
    } else {
        Err(invalid(field, format!("{HOST} has no {file} ({why}): drop the field")))
    }
}

/// The writes that apply `r` to the container's v1 cgroups, after every check.
///
/// Errors: [`Error::Invalid`] for values no file of this host can take.
pub(crate) fn plan(m: &Manager, r: &LinuxResources) -> Result<Plan> {
    limits::validate(r)?;
    let mut p = Plan::default();
    memory(m, r, &mut p)?;
    cpu(m, r, &mut p)?;
    if let Some(pids) = r.pids().filter(|p| p.limit() != 0) {
        let dir = need(m, "pids", "pids.limit")?;
        let v = if pids.limit() == -1 {
            "max".to_string()
        } else {
            pids.limit().to_string()
        };
        p.write("pids.limit", dir.join("pids.max"), v);
    }
    if let Some(b) = r.block_io() {
        blkio(m, b, &mut p)?;
    }
    hugetlb(m, r, &mut p)?;
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            let dir = need(m, "net_cls", "network.classID")?;
            p.write("network.classID", dir.join("net_cls.classid"), id.to_string());
        }
        for prio in n.priorities().iter().flatten() {
            let dir = need(m, "net_prio", "network.priorities")?;
            p.write_with(
                "network.priorities",
                dir.join("net_prio.ifpriomap"),
                format!("{} {}", prio.name(), prio.priority()),
                Restore::No,
            );
        }
    }
    for (dev, limit) in r.rdma().iter().flatten() {
        let field = format!("rdma.{dev}");
        let dir = need(m, "rdma", &field)?;
        hostdevs::rdma_device(dev).map_err(|why| invalid(&field, why))?;
        p.write(
            &field,
            dir.join("rdma.max"),
            rdma_line(dev, limit.hca_handles(), limit.hca_objects()),
        );
    }
    for (key, value) in r.unified().iter().flatten() {
        let field = format!("unified.{key}");
        let dir = m.unified_dir().ok_or_else(|| {
            invalid(
                &field,
                format!("{HOST} has no cgroup2 hierarchy (not hybrid), and `unified` keys are cgroup v2 files"),
            )
        })?;
        let f = dir.join(key);
        if !f.exists() {
            return Err(invalid(&field, format!("the hybrid host's cgroup2 at /sys/fs/cgroup/unified has no {key} (its controllers live in v1 hierarchies)")));
        }
        p.write(&field, f, value.clone());
    }
    if let Some(rules) = r.devices() {
        let prog = devices::program(rules)?;
        let dir = need(m, "devices", "devices")?;
        for (path, line) in devices::v1_writes(&dir, &prog) {
            p.write_with("devices", path, line, Restore::No);
        }
    }
    Ok(p)
}

/// The `rdma.max` line: `mlx4_0 hca_handle=2 hca_object=2000`.
pub(crate) fn rdma_line(dev: &str, handles: Option<u32>, objects: Option<u32>) -> String {
    let mut s = dev.to_string();
    if let Some(h) = handles {
        s += &format!(" hca_handle={h}");
    }
    if let Some(o) = objects {
        s += &format!(" hca_object={o}");
    }
    s
}

fn memory(m: &Manager, r: &LinuxResources, p: &mut Plan) -> Result<()> {
    let Some(mem) = r.memory() else { return Ok(()) };
    let set = |v: Option<i64>| v.unwrap_or(0);
    let (limit, mut swap) = (set(mem.limit()), set(mem.swap()));
    let any = limit != 0
        || swap != 0
        || mem.reservation().is_some_and(|v| v != 0)
        || mem.kernel().is_some_and(|v| v != 0)
        || mem.kernel_tcp().is_some_and(|v| v != 0)
        || mem.swappiness().is_some()
        || mem.disable_oom_killer().is_some()
        || mem.use_hierarchy().is_some();
    if !any {
        return Ok(());
    }
    let dir = need(m, "memory", "memory")?;
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if limit == -1 && swap == 0 && memsw.exists() {
        swap = -1;
    }
    if swap > 0 && !memsw.exists() {
        return Err(invalid("memory.swap", format!("{HOST} does not account swap (no memory.memsw.limit_in_bytes): boot with swapaccount=1 or drop the field")));
    }
    if swap == -1 && !memsw.exists() {
        swap = 0;
    }
    if mem.check_before_update() == Some(true) {
        // memory.memsw.usage_in_bytes counts memory plus swap, as the spec's swap does.
        limits::check_before_update(
            limit,
            &dir.join("memory.usage_in_bytes"),
            swap,
            &[dir.join("memory.memsw.usage_in_bytes")],
        )?;
    }
    let limit_file = dir.join("memory.limit_in_bytes");
    if limit != 0 && swap != 0 {
        // memsw >= limit must hold after each write: raise memsw first when it grows.
        let cur: i64 = read(&limit_file).and_then(|s| s.parse().ok()).unwrap_or(i64::MAX);
        if swap == -1 || cur < swap {
            p.write("memory.swap", memsw, v1_value(swap));
            p.write("memory.limit", limit_file, v1_value(limit));
        } else {
            p.write("memory.limit", limit_file, v1_value(limit));
            p.write("memory.swap", memsw, v1_value(swap));
        }
    } else if limit != 0 {
        p.write("memory.limit", limit_file, v1_value(limit));
    } else if swap != 0 {
        p.write("memory.swap", memsw, v1_value(swap));
    }
    if let Some(v) = mem.reservation().filter(|v| *v != 0) {
        p.write(
            "memory.reservation",
            dir.join("memory.soft_limit_in_bytes"),
            v1_value(v),
        );
    }
    if let Some(v) = mem.kernel().filter(|v| *v != 0) {
        let f = need_file(
            &dir,
            "memory.kmem.limit_in_bytes",
            "memory.kernel",
            "the kernel dropped kernel memory limits",
        )?;
        // Recent kernels keep the file and take any value, which has no effect: read it
        // back, so that a limit the kernel ignores is an error, not a silent no-op.
        p.write_verified(
            "memory.kernel",
            f,
            v1_value(v),
            "this kernel keeps memory.kmem.limit_in_bytes but no longer enforces it (kernel memory limits are deprecated since Linux 5.4; kernel memory counts toward memory.limit): drop linux.resources.memory.kernel",
        );
    }
    if let Some(v) = mem.kernel_tcp().filter(|v| *v != 0) {
        let f = need_file(
            &dir,
            "memory.kmem.tcp.limit_in_bytes",
            "memory.kernelTCP",
            "no kernel TCP memory accounting",
        )?;
        p.write("memory.kernelTCP", f, v1_value(v));
    }
    if let Some(v) = mem.swappiness() {
        p.write("memory.swappiness", dir.join("memory.swappiness"), v.to_string());
    }
    if let Some(v) = mem.disable_oom_killer() {
        p.write_with(
            "memory.disableOOMKiller",
            dir.join("memory.oom_control"),
            if v { "1" } else { "0" },
            Restore::Value(if v { "0" } else { "1" }.into()),
        );
    }
    match mem.use_hierarchy() {
        Some(true) if read(&dir.join("memory.use_hierarchy")).as_deref() != Some("1") => {
            p.write("memory.useHierarchy", dir.join("memory.use_hierarchy"), "1");
        }
        Some(false) if read(&dir.join("memory.use_hierarchy")).as_deref() == Some("1") => {
            return Err(invalid(
                "memory.useHierarchy",
                format!("false cannot be honoured: {HOST}'s kernel keeps memory accounting hierarchical"),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn cpu(m: &Manager, r: &LinuxResources, p: &mut Plan) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    let cpu_dir = |field: &str| need(m, "cpu", field);
    if let Some(s) = c.shares().filter(|s| *s != 0) {
        p.write(
            "cpu.shares",
            cpu_dir("cpu.shares")?.join("cpu.shares"),
            s.clamp(limits::SHARES_MIN, limits::SHARES_MAX).to_string(),
        );
    }
    if let Some(v) = c.period().filter(|v| *v != 0) {
        p.write(
            "cpu.period",
            cpu_dir("cpu.period")?.join("cpu.cfs_period_us"),
            v.to_string(),
        );
    }
    if let Some(v) = c.quota().filter(|v| *v != 0) {
        p.write(
            "cpu.quota",
            cpu_dir("cpu.quota")?.join("cpu.cfs_quota_us"),
            v.to_string(),
        );
    }
    if let Some(v) = c.burst() {
        let f = need_file(
            &cpu_dir("cpu.burst")?,
            "cpu.cfs_burst_us",
            "cpu.burst",
            "a kernel without CFS burst",
        )?;
        p.write("cpu.burst", f, v.to_string());
    }
    if let Some(v) = c.realtime_period().filter(|v| *v != 0) {
        let f = need_file(
            &cpu_dir("cpu.realtimePeriod")?,
            "cpu.rt_period_us",
            "cpu.realtimePeriod",
            "a kernel without CONFIG_RT_GROUP_SCHED",
        )?;
        p.write("cpu.realtimePeriod", f, v.to_string());
    }
    if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
        let f = need_file(
            &cpu_dir("cpu.realtimeRuntime")?,
            "cpu.rt_runtime_us",
            "cpu.realtimeRuntime",
            "a kernel without CONFIG_RT_GROUP_SCHED",
        )?;
        p.write("cpu.realtimeRuntime", f, v.to_string());
    }
    if let Some(v) = c.idle() {
        let f = need_file(
            &cpu_dir("cpu.idle")?,
            "cpu.idle",
            "cpu.idle",
            "a kernel without SCHED_IDLE groups",
        )?;
        p.write("cpu.idle", f, v.to_string());
    }
    if let Some(s) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        p.write("cpu.cpus", need(m, "cpuset", "cpu.cpus")?.join("cpuset.cpus"), s);
    }
    if let Some(s) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        p.write("cpu.mems", need(m, "cpuset", "cpu.mems")?.join("cpuset.mems"), s);
    }
    Ok(())
}

/// The restore line for one device of a per-device file: its current line, or `M:m 0`
/// (which removes a throttle).
fn device_restore(file: &Path, major: i64, minor: i64) -> Restore {
    let key = format!("{major}:{minor} ");
    let old = read(file)
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(&key))
        .map(str::to_string);
    Restore::Value(old.unwrap_or_else(|| format!("{major}:{minor} 0")))
}

fn blkio(m: &Manager, b: &LinuxBlockIo, p: &mut Plan) -> Result<()> {
    let dir = || need(m, "blkio", "blockIO");
    let no_sched = "the proportional-weight I/O scheduler bfq is not loaded";
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        let d = dir()?;
        let f = ["blkio.weight", "blkio.bfq.weight"]
            .iter()
            .map(|f| d.join(f))
            .find(|f| f.exists());
        let f = f.ok_or_else(|| {
            invalid(
                "blockIO.weight",
                format!("{HOST} has neither blkio.weight nor blkio.bfq.weight ({no_sched}): load bfq (modprobe bfq) or drop the field"),
            )
        })?;
        p.write("blockIO.weight", f, w.to_string());
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        let f = need_file(
            &dir()?,
            "blkio.leaf_weight",
            "blockIO.leafWeight",
            "the CFQ scheduler is gone from this kernel",
        )?;
        p.write("blockIO.leafWeight", f, w.to_string());
    }
    for wd in b.weight_device().iter().flatten() {
        let d = dir()?;
        hostdevs::block_device(wd.major(), wd.minor()).map_err(|why| invalid("blockIO.weightDevice", why))?;
        if let Some(w) = wd.weight() {
            let (cfq, bfq) = (d.join("blkio.weight_device"), d.join("blkio.bfq.weight_device"));
            let f = if cfq.exists() {
                // CFQ (before Linux 5.0): the kernel checks the device itself.
                cfq
            } else if bfq.exists() {
                hostdevs::weight_target(wd.major(), wd.minor(), true, None)
                    .map_err(|why| invalid("blockIO.weightDevice", why))?;
                bfq
            } else {
                return Err(invalid(
                    "blockIO.weightDevice",
                    format!(
                        "{HOST} has no blkio.weight_device ({no_sched}): load bfq (modprobe bfq) or drop the field"
                    ),
                ));
            };
            p.write_with(
                "blockIO.weightDevice",
                f,
                format!("{}:{} {w}", wd.major(), wd.minor()),
                Restore::No,
            );
        }
        if let Some(w) = wd.leaf_weight() {
            let f = need_file(
                &d,
                "blkio.leaf_weight_device",
                "blockIO.weightDevice.leafWeight",
                "the CFQ scheduler is gone from this kernel",
            )?;
            p.write_with(
                "blockIO.weightDevice.leafWeight",
                f,
                format!("{}:{} {w}", wd.major(), wd.minor()),
                Restore::No,
            );
        }
    }
    let throttles: [(&str, &str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
        (
            "blockIO.throttleReadBpsDevice",
            "blkio.throttle.read_bps_device",
            b.throttle_read_bps_device(),
        ),
        (
            "blockIO.throttleWriteBpsDevice",
            "blkio.throttle.write_bps_device",
            b.throttle_write_bps_device(),
        ),
        (
            "blockIO.throttleReadIOPSDevice",
            "blkio.throttle.read_iops_device",
            b.throttle_read_iops_device(),
        ),
        (
            "blockIO.throttleWriteIOPSDevice",
            "blkio.throttle.write_iops_device",
            b.throttle_write_iops_device(),
        ),
    ];
    for (field, file, list) in throttles {
        for t in list.iter().flatten() {
            let f = need_file(&dir()?, file, field, "a kernel without CONFIG_BLK_DEV_THROTTLING")?;
            let restore = device_restore(&f, t.major(), t.minor());
            p.write_with(field, f, format!("{}:{} {}", t.major(), t.minor(), t.rate()), restore);
        }
    }
    Ok(())
}

fn hugetlb(m: &Manager, r: &LinuxResources, p: &mut Plan) -> Result<()> {
    let Some(list) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) else {
        return Ok(());
    };
    for h in list {
        let field = format!("hugepageLimits[{}]", h.page_size());
        let kb = limits::page_size_bytes(h.page_size()).unwrap_or(0) >> 10;
        if !Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB")).exists() {
            return Err(invalid(
                &field,
                format!("{HOST} has no {} huge pages (/sys/kernel/mm/hugepages)", h.page_size()),
            ));
        }
    }
    if let Some(dir) = m.controller_dir("hugetlb") {
        for h in list {
            let field = format!("hugepageLimits[{}]", h.page_size());
            p.write(
                &field,
                dir.join(format!("hugetlb.{}.limit_in_bytes", h.page_size())),
                v1_value(h.limit()),
            );
        }
        return Ok(());
    }
    // Hybrid hosts may carry hugetlb in their cgroup2 instead.
    let Some(dir) = m.unified_dir().filter(|_| {
        read(Path::new("/sys/fs/cgroup/unified/cgroup.controllers"))
            .is_some_and(|c| c.split(' ').any(|x| x == "hugetlb"))
    }) else {
        return Err(invalid(
            "hugepageLimits",
            format!("{HOST} has no hugetlb controller, in v1 or in its cgroup2"),
        ));
    };
    super::v2::enable_controllers(Path::new("/sys/fs/cgroup/unified"), &dir, &["hugetlb"], p);
    for h in list {
        let field = format!("hugepageLimits[{}]", h.page_size());
        p.write(
            &field,
            dir.join(format!("hugetlb.{}.max", h.page_size())),
            limits::v2_value(h.limit()),
        );
    }
    Ok(())
}
