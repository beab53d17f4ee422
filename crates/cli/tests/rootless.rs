//! Rootless vessel and vessel-oci end to end: a user made by the test (`vessel-t-XXXX`,
//! with its own /etc/subuid and /etc/subgid range, removed afterwards even when a test
//! fails) runs them through `runuser`, inside a network namespace the test makes (a
//! veth pair inside it gives pasta a host interface with a route; the registry, the
//! published port and the client are all in there) and a private mount namespace where
//! a 0666 tun node of the test is bound over /dev/net/tun (these machines' node is
//! 0600; Debian's udev makes it 0666).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Whether every tool is installed (in /usr/bin or /usr/sbin).
fn have(tools: &[&str]) -> bool {
    tools
        .iter()
        .all(|t| ["/usr/bin", "/usr/sbin"].iter().any(|d| Path::new(d).join(t).exists()))
}

/// The uid and first subordinate id of the test user, and its name.
struct TestUser {
    name: String,
    uid: u32,
    sub: u32,
    home: PathBuf,
}

/// Removes `name`'s lines from a subid file.
fn drop_subid_lines(file: &str, name: &str) {
    if let Ok(text) = fs::read_to_string(file) {
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{name}:")))
            .map(|l| format!("{l}\n"))
            .collect();
        let tmp = format!("{file}.vessel-test-{name}");
        if fs::write(&tmp, kept).is_ok() {
            let _ = fs::rename(&tmp, file);
        }
    }
}

fn subid_start(file: &str, name: &str) -> Option<u32> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:"))?.split(':').next()?.parse().ok())
}

impl TestUser {
    fn new(tag: char) -> TestUser {
        let name = format!("vessel-t-{tag}{:04x}", std::process::id() & 0xffff);
        let st = Command::new("useradd")
            .args(["-m", "-s", "/bin/sh", &name])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        // useradd gives a range itself when login.defs has SUB_UID_COUNT (uidmap installed).
        for file in ["/etc/subuid", "/etc/subgid"] {
            if subid_start(file, &name).is_none() {
                let line = format!(
                    "{name}:{}:65536\n",
                    1_800_000_000u32 + (std::process::id() % 1000) * 131072 + u32::from(tag == 'b') * 65536
                );
                let mut text = fs::read_to_string(file).unwrap_or_default();
                text.push_str(&line);
                fs::write(file, text).unwrap();
            }
        }
        let uid = Command::new("id").args(["-u", &name]).output().unwrap();
        let uid: u32 = String::from_utf8_lossy(&uid.stdout).trim().parse().unwrap();
        let sub = subid_start("/etc/subuid", &name).unwrap();
        assert_eq!(
            Some(sub),
            subid_start("/etc/subgid", &name),
            "same start in subuid and subgid"
        );
        TestUser {
            home: PathBuf::from(format!("/home/{name}")),
            name,
            uid,
            sub,
        }
    }
}

impl TestUser {
    /// Pids of the user's processes.
    fn pids(&self) -> Vec<i32> {
        fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| fs::metadata(e.path()).is_ok_and(|m| m.uid() == self.uid))
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .collect()
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Every process of the user was started by this test (the session's pause
        // process included): end them by pid, and wait until they are gone, since
        // userdel refuses a user with processes.
        for _ in 0..250 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill with a pid and a signal number.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Mounts of the user's sessions die with their namespaces; a runroot in /tmp stays.
        let _ = fs::remove_dir_all(format!("/tmp/vessel-{}", self.uid));
        let _ = Command::new("userdel")
            .args(["-r", &self.name])
            .stderr(Stdio::null())
            .status();
        drop_subid_lines("/etc/subuid", &self.name);
        drop_subid_lines("/etc/subgid", &self.name);
    }
}

/// A network namespace of the test with loopback and a veth pair (both ends inside)
/// carrying an address and a default route, so pasta finds a host interface.
struct Netns(String);

impl Netns {
    fn new(tag: char) -> Netns {
        let name = format!("vessel-rl-{tag}{}", std::process::id());
        let ns = Netns(name.clone());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec!["-n", &name, "link", "add", "rl0", "type", "veth", "peer", "name", "rl1"],
            vec!["-n", &name, "addr", "add", "10.231.0.1/24", "dev", "rl0"],
            vec!["-n", &name, "link", "set", "rl0", "up"],
            vec!["-n", &name, "link", "set", "rl1", "up"],
            vec!["-n", &name, "route", "add", "default", "via", "10.231.0.254"],
        ] {
            assert!(
                Command::new("ip").args(&args).status().unwrap().success(),
                "ip {args:?}"
            );
        }
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Kills a child (by its pid) and reaps it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The user, its namespace and the test's files.
struct Setup {
    user: TestUser,
    ns: Netns,
    tmp: tempfile::TempDir,
}

impl Setup {
    /// None (the test is skipped with a message) without the tools it needs.
    fn new(tag: char, tools: &[&str]) -> Option<Setup> {
        let mut all = vec!["newuidmap", "newgidmap", "useradd", "runuser"];
        all.extend_from_slice(tools);
        if !have(&all) {
            eprintln!(
                "\n!!!!! SKIPPED: missing one of {all:?} (apt-get install uidmap passt; scripts/setup does) !!!!!\n"
            );
            return None;
        }
        let ns = Netns::new(tag);
        let user = TestUser::new(tag);
        let tmp = tempfile::Builder::new().prefix("vessel-rl").tempdir().unwrap();
        let p = tmp.path();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        // A tun node the user may open (the host's may be 0600).
        let tun = p.join("tun");
        let ok = Command::new("mknod")
            .args(["-m", "0666"])
            .arg(&tun)
            .args(["c", "10", "200"])
            .status()
            .unwrap();
        assert!(ok.success());
        let xdg = p.join("xdg");
        fs::create_dir(&xdg).unwrap();
        std::os::unix::fs::chown(&xdg, Some(user.uid), Some(user.uid)).unwrap();
        // The binaries must be reachable by the user.
        for b in [env!("CARGO_BIN_EXE_vessel"), env!("CARGO_BIN_EXE_vessel-monitor")] {
            let st = Command::new("runuser")
                .args(["-u", &user.name, "--", "test", "-x", b])
                .status()
                .unwrap();
            assert!(
                st.success(),
                "{b} is not executable by {}: make the target dir world-readable",
                user.name
            );
        }
        Some(Setup { user, ns, tmp })
    }

    /// `sh -c SCRIPT` as the user, in the test's network namespace and a private mount
    /// namespace with the test's tun node, with a clean environment (HOME, and
    /// XDG_RUNTIME_DIR when `xdg`).
    fn cmd(&self, script: &str, xdg: bool) -> Command {
        let tun = self.tmp.path().join("tun");
        let env_xdg = if xdg {
            format!("XDG_RUNTIME_DIR={}", self.tmp.path().join("xdg").display())
        } else {
            String::new()
        };
        let inner = format!(
            "mount --bind {} /dev/net/tun && exec runuser -u {} -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME={} {env_xdg} sh -c \"$1\"",
            tun.display(),
            self.user.name,
            self.user.home.display()
        );
        let mut c = Command::new("ip");
        c.args([
            "netns", "exec", &self.ns.0, "unshare", "-m", "sh", "-c", &inner, "sh", script,
        ])
        .current_dir(&self.user.home);
        c
    }

    fn run(&self, script: &str, xdg: bool) -> Output {
        let out = self.cmd(script, xdg).output().unwrap();
        eprintln!(
            "{script}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `sh -c SCRIPT` as root in the test's network namespace.
    fn in_ns(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns.0, "sh", "-c", script])
            .output()
            .unwrap()
    }
}

use std::os::unix::fs::PermissionsExt;

fn vessel() -> &'static str {
    env!("CARGO_BIN_EXE_vessel")
}

fn oci() -> PathBuf {
    // vessel-oci is built by the workspace into the same dir as vessel.
    Path::new(vessel()).with_file_name("vessel-oci")
}

/// `vessel-oci run` by a user who is not root, with a config.json of runc's rootless
/// kind that maps 0 to the user and 1..65536 to its subuid range: the runtime writes
/// the maps through newuidmap/newgidmap and goes without a cgroup.
#[test]
fn vessel_oci_rootless_with_subuid_range() {
    if !oci().exists() {
        eprintln!(
            "\n!!!!! SKIPPED: {} is not built (cargo build -p vessel-oci) !!!!!\n",
            oci().display()
        );
        return;
    }
    let Some(s) = Setup::new('a', &[]) else { return };
    let bundle = s.tmp.path().join("bundle");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new(repo.join("scripts/bundle"))
        .arg(&bundle)
        .args(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u"])
        .env("VESSEL_OCI", oci())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let cfg = bundle.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    let map = serde_json::json!([
        {"containerID": 0, "hostID": s.user.uid, "size": 1},
        {"containerID": 1, "hostID": s.user.sub, "size": 65536}
    ]);
    v["process"]["terminal"] = false.into();
    v["linux"]["uidMappings"] = map.clone();
    v["linux"]["gidMappings"] = map;
    v["linux"]["namespaces"] = serde_json::json!([
        {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "user"}, {"type": "network"}
    ]);
    if let Some(l) = v["linux"].as_object_mut() {
        l.remove("resources");
    }
    fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let st = Command::new("chown")
        .args(["-R", &format!("{}:{}", s.user.uid, s.user.uid)])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(st.success());
    let state = s.tmp.path().join("xdg/oci-state");
    let out = s.run(
        &format!(
            "cd {} && {} --root {} run vessel-rl-oci-{}",
            bundle.display(),
            oci().display(),
            state.display(),
            std::process::id()
        ),
        true,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    let (u, sub) = (s.user.uid.to_string(), s.user.sub.to_string());
    let want: Vec<Vec<&str>> = vec![
        vec!["0", &u, "1"],
        vec!["1", &sub, "65536"],
        vec!["0", &u, "1"],
        vec!["1", &sub, "65536"],
        vec!["0"],
    ];
    assert_eq!(lines, want);

    // runc's rootless flow: `spec --rootless` by the user maps only its own ids, which
    // the runtime writes itself (setgroups denied first).
    let own = s.tmp.path().join("xdg/own");
    fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(s.user.uid), Some(s.user.uid)).unwrap();
    std::os::unix::fs::symlink(bundle.join("rootfs"), own.join("rootfs")).unwrap();
    let out = s.run(
        &format!("{} spec --rootless --bundle {}", oci().display(), own.display()),
        true,
    );
    assert!(out.status.success());
    let cfg = own.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&cfg).unwrap()).unwrap();
    v["process"]["terminal"] = false.into();
    v["process"]["args"] = serde_json::json!(["cat", "/proc/self/uid_map", "/proc/self/setgroups"]);
    v["root"]["readonly"] = false.into();
    fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = s.run(
        &format!(
            "cd {} && {} --root {} run vessel-rl-own-{}",
            own.display(),
            oci().display(),
            state.display(),
            std::process::id()
        ),
        true,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(words, ["0", u.as_str(), "1", "deny"]);
}

/// A docker-registry serving on 127.0.0.1:5000 inside the test's namespace, with a
/// one-layer busybox image (umoci, skopeo) holding /owned of uid:gid 1000:1000.
fn registry(s: &Setup) -> (Reaped, String) {
    let dir = s.tmp.path().join("reg");
    fs::create_dir(&dir).unwrap();
    let cfg = dir.join("reg.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:5000\n",
            dir.display()
        ),
    )
    .unwrap();
    let reg = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &s.ns.0, "/usr/bin/docker-registry", "serve"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let image = "127.0.0.1:5000/rootless/bb:1".to_string();
    let out = s.in_ns(&format!(
        "set -e; cd {}; umoci init --layout img; umoci new --image img:1; umoci unpack --image img:1 b >/dev/null; \
         mkdir -p b/rootfs/bin b/rootfs/tmp; cp /bin/busybox b/rootfs/bin/; touch b/rootfs/owned; chown 1000:1000 b/rootfs/owned; \
         umoci repack --image img:1 b; \
         for i in $(seq 100); do skopeo copy -q --dest-tls-verify=false oci:img:1 docker://{image} && exit 0; sleep 0.1; done; exit 1",
        dir.display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (reg, image)
}

/// `vessel run` by a user who is not root: the `host` image, an image the user pulled
/// from the registry (ids inside, ownership seen from the host), the limits note, and
/// pasta networking with a published port reached from the namespace's loopback.
#[test]
fn rootless_run_host_image_and_pasta() {
    let Some(s) = Setup::new('b', &["pasta", "docker-registry", "skopeo", "umoci", "busybox"]) else {
        return;
    };
    let v = vessel();
    let (_reg, image) = registry(&s);

    // host image, default (pasta) network, runroot from XDG_RUNTIME_DIR.
    let out = s.run(&format!("{v} run --rm host true"), true);
    assert!(out.status.success());
    assert!(
        s.user.home.join(".local/share/vessel").is_dir(),
        "root under ~/.local/share/vessel"
    );
    assert!(
        s.tmp.path().join("xdg/vessel").is_dir(),
        "runroot under $XDG_RUNTIME_DIR/vessel"
    );
    let meta = fs::metadata(s.user.home.join(".local/share/vessel")).unwrap();
    assert_eq!(meta.uid(), s.user.uid);

    // Without XDG_RUNTIME_DIR the runroot is /tmp/vessel-UID, as podman's.
    let out = s.run(&format!("{v} run --rm --network none host true"), false);
    assert!(out.status.success());
    assert!(Path::new(&format!("/tmp/vessel-{}", s.user.uid)).is_dir());

    // A pulled image: the session's ids, and files owned by the user and its range.
    let out = s.run(&format!("{v} pull {image}"), true);
    assert!(out.status.success());
    let shared = s.tmp.path().join("shared");
    fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&shared, Some(s.user.uid), Some(s.user.uid)).unwrap();
    let out = s.run(
        &format!(
            "{v} run --rm --network none -v {}:/out {image} /bin/busybox sh -c \
             'busybox cat /proc/self/uid_map; busybox stat -c %u:%g /owned; busybox touch /out/root-file /out/user-file; busybox chown 1000:1000 /out/user-file'",
            shared.display()
        ),
        true,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    let (u, sub) = (s.user.uid.to_string(), s.user.sub.to_string());
    assert_eq!(lines[0], ["0", u.as_str(), "1"]);
    assert_eq!(lines[1], ["1", sub.as_str(), "65536"]);
    assert_eq!(lines[2], ["1000:1000"], "layer ownership kept inside");
    let root_file = fs::metadata(shared.join("root-file")).unwrap();
    assert_eq!((root_file.uid(), root_file.gid()), (s.user.uid, s.user.uid));
    let user_file = fs::metadata(shared.join("user-file")).unwrap();
    assert_eq!((user_file.uid(), user_file.gid()), (s.user.sub + 999, s.user.sub + 999));
    // The layer's file on the host belongs to the range too.
    let out = Command::new("find")
        .arg(s.user.home.join(".local/share/vessel"))
        .args(["-name", "owned", "-printf", "%U:%G\n"])
        .output()
        .unwrap();
    let want = format!("{0}:{0}", s.user.sub + 999);
    assert!(
        String::from_utf8_lossy(&out.stdout).lines().any(|l| l == want),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A detached container, then exec, stop and rm from later commands (each in a
    // session of its own).
    let out = s.run(&format!("{v} run -d --name rl-d --network none host sleep 300"), true);
    assert!(out.status.success());
    let out = s.run(&format!("{v} exec rl-d cat /proc/self/uid_map"), true);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.split_whitespace().take(3).collect::<Vec<_>>(),
        ["0", u.as_str(), "1"]
    );
    assert!(s.run(&format!("{v} stop -t 1 rl-d"), true).status.success());
    assert!(s.run(&format!("{v} rm rl-d"), true).status.success());
    let out = s.run(&format!("{v} ps -aq"), true);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");

    // Limits without a delegated cgroup: one note, and the container runs.
    let out = s.run(
        &format!("{v} run --rm --network none --memory 64m --pids-limit 100 host true"),
        true,
    );
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("WARN: rootless: resource limits").count(), 1, "{err}");

    // pasta with -p: a server in the container, the client on the namespace's loopback.
    let server = Reaped(
        s.cmd(
            &format!("{v} run --rm -p 18080:80 {image} /bin/busybox nc -l -p 80 -e /bin/busybox echo rootless-hello"),
            true,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let out = s.in_ns(
        "for i in $(seq 200); do r=$(busybox nc 127.0.0.1 18080 </dev/null 2>/dev/null) && [ -n \"$r\" ] && { echo \"$r\"; exit 0; }; sleep 0.1; done; exit 1",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "rootless-hello");
    let mut server = server;
    let st = server.0.wait().unwrap();
    assert!(st.success(), "the server container ended with {st}");
}

/// `--network slirp4netns` (podman's other rootless network): a published port reached
/// from the namespace's loopback (forwarded through slirp4netns's API socket), and the
/// container reaching a server of the test on the namespace's own address.
#[test]
fn rootless_slirp4netns() {
    let Some(s) = Setup::new('c', &["slirp4netns", "busybox"]) else {
        return;
    };
    let v = vessel();
    let server = Reaped(
        s.cmd(
            &format!(
                "{v} run --rm --network slirp4netns -p 18081:80 host busybox nc -l -p 80 -e busybox echo slirp-hello"
            ),
            true,
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let out = s.in_ns(
        "for i in $(seq 200); do r=$(busybox nc 127.0.0.1 18081 </dev/null 2>/dev/null) && [ -n \"$r\" ] && { echo \"$r\"; exit 0; }; sleep 0.1; done; exit 1",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "slirp-hello");
    let mut server = server;
    let st = server.0.wait().unwrap();
    assert!(st.success(), "the server container ended with {st}");

    // Outbound: a server of the test on 10.231.0.1, reached through slirp4netns.
    let _test_server = Reaped(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &s.ns.0,
                "busybox",
                "nc",
                "-l",
                "-p",
                "18082",
                "-e",
                "busybox",
                "echo",
                "test-server",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let out = s.run(
        &format!(
            "{v} run --rm --network slirp4netns host sh -c 'ip -4 -o addr show tap0; head -1 /etc/resolv.conf; \
             for i in $(seq 100); do r=$(busybox nc 10.231.0.1 18082 </dev/null 2>/dev/null) && [ -n \"$r\" ] && {{ echo \"$r\"; exit 0; }}; sleep 0.1; done; exit 1'"
        ),
        true,
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("inet 10.0.2.100/24"), "{text}");
    assert!(text.contains("test-server"), "{text}");
    assert!(
        text.contains("nameserver 10.0.2.3\n"),
        "slirp4netns's DNS first: {text}"
    );
    // slirp4netns ended with the containers.
    let left = s.in_ns(&format!(
        "for i in $(seq 50); do pgrep -u {} slirp4netns >/dev/null || exit 0; sleep 0.1; done; exit 1",
        s.user.uid
    ));
    assert!(left.status.success(), "a slirp4netns of the user is still running");
}

/// The session outlives a command (podman's pause process): two rootless `vessel run`
/// in a row run their containers in the same user namespace, the one the pause process
/// named by the runroot's pause.pid holds; the pause process keeps none of the
/// command's descriptors (the command's output reaches EOF: this test would hang).
#[test]
fn rootless_commands_share_the_pause_process_session() {
    let Some(s) = Setup::new('c', &[]) else { return };
    let script = format!(
        "set -e; for i in 1 2; do {v} run --rm --network none host readlink /proc/self/ns/user; done; \
         cat \"$XDG_RUNTIME_DIR/vessel/pause.pid\"",
        v = vessel()
    );
    let out = s.run(&script, true);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("user:["), "{text}");
    assert_eq!(lines[0], lines[1], "both commands' containers in one user namespace");
    let mut f = lines[2].split_whitespace();
    let pid: i32 = f.next().unwrap().parse().unwrap();
    let ino: u64 = f.next().unwrap().parse().unwrap();
    assert_eq!(lines[0], format!("user:[{ino}]"), "the pause process's namespace");
    let ns = fs::metadata(format!("/proc/{pid}/ns/user")).expect("the pause process is alive");
    assert_eq!(ns.ino(), ino);
    assert_eq!(fs::metadata(format!("/proc/{pid}")).unwrap().uid(), s.user.uid);
}
