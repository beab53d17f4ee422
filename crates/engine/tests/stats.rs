//! `vessel_engine::stats` against real containers: a busybox container started by the
//! vessel-oci binary (the runtime forks, and this test harness is multi-threaded, so
//! the container is never created in-process), then `sample()` and `top()` read it
//! through the same `--root`.
//!
//! The vessel-oci binary is `$VESSEL_OCI` when set, else `vessel-oci` in the cargo
//! target dir this test was built into (the test binary lives in `<target>/debug/deps/`,
//! vessel-oci in `<target>/debug/`). `cargo test --workspace` builds it; when testing
//! this crate alone, build it first with the same target dir:
//!
//! ```sh
//! cargo build -p vessel-oci && cargo test -p vessel-engine --test stats
//! ```
//!
//! Needs root and busybox-static (`/bin/busybox`). Every container has a unique id
//! `vessel-stats-<random>`, a temp `--root` and its own cgroup `/vessel-test-<id>`; a
//! guard kills and deletes it and removes its cgroup also when a test fails.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vessel_engine::stats::{cpu_percent, sample, top};
use vessel_engine::Error;

/// Longest a vessel-oci command may take before the test fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary: `$VESSEL_OCI`, else `<target>/<profile>/vessel-oci`.
fn oci_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VESSEL_OCI").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in <target>/<profile>/deps");
    let bin = profile_dir.join("vessel-oci");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p vessel-oci` with the same CARGO_TARGET_DIR, or set VESSEL_OCI",
        bin.display()
    );
    bin
}

/// Skips (with a note) where the test cannot run: not root.
fn can_run() -> bool {
    // SAFETY: geteuid has no failure mode and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to create containers");
        return false;
    }
    true
}

fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Output of one vessel-oci command.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A detached busybox container run by vessel-oci; Drop kills and deletes it.
struct TestContainer {
    bin: PathBuf,
    id: String,
    dir: PathBuf,
    root: PathBuf,
    cgroups_path: String,
    _tmp: tempfile::TempDir,
}

impl TestContainer {
    /// Makes the bundle (busybox rootfs, `vessel-oci spec` config with `args`) and runs
    /// it detached (`run -d`).
    fn run(args: &[&str]) -> TestContainer {
        Self::run_with(args, |_| {})
    }

    /// [`Self::run`] with a last change to config.json.
    fn run_with(args: &[&str], edit: impl FnOnce(&mut Value)) -> TestContainer {
        let id = format!("vessel-stats-{}", random_hex(4));
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let c = TestContainer {
            bin: oci_bin(),
            root: dir.join("state"),
            cgroups_path: format!("/vessel-test-{id}"),
            id,
            dir,
            _tmp: tmp,
        };
        let bundle = c.dir.join("bundle");
        make_busybox_rootfs(&bundle.join("rootfs"));
        let out = c.oci(&["spec".as_ref(), "--bundle".as_ref(), bundle.as_os_str()]);
        assert_eq!(out.code, 0, "vessel-oci spec: {}", out.stderr);
        let config = bundle.join("config.json");
        let mut spec: Value = serde_json::from_slice(&fs::read(&config).unwrap()).expect("config.json is JSON");
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(args);
        spec["linux"]["cgroupsPath"] = json!(c.cgroups_path);
        edit(&mut spec);
        fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        let out = c.oci(&[
            "run".as_ref(),
            "-d".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            c.id.as_ref(),
        ]);
        assert_eq!(out.code, 0, "vessel-oci run -d: {}{}", out.stdout, out.stderr);
        c
    }

    /// Runs `vessel-oci --root ROOT ARGS...`, output into files (a detached container
    /// inherits them and may keep them open: pipes would never reach EOF).
    fn oci(&self, args: &[&std::ffi::OsStr]) -> Out {
        let n = random_hex(4);
        let (out_path, err_path) = (self.dir.join(format!("{n}.out")), self.dir.join(format!("{n}.err")));
        let mut child = Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("vessel-oci {args:?} timed out");
            }
            sleep(Duration::from_millis(10));
        };
        Out {
            code: status.code().unwrap_or(-1),
            stdout: fs::read_to_string(out_path).unwrap_or_default(),
            stderr: fs::read_to_string(err_path).unwrap_or_default(),
        }
    }

    /// Every cgroup dir of this container that exists (v1 controllers, hybrid and v2).
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let rel = self.cgroups_path.trim_start_matches('/');
        let base = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![base.join(rel)];
        for e in fs::read_dir(base).into_iter().flatten().flatten() {
            dirs.push(e.path().join(rel));
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }

    /// Waits until the container's `sleep` has been exec'd (a forked child is listed
    /// in the cgroup as `sh` before that); panics after 10 s.
    fn wait_for_sleep(&self) {
        let ok = wait_until(Duration::from_secs(10), || {
            self.cgroup_pids()
                .iter()
                .any(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"))
        });
        assert!(ok, "the container's sleep never started: {:?}", self.cgroup_pids());
    }

    /// Host pids in the container's cgroup, read directly (not through the engine).
    fn cgroup_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .cgroup_dirs()
            .iter()
            .flat_map(|d| {
                fs::read_to_string(d.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = self.oci(&["kill".as_ref(), self.id.as_ref(), "KILL".as_ref()]);
        let _ = self.oci(&["delete".as_ref(), "--force".as_ref(), self.id.as_ref()]);
        // Whatever the runtime left: kill the processes and remove the cgroup dirs.
        for d in self.cgroup_dirs() {
            for _ in 0..100 {
                for pid in fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        // SAFETY: kill(2) of a pid in this test's own container cgroup.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                let _ = fs::write(d.join("freezer.state"), "THAWED");
                if fs::remove_dir(&d).is_ok() || !d.exists() {
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A busybox rootfs: /bin/busybox, one symlink per applet, the usual top-level dirs.
fn make_busybox_rootfs(rootfs: &Path) {
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "/bin/busybox is missing: install busybox-static");
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    let list = Command::new(busybox).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn sample_of_a_busy_container() {
    if !can_run() {
        return;
    }
    let c = TestContainer::run(&["sh", "-c", "sleep 1000 & while :; do :; done"]);
    c.wait_for_sleep();
    let first = sample(&c.root, &c.id).expect("sample");
    sleep(Duration::from_millis(500));
    let second = sample(&c.root, &c.id).expect("second sample");
    eprintln!("{first:?}\n{second:?}");

    assert!(second.pids >= 2, "sh and sleep: {second:?}");
    assert!(first.cpu_ns > 0, "{first:?}");
    assert!(
        second.cpu_ns >= first.cpu_ns + 20_000_000,
        "a busy loop used less than 20 ms of CPU in 500 ms: {first:?} -> {second:?}"
    );
    assert!(second.system_ns > first.system_ns && second.at > first.at);
    let pct = cpu_percent(&first, &second);
    let cpus = f64::from(second.online_cpus);
    assert!(pct > 4.0 && pct <= cpus * 100.0 + 5.0, "cpu {pct}% of {cpus} cpus");
    assert!(second.online_cpus as usize >= 1);

    assert!(second.mem_usage > 0, "{second:?}");
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let mem_total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(
        second.mem_limit,
        mem_total_kb * 1024,
        "unlimited container: the host's MemTotal"
    );
    assert!(second.mem_usage < second.mem_limit);
    // runtime spec's default config has its own network namespace: only lo, not counted.
    assert_eq!((second.net_rx, second.net_tx), (0, 0));
}

#[test]
fn top_lists_only_the_containers_processes() {
    if !can_run() {
        return;
    }
    let c = TestContainer::run(&["sh", "-c", "sleep 1000 & wait"]);
    c.wait_for_sleep();
    let in_cgroup = c.cgroup_pids();

    let (titles, rows) = top(&c.root, &c.id, &[]).expect("top");
    eprintln!("{titles:?}\n{rows:#?}");
    assert_eq!(titles, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]);
    assert!(rows.iter().all(|r| r.len() == titles.len()), "{rows:?}");
    assert!(rows.iter().any(|r| r[7] == "sleep 1000"), "no sleep among {rows:?}");
    let pids: Vec<i32> = rows.iter().map(|r| r[1].parse().expect("PID column")).collect();
    assert!(
        pids.iter().all(|p| in_cgroup.contains(p)),
        "host processes listed: {pids:?}, container cgroup has {in_cgroup:?}"
    );
    assert!(!pids.contains(&1) && !pids.contains(&(std::process::id() as i32)));
    assert_eq!(pids.len(), in_cgroup.len(), "{rows:?} vs {in_cgroup:?}");

    // Other ps options: the PID column is found wherever it is.
    let (titles, rows) = top(&c.root, &c.id, &["-o".into(), "comm,pid".into()]).expect("top -o comm,pid");
    assert_eq!(titles, ["COMMAND", "PID"]);
    assert!(rows.iter().any(|r| r[0] == "sleep"), "{rows:?}");
    // Without a PID column, or options ps refuses: the user's input is at fault.
    let e = top(&c.root, &c.id, &["-o".into(), "comm".into()]).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");
    let e = top(&c.root, &c.id, &["--no-such-option".into()]).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e}");

    // Stopped: neither stats nor top.
    let out = c.oci(&["kill".as_ref(), c.id.as_ref(), "KILL".as_ref()]);
    assert_eq!(out.code, 0, "kill: {}", out.stderr);
    assert!(wait_until(Duration::from_secs(10), || matches!(
        sample(&c.root, &c.id),
        Err(Error::WrongState(_))
    )));
    assert!(matches!(top(&c.root, &c.id, &[]), Err(Error::WrongState(_))));
}

#[test]
fn host_network_is_not_counted() {
    if !can_run() {
        return;
    }
    let c = TestContainer::run_with(&["sleep", "1000"], |spec| {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    });
    c.wait_for_sleep();
    let s = sample(&c.root, &c.id).expect("sample");
    // docker shows 0B / 0B for --network host: the host's counters are not the container's.
    assert_eq!((s.net_rx, s.net_tx), (0, 0), "{s:?}");
    assert!(s.pids >= 1);
}
