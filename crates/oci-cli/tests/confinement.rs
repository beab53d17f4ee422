//! Confinement: seccomp filters (errno, argument conditions, unknown names, the notify
//! listener) and lifecycle hooks (every phase, in order, with the state on stdin, and
//! the spec's failure semantics).

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Deny mkdir/mkdirat with EACCES; everything else allowed.
fn deny_mkdir() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]
    })
}

#[test]
fn seccomp_denied_syscall_returns_its_errno() {
    let mut c = TestContainer::new("seccomp-errno");
    c.spec["linux"]["seccomp"] = deny_mkdir();
    c.add_mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    c.sh("mkdir /tmp/x 2>&1; echo mkdir=$?; touch /tmp/y && echo touch-ok; grep '^Seccomp:' /proc/self/status");
    let out = c.run();
    out.assert_ok("run");
    assert!(
        out.stdout.contains("Permission denied"),
        "EACCES from the filter: {out}"
    );
    assert!(out.stdout.contains("mkdir=1"), "mkdir failed: {out}");
    assert!(out.stdout.contains("touch-ok"), "other syscalls allowed: {out}");
    assert!(out.stdout.contains("Seccomp:\t2"), "filter mode 2: {out}");
}

/// The compiled filter is cached under `<root>/@seccomp`: the first run stores it, the
/// second loads it unchanged, and a damaged entry is compiled and stored again.
#[test]
fn seccomp_filters_are_cached_and_a_damaged_entry_is_rebuilt() {
    if is_runc() {
        return; // vessel-oci's own cache
    }
    let mut c = TestContainer::new("seccomp-cache");
    c.spec["linux"]["seccomp"] = deny_mkdir();
    c.add_mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    c.sh("mkdir /tmp/x 2>/dev/null; echo mkdir=$?");
    let cache = c.root.join("@seccomp");
    let entries = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "bpf"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut stored = None;
    for round in 0..3 {
        let out = c.run();
        out.assert_ok("run");
        assert!(out.stdout.contains("mkdir=1"), "round {round}: the filter holds: {out}");
        let e = entries();
        assert_eq!(e.len(), 1, "round {round}: one cache entry: {e:?}");
        let meta = std::fs::metadata(&e[0]).unwrap();
        assert!(
            meta.len() > 0 && meta.len() % 8 == 0,
            "round {round}: a whole BPF program, not {} bytes",
            meta.len()
        );
        match round {
            0 => stored = Some(meta.modified().unwrap()),
            1 => {
                assert_eq!(
                    stored,
                    Some(meta.modified().unwrap()),
                    "the second run used the entry as it was"
                );
                std::fs::write(&e[0], b"junk!").unwrap();
            }
            _ => {}
        }
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&cache).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700, "the cache is root's alone");
}

#[test]
fn seccomp_argument_conditions() {
    let mut c = TestContainer::new("seccomp-args");
    // kill(pid, SIGUSR1) is refused; kill(pid, 0) is not.
    c.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                      "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}]
    });
    c.sh("kill -0 $$; echo zero=$?; kill -USR1 $$ 2>/dev/null; echo usr1=$?");
    let out = c.run();
    out.assert_ok("run");
    assert!(out.stdout.contains("zero=0"), "kill -0 allowed: {out}");
    assert!(out.stdout.contains("usr1=1"), "kill -USR1 denied: {out}");
}

#[test]
fn seccomp_unknown_syscall_is_a_clear_error() {
    let mut c = TestContainer::new("seccomp-unknown");
    c.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall_vessel"], "action": "SCMP_ACT_ERRNO"}]
    });
    c.args(&["true"]);
    let out = c.create();
    out.assert_fail("create with an unknown syscall name");
    assert!(
        out.stderr.contains("no_such_syscall_vessel"),
        "error names the syscall: {out}"
    );
    c.assert_no_leftovers("after a refused seccomp config");
}

/// An allow-list profile (everything else fails with EPERM) holding only what the
/// container's programs need (static busybox `sh -c 'echo ...'` and `sleep`, found with
/// strace) plus what any runtime must still do under the filter: the capability and id
/// changes, then execve. No close_range, getcwd, openat, sendmsg or fifo write.
fn minimal_allow_list() -> Value {
    let program = [
        "arch_prctl",
        "brk",
        "execve",
        "exit_group",
        "exit",
        "getpid",
        "getppid",
        "getrandom",
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "mprotect",
        "mmap",
        "munmap",
        "newfstatat",
        "prlimit64",
        "readlink",
        "rseq",
        "rt_sigaction",
        "rt_sigreturn",
        "set_robust_list",
        "set_tid_address",
        "uname",
        "write",
        "nanosleep",
        "clock_nanosleep",
        "restart_syscall",
    ];
    let runtime = ["capget", "capset", "prctl", "setresuid", "setresgid", "setgroups"];
    let names: Vec<&str> = program.iter().chain(runtime.iter()).copied().collect();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]
    })
}

/// The blocker of issue 17: the init did its own work (close_range, getcwd, the exec
/// fifo, the sync socket) under the filter, so a strict allow-list killed it.
#[test]
fn seccomp_minimal_allow_list_runs_the_program() {
    for (nnp, uid) in [(false, 0), (true, 0), (false, 1000), (true, 1000)] {
        let mut c = TestContainer::new("seccomp-minimal");
        c.spec["linux"]["seccomp"] = minimal_allow_list();
        c.spec["process"]["noNewPrivileges"] = json!(nnp);
        c.user(uid, uid, &[]);
        c.sh("echo minimal-ok");
        let out = c.run();
        assert!(
            out.ok() && out.stdout.contains("minimal-ok"),
            "noNewPrivileges {nnp}, uid {uid}: {out}"
        );
    }
}

/// `exec` processes get the same order: their own work before the filter.
#[test]
fn seccomp_minimal_allow_list_exec() {
    for nnp in [false, true] {
        let mut c = TestContainer::new("seccomp-minimal-exec");
        c.spec["linux"]["seccomp"] = minimal_allow_list();
        c.spec["process"]["noNewPrivileges"] = json!(nnp);
        c.start_sleeper();
        let out = c.exec(&[], &["sh", "-c", "echo exec-ok"]);
        assert!(
            out.ok() && out.stdout.contains("exec-ok"),
            "noNewPrivileges {nnp}: {out}"
        );
    }
}

/// A profile that makes getcwd fail on purpose and kills on close_range (an older
/// docker profile has no close_range): the runtime needs neither under the filter.
#[test]
fn seccomp_profile_denying_getcwd_and_close_range() {
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["close_range"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    });
    for nnp in [false, true] {
        let mut c = TestContainer::new("seccomp-getcwd");
        c.spec["linux"]["seccomp"] = profile.clone();
        c.spec["process"]["noNewPrivileges"] = json!(nnp);
        c.sh("echo run-ok");
        let out = c.run();
        assert!(
            out.ok() && out.stdout.contains("run-ok"),
            "run, noNewPrivileges {nnp}: {out}"
        );
        c.sh("sleep 1000");
        c.start_sleeper();
        let out = c.exec(&[], &["sh", "-c", "echo exec-ok"]);
        assert!(
            out.ok() && out.stdout.contains("exec-ok"),
            "exec, noNewPrivileges {nnp}: {out}"
        );
    }
}

/// Receives one message with an fd over a unix stream: (payload, fd).
fn recv_with_fd(sock: &std::os::unix::net::UnixStream) -> (String, OwnedFd) {
    let mut buf = [0u8; 8192];
    let mut cmsg = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; every pointer in it points into locals that outlive
    // the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len();
    // SAFETY: a valid socket and msghdr.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR/CMSG_DATA walk it.
    let fd = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null(), "no control message");
        assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
        std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32)
    };
    // SAFETY: SCM_RIGHTS gave us a new fd that we own.
    (String::from_utf8_lossy(&buf[..n as usize]).into_owned(), unsafe {
        OwnedFd::from_raw_fd(fd)
    })
}

#[test]
fn seccomp_notify_listener_receives_the_request() {
    let mut c = TestContainer::new("seccomp-notify");
    let sock_path = c.dir.join("agent.sock");
    let listener = UnixListener::bind(&sock_path).expect("bind agent socket");
    c.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock_path,
        "listenerMetadata": "vessel-test-metadata",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    c.add_mount(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    c.sh("mkdir /tmp/x; echo mkdir=$?");
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().expect("accept");
        recv_with_fd(&conn)
    });
    c.create().assert_ok("create");
    let (payload, fd) = agent.join().expect("agent thread");
    let msg: Value = serde_json::from_str(&payload).expect("container process state JSON");
    assert_eq!(msg["fds"], json!(["seccompFd"]), "{msg}");
    assert_eq!(msg["metadata"], "vessel-test-metadata", "{msg}");
    assert_eq!(msg["state"]["id"], c.id.as_str(), "{msg}");
    assert!(msg["pid"].as_i64().unwrap_or(0) > 0, "{msg}");
    c.start().assert_ok("start");
    // The container's mkdir waits for the agent: the notify fd becomes readable.
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "a notification arrived on the listener's fd");
    // Closing the fd answers every pending request with ENOSYS; the container goes on.
    drop(fd);
    c.wait_status("stopped", Duration::from_secs(10));
    assert!(
        c.container_output().contains("mkdir=1"),
        "mkdir failed once the agent left: {}",
        c.container_output()
    );
}

fn hook(script: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", script]})
}

#[test]
fn hooks_run_in_their_phases_in_order() {
    let mut c = TestContainer::new("hooks-order");
    let log = c.dir.join("hooks.log");
    let state = c.dir.join("create-runtime-state.json");
    let l = log.display().to_string();
    // The container sees the test dir at /hostdir (startContainer runs inside it).
    c.add_mount(json!({"destination": "/hostdir", "type": "bind", "source": c.dir, "options": ["rbind", "rw"]}));
    c.spec["hooks"] = json!({
        "createRuntime": [hook(&format!("cat > {}; echo createRuntime >> {l}", state.display()))],
        "createContainer": [hook(&format!("echo createContainer >> {l}"))],
        "startContainer": [hook("echo startContainer >> /hostdir/hooks.log")],
        "poststart": [hook(&format!("echo poststart >> {l}"))],
        "poststop": [hook(&format!("cat | grep -q '\"stopped\"' && echo poststop >> {l}"))]
    });
    c.sh("echo program >> /hostdir/hooks.log");
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    let phases: Vec<&str> = got.lines().collect();
    // poststart may run before or after the program's own line.
    let without_program: Vec<&str> = phases.iter().copied().filter(|p| *p != "program").collect();
    assert_eq!(
        without_program,
        [
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "hook order: {got}"
    );
    assert!(phases.contains(&"program"), "the program ran: {got}");
    let st: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap_or_default()).expect("state on stdin");
    assert_eq!(st["id"], c.id.as_str(), "{st}");
    assert_eq!(st["status"], if is_runc() { "creating" } else { "created" }, "{st}");
    assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{st}");
}

#[test]
fn failing_create_runtime_hook_fails_create_and_leaves_nothing() {
    let mut c = TestContainer::new("hooks-fail");
    c.spec["hooks"] = json!({"createRuntime": [hook("echo broken-hook >&2; exit 3")]});
    c.args(&["true"]);
    let out = c.create();
    out.assert_fail("create with a failing createRuntime hook");
    assert!(out.stderr.contains("createRuntime"), "error names the phase: {out}");
    assert!(
        out.stderr.contains("broken-hook"),
        "error carries the hook's stderr: {out}"
    );
    c.assert_no_leftovers("after a failed hook");
}

#[test]
fn hook_timeout_is_enforced() {
    let mut c = TestContainer::new("hooks-timeout");
    let mut h = hook("sleep 30");
    h["timeout"] = json!(1);
    c.spec["hooks"] = json!({"createRuntime": [h]});
    c.args(&["true"]);
    let t = Instant::now();
    let out = c.create();
    out.assert_fail("create with a hook that times out");
    assert!(t.elapsed() < Duration::from_secs(15), "the timeout cut the hook short");
    assert!(out.stderr.contains("timed out"), "{out}");
    c.assert_no_leftovers("after a timed-out hook");
}

#[test]
fn failing_poststop_hook_only_warns() {
    let mut c = TestContainer::new("hooks-poststop");
    c.spec["hooks"] = json!({"poststop": [hook("exit 1")]});
    c.args(&["true"]);
    let out = c.run();
    out.assert_ok("run with a failing poststop hook");
    assert!(out.stderr.contains("poststop"), "a warning names the hook: {out}");
}

/// runtime-spec runtime.md "Lifecycle" and crun: a failing poststart or poststop hook
/// is a warning, and the hooks after it still run (runtime-tools poststart_fail,
/// poststop_fail).
#[test]
fn failing_poststart_and_poststop_hooks_warn_and_the_rest_still_run() {
    let mut c = TestContainer::new("hooks-post-fail");
    let log = c.dir.join("post.log");
    let l = log.display().to_string();
    c.spec["hooks"] = json!({
        "poststart": [hook("exit 1"), hook(&format!("echo poststart-2 >> {l}"))],
        "poststop": [hook("exit 1"), hook(&format!("echo poststop-2 >> {l}"))]
    });
    c.args(&["true"]);
    c.create().assert_ok("create");
    let out = c.start();
    out.assert_ok("start with a failing poststart hook");
    assert!(out.stderr.contains("poststart"), "a warning names the phase: {out}");
    // A warning in runc's log format, which clients do not take for an error.
    assert!(
        out.stderr.contains("level=warning") && !out.stderr.contains("level=error"),
        "{out}"
    );
    c.wait_status("stopped", Duration::from_secs(10));
    let out = c.delete();
    out.assert_ok("delete with a failing poststop hook");
    assert!(out.stderr.contains("poststop"), "a warning names the phase: {out}");
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(got, "poststart-2\npoststop-2\n", "the second hooks ran");
}

/// Every phase gets the state on stdin, with the id, bundle, annotations and the
/// status crun gives (runtime-tools hooks_stdin: "created" for create-time hooks).
#[test]
fn hooks_read_the_state_on_stdin_in_every_phase() {
    let mut c = TestContainer::new("hooks-stdin");
    c.add_mount(json!({"destination": "/hostdir", "type": "bind", "source": c.dir, "options": ["rbind", "rw"]}));
    c.spec["annotations"] = json!({"org.vessel.test": "hooks stdin"});
    let d = c.dir.display().to_string();
    c.spec["hooks"] = json!({
        "prestart": [hook(&format!("cat > {d}/prestart.json"))],
        "createRuntime": [hook(&format!("cat > {d}/createRuntime.json"))],
        "createContainer": [hook(&format!("cat > {d}/createContainer.json"))],
        "startContainer": [hook("cat > /hostdir/startContainer.json")],
        "poststart": [hook(&format!("cat > {d}/poststart.json"))],
        "poststop": [hook(&format!("cat > {d}/poststop.json"))]
    });
    c.args(&["true"]);
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
    let bundle = std::fs::canonicalize(&c.bundle).unwrap();
    for (phase, status) in [
        ("prestart", "created"),
        ("createRuntime", "created"),
        ("createContainer", "created"),
        ("startContainer", "created"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let text = std::fs::read_to_string(c.dir.join(format!("{phase}.json"))).unwrap_or_default();
        let st: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{phase}: state JSON: {e}: {text:?}"));
        assert_eq!(st["id"], c.id.as_str(), "{phase}: {st}");
        assert_eq!(st["bundle"], bundle.display().to_string(), "{phase}: {st}");
        assert_eq!(st["annotations"]["org.vessel.test"], "hooks stdin", "{phase}: {st}");
        if phase != "poststop" {
            assert!(st["pid"].as_i64().unwrap_or(0) > 0, "{phase}: {st}");
        }
        // Only vessel-oci is held to crun's status words; runc 1.1 says "creating".
        if !is_runc() {
            assert_eq!(st["status"], status, "{phase}: {st}");
        }
    }
}

/// A hook without env of its own: in the runtime's phases it inherits the runtime's
/// environment; startContainer, inside the container, gets process.env (runc, crun).
#[test]
fn hooks_without_env_get_the_environment_runc_and_crun_give() {
    let mut c = TestContainer::new("hooks-env");
    c.add_mount(json!({"destination": "/hostdir", "type": "bind", "source": c.dir, "options": ["rbind", "rw"]}));
    c.env("VESSEL_PROCESS_ENV=from-config");
    let d = c.dir.display().to_string();
    c.spec["hooks"] = json!({
        "createRuntime": [hook(&format!("env > {d}/runtime.env"))],
        "startContainer": [hook("env > /hostdir/start.env")]
    });
    c.args(&["true"]);
    c.write_spec();
    let st = c
        .cmd()
        .env("VESSEL_RUNTIME_ENV", "from-the-caller")
        .args(["create", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn create");
    if let Some(pid) = c.state_of(&c.id).and_then(|s| s["pid"].as_i64()) {
        c.record_pid(pid as i32);
    }
    assert!(st.success(), "create: {st:?}");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    let runtime_env = std::fs::read_to_string(c.dir.join("runtime.env")).unwrap_or_default();
    let start_env = std::fs::read_to_string(c.dir.join("start.env")).unwrap_or_default();
    assert!(
        runtime_env.contains("VESSEL_RUNTIME_ENV=from-the-caller"),
        "createRuntime env: {runtime_env}"
    );
    assert!(
        start_env.contains("VESSEL_PROCESS_ENV=from-config"),
        "startContainer env: {start_env}"
    );
    assert!(
        !start_env.contains("VESSEL_RUNTIME_ENV="),
        "no runtime env inside the container: {start_env}"
    );
}

#[test]
fn lsm_labels_without_the_lsm_are_ignored_as_runc_does() {
    // These hosts have neither AppArmor nor SELinux; where they do, the label is applied
    // and this test does not apply.
    if std::path::Path::new("/sys/module/apparmor/parameters/enabled").exists()
        || std::path::Path::new("/sys/fs/selinux/enforce").exists()
    {
        eprintln!("note: an LSM is enabled here; the no-LSM behaviour is not tested");
        return;
    }
    let mut c = TestContainer::new("lsm-none");
    c.spec["process"]["apparmorProfile"] = json!("vessel-test-profile");
    c.spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    c.sh("echo ran");
    let out = c.run();
    out.assert_ok("run with LSM fields on a host without an LSM");
    assert!(out.stdout.contains("ran"), "{out}");
}

#[test]
fn features_reports_seccomp_support() {
    let c = TestContainer::new("features-seccomp");
    let out = c.oci(&["features"]);
    out.assert_ok("features");
    let f: Value = serde_json::from_str(&out.stdout).expect("features JSON");
    if is_runc() {
        return;
    }
    assert_eq!(f["linux"]["seccomp"]["enabled"], true, "{f}");
    assert!(
        f["linux"]["seccomp"]["actions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("SCMP_ACT_NOTIFY"))),
        "{f}"
    );
}
