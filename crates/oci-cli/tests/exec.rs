//! exec: a process joins a running container's namespaces, with its own flags.

mod common;

use std::fs;
use std::path::Path;
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

/// `exec --cgroup PATH` (runc 1.1): the process runs in that sub-cgroup of the
/// container's cgroup, in every hierarchy; a missing sub-cgroup is an error.
#[test]
fn exec_cgroup_runs_in_a_sub_cgroup() {
    let mut c = TestContainer::new("exec-cgroup");
    c.start_sleeper();
    let out = c.exec(&["--cgroup", "vessel-sub"], &["true"]);
    out.assert_fail("exec into a sub-cgroup that does not exist");
    let dirs = cgroup_dirs(&c.cgroups_path);
    assert!(!dirs.is_empty(), "the container has cgroup dirs");
    for d in &dirs {
        fs::create_dir(d.join("vessel-sub")).unwrap();
        // A new v1 cpuset cgroup takes no task until its cpus and mems are set.
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let sub = d.join("vessel-sub").join(f);
            if let (Ok(v), true) = (fs::read_to_string(d.join(f)), sub.exists() && !is_v2()) {
                fs::write(sub, v.trim()).unwrap();
            }
        }
    }
    let out = c.exec(&["--cgroup", "vessel-sub"], &["cat", "/proc/self/cgroup"]);
    out.assert_ok("exec --cgroup vessel-sub");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(!lines.is_empty(), "{out}");
    for l in &lines {
        assert!(l.ends_with("/vessel-sub"), "every hierarchy: {l:?} in {out}");
    }
    for bad in ["../escape", "a:b:c"] {
        let out = c.exec(&["--cgroup", bad], &["true"]);
        out.assert_fail(&format!("exec --cgroup {bad}"));
    }
    for d in &dirs {
        let _ = fs::remove_dir(d.join("vessel-sub"));
    }
}

/// `exec --cgroup CONTROLLER:PATH`, per cgroup v1 controller (refused on cgroup v2,
/// which has one hierarchy).
#[test]
fn exec_cgroup_per_controller() {
    let mut c = TestContainer::new("exec-cgroup-ctrl");
    c.start_sleeper();
    let mem = Path::new("/sys/fs/cgroup/memory").join(c.cgroups_path.trim_start_matches('/'));
    if is_v2() || !mem.is_dir() {
        let out = c.exec(&["--cgroup", "memory:vessel-sub"], &["true"]);
        out.assert_fail("exec --cgroup memory:PATH on cgroup v2");
        return;
    }
    fs::create_dir(mem.join("vessel-sub")).unwrap();
    let out = c.exec(&["--cgroup", "memory:vessel-sub"], &["cat", "/proc/self/cgroup"]);
    out.assert_ok("exec --cgroup memory:vessel-sub");
    for l in out.stdout.lines() {
        let ctrls = l.split(':').nth(1).unwrap_or("");
        let in_sub = l.ends_with("/vessel-sub");
        let is_memory = ctrls.split(',').any(|x| x == "memory");
        assert_eq!(in_sub, is_memory, "only the memory hierarchy: {l:?} in {out}");
    }
    let _ = fs::remove_dir(mem.join("vessel-sub"));
}

/// exec into a paused container is refused unless `--ignore-paused`; with it, the
/// process starts frozen and runs once the container is resumed (runc's semantics).
#[test]
fn exec_into_paused_container_needs_ignore_paused() {
    let mut c = TestContainer::new("exec-paused");
    c.start_sleeper();
    c.oci(&["pause", &c.id]).assert_ok("pause");
    let out = c.exec(&[], &["true"]);
    out.assert_fail("exec into a paused container");
    assert!(out.stderr.contains("paused"), "{out}");
    assert!(out.stderr.contains("--ignore-paused"), "{out}");
    let mut cmd = c.cmd();
    cmd.args(["exec", "--ignore-paused", &c.id, "echo", "ran-after-resume"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = ChildGuard(cmd.spawn().expect("spawn exec --ignore-paused"));
    c.record_pid(child.pid());
    c.oci(&["resume", &c.id]).assert_ok("resume");
    let mut child = child;
    let st = wait_timeout(&mut child.0, Duration::from_secs(30)).expect("exec ends once resumed");
    let mut stdout = String::new();
    let _ = std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut stdout);
    assert!(st.success(), "exec --ignore-paused: {st:?} {stdout}");
    assert!(stdout.contains("ran-after-resume"), "{stdout}");
}
