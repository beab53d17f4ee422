//! Rootless containers and cgroup v2 delegation (issue 14; cgroups(7) "Cgroups v2
//! delegation", systemd's `Delegate=yes`; runc's `--rootless`).
//!
//! A user who is not root (a uid without a passwd entry, chosen by the test) runs
//! vessel-oci with a config of `vessel-oci spec --rootless` (a user namespace that maps
//! only the user's own ids) plus memory and pids limits:
//! - on a unified (v2) host, inside a subtree the test delegates to that uid the way
//!   systemd's `Delegate=yes` does (controllers enabled by root, then the directory,
//!   `cgroup.procs`, `cgroup.subtree_control` and `cgroup.threads` chowned to the
//!   user; the user's commands start in a leaf of it), the limits land in the
//!   container's cgroup below the subtree and the kernel enforces them;
//! - on a v1 or hybrid host (the development machines), where nothing can be
//!   delegated, `create` refuses the limits with the note naming the fix, and leaves
//!   nothing behind.
//!
//! scripts/vm-test runs this file on a pure cgroup v2 kernel (VM_TESTS).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const MEMORY_MAX: u64 = 64 << 20;
const PIDS_MAX: u64 = 8;

fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A uid (and gid of the same number) without a passwd entry, unique to this run.
fn test_uid() -> u32 {
    2_000_000 + (std::process::id() % 100_000)
}

/// A cgroup v2 subtree delegated to `uid` (removed on drop with whatever is in it):
/// `/sys/fs/cgroup/<name>` with memory and pids enabled for its children, and the leaf
/// `<name>/user` where the user's commands start.
struct Delegated {
    dir: PathBuf,
}

impl Delegated {
    fn new(name: &str, uid: u32) -> Delegated {
        let dir = Path::new("/sys/fs/cgroup").join(name);
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let d = Delegated { dir };
        // As systemd does for Delegate=yes: root enables the controllers, then hands the
        // directory and the three delegation files to the user.
        fs::write(d.dir.join("cgroup.subtree_control"), "+memory +pids").expect("enable memory and pids");
        for f in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"] {
            let p = d.dir.join(f);
            std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
        }
        // The leaf the user's processes start in (as a login session's scope): moving
        // a process between two cgroups needs write access to the cgroup.procs of
        // their common ancestor, which is the delegated directory only from inside it.
        fs::create_dir(d.dir.join("user")).unwrap();
        for f in ["", "cgroup.procs"] {
            std::os::unix::fs::chown(d.dir.join("user").join(f), Some(uid), Some(uid)).unwrap();
        }
        d
    }

    /// The cgroupsPath of a container below the subtree.
    fn path(&self, leaf: &str) -> String {
        format!("/{}/{leaf}", self.dir.file_name().unwrap().to_string_lossy())
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.dir);
    }
}

/// A vessel-oci command run as `uid`:`uid` without supplementary groups, first moved
/// into the cgroup.procs file `cgroup` when given (while still root).
fn as_user(c: &TestContainer, uid: u32, cgroup: Option<PathBuf>) -> Command {
    let mut cmd = c.cmd();
    let procs = cgroup.map(|p| std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap());
    // SAFETY: the hook makes only async-signal-safe syscalls (open, write, close,
    // setgroups, setgid, setuid) on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(p) = &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd
}

/// The container's config: `vessel-oci spec --rootless` run by the user, with the
/// test's args, cgroupsPath and limits.
fn rootless_spec(c: &mut TestContainer, uid: u32, cgroups_path: &str, args: &[&str]) {
    let out = run_cmd(
        as_user(c, uid, None)
            .args(["spec", "--rootless", "--bundle"])
            .arg(c.dir.join("spec")),
        TIMEOUT,
    );
    out.assert_ok("spec --rootless as the user");
    let mut v: Value = serde_json::from_slice(&fs::read(c.dir.join("spec/config.json")).unwrap()).unwrap();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = json!(args);
    v["root"]["path"] = json!(c.rootfs);
    v["root"]["readonly"] = false.into();
    v["linux"]["cgroupsPath"] = json!(cgroups_path);
    v["linux"]["resources"] = json!({"memory": {"limit": MEMORY_MAX}, "pids": {"limit": PIDS_MAX}});
    c.spec = v;
    c.cgroups_path = cgroups_path.to_string();
}

/// The temp dir's state root and a dir for `spec`, owned by the user.
fn hand_over(c: &TestContainer, uid: u32) {
    for d in [c.root.clone(), c.dir.join("spec")] {
        fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
    }
}

fn read_trim(p: &Path) -> String {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn rootless_limits_in_a_delegated_cgroup_v2_subtree() {
    let uid = test_uid();
    let mut c = TestContainer::new("rl-deleg");
    hand_over(&c, uid);
    if !is_v2() {
        // The hybrid host: nothing can be delegated; the limits are refused with the note.
        let cg = c.cgroups_path.clone();
        rootless_spec(&mut c, uid, &cg, &["true"]);
        c.write_spec();
        let out = run_cmd(
            as_user(&c, uid, None)
                .args(["create", "--bundle"])
                .arg(&c.bundle)
                .arg(&c.id),
            TIMEOUT,
        );
        out.assert_fail("create with limits, rootless, no delegated cgroup");
        assert!(
            out.mentions("rootless") && out.mentions("delegate a cgroup v2 subtree"),
            "the refusal names the fix: {out}"
        );
        assert!(c.state_of(&c.id).is_none(), "no container left: {out}");
        let cgs = cgroup_dirs(&c.cgroups_path);
        assert!(cgs.is_empty(), "no cgroup left: {cgs:?}");
        eprintln!(
            "note: not a cgroup v2 host: the delegated limits are proven by scripts/vm-test (VM_TESTS=rootless_cgroup)"
        );
        return;
    }
    let deleg = Delegated::new(&format!("vessel-deleg-{}", c.id), uid);
    let cg = deleg.path("ctr");
    // Forks until the pids limit refuses one, then reports it.
    // (A fork refused in ash ends the shell that tried it: the loop runs in a subshell.)
    let script = "(i=0; while [ $i -lt 20 ]; do sleep 100 & i=$((i+1)); done) 2>/dev/null; echo forked; sleep 100";
    rootless_spec(&mut c, uid, &cg, &["sh", "-c", script]);
    c.write_spec();
    let user_procs = deleg.dir.join("user/cgroup.procs");
    let out_f = fs::File::create(c.dir.join("ctr.out")).unwrap();
    let mut cmd = as_user(&c, uid, Some(user_procs.clone()));
    cmd.args(["create", "--bundle"]).arg(&c.bundle).arg(&c.id);
    cmd.stdout(out_f)
        .stderr(fs::File::create(c.dir.join("create.err")).unwrap());
    let mut child = cmd.spawn().expect("spawn create");
    let st = wait_timeout(&mut child, TIMEOUT).expect("create timed out");
    let create = Out {
        code: exit_code(st),
        stdout: String::new(),
        stderr: fs::read_to_string(c.dir.join("create.err")).unwrap_or_default(),
    };
    create.assert_ok("rootless create in the delegated subtree");
    let state = c.state_of(&c.id).expect("state");
    let pid = state["pid"].as_i64().expect("pid") as i32;
    c.record_pid(pid);
    let dir = deleg.dir.join("ctr");
    assert_eq!(
        fs::metadata(&dir).unwrap().uid(),
        uid,
        "the container's cgroup is the user's"
    );
    assert_eq!(read_trim(&dir.join("memory.max")), MEMORY_MAX.to_string());
    assert_eq!(read_trim(&dir.join("pids.max")), PIDS_MAX.to_string());
    assert!(
        read_trim(&dir.join("cgroup.procs"))
            .lines()
            .any(|l| l == pid.to_string()),
        "init {pid} in {}",
        dir.display()
    );
    let seen = read_trim(Path::new(&format!("/proc/{pid}/cgroup")));
    assert_eq!(seen, format!("0::{cg}"), "/proc/{pid}/cgroup");

    run_cmd(
        as_user(&c, uid, Some(user_procs.clone())).args(["start", &c.id]),
        TIMEOUT,
    )
    .assert_ok("start");
    assert!(
        wait_until(Duration::from_secs(30), || fs::read_to_string(c.dir.join("ctr.out"))
            .is_ok_and(|s| s.contains("forked"))),
        "the container's script ran"
    );
    let procs = read_trim(&dir.join("cgroup.procs")).lines().count() as u64;
    assert!(
        procs <= PIDS_MAX,
        "{procs} processes in a cgroup with pids.max {PIDS_MAX}"
    );
    let events = read_trim(&dir.join("pids.events"));
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(refused > 0, "the kernel refused forks over pids.max: {events}");

    run_cmd(
        as_user(&c, uid, Some(user_procs)).args(["delete", "--force", &c.id]),
        TIMEOUT,
    )
    .assert_ok("delete --force as the user");
    assert!(!dir.exists(), "the user's delete removed {}", dir.display());
}
