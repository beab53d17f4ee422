//! Security regressions: no fd leaks and no cwd escape (CVE-2024-21626), the runtime
//! binary cannot be overwritten from inside a container (CVE-2019-5736), and crafted
//! bundles (a rootfs and a config a tenant controls) cannot redirect what the runtime
//! mounts or writes: masked paths through a symlinked /dev/null (CVE-2025-31133), the
//! console through a symlinked /dev/console (CVE-2025-52565), sysctl writes through a
//! symlink or a mount in /proc (CVE-2025-52881), procfs and sysfs mounted through a
//! symlink (CVE-2023-27561 class). These aim only at canary files in the test's temp dir.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

/// The open fds of the container's shell (`ls` runs as its child and lists the
/// parent's, so the listing holds no extra fd of its own).
const LIST_FDS: &str = "ls -l /proc/$$/fd";

/// fd numbers from `ls -l` lines `... N -> target`.
fn fd_numbers(out: &str) -> Vec<u32> {
    let mut v: Vec<u32> = out
        .lines()
        .filter_map(|l| {
            let (left, _) = l.split_once(" -> ")?;
            left.split_whitespace().last()?.parse().ok()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn no_fds_leak_into_the_container() {
    let mut c = TestContainer::new("sec-fds");
    c.sh(LIST_FDS);
    c.write_spec();
    // A careless caller hands the runtime extra inheritable fds: none may reach the
    // container without --preserve-fds.
    let mut cmd = c.cmd();
    cmd.args(["run", "--bundle"]).arg(&c.bundle).arg(&c.id);
    let f5 = fs::File::open("/etc/hostname").unwrap();
    let f9 = fs::File::open("/").unwrap();
    with_inherited_fds(&mut cmd, vec![(f5, 5), (f9, 9)]);
    let out = run_cmd(&mut cmd, TIMEOUT);
    out.assert_ok("run");
    assert_eq!(
        fd_numbers(&out.stdout),
        vec![0, 1, 2],
        "only stdio in the container: {out}"
    );
}

#[test]
fn preserve_fds() {
    let mut c = TestContainer::new("sec-preserve");
    c.sh(&format!("{LIST_FDS}; cat <&3; cat <&4"));
    c.write_spec();
    let p3 = c.dir.join("three");
    let p4 = c.dir.join("four");
    fs::write(&p3, "content-three\n").unwrap();
    fs::write(&p4, "content-four\n").unwrap();
    let mut cmd = c.cmd();
    cmd.args(["run", "--preserve-fds", "2", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id);
    with_inherited_fds(
        &mut cmd,
        vec![
            (fs::File::open(&p3).unwrap(), 3),
            (fs::File::open(&p4).unwrap(), 4),
            (fs::File::open("/etc/hostname").unwrap(), 5),
        ],
    );
    let out = run_cmd(&mut cmd, TIMEOUT);
    out.assert_ok("run --preserve-fds 2");
    assert_eq!(fd_numbers(&out.stdout), vec![0, 1, 2, 3, 4], "fds 3 and 4 only: {out}");
    assert!(
        out.stdout.contains("content-three") && out.stdout.contains("content-four"),
        "{out}"
    );
}

#[test]
fn exec_leaks_no_fds() {
    let mut c = TestContainer::new("sec-exec-fds");
    c.start_sleeper();
    let mut cmd = c.cmd();
    cmd.arg("exec").arg(&c.id).args(["sh", "-c", LIST_FDS]);
    with_inherited_fds(&mut cmd, vec![(fs::File::open("/").unwrap(), 7)]);
    let out = run_cmd(&mut cmd, TIMEOUT);
    out.assert_ok("exec");
    assert_eq!(fd_numbers(&out.stdout), vec![0, 1, 2], "only stdio in exec: {out}");
}

/// After a cwd attack the process either failed to start or its cwd is inside the
/// container's root (`readlink /proc/self/cwd` is an absolute path seen from inside).
#[track_caller]
fn assert_cwd_contained(out: &Out, what: &str) {
    if !out.ok() {
        assert!(
            !out.stdout.contains("cwd="),
            "{what}: failed, but the process ran: {out}"
        );
        return;
    }
    let cwd = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cwd="))
        .unwrap_or_else(|| panic!("{what}: {out}"));
    assert!(cwd.starts_with('/'), "{what}: cwd outside the container root: {out}");
    assert!(
        !cwd.contains("unreachable"),
        "{what}: cwd outside the container root: {out}"
    );
    assert!(
        !out.stdout.contains("ESCAPED"),
        "{what}: host filesystem reachable: {out}"
    );
}

#[test]
fn cwd_through_leaked_fd_fails_cleanly() {
    // CVE-2024-21626: runc leaked an fd of the host's /sys/fs/cgroup at fd 7 (or 8),
    // so cwd /proc/self/fd/7 put the container's process in the host's tree.
    for fd in 3..=9 {
        let mut c = TestContainer::new(&format!("sec-cwd{fd}"));
        // A marker on the host, outside the rootfs: visible only after an escape.
        fs::write(c.dir.join("escape-marker"), "host").unwrap();
        let marker = c.dir.join("escape-marker");
        c.cwd(&format!("/proc/self/fd/{fd}"));
        c.sh(&format!(
            "echo cwd=$(readlink /proc/self/cwd); \
             test -e ../../../../../../../..{} && echo ESCAPED; true",
            marker.display()
        ));
        let out = c.run();
        assert_cwd_contained(&out, &format!("cwd /proc/self/fd/{fd}"));
    }
}

#[test]
fn exec_cwd_through_leaked_fd_fails_cleanly() {
    let mut c = TestContainer::new("sec-exec-cwd");
    c.start_sleeper();
    for fd in 3..=9 {
        let out = c.exec(
            &["--cwd", &format!("/proc/self/fd/{fd}")],
            &["sh", "-c", "echo cwd=$(readlink /proc/self/cwd)"],
        );
        assert_cwd_contained(&out, &format!("exec --cwd /proc/self/fd/{fd}"));
    }
}

#[test]
fn process_cwd_is_inside_rootfs() {
    // Seen from the host, the container's cwd and root are the rootfs's dirs (same
    // device and inode; the paths differ since the container has its own mount tree).
    use std::os::unix::fs::MetadataExt;
    let mut c = TestContainer::new("sec-cwd-in");
    c.cwd("/tmp");
    c.args(&["sleep", "1000"]);
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    let pid = c.pid();
    let id = |p: &std::path::Path| {
        let m = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        (m.dev(), m.ino())
    };
    assert_eq!(
        id(&PathBuf::from(format!("/proc/{pid}/cwd"))),
        id(&c.rootfs.join("tmp")),
        "init's cwd is the rootfs's /tmp"
    );
    assert_eq!(
        id(&PathBuf::from(format!("/proc/{pid}/root"))),
        id(&c.rootfs),
        "init's root is the rootfs"
    );
}

/// A private copy of the runtime binary, so a successful attack hurts nothing.
fn runtime_copy(c: &TestContainer) -> PathBuf {
    let copy = c.dir.join("runtime-copy");
    fs::copy(oci_bin(), &copy).expect("copy the runtime binary");
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

#[test]
fn runtime_binary_not_writable_from_created_container() {
    // CVE-2019-5736: while the container is `created`, its pid 1 is still the runtime
    // (or a process the runtime made). Writing through /proc/1/exe must not reach the
    // host binary.
    let mut c = TestContainer::new("sec-exe");
    let copy = runtime_copy(&c);
    let before = sha256(&copy);
    c.args(&["sleep", "1000"]);
    c.write_spec();
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&copy);
        cmd.arg("--root")
            .arg(&c.root)
            .args(args)
            .stdin(std::process::Stdio::null());
        run_cmd(&mut cmd, TIMEOUT)
    };
    run(&["create", "--bundle", c.bundle.to_str().unwrap(), &c.id]).assert_ok("create");
    c.record_pid(c.pid());
    let attack = "ls -l /proc/1/exe; \
        echo x > /proc/1/exe && echo WROTE1; \
        echo x >> /proc/1/exe && echo WROTE2; \
        exec 5</proc/1/exe && { echo x > /proc/self/fd/5 && echo WROTE3; }; \
        true";
    let out = run(&["exec", &c.id, "sh", "-c", attack]);
    // exec into a `created` container may be refused; either way nothing is written.
    eprintln!("attack in created container: {out}");
    assert!(
        !out.stdout.contains("WROTE"),
        "write through /proc/1/exe succeeded: {out}"
    );
    run(&["start", &c.id]).assert_ok("start");
    c.wait_status("running", Duration::from_secs(10));
    assert_eq!(sha256(&copy), before, "runtime binary changed: {out}");
}

#[test]
fn runtime_binary_not_writable_with_ptrace_and_held_fd() {
    // The hard variant: a process with CAP_SYS_PTRACE opens /proc/1/exe while pid 1 is
    // still the runtime, keeps the fd across `start`, then reopens it for writing once
    // the runtime has exec'd the container process (as the original exploit did).
    let mut c = TestContainer::new("sec-exe-ptrace");
    let copy = runtime_copy(&c);
    let before = sha256(&copy);
    let mut caps: Vec<&str> = vec!["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    caps.push("CAP_SYS_PTRACE");
    c.caps(&caps, &caps, &caps, &[], &[]);
    c.spec["process"]["noNewPrivileges"] = serde_json::json!(false);
    c.readonly(false);
    c.args(&["sleep", "1000"]);
    c.write_spec();
    let cmd = |args: &[&str]| {
        let mut cmd = std::process::Command::new(&copy);
        cmd.arg("--root")
            .arg(&c.root)
            .args(args)
            .stdin(std::process::Stdio::null());
        cmd
    };
    run_cmd(
        &mut cmd(&["create", "--bundle", c.bundle.to_str().unwrap(), &c.id]),
        TIMEOUT,
    )
    .assert_ok("create");
    c.record_pid(c.pid());
    let attacker = "exec 5</proc/1/exe || { echo OPEN-FAILED > /tmp/result; exit 0; }; \
        echo opened > /tmp/result; \
        i=0; while [ $i -lt 100 ]; do \
          if [ \"$(cat /proc/1/comm)\" = sleep ]; then break; fi; sleep 0.05; i=$((i+1)); done; \
        j=0; while [ $j -lt 20 ]; do \
          if echo x > /proc/self/fd/5 2>/dev/null; then echo WROTE >> /tmp/result; fi; \
          sleep 0.1; j=$((j+1)); done; echo done >> /tmp/result";
    let pid_file = c.dir.join("attacker.pid");
    let out = run_cmd(
        &mut cmd(&[
            "exec",
            "--detach",
            "--cap",
            "CAP_SYS_PTRACE",
            "--pid-file",
            pid_file.to_str().unwrap(),
            &c.id,
            "sh",
            "-c",
            attacker,
        ]),
        TIMEOUT,
    );
    if out.ok() {
        if let Some(p) = fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
            c.record_pid(p);
        }
        // Give the attacker time to open the fd before the runtime leaves pid 1.
        std::thread::sleep(Duration::from_millis(500));
    }
    run_cmd(&mut cmd(&["start", &c.id]), TIMEOUT).assert_ok("start");
    let result = c.rootfs.join("tmp/result");
    wait_until(Duration::from_secs(15), || {
        fs::read_to_string(&result).is_ok_and(|s| s.contains("done") || s.contains("FAILED"))
    });
    let log = fs::read_to_string(&result).unwrap_or_default();
    eprintln!("attacker log: {log}\nexec: {out}");
    assert_eq!(
        sha256(&copy),
        before,
        "runtime binary changed; attacker log: {log}; exec: {out}"
    );
    assert!(
        !log.contains("WROTE"),
        "write through a held /proc/1/exe fd succeeded: {log}"
    );
}

// ---- crafted bundles ------------------------------------------------------------

const CANARY: &str = "CANARY\n";

/// CVE-2025-31133: with no /dev tmpfs and `/dev/null -> /canary` in the rootfs, masking
/// /proc/keys and /proc/timer_list must not bind the canary there (where the container
/// could read and write it): the runtime refuses a /dev/null that is not char 1:3.
#[test]
fn masked_paths_never_use_a_symlinked_dev_null() {
    let mut c = TestContainer::new("sec-devnull");
    c.remove_mounts(&["/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"]);
    // A writable root: runc 1.1.5 would otherwise fail this bundle for another reason.
    c.readonly(false);
    let canary = c.canary("canary", CANARY);
    c.rootfs_symlink("dev/null", "/canary");
    // No redirection of stderr to /dev/null here: that is the canary.
    c.sh("cat /proc/timer_list /proc/keys; { echo pwned > /proc/keys; } 2>&1; echo end");
    let out = c.run();
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        CANARY,
        "canary written through a mask: {out}"
    );
    assert!(!out.stdout.contains("CANARY"), "a masked path shows the canary: {out}");
    if is_vessel() {
        assert!(!out.ok(), "vessel-oci refuses the bundle: {out}");
        assert!(out.stderr.contains("/dev/null") && out.stderr.contains("1:3"), "{out}");
    }
}

/// The same bundle with a real /dev (the default tmpfs) still masks: the masked file
/// reads empty and the directory mask is an empty tmpfs.
#[test]
fn masked_paths_with_the_null_device() {
    let mut c = TestContainer::new("sec-devnull-ok");
    c.canary("canary", CANARY);
    c.rootfs_symlink("dev/null", "/canary");
    c.sh("wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; grep -c ' /proc/keys ' /proc/self/mountinfo");
    let out = c.run();
    out.assert_ok("run");
    assert_eq!(out.lines(), vec!["0", "0", "1"], "{out}");
}

/// CVE-2025-52565: with `terminal: true` and `/dev/console -> /canary` (or to a path
/// that does not exist) in a rootfs without a /dev tmpfs, the pty must not be bound
/// onto the canary, nor the missing file created.
#[test]
fn console_never_follows_a_symlinked_dev_console() {
    for (name, target) in [("sec-console", "/canary"), ("sec-console-new", "/made-by-runtime")] {
        let mut c = TestContainer::new(name);
        c.remove_mounts(&["/dev"]);
        let canary = c.canary("canary", CANARY);
        c.rootfs_symlink("dev/console", target);
        c.spec["process"]["terminal"] = serde_json::json!(true);
        c.args(&["sleep", "30"]);
        let sock = c.dir.join("console.sock");
        // The runtime's connect and send complete on the listen backlog: no accept needed.
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let out = c.create_with(&["--console-socket", sock.to_str().unwrap()]);
        let made = c.rootfs.join("made-by-runtime");
        assert!(
            !made.exists(),
            "{name}: the runtime created the symlink's target: {out}"
        );
        if out.ok() {
            let seen = c.rootfs.clone();
            let inside = PathBuf::from(format!("/proc/{}/root/canary", c.pid()));
            let m = fs::metadata(&inside).unwrap();
            assert!(m.is_file(), "{name}: the pty is mounted on the canary: {m:?} {out}");
            assert_eq!(fs::read_to_string(seen.join("canary")).unwrap(), CANARY);
        }
        assert_eq!(fs::read_to_string(&canary).unwrap(), CANARY);
        if is_vessel() {
            assert!(!out.ok(), "{name}: vessel-oci refuses the bundle: {out}");
            assert!(out.stderr.contains("/dev/console"), "{name}: {out}");
        }
    }
}

/// CVE-2025-52881: with no /proc mount and `proc/sys/kernel/domainname -> /host/canary`
/// in the rootfs (/host a bind of a host dir whose canary the container user may only
/// read), the `kernel.domainname` sysctl must not be written into the canary.
#[test]
fn sysctl_never_written_through_a_proc_symlink() {
    let mut c = TestContainer::new("sec-sysctl-link");
    c.remove_mounts(&["/proc"]);
    c.masked_paths(&[]).readonly_paths(&[]);
    let host = c.dir.join("hostdir");
    fs::create_dir(&host).unwrap();
    let canary = host.join("canary");
    fs::write(&canary, CANARY).unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o444)).unwrap();
    c.add_mount(serde_json::json!({"destination": "/host", "type": "bind", "source": host, "options": ["rbind"]}));
    c.rootfs_symlink("proc/sys/kernel/domainname", "/host/canary");
    c.spec["linux"]["sysctl"] = serde_json::json!({"kernel.domainname": "pwned"});
    c.user(1000, 1000, &[]);
    c.sh("cat /host/canary");
    let out = c.run();
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        CANARY,
        "sysctl written into the canary: {out}"
    );
    if !is_runc() {
        // The sysctl went to the kernel, through the runtime's own procfs.
        out.assert_ok("run");
        assert_eq!(out.stdout, CANARY, "{out}");
    }
}

/// CVE-2025-52881, second form: a config that binds a host directory over /proc/sys
/// is refused (as runc refuses it; crun 1.8.1 takes the mount but writes the sysctl
/// through its own procfs), so no sysctl lands in that directory.
#[test]
fn sysctl_never_written_into_a_dir_bound_over_proc_sys() {
    let mut c = TestContainer::new("sec-sysctl-bind");
    let fake = c.dir.join("fakesys");
    fs::create_dir_all(fake.join("kernel")).unwrap();
    let canary = fake.join("kernel/domainname");
    fs::write(&canary, CANARY).unwrap();
    c.add_mount(serde_json::json!({"destination": "/proc/sys", "type": "bind", "source": fake, "options": ["rbind"]}));
    c.spec["linux"]["sysctl"] = serde_json::json!({"kernel.domainname": "pwned"});
    let out = c.run();
    assert_eq!(
        fs::read_to_string(&canary).unwrap(),
        CANARY,
        "sysctl written into the bound dir: {out}"
    );
    if is_vessel() || is_runc() {
        assert!(!out.ok(), "a mount over /proc/sys is refused: {out}");
        assert!(out.stderr.contains("inside /proc"), "{out}");
    }
    c.assert_no_leftovers("refused bind over /proc/sys");
}

/// CVE-2023-27561 class: `/proc -> /fakeproc` (or `/sys -> /fakesys`) in the rootfs:
/// procfs and sysfs go only on ordinary directories; the error says what is wrong.
#[test]
fn proc_and_sys_never_mounted_through_a_symlink() {
    for (name, dir, fs_name) in [("sec-proclink", "proc", "proc"), ("sec-syslink", "sys", "sysfs")] {
        let mut c = TestContainer::new(name);
        fs::create_dir(c.rootfs.join(format!("fake{dir}"))).unwrap();
        c.rootfs_symlink(dir, &format!("/fake{dir}"));
        c.masked_paths(&[]).readonly_paths(&[]);
        c.sh(&format!("ls -A /fake{dir} | wc -l"));
        let out = c.run();
        assert!(!out.ok(), "{name}: {fs_name} mounted through a symlink: {out}");
        if is_runc() {
            // runc: filesystem "proc" must be mounted on ordinary directory
            assert!(out.stderr.contains("ordinary directory"), "{name}: {out}");
        }
        if is_vessel() {
            assert!(
                out.stderr.contains(&format!(
                    "{fs_name} must be mounted on an ordinary directory, and /{dir} is a symlink"
                )),
                "{name}: {out}"
            );
        }
        c.assert_no_leftovers(name);
    }
}
