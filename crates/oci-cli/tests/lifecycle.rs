//! Lifecycle: create/start/state/kill/delete, run (foreground, detached), list,
//! features, spec, pid files.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn create_start_kill_delete() {
    let mut c = TestContainer::new("lifecycle");
    c.args(&["sleep", "1000"]);
    c.create().assert_ok("create");

    let st = c.state();
    assert_eq!(st["status"], "created", "state after create: {st}");
    assert_eq!(st["id"], c.id.as_str());
    assert!(st["pid"].as_i64().unwrap_or(0) > 0, "created container has a pid: {st}");
    assert!(st["ociVersion"].is_string(), "ociVersion: {st}");
    let bundle = st["bundle"].as_str().unwrap_or_default();
    assert_eq!(
        fs::canonicalize(bundle).ok(),
        fs::canonicalize(&c.bundle).ok(),
        "bundle in state: {st}"
    );
    let pid = st["pid"].as_i64().unwrap() as i32;
    assert!(pid_alive(pid), "init pid {pid} exists on the host");

    c.start().assert_ok("start");
    c.wait_status("running", Duration::from_secs(10));
    assert_eq!(c.pid(), pid, "pid stays the same across start");

    // sleep as pid 1 of its pid namespace ignores SIGTERM (no handler): use KILL.
    c.kill("KILL").assert_ok("kill KILL");
    c.wait_status("stopped", Duration::from_secs(10));

    c.delete().assert_ok("delete");
    let out = c.oci(&["state", &c.id]);
    out.assert_fail("state after delete");
    assert!(out.all().contains("does not exist"), "state after delete: {out}");
    assert!(!c.root.join(&c.id).exists(), "state dir removed by delete");
    assert!(cgroup_dirs(&c.cgroups_path).is_empty(), "cgroup removed by delete");
}

/// The init and an exec'd process land in the container's cgroup in every hierarchy:
/// cloned into it (clone3 CLONE_INTO_CGROUP on cgroup2) and entering it by itself (v1
/// `tasks`), and also when clone3 is refused, as under docker's default seccomp profile.
#[test]
fn init_and_exec_enter_their_cgroup_with_and_without_clone3() {
    for refuse in [false, true] {
        if refuse && std::env::consts::ARCH != "x86_64" {
            continue;
        }
        let mut c = TestContainer::new(if refuse { "cg-noclone3" } else { "cg-clone3" });
        if refuse {
            c.refuse_clone3();
        }
        c.args(&["sleep", "1000"]);
        c.create().assert_ok("create");
        let pid = c.pid();
        let own = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for line in own.lines() {
            let path = line.splitn(3, ':').nth(2).unwrap_or_default();
            assert_eq!(path, c.cgroups_path, "init: {line} (clone3 refused: {refuse})\n{own}");
        }
        c.start().assert_ok("start");
        let out = c.oci(&["exec", &c.id, "cat", "/proc/self/cgroup"]);
        out.assert_ok("exec");
        assert!(!out.stdout.is_empty(), "{out}");
        for line in out.stdout.lines() {
            // Inside its cgroup namespace the container's cgroup is "/".
            assert!(
                line.ends_with(":/") || line.ends_with(&format!(":{}", c.cgroups_path)),
                "exec: {line} (clone3 refused: {refuse})\n{out}"
            );
        }
        c.kill("KILL").assert_ok("kill");
        c.wait_status("stopped", Duration::from_secs(10));
        c.delete().assert_ok("delete");
    }
}

#[test]
fn kill_default_signal_is_term() {
    let mut c = TestContainer::new("kill-term");
    // A shell with a TERM handler, so pid 1 of the namespace does react to SIGTERM.
    c.sh("trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done");
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    assert!(
        wait_until(Duration::from_secs(10), || c.container_output().contains("ready")),
        "container never said ready: {}",
        c.container_output()
    );
    c.oci(&["kill", &c.id]).assert_ok("kill (default signal)");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
}

#[test]
fn kill_signal_spellings() {
    let mut c = TestContainer::new("kill-names");
    c.sh(
        "trap 'echo got-usr1' USR1; trap 'echo got-hup' HUP; trap 'exit 0' TERM; \
          echo ready; while :; do sleep 0.1; done",
    );
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    assert!(wait_until(Duration::from_secs(10), || c
        .container_output()
        .contains("ready")));
    c.kill("USR1").assert_ok("kill USR1");
    assert!(
        wait_until(Duration::from_secs(10), || c.container_output().contains("got-usr1")),
        "USR1 by name: {}",
        c.container_output()
    );
    c.kill("SIGHUP").assert_ok("kill SIGHUP");
    assert!(
        wait_until(Duration::from_secs(10), || c.container_output().contains("got-hup")),
        "SIGHUP by name: {}",
        c.container_output()
    );
    c.kill("15").assert_ok("kill 15");
    c.wait_status("stopped", Duration::from_secs(10));
}

#[test]
fn run_exit_code() {
    let mut c = TestContainer::new("run-exit");
    c.sh("echo out; echo err >&2; exit 42");
    let out = c.run();
    assert_eq!(out.code, 42, "foreground run passes the exit code: {out}");
    assert!(out.stdout.contains("out"), "container stdout reaches ours: {out}");
    assert!(out.stderr.contains("err"), "container stderr reaches ours: {out}");
    // runc deletes a foreground container when it exits.
    let st = c.oci(&["state", &c.id]);
    assert!(!st.ok(), "container gone after foreground run: {st}");
}

#[test]
fn run_exit_zero() {
    let mut c = TestContainer::new("run-zero");
    c.args(&["true"]);
    let out = c.run();
    assert_eq!(out.code, 0, "{out}");
}

#[test]
fn run_killed_by_signal_from_outside() {
    let mut c = TestContainer::new("run-kill");
    c.args(&["sleep", "1000"]);
    c.write_spec();
    let mut cmd = c.cmd();
    cmd.args(["run", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().expect("spawn run"));
    c.wait_status("running", Duration::from_secs(20));
    c.record_pid(c.pid());
    c.kill("KILL").assert_ok("kill KILL");
    let st = wait_timeout(&mut child.0, Duration::from_secs(20)).expect("run returns");
    assert_eq!(exit_code(st), 128 + 9, "killed by SIGKILL -> 137");
}

#[test]
fn run_killed_by_own_signal() {
    // Without a pid namespace sh is not an init, so it can die of its own SIGTERM.
    let mut c = TestContainer::new("run-selfkill");
    c.remove_namespace("pid");
    c.sh("kill -TERM $$; sleep 5");
    let out = c.run();
    assert_eq!(out.code, 128 + 15, "killed by SIGTERM -> 143: {out}");
}

#[test]
fn run_detach() {
    let mut c = TestContainer::new("run-detach");
    c.args(&["sleep", "1000"]);
    c.write_spec();
    let pid_file = c.dir.join("run.pid");
    let out = run_cmd(
        c.cmd()
            .args(["run", "--detach", "--pid-file"])
            .arg(&pid_file)
            .arg("--bundle")
            .arg(&c.bundle)
            .arg(&c.id),
        Duration::from_secs(30),
    );
    out.assert_ok("run --detach");
    let st = c.state();
    c.record_pid(c.pid());
    assert_eq!(st["status"], "running", "{st}");
    let from_file: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid file holds a number");
    assert_eq!(from_file, st["pid"].as_i64().unwrap(), "pid file matches state");
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
}

#[test]
fn create_pid_file() {
    let mut c = TestContainer::new("pidfile");
    c.args(&["sleep", "1000"]);
    let pid_file = c.dir.join("create.pid");
    c.create_with(&["--pid-file", pid_file.to_str().unwrap()])
        .assert_ok("create");
    let from_file: i64 = fs::read_to_string(&pid_file)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid file holds a number");
    assert_eq!(from_file, c.pid() as i64);
}

/// `--pid-file` as runc and crun write it: a relative path from the caller's cwd, the
/// bare pid (no newline) replacing an older file, no temp file left; a pid file that
/// cannot be written fails the create and leaves nothing behind.
#[test]
fn pid_file_relative_replaced_and_failure_leaves_nothing() {
    let mut c = TestContainer::new("pidfile-rel");
    c.args(&["sleep", "1000"]);
    c.write_spec();
    fs::write(c.dir.join("rel.pid"), "999999999\n").unwrap();
    let st = c
        .cmd()
        .current_dir(&c.dir)
        .args(["create", "--bundle"])
        .arg(&c.bundle)
        .args(["--pid-file", "rel.pid", &c.id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn create");
    if let Some(pid) = c.state_of(&c.id).and_then(|s| s["pid"].as_i64()) {
        c.record_pid(pid as i32);
    }
    assert!(st.success(), "create --pid-file rel.pid: {st:?}");
    let text = fs::read_to_string(c.dir.join("rel.pid")).expect("pid file in the caller's cwd");
    assert_eq!(text, c.pid().to_string(), "the bare pid, replacing the old file");
    let leftovers: Vec<String> = fs::read_dir(&c.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("rel.pid") && n != "rel.pid")
        .collect();
    assert!(leftovers.is_empty(), "no temp files: {leftovers:?}");

    let mut c = TestContainer::new("pidfile-fail");
    c.args(&["sleep", "1000"]);
    let bad = c.dir.join("no-such-dir").join("x.pid");
    let out = c.create_with(&["--pid-file", bad.to_str().unwrap()]);
    out.assert_fail("create with a pid file in a missing directory");
    assert!(c.state_of(&c.id).is_none(), "no container left: {out}");
    c.assert_no_leftovers("after a pid file that could not be written");
}

#[test]
fn list_table_json_quiet() {
    let mut c = TestContainer::new("list");
    c.args(&["sleep", "1000"]);
    c.create().assert_ok("create");

    let table = c.oci(&["list"]);
    table.assert_ok("list");
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("ID") && header.contains("STATUS"),
        "table header: {table}"
    );
    let row = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(c.id.as_str()))
        .unwrap_or_else(|| panic!("list shows {}: {table}", c.id));
    assert!(row.contains("created"), "row says created: {row}");

    let js = c.oci(&["list", "--format", "json"]);
    js.assert_ok("list --format json");
    let v: Value = serde_json::from_str(&js.stdout).unwrap_or_else(|e| panic!("{e}: {js}"));
    let arr = v.as_array().expect("json list is an array");
    let me = arr
        .iter()
        .find(|e| e["id"] == c.id.as_str())
        .unwrap_or_else(|| panic!("{} in {v}", c.id));
    assert_eq!(me["status"], "created");
    assert!(me["pid"].as_i64().unwrap_or(0) > 0, "{me}");

    let q = c.oci(&["list", "-q"]);
    q.assert_ok("list -q");
    assert_eq!(q.lines(), vec![c.id.clone()], "list -q prints only ids");
}

#[test]
fn features_json() {
    let c = TestContainer::new("features");
    let out = c.oci(&["features"]);
    out.assert_ok("features");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out}"));
    let min = v["ociVersionMin"].as_str().expect("ociVersionMin");
    let max = v["ociVersionMax"].as_str().expect("ociVersionMax");
    assert!(min.starts_with("1."), "{min}");
    assert!(max.starts_with("1."), "{max}");
}

#[test]
fn spec_writes_config() {
    let c = TestContainer::new("spec");
    let dir = c.dir.join("specdir");
    fs::create_dir(&dir).unwrap();
    c.oci(&["spec", "--bundle", dir.to_str().unwrap()]).assert_ok("spec");
    let v: Value = serde_json::from_slice(&fs::read(dir.join("config.json")).expect("config.json written"))
        .expect("config.json is JSON");
    assert!(v["ociVersion"].as_str().is_some_and(|s| s.starts_with("1.")), "{v}");
    assert_eq!(v["root"]["path"], "rootfs");
    assert!(v["process"]["args"].as_array().is_some_and(|a| !a.is_empty()));
    let kinds: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .expect("namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for k in ["pid", "mount"] {
        assert!(kinds.contains(&k), "{k} namespace in default spec: {kinds:?}");
    }
    assert!(v["linux"]["uidMappings"].is_null(), "no uidMappings without --rootless");
    // runc after CVE-2022-29162: no inheritable or ambient capabilities by default.
    let caps = &v["process"]["capabilities"];
    for set in ["bounding", "effective", "permitted"] {
        assert!(caps[set].as_array().is_some_and(|a| !a.is_empty()), "{set}: {caps}");
    }
    for set in ["inheritable", "ambient"] {
        assert!(caps[set].as_array().is_none_or(|a| a.is_empty()), "{set}: {caps}");
    }

    let rdir = c.dir.join("rootless");
    fs::create_dir(&rdir).unwrap();
    c.oci(&["spec", "--rootless", "--bundle", rdir.to_str().unwrap()])
        .assert_ok("spec --rootless");
    let r: Value = serde_json::from_slice(&fs::read(rdir.join("config.json")).unwrap()).unwrap();
    assert!(
        r["linux"]["uidMappings"].as_array().is_some_and(|a| !a.is_empty()),
        "rootless spec has uidMappings: {r}"
    );
    assert!(
        r["linux"]["gidMappings"].as_array().is_some_and(|a| !a.is_empty()),
        "rootless spec has gidMappings"
    );
    assert!(
        r["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "user"),
        "rootless spec has a user namespace"
    );
}

#[test]
fn start_runs_the_process_once_released() {
    let mut c = TestContainer::new("start-release");
    c.sh("echo started");
    c.create().assert_ok("create");
    sleep_ms(300);
    assert!(
        !c.container_output().contains("started"),
        "process must not run before start: {}",
        c.container_output()
    );
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    assert!(c.container_output().contains("started"), "{}", c.container_output());
    c.delete().assert_ok("delete");
    c.assert_no_leftovers("after delete");
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
