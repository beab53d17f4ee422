//! Per-container disk quotas end to end (`--storage-opt size=`): writes past the limit get
//! ENOSPC inside while a container without a quota writes more freely; `update` grows a
//! running container's limit; `inspect` and `stats` show use and limit; the `host` image's
//! /etc is inside the quota and a restart keeps the files; bad values are refused with 125
//! and nothing made; `rm`, a killed `run` and a killed monitor (with `system check`) leave
//! no loop device and no mount. Every loop device a test meets is one backed by a file under
//! its own root; the guard detaches those and no other.

mod instance;
mod run_vessel;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use instance::{have, stderr, stdout, wait_for, Instance};

const MIB: u64 = 1 << 20;

/// Whether mkfs.xfs and xfs_growfs are there (scripts/setup installs xfsprogs).
fn have_xfs() -> bool {
    let ok = ["/usr/sbin/mkfs.xfs", "/usr/sbin/xfs_growfs"]
        .iter()
        .all(|p| Path::new(p).exists());
    if !ok {
        eprintln!("\n!!!!! SKIPPED: missing xfsprogs (scripts/setup installs it) !!!!!\n");
    }
    ok
}

/// The loop devices backed by files under `root`: (`/dev/loopN`, `major:minor`, backing file).
fn loops_under(root: &Path) -> Vec<(String, String, String)> {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let root = root.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(backing) = fs::read_to_string(e.path().join("loop/backing_file")) else {
            continue;
        };
        let dev = fs::read_to_string(e.path().join("dev")).unwrap_or_default();
        if backing.starts_with(&format!("{root}/")) {
            out.push((
                format!("/dev/{name}"),
                dev.trim().to_string(),
                backing.trim().to_string(),
            ));
        }
    }
    out
}

/// A test instance whose drop also unmounts and detaches the loop devices backed by files
/// under its root (only those), after removing its containers.
struct Quota {
    i: Instance,
}

impl Quota {
    fn new() -> Quota {
        Quota { i: Instance::new() }
    }

    fn loops(&self) -> Vec<(String, String, String)> {
        loops_under(&self.i.root())
    }

    /// Asserts that nothing of the root is mounted and no loop device is backed by its files.
    fn assert_clean(&self) {
        assert_eq!(
            self.loops(),
            Vec::<(String, String, String)>::new(),
            "loop devices left"
        );
        assert_eq!(self.i.mounts_under_root(), Vec::<String>::new(), "mounts left");
    }

    fn id(&self, name: &str) -> String {
        self.i.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
    }

    fn disk_image(&self, name: &str) -> PathBuf {
        self.i.root().join("containers").join(self.id(name)).join("disk.img")
    }

    /// `inspect` of one container as JSON.
    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.i.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        for id in stdout(&self.i.v(&["ps", "-aq"])).split_whitespace() {
            self.i.v(&["rm", "-f", id]);
        }
        for l in self.i.mounts_under_root() {
            if let Some(p) = l.split(' ').nth(4) {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for (dev, majmin, _) in self.loops() {
            for l in info.lines().filter(|l| l.split(' ').nth(2) == Some(majmin.as_str())) {
                if let Some(p) = l.split(' ').nth(4) {
                    let _ = Command::new("umount").args(["-l", p]).status();
                }
            }
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
    }
}

/// `busybox dd` of `mib` MiB of zeros into `file` inside container `name`: (exit code,
/// bytes the file holds afterwards, dd's stderr).
fn dd(q: &Quota, name: &str, file: &str, mib: u64) -> (i32, u64, String) {
    let out = q.i.v(&[
        "exec",
        name,
        "sh",
        "-c",
        &format!("busybox dd if=/dev/zero of={file} bs=1M count={mib} conv=fsync; r=$?; busybox stat -c %s {file} >&2; exit $r"),
    ]);
    let err = stderr(&out);
    let size = err
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no size in {err}"));
    (out.status.code().unwrap_or(-1), size, err)
}

#[test]
fn quota_stops_writes_at_the_limit_while_another_container_writes_freely_and_update_grows_it() {
    if !have(&["umoci", "busybox"]) || !have_xfs() {
        return;
    }
    let q = Quota::new();
    let img = q.i.busybox();
    q.i.ok(&[
        "run",
        "-d",
        "--name",
        "small",
        "--storage-opt",
        "size=300m",
        img,
        "sleep",
        "1000",
    ]);
    q.i.ok(&["run", "-d", "--name", "free", img, "sleep", "1000"]);
    assert!(q.disk_image("small").is_file());
    assert!(!q.disk_image("free").exists());

    // The limit counts xfs's own metadata (a 64 MiB log): ENOSPC somewhat below 300 MiB.
    let (code, written, err) = dd(&q, "small", "/big", 400);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!((200 * MIB..300 * MIB).contains(&written), "{written} bytes written");
    // The container without a quota writes more than that limit.
    let (code, written, err) = dd(&q, "free", "/big", 350);
    assert_eq!((code, written), (0, 350 * MIB), "{err}");

    // Grown while it runs: the same writes then fit.
    let out = q.i.ok(&["update", "--storage-opt", "size=600m", "small"]);
    assert_eq!(out.trim(), "small");
    let (code, written, err) = dd(&q, "small", "/more", 200);
    assert_eq!((code, written), (0, 200 * MIB), "{err}");

    // inspect: docker's StorageOpt as given, and the limit and use in bytes.
    let v = q.inspect("small");
    assert_eq!(v["HostConfig"]["StorageOpt"], serde_json::json!({"size": "600m"}));
    let d = &v["DiskQuota"];
    assert_eq!(d["Limit"].as_u64(), Some(600 * MIB), "{d}");
    let used = d["Used"].as_u64().unwrap();
    assert!((400 * MIB..=600 * MIB).contains(&used), "{d}");
    assert!(d["Available"].as_u64().unwrap() < 200 * MIB, "{d}");
    let free = q.inspect("free");
    assert!(
        free["DiskQuota"].is_null() && free["HostConfig"]["StorageOpt"].is_null(),
        "{free}"
    );

    // stats: the same numbers (JSON), and a column of the table.
    let s: serde_json::Value =
        serde_json::from_str(&q.i.ok(&["stats", "--no-stream", "--format", "json", "small", "free"])).unwrap();
    assert_eq!(s[0]["disk_limit"].as_u64(), Some(600 * MIB), "{s}");
    assert!(s[0]["disk_usage"].as_u64().unwrap() >= 400 * MIB, "{s}");
    assert!(s[1]["disk_limit"].is_null(), "{s}");
    let table = q.i.ok(&["stats", "--no-stream", "small"]);
    assert!(
        table.contains("DISK USAGE / LIMIT") && table.contains("/ 600MiB"),
        "{table}"
    );

    // Shrinking is refused; so is a quota for a container made without one.
    let o = q.i.v(&["update", "--storage-opt", "size=400m", "small"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("shrinking a quota is not supported"),
        "{}",
        stderr(&o)
    );
    let o = q.i.v(&["update", "--storage-opt", "size=1g", "free"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("made without --storage-opt size"), "{}", stderr(&o));

    // rm: no loop device, no mount, no disk image.
    let image = q.disk_image("small");
    assert_eq!(q.loops().len(), 1, "{:?}", q.loops());
    q.i.ok(&["rm", "-f", "small", "free"]);
    assert!(!image.exists());
    q.assert_clean();
}

#[test]
fn host_image_quota_holds_its_etc_keeps_files_across_restart_and_grows_while_stopped() {
    if !have_xfs() {
        return;
    }
    let q = Quota::new();
    q.i.ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--storage-opt",
        "size=300m",
        "host",
        "sleep",
        "1000",
    ]);
    // /etc's private overlay is on the quota'd file system too: one write there fills it.
    let (code, written, err) = dd(&q, "h", "/etc/big", 400);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!((200 * MIB..300 * MIB).contains(&written), "{written}");
    let (code, _, err) = dd(&q, "h", "/root/more", 10);
    assert_ne!(code, 0, "the /etc writes took the space of the root too: {err}");
    q.i.ok(&["exec", "h", "rm", "/etc/big"]);
    q.i.ok(&[
        "exec",
        "h",
        "sh",
        "-c",
        "echo kept > /root/note && echo kept > /etc/note",
    ]);

    // Stopped: its file system is unmounted and its loop device gone.
    q.i.ok(&["stop", "-t", "1", "h"]);
    q.assert_clean();
    assert!(q.inspect("h")["DiskQuota"]["Used"].is_null());
    // Grown while stopped: the file system takes the new size when it is mounted again.
    q.i.ok(&["update", "--storage-opt", "size=500m", "h"]);
    q.i.ok(&["start", "h"]);
    let out = q.i.ok(&["exec", "h", "cat", "/root/note", "/etc/note"]);
    assert_eq!(out, "kept\nkept\n");
    let d = q.inspect("h")["DiskQuota"].clone();
    assert_eq!(d["Limit"].as_u64(), Some(500 * MIB), "{d}");
    let (code, written, err) = dd(&q, "h", "/var/tmp/big", 350);
    assert_eq!((code, written), (0, 350 * MIB), "{err}");
    q.i.ok(&["rm", "-f", "h"]);
    q.assert_clean();
}

#[test]
fn bad_storage_opts_are_refused_with_125_and_make_nothing() {
    if !have_xfs() {
        return;
    }
    let q = Quota::new();
    for (opt, says) in [
        ("size=abc", "invalid --storage-opt size \"abc\""),
        ("size=0", "must be more than 0"),
        ("size=1k", "at least 300M"),
        ("inodes=100", "unknown option \"inodes\""),
        ("size", "use size=SIZE"),
    ] {
        for cmd in ["run", "create"] {
            let o = q.i.v(&[cmd, "--rm", "--storage-opt", opt, "host", "true"]);
            assert_eq!(o.status.code(), Some(125), "{cmd} {opt}");
            let err = stderr(&o);
            assert!(err.contains(says), "{cmd} {opt}: {err}");
        }
    }
    assert_eq!(q.i.ok(&["ps", "-aq"]), "");
    assert_eq!(q.i.left("containers"), 0);
    q.assert_clean();
}

#[test]
fn killed_run_and_killed_monitor_leave_no_loop_device_after_system_check() {
    if !have(&["umoci", "busybox"]) || !have_xfs() {
        return;
    }
    let q = Quota::new();
    let img = q.i.busybox();

    // kill -9 of `vessel run` as soon as its loop device is there (part way through set-up).
    let mut run =
        q.i.cmd()
            .args([
                "run",
                "--name",
                "killed",
                "--storage-opt",
                "size=300m",
                img,
                "sleep",
                "1000",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
    wait_for("the loop device of the run", || !q.loops().is_empty());
    run.kill().unwrap();
    run.wait().unwrap();
    q.i.ok(&["system", "check"]);
    // What check leaves is a container that was made whole (its monitor had started and
    // holds it created) or nothing of it.
    let live =
        q.i.ok(&["ps", "-aq"])
            .split_whitespace()
            .any(|id| matches!(q.inspect(id)["State"]["Status"].as_str(), Some("created" | "running")));
    if !live {
        q.assert_clean();
    }
    for id in q.i.ok(&["ps", "-aq"]).split_whitespace() {
        q.i.ok(&["rm", "-f", id]);
    }
    q.assert_clean();

    // kill -9 of the monitor of a running container with a quota: check ends it and
    // releases its file system.
    q.i.ok(&[
        "run",
        "-d",
        "--name",
        "m",
        "--storage-opt",
        "size=300m",
        img,
        "sleep",
        "1000",
    ]);
    let monitor = q.inspect("m")["State"]["MonitorPid"].as_i64().unwrap();
    let init = q.inspect("m")["State"]["Pid"].as_i64().unwrap();
    assert!(monitor > 0 && init > 0);
    Command::new("kill")
        .args(["-9", &monitor.to_string()])
        .status()
        .unwrap();
    wait_for("the monitor to go", || !Path::new(&format!("/proc/{monitor}")).exists());
    assert_eq!(q.loops().len(), 1);
    let out = q.i.ok(&["system", "check"]);
    assert!(out.contains("monitor is gone"), "{out}");
    wait_for("the container's init to go", || {
        !Path::new(&format!("/proc/{init}")).exists()
    });
    // The kernel detaches the loop device once the container's mount namespace is gone.
    wait_for("the loop device to go", || q.loops().is_empty());
    q.assert_clean();

    // A loop device of the stopped container's image that no command of vessel made (a
    // leftover): check finds it by its backing file under the root and detaches it.
    let image = q.disk_image("m");
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dev = stdout(&out).trim().to_string();
    assert_eq!(q.loops().len(), 1);
    // --dry-run reports (exit 1: something to repair) and changes nothing.
    let o = q.i.v(&["system", "check", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!("loop device {dev} of container")),
        "{}",
        stdout(&o)
    );
    assert_eq!(q.loops().len(), 1, "--dry-run only reports");
    let out = q.i.ok(&["system", "check"]);
    assert!(out.contains(&format!("loop device {dev} of container")), "{out}");
    q.assert_clean();
    // The container still starts, with its quota.
    q.i.ok(&["start", "m"]);
    assert_eq!(q.inspect("m")["DiskQuota"]["Limit"].as_u64(), Some(300 * MIB));
    q.i.ok(&["rm", "-f", "m"]);
    q.assert_clean();
}

/// `diff` and `commit` of a stopped container with a quota read its writable layer (on a
/// file system that is not mounted while the container is stopped) and leave it unmounted.
#[test]
fn diff_and_commit_of_a_stopped_container_with_a_quota_see_its_files() {
    if !have(&["umoci", "busybox"]) || !have_xfs() {
        return;
    }
    let q = Quota::new();
    let img = q.i.busybox();
    q.i.ok(&[
        "run",
        "--name",
        "c",
        "--storage-opt",
        "size=300m",
        img,
        "sh",
        "-c",
        "echo hi > /made",
    ]);
    let diff = q.i.ok(&["diff", "c"]);
    assert!(diff.lines().any(|l| l.trim() == "A /made"), "{diff}");
    q.i.ok(&["commit", "c", "localhost/from-quota:1"]);
    assert_eq!(
        q.i.ok(&["run", "--rm", "localhost/from-quota:1", "cat", "/made"])
            .trim(),
        "hi"
    );
    q.i.ok(&["rm", "c"]);
    q.assert_clean();
}
