//! The `linux.resources` fields that resources.rs does not cover, one test per group:
//! cpu burst, idle and realtime; hugepage limits; rdma; blockIO weight, leafWeight and
//! weightDevice; network classID and priorities; memory kernel, kernelTCP, useHierarchy
//! and checkBeforeUpdate. Each test either reads the value back from the container's
//! cgroup (or sees its effect), or checks the clear error that names the field and the
//! fix, with nothing left behind (no state dir, no cgroup).
//!
//! What the host offers decides which of the two a test expects, and the test reads that
//! from the host itself (files under /sys), never from what the runtime answers: a
//! runtime that writes nothing, or fails where it should not, fails the test. The same
//! tests run on the hybrid development machines and on cgroup v2 under scripts/vm-test.
//! They never change host-wide state: in particular they do not enable hugetlb in a
//! hybrid host's cgroup2 root, and they do not switch a disk to bfq.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A v1 hierarchy carrying `controller` is mounted (never true on v2).
fn v1_mounted(controller: &str) -> bool {
    !is_v2()
        && fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(" - "))
            .filter(|(_, post)| post.starts_with("cgroup "))
            .any(|(_, post)| {
                post.split(' ')
                    .nth(2)
                    .is_some_and(|opts| opts.split(',').any(|o| o == controller))
            })
}

fn note(what: &str) {
    eprintln!("note: {what}");
}

/// A container whose config carries `res` merged into `linux.resources`.
fn with_resources(test: &str, res: &Value) -> TestContainer {
    let mut c = TestContainer::new(test);
    if let Value::Object(m) = res {
        for (k, v) in m {
            c.spec["linux"]["resources"][k] = v.clone();
        }
    }
    c
}

/// A running `sleep 1000` container with `res` in `linux.resources`.
#[track_caller]
fn sleeper(test: &str, res: Value) -> TestContainer {
    let mut c = with_resources(test, &res);
    c.start_sleeper();
    c
}

/// Creating a container with `res` fails, the error contains every one of `needles`,
/// and nothing is left behind.
#[track_caller]
fn create_fails(test: &str, res: Value, needles: &[&str]) {
    let c = with_resources(test, &res);
    let out = c.create();
    out.assert_fail(&format!("create with {res}"));
    for n in needles {
        assert!(
            out.mentions(n),
            "create with {res}: the error should mention {n:?}: {out}"
        );
    }
    c.assert_no_leftovers(&format!("after create with {res}"));
}

/// `update -r FILE ID` with `res` as the file.
#[track_caller]
fn update(c: &TestContainer, res: &Value) -> Out {
    let f = c.dir.join(format!("update-{}.json", random_hex(4)));
    write_json(&f, res);
    let f = f.to_string_lossy().into_owned();
    c.oci(&["update", "-r", &f, &c.id])
}

/// An update that must fail, mention every one of `needles`, and leave `file` of
/// `controller` as it was.
#[track_caller]
fn update_fails(c: &TestContainer, res: &Value, needles: &[&str], controller: &str, file: &str) {
    let before = read_cg(c, controller, file);
    let out = update(c, res);
    out.assert_fail(&format!("update with {res}"));
    for n in needles {
        assert!(
            out.mentions(n),
            "update with {res}: the error should mention {n:?}: {out}"
        );
    }
    assert_eq!(read_cg(c, controller, file), before, "update with {res} changed {file}");
    assert_eq!(c.status(), "running", "the container survives a refused update");
}

/// (major, minor, name) of a whole disk (one with an I/O scheduler): the first one that
/// runs bfq, else the first one, in name order.
fn whole_disk() -> Option<(i64, i64, String)> {
    let mut names: Vec<String> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let disks: Vec<(i64, i64, String)> = names
        .into_iter()
        .filter_map(|n| {
            let dir = Path::new("/sys/block").join(&n);
            fs::metadata(dir.join("queue/scheduler")).ok()?;
            let dev = fs::read_to_string(dir.join("dev")).ok()?;
            let (ma, mi) = dev.trim().split_once(':')?;
            Some((ma.parse().ok()?, mi.parse().ok()?, n))
        })
        .collect();
    let bfq = disks.iter().find(|(_, _, n)| scheduler_of(n) == "bfq").cloned();
    bfq.or_else(|| disks.into_iter().next())
}

/// The selected I/O scheduler of disk `name` (`[mq-deadline]` in queue/scheduler).
fn scheduler_of(name: &str) -> String {
    fs::read_to_string(format!("/sys/block/{name}/queue/scheduler"))
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|s| s.strip_prefix('[').and_then(|s| s.strip_suffix(']')))
        .unwrap_or("none")
        .to_string()
}

/// Whether this kernel enforces v1 kernel memory limits: a scratch memory cgroup of the
/// test's own (removed again) takes a limit in memory.kmem.limit_in_bytes and reads it
/// back. Recent kernels keep the file but ignore what is written. None without the file.
fn kmem_limit_honoured() -> Option<bool> {
    let dir = Path::new("/sys/fs/cgroup/memory").join(format!("vessel-test-kmem-probe-{}", random_hex(4)));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let file = dir.join("memory.kmem.limit_in_bytes");
    let honoured = file.exists().then(|| {
        fs::write(&file, "33554432").is_ok() && fs::read_to_string(&file).is_ok_and(|s| s.trim() == "33554432")
    });
    fs::remove_dir(&dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
    honoured
}

// ---- cpu ---------------------------------------------------------------------------

#[test]
fn cpu_burst_reaches_its_file_and_update_changes_it() {
    let (ctrl, file) = if is_v2() {
        ("cpu", "cpu.max.burst")
    } else {
        ("cpu", "cpu.cfs_burst_us")
    };
    let c = sleeper(
        "burst",
        json!({"cpu": {"quota": 50000, "period": 100000, "burst": 20000}}),
    );
    assert_eq!(read_cg(&c, ctrl, file), "20000");
    c.oci(&["update", "--cpu-burst", "30000", &c.id])
        .assert_ok("update --cpu-burst 30000");
    assert_eq!(read_cg(&c, ctrl, file), "30000");
    update(&c, &json!({"cpu": {"burst": 0}})).assert_ok("update burst 0");
    assert_eq!(read_cg(&c, ctrl, file), "0", "a burst of 0 is written, not skipped");
    // The kernel refuses a burst above the quota: the error names the field, and the
    // quota written before it in the same update is undone.
    let quota_file = if is_v2() { "cpu.max" } else { "cpu.cfs_quota_us" };
    let quota_before = read_cg(&c, "cpu", quota_file);
    update_fails(
        &c,
        &json!({"cpu": {"quota": 60000, "burst": 80000}}),
        &["cpu.burst", "nothing was changed"],
        ctrl,
        file,
    );
    assert_eq!(
        read_cg(&c, "cpu", quota_file),
        quota_before,
        "the quota write was undone"
    );
}

#[test]
fn cpu_idle_reaches_its_file() {
    let c = sleeper("idle", json!({"cpu": {"idle": 1}}));
    assert_eq!(read_cg(&c, "cpu", "cpu.idle"), "1");
    c.oci(&["update", "--cpu-idle", "0", &c.id])
        .assert_ok("update --cpu-idle 0");
    assert_eq!(read_cg(&c, "cpu", "cpu.idle"), "0");
    update_fails(
        &c,
        &json!({"cpu": {"idle": 2}}),
        &["cpu.idle", "0 or 1"],
        "cpu",
        "cpu.idle",
    );
}

/// sched_setscheduler(pid, SCHED_FIFO, 1) from the test (root): with realtime group
/// scheduling the kernel allows it only when the task's cpu cgroup has rt runtime.
fn make_fifo(pid: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler on a pid of the test's own container, with a valid
    // sched_param that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn cpu_realtime_runtime_and_period() {
    let rt = json!({"cpu": {"realtimePeriod": 1000000, "realtimeRuntime": 10000}});
    if is_v2() {
        create_fails("rt-v2", rt, &["cpu.realtime", "v1", "drop the field"]);
        return;
    }
    if !Path::new("/sys/fs/cgroup/cpu/cpu.rt_runtime_us").exists() {
        // The kernel has no realtime group scheduling.
        create_fails("rt-none", rt, &["cpu.realtimePeriod", "CONFIG_RT_GROUP_SCHED"]);
        return;
    }
    // Without rt runtime, the kernel refuses realtime tasks in the group...
    let plain = sleeper("rt-plain", json!({}));
    assert_eq!(read_cg(&plain, "cpu", "cpu.rt_runtime_us"), "0");
    let e = make_fifo(plain.pid()).expect_err("SCHED_FIFO in a cgroup without rt runtime");
    assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
    // ...and takes them once `update` gives the group some.
    plain
        .oci(&[
            "update",
            "--cpu-rt-period",
            "500000",
            "--cpu-rt-runtime",
            "5000",
            &plain.id,
        ])
        .assert_ok("update --cpu-rt-period --cpu-rt-runtime");
    assert_eq!(read_cg(&plain, "cpu", "cpu.rt_period_us"), "500000");
    assert_eq!(read_cg(&plain, "cpu", "cpu.rt_runtime_us"), "5000");
    make_fifo(plain.pid()).expect("SCHED_FIFO once the group has rt runtime");
    drop(plain);
    // The same values at create.
    let c = sleeper("rt", rt);
    assert_eq!(read_cg(&c, "cpu", "cpu.rt_period_us"), "1000000");
    assert_eq!(read_cg(&c, "cpu", "cpu.rt_runtime_us"), "10000");
    make_fifo(c.pid()).expect("SCHED_FIFO in a container created with rt runtime");
    // A runtime above the period: the kernel refuses it, the error names the field.
    update_fails(
        &c,
        &json!({"cpu": {"realtimeRuntime": 2000000}}),
        &["cpu.realtimeRuntime", "nothing was changed"],
        "cpu",
        "cpu.rt_runtime_us",
    );
}

// ---- hugetlb -----------------------------------------------------------------------

#[test]
fn hugepage_limits() {
    // A page size the host lacks (x86 has 2MB and 1GB): refused before any write, on
    // every layout (and before a hybrid host's cgroup2 would be touched).
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-4096kB").exists() {
        create_fails(
            "huge-4mb",
            json!({"hugepageLimits": [{"pageSize": "4MB", "limit": 4194304}]}),
            &["hugepageLimits[4MB]", "no 4MB huge pages"],
        );
    }
    create_fails(
        "huge-bad",
        json!({"hugepageLimits": [{"pageSize": "2XB", "limit": 1}]}),
        &["hugepageLimits.pageSize", "\"2XB\""],
    );
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        note("no 2MB huge pages on this host: the limit itself is not tested");
        return;
    }
    let limit = 4u64 << 21; // four 2 MiB pages
    let res = json!({"hugepageLimits": [{"pageSize": "2MB", "limit": limit}]});
    let (ctrl, file) = if is_v2() {
        ("hugetlb", "hugetlb.2MB.max")
    } else if v1_mounted("hugetlb") {
        ("hugetlb", "hugetlb.2MB.limit_in_bytes")
    } else if fs::read_to_string("/sys/fs/cgroup/unified/cgroup.subtree_control")
        .is_ok_and(|s| s.split_whitespace().any(|c| c == "hugetlb"))
    {
        ("unified", "hugetlb.2MB.max")
    } else {
        // Hybrid, hugetlb only in the cgroup2 root and not enabled for its children:
        // vessel-oci would enable it there, a host-wide change tests must not make.
        note("hybrid host with hugetlb not enabled in /sys/fs/cgroup/unified/cgroup.subtree_control: the 2MB limit is tested on cgroup v2 (scripts/vm-test), not here");
        return;
    };
    let c = sleeper("huge", res);
    assert_eq!(read_cg(&c, ctrl, file), limit.to_string());
    update(&c, &json!({"hugepageLimits": [{"pageSize": "2MB", "limit": -1}]})).assert_ok("update hugetlb -1");
    let unlimited = read_cg(&c, ctrl, file);
    assert!(
        unlimited == "max" || unlimited.parse::<u64>().is_ok_and(|v| v >= 1 << 62),
        "-1 is no limit: {file} = {unlimited}"
    );
}

// ---- rdma --------------------------------------------------------------------------

/// The first RDMA device of the host, by name.
fn rdma_device() -> Option<String> {
    let mut v: Vec<String> = fs::read_dir("/sys/class/infiniband")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.into_iter().next()
}

#[test]
fn rdma_limits() {
    let has_rdma = if is_v2() {
        fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|s| s.split_whitespace().any(|c| c == "rdma"))
    } else {
        v1_mounted("rdma")
    };
    let unknown = json!({"rdma": {"vessel-no-hca": {"hcaHandles": 2, "hcaObjects": 100}}});
    if !has_rdma {
        create_fails("rdma-none", unknown, &["linux.resources.rdma.vessel-no-hca", "rdma"]);
        return;
    }
    create_fails(
        "rdma-unknown",
        unknown,
        &[
            "rdma.vessel-no-hca",
            "no RDMA device \"vessel-no-hca\"",
            "/sys/class/infiniband",
        ],
    );
    let Some(dev) = rdma_device() else {
        note("no RDMA device on this host (scripts/vm-test makes a soft-RoCE one): only the error is tested");
        return;
    };
    let c = sleeper(
        "rdma",
        json!({"rdma": {dev.clone(): {"hcaHandles": 2, "hcaObjects": 2000}}}),
    );
    let line = |c: &TestContainer| {
        read_cg(c, "rdma", "rdma.max")
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert_eq!(line(&c), format!("{dev} hca_handle=2 hca_object=2000"));
    // Only handles: objects keep their limit.
    update(&c, &json!({"rdma": {dev.clone(): {"hcaHandles": 5}}})).assert_ok("update rdma");
    assert_eq!(line(&c), format!("{dev} hca_handle=5 hca_object=2000"));
}

// ---- blockIO -----------------------------------------------------------------------

#[test]
fn block_io_weight() {
    let c = sleeper("bweight", json!({}));
    // Which file the host offers (it depends on bfq being loaded, and on io.cost).
    let (ctrl, file, at_300, at_1000) = if is_v2() {
        if cg_file(&c, "io", "io.bfq.weight").exists() {
            (
                "io",
                "io.bfq.weight",
                "default 300".to_string(),
                "default 1000".to_string(),
            )
        } else {
            // runc's conversion: 1 + (weight - 10) * 9999 / 990.
            (
                "io",
                "io.weight",
                "default 2930".to_string(),
                "default 10000".to_string(),
            )
        }
    } else if cg_file(&c, "blkio", "blkio.weight").exists() {
        ("blkio", "blkio.weight", "300".to_string(), "1000".to_string())
    } else {
        ("blkio", "blkio.bfq.weight", "300".to_string(), "1000".to_string())
    };
    if !cg_file(&c, ctrl, file).exists() {
        update_fails(
            &c,
            &json!({"blockIO": {"weight": 300}}),
            &["blockIO.weight", "modprobe bfq"],
            "pids",
            "pids.max",
        );
        return;
    }
    update(&c, &json!({"blockIO": {"weight": 300}})).assert_ok("update blockIO.weight");
    let first = |c: &TestContainer| read_cg(c, ctrl, file).lines().next().unwrap_or_default().to_string();
    assert_eq!(first(&c), at_300, "{file}");
    c.oci(&["update", "--blkio-weight", "1000", &c.id])
        .assert_ok("update --blkio-weight 1000");
    assert_eq!(first(&c), at_1000, "{file}");
    update_fails(
        &c,
        &json!({"blockIO": {"weight": 5}}),
        &["blockIO.weight", "10..1000"],
        ctrl,
        file,
    );
    drop(c);
    // And at create.
    let c = sleeper("bweight-create", json!({"blockIO": {"weight": 300}}));
    assert_eq!(first(&c), at_300, "{file} at create");
}

#[test]
fn block_io_leaf_weight() {
    let leaf = json!({"blockIO": {"leafWeight": 300}});
    if is_v2() {
        create_fails("bleaf-v2", leaf, &["blockIO.leafWeight", "v1", "drop the field"]);
        return;
    }
    let probe = sleeper("bleaf-probe", json!({}));
    if cg_file(&probe, "blkio", "blkio.leaf_weight").exists() {
        // A kernel with CFQ (before 5.0).
        update(&probe, &leaf).assert_ok("update leafWeight");
        assert_eq!(read_cg(&probe, "blkio", "blkio.leaf_weight"), "300");
        return;
    }
    drop(probe);
    create_fails("bleaf", leaf, &["blockIO.leafWeight", "blkio.leaf_weight", "CFQ"]);
    create_fails(
        "bleaf-dev",
        json!({"blockIO": {"weightDevice": [{"major": 7, "minor": 0, "leafWeight": 300}]}}),
        &["blockIO.weightDevice.leafWeight", "CFQ"],
    );
}

#[test]
fn block_io_weight_device() {
    // A device that does not exist: named in the error, on every host.
    create_fails(
        "bwdev-missing",
        json!({"blockIO": {"weightDevice": [{"major": 4094, "minor": 1048570, "weight": 300}]}}),
        &["blockIO.weightDevice", "no block device 4094:1048570"],
    );
    let Some((major, minor, name)) = whole_disk() else {
        note("no block device with an I/O scheduler here: only the missing device is tested");
        return;
    };
    let res = json!({"blockIO": {"weightDevice": [{"major": major, "minor": minor, "weight": 300}]}});
    let dev = format!("{major}:{minor}");
    let sched = scheduler_of(&name);
    let probe = sleeper("bwdev-probe", json!({}));
    // Where the kernel takes a per-device weight for this disk, if anywhere.
    let expect: Option<(&str, &str, String)> = if is_v2() {
        let iocost = fs::read_to_string("/sys/fs/cgroup/io.cost.qos")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{dev} ")));
        if sched == "bfq" && cg_file(&probe, "io", "io.bfq.weight").exists() {
            Some(("io", "io.bfq.weight", format!("{dev} 300")))
        } else if iocost {
            Some(("io", "io.weight", format!("{dev} 2930")))
        } else {
            None
        }
    } else if cg_file(&probe, "blkio", "blkio.weight_device").exists() {
        note("a CFQ kernel: the per-device weight is left to the kernel's own check");
        return;
    } else if sched == "bfq" && cg_file(&probe, "blkio", "blkio.bfq.weight_device").exists() {
        Some(("blkio", "blkio.bfq.weight_device", format!("{dev} 300")))
    } else {
        None
    };
    drop(probe);
    match expect {
        Some((ctrl, file, line)) => {
            let c = sleeper("bwdev", res);
            let got = read_cg(&c, ctrl, file);
            assert!(got.lines().any(|l| l.trim() == line), "{file} lacks {line:?}: {got}");
        }
        None => {
            // The kernel would answer EOPNOTSUPP: the runtime says why, and what to do.
            create_fails(
                "bwdev",
                res,
                &[
                    "blockIO.weightDevice",
                    &format!("{name} ({dev}) uses the {sched} I/O scheduler"),
                    &format!("/sys/block/{name}/queue/scheduler"),
                ],
            );
        }
    }
}

// ---- network -----------------------------------------------------------------------

#[test]
fn network_class_id_and_priorities() {
    let class = json!({"network": {"classID": 1048577}});
    let prio = json!({"network": {"priorities": [{"name": "lo", "priority": 5}]}});
    if is_v2() {
        // As runc: ignored on v2, with a warning that names the field and the way out.
        let mut c = with_resources(
            "net-v2",
            &json!({"network": {"classID": 1048577, "priorities": [{"name": "lo", "priority": 5}]}}),
        );
        c.args(&["sleep", "1000"]);
        let out = c.create();
        out.assert_ok("create with network fields on cgroup v2");
        for f in ["network.classID", "network.priorities"] {
            assert!(
                out.mentions(&format!("warning: linux.resources.{f} is ignored")) && out.mentions("cgroup v1"),
                "the warning names {f}: {out}"
            );
        }
        c.start().assert_ok("start");
        c.wait_status("running", Duration::from_secs(10));
        assert!(!cg_file(&c, "", "net_cls.classid").exists());
        let out = update(&c, &class);
        out.assert_ok("update with network.classID on cgroup v2");
        assert!(out.mentions("network.classID is ignored"), "{out}");
        return;
    }
    if v1_mounted("net_cls") {
        let c = sleeper("net-cls", class);
        assert_eq!(read_cg(&c, "net_cls", "net_cls.classid"), "1048577");
        update(&c, &json!({"network": {"classID": 1048578}})).assert_ok("update classID");
        assert_eq!(read_cg(&c, "net_cls", "net_cls.classid"), "1048578");
    } else {
        create_fails(
            "net-cls",
            class,
            &["linux.resources.network.classID", "no net_cls cgroup hierarchy mounted"],
        );
    }
    if v1_mounted("net_prio") {
        let c = sleeper("net-prio", prio);
        let map = read_cg(&c, "net_prio", "net_prio.ifpriomap");
        assert!(map.lines().any(|l| l.trim() == "lo 5"), "net_prio.ifpriomap: {map}");
    } else {
        create_fails(
            "net-prio",
            prio,
            &[
                "linux.resources.network.priorities",
                "no net_prio cgroup hierarchy mounted",
            ],
        );
    }
}

// ---- memory ------------------------------------------------------------------------

#[test]
fn memory_kernel() {
    let kmem = json!({"memory": {"limit": 64 << 20, "kernel": 32 << 20}});
    if is_v2() {
        create_fails("kmem-v2", kmem, &["memory.kernel", "v1", "drop the field"]);
        return;
    }
    match kmem_limit_honoured() {
        None => create_fails("kmem", kmem, &["memory.kernel", "memory.kmem.limit_in_bytes"]),
        Some(false) => {
            // The file is there and takes any value, which the kernel ignores: the runtime
            // reads it back and refuses rather than pretend. The memory limit written
            // before it is undone with the rest (the cgroup goes away).
            create_fails(
                "kmem",
                kmem,
                &[
                    "linux.resources.memory.kernel",
                    "no longer enforces it",
                    "drop linux.resources.memory.kernel",
                ],
            );
            // No limit (-1) is what such a kernel has anyway: accepted.
            let c = sleeper("kmem-unlimited", json!({"memory": {"kernel": -1}}));
            assert_eq!(c.status(), "running");
        }
        Some(true) => {
            let c = sleeper("kmem", kmem);
            assert_eq!(
                read_cg(&c, "memory", "memory.kmem.limit_in_bytes"),
                (32u64 << 20).to_string()
            );
        }
    }
}

#[test]
fn memory_kernel_tcp() {
    let tcp = json!({"memory": {"kernelTCP": 32 << 20}});
    if is_v2() {
        create_fails("ktcp-v2", tcp, &["memory.kernelTCP", "v1", "drop the field"]);
        return;
    }
    let c = sleeper("ktcp", tcp);
    assert_eq!(
        read_cg(&c, "memory", "memory.kmem.tcp.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    c.oci(&["update", "--kernel-memory-tcp", "64m", &c.id])
        .assert_ok("update --kernel-memory-tcp 64m");
    assert_eq!(
        read_cg(&c, "memory", "memory.kmem.tcp.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    update_fails(
        &c,
        &json!({"memory": {"kernelTCP": -9}}),
        &["memory.kernelTCP", "negative"],
        "memory",
        "memory.kmem.tcp.limit_in_bytes",
    );
}

#[test]
fn memory_use_hierarchy() {
    // Every current kernel accounts memory hierarchically: true is what it does...
    let c = sleeper("hier", json!({"memory": {"useHierarchy": true}}));
    if !is_v2() {
        assert_eq!(read_cg(&c, "memory", "memory.use_hierarchy"), "1");
    }
    drop(c);
    // ...and false cannot be honoured.
    let needles: &[&str] = &["memory.useHierarchy", "false cannot be honoured"];
    if is_v2() {
        create_fails("hier-off", json!({"memory": {"useHierarchy": false}}), needles);
    } else {
        let probe = sleeper("hier-probe", json!({}));
        let on = read_cg(&probe, "memory", "memory.use_hierarchy") == "1";
        drop(probe);
        if on {
            create_fails("hier-off", json!({"memory": {"useHierarchy": false}}), needles);
        } else {
            let c = sleeper("hier-off", json!({"memory": {"useHierarchy": false}}));
            assert_eq!(read_cg(&c, "memory", "memory.use_hierarchy"), "0");
        }
    }
}

/// The container's memory usage in bytes (v1 memory.usage_in_bytes, v2 memory.current).
fn memory_usage(c: &TestContainer) -> u64 {
    let f = if is_v2() {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    read_cg(c, "memory", f).parse().unwrap_or(0)
}

fn memory_limit(c: &TestContainer) -> String {
    read_cg(
        c,
        "memory",
        if is_v2() { "memory.max" } else { "memory.limit_in_bytes" },
    )
}

#[test]
fn memory_check_before_update() {
    let c = sleeper("cbu", json!({"memory": {"limit": 64 << 20}}));
    // 24 MiB in the container's /dev/shm (tmpfs): charged to its cgroup, and not
    // reclaimable without swap.
    c.exec(&[], &["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=24"])
        .assert_ok("fill /dev/shm");
    let usage = memory_usage(&c);
    assert!(usage >= 24 << 20, "usage after filling /dev/shm: {usage}");
    // Below the usage: refused before any write, the old limit stays, nothing is killed.
    update_fails(
        &c,
        &json!({"memory": {"limit": 16 << 20, "checkBeforeUpdate": true}}),
        &["memory.limit", "checkBeforeUpdate", "current usage"],
        "memory",
        if is_v2() { "memory.max" } else { "memory.limit_in_bytes" },
    );
    assert_eq!(memory_limit(&c), (64u64 << 20).to_string());
    c.exec(&[], &["test", "-s", "/dev/shm/fill"])
        .assert_ok("the data is still there");
    // A memory+swap limit at or below the usage is refused the same way (v1 with swap
    // accounting; on v2 swap needs a memory limit, which the check above covers).
    if !is_v2() && cg_file(&c, "memory", "memory.memsw.usage_in_bytes").exists() {
        update_fails(
            &c,
            &json!({"memory": {"swap": 16 << 20, "checkBeforeUpdate": true}}),
            &["memory.swap", "checkBeforeUpdate"],
            "memory",
            "memory.memsw.limit_in_bytes",
        );
    }
    // Above the usage: applied.
    update(&c, &json!({"memory": {"limit": 48 << 20, "checkBeforeUpdate": true}}))
        .assert_ok("a limit above the usage, with checkBeforeUpdate");
    assert_eq!(memory_limit(&c), (48u64 << 20).to_string());
    assert_eq!(c.status(), "running");
}
