//! Shared harness of vessel-oci's integration tests: drives the real binary.
//!
//! Every test gets a [`TestContainer`]: a unique container id (`vessel-<test>-<random>`),
//! a private temp dir holding the `--root` state dir and a busybox bundle (rootfs made
//! from the host's `/bin/busybox`, config.json from a template equal to `runc spec`'s
//! default), and a cgroupsPath `/vessel-test-<id>`. Dropping the guard force-deletes
//! the container, kills the pids the test recorded, unmounts anything under its temp
//! dir and removes its cgroup dirs, also when the test failed or panicked.
//!
//! The binary under test is `$VESSEL_OCI` when set (e.g. `/usr/sbin/runc`, to check
//! the tests themselves against the reference runtime), else the vessel-oci that cargo
//! built for this test run.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Loads into the calling process a seccomp filter that makes clone3 fail with ENOSYS on
/// x86_64 and allows everything else (classic BPF, seccomp(2)).
fn refuse_clone3_filter() -> std::io::Result<()> {
    const LD_ABS_W: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const SYS_CLONE3: u32 = 435;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let prog = [
        insn(LD_ABS_W, 0, 0, 4),              // arch
        insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64), // other arch: allow
        insn(LD_ABS_W, 0, 0, 0),              // syscall number
        insn(JEQ_K, 0, 1, SYS_CLONE3),        // not clone3: allow
        insn(RET_K, 0, 0, RET_ERRNO | libc::ENOSYS as u32),
        insn(RET_K, 0, 0, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `prog`, alive across the call; the kernel copies it.
    let rc = unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// How long one runtime command may take before the test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The runtime binary under test.
pub fn oci_bin() -> PathBuf {
    match std::env::var_os("VESSEL_OCI") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_vessel-oci")),
    }
}

/// True when the tests run against runc (`VESSEL_OCI=/usr/sbin/runc`): used only to
/// relax checks where runc's wording or version differs from what vessel promises.
pub fn is_runc() -> bool {
    oci_bin()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("runc"))
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A container id unique to this test run: `vessel-<test>-<random>`.
pub fn unique_id(test: &str) -> String {
    let test: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("vessel-{test}-{}", random_hex(4))
}

/// What a finished command left: its exit code (128+N when killed by signal N) and output.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Panics with the command's output unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) -> &Self {
        assert!(self.ok(), "{what}: expected success, got {self}");
        self
    }

    /// Panics unless the command failed (non-zero exit).
    #[track_caller]
    pub fn assert_fail(&self, what: &str) -> &Self {
        assert!(!self.ok(), "{what}: expected failure, got {self}");
        self
    }

    /// stdout and stderr together, for messages and `contains` checks.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Whether stderr mentions `needle`: as written, or inside one of its log
    /// messages once logrus's Go quoting (`msg="say \"x\""`) or the JSON log format is
    /// undone, so needles with quotes match both runc-style and plain stderr.
    pub fn mentions(&self, needle: &str) -> bool {
        self.stderr.contains(needle) || log_messages(&self.stderr, None).iter().any(|m| m.contains(needle))
    }

    /// stdout's lines, trimmed.
    pub fn lines(&self) -> Vec<String> {
        self.stdout.lines().map(|l| l.trim().to_string()).collect()
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Exit code as a shell reports it: the code, or 128+N for death by signal N.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// Runs `cmd` to completion with stdin from /dev/null (unless set) and stdout/stderr
/// into anonymous files (a detached container may keep them open; files never block).
/// Kills it and panics after `timeout`.
#[track_caller]
pub fn run_cmd(cmd: &mut Command, timeout: Duration) -> Out {
    let mut out_f = tempfile::tempfile().expect("tempfile");
    let mut err_f = tempfile::tempfile().expect("tempfile");
    cmd.stdout(out_f.try_clone().unwrap())
        .stderr(err_f.try_clone().unwrap());
    let desc = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let status = wait_timeout(&mut child, timeout);
    let read = |f: &mut fs::File| {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut b = Vec::new();
        f.read_to_end(&mut b).unwrap();
        s.push_str(&String::from_utf8_lossy(&b));
        s
    };
    let stdout = read(&mut out_f);
    let stderr = read(&mut err_f);
    match status {
        Some(st) => Out {
            code: exit_code(st),
            stdout,
            stderr,
        },
        None => panic!("timed out after {timeout:?}: {desc}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"),
    }
}

/// Waits for `child` up to `timeout`; kills and reaps it and returns None on timeout.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(20));
    }
}

/// The test process's own namespace link, e.g. `net:[4026531840]`.
pub fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// True while process `pid` exists (and is not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Lines of the test process's mountinfo whose mount point or root names `needle`.
pub fn host_mounts_naming(needle: &Path) -> Vec<String> {
    let needle = needle.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| unescape_mountinfo(l).contains(needle.as_ref()))
        .map(str::to_string)
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Mount points in the test process's mount namespace at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// Every cgroup dir named by `cgroups_path` (relative to each hierarchy) that exists.
pub fn cgroup_dirs(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    if rel.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    let direct = base.join(rel);
    if direct.is_dir() && base.join("cgroup.controllers").exists() {
        found.push(direct); // unified v2 host
    }
    if let Ok(entries) = fs::read_dir(base) {
        for e in entries.flatten() {
            let p = e.path().join(rel);
            if p.is_dir() {
                found.push(p);
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// Kills every process in cgroup dir `dir` and its children, then removes them, deepest first.
pub fn remove_cgroup_tree(dir: &Path) {
    let mut dirs = Vec::new();
    collect_dirs(dir, &mut dirs);
    dirs.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for d in &dirs {
        for _ in 0..100 {
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
            for pid in &pids {
                // SAFETY: kill(2) with a pid read from this test's own cgroup.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            if fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            // A frozen cgroup (v1 freezer) keeps its processes from dying.
            let _ = fs::write(d.join("freezer.state"), "THAWED");
            sleep(Duration::from_millis(20));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Makes a busybox rootfs in `rootfs`: /bin/busybox and a symlink per applet, the usual
/// top-level dirs, /etc/passwd and /etc/group with root, a uid 1000 user and nobody.
pub fn make_busybox_rootfs(rootfs: &Path) {
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "proc",
        "sys",
        "dev",
        "etc",
        "tmp",
        "root",
        "home/user",
        "var",
        "run",
        "mnt",
    ] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: install busybox-static (scripts/setup does)"
    );
    fs::copy(busybox, rootfs.join("bin/busybox")).expect("copy /bin/busybox");
    let list = Command::new(busybox).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" {
            continue;
        }
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         user:x:1000:1000:user:/home/user:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n").unwrap();
}

/// config.json as `runc spec` writes it, but with `terminal: false` (tests have no tty)
/// and `args` = `["true"]`.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["true"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "runc",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// One test's container: id, temp dir (state root + bundle), config, and the cleanup
/// guard. Cleanup runs in Drop, so it also runs when the test panics.
pub struct TestContainer {
    pub id: String,
    /// The temp dir holding everything of this test (mode 0755 so a user-namespaced
    /// container can reach its rootfs).
    pub dir: PathBuf,
    /// `--root` of the runtime.
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub spec: Value,
    /// The cgroupsPath written into the config (`/vessel-test-<id>`).
    pub cgroups_path: String,
    /// Further container ids in the same --root to force-delete on drop.
    extra_ids: RefCell<Vec<String>>,
    /// Pids to SIGKILL on drop (detached exec processes, helpers).
    pids: RefCell<Vec<i32>>,
    /// Extra cgroup paths (other containers) to remove on drop.
    extra_cgroups: RefCell<Vec<String>>,
    /// Run the runtime under a filter that refuses clone3 ([`Self::refuse_clone3`]).
    no_clone3: Cell<bool>,
    _tmp: tempfile::TempDir,
}

impl TestContainer {
    /// A container with a fresh busybox bundle and runc's default config (terminal off).
    pub fn new(test: &str) -> Self {
        let id = unique_id(test);
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{id}."))
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.join("state");
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        fs::create_dir_all(&rootfs).unwrap();
        make_busybox_rootfs(&rootfs);
        let cgroups_path = format!("/vessel-test-{id}");
        let mut spec = default_spec();
        spec["linux"]["cgroupsPath"] = json!(cgroups_path);
        let c = TestContainer {
            id,
            dir,
            root,
            bundle,
            rootfs,
            spec,
            cgroups_path,
            extra_ids: RefCell::new(Vec::new()),
            pids: RefCell::new(Vec::new()),
            extra_cgroups: RefCell::new(Vec::new()),
            no_clone3: Cell::new(false),
            _tmp: tmp,
        };
        c.write_spec();
        c
    }

    // ---- config.json ------------------------------------------------------------

    /// Writes `self.spec` to bundle/config.json.
    pub fn write_spec(&self) {
        write_json(&self.bundle.join("config.json"), &self.spec);
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.spec["process"]["args"] = json!(args);
        self
    }

    /// `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn env(&mut self, kv: &str) -> &mut Self {
        self.spec["process"]["env"].as_array_mut().unwrap().push(json!(kv));
        self
    }

    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.spec["process"]["cwd"] = json!(cwd);
        self
    }

    pub fn user(&mut self, uid: u32, gid: u32, additional: &[u32]) -> &mut Self {
        self.spec["process"]["user"] = json!({"uid": uid, "gid": gid});
        if !additional.is_empty() {
            self.spec["process"]["user"]["additionalGids"] = json!(additional);
        }
        self
    }

    pub fn readonly(&mut self, ro: bool) -> &mut Self {
        self.spec["root"]["readonly"] = json!(ro);
        self
    }

    pub fn hostname(&mut self, h: &str) -> &mut Self {
        self.spec["hostname"] = json!(h);
        self
    }

    /// Adds namespace `kind` (replacing one of that kind), joined by `path` if given.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let mut ns = json!({"type": kind});
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        self.spec["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
        self
    }

    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        self.spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != kind);
        self
    }

    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        self.spec["mounts"].as_array_mut().unwrap().push(mount);
        self
    }

    /// A user namespace mapping container 0..size to host `host_id..`, for uid and gid.
    pub fn id_maps(&mut self, host_id: u32, size: u32) -> &mut Self {
        let map = json!([{"containerID": 0, "hostID": host_id, "size": size}]);
        self.spec["linux"]["uidMappings"] = map.clone();
        self.spec["linux"]["gidMappings"] = map;
        self.namespace("user", None)
    }

    pub fn cgroups_path(&mut self, p: &str) -> &mut Self {
        self.cgroups_path = p.to_string();
        self.spec["linux"]["cgroupsPath"] = json!(p);
        self
    }

    /// Replaces the rlimits with one `(type, soft, hard)` list.
    pub fn rlimits(&mut self, limits: &[(&str, u64, u64)]) -> &mut Self {
        self.spec["process"]["rlimits"] = limits
            .iter()
            .map(|(t, soft, hard)| json!({"type": t, "soft": soft, "hard": hard}))
            .collect();
        self
    }

    /// Sets the capability sets; `None` removes a set.
    pub fn caps(
        &mut self,
        bounding: &[&str],
        effective: &[&str],
        permitted: &[&str],
        inheritable: &[&str],
        ambient: &[&str],
    ) -> &mut Self {
        self.spec["process"]["capabilities"] = json!({
            "bounding": bounding, "effective": effective, "permitted": permitted,
            "inheritable": inheritable, "ambient": ambient,
        });
        self
    }

    pub fn masked_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.spec["linux"]["maskedPaths"] = json!(paths);
        self
    }

    pub fn readonly_paths(&mut self, paths: &[&str]) -> &mut Self {
        self.spec["linux"]["readonlyPaths"] = json!(paths);
        self
    }

    // ---- runtime commands -------------------------------------------------------

    /// `vessel-oci --root ROOT` with stdin from /dev/null, ready for more args.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(oci_bin());
        c.arg("--root").arg(&self.root).stdin(Stdio::null());
        if self.no_clone3.get() {
            // SAFETY: the hook only makes one syscall with data prepared before the fork.
            unsafe { c.pre_exec(refuse_clone3_filter) };
        }
        c
    }

    /// From now on every runtime command of this container runs under a seccomp filter
    /// that refuses clone3 with ENOSYS, as docker's default profile does (x86_64).
    pub fn refuse_clone3(&self) {
        self.no_clone3.set(true);
    }

    /// Runs `vessel-oci --root ROOT ARGS...` to completion.
    #[track_caller]
    pub fn oci<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        run_cmd(self.cmd().args(args), TIMEOUT)
    }

    /// Writes the config and runs the container in the foreground (`run --bundle B ID`):
    /// the container's exit code and output.
    #[track_caller]
    pub fn run(&self) -> Out {
        self.write_spec();
        self.oci(&[
            OsStr::new("run"),
            OsStr::new("--bundle"),
            self.bundle.as_os_str(),
            OsStr::new(&self.id),
        ])
    }

    /// Writes the config and creates the container. The container's stdout and stderr
    /// go to files in the temp dir (see [`Self::container_output`]).
    #[track_caller]
    pub fn create(&self) -> Out {
        self.create_with(&[])
    }

    /// `create` with extra flags (before the id).
    #[track_caller]
    pub fn create_with(&self, flags: &[&str]) -> Out {
        self.write_spec();
        self.create_id(&self.id, &self.bundle, flags)
    }

    /// Creates container `id` from `bundle` in this test's --root; the container's
    /// stdio go to `<dir>/<id>.out` / `.err`. The id is cleaned up on drop.
    #[track_caller]
    pub fn create_id(&self, id: &str, bundle: &Path, flags: &[&str]) -> Out {
        if id != self.id {
            self.extra_ids.borrow_mut().push(id.to_string());
        }
        let out_f = fs::File::create(self.dir.join(format!("{id}.out"))).unwrap();
        let err_f = fs::File::create(self.dir.join(format!("{id}.err"))).unwrap();
        let mut cmd = self.cmd();
        cmd.arg("create").arg("--bundle").arg(bundle).args(flags).arg(id);
        cmd.stdout(out_f).stderr(err_f);
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().expect("spawn create");
        let st = wait_timeout(&mut child, TIMEOUT).unwrap_or_else(|| panic!("timed out: {desc}"));
        let out = Out {
            code: exit_code(st),
            stdout: fs::read_to_string(self.dir.join(format!("{id}.out"))).unwrap_or_default(),
            stderr: fs::read_to_string(self.dir.join(format!("{id}.err"))).unwrap_or_default(),
        };
        if let Some(pid) = self.state_of(id).and_then(|s| s["pid"].as_i64()) {
            if pid > 0 {
                self.record_pid(pid as i32);
            }
        }
        out
    }

    /// What the container (created by [`Self::create`]) wrote to stdout so far.
    pub fn container_output(&self) -> String {
        fs::read_to_string(self.dir.join(format!("{}.out", self.id))).unwrap_or_default()
    }

    /// What the container wrote to stderr so far.
    pub fn container_stderr(&self) -> String {
        fs::read_to_string(self.dir.join(format!("{}.err", self.id))).unwrap_or_default()
    }

    #[track_caller]
    pub fn start(&self) -> Out {
        self.oci(&["start", &self.id])
    }

    /// `state ID` parsed, or None when the command fails.
    pub fn state_of(&self, id: &str) -> Option<Value> {
        let out = self.oci(&["state", id]);
        if !out.ok() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// `state` of this test's container; panics when it fails.
    #[track_caller]
    pub fn state(&self) -> Value {
        let out = self.oci(&["state", &self.id]);
        out.assert_ok("state");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("state output is not JSON ({e}): {out}"))
    }

    /// The `status` field of `state`.
    #[track_caller]
    pub fn status(&self) -> String {
        self.state()["status"].as_str().unwrap_or_default().to_string()
    }

    /// The container's init pid from `state`.
    #[track_caller]
    pub fn pid(&self) -> i32 {
        self.state()["pid"].as_i64().expect("state has a pid") as i32
    }

    /// Waits until `state` reports `status`; panics after `timeout`.
    #[track_caller]
    pub fn wait_status(&self, status: &str, timeout: Duration) {
        let mut last = Value::Null;
        let ok = wait_until(timeout, || {
            last = self.state_of(&self.id).unwrap_or(Value::Null);
            last["status"] == status
        });
        assert!(ok, "container never reached {status:?}; last state: {last}");
    }

    #[track_caller]
    pub fn kill(&self, signal: &str) -> Out {
        self.oci(&["kill", &self.id, signal])
    }

    #[track_caller]
    pub fn delete(&self) -> Out {
        self.oci(&["delete", &self.id])
    }

    /// `exec [FLAGS...] ID ARGS...` with stdin from /dev/null.
    #[track_caller]
    pub fn exec(&self, flags: &[&str], args: &[&str]) -> Out {
        let mut cmd = self.cmd();
        cmd.arg("exec").args(flags).arg(&self.id).args(args);
        run_cmd(&mut cmd, TIMEOUT)
    }

    /// Creates and starts a container running `sleep 1000` (its stdout to a file).
    #[track_caller]
    pub fn start_sleeper(&mut self) {
        self.args(&["sleep", "1000"]);
        self.create().assert_ok("create");
        self.start().assert_ok("start");
        self.wait_status("running", Duration::from_secs(10));
    }

    // ---- cleanup bookkeeping ----------------------------------------------------

    /// Kill `pid` with SIGKILL when the guard drops.
    pub fn record_pid(&self, pid: i32) {
        self.pids.borrow_mut().push(pid);
    }

    /// Force-delete container `id` (in this --root) when the guard drops.
    pub fn record_id(&self, id: &str) {
        self.extra_ids.borrow_mut().push(id.to_string());
    }

    /// Remove the cgroup dirs of `cgroups_path` when the guard drops.
    pub fn record_cgroup(&self, cgroups_path: &str) {
        self.extra_cgroups.borrow_mut().push(cgroups_path.to_string());
    }

    /// A second bundle (own rootfs and config) in this test's temp dir; its cgroup is
    /// recorded for cleanup.
    pub fn extra_bundle(&self, name: &str, spec: &Value) -> PathBuf {
        let b = self.dir.join(name);
        fs::create_dir_all(b.join("rootfs")).unwrap();
        make_busybox_rootfs(&b.join("rootfs"));
        write_json(&b.join("config.json"), spec);
        if let Some(cg) = spec["linux"]["cgroupsPath"].as_str() {
            self.record_cgroup(cg);
        }
        b
    }

    /// What a test checks after a failed command: no state dir of this id under --root,
    /// no mount naming the temp dir, no cgroup dir of cgroupsPath.
    #[track_caller]
    pub fn assert_no_leftovers(&self, what: &str) {
        let state_dir = self.root.join(&self.id);
        assert!(
            !state_dir.exists(),
            "{what}: state dir {} left behind",
            state_dir.display()
        );
        if let Ok(rd) = fs::read_dir(&self.root) {
            let left: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
            assert!(
                left.is_empty(),
                "{what}: --root {} not empty: {left:?}",
                self.root.display()
            );
        }
        let mounts = host_mounts_naming(&self.dir);
        assert!(mounts.is_empty(), "{what}: mounts left behind: {mounts:#?}");
        let cgs = cgroup_dirs(&self.cgroups_path);
        assert!(cgs.is_empty(), "{what}: cgroups left behind: {cgs:?}");
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let mut ids = vec![self.id.clone()];
        ids.extend(self.extra_ids.borrow().iter().cloned());
        for id in &ids {
            // Best effort, bounded: the runtime under test may be the thing that hangs.
            if let Some(pid) = self
                .state_of_quiet(id)
                .and_then(|s| s["pid"].as_i64())
                .filter(|p| *p > 0)
            {
                self.pids.borrow_mut().push(pid as i32);
            }
            let mut cmd = self.cmd();
            cmd.args(["delete", "--force", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = cmd.spawn() {
                let _ = wait_timeout(&mut child, Duration::from_secs(20));
            }
        }
        for &pid in self.pids.borrow().iter() {
            if pid > 1 && pid_alive(pid) {
                // SAFETY: kill(2) of a pid this test recorded (its container or helper).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for m in mounts_under(&self.dir) {
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: umount2 with a valid C string; MNT_DETACH never blocks.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let mut cgs = vec![self.cgroups_path.clone()];
        cgs.extend(self.extra_cgroups.borrow().iter().cloned());
        for cg in cgs {
            for d in cgroup_dirs(&cg) {
                remove_cgroup_tree(&d);
            }
        }
        // The TempDir field removes the files (the rootfs may be chowned: root can).
    }
}

impl TestContainer {
    fn state_of_quiet(&self, id: &str) -> Option<Value> {
        let mut cmd = self.cmd();
        cmd.args(["state", id]).stderr(Stdio::null());
        let mut child = cmd.stdout(Stdio::piped()).spawn().ok()?;
        let mut s = String::new();
        child.stdout.take()?.read_to_string(&mut s).ok()?;
        wait_timeout(&mut child, Duration::from_secs(10))?;
        serde_json::from_str(&s).ok()
    }
}

pub fn write_json(path: &Path, v: &Value) {
    fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A helper child process killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with extra fds: `fds[i]` (an open file) becomes fd `target[i]` in the
/// child, without close-on-exec, as a leaky caller would pass them.
pub fn with_inherited_fds(cmd: &mut Command, fds: Vec<(fs::File, i32)>) {
    use std::os::fd::AsRawFd;
    let pairs: Vec<(i32, i32)> = fds.iter().map(|(f, t)| (f.as_raw_fd(), *t)).collect();
    // Keep the files open until spawn: leak them into the closure.
    let keep = fds;
    // SAFETY: only async-signal-safe calls (dup, dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _ = &keep;
            // First move every source above the targets so dup2 cannot clobber one.
            let mut tmp = Vec::new();
            for (src, _) in &pairs {
                let d = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 100);
                if d < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                tmp.push(d);
            }
            for (i, (_, target)) in pairs.iter().enumerate() {
                if libc::dup2(tmp[i], *target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// sha256 of a file, via coreutils' sha256sum.
pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// True on a unified cgroup v2 host.
pub fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A cgroup file of the container: `/sys/fs/cgroup/<controller>/<path>/<file>` on v1
/// (`unified` for a hybrid host's cgroup2), `/sys/fs/cgroup/<path>/<file>` on v2.
pub fn cg_file(c: &TestContainer, controller: &str, file: &str) -> PathBuf {
    let rel = c.cgroups_path.trim_start_matches('/');
    if is_v2() {
        Path::new("/sys/fs/cgroup").join(rel).join(file)
    } else {
        Path::new("/sys/fs/cgroup").join(controller).join(rel).join(file)
    }
}

#[track_caller]
pub fn read_cg(c: &TestContainer, controller: &str, file: &str) -> String {
    let p = cg_file(c, controller, file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The error messages in a runtime's stderr, as containerd and podman read them: the
/// `msg` of each `time="..." level=error msg=...` line (logrus's text format, runc's
/// default) or of each JSON line whose `level` is `error` (`--log-format json`).
pub fn error_messages(stderr: &str) -> Vec<String> {
    log_messages(stderr, Some("error"))
}

/// The `msg` of each logrus text or JSON line of stderr, of `level` only when given.
fn log_messages(stderr: &str, level: Option<&str>) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                let wanted = level.is_none_or(|l| v["level"] == l);
                return wanted.then(|| v["msg"].as_str().unwrap_or("").to_string());
            }
            let rest = line.strip_prefix("time=\"")?;
            let (_, rest) = rest.split_once("\" level=")?;
            let (found, rest) = rest.split_once(" msg=")?;
            level.is_none_or(|l| l == found).then(|| unquote_go(rest))
        })
        .collect()
}

/// Undoes Go's strconv.Quote for the escapes logrus writes (a bare value stays as is).
fn unquote_go(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_string();
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

// ---- crafted bundles (escape tests) ---------------------------------------------

impl TestContainer {
    /// Drops the config's mounts whose destination is one of `dests` (e.g. the /dev
    /// tmpfs, so that the container's /dev is the rootfs's own, as in a crafted bundle).
    pub fn remove_mounts(&mut self, dests: &[&str]) -> &mut Self {
        self.spec["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| !dests.iter().any(|d| m["destination"] == *d));
        self
    }

    /// Writes a canary file at `rel` under the rootfs with `content` (mode 0644) and
    /// returns its host path.
    pub fn canary(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.rootfs.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// Replaces `rel` in the rootfs (file, empty dir or symlink) by a symlink to `target`.
    pub fn rootfs_symlink(&self, rel: &str, target: &str) {
        let p = self.rootfs.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        if let Ok(m) = fs::symlink_metadata(&p) {
            if m.is_dir() {
                fs::remove_dir(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        std::os::unix::fs::symlink(target, &p).unwrap();
    }

    /// `vessel-oci --root ROOT ARGS...` run by `unshare --mount --propagation private`:
    /// the runtime, and a container that shares its mount namespace, mount nothing in
    /// the host's.
    #[track_caller]
    pub fn oci_in_private_mounts<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private"])
            .arg(oci_bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null());
        run_cmd(&mut cmd, TIMEOUT)
    }
}

/// True when the runtime under test is vessel-oci (not `VESSEL_OCI` naming runc or
/// crun): checks of vessel's own wording are made only then.
pub fn is_vessel() -> bool {
    oci_bin()
        .file_name()
        .is_some_and(|n| n.to_string_lossy().contains("vessel"))
}
