//! The test instance of `vessel` shared by the end-to-end test files: a temp `--root`,
//! its own cgroup parent, optionally a network namespace the test made (as the
//! "host"), and a guard that removes every container and mount it left.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::run_vessel::{cgroup_parent, sh, vessel_cmd};

pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| !Path::new(&format!("/usr/bin/{t}")).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (scripts/setup installs them) !!!!!\n");
    }
    missing.is_empty()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A test's vessel instance: a temp root; on drop every container is removed and
/// nothing of it may be left mounted.
pub struct Instance {
    pub dir: tempfile::TempDir,
    /// A network namespace (under /run/netns) every command runs in, when set.
    pub netns: Option<String>,
    /// `VESSEL_USERNS` for every command (`host`: the host's ids unless a command says
    /// otherwise), when set.
    pub userns: Option<&'static str>,
}

impl Instance {
    pub fn new() -> Instance {
        Instance {
            dir: tempfile::Builder::new().prefix("vessel-cli-").tempdir().unwrap(),
            netns: None,
            userns: None,
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `vessel --root ROOT` (inside the instance's network namespace when it has one).
    pub fn cmd(&self) -> Command {
        let mut base = vessel_cmd(&self.root());
        if let Some(u) = self.userns {
            base.env("VESSEL_USERNS", u);
        }
        let Some(ns) = &self.netns else { return base };
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}"))
            .arg(base.get_program())
            .args(base.get_args());
        for (k, v) in base.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        c
    }

    /// `vessel ARGS`, to completion, echoed to the test's stderr.
    pub fn v(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        eprintln!("vessel {args:?}: {}\n{}{}", out.status, stdout(&out), stderr(&out));
        out
    }

    /// `vessel ARGS` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.v(args);
        assert!(o.status.success(), "vessel {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// `vessel ARGS` with `input` on stdin.
    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd()
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
    pub fn busybox(&self) -> &'static str {
        sh(
            "umoci init --layout img && umoci new --image img:1 \
             && umoci config --image img:1 --config.cmd sh --config.env PATH=/bin --config.exposedports 80/tcp \
             && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin b/rootfs/etc \
             && cp /usr/bin/busybox b/rootfs/bin/ && for t in sh cat echo sleep id ls stat touch ps hostname true stty kill wc grep head ping wget httpd ip nc mkdir; do ln -s busybox b/rootfs/bin/$t; done \
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

    pub fn mounts_under_root(&self) -> Vec<String> {
        let root = self.root().to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&root))
            .map(String::from)
            .collect()
    }

    /// How many entries the directory `dir` of the root holds, leaving out the
    /// runtime's cache of compiled seccomp filters (run/oci/@seccomp).
    pub fn left(&self, dir: &str) -> usize {
        fs::read_dir(self.root().join(dir))
            .map(|r| r.flatten().filter(|e| e.file_name() != "@seccomp").count())
            .unwrap_or(0)
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
        // The instance's own cgroup parent, in every hierarchy (empty once its
        // containers are gone).
        for d in cgroup_dirs(&self.root()) {
            let _ = fs::remove_dir(d);
        }
    }
}

/// The instance's cgroup parent in each mounted hierarchy that has it.
pub fn cgroup_dirs(root: &Path) -> Vec<PathBuf> {
    let parent = cgroup_parent(root);
    let mut dirs = vec![PathBuf::from(format!("/sys/fs/cgroup{parent}"))];
    for e in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        dirs.push(e.path().join(parent.trim_start_matches('/')));
    }
    dirs.into_iter().filter(|d| d.is_dir()).collect()
}

/// Whether container `id` of the instance at `root` still has a cgroup anywhere.
pub fn cgroup_exists(root: &Path, id: &str) -> bool {
    cgroup_dirs(root).iter().any(|d| d.join(id).exists())
}

pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A network namespace made for one test (`ip netns add`), deleted on drop with
/// everything in it; an [`Instance`] with `netns` set runs vessel in it as its "host".
pub struct TestNetns(pub String);

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        let name = format!(
            "vessel-{tag}-{:08x}",
            std::process::id() ^ Instant::now().elapsed().subsec_nanos()
        );
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let _ = Command::new("ip")
            .args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])
            .status();
        TestNetns(name)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // vessel's host-wide network state of the namespace (vessel_net::host), keyed by
        // its inode: removed while the namespace still holds that inode.
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(format!("/run/netns/{}", self.0)) {
            let state = format!("/run/vessel-net/netns-{}", m.ino());
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_file(format!("{state}.lock"));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
