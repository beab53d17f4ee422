//! `vessel checkpoint` and `vessel restore` end to end: a counter that continues where
//! it stopped (no number lost or repeated, in its file and in its log), `--leave-running`,
//! and refused operations. CRIU is the one `scripts/setup` installs.

mod instance;
mod run_vessel;

use std::fs;
use std::path::PathBuf;

use instance::{cgroup_exists, have, stderr, wait_for, Instance};

/// Appends 1, 2, 3... to /count and prints each number.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; echo $i; sleep 0.05; done";

/// The container's full id.
fn id_of(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
}

/// The counter's file in the container's writable layer.
fn count_file(i: &Instance, id: &str) -> PathBuf {
    i.root().join("snapshots/active").join(id).join("upper/count")
}

/// The numbers of a counter's output, checked to be 1..=N: none lost or repeated.
#[track_caller]
fn checked(text: &str, what: &str) -> u64 {
    let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (k, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            k as u64 + 1,
            "{what}: {n} at line {}: a number lost or repeated",
            k + 1
        );
    }
    nums.len() as u64
}

fn count(i: &Instance, id: &str) -> u64 {
    checked(&fs::read_to_string(count_file(i, id)).unwrap_or_default(), "count file")
}

/// A running counter named `name`.
fn counter(i: &Instance, name: &str) -> String {
    let img = i.busybox();
    // In its own user namespace (the default): idmapped lowers, the host's device nodes
    // bound in, its own range of host ids.
    i.ok(&["run", "-d", "--name", name, img, "sh", "-c", COUNTER]);
    let id = id_of(i, name);
    wait_for("the counter to count", || count(i, &id) >= 3);
    id
}

fn state(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.State.Status}}", name]).trim().to_string()
}

#[test]
fn checkpoint_and_restore_continue_the_count() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let id = counter(&i, "vessel-cr-count");
    i.ok(&["checkpoint", "vessel-cr-count"]);
    assert_eq!(state(&i, "vessel-cr-count"), "exited", "checkpoint ends the container");
    assert!(!cgroup_exists(&i.root(), &id), "no cgroup while checkpointed");
    let stopped_at = count(&i, &id);

    let out = i.ok(&["restore", "vessel-cr-count"]);
    assert_eq!(out.trim(), "vessel-cr-count");
    assert_eq!(state(&i, "vessel-cr-count"), "running");
    wait_for("the count to continue", || count(&i, &id) >= stopped_at + 5);
    // Its stdout reaches the log through the new monitor's pipes, without a gap.
    wait_for("the log to continue", || {
        checked(&i.ok(&["logs", "vessel-cr-count"]), "log") >= stopped_at + 5
    });
    // The new monitor reaps the restored init and records its exit.
    i.ok(&["kill", "vessel-cr-count"]);
    wait_for("the exit to be recorded", || state(&i, "vessel-cr-count") == "exited");
    assert!(!cgroup_exists(&i.root(), &id), "cgroup removed after the exit");
    assert!(
        i.mounts_under_root().is_empty(),
        "nothing mounted: {:?}",
        i.mounts_under_root()
    );
}

#[test]
fn checkpoint_leave_running_keeps_counting() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let id = counter(&i, "vessel-cr-leave");
    let pid = i.ok(&["inspect", "-f", "{{.State.Pid}}", "vessel-cr-leave"]);
    i.ok(&["checkpoint", "--leave-running", "vessel-cr-leave"]);
    assert_eq!(state(&i, "vessel-cr-leave"), "running");
    assert_eq!(
        i.ok(&["inspect", "-f", "{{.State.Pid}}", "vessel-cr-leave"]),
        pid,
        "same init"
    );
    let n = count(&i, &id);
    wait_for("the count to go on", || count(&i, &id) > n + 3);
    assert!(
        i.root()
            .join("containers")
            .join(&id)
            .join("checkpoint/inventory.img")
            .exists(),
        "images kept for restore"
    );
    // Restore of a running container is refused.
    let o = i.v(&["restore", "vessel-cr-leave"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("running"), "{}", stderr(&o));
}

#[test]
fn checkpoint_of_a_stopped_container_and_restore_without_images_are_refused() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["run", "--name", "vessel-cr-stopped", img, "true"]);
    let o = i.v(&["checkpoint", "vessel-cr-stopped"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not running"), "{}", stderr(&o));
    let o = i.v(&["restore", "vessel-cr-stopped"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("no checkpoint"), "{}", stderr(&o));
    assert!(i.mounts_under_root().is_empty());
}

/// A counter checkpointed into an archive.
fn exported(i: &Instance, name: &str) -> (String, PathBuf) {
    let id = counter(i, name);
    let file = i.dir.path().join("ck.tar.zst");
    i.ok(&["checkpoint", "--export", file.to_str().unwrap(), name]);
    (id, file)
}

#[test]
fn export_then_import_into_a_fresh_root_runs_there_with_its_name() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let (id, file) = exported(&i, "vessel-cr-move");
    let stopped_at = count(&i, &id);
    // "Another host": a fresh root on this machine, with the image.
    let other = Instance::new();
    other.busybox();
    let out = other.ok(&["restore", "--import", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "vessel-cr-move", "name kept");
    assert_eq!(state(&other, "vessel-cr-move"), "running");
    let new_id = id_of(&other, "vessel-cr-move");
    // Its files came along (the count so far) and its memory (the count goes on).
    wait_for("the count to continue there", || {
        count(&other, &new_id) >= stopped_at + 5
    });
    other.ok(&["rm", "-f", "vessel-cr-move"]);
    assert!(other.mounts_under_root().is_empty());
}

#[test]
fn tampered_or_truncated_archive_and_taken_name_are_refused_leaving_nothing() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let (_, file) = exported(&i, "vessel-cr-bad");
    let other = Instance::new();
    other.busybox();
    let data = fs::read(&file).unwrap();
    // Truncated.
    let short = i.dir.path().join("short.tar.zst");
    fs::write(&short, &data[..data.len() / 2]).unwrap();
    // Tampered: the writable layer's count file changed (the archive re-made with it).
    let tampered = i.dir.path().join("tampered.tar.zst");
    run_vessel::sh(
        &format!(
            "mkdir t && cd t && zstd -dqc {} | tar x && echo 999 >> upper/count && tar c --format=gnu manifest.json record.json config.json checkpoint upper | zstd -q > {}",
            file.display(),
            tampered.display()
        ),
        i.dir.path(),
    );
    for (bad, what) in [(&short, "truncated"), (&tampered, "tampered")] {
        let o = other.v(&["restore", "--import", bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(125), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("damaged or was altered"), "{what}: {}", stderr(&o));
        assert_eq!(other.ok(&["ps", "-aq"]).trim(), "", "{what}: no container left");
        assert!(other.mounts_under_root().is_empty(), "{what}: nothing mounted");
        assert_eq!(other.left("snapshots/active"), 0, "{what}: no snapshot left");
    }
    // The name is taken in the target root.
    other.ok(&["create", "--name", "vessel-cr-bad", "localhost/bb:1", "true"]);
    let o = other.v(&["restore", "--import", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("vessel-cr-bad"), "{}", stderr(&o));
    assert_eq!(other.ok(&["ps", "-aq"]).lines().count(), 1, "only the first container");
    // Under another name it comes back.
    other.ok(&[
        "restore",
        "--import",
        file.to_str().unwrap(),
        "--name",
        "vessel-cr-bad2",
    ]);
    assert_eq!(state(&other, "vessel-cr-bad2"), "running");
}

/// A network namespace of the test, the "host" of a bridge network (as in network.rs);
/// removed with vessel's state for it.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("vessel-cr{tag}-{}", std::process::id());
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let n = Netns(name);
        n.sh("ip link set lo up");
        n
    }

    fn sh(&self, script: &str) -> String {
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::metadata(format!("/run/netns/{}", self.0)) {
            let _ = fs::remove_dir_all(format!("/run/vessel-net/netns-{}", m.ino()));
        }
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A container on the bridge network: its network namespace is a file vessel keeps,
/// handed to CRIU as an external namespace; after restore the container is in it again,
/// with its address, reachable from the host side, and its count goes on. (A process
/// holding a TCP socket cannot be dumped here: criu 4.1.1 fails on kernel 6.18 with
/// "sockets: Can't get 1:16 opt: Operation not supported".)
#[test]
fn bridge_container_keeps_its_network_namespace_and_address() {
    if !have(&["umoci", "busybox"]) || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    let ns = Netns::new("");
    // Drop order: the instance (its containers) before the namespace.
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    i.ok(&[
        "run",
        "-d",
        "--userns=host",
        "--network",
        "bridge",
        "--name",
        "vessel-cr-net",
        img,
        "sh",
        "-c",
        COUNTER,
    ]);
    let id = id_of(&i, "vessel-cr-net");
    wait_for("the counter to count", || count(&i, &id) >= 3);
    let ip = i
        .ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "vessel-cr-net"])
        .trim()
        .to_string();
    assert!(!ip.is_empty(), "an address on the bridge");
    let netns_of = || {
        let pid = i
            .ok(&["inspect", "-f", "{{.State.Pid}}", "vessel-cr-net"])
            .trim()
            .to_string();
        fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let before = netns_of();
    i.ok(&["checkpoint", "vessel-cr-net"]);
    let stopped_at = count(&i, &id);
    i.ok(&["restore", "vessel-cr-net"]);
    wait_for("the count to continue", || count(&i, &id) >= stopped_at + 5);
    let after_ip = i
        .ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "vessel-cr-net"])
        .trim()
        .to_string();
    assert_eq!(after_ip, ip, "the same address");
    let after = netns_of();
    assert!(after.starts_with("net:["), "{after}");
    let inside = i.ok(&["exec", "vessel-cr-net", "ip", "-4", "-o", "addr"]);
    assert!(
        inside.contains(&format!("{ip}/")),
        "the address is in the restored container's namespace: {inside} (namespace before {before}, after {after})"
    );
    assert!(
        ns.sh(&format!("ping -c 1 -W 2 {ip} >/dev/null && echo reached"))
            .contains("reached"),
        "reachable from the host side"
    );
    i.ok(&["rm", "-f", "vessel-cr-net"]);
}

/// The numbers a `-t` ticker printed to its terminal, as `vessel logs` shows them.
fn ticks(i: &Instance, name: &str) -> Vec<u64> {
    i.ok(&["logs", name])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .collect()
}

/// A container with a terminal (`-t`): its pty slave is dumped as an external terminal
/// (the monitor holds the master); restore makes a new pty, the restored shell writes to
/// its slave and the new monitor carries what it writes on into the same log.
#[test]
fn terminal_container_checkpoints_and_restores_its_output_going_on() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let name = "vessel-cr-tty";
    let ticker = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    i.ok(&["run", "-d", "-t", "--name", name, img, "sh", "-c", ticker]);
    wait_for("the ticker to print", || ticks(&i, name).len() >= 3);
    i.ok(&["checkpoint", name]);
    assert_eq!(state(&i, name), "exited");
    let at = *ticks(&i, name).last().unwrap();
    i.ok(&["restore", name]);
    assert_eq!(state(&i, name), "running");
    wait_for("the restored ticker to print on", || {
        ticks(&i, name).last().is_some_and(|n| *n >= at + 5)
    });
    // From where it stopped: the numbers after the checkpoint follow on.
    let t = ticks(&i, name);
    let k = t.iter().position(|n| *n == at).unwrap();
    for w in t[k..].windows(2) {
        assert!(w[1] == w[0] + 1, "ticks go on by one: {:?}", &t[k..]);
    }
    // Still a terminal inside.
    let tty = i.ok(&["exec", name, "sh", "-c", "[ -t 0 ] < /proc/1/fd/0 && echo tty"]);
    assert_eq!(tty.trim(), "tty");
    i.ok(&["rm", "-f", name]);
    assert!(i.mounts_under_root().is_empty(), "{:?}", i.mounts_under_root());
}

/// A client the test started (its own process group), killed with its group on drop.
struct Client(std::process::Child);

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers; the group is the client's own (process_group(0)).
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// An echo server in a container on a bridge network and a client in the test's network
/// namespace (the bridge's "host") that keeps talking to it over one connection: through
/// `checkpoint --tcp-established` and `restore` the connection lives on (CRIU runs in the
/// container's network namespace, where it locks the connection with iptables while the
/// container is down; nothing is written to the host's firewall).
#[test]
fn established_tcp_connection_survives_checkpoint_and_restore() {
    if !have(&["umoci", "busybox"]) || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    let ns = Netns::new("t");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    let name = "vessel-cr-tcp";
    i.ok(&[
        "run",
        "-d",
        // A bridge network in a user namespace comes back without its sysfs (see docs).
        "--userns=host",
        "--network",
        "bridge",
        "--name",
        name,
        img,
        "nc",
        "-ll",
        "-p",
        "7007",
        "-e",
        "cat",
    ]);
    let ip = i
        .ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])
        .trim()
        .to_string();
    let out = i.dir.path().join("echoed");
    let script = format!(
        "(i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done) | busybox nc {ip} 7007 > {}",
        out.display()
    );
    let mut client = Client({
        use std::os::unix::process::CommandExt;
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns.0, "sh", "-c", &script])
            .process_group(0)
            .spawn()
            .unwrap()
    });
    let echoed = || checked(&fs::read_to_string(&out).unwrap_or_default(), "echoed");
    wait_for("the echo to flow", || echoed() >= 5);
    i.ok(&["checkpoint", "--tcp-established", name]);
    assert_eq!(state(&i, name), "exited");
    let at = echoed();
    i.ok(&["restore", name]);
    assert_eq!(state(&i, name), "running");
    // The same connection: the client never reconnects, and what it sent while the
    // container was down arrives, in order, nothing lost or repeated.
    wait_for("the echo to go on after the restore", || echoed() >= at + 10);
    assert!(client.0.try_wait().unwrap().is_none(), "the client is still connected");
    // The host's firewall was not touched (the rules lived in the container's namespace).
    let host_rules = std::process::Command::new("iptables").args(["-S"]).output().unwrap();
    assert!(
        !stdout_of(&host_rules).contains("0xc114"),
        "no CRIU lock left in the host's iptables"
    );
    drop(client);
    i.ok(&["rm", "-f", name]);
}

fn stdout_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
