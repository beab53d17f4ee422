//! `vessel run` and the container commands end to end, with the real binary, real
//! namespaces, overlay mounts and cgroups: images made by umoci (imported from an OCI
//! layout, or pushed by skopeo to a real registry on 127.0.0.1) and the built-in `host`
//! image. Each test has its own `--root`; a guard removes every container it made.

mod run_vessel;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use run_vessel::{sh, vessel};

fn have(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| !Path::new(&format!("/usr/bin/{t}")).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (scripts/setup installs them) !!!!!\n");
    }
    missing.is_empty()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A test's vessel instance: a temp root; on drop every container is removed and
/// nothing of it may be left mounted.
struct Instance {
    dir: tempfile::TempDir,
}

impl Instance {
    fn new() -> Instance {
        Instance {
            dir: tempfile::Builder::new().prefix("vessel-cli-").tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn v(&self, args: &[&str]) -> Output {
        vessel(&self.root(), args)
    }

    /// `vessel ARGS` that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.v(args);
        assert!(o.status.success(), "vessel {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// `vessel ARGS` with `input` on stdin.
    fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Imports a busybox image made by umoci as `localhost/bb:1`.
    fn busybox(&self) -> &'static str {
        sh(
            "umoci init --layout img && umoci new --image img:1 \
             && umoci config --image img:1 --config.cmd sh --config.env PATH=/bin \
             && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin b/rootfs/etc \
             && cp /usr/bin/busybox b/rootfs/bin/ && for t in sh cat echo sleep id ls stat touch ps hostname true stty kill wc; do ln -s busybox b/rootfs/bin/$t; done \
             && printf 'root:x:0:0:root:/root:/bin/sh\\nwww:x:33:33:www:/var/www:/bin/sh\\n' > b/rootfs/etc/passwd \
             && printf 'root:x:0:\\nwww:x:33:\\nextra:x:500:www\\n' > b/rootfs/etc/group \
             && printf 'echo hi\\n' > b/rootfs/bin/noexec && chmod 644 b/rootfs/bin/noexec \
             && umoci repack --image img:1 b && rm -rf b",
            self.dir.path(),
        );
        let src = format!("oci:{}:1", self.dir.path().join("img").display());
        self.ok(&["image", "import", &src, "localhost/bb:1"]);
        "localhost/bb:1"
    }

    fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(String::from)
            .collect()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let ids = stdout(&self.v(&["ps", "-aq"]));
        for id in ids.split_whitespace() {
            self.v(&["rm", "-f", id]);
        }
        for l in self.mounts_under_root() {
            if let Some(p) = l.split(' ').nth(4) {
                let _ = Command::new("umount").args(["-l", p]).status();
            }
        }
    }
}

fn cgroup_exists(id: &str) -> bool {
    [
        "/sys/fs/cgroup/memory/vessel",
        "/sys/fs/cgroup/pids/vessel",
        "/sys/fs/cgroup/vessel",
    ]
    .iter()
    .any(|d| Path::new(d).join(id).exists())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_from_a_registry_image_pulls_and_passes_exit_codes_and_output() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox", "catatonit"]) {
        return;
    }
    let i = Instance::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = i.dir.path().join("reg.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
            i.dir.path().display()
        ),
    )
    .unwrap();
    struct Reg(std::process::Child);
    impl Drop for Reg {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reg = Reg(Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    wait_for("the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    i.busybox();
    let name = format!("127.0.0.1:{port}/e2e/bb:1");
    sh(
        &format!("skopeo copy -q --dest-tls-verify=false oci:img:1 docker://{name}"),
        i.dir.path(),
    );
    let o = i.v(&["run", "--rm", &name, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"));
    assert!(stdout(&i.v(&["images"])).contains("e2e/bb"));
    // Killed by a signal: 128+N (under --init's catatonit: pid 1 ignores SIGKILL from
    // inside its own pid namespace).
    let o = i.v(&["run", "--rm", "--init", &name, "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137));
    assert_eq!(stdout(&i.v(&["ps", "-aq"])), "");
}

#[test]
fn host_image_is_a_sparse_root_sharing_the_hosts_usr() {
    let i = Instance::new();
    let o = i.v(&[
        "run",
        "--rm",
        "host",
        "--",
        "sh",
        "-c",
        "hostname; id -u; ps -e | wc -l; cat /etc/os-release | head -1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].len(), 12, "hostname is the short id: {out}");
    assert_eq!(lines[1], "0");
    let procs: usize = lines[2].trim().parse().unwrap();
    assert!(procs < 6, "only the container's own processes: {out}");
    // /usr is the host's, read-only; writes elsewhere are private.
    let id = i.ok(&["run", "-d", "host", "sleep", "1000"]).trim().to_string();
    let marker = format!("/usr/local/share/vessel-test-{}", &id[..12]);
    fs::write(&marker, "fresh\n").unwrap();
    let seen = i.v(&["exec", &id, "cat", &marker]);
    fs::remove_file(&marker).unwrap();
    assert_eq!(stdout(&seen), "fresh\n", "{}", stderr(&seen));
    let o = i.v(&[
        "exec",
        &id,
        "sh",
        "-c",
        "touch /usr/x 2>/dev/null && echo writable || echo ro",
    ]);
    assert_eq!(stdout(&o), "ro\n");
    let o = i.v(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo private > /etc/vessel-test && cat /etc/vessel-test && touch /root/a /var/b /tmp/c /home/d && echo ok",
    ]);
    assert_eq!(stdout(&o), "private\nok\n", "{}", stderr(&o));
    assert!(!Path::new("/etc/vessel-test").exists());
    i.ok(&["rm", "-f", &id]);
    assert!(i.mounts_under_root().is_empty());
}

#[test]
fn stdin_pipes_and_a_tty_is_a_real_pty() {
    if !have(&["umoci", "busybox", "script"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let o = i.with_stdin(&["run", "--rm", "-i", img, "cat"], "line one\nline two\n");
    assert_eq!(stdout(&o), "line one\nline two\n", "{}", stderr(&o));
    // Without -i the container's stdin is empty.
    let o = i.with_stdin(&["run", "--rm", img, "cat"], "ignored\n");
    assert_eq!(stdout(&o), "");
    // -t under script(1), which gives vessel a real terminal of 33x101.
    let cmd = format!(
        "stty rows 33 cols 101; {} --root {} run --rm -t {img} sh -c 'test -t 0 && echo TTY; stty size; exit 5'",
        env!("CARGO_BIN_EXE_vessel"),
        i.root().display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(out.contains("TTY"), "{out}");
    assert!(out.contains("33 101"), "{out}");
    assert_eq!(o.status.code(), Some(5), "{out}");
}

#[test]
fn detached_run_logs_follow_stop_and_exec() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let script = "echo started; trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done";
    let id = i
        .ok(&["run", "-d", "--name", "web", img, "sh", "-c", script])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let follower = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--root")
        .arg(i.root())
        .args(["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the first log line", || i.ok(&["logs", "web"]).contains("started"));
    assert!(i.ok(&["ps"]).contains("web"));
    let ps: serde_json::Value = serde_json::from_str(&i.ok(&["ps", "--format", "json"])).unwrap();
    assert_eq!(ps[0]["State"], "running");
    // exec: output, exit code, user, env, workdir.
    let o = i.v(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/etc",
        "-u",
        "www",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u); exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(stdout(&o), "1 /etc 33\n");
    let top = i.ok(&["top", "web"]);
    assert!(top.contains("sleep") || top.contains("sh"), "{top}");
    let o = i.v(&["exec", "web", "nothere"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    i.ok(&["stop", "-t", "5", &id[..8]]);
    let out = follower.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\nbye\n");
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", "web"])).unwrap();
    assert_eq!(insp[0]["State"]["Status"], "exited");
    assert_eq!(insp[0]["State"]["ExitCode"], 0);
    assert_eq!(i.ok(&["logs", "--tail", "1", "web"]), "bye\n");
    assert!(i.ok(&["logs", "-t", "web"]).lines().all(|l| l.contains("Z ")));
    // Restart keeps the log; wait prints the exit code.
    i.ok(&["start", "web"]);
    wait_for("the restart", || i.ok(&["logs", "web"]).matches("started").count() == 2);
    i.ok(&["kill", "-s", "TERM", "web"]);
    assert_eq!(i.ok(&["wait", "web"]).trim(), "0");
    i.ok(&["rename", "web", "web2"]);
    i.ok(&["rm", "web2"]);
    assert!(i.mounts_under_root().is_empty());
    assert!(!cgroup_exists(&id));
}

#[test]
fn update_memory_of_a_running_container_and_stats() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let id = i
        .ok(&[
            "run",
            "-d",
            "--memory",
            "64m",
            "--pids-limit",
            "50",
            img,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let file = if v2 {
        "/sys/fs/cgroup/memory.max"
    } else {
        "/sys/fs/cgroup/memory/memory.limit_in_bytes"
    };
    let read = || i.ok(&["exec", &id, "cat", file]).trim().to_string();
    assert_eq!(read(), (64u64 << 20).to_string());
    i.ok(&["update", "--memory", "256m", &id]);
    assert_eq!(read(), (256u64 << 20).to_string());
    i.ok(&["update", "--memory", "32m", &id]);
    assert_eq!(read(), (32u64 << 20).to_string());
    let s: serde_json::Value = serde_json::from_str(&i.ok(&["stats", "--no-stream", "--format", "json", &id])).unwrap();
    assert_eq!(s[0]["mem_limit"], 32u64 << 20);
    assert!(s[0]["pids"].as_u64().unwrap() >= 1);
    i.ok(&["pause", &id]);
    assert!(i.ok(&["ps"]).contains("Paused"));
    i.ok(&["unpause", &id]);
    i.ok(&["rm", "-f", &id]);
}

#[test]
fn two_containers_share_lower_layers_but_not_writes() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let a = i.ok(&["run", "-d", img, "sleep", "1000"]).trim().to_string();
    let b = i.ok(&["run", "-d", img, "sleep", "1000"]).trim().to_string();
    let ino = |c: &str| i.ok(&["exec", c, "stat", "-c", "%i", "/bin/busybox"]);
    assert_eq!(ino(&a), ino(&b));
    i.ok(&["exec", &a, "sh", "-c", "echo mine > /etc/only-a"]);
    assert!(!i.v(&["exec", &b, "cat", "/etc/only-a"]).status.success());
    assert_eq!(i.ok(&["exec", &a, "cat", "/etc/only-a"]), "mine\n");
    i.ok(&["rm", "-f", &a, &b]);
}

#[test]
fn rm_leaves_nothing_and_bad_input_is_one_clear_line() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["run", "--rm", "--name", "gone", img, "true"]);
    assert_eq!(i.ok(&["ps", "-aq"]), "");
    assert!(i.mounts_under_root().is_empty());
    let left = |d: &str| fs::read_dir(i.root().join(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!(left("containers"), 0);
    assert_eq!(left("snapshots/active"), 0);
    let cases: [(&[&str], i32, &str); 6] = [
        (&["run", "--rm", "localhost/nothere:1", "true"], 125, "nothere"),
        (&["run", "--rm", "--memory", "12q", img, "true"], 2, "12q"),
        (&["run", "--rm", "-v", "relative:/x", img, "true"], 2, "relative"),
        (
            &["run", "--rm", "-v", "/nonexistent-vessel-path:/x", img, "true"],
            2,
            "nonexistent",
        ),
        (&["run", "--rm", img, "nothere"], 127, "nothere"),
        (&["run", "--rm", img, "/bin/noexec"], 126, "noexec"),
    ];
    for (args, code, word) in cases {
        let o = i.v(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(word), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).trim().lines().count() <= 3, "{args:?}: {}", stderr(&o));
        assert_eq!(i.ok(&["ps", "-aq"]), "", "{args:?} left a container");
    }
    i.ok(&["create", "--name", "taken", img, "true"]);
    let o = i.v(&["create", "--name", "taken", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("already in use"));
    assert_eq!(i.ok(&["ps", "-aq"]).lines().count(), 1);
    assert_eq!(left("containers"), 1);
    let o = i.v(&["rm", "nosuch"]);
    assert!(stderr(&o).contains("nosuch"));
}

#[test]
fn killed_monitor_is_seen_by_ps_and_repaired_by_system_check() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let id = i.ok(&["run", "-d", img, "sleep", "1000"]).trim().to_string();
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", &id])).unwrap();
    let monitor = insp[0]["State"]["MonitorPid"].as_i64().unwrap() as i32;
    let pid = insp[0]["State"]["Pid"].as_i64().unwrap() as i32;
    assert!(monitor > 0 && pid > 0);
    // SAFETY: kill takes plain integers; the monitor is a process this test started.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    wait_for("the monitor's end", || {
        fs::read_to_string(format!("/proc/{monitor}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert!(i.ok(&["ps"]).contains("monitor gone"));
    let o = i.v(&["system", "check", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("monitor is gone"));
    let o = i.ok(&["system", "check"]);
    assert!(o.contains("repaired"), "{o}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    );
    assert!(i.ok(&["ps", "-a"]).contains("Exited (-1)"));
    assert_eq!(i.ok(&["system", "check"]).trim(), "no problems found");
    assert!(i.mounts_under_root().is_empty());
    assert!(!cgroup_exists(&id));
    let pruned = i.ok(&["system", "prune", "-f"]);
    assert!(pruned.contains("Deleted containers: 1"), "{pruned}");
    assert_eq!(i.ok(&["ps", "-aq"]), "");
}

#[test]
fn a_hundred_containers_leave_nothing_behind() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // The container's init holds only its stdio; its monitor a handful of fds.
    let keeper = i.ok(&["run", "-d", img, "sleep", "1000"]).trim().to_string();
    assert_eq!(i.ok(&["exec", &keeper, "ls", "/proc/1/fd"]), "0\n1\n2\n");
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", &keeper])).unwrap();
    let monitor = insp[0]["State"]["MonitorPid"].as_i64().unwrap();
    let monitor_fds = || fs::read_dir(format!("/proc/{monitor}/fd")).unwrap().count();
    let before = monitor_fds();
    assert!(before <= 12, "monitor fds: {before}");
    let mut ids = Vec::new();
    for n in 0..100 {
        let name = format!("c{n}");
        ids.push(
            i.ok(&["create", "--name", &name, img, "sleep", "1000"])
                .trim()
                .to_string(),
        );
        i.ok(&["start", &name]);
        i.ok(&["stop", "-t", "0", &name]);
        i.ok(&["rm", &name]);
    }
    assert_eq!(monitor_fds(), before);
    i.ok(&["rm", "-f", &keeper]);
    assert_eq!(i.ok(&["ps", "-aq"]), "");
    assert!(i.mounts_under_root().is_empty());
    assert!(ids.iter().all(|id| !cgroup_exists(id)));
    let monitors = Command::new("pgrep")
        .args(["-f", &format!("{} .*__monitor", i.root().display())])
        .output()
        .unwrap();
    assert!(monitors.stdout.is_empty(), "monitors left: {}", stdout(&monitors));
    let left = |d: &str| fs::read_dir(i.root().join(d)).map(|r| r.count()).unwrap_or(0);
    assert_eq!(
        left("containers") + left("snapshots/active") + left("run/oci") + left("run/monitors"),
        0
    );
}
