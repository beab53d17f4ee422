//! The container process: args, env, cwd, user, umask, rlimits, oom_score_adj,
//! no_new_privs, capabilities, hostname/domainname, sysctl.

mod common;

use std::fs;

use common::*;
use serde_json::json;

#[test]
fn args_are_passed_verbatim() {
    let mut c = TestContainer::new("proc-args");
    c.args(&[
        "sh",
        "-c",
        "for a in \"$@\"; do echo \"[$a]\"; done",
        "zero",
        "one",
        "two words",
        "",
        "$HOME",
    ]);
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["[one]", "[two words]", "[]", "[$HOME]"], "{out}");
}

#[test]
fn env_is_exactly_the_configured_one() {
    let mut c = TestContainer::new("proc-env");
    c.env("FOO=bar baz").env("EMPTY=");
    c.sh("echo \"FOO=$FOO\"; env | sort");
    c.write_spec();
    let mut cmd = c.cmd();
    cmd.env("VESSEL_TEST_HOST_ONLY", "leak")
        .args(["run", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id);
    let out = run_cmd(&mut cmd, TIMEOUT);
    out.assert_ok("run");
    assert_eq!(out.lines()[0], "FOO=bar baz", "{out}");
    assert!(out.stdout.lines().any(|l| l == "EMPTY="), "{out}");
    assert!(out.stdout.lines().any(|l| l == "TERM=xterm"), "{out}");
    assert!(
        !out.stdout.contains("VESSEL_TEST_HOST_ONLY"),
        "host env must not leak: {out}"
    );
}

#[test]
fn cwd() {
    let mut c = TestContainer::new("proc-cwd");
    c.cwd("/tmp");
    c.sh("pwd; readlink /proc/self/cwd");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["/tmp", "/tmp"], "{out}");
}

#[test]
fn cwd_is_created_when_missing() {
    // runc creates a missing cwd (MkdirAll) as the spec's examples expect.
    let mut c = TestContainer::new("proc-cwd-new");
    c.readonly(false);
    c.cwd("/work/dir");
    c.sh("pwd");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["/work/dir"], "{out}");
}

#[test]
fn user_groups_and_umask() {
    let mut c = TestContainer::new("proc-user");
    c.user(1000, 1000, &[10, 20]);
    c.spec["process"]["user"]["umask"] = json!(0o027);
    c.sh("id -u; id -g; grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l[0], "1000", "{out}");
    assert_eq!(l[1], "1000", "{out}");
    let uids: Vec<&str> = l[2].split_whitespace().skip(1).collect();
    assert_eq!(uids, ["1000"; 4], "real, effective, saved, fs uid: {out}");
    let gids: Vec<&str> = l[3].split_whitespace().skip(1).collect();
    assert_eq!(gids, ["1000"; 4], "{out}");
    let mut groups: Vec<&str> = l[4].split_whitespace().skip(1).collect();
    groups.sort();
    assert_eq!(groups, ["10", "20"], "additionalGids: {out}");
    assert_eq!(l[5], "0027", "umask: {out}");
}

#[test]
fn default_umask_is_0022() {
    let mut c = TestContainer::new("proc-umask");
    c.sh("umask");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["0022"], "{out}");
}

#[test]
fn rlimits() {
    let mut c = TestContainer::new("proc-rlimits");
    // Below this host's hard limit (20000): root here cannot raise rlimits.
    c.rlimits(&[("RLIMIT_NOFILE", 512, 1000), ("RLIMIT_CORE", 0, 0)]);
    c.sh("ulimit -n; ulimit -Hn; grep -E 'Max (open files|core file size)' /proc/self/limits");
    let out = c.run();
    out.assert_ok("run");
    let l = out.lines();
    assert_eq!(l[0], "512", "soft nofile: {out}");
    assert_eq!(l[1], "1000", "hard nofile: {out}");
    let core: Vec<&str> = l[2].split_whitespace().collect();
    assert_eq!(&core[4..6], ["0", "0"], "core: {out}");
    let nofile: Vec<&str> = l[3].split_whitespace().collect();
    assert_eq!(&nofile[3..5], ["512", "1000"], "nofile: {out}");
}

#[test]
fn oom_score_adj() {
    let mut c = TestContainer::new("proc-oom");
    c.spec["process"]["oomScoreAdj"] = json!(100);
    c.sh("cat /proc/self/oom_score_adj");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["100"], "{out}");
}

fn status_field(out: &str, field: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{field} in {out}"))
        .to_string()
}

#[test]
fn no_new_privileges() {
    let mut on = TestContainer::new("proc-nnp-on");
    on.spec["process"]["noNewPrivileges"] = json!(true);
    on.sh("cat /proc/self/status");
    let out = on.run();
    out.assert_ok("run");
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "1");

    let mut off = TestContainer::new("proc-nnp-off");
    off.spec["process"]["noNewPrivileges"] = json!(false);
    off.sh("cat /proc/self/status");
    let out = off.run();
    out.assert_ok("run");
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), "0");
}

const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_SYS_ADMIN: u32 = 21;

fn mask(bits: &[u32]) -> u64 {
    bits.iter().fold(0, |m, b| m | (1u64 << b))
}

fn cap_field(out: &str, field: &str) -> u64 {
    u64::from_str_radix(&status_field(out, field), 16).unwrap()
}

#[test]
fn capabilities_root() {
    let mut c = TestContainer::new("proc-caps-root");
    let set = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    c.caps(&set, &set, &set, &[], &[]);
    c.sh("cat /proc/self/status");
    let out = c.run();
    out.assert_ok("run");
    let want = mask(&[CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE]);
    for f in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(cap_field(&out.stdout, f), want, "{f}: {out}");
    }
    assert_eq!(cap_field(&out.stdout, "CapInh"), 0, "{out}");
    assert_eq!(cap_field(&out.stdout, "CapAmb"), 0, "{out}");
    assert_eq!(cap_field(&out.stdout, "CapEff") & mask(&[CAP_SYS_ADMIN]), 0);
}

#[test]
fn capabilities_non_root_with_ambient() {
    // A non-root process keeps across execve only what is ambient: effective and
    // permitted become the ambient set, inheritable and bounding stay as configured.
    let mut c = TestContainer::new("proc-caps-user");
    c.user(1000, 1000, &[]);
    c.caps(
        &["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        &["CAP_KILL", "CAP_CHOWN"],
        &["CAP_KILL", "CAP_CHOWN"],
        &["CAP_KILL"],
        &["CAP_KILL"],
    );
    c.spec["process"]["noNewPrivileges"] = json!(true);
    c.sh("cat /proc/self/status");
    let out = c.run();
    out.assert_ok("run");
    let s = &out.stdout;
    assert_eq!(
        cap_field(s, "CapBnd"),
        mask(&[CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE]),
        "{out}"
    );
    assert_eq!(cap_field(s, "CapInh"), mask(&[CAP_KILL]), "{out}");
    assert_eq!(cap_field(s, "CapAmb"), mask(&[CAP_KILL]), "{out}");
    assert_eq!(cap_field(s, "CapPrm"), mask(&[CAP_KILL]), "{out}");
    assert_eq!(cap_field(s, "CapEff"), mask(&[CAP_KILL]), "{out}");
}

#[test]
fn hostname_and_domainname() {
    let mut c = TestContainer::new("proc-names");
    c.hostname("vessel-box");
    c.spec["domainname"] = json!("vessel.example");
    c.sh("hostname; cat /proc/sys/kernel/domainname");
    let host_domain = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["vessel-box", "vessel.example"], "{out}");
    assert_eq!(fs::read_to_string("/proc/sys/kernel/domainname").unwrap(), host_domain);
}

#[test]
fn sysctl_in_own_namespaces() {
    let mut c = TestContainer::new("proc-sysctl");
    // Both are per-namespace (net and ipc namespaces are new): the host is not touched.
    let host_fwd = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shm = fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    let want_fwd = if host_fwd.trim() == "1" { "0" } else { "1" };
    c.spec["linux"]["sysctl"] = json!({
        "net.ipv4.ip_forward": want_fwd,
        "kernel.shmmax": "123456789"
    });
    c.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec![want_fwd, "123456789"], "{out}");
    assert_eq!(fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host_fwd);
    assert_eq!(fs::read_to_string("/proc/sys/kernel/shmmax").unwrap(), host_shm);
}

/// `linux.personality` LINUX32 is applied (as crun does; runc 1.1 ignores it): the
/// program and `exec` processes see i686 from uname(2).
#[test]
fn personality_linux32() {
    if std::env::consts::ARCH != "x86_64" {
        return; // LINUX32 reports i686 only on x86_64
    }
    let mut c = TestContainer::new("personality");
    c.spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    c.sh("uname -m");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.stdout.trim(), "i686", "{out}");
    let mut c = TestContainer::new("personality-exec");
    c.spec["linux"]["personality"] = json!({"domain": "LINUX32"});
    c.start_sleeper();
    let out = c.exec(&[], &["uname", "-m"]);
    out.assert_ok("exec");
    assert_eq!(out.stdout.trim(), "i686", "{out}");
}
