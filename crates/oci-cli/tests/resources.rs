//! Resource control: `linux.resources` limits really limit (memory OOM, pids, cpu
//! quota), device rules, `update`, `pause`/`resume`, `ps`, `events` (stats and OOM), and
//! bad input that must change nothing. Written for whichever cgroup layout the host has
//! (v1/hybrid here, unified v2 under scripts/vm-test); assertions that only make sense on
//! one layout print a note and are skipped on the other.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A `key value` counter of a flat-keyed cgroup file (memory.events, oom_control...).
fn counter(c: &TestContainer, controller: &str, file: &str, key: &str) -> u64 {
    fs::read_to_string(cg_file(c, controller, file))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

fn note(what: &str) {
    eprintln!("note: {what}");
}

fn resources(c: &mut TestContainer) -> &mut Value {
    &mut c.spec["linux"]["resources"]
}

/// The memory limit file's value: v1 memory.limit_in_bytes, v2 memory.max.
fn memory_limit(c: &TestContainer) -> String {
    if is_v2() {
        read_cg(c, "memory", "memory.max")
    } else {
        read_cg(c, "memory", "memory.limit_in_bytes")
    }
}

fn pids_max(c: &TestContainer) -> String {
    read_cg(c, "pids", "pids.max")
}

/// `events --stats ID`, parsed; panics unless it is a stats event of this container.
#[track_caller]
fn stats(c: &TestContainer) -> Value {
    let out = c.oci(&["events", "--stats", &c.id]);
    out.assert_ok("events --stats");
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("events --stats is not one JSON object ({e}): {out}"));
    assert_eq!(v["type"], "stats", "{v}");
    assert_eq!(v["id"], c.id.as_str(), "{v}");
    v["data"].clone()
}

/// A running container whose init is `sleep 1000`, with extra `linux.resources`.
fn sleeper(test: &str, res: Value) -> TestContainer {
    let mut c = TestContainer::new(test);
    if let Value::Object(m) = res {
        for (k, v) in m {
            resources(&mut c)[k] = v;
        }
    }
    c.start_sleeper();
    c
}

/// An `events ID` process whose stdout goes to a file; killed on drop.
struct EventsStream {
    child: ChildGuard,
    out: PathBuf,
}

impl EventsStream {
    fn start(c: &TestContainer, interval: &str) -> EventsStream {
        let out = c.dir.join("events.out");
        let f = fs::File::create(&out).unwrap();
        let child = c
            .cmd()
            .args(["events", "--interval", interval, &c.id])
            .stdout(f)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn events");
        EventsStream {
            child: ChildGuard(child),
            out,
        }
    }

    fn events(&self) -> Vec<Value> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

#[test]
fn memory_hog_is_oom_killed_and_events_report_it() {
    let c = sleeper("oom", json!({"memory": {"limit": 32 << 20, "swap": 32 << 20}}));
    assert_eq!(memory_limit(&c), (32u64 << 20).to_string());
    let events = EventsStream::start(&c, "1s");
    // Let the stream register its notifier and print its first stats event.
    assert!(
        wait_until(Duration::from_secs(10), || !events.events().is_empty()),
        "events printed nothing"
    );
    // dd allocates (and fills from /dev/zero) a 64 MiB buffer: twice the limit.
    let out = c.exec(&[], &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    assert_eq!(out.code, 137, "dd must die by SIGKILL (OOM): {out}");
    let kills = if is_v2() {
        counter(&c, "memory", "memory.events", "oom_kill")
    } else {
        counter(&c, "memory", "memory.oom_control", "oom_kill")
    };
    assert!(kills >= 1, "the container's cgroup counts an OOM kill");
    // Only the hog died: the container and this test live on.
    assert_eq!(c.status(), "running");
    assert!(
        wait_until(Duration::from_secs(10), || events
            .events()
            .iter()
            .any(|e| e["type"] == "oom")),
        "events reported no oom: {:?}",
        events.events()
    );
    let oom = events.events().into_iter().find(|e| e["type"] == "oom").unwrap();
    assert_eq!(oom["id"], c.id.as_str(), "{oom}");
    let first = &events.events()[0];
    assert_eq!(first["type"], "stats");
    assert!(
        first["data"]["memory"]["usage"]["limit"].as_u64().unwrap_or(0) > 0,
        "{first}"
    );
    drop(events);
}

#[test]
fn fork_bomb_stops_at_pids_limit() {
    let c = sleeper("pids", json!({"pids": {"limit": 16}}));
    assert_eq!(pids_max(&c), "16");
    // Forks until the kernel refuses (busybox sh then gives up with "can't fork").
    let out = c.exec(&[], &["sh", "-c", "while :; do sleep 1000 & done"]);
    out.assert_fail("the fork bomb ends in a refused fork");
    assert!(
        out.stderr.to_lowercase().contains("fork"),
        "sh reports the failed fork: {out}"
    );
    assert_eq!(c.status(), "running");
    let out = c.oci(&["ps", "--format", "json", &c.id]);
    out.assert_ok("ps --format json");
    let pids: Vec<i64> = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("ps json ({e}): {out}"));
    assert!(pids.len() <= 16, "{} tasks in a cgroup limited to 16", pids.len());
    assert!(
        pids.len() >= 10,
        "the bomb should have filled most of the limit: {}",
        pids.len()
    );
    assert!(
        counter(&c, "pids", "pids.events", "max") > 0,
        "pids.events counts refused forks"
    );
    let d = stats(&c);
    assert_eq!(d["pids"]["limit"], 16, "{d}");
    assert!(d["pids"]["current"].as_u64().unwrap_or(0) <= 16);
}

#[test]
fn cpu_quota_holds_a_busy_loop() {
    let mut c = TestContainer::new("cpuquota");
    // 20% of one cpu.
    resources(&mut c)["cpu"] = json!({"quota": 20000, "period": 100000});
    c.sh("while :; do :; done");
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("running", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let u0 = stats(&c)["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(3));
    let u1 = stats(&c)["cpu"]["usage"]["total"].as_u64().unwrap_or(0);
    let share = (u1 - u0) as f64 / t0.elapsed().as_nanos() as f64;
    assert!(
        (0.08..=0.35).contains(&share),
        "a busy loop under a 20% quota used {:.0}% of a cpu",
        share * 100.0
    );
    let d = stats(&c);
    assert!(
        d["cpu"]["throttling"]["throttledPeriods"].as_u64().unwrap_or(0) > 0,
        "throttled periods counted: {}",
        d["cpu"]
    );
    if is_v2() {
        assert_eq!(read_cg(&c, "cpu", "cpu.max"), "20000 100000");
    } else {
        assert_eq!(read_cg(&c, "cpu", "cpu.cfs_quota_us"), "20000");
    }
}

#[test]
fn update_changes_a_running_container() {
    let c = sleeper("update", json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 100}}));
    assert_eq!(memory_limit(&c), (64u64 << 20).to_string());
    c.oci(&["update", "--memory", "128m", &c.id])
        .assert_ok("update --memory 128m (raise)");
    assert_eq!(memory_limit(&c), (128u64 << 20).to_string());
    c.oci(&["update", "--memory", "48m", &c.id])
        .assert_ok("update --memory 48m (lower)");
    assert_eq!(memory_limit(&c), (48u64 << 20).to_string());
    c.oci(&[
        "update",
        "--pids-limit",
        "50",
        "--cpu-quota",
        "30000",
        "--cpu-period",
        "100000",
        "--cpu-share",
        "512",
        &c.id,
    ])
    .assert_ok("update pids and cpu flags");
    assert_eq!(pids_max(&c), "50");
    if is_v2() {
        assert_eq!(read_cg(&c, "cpu", "cpu.max"), "30000 100000");
        assert_eq!(
            read_cg(&c, "cpu", "cpu.weight"),
            "20",
            "512 shares -> weight 1+(510*9999)/262142"
        );
    } else {
        assert_eq!(read_cg(&c, "cpu", "cpu.cfs_quota_us"), "30000");
        assert_eq!(read_cg(&c, "cpu", "cpu.shares"), "512");
    }
    // From a resources file, and from stdin.
    let f = c.dir.join("res.json");
    fs::write(&f, r#"{"memory":{"limit":100663296},"pids":{"limit":40}}"#).unwrap();
    c.oci(
        &[
            OsArg::s("update"),
            OsArg::s("--resources"),
            OsArg::p(&f),
            OsArg::s(&c.id),
        ]
        .map(OsArg::into_os),
    )
    .assert_ok("update -r FILE");
    assert_eq!(memory_limit(&c), "100663296");
    assert_eq!(pids_max(&c), "40");
    let mut cmd = c.cmd();
    cmd.args(["update", "-r", "-", &c.id]).stdin(Stdio::piped());
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"pids":{"limit":-1}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success(), "update -r - (stdin)");
    assert_eq!(pids_max(&c), "max");
    // Stats see the new limit.
    assert_eq!(stats(&c)["memory"]["usage"]["limit"], 100663296u64);
}

/// Helper to mix strings and paths in one argument list.
enum OsArg<'a> {
    S(&'a str),
    P(&'a Path),
}

impl<'a> OsArg<'a> {
    fn s(s: &'a str) -> Self {
        OsArg::S(s)
    }
    fn p(p: &'a Path) -> Self {
        OsArg::P(p)
    }
    fn into_os(self) -> std::ffi::OsString {
        match self {
            OsArg::S(s) => s.into(),
            OsArg::P(p) => p.as_os_str().to_owned(),
        }
    }
}

#[test]
fn update_bad_input_changes_nothing() {
    let c = sleeper(
        "update-bad",
        json!({"memory": {"limit": 64 << 20}, "pids": {"limit": 100}}),
    );
    let before = (memory_limit(&c), pids_max(&c));
    let check = |what: &str, out: Out, needle: &str| {
        out.assert_fail(what);
        assert!(
            out.mentions(needle),
            "{what}: the error should mention {needle:?}: {out}"
        );
        assert_eq!((memory_limit(&c), pids_max(&c)), before, "{what}: limits changed");
    };
    check(
        "negative --memory",
        c.oci(&["update", "--memory", "-5", &c.id]),
        "negative",
    );
    check(
        "negative --pids-limit",
        c.oci(&["update", "--pids-limit", "-3", &c.id]),
        "pids-limit",
    );
    check("bad size", c.oci(&["update", "--memory", "lots", &c.id]), "memory");
    let file = |name: &str, text: &str| {
        let p = c.dir.join(name);
        fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let f = file("malformed.json", "{\"memory\": {\"limit\": 1");
    check("malformed file", c.oci(&["update", "-r", &f, &c.id]), "malformed.json");
    let f = file("badtype.json", r#"{"memory":{"limit":"lots"}}"#);
    check(
        "unknown field value",
        c.oci(&["update", "-r", &f, &c.id]),
        "badtype.json",
    );
    let f = file("neg.json", r#"{"pids":{"limit":50},"memory":{"limit":-5}}"#);
    check(
        "negative limit in a file",
        c.oci(&["update", "-r", &f, &c.id]),
        "memory.limit",
    );
    let f = file("badcpus.json", r#"{"pids":{"limit":50},"cpu":{"cpus":"two"}}"#);
    check(
        "bad cpuset syntax after a good field",
        c.oci(&["update", "-r", &f, &c.id]),
        "cpu.cpus",
    );
    // Valid syntax the kernel refuses (no cpu 4000): the pids write before it is undone.
    let f = file(
        "nocpu.json",
        r#"{"memory":{"limit":80000000},"pids":{"limit":50},"cpu":{"cpus":"4000"}}"#,
    );
    check(
        "kernel refusal after good fields",
        c.oci(&["update", "-r", &f, &c.id]),
        "nothing was changed",
    );
    check(
        "flags and file together",
        c.oci(&["update", "-r", &f, "--memory", "1g", &c.id]),
        "exclusive",
    );
    check(
        "unknown container",
        c.oci(&["update", "--memory", "1g", "vessel-no-such-container"]),
        "does not exist",
    );
}

#[test]
fn pause_stops_a_counter_and_resume_restarts_it() {
    let mut c = TestContainer::new("pause");
    c.sh("while :; do echo tick; sleep 0.05; done");
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    let ticks = |c: &TestContainer| c.container_output().lines().count();
    assert!(
        wait_until(Duration::from_secs(10), || ticks(&c) >= 3),
        "counter never ran"
    );
    c.oci(&["pause", &c.id]).assert_ok("pause");
    assert_eq!(c.status(), "paused");
    let frozen = if is_v2() {
        read_cg(&c, "freezer", "cgroup.freeze") == "1"
    } else {
        read_cg(&c, "freezer", "freezer.state") == "FROZEN"
    };
    assert!(frozen, "the cgroup is frozen");
    std::thread::sleep(Duration::from_millis(100));
    let n = ticks(&c);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(ticks(&c), n, "the counter moved while paused");
    c.oci(&["pause", &c.id]).assert_fail("pause a paused container");
    c.oci(&["resume", &c.id]).assert_ok("resume");
    assert_eq!(c.status(), "running");
    assert!(
        wait_until(Duration::from_secs(10), || ticks(&c) >= n + 3),
        "the counter did not restart"
    );
    c.oci(&["resume", &c.id]).assert_fail("resume a running container");
}

/// A container with two device nodes the default allow list does not cover: `/dev/xdev`,
/// char 1:12 (a minor no current kernel drives: open gives EPERM when the device cgroup
/// denies it and ENXIO once a rule allows it), made inside the container with
/// CAP_MKNOD (the default rules allow mknod; the host's temp dir may be nodev), and,
/// where the host has it, its /dev/fuse (10:229) bound in (opens for real when allowed).
fn devnode_container(test: &str, allow: bool) -> (TestContainer, bool) {
    let mut c = TestContainer::new(test);
    let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD"];
    c.caps(&caps, &caps, &caps, &[], &[]);
    let fuse = Path::new("/dev/fuse").exists();
    if fuse {
        c.add_mount(json!({"destination": "/dev/fuse", "type": "bind", "source": "/dev/fuse", "options": ["bind"]}));
    } else {
        note("no /dev/fuse on this host: only the 1:12 node is checked");
    }
    if allow {
        let rules = c.spec["linux"]["resources"]["devices"].as_array_mut().unwrap();
        rules.push(json!({"allow": true, "type": "c", "major": 1, "minor": 12, "access": "rw"}));
        rules.push(json!({"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"}));
    }
    c.start_sleeper();
    c.exec(&[], &["mknod", "/dev/xdev", "c", "1", "12"])
        .assert_ok("mknod (allowed by the default c *:* m rule)");
    (c, fuse)
}

/// What a device cgroup refusal looks like: EPERM (v1, and BPF on newer kernels) or
/// EACCES (a BPF filter on 6.1).
fn refused(out: &Out) -> bool {
    out.all().contains("not permitted") || out.all().contains("Permission denied")
}

#[test]
fn devices_denied_and_allowed() {
    let (c, fuse) = devnode_container("dev-deny", false);
    let out = c.exec(&[], &["sh", "-c", "exec 3<>/dev/xdev"]);
    out.assert_fail("open a 1:12 node without a rule");
    assert!(refused(&out), "EPERM/EACCES from the device cgroup: {out}");
    if fuse {
        let out = c.exec(&[], &["sh", "-c", "exec 3<>/dev/fuse && echo opened"]);
        out.assert_fail("open /dev/fuse without a rule");
        assert!(refused(&out), "EPERM/EACCES from the device cgroup: {out}");
    }
    let out = c.exec(&[], &["sh", "-c", "echo x > /dev/null && head -c1 /dev/zero | wc -c"]);
    out.assert_ok("default devices stay usable");
    assert_eq!(out.stdout.trim(), "1");
    if !is_v2() {
        let list = read_cg(&c, "devices", "devices.list");
        assert!(
            list.contains("c 1:3 rwm") && !list.contains("a *:*"),
            "devices.list: {list}"
        );
    }
    drop(c);
    let (c, fuse) = devnode_container("dev-allow", true);
    let out = c.exec(&[], &["sh", "-c", "exec 3<>/dev/xdev"]);
    assert!(
        !refused(&out) && out.all().contains("No such device"),
        "an allowed 1:12 passes the device cgroup and reaches the (absent) driver: {out}"
    );
    if fuse {
        let out = c.exec(&[], &["sh", "-c", "exec 3<>/dev/fuse && echo opened"]);
        out.assert_ok("open /dev/fuse with an allow rule");
        assert!(out.stdout.contains("opened"), "{out}");
    }
}

#[test]
fn bad_device_rule_fails_create_cleanly() {
    let mut c = TestContainer::new("dev-bad");
    c.spec["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwx"}]);
    let out = c.create();
    out.assert_fail("create with access rwx");
    assert!(out.mentions("devices[1]") && out.mentions("'x'"), "{out}");
    c.assert_no_leftovers("after a bad device rule");
}

#[test]
fn bad_and_unsupported_resources_fail_create_cleanly() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"memory": {"limit": -5}}), "memory.limit"),
        (json!({"pids": {"limit": -7}}), "pids.limit"),
        (json!({"cpu": {"cpus": "0-"}}), "cpu.cpus"),
        // Fields this layout cannot honour.
        if is_v2() {
            (json!({"memory": {"swappiness": 10}}), "v2")
        } else {
            (json!({"unified": {"memory.high": "100000"}}), "v1")
        },
        if is_v2() {
            // network.classID is ignored on v2, as runc does (resources_fields.rs).
            (json!({"cpu": {"realtimeRuntime": 1000}}), "v2")
        } else {
            (json!({"network": {"classID": 1048577}}), "net_cls")
        },
    ];
    for (res, needle) in cases {
        let mut c = TestContainer::new("res-bad");
        if let Value::Object(m) = res.clone() {
            for (k, v) in m {
                resources(&mut c)[k] = v;
            }
        }
        let out = c.create();
        out.assert_fail(&format!("create with {res}"));
        assert!(
            out.mentions(needle),
            "{res}: the error should mention {needle:?}: {out}"
        );
        c.assert_no_leftovers(&format!("after {res}"));
    }
}

#[test]
fn every_memory_and_cpu_field_reaches_its_file() {
    let limit = 96u64 << 20;
    let block_dev = fs::read_dir("/sys/block")
        .ok()
        .and_then(|mut d| d.find_map(|e| fs::read_to_string(e.ok()?.path().join("dev")).ok()))
        .map(|s| s.trim().to_string());
    let mut res = json!({
        "memory": {"limit": limit, "swap": limit * 2, "reservation": 50 << 20},
        "cpu": {"shares": 2048, "quota": 50000, "period": 200000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 77}
    });
    if let Some((ma, mi)) = block_dev.as_deref().and_then(|d| d.split_once(':')) {
        res["blockIO"] = json!({"throttleReadBpsDevice": [{"major": ma.parse::<i64>().unwrap(), "minor": mi.parse::<i64>().unwrap(), "rate": 10485760}]});
    }
    if !is_v2() {
        res["memory"]["swappiness"] = json!(17);
        res["memory"]["disableOOMKiller"] = json!(true);
        res["memory"]["kernelTCP"] = json!(64 << 20);
    }
    let c = sleeper("fields", res);
    assert_eq!(pids_max(&c), "77");
    if is_v2() {
        assert_eq!(read_cg(&c, "memory", "memory.max"), limit.to_string());
        if cg_file(&c, "memory", "memory.swap.max").exists() {
            assert_eq!(
                read_cg(&c, "memory", "memory.swap.max"),
                limit.to_string(),
                "swap.max = swap - limit"
            );
        }
        assert_eq!(read_cg(&c, "memory", "memory.low"), (50u64 << 20).to_string());
        assert_eq!(read_cg(&c, "cpu", "cpu.max"), "50000 200000");
        assert_eq!(
            read_cg(&c, "cpu", "cpu.weight"),
            "79",
            "2048 shares -> 1+(2046*9999)/262142"
        );
        assert_eq!(read_cg(&c, "cpuset", "cpuset.cpus"), "0");
        if let Some(d) = &block_dev {
            assert!(
                read_cg(&c, "io", "io.max").contains(&format!("{d} rbps=10485760")),
                "io.max"
            );
        }
    } else {
        assert_eq!(read_cg(&c, "memory", "memory.limit_in_bytes"), limit.to_string());
        assert_eq!(
            read_cg(&c, "memory", "memory.memsw.limit_in_bytes"),
            (limit * 2).to_string()
        );
        assert_eq!(
            read_cg(&c, "memory", "memory.soft_limit_in_bytes"),
            (50u64 << 20).to_string()
        );
        assert_eq!(read_cg(&c, "memory", "memory.swappiness"), "17");
        assert!(read_cg(&c, "memory", "memory.oom_control").contains("oom_kill_disable 1"));
        assert_eq!(
            read_cg(&c, "memory", "memory.kmem.tcp.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
        assert_eq!(read_cg(&c, "cpu", "cpu.shares"), "2048");
        assert_eq!(read_cg(&c, "cpu", "cpu.cfs_period_us"), "200000");
        assert_eq!(read_cg(&c, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read_cg(&c, "cpuset", "cpuset.cpus"), "0");
        if let Some(d) = &block_dev {
            assert!(read_cg(&c, "blkio", "blkio.throttle.read_bps_device").contains(&format!("{d} 10485760")));
        }
    }
}

#[test]
fn events_stats_and_ps() {
    let c = sleeper("stats", json!({"memory": {"limit": 64 << 20}}));
    let d = stats(&c);
    assert!(
        d["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "memory usage: {}",
        d["memory"]
    );
    assert_eq!(d["memory"]["usage"]["limit"], 64u64 << 20);
    assert!(
        d["memory"]["swap"].is_object() && d["memory"]["raw"].is_object(),
        "{}",
        d["memory"]
    );
    assert!(d["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{}", d["pids"]);
    assert!(d["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0, "{}", d["cpu"]);
    for key in ["cpu", "memory", "pids", "blkio", "hugetlb"] {
        assert!(d.get(key).is_some(), "stats lack {key}: {d}");
    }
    let pid = c.pid();
    let out = c.oci(&["ps", "--format", "json", &c.id]);
    out.assert_ok("ps json");
    let pids: Vec<i32> = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(pids, vec![pid]);
    let out = c.oci(&["ps", &c.id]);
    out.assert_ok("ps table");
    let lines = out.lines();
    assert!(lines[0].contains("PID"), "{out}");
    assert_eq!(lines.len(), 2, "header and the sleeper: {out}");
    assert!(
        lines[1].contains("sleep 1000") && lines[1].contains(&pid.to_string()),
        "{out}"
    );
    let out = c.oci(&["ps", &c.id, "-o", "pid,comm"]);
    out.assert_ok("ps with options");
    assert!(out.stdout.contains("sleep"), "{out}");
    let out = c.oci(&["events", "--interval", "soon", &c.id]);
    out.assert_fail("bad --interval");
    // The stream ends by itself when the container stops.
    let events = EventsStream::start(&c, "100ms");
    assert!(
        wait_until(Duration::from_secs(10), || events.events().len() >= 2),
        "periodic stats"
    );
    c.kill("KILL").assert_ok("kill");
    let mut child = events.child;
    let ended = wait_until(Duration::from_secs(10), || child.0.try_wait().ok().flatten().is_some());
    assert!(ended, "events kept running after the container stopped");
}

#[test]
fn unified_keys_reach_the_cgroup2_directory() {
    if !is_v2() && !Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        note("a cgroup v1 host without cgroup2: `unified` keys are refused there; test skipped");
        return;
    }
    // cgroup.max.descendants exists in every cgroup2 directory, hybrid ones included.
    let c = sleeper("unified", json!({"unified": {"cgroup.max.descendants": "7"}}));
    assert_eq!(read_cg(&c, "unified", "cgroup.max.descendants"), "7");
    c.oci(&["update", "-r", "-", &c.id])
        .assert_fail("update -r - with empty stdin is malformed");
    assert_eq!(read_cg(&c, "unified", "cgroup.max.descendants"), "7");
}
