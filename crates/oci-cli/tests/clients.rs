//! vessel-oci under the real clients from Debian: containerd (through `ctr` and the
//! io.containerd.runc.v2 shim, `--runc-binary`) and podman (`--runtime`, rootful,
//! cgroupfs). Each containerd test starts its own containerd with a temp root, state
//! dir and socket (killed by pid in a Drop guard); each podman test uses a temp
//! `--root`/`--runroot` that is unmounted and removed afterwards. Images are a busybox
//! image built with umoci and turned into a docker-archive by skopeo.
//!
//! A test whose client is not installed prints a loud note and returns (`scripts/setup`
//! installs containerd and podman). On failure, the client's own output is printed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{oci_bin, random_hex};

/// Image name of the test image, in every store.
const IMAGE: &str = "localhost/vessel-busybox:latest";

/// Podman's default rlimits (nofile/nproc 1048576) need CAP_SYS_RESOURCE, which root on
/// the test machines lacks; runc fails the same way.
const ULIMITS: [&str; 4] = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"];

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// False (after a loud note) when a tool the test needs is missing.
fn need(test: &str, bins: &[&str]) -> bool {
    let missing: Vec<&str> = bins.iter().copied().filter(|b| !have(b)).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "\n!!!!! {test}: SKIPPED: not installed: {} (run scripts/setup) !!!!!\n",
        missing.join(", ")
    );
    false
}

/// A finished client command.
struct Run {
    what: String,
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self}");
        self
    }

    #[track_caller]
    fn code(&self, want: i32) -> &Self {
        assert_eq!(self.code, want, "exit code of {self}");
        self
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a command with a time limit; its output is captured.
fn run(cmd: &mut Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    let dir = std::env::temp_dir().join(format!("vessel-clients-out-{}", random_hex(6)));
    fs::create_dir_all(&dir).unwrap();
    let (o, e) = (dir.join("out"), dir.join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {what}: {err}"));
    let start = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s
                .code()
                .unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0));
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        sleep(Duration::from_millis(5));
    };
    let r = Run {
        what,
        code,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
    };
    let _ = fs::remove_dir_all(&dir);
    if code == -1 {
        panic!("timed out after {limit:?}: {r}");
    }
    r
}

/// A shell command line of `args`, each single-quoted.
fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unmounts everything mounted under `dir` (deepest first), then removes it.
fn unmount_and_remove(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).stderr(Stdio::null()).status();
    }
    let _ = fs::remove_dir_all(&dir);
}

/// Removes the cgroup dirs named `name` (and what is below) from every v1 hierarchy
/// and the unified one.
fn remove_cgroups(name: &str) {
    let Ok(hier) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hier.flatten() {
        let top = h.path().join(name);
        if !top.is_dir() {
            continue;
        }
        let mut dirs = vec![];
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                stack.extend(
                    rd.flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Builds the busybox image (umoci, host's /bin/busybox) as a docker-archive that both
/// `ctr images import` and `podman load` read. Returns the archive's path.
fn build_image(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let bundle = dir.join("unpacked");
    let img = format!("{}:latest", layout.display());
    let t = Duration::from_secs(60);
    run(Command::new("umoci").args(["init", "--layout"]).arg(&layout), t).ok();
    run(Command::new("umoci").args(["new", "--image", &img]), t).ok();
    run(Command::new("umoci").args(["unpack", "--image", &img]).arg(&bundle), t).ok();
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static");
    fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for c in [
        "sh", "true", "sleep", "cat", "echo", "tty", "stty", "ls", "ps", "id", "grep", "kill",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(c)).unwrap();
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();
    run(Command::new("umoci").args(["repack", "--image", &img]).arg(&bundle), t).ok();
    run(
        Command::new("umoci").args([
            "config",
            "--image",
            &img,
            "--config.cmd",
            "sh",
            "--config.env",
            "PATH=/bin",
        ]),
        t,
    )
    .ok();
    let archive = dir.join("image.tar");
    run(
        Command::new("skopeo").args([
            "copy",
            "-q",
            &format!("oci:{img}"),
            &format!("docker-archive:{}:{IMAGE}", archive.display()),
        ]),
        t,
    )
    .ok();
    unmount_and_remove(&bundle);
    archive
}

// ---------------------------------------------------------------- containerd

/// A containerd of its own: temp root/state/socket, a unique namespace (so the shim's
/// cgroups are `/<ns>/<id>`) and a unique `--runc-root`. Drop kills it by pid and
/// removes everything.
struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    ns: String,
    runc_root: PathBuf,
    child: Child,
}

impl Containerd {
    fn start(test: &str) -> Containerd {
        let dir = std::env::temp_dir().join(format!("vessel-ctd-{test}-{}", random_hex(4)));
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(&config, containerd_config(&dir)).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let ns = format!("vessel-{test}-{}", random_hex(3));
        let c = Containerd {
            runc_root: dir.join("runc"),
            dir,
            sock,
            ns,
            child,
        };
        let start = Instant::now();
        loop {
            if c.sock.exists() && c.ctr(&["version"]).code == 0 {
                break;
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "containerd did not come up:\n{}",
                    fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(20));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Run {
        run(
            Command::new("ctr")
                .arg("-a")
                .arg(&self.sock)
                .args(["-n", &self.ns])
                .args(args),
            Duration::from_secs(30),
        )
    }

    /// `ctr run --runc-binary vessel-oci --runc-root ... <flags> IMAGE ID <cmd>`.
    fn run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = vec!["run".into(), "--runc-binary".into(), oci_bin().display().to_string()];
        v.push("--runc-root".into());
        v.push(self.runc_root.display().to_string());
        v.push("--fifo-dir".into());
        v.push(self.fifo_dir());
        v.extend(flags.iter().map(|s| s.to_string()));
        v.push(IMAGE.into());
        v.push(id.into());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    }

    fn ctr_run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Run {
        let a = self.run_args(flags, id, cmd);
        self.ctr(&a.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn import_image(&self) {
        let archive = build_image(&self.dir.join("image"));
        self.ctr(&["images", "import", "--all-platforms", &archive.display().to_string()])
            .ok();
    }

    /// Waits until `ctr task ls` shows the task with `status`.
    #[track_caller]
    fn wait_status(&self, id: &str, status: &str) {
        let start = Instant::now();
        loop {
            let ls = self.ctr(&["task", "ls"]);
            if ls
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status))
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!("task {id} never became {status}: {ls}");
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Where ctr puts its IO fifos (its default, /run/containerd/fifo, keeps those of
    /// detached execs).
    fn fifo_dir(&self) -> String {
        self.dir.join("fifo").display().to_string()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks and containers left by a failed test.
        let tasks = self.ctr(&["task", "ls", "-q"]);
        for id in tasks.stdout.split_whitespace() {
            let _ = self.ctr(&["task", "kill", "-a", "-s", "SIGKILL", id]);
            sleep(Duration::from_millis(100));
            let _ = self.ctr(&["task", "delete", "-f", id]);
        }
        for id in self.ctr(&["containers", "ls", "-q"]).stdout.split_whitespace() {
            let _ = self.ctr(&["containers", "delete", id]);
        }
        // SAFETY: kill takes plain integers; the pid is our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            sleep(Duration::from_millis(10));
        }
        remove_cgroups(&self.ns);
        unmount_and_remove(&self.dir);
    }
}

/// The containerd config of the tests (also shown in docs/kubernetes.md): everything
/// under `dir`, no CRI plugin.
fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"

[metrics]
  address = ""
"#
    )
}

/// True when the runtime root of the shim holds no container state any more.
fn runtime_root_empty(root: &Path) -> bool {
    fs::read_dir(root).map_or(true, |mut rd| rd.next().is_none())
}

/// No cgroup dir of the container left in any hierarchy.
fn cgroups_gone(ns: &str, id: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .map(|rd| {
            rd.flatten()
                .map(|h| h.path().join(ns).join(id))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn containerd_run_exit_code_and_cleanup() {
    if !need(
        "containerd_run_exit_code_and_cleanup",
        &["containerd", "ctr", "umoci", "skopeo"],
    ) {
        return;
    }
    let c = Containerd::start("exit");
    c.import_image();
    let id = format!("vessel-ctr-{}", random_hex(3));
    let r = c.ctr_run(&["--rm"], &id, &["sh", "-c", "echo hello-from-vessel; exit 3"]);
    r.code(3);
    assert!(r.stdout.contains("hello-from-vessel"), "{r}");
    assert!(
        runtime_root_empty(&c.runc_root.join(&c.ns)),
        "state left in {}",
        c.runc_root.display()
    );
    assert!(
        cgroups_gone(&c.ns, &id).is_empty(),
        "cgroups left: {:?}",
        cgroups_gone(&c.ns, &id)
    );
    assert!(c.ctr(&["containers", "ls", "-q"]).stdout.trim().is_empty());

    // A process that cannot start: the shim reports vessel-oci's own message (from --log).
    let id2 = format!("vessel-ctr-{}", random_hex(3));
    let r = c.ctr_run(&["--rm"], &id2, &["/no-such-program"]);
    assert_ne!(r.code, 0, "{r}");
    assert!(
        r.all().contains("/no-such-program"),
        "the shim should pass on vessel-oci's error: {r}\n{}",
        c.log()
    );
    let _ = c.ctr(&["containers", "delete", &id2]);
}

#[test]
fn containerd_detached_task_lifecycle() {
    if !need(
        "containerd_detached_task_lifecycle",
        &["containerd", "ctr", "umoci", "skopeo"],
    ) {
        return;
    }
    let c = Containerd::start("detach");
    c.import_image();
    let id = format!("vessel-ctr-{}", random_hex(3));
    c.ctr_run(
        &["-d", "--memory-limit", "67108864", "--cpus", "0.5"],
        &id,
        &["sleep", "1000"],
    )
    .ok();
    c.wait_status(&id, "RUNNING");

    let ps = c.ctr(&["task", "ps", &id]);
    ps.ok();
    assert!(ps.stdout.lines().count() >= 2, "{ps}");

    // exec: output and exit code; the limits are in the container's cgroup.
    let ex = c.ctr(&[
        "task",
        "exec",
        "--fifo-dir",
        &c.fifo_dir(),
        "--exec-id",
        "x1",
        &id,
        "sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    ex.code(5);
    assert!(ex.stdout.contains("in-exec"), "{ex}");
    // The limits, in the cgroup the shim asked for (/<namespace>/<id>; ctr's spec mounts
    // no cgroupfs in the container).
    let host = |ctl: &str, file: &str| {
        fs::read_to_string(format!("/sys/fs/cgroup/{ctl}/{}/{id}/{file}", c.ns)).map(|s| s.trim().to_string())
    };
    if Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert_eq!(host("memory", "memory.limit_in_bytes").unwrap(), "67108864");
        assert_eq!(host("cpu", "cpu.cfs_quota_us").unwrap(), "50000");
    } else {
        assert_eq!(
            fs::read_to_string(format!("/sys/fs/cgroup/{}/{id}/memory.max", c.ns))
                .unwrap()
                .trim(),
            "67108864"
        );
    }
    // A detached exec shows up in ps.
    c.ctr(&[
        "task",
        "exec",
        "-d",
        "--fifo-dir",
        &c.fifo_dir(),
        "--exec-id",
        "x3",
        &id,
        "sleep",
        "500",
    ])
    .ok();
    let ps = c.ctr(&["task", "ps", &id]);
    assert!(ps.stdout.contains("x3"), "{ps}");

    // pause / resume
    c.ctr(&["task", "pause", &id]).ok();
    c.wait_status(&id, "PAUSED");
    c.ctr(&["task", "resume", &id]).ok();
    c.wait_status(&id, "RUNNING");

    // metrics: the limit set by --memory-limit, cpu usage and pids.
    let m = c.ctr(&["task", "metrics", &id]);
    m.ok();
    assert!(m.stdout.contains("67108864"), "{m}");
    assert!(m.stdout.contains("pids.current"), "{m}");

    // kill (sleep as pid 1 ignores TERM, as under runc): KILL, then delete.
    c.ctr(&["task", "kill", "-a", "-s", "SIGKILL", &id]).ok();
    c.wait_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).ok();
    c.ctr(&["containers", "delete", &id]).ok();
    assert!(
        runtime_root_empty(&c.runc_root.join(&c.ns)),
        "state left in {}",
        c.runc_root.display()
    );
    assert!(
        cgroups_gone(&c.ns, &id).is_empty(),
        "cgroups left: {:?}",
        cgroups_gone(&c.ns, &id)
    );
}

#[test]
fn containerd_tty_and_force_delete() {
    if !need(
        "containerd_tty_and_force_delete",
        &["containerd", "ctr", "umoci", "skopeo", "script"],
    ) {
        return;
    }
    let c = Containerd::start("tty");
    c.import_image();
    let id = format!("vessel-ctr-{}", random_hex(3));
    // ctr -t needs a terminal of its own: script(1) gives it one.
    let line = c.run_args(&["--rm", "-t"], &id, &["sh", "-c", "tty; exit 4"]);
    let ctr = format!("ctr -a {} -n {} {}", c.sock.display(), c.ns, shell_line(&line));
    let r = run(
        Command::new("script").args(["-qec", &ctr, "/dev/null"]),
        Duration::from_secs(30),
    );
    r.code(4);
    assert!(r.stdout.contains("/dev/pts/"), "{r}");

    // A running task deleted with --force.
    let id2 = format!("vessel-ctr-{}", random_hex(3));
    c.ctr_run(&["-d"], &id2, &["sleep", "1000"]).ok();
    c.wait_status(&id2, "RUNNING");
    c.ctr(&["task", "delete", "-f", &id2]).ok();
    c.ctr(&["containers", "delete", &id2]).ok();
    assert!(
        runtime_root_empty(&c.runc_root.join(&c.ns)),
        "state left in {}",
        c.runc_root.display()
    );
    assert!(cgroups_gone(&c.ns, &id2).is_empty());
}

// ---------------------------------------------------------------- podman

/// Rootful podman with storage of its own, cgroupfs, file events, vessel-oci as the
/// runtime. Drop removes its containers, unmounts and deletes the storage.
struct Podman {
    dir: PathBuf,
}

impl Podman {
    fn new(test: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("vessel-podman-{test}-{}", random_hex(4)));
        fs::create_dir_all(&dir).unwrap();
        let p = Podman { dir };
        let archive = build_image(&p.dir.join("image"));
        p.podman(&["load", "-q", "-i", &archive.display().to_string()]).ok();
        p
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root").arg(self.dir.join("root"));
        c.arg("--runroot").arg(self.dir.join("runroot"));
        c.arg("--tmpdir").arg(self.dir.join("tmp"));
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        c.arg("--runtime").arg(oci_bin());
        c
    }

    fn podman(&self, args: &[&str]) -> Run {
        run(self.cmd().args(args), Duration::from_secs(60))
    }

    /// `podman run <flags> --network none --ulimit ... IMAGE <cmd>`.
    fn run(&self, flags: &[&str], cmd: &[&str]) -> Run {
        let mut a = vec!["run", "--network", "none"];
        a.extend(ULIMITS);
        a.extend(flags);
        a.push(IMAGE);
        a.extend(cmd);
        self.podman(&a)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        // conmon runs `podman ... container cleanup` when a container exits; one that
        // comes late would mount the storage again after we removed it.
        wait_for_processes_naming(&self.dir, Duration::from_secs(15));
        unmount_and_remove(&self.dir);
    }
}

/// Waits (at most `limit`) until no process has `dir` in its command line.
fn wait_for_processes_naming(dir: &Path, limit: Duration) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let start = Instant::now();
    while start.elapsed() < limit {
        let busy = fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.bytes().all(|b| b.is_ascii_digit())
                && name != me
                && fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        });
        if !busy {
            return;
        }
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn podman_run_rm_exit_code_and_rlimit_error() {
    if !need(
        "podman_run_rm_exit_code_and_rlimit_error",
        &["podman", "umoci", "skopeo"],
    ) {
        return;
    }
    let p = Podman::new("rm");
    let r = p.run(&["--rm"], &["sh", "-c", "echo hello-from-vessel; exit 3"]);
    r.code(3);
    assert!(r.stdout.contains("hello-from-vessel"), "{r}");
    // podman's seccomp profile and default capabilities are applied: no CAP_SYS_ADMIN.
    let r = p.run(
        &["--rm"],
        &["sh", "-c", "grep -E '^(CapEff|Seccomp):' /proc/self/status"],
    );
    r.ok();
    assert!(r.stdout.contains("Seccomp:\t2"), "seccomp filter mode expected: {r}");
    let eff = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .expect("CapEff");
    let eff = u64::from_str_radix(eff.trim(), 16).unwrap();
    assert_eq!(eff & (1 << 21), 0, "CAP_SYS_ADMIN must not be granted: {r}");
    assert_ne!(eff, 0, "podman's default capabilities: {r}");

    // Without --ulimit, podman asks for nofile 1048576. Where root may not raise the
    // hard limit, the error names the rlimit and the value.
    let r = p.podman(&["run", "--rm", "--network", "none", IMAGE, "true"]);
    // (runc 1.1.5 says only "error setting rlimit type 7".)
    if r.code != 0 && !common::is_runc() {
        assert!(
            r.stderr.contains("RLIMIT_NOFILE") && r.stderr.contains("1048576"),
            "{r}"
        );
    }
    assert!(
        p.podman(&["ps", "-a", "-q"]).stdout.trim().is_empty(),
        "--rm left containers"
    );
}

#[test]
fn podman_detached_lifecycle() {
    if !need("podman_detached_lifecycle", &["podman", "umoci", "skopeo"]) {
        return;
    }
    let p = Podman::new("detach");
    let name = format!("vessel-p-{}", random_hex(3));
    let script = "echo started; trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done";
    p.run(&["-d", "--name", &name], &["sh", "-c", script]).ok();
    // logs
    let start = Instant::now();
    loop {
        let l = p.podman(&["logs", &name]);
        if l.stdout.contains("started") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{l}");
        sleep(Duration::from_millis(50));
    }
    // exec
    let e = p.podman(&["exec", &name, "sh", "-c", "echo exec-ok; exit 7"]);
    e.code(7);
    assert!(e.stdout.contains("exec-ok"), "{e}");
    // exec with user, env and working directory (runc's exec --process).
    let e = p.podman(&[
        "exec",
        "--user",
        "1000:1000",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        &name,
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $FOO $PWD",
    ]);
    e.ok();
    assert_eq!(e.stdout.trim(), "1000:1000 bar /tmp", "{e}");
    // pause / unpause
    p.podman(&["pause", &name]).ok();
    let st = p.podman(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert_eq!(st.stdout.trim(), "paused", "{st}");
    p.podman(&["unpause", &name]).ok();
    let st = p.podman(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert_eq!(st.stdout.trim(), "running", "{st}");
    // stats
    let s = p.podman(&["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", &name]);
    s.ok();
    assert!(s.stdout.contains(&name), "{s}");
    // update (podman 4.3: cpu, memory, blkio, pids)
    p.podman(&["update", "--memory", "100m", &name]).ok();
    let m = p.podman(&["exec", &name, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
    if m.code == 0 {
        assert_eq!(m.stdout.trim(), "104857600", "{m}");
    }
    // stop: TERM reaches the trap.
    p.podman(&["stop", "-t", "10", &name]).ok();
    let l = p.podman(&["logs", &name]);
    assert!(l.stdout.contains("got-term"), "{l}");
    let st = p.podman(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &name]);
    assert_eq!(st.stdout.trim(), "exited 0", "{st}");
    p.podman(&["rm", &name]).ok();

    // kill, then rm -f of a running one.
    let n2 = format!("vessel-p-{}", random_hex(3));
    p.run(&["-d", "--name", &n2], &["sleep", "1000"]).ok();
    p.podman(&["kill", &n2]).ok();
    let st = p.podman(&["wait", &n2]);
    assert_eq!(st.stdout.trim(), "137", "{st}");
    let n3 = format!("vessel-p-{}", random_hex(3));
    p.run(&["-d", "--name", &n3], &["sleep", "1000"]).ok();
    // restart: a new container (create/start) under the same name.
    p.podman(&["restart", "-t", "0", &n3]).ok();
    let st = p.podman(&["inspect", "-f", "{{.State.Status}}", &n3]);
    assert_eq!(st.stdout.trim(), "running", "{st}");
    p.podman(&["rm", "-f", "-t", "0", &n3]).ok();
    p.podman(&["rm", &n2]).ok();
    assert!(p.podman(&["ps", "-a", "-q"]).stdout.trim().is_empty());
}

#[test]
fn podman_run_it_through_pty() {
    if !need("podman_run_it_through_pty", &["podman", "umoci", "skopeo", "script"]) {
        return;
    }
    let p = Podman::new("tty");
    let mut line: Vec<String> = p.cmd().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    line.insert(0, "podman".into());
    line.extend(["run", "-it", "--rm", "--network", "none"].map(String::from));
    line.extend(ULIMITS.map(String::from));
    // The sleep: conmon accepts podman's attach connection in its main loop, and what a
    // process writes before that goes only to the log (a conmon race that a runtime
    // whose `start` returns in a millisecond exposes; runc's slower start hides it).
    line.extend([IMAGE, "sh", "-c", "sleep 0.3; tty; exit 4"].map(String::from));
    let r = run(
        Command::new("script").args(["-qec", &shell_line(&line), "/dev/null"]),
        Duration::from_secs(60),
    );
    r.code(4);
    assert!(r.stdout.contains("/dev/pts/"), "{r}");

    // exec -it in a running container.
    let name = format!("vessel-p-{}", random_hex(3));
    p.run(&["-d", "--name", &name], &["sleep", "1000"]).ok();
    let mut line: Vec<String> = p.cmd().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    line.insert(0, "podman".into());
    line.extend(["exec", "-it", &name, "sh", "-c", "tty; exit 9"].map(String::from));
    let r = run(
        Command::new("script").args(["-qec", &shell_line(&line), "/dev/null"]),
        Duration::from_secs(60),
    );
    r.code(9);
    assert!(r.stdout.contains("/dev/pts/"), "{r}");
    p.podman(&["rm", "-f", "-t", "0", &name]).ok();
}

/// podman's `container checkpoint` and `container restore` through vessel-oci: a
/// counter goes on from where it stopped. podman checks criu itself: the one vessel
/// uses comes first on its PATH.
#[test]
fn podman_checkpoint_and_restore() {
    if !need("podman_checkpoint_and_restore", &["podman", "umoci", "skopeo"]) {
        return;
    }
    let p = Podman::new("checkpoint");
    let criu = vessel_runtime_criu_dir();
    let podman = |args: &[&str]| {
        let mut c = p.cmd();
        c.env(
            "PATH",
            format!("{}:{}", criu.display(), std::env::var("PATH").unwrap_or_default()),
        );
        run(c.args(args), Duration::from_secs(60))
    };
    let name = format!("vessel-pcr-{}", random_hex(3));
    let counter = "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done";
    let mut a = vec!["run", "-d", "--network", "none", "--name", &name];
    a.extend(ULIMITS);
    a.extend([IMAGE, "sh", "-c", counter]);
    podman(&a).ok();
    let count = || -> u64 {
        let r = podman(&["exec", &name, "cat", "/count"]);
        let nums: Vec<u64> = r.stdout.lines().filter_map(|l| l.trim().parse().ok()).collect();
        for (k, n) in nums.iter().enumerate() {
            assert_eq!(*n, k as u64 + 1, "a number lost or repeated: {r}");
        }
        nums.len() as u64
    };
    let start = Instant::now();
    while count() < 3 {
        assert!(start.elapsed() < Duration::from_secs(20), "the counter counts");
        sleep(Duration::from_millis(100));
    }
    podman(&["container", "checkpoint", &name]).ok();
    let st = podman(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert!(st.stdout.contains("exited"), "{st}");
    podman(&["container", "restore", &name]).ok();
    let st = podman(&["inspect", "-f", "{{.State.Status}}", &name]);
    assert!(st.stdout.contains("running"), "{st}");
    let at = count();
    let start = Instant::now();
    while count() < at + 5 {
        assert!(start.elapsed() < Duration::from_secs(20), "the count continues");
        sleep(Duration::from_millis(100));
    }
}

/// The directory of the criu vessel-oci uses by default (scripts/setup's wrapper).
fn vessel_runtime_criu_dir() -> PathBuf {
    match std::env::var_os("VESSEL_CRIU").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p).parent().map(Path::to_path_buf).unwrap_or_default(),
        None => PathBuf::from("/opt/vessel-criu/bin"),
    }
}

/// containerd's checkpoint through the runc shim and vessel-oci: `ctr task checkpoint`
/// dumps a running task (vessel-oci checkpoint with the shim's image and work paths)
/// and leaves it running; with `--exit` the task ends.
#[test]
fn containerd_task_checkpoint() {
    if !need("containerd_task_checkpoint", &["containerd", "ctr", "umoci", "skopeo"]) {
        return;
    }
    let c = Containerd::start("checkpoint");
    c.import_image();
    let id = format!("vessel-ctr-{}", random_hex(3));
    c.ctr_run(&["-d"], &id, &["sh", "-c", "while true; do sleep 0.1; done"])
        .ok();
    c.wait_status(&id, "RUNNING");
    let images = c.dir.join("ck");
    c.ctr(&["task", "checkpoint", "--image-path", &images.display().to_string(), &id])
        .ok();
    assert!(images.join("inventory.img").exists(), "CRIU images where ctr asked");
    c.wait_status(&id, "RUNNING");
    let images2 = c.dir.join("ck2");
    c.ctr(&[
        "task",
        "checkpoint",
        "--exit",
        "--image-path",
        &images2.display().to_string(),
        &id,
    ])
    .ok();
    assert!(images2.join("inventory.img").exists());
    c.wait_status(&id, "STOPPED");
}

/// containerd's `ctr containers checkpoint --task` (a checkpoint image in its content
/// store) and `ctr containers restore --live` bring a counter back through vessel-oci's
/// restore; the count goes on.
#[test]
fn containerd_container_checkpoint_and_restore() {
    if !need(
        "containerd_container_checkpoint_and_restore",
        &["containerd", "ctr", "umoci", "skopeo"],
    ) {
        return;
    }
    let c = Containerd::start("restore");
    c.import_image();
    let id = format!("vessel-ctr-{}", random_hex(3));
    c.ctr_run(
        &["-d"],
        &id,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done",
        ],
    )
    .ok();
    c.wait_status(&id, "RUNNING");
    let reference = format!("vessel.test/checkpoint/{id}:1");
    c.ctr(&["containers", "checkpoint", "--task", "--rw", &id, &reference])
        .ok();
    c.ctr(&["task", "kill", "-s", "SIGKILL", &id]).ok();
    c.wait_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).ok();
    c.ctr(&["containers", "delete", &id]).ok();
    // Restores the container and its task (vessel-oci restore), running.
    c.ctr(&["containers", "restore", "--live", "--rw", &id, &reference])
        .ok();
    c.wait_status(&id, "RUNNING");
    let count = |n: u32| -> u64 {
        let r = c.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            &c.fifo_dir(),
            "--exec-id",
            &format!("c{n}"),
            &id,
            "cat",
            "/count",
        ]);
        r.ok();
        let nums: Vec<u64> = r.stdout.lines().filter_map(|l| l.trim().parse().ok()).collect();
        for (k, v) in nums.iter().enumerate() {
            assert_eq!(*v, k as u64 + 1, "a number lost or repeated: {r}");
        }
        nums.len() as u64
    };
    let at = count(0);
    let start = Instant::now();
    let mut n = 1;
    while count(n) < at + 5 {
        assert!(start.elapsed() < Duration::from_secs(20), "the count continues");
        sleep(Duration::from_millis(100));
        n += 1;
    }
}
