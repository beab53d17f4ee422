//! Namespaces: each kind is new (or shared when not asked for), joined by path, time
//! namespace offsets, user namespace mappings.

mod common;

use std::fs;
use std::os::unix::fs::{chown, lchown};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn pid_namespace_init_is_pid_1() {
    let mut c = TestContainer::new("ns-pid");
    c.sh("echo $$; readlink /proc/self/ns/pid");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l[0], "1", "shell is pid 1: {out}");
    assert_ne!(l[1], host_ns("pid"), "pid ns differs from the test's");
}

#[test]
fn uts_namespace_hostname() {
    let mut c = TestContainer::new("ns-uts");
    c.hostname("vessel-uts-test");
    c.sh("hostname; readlink /proc/self/ns/uts");
    let before = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines()[0], "vessel-uts-test", "{out}");
    assert_ne!(out.lines()[1], host_ns("uts"));
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before,
        "host name unchanged"
    );
}

#[test]
fn new_namespaces_differ_from_host() {
    let mut c = TestContainer::new("ns-inodes");
    c.namespace("cgroup", None);
    c.sh("for n in ipc net cgroup mnt uts pid; do echo $n $(readlink /proc/self/ns/$n); done");
    let out = c.run();
    out.assert_ok("run");
    for line in out.lines() {
        let (kind, link) = line.split_once(' ').unwrap();
        assert!(link.starts_with(&format!("{kind}:[")) || kind == "mnt", "{line}");
        assert_ne!(link, host_ns(kind), "{kind} namespace must be new: {out}");
    }
    assert_eq!(out.lines().len(), 6, "{out}");
}

#[test]
fn namespace_not_listed_is_shared() {
    let mut c = TestContainer::new("ns-shared");
    c.remove_namespace("network").remove_namespace("ipc");
    c.sh("readlink /proc/self/ns/net; readlink /proc/self/ns/ipc");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec![host_ns("net"), host_ns("ipc")], "{out}");
}

#[test]
fn time_namespace_offsets() {
    // runc 1.1.5 predates time namespace support (runc 1.2): fails against it.
    let mut c = TestContainer::new("ns-time");
    let offset = 10 * 86400;
    c.namespace("time", None);
    c.spec["linux"]["timeOffsets"] = serde_json::json!({
        "boottime": {"secs": offset, "nanosecs": 0},
        "monotonic": {"secs": offset, "nanosecs": 0}
    });
    c.sh("cat /proc/uptime; readlink /proc/self/ns/time");
    let host_before: f64 = uptime();
    let out = c.run();
    out.assert_ok("run");
    let host_after = uptime();
    let inside: f64 = out.lines()[0]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("uptime: {out}"));
    assert!(
        inside >= host_before + offset as f64 - 1.0 && inside <= host_after + offset as f64 + 1.0,
        "uptime inside {inside} = host ({host_before}..{host_after}) + {offset}"
    );
    assert_ne!(out.lines()[1], host_ns("time"), "time namespace is new");
}

fn uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn join_network_namespace_by_path() {
    let mut c = TestContainer::new("ns-join-net");
    // A helper in its own net namespace, killed by the guard.
    let helper = ChildGuard(
        Command::new("unshare")
            .args(["--net", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let pid = helper.pid();
    let ns_path = format!("/proc/{pid}/ns/net");
    let host = host_ns("net");
    let mut target = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            target = fs::read_link(&ns_path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            !target.is_empty() && target != host
        }),
        "helper never entered its net namespace"
    );
    c.namespace("network", Some(&ns_path));
    c.sh("readlink /proc/self/ns/net");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines()[0], target, "joined the helper's net namespace");
}

#[test]
fn join_uts_namespace_of_another_container() {
    let mut a = TestContainer::new("ns-join-a");
    a.hostname("vessel-first");
    a.start_sleeper();
    let a_pid = a.pid();

    let mut b = TestContainer::new("ns-join-b");
    b.hostname("ignored-when-joined");
    b.namespace("uts", Some(&format!("/proc/{a_pid}/ns/uts")));
    // The spec forbids setting a hostname without a new uts namespace; runc refuses it.
    b.spec.as_object_mut().unwrap().remove("hostname");
    b.sh("hostname; readlink /proc/self/ns/uts");
    let out = b.run();
    out.assert_ok("run joining uts");
    assert_eq!(out.lines()[0], "vessel-first", "{out}");
    let a_uts = fs::read_link(format!("/proc/{a_pid}/ns/uts")).unwrap();
    assert_eq!(out.lines()[1], a_uts.to_string_lossy());
}

/// chown -R (not following symlinks) so the mapped root owns the rootfs.
fn chown_tree(p: &Path, uid: u32, gid: u32) {
    lchown(p, Some(uid), Some(gid)).unwrap();
    let md = fs::symlink_metadata(p).unwrap();
    if md.is_dir() {
        for e in fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

#[test]
fn user_namespace_mappings() {
    const HOST: u32 = 100000;
    let mut c = TestContainer::new("ns-user");
    c.id_maps(HOST, 65536);
    chown_tree(&c.rootfs, HOST, HOST);
    chown(&c.bundle, Some(HOST), Some(HOST)).unwrap();
    c.sh("id -u; id -g; cat /proc/self/uid_map; cat /proc/self/gid_map; \
          readlink /proc/self/ns/user; sleep 1000");
    c.create().assert_ok("create with user namespace");
    c.start().assert_ok("start");
    assert!(
        wait_until(Duration::from_secs(10), || c.container_output().lines().count() >= 5),
        "output: {} / {}",
        c.container_output(),
        c.container_stderr()
    );
    let out = c.container_output();
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "0", "root inside: {out}");
    assert_eq!(l[1], "0", "gid 0 inside: {out}");
    let uid_map: Vec<&str> = l[2].split_whitespace().collect();
    assert_eq!(uid_map, ["0", "100000", "65536"], "uid_map: {out}");
    let gid_map: Vec<&str> = l[3].split_whitespace().collect();
    assert_eq!(gid_map, ["0", "100000", "65536"], "gid_map: {out}");
    assert_ne!(l[4], host_ns("user"), "user namespace is new");

    // The host sees the mapped ids.
    let pid = c.pid();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uids: Vec<&str> = uid_line.split_whitespace().skip(1).collect();
    assert!(uids.iter().all(|u| *u == "100000"), "host view {uid_line}");
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
}

/// A new user namespace together with a network namespace joined by path that the host's
/// user namespace owns (a bridge network's, made before the container): the runtime
/// joins it before it makes the user namespace (as runc), since from inside the new one
/// the init has no capability over it.
#[test]
fn new_user_namespace_joins_a_host_owned_network_namespace() {
    const HOST: u32 = 100000;
    let mut c = TestContainer::new("ns-user-net");
    c.id_maps(HOST, 65536);
    chown_tree(&c.rootfs, HOST, HOST);
    chown(&c.bundle, Some(HOST), Some(HOST)).unwrap();
    let helper = ChildGuard(
        Command::new("unshare")
            .args(["--net", "sleep", "1000"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    let ns_path = format!("/proc/{}/ns/net", helper.pid());
    let host = host_ns("net");
    let mut target = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            target = fs::read_link(&ns_path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            !target.is_empty() && target != host
        }),
        "helper never entered its net namespace"
    );
    c.namespace("network", Some(&ns_path));
    c.sh("readlink /proc/self/ns/net; cat /proc/self/uid_map");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines()[0], target, "joined the helper's net namespace");
    assert_eq!(
        out.lines()[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"]
    );
}

/// A config without a mount namespace runs, as runc runs it: the container shares the
/// runtime's mount namespace (the runtime runs here in a private mount namespace of the
/// test's, so nothing reaches the host's), its mounts are made there under the rootfs
/// (mountinfo shows them at their host path) and the init chroots into the rootfs.
/// Masked or read-only paths, which would change the runtime's own mounts, are refused.
#[test]
fn no_mount_namespace_shares_the_runtime_mounts() {
    let mut c = TestContainer::new("ns-nomnt");
    c.remove_namespace("mount").masked_paths(&[]).readonly_paths(&[]);
    let marker = c.dir.join("marker");
    fs::write(&marker, "host side\n").unwrap();
    c.sh(&format!(
        "echo $$; test -f /bin/busybox && echo in-rootfs; test -e {} || echo host-out-of-sight; \
         readlink /proc/self/ns/mnt",
        marker.display()
    ));
    c.write_spec();
    // The runtime prints its own mount namespace first, then execs vessel-oci.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("readlink /proc/self/ns/mnt; exec \"$0\" \"$@\"")
        .arg(oci_bin())
        .arg("--root")
        .arg(&c.root)
        .args(["run", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .stdin(Stdio::null());
    let out = run_cmd(&mut cmd, TIMEOUT);
    out.assert_ok("run without a mount namespace");
    let l = out.lines();
    assert_eq!(l.len(), 5, "{out}");
    assert_eq!(
        &l[1..4],
        ["1", "in-rootfs", "host-out-of-sight"],
        "chrooted into the rootfs: {out}"
    );
    assert_eq!(l[4], l[0], "the container shares the runtime's mount namespace: {out}");
    assert_ne!(
        l[0],
        host_ns("mnt"),
        "the runtime ran in its own private mount namespace: {out}"
    );
    c.assert_no_leftovers("run without a mount namespace");

    c.masked_paths(&["/proc/kcore"]);
    c.write_spec();
    let bundle = c.bundle.to_str().unwrap().to_string();
    let out = c.oci_in_private_mounts(&["run", "--bundle", &bundle, &c.id]);
    assert!(!out.ok(), "masked paths without a mount namespace: {out}");
    if is_vessel() {
        assert!(out.stderr.contains("need a mount namespace"), "{out}");
    }
    c.assert_no_leftovers("refused masked paths without a mount namespace");
}
