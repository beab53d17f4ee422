//! `linux.resources` on a unified cgroup v2 host (Documentation/admin-guide/cgroup-v2.rst),
//! with runc's conversions: cpu shares -> cpu.weight, quota/period -> cpu.max, memory
//! limit+swap -> memory.max and memory.swap.max (swap minus limit), reservation ->
//! memory.low, blkio weight -> io.bfq.weight or io.weight, throttles -> io.max, pids ->
//! pids.max, hugepage limits -> hugetlb.<size>.max, rdma -> rdma.max, `unified` keys as
//! given. v1-only fields (kernel memory, swappiness, disableOOMKiller, realtime cpu,
//! leaf weights) are refused when set; network classID/priorities are ignored with a
//! warning, as runc ignores them. Device rules become an eBPF program ([`super::bpf`]),
//! attached after the file writes.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxResources};

use super::devices::{self, Program};
use super::hostdevs::{self, WeightTarget};
use super::limits::{self, invalid, v2_value};
use super::plan::{read, Plan, Restore};
use crate::error::{Error, Result};

/// The host's cgroup version in messages.
const HOST: &str = "this cgroup v2 host";

fn v1_only(field: &str, what: &str) -> Error {
    invalid(
        field,
        format!("{what} exists only in cgroup v1; {HOST} cannot honour it: drop the field"),
    )
}

/// Why `network` fields are ignored here (as runc ignores them on v2; crun refuses them).
pub const NETWORK_V1_ONLY: &str = "net_cls and net_prio exist only in cgroup v1 and this host is cgroup v2, so no traffic is classified or prioritised by it; match the container's cgroup path instead (iptables -m cgroup --path, or a cgroup eBPF program)";

/// The `network` fields of `r` that are set, which a v2 host ignores.
pub fn network_ignored(r: &LinuxResources) -> Vec<&'static str> {
    let mut v = Vec::new();
    if let Some(n) = r.network() {
        if n.class_id().is_some_and(|id| id != 0) {
            v.push("network.classID");
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            v.push("network.priorities");
        }
    }
    v
}

/// Checks that `controller` is available in the cgroup `dir` (listed in its
/// cgroup.controllers, i.e. enabled by the parent).
fn need(dir: &Path, controller: &str, field: &str) -> Result<()> {
    let list = read(&dir.join("cgroup.controllers")).unwrap_or_default();
    if list.split(' ').any(|c| c == controller) {
        Ok(())
    } else {
        Err(invalid(field, format!("the {controller} controller is not available in {} on {HOST} (the parent's cgroup.subtree_control lacks it)", dir.display())))
    }
}

/// The writes that apply `r` to the cgroup `dir`, and the device program to attach.
///
/// Errors: [`Error::Invalid`] for v1-only fields, unavailable controllers or values.
pub(crate) fn plan(dir: &Path, r: &LinuxResources) -> Result<(Plan, Option<Program>)> {
    limits::validate(r)?;
    let mut p = Plan::default();
    memory(dir, r, &mut p)?;
    cpu(dir, r, &mut p)?;
    if let Some(pids) = r.pids().filter(|p| p.limit() != 0) {
        need(dir, "pids", "pids.limit")?;
        p.write("pids.limit", dir.join("pids.max"), v2_value(pids.limit()));
    }
    if let Some(b) = r.block_io() {
        io(dir, b, &mut p)?;
    }
    for h in r.hugepage_limits().iter().flatten() {
        let field = format!("hugepageLimits[{}]", h.page_size());
        need(dir, "hugetlb", &field)?;
        let f = dir.join(format!("hugetlb.{}.max", h.page_size()));
        if !f.exists() {
            return Err(invalid(
                &field,
                format!(
                    "{HOST} has no {} huge pages ({} is missing)",
                    h.page_size(),
                    f.display()
                ),
            ));
        }
        p.write(&field, f, v2_value(h.limit()));
    }
    for field in network_ignored(r) {
        eprintln!("vessel-oci: warning: linux.resources.{field} is ignored: {NETWORK_V1_ONLY}");
    }
    for (dev, limit) in r.rdma().iter().flatten() {
        let field = format!("rdma.{dev}");
        need(dir, "rdma", &field)?;
        hostdevs::rdma_device(dev).map_err(|why| invalid(&field, why))?;
        p.write(
            &field,
            dir.join("rdma.max"),
            super::resources_v1::rdma_line(dev, limit.hca_handles(), limit.hca_objects()),
        );
    }
    for (key, value) in r.unified().iter().flatten() {
        let field = format!("unified.{key}");
        let f = dir.join(key);
        if !f.exists() {
            let ctrl = key.split('.').next().unwrap_or_default();
            return Err(invalid(
                &field,
                format!(
                    "{} does not exist on {HOST} (is the {ctrl} controller enabled?)",
                    f.display()
                ),
            ));
        }
        p.write(&field, f, value.clone());
    }
    let prog = match r.devices() {
        Some(rules) => Some(devices::program(rules)?),
        None => None,
    };
    Ok((p, prog))
}

fn memory(dir: &Path, r: &LinuxResources, p: &mut Plan) -> Result<()> {
    let Some(m) = r.memory() else { return Ok(()) };
    if m.kernel().is_some_and(|v| v != 0) {
        return Err(v1_only("memory.kernel", "a separate kernel memory limit"));
    }
    if m.kernel_tcp().is_some_and(|v| v != 0) {
        return Err(v1_only("memory.kernelTCP", "a separate kernel TCP memory limit"));
    }
    if m.swappiness().is_some() {
        return Err(v1_only("memory.swappiness", "a per-cgroup swappiness"));
    }
    if m.disable_oom_killer() == Some(true) {
        return Err(v1_only(
            "memory.disableOOMKiller",
            "disabling the OOM killer per cgroup",
        ));
    }
    if m.use_hierarchy() == Some(false) {
        return Err(invalid(
            "memory.useHierarchy",
            format!("false cannot be honoured: {HOST} is always hierarchical"),
        ));
    }
    let limit = m.limit().unwrap_or(0);
    let swap = limits::swap_to_v2(m.swap().unwrap_or(0), limit)?;
    let reservation = m.reservation().unwrap_or(0);
    if limit == 0 && swap == 0 && reservation == 0 {
        return Ok(());
    }
    need(dir, "memory", "memory")?;
    if m.check_before_update() == Some(true) {
        limits::check_before_update(
            limit,
            &dir.join("memory.current"),
            m.swap().unwrap_or(0),
            &[dir.join("memory.current"), dir.join("memory.swap.current")],
        )?;
    }
    if swap != 0 {
        let f = dir.join("memory.swap.max");
        if f.exists() {
            p.write("memory.swap", f, v2_value(swap));
        } else if swap != -1 {
            return Err(invalid(
                "memory.swap",
                format!("{HOST} does not account swap (no memory.swap.max): enable swap accounting or drop the field"),
            ));
        }
    }
    if limit != 0 {
        p.write("memory.limit", dir.join("memory.max"), v2_value(limit));
    }
    if reservation != 0 {
        p.write("memory.reservation", dir.join("memory.low"), v2_value(reservation));
    }
    Ok(())
}

fn cpu(dir: &Path, r: &LinuxResources, p: &mut Plan) -> Result<()> {
    let Some(c) = r.cpu() else { return Ok(()) };
    if c.realtime_runtime().is_some_and(|v| v != 0) {
        return Err(v1_only("cpu.realtimeRuntime", "realtime group scheduling"));
    }
    if c.realtime_period().is_some_and(|v| v != 0) {
        return Err(v1_only("cpu.realtimePeriod", "realtime group scheduling"));
    }
    if let Some(w) = c.shares().map(limits::shares_to_weight).filter(|w| *w != 0) {
        need(dir, "cpu", "cpu.shares")?;
        p.write("cpu.shares", dir.join("cpu.weight"), w.to_string());
    }
    let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
    if quota != 0 || period != 0 {
        need(dir, "cpu", "cpu.quota")?;
        // cpu.max is "QUOTA PERIOD": keep the half that is not being set.
        let cur = read(&dir.join("cpu.max")).unwrap_or_else(|| format!("max {}", limits::DEFAULT_PERIOD_US));
        let mut it = cur.split(' ');
        let (cur_q, cur_p) = (
            it.next().unwrap_or("max").to_string(),
            it.next().unwrap_or("100000").to_string(),
        );
        let q = match quota {
            0 => cur_q,
            -1 => "max".into(),
            n => n.to_string(),
        };
        let per = if period != 0 { period.to_string() } else { cur_p };
        p.write("cpu.quota", dir.join("cpu.max"), format!("{q} {per}"));
    }
    if let Some(b) = c.burst() {
        need(dir, "cpu", "cpu.burst")?;
        let f = dir.join("cpu.max.burst");
        if !f.exists() {
            return Err(invalid("cpu.burst", format!("{HOST}'s kernel has no cpu.max.burst")));
        }
        p.write("cpu.burst", f, b.to_string());
    }
    if let Some(i) = c.idle() {
        need(dir, "cpu", "cpu.idle")?;
        let f = dir.join("cpu.idle");
        if !f.exists() {
            return Err(invalid("cpu.idle", format!("{HOST}'s kernel has no cpu.idle")));
        }
        p.write("cpu.idle", f, i.to_string());
    }
    if let Some(s) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
        need(dir, "cpuset", "cpu.cpus")?;
        p.write("cpu.cpus", dir.join("cpuset.cpus"), s);
    }
    if let Some(s) = c.mems().as_deref().filter(|s| !s.is_empty()) {
        need(dir, "cpuset", "cpu.mems")?;
        p.write("cpu.mems", dir.join("cpuset.mems"), s);
    }
    Ok(())
}

fn io(dir: &Path, b: &LinuxBlockIo, p: &mut Plan) -> Result<()> {
    if b.leaf_weight().is_some_and(|w| w != 0) {
        return Err(v1_only("blockIO.leafWeight", "a leaf weight (CFQ)"));
    }
    let bfq = dir.join("io.bfq.weight");
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        need(dir, "io", "blockIO.weight")?;
        if bfq.exists() {
            // bfq takes the v1 range (1..1000) as is.
            p.write("blockIO.weight", bfq.clone(), w.to_string());
        } else {
            let f = dir.join("io.weight");
            if !f.exists() {
                return Err(invalid(
                    "blockIO.weight",
                    format!("{HOST} has neither io.bfq.weight nor io.weight: load bfq (modprobe bfq), or use a kernel with io.cost (CONFIG_BLK_CGROUP_IOCOST), or drop the field"),
                ));
            }
            p.write(
                "blockIO.weight",
                f,
                format!("default {}", limits::blkio_weight_to_io(w)),
            );
        }
    }
    for wd in b.weight_device().iter().flatten() {
        if wd.leaf_weight().is_some() {
            return Err(v1_only("blockIO.weightDevice.leafWeight", "a leaf weight (CFQ)"));
        }
        if let Some(w) = wd.weight() {
            need(dir, "io", "blockIO.weightDevice")?;
            hostdevs::block_device(wd.major(), wd.minor()).map_err(|why| invalid("blockIO.weightDevice", why))?;
            // Per device, the kernel takes a weight only where bfq runs (io.bfq.weight,
            // bfq's range) or io.cost is set up (io.weight, converted as runc does).
            let target = hostdevs::weight_target(
                wd.major(),
                wd.minor(),
                bfq.exists(),
                Some(Path::new(super::CGROUP_ROOT)),
            )
            .map_err(|why| invalid("blockIO.weightDevice", why))?;
            let dev = format!("{}:{}", wd.major(), wd.minor());
            let (file, value) = match target {
                WeightTarget::Bfq => (bfq.clone(), format!("{dev} {w}")),
                WeightTarget::IoCost => (
                    dir.join("io.weight"),
                    format!("{dev} {}", limits::blkio_weight_to_io(w)),
                ),
            };
            p.write_with(
                "blockIO.weightDevice",
                file,
                value,
                Restore::Value(format!("{dev} default")),
            );
        }
    }
    let throttles = [
        ("blockIO.throttleReadBpsDevice", "rbps", b.throttle_read_bps_device()),
        ("blockIO.throttleWriteBpsDevice", "wbps", b.throttle_write_bps_device()),
        ("blockIO.throttleReadIOPSDevice", "riops", b.throttle_read_iops_device()),
        (
            "blockIO.throttleWriteIOPSDevice",
            "wiops",
            b.throttle_write_iops_device(),
        ),
    ];
    for (field, key, list) in throttles {
        for t in list.iter().flatten() {
            need(dir, "io", field)?;
            let dev = format!("{}:{}", t.major(), t.minor());
            let old = read(&dir.join("io.max"))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!("{dev} ")).and_then(|rest| {
                        rest.split(' ')
                            .find(|kv| kv.starts_with(&format!("{key}=")))
                            .map(str::to_string)
                    })
                })
                .unwrap_or_else(|| format!("{key}=max"));
            // A rate of 0 means no limit in the spec's v1 heritage.
            let v = if t.rate() == 0 {
                "max".to_string()
            } else {
                t.rate().to_string()
            };
            p.write_with(
                field,
                dir.join("io.max"),
                format!("{dev} {key}={v}"),
                Restore::Value(format!("{dev} {old}")),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake v2 cgroup directory with the given controllers and files.
    fn fake(controllers: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cgroup.controllers"), controllers).unwrap();
        for (f, v) in files {
            std::fs::write(d.path().join(f), v).unwrap();
        }
        d
    }

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    fn writes(p: &Plan) -> Vec<(String, String)> {
        p.writes
            .iter()
            .map(|w| {
                (
                    w.path.file_name().unwrap().to_string_lossy().into_owned(),
                    w.value.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn conversions() {
        let d = fake(
            "cpuset cpu io memory pids",
            &[
                ("cpu.max", "max 100000"),
                ("memory.swap.max", "max"),
                ("io.weight", "default 100"),
            ],
        );
        let (p, prog) = plan(
            d.path(),
            &res(r#"{"memory":{"limit":104857600,"swap":209715200,"reservation":1000},
                     "cpu":{"shares":1024,"quota":50000},"pids":{"limit":-1},
                     "blockIO":{"weight":500,"throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}]},
                     "devices":[{"allow":false}]}"#),
        )
        .unwrap();
        let w = writes(&p);
        assert!(w.contains(&("memory.swap.max".into(), "104857600".into())), "{w:?}");
        assert!(w.contains(&("memory.max".into(), "104857600".into())));
        assert!(w.contains(&("memory.low".into(), "1000".into())));
        assert!(w.contains(&("cpu.weight".into(), "39".into())));
        assert!(w.contains(&("cpu.max".into(), "50000 100000".into())));
        assert!(w.contains(&("pids.max".into(), "max".into())));
        assert!(w.contains(&(
            "io.weight".into(),
            format!("default {}", limits::blkio_weight_to_io(500))
        )));
        assert!(w.contains(&("io.max".into(), "8:0 rbps=1048576".into())));
        assert!(prog.is_some_and(|p| !p.default_allow));
    }

    #[test]
    fn period_alone_keeps_quota() {
        let d = fake("cpu", &[("cpu.max", "20000 100000")]);
        let (p, _) = plan(d.path(), &res(r#"{"cpu":{"period":50000}}"#)).unwrap();
        assert_eq!(writes(&p), vec![("cpu.max".into(), "20000 50000".into())]);
        let (p, _) = plan(d.path(), &res(r#"{"cpu":{"quota":-1}}"#)).unwrap();
        assert_eq!(writes(&p), vec![("cpu.max".into(), "max 100000".into())]);
    }

    #[test]
    fn v1_only_fields_are_refused() {
        let d = fake("cpu memory io pids", &[]);
        for (bad, field) in [
            (r#"{"memory":{"kernel":1000000}}"#, "memory.kernel"),
            (r#"{"memory":{"kernelTCP":1000000}}"#, "memory.kernelTCP"),
            (r#"{"memory":{"swappiness":10}}"#, "memory.swappiness"),
            (r#"{"memory":{"disableOOMKiller":true}}"#, "memory.disableOOMKiller"),
            (r#"{"cpu":{"realtimeRuntime":1000}}"#, "cpu.realtimeRuntime"),
            (r#"{"blockIO":{"leafWeight":100}}"#, "blockIO.leafWeight"),
            (r#"{"unified":{"memory.high":"1000"}}"#, "unified.memory.high"),
            (r#"{"hugepageLimits":[{"pageSize":"2MB","limit":0}]}"#, "hugepageLimits"),
        ] {
            let e = plan(d.path(), &res(bad)).unwrap_err().to_string();
            assert!(e.contains(field) && e.contains("v2"), "{bad}: {e}");
        }
        let mem_only = fake("memory", &[]);
        let e = plan(mem_only.path(), &res(r#"{"pids":{"limit":10}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("pids controller is not available"), "{e}");
        // Absent and zero fields are fine.
        let (p, _) = plan(
            d.path(),
            &res(r#"{"memory":{"swappiness":null,"kernel":0},"cpu":{"shares":0},"pids":{"limit":0}}"#),
        )
        .unwrap();
        assert!(p.writes.is_empty());
    }

    #[test]
    fn network_fields_are_ignored() {
        let d = fake("cpu memory io pids", &[]);
        let r = res(r#"{"network":{"classID":1048577,"priorities":[{"name":"lo","priority":3}]}}"#);
        assert_eq!(network_ignored(&r), vec!["network.classID", "network.priorities"]);
        let (p, prog) = plan(d.path(), &r).unwrap();
        assert!(p.writes.is_empty() && prog.is_none());
        assert!(network_ignored(&res(r#"{"network":{"classID":0,"priorities":[]}}"#)).is_empty());
    }
}
