//! exec: a process joins a running container's namespaces, with its own flags.

mod common;

use std::fs;
use std::time::Duration;

use common::*;
use serde_json::json;

fn sleeper(test: &str) -> TestContainer {
    let mut c = TestContainer::new(test);
    c.hostname("vessel-exec");
    c.start_sleeper();
    c
}

#[test]
fn exec_joins_pid_and_uts_namespaces() {
    let c = sleeper("exec-ns");
    let out = c.exec(
        &[],
        &[
            "sh",
            "-c",
            "ps -o pid,comm; hostname; readlink /proc/1/ns/pid; readlink /proc/self/ns/pid",
        ],
    );
    out.assert_ok("exec");
    let init = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"))
        .unwrap_or_else(|| panic!("pid 1 in ps: {out}"));
    assert!(init.contains("sleep"), "pid 1 is the container's init: {out}");
    let l = out.lines();
    let n = l.len();
    assert_eq!(l[n - 3], "vessel-exec", "{out}");
    assert_eq!(l[n - 2], l[n - 1], "same pid namespace as init: {out}");
    assert_ne!(l[n - 1], host_ns("pid"));
}

#[test]
fn exec_flags_cwd_env_user() {
    let c = sleeper("exec-flags");
    let out = c.exec(
        &["--cwd", "/tmp", "--env", "FOO=bar", "--user", "1000:1000"],
        &["sh", "-c", "pwd; echo $FOO; id -u; id -g"],
    );
    out.assert_ok("exec");
    assert_eq!(out.lines(), vec!["/tmp", "bar", "1000", "1000"], "{out}");

    let out = c.exec(&["--user", "65534"], &["id", "-u"]);
    out.assert_ok("exec --user UID");
    assert_eq!(out.lines(), vec!["65534"], "{out}");
}

#[test]
fn exec_cap_and_no_new_privs() {
    let mut c = TestContainer::new("exec-caps");
    c.spec["process"]["noNewPrivileges"] = json!(false);
    c.start_sleeper();
    let out = c.exec(&[], &["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/self/status"]);
    out.assert_ok("exec");
    assert!(out.stdout.contains("NoNewPrivs:\t0"), "{out}");
    let eff = |s: &str| -> u64 {
        let l = s.lines().find(|l| l.starts_with("CapEff:")).unwrap();
        u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(eff(&out.stdout) & (1 << 21), 0, "no CAP_SYS_ADMIN by default: {out}");

    let out = c.exec(
        &["--cap", "CAP_SYS_ADMIN", "--no-new-privs"],
        &["grep", "-E", "^(CapEff|NoNewPrivs):", "/proc/self/status"],
    );
    out.assert_ok("exec --cap --no-new-privs");
    assert!(out.stdout.contains("NoNewPrivs:\t1"), "{out}");
    assert_ne!(eff(&out.stdout) & (1 << 21), 0, "--cap CAP_SYS_ADMIN: {out}");
}

#[test]
fn exec_process_json() {
    let c = sleeper("exec-pjson");
    let p = c.dir.join("process.json");
    write_json(
        &p,
        &json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000},
            "args": ["sh", "-c", "echo from-process-json; echo $X; pwd; id -u"],
            "env": ["PATH=/bin:/usr/bin", "X=y"],
            "cwd": "/home/user"
        }),
    );
    let out = c.exec(&["--process", p.to_str().unwrap()], &[]);
    out.assert_ok("exec --process");
    assert_eq!(
        out.lines(),
        vec!["from-process-json", "y", "/home/user", "1000"],
        "{out}"
    );
}

#[test]
fn exec_exit_code_passthrough() {
    let c = sleeper("exec-exit");
    let out = c.exec(&[], &["sh", "-c", "exit 7"]);
    assert_eq!(out.code, 7, "{out}");
    let out = c.exec(&[], &["false"]);
    assert_eq!(out.code, 1, "{out}");
    let out = c.exec(&[], &["sh", "-c", "echo out; echo err >&2"]);
    out.assert_ok("exec");
    assert_eq!(out.stdout.trim(), "out", "{out}");
    assert!(out.stderr.contains("err"), "{out}");
}

#[test]
fn exec_detach_with_pid_file() {
    let c = sleeper("exec-detach");
    let pid_file = c.dir.join("exec.pid");
    let out = c.exec(
        &["--detach", "--pid-file", pid_file.to_str().unwrap()],
        &["sleep", "999"],
    );
    out.assert_ok("exec --detach");
    let pid: i32 = fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid in pid file");
    c.record_pid(pid);
    assert!(pid_alive(pid), "detached exec process {pid} runs");
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        cmdline.starts_with("sleep\0999"),
        "pid file names the exec'd process: {cmdline:?}"
    );
    let init = c.pid();
    let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/pid")).unwrap();
    assert_eq!(ns(pid), ns(init), "detached exec is in the container's pid namespace");
    let ps = c.exec(&[], &["ps", "-o", "comm,args"]);
    assert!(ps.stdout.contains("sleep 999"), "{ps}");
}

#[test]
fn exec_into_stopped_container_fails() {
    let mut c = TestContainer::new("exec-stopped");
    c.args(&["true"]);
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    let out = c.exec(&[], &["echo", "should-not-run"]);
    out.assert_fail("exec into a stopped container");
    assert!(!out.stdout.contains("should-not-run"), "{out}");
}

#[test]
fn exec_into_missing_container_fails() {
    let c = TestContainer::new("exec-missing");
    let out = c.exec(&[], &["true"]);
    out.assert_fail("exec into a missing container");
    assert!(out.all().contains("does not exist"), "{out}");
}
