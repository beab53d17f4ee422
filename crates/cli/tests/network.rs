//! Container networking end to end: `vessel` runs inside a network namespace the test
//! makes (`ip netns add`, then `nsenter --net`), which plays the host, so nothing
//! touches the machine's own interfaces, routes or firewall and no packet leaves
//! loopback and those namespaces. The CNI plugins (Debian's containernetworking-plugins)
//! make the bridge, veths, addresses and port mappings in there.

mod instance;
mod run_vessel;

use std::process::Command;

use instance::{have, stderr, stdout, wait_for, Instance};

/// A network namespace made for one test, deleted on drop (with everything in it).
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let mut b = [0u8; 4];
        getrandom(&mut b);
        let name = format!("vessel-{tag}-{:08x}", u32::from_ne_bytes(b));
        let ok = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(ok.success(), "ip netns add {name}");
        let n = Netns(name);
        n.sh("ip link set lo up");
        n
    }

    /// Runs a shell command in the namespace (the "host" side); its stdout.
    fn sh(&self, script: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", script])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Netns {
    /// The host-wide network state vessel keeps for this namespace
    /// (`/run/vessel-net/netns-<inode>`, see vessel_net::host).
    fn state(&self) -> std::path::PathBuf {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(format!("/run/netns/{}", self.0)).unwrap().ino();
        std::path::PathBuf::from(format!("/run/vessel-net/netns-{ino}"))
    }

    /// The addresses host-local holds for `network` (on any bridge) in this namespace.
    fn reserved(&self, network: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state().join("ipam"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|b| {
                std::fs::read_dir(b.path().join(network))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // The state goes first: it is keyed by the namespace's inode, which a test
        // running alongside may be given for its new namespace once this one is deleted.
        if std::fs::metadata(format!("/run/netns/{}", self.0)).is_ok() {
            let state = self.state();
            let _ = std::fs::remove_dir_all(&state);
            let _ = std::fs::remove_file(state.with_extension("lock"));
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(b).unwrap();
}

/// An instance whose commands run in `ns`; bridge networking by default. Its containers
/// have the host's ids (`VESSEL_USERNS=host`): these tests ping with busybox (raw
/// sockets) and change interfaces with NET_ADMIN, which a container in its own user
/// namespace cannot do in a network namespace made on the host side (tests/userns.rs
/// covers bridge networking in a user namespace).
fn instance(ns: &Netns) -> Instance {
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    i.userns = Some("host");
    i
}

/// How many free warm attachments network `net` keeps (`network inspect`).
fn warm(i: &Instance, net: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["network", "inspect", net])).unwrap();
    v[0]["warm_attachments"].as_array().map_or(0, Vec::len)
}

/// How many veths the test's namespace has (the host ends of containers' attachments).
fn veths(ns: &Netns) -> usize {
    ns.sh("ip -o link").lines().filter(|l| l.contains("veth")).count()
}

fn ready() -> bool {
    have(&["umoci", "busybox"]) && std::path::Path::new("/usr/lib/cni/bridge").exists()
}

#[test]
fn containers_reach_each_other_and_published_ports() {
    if !ready() {
        return;
    }
    let ns = Netns::new("net1");
    let i = instance(&ns);
    let img = i.busybox();
    let web = i
        .ok(&[
            "run",
            "-d",
            "--network",
            "bridge",
            "--name",
            "web",
            // busybox's ping needs a raw socket (Debian's busybox 1.35 has no ICMP-socket
            // fallback): CAP_NET_RAW is no longer in the default set.
            "--cap-add",
            "NET_RAW",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:9090:80",
            img,
            "sh",
            "-c",
            "mkdir -p /www && echo hello-web > /www/index.html && httpd -f -p 80 -h /www",
        ])
        .trim()
        .to_string();
    let a = i.ok(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "--name",
        "peer",
        "--cap-add",
        "NET_RAW",
        img,
        "sleep",
        "1000",
    ]);
    assert_eq!(a.trim().len(), 64);
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["network", "inspect", "vessel"])).unwrap();
    let ip_of = |name: &str| {
        insp[0]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Name"] == name)
            .and_then(|c| c["Attachment"]["ip"].as_str())
            .unwrap()
            .to_string()
    };
    let web_ip = ip_of("web");
    assert!(web_ip.starts_with("10.88."), "{web_ip}");
    // By address and by name, both ways.
    let o = i.v(&[
        "exec",
        "peer",
        "sh",
        "-c",
        &format!("ping -c1 -W2 {web_ip} >/dev/null && ping -c1 -W2 web >/dev/null && wget -qO- http://web/"),
    ]);
    assert_eq!(stdout(&o), "hello-web\n", "{}", stderr(&o));
    assert!(i.v(&["exec", "web", "ping", "-c1", "-W2", "peer"]).status.success());
    // Published: from the "host" on 127.0.0.1 and on the bridge's address.
    wait_for("httpd", || ns.sh("wget -qO- http://127.0.0.1:8080/") == "hello-web\n");
    assert_eq!(ns.sh("wget -qO- http://10.88.0.1:8080/"), "hello-web\n");
    assert_eq!(ns.sh("wget -qO- http://127.0.0.1:9090/"), "hello-web\n");
    let port = i.ok(&["port", "web"]);
    assert!(
        port.contains("80/tcp -> 0.0.0.0:8080") && port.contains("80/tcp -> 127.0.0.1:9090"),
        "{port}"
    );
    // A port already published is refused, and no container is left of the attempt.
    let o = i.v(&["run", "-d", "--network", "bridge", "-p", "8080:80", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("8080"), "{}", stderr(&o));
    assert_eq!(i.ok(&["ps", "-aq"]).lines().count(), 2);
    // -P: a free host port for the image's exposed 80/tcp.
    let p = i.ok(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "-P",
        "--name",
        "auto",
        img,
        "sleep",
        "1000",
    ]);
    assert!(!p.is_empty());
    assert!(i.ok(&["port", "auto"]).starts_with("80/tcp -> 0.0.0.0:"));
    // container:NAME shares web's network namespace.
    let o = i.ok(&[
        "run",
        "--rm",
        "--network",
        "container:web",
        img,
        "wget",
        "-qO-",
        "http://127.0.0.1/",
    ]);
    assert_eq!(o, "hello-web\n");
    // stop then start: the network works again (and the port too).
    i.ok(&["stop", "-t", "1", "web"]);
    assert!(ns.sh("wget -T 1 -qO- http://127.0.0.1:8080/").is_empty());
    i.ok(&["start", "web"]);
    wait_for("httpd after restart", || {
        ns.sh("wget -qO- http://127.0.0.1:8080/") == "hello-web\n"
    });
    let o = i.v(&["exec", "peer", "wget", "-qO-", "http://web/"]);
    assert_eq!(stdout(&o), "hello-web\n");
    // rm releases the port mappings; the attachments stay attached as the network's warm
    // ones, two at most (web's, peer's and auto's ended).
    i.ok(&["rm", "-f", &web, "peer", "auto"]);
    assert!(ns.sh("wget -T 1 -qO- http://127.0.0.1:8080/").is_empty());
    let nat = ns.sh("iptables-save -t nat 2>/dev/null");
    assert!(!nat.contains("8080") && !nat.contains("9090"), "{nat}");
    assert_eq!(warm(&i, "vessel"), 2);
    assert_eq!(veths(&ns), 2, "{}", ns.sh("ip -o link"));
    assert_eq!(i.ok(&["system", "check"]).trim(), "no problems found");
    // system prune releases them: no veth is left on the bridge.
    assert!(i
        .ok(&["system", "prune", "-f"])
        .contains("Released warm network attachments: 2"));
    assert_eq!(veths(&ns), 0, "{}", ns.sh("ip -o link"));
    assert_eq!(warm(&i, "vessel"), 0);
}

#[test]
fn none_host_dns_and_user_networks() {
    if !ready() {
        return;
    }
    let ns = Netns::new("net2");
    let i = instance(&ns);
    let img = i.busybox();
    // none: only loopback, and it is up.
    let o = i.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-add",
        "NET_RAW",
        img,
        "sh",
        "-c",
        "ip -o link | wc -l; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up",
    ]);
    assert_eq!(o.split_whitespace().collect::<Vec<_>>(), ["1", "lo-up"]);
    // host: the "host"'s interfaces.
    ns.sh("ip link add vessel-h0 type veth peer name vessel-h1");
    let o = i.ok(&["run", "--rm", "--network", "host", img, "ip", "-o", "link"]);
    assert!(o.contains("vessel-h0"), "host networking sees the test namespace: {o}");
    // --dns, --add-host.
    let o = i.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--dns",
        "192.0.2.53",
        "--add-host",
        "db.example:192.0.2.7",
        img,
        "sh",
        "-c",
        "cat /etc/resolv.conf /etc/hosts",
    ]);
    assert!(
        o.contains("nameserver 192.0.2.53") && o.contains("192.0.2.7\tdb.example"),
        "{o}"
    );
    // A user network: subnet, --ip, --mac-address; overlapping subnets are refused.
    i.ok(&["network", "create", "--subnet", "10.99.0.0/24", "mynet"]);
    let o = i.v(&["network", "create", "--subnet", "10.99.0.128/25", "other"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("mynet"), "{}", stderr(&o));
    let o = i.ok(&[
        "run",
        "--rm",
        "--network",
        "mynet",
        "--ip",
        "10.99.0.42",
        "--mac-address",
        "02:42:0a:63:00:2a",
        img,
        "sh",
        "-c",
        "ip -o addr show eth0; ip -o link show eth0",
    ]);
    assert!(o.contains("10.99.0.42/24") && o.contains("02:42:0a:63:00:2a"), "{o}");
    let ls = i.ok(&["network", "ls"]);
    assert!(ls.contains("mynet") && ls.contains("10.99.0.0/24"), "{ls}");
    // In use: refused with the user's name; unknown: a clear error.
    i.ok(&["create", "--network", "mynet", "--name", "user1", img, "true"]);
    let o = i.v(&["network", "rm", "mynet"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("user1"), "{}", stderr(&o));
    i.ok(&["rm", "user1"]);
    i.ok(&["network", "rm", "mynet"]);
    let o = i.v(&["run", "--rm", "--network", "nosuchnet", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("nosuchnet"), "{}", stderr(&o));
    assert_eq!(i.ok(&["ps", "-aq"]), "");
}

#[test]
fn internal_networks_do_not_reach_the_host_side() {
    if !ready() {
        return;
    }
    let ns = Netns::new("net3");
    let i = instance(&ns);
    let img = i.busybox();
    i.ok(&["network", "create", "--internal", "--subnet", "10.98.0.0/24", "inside"]);
    // Something on the "host" side to reach: an address on a veth of the test's namespace.
    ns.sh(
        "ip link add vessel-h0 type veth peer name vessel-h1 && ip addr add 192.0.2.1/32 dev vessel-h0 \
         && ip link set vessel-h0 up && ip link set vessel-h1 up",
    );
    i.ok(&["run", "-d", "--network", "inside", "--name", "a", img, "sleep", "1000"]);
    let o = i.v(&[
        "run",
        "--rm",
        "--network",
        "inside",
        "--cap-add",
        "NET_RAW",
        img,
        "sh",
        "-c",
        "ping -c1 -W1 a >/dev/null && echo peer-ok; ping -c1 -W1 192.0.2.1 >/dev/null && echo host-reached; ip route",
    ]);
    let out = stdout(&o);
    assert!(out.contains("peer-ok"), "{out}");
    assert!(!out.contains("host-reached"), "{out}");
    assert!(!out.contains("default"), "{out}");
    // On a normal network the same address is reached (so the check above can fail).
    let o = i.ok(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "--cap-add",
        "NET_RAW",
        img,
        "sh",
        "-c",
        "ping -c1 -W1 192.0.2.1 >/dev/null && echo host-reached",
    ]);
    assert_eq!(o, "host-reached\n");
    i.ok(&["rm", "-f", "a"]);
}

#[test]
fn addresses_are_released_and_a_killed_monitor_leaves_nothing() {
    if !ready() {
        return;
    }
    let ns = Netns::new("net4");
    let i = instance(&ns);
    let img = i.busybox();
    // --warm 0: no attachment is kept for the next container, each rm releases its own.
    i.ok(&["network", "create", "--warm", "0", "--subnet", "10.97.0.0/24", "small"]);
    // 300 run/rm on a /24 (253 addresses): only works if every rm releases its address.
    for n in 0..300 {
        let o = i.v(&["run", "--rm", "--network", "small", img, "true"]);
        assert!(o.status.success(), "run {n}: {}", stderr(&o));
    }
    // kill -9 of the monitor, then system check: no veth, no mapping, no address kept.
    let id = i
        .ok(&["run", "-d", "--network", "small", "-p", "8181:80", img, "sleep", "1000"])
        .trim()
        .to_string();
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", &id])).unwrap();
    let monitor = insp[0]["State"]["MonitorPid"].as_i64().unwrap() as i32;
    // SAFETY: kill takes plain integers; the monitor is a process this test started.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    wait_for("the monitor's end", || {
        std::fs::read_to_string(format!("/proc/{monitor}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    let report = i.ok(&["system", "check"]);
    assert!(report.contains("monitor is gone"), "{report}");
    let nat = ns.sh("iptables-save -t nat 2>/dev/null");
    assert!(!nat.contains("8181"), "{nat}");
    assert!(!ns.sh("ip -o link").contains("veth"), "{}", ns.sh("ip -o link"));
    let kept = ns.reserved("small");
    assert!(kept.is_empty(), "addresses still reserved: {kept:?}");
    i.ok(&["rm", &id]);
    // A missing plugin: a one-line error naming the package, nothing left.
    let o = i
        .cmd()
        .env("VESSEL_CNI_PATH", "/nonexistent")
        .args(["run", "--rm", "--network", "small", img, "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("containernetworking-plugins"), "{}", stderr(&o));
    assert_eq!(i.ok(&["ps", "-aq"]), "");
}

#[test]
fn warm_attachments_are_reused_only_when_nothing_could_change_them() {
    if !ready() {
        return;
    }
    let ns = Netns::new("net5");
    let i = instance(&ns);
    let img = i.busybox();
    i.ok(&["network", "create", "--subnet", "10.96.0.0/24", "w"]);
    let addr = |out: &str| {
        out.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let show = ["sh", "-c", "ip -o -4 addr show eth0; ip -o link show eth0"];
    let run_plain = |extra: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "w"];
        args.extend_from_slice(extra);
        args.push(img);
        args.extend_from_slice(&show);
        i.ok(&args)
    };
    // The first container's attachment stays warm; the next container takes it.
    let first = run_plain(&[]);
    assert!(addr(&first).starts_with("10.96.0."), "{first}");
    assert_eq!(warm(&i, "w"), 1);
    let second = run_plain(&[]);
    assert_eq!(addr(&second), addr(&first), "{second}");
    assert_eq!((warm(&i, "w"), veths(&ns)), (1, 1));
    // CAP_NET_ADMIN: the container may change its namespace (here its MTU), so its
    // attachment is released, and the next container gets a fresh one.
    i.ok(&[
        "run",
        "--rm",
        "--network",
        "w",
        "--cap-add",
        "NET_ADMIN",
        img,
        "ip",
        "link",
        "set",
        "eth0",
        "mtu",
        "1280",
    ]);
    assert_eq!((warm(&i, "w"), veths(&ns)), (0, 0), "{}", ns.sh("ip -o link"));
    let fresh = run_plain(&[]);
    assert!(fresh.contains("mtu 1500"), "{fresh}");
    assert_eq!(warm(&i, "w"), 1);
    // The same for a container where `exec --privileged` ran.
    i.ok(&["run", "-d", "--network", "w", "--name", "t", img, "sleep", "1000"]);
    assert_eq!(warm(&i, "w"), 0);
    i.ok(&["exec", "--privileged", "t", "ip", "link", "set", "eth0", "mtu", "1280"]);
    i.ok(&["rm", "-f", "t"]);
    assert_eq!((warm(&i, "w"), veths(&ns)), (0, 0), "{}", ns.sh("ip -o link"));
    // A namespace another container still uses (--network container:) is not handed on.
    i.ok(&["run", "-d", "--network", "w", "--name", "owner", img, "sleep", "1000"]);
    i.ok(&[
        "run",
        "-d",
        "--network",
        "container:owner",
        "--name",
        "guest",
        img,
        "sleep",
        "1000",
    ]);
    i.ok(&["stop", "-t", "0", "owner"]);
    assert_eq!(warm(&i, "w"), 0);
    i.ok(&["rm", "-f", "guest", "owner"]);
    // At most `warm` (2 by default) are kept: three containers end, one is released.
    for n in ["a", "b", "c"] {
        i.ok(&["run", "-d", "--network", "w", "--name", n, img, "sleep", "1000"]);
    }
    i.ok(&["rm", "-f", "a", "b", "c"]);
    assert_eq!((warm(&i, "w"), veths(&ns)), (2, 2), "{}", ns.sh("ip -o link"));
    assert_eq!(i.ok(&["system", "check"]).trim(), "no problems found");
    // A container publishing a port takes a warm attachment; its end takes the mapping off
    // and keeps the attachment.
    i.ok(&[
        "run",
        "-d",
        "--network",
        "w",
        "--name",
        "p",
        "-p",
        "8282:80",
        img,
        "sh",
        "-c",
        "echo warm-port > /i && httpd -f -p 80 -h /",
    ]);
    assert_eq!(warm(&i, "w"), 1);
    wait_for("httpd", || ns.sh("wget -qO- http://127.0.0.1:8282/i") == "warm-port\n");
    i.ok(&["rm", "-f", "p"]);
    assert!(!ns.sh("iptables-save -t nat 2>/dev/null").contains("8282"));
    assert_eq!((warm(&i, "w"), veths(&ns)), (2, 2), "{}", ns.sh("ip -o link"));
    // --warm 0: every container makes and releases its own.
    i.ok(&["network", "create", "--warm", "0", "--subnet", "10.95.0.0/24", "cold"]);
    i.ok(&["run", "--rm", "--network", "cold", img, "true"]);
    assert_eq!(warm(&i, "cold"), 0);
    assert_eq!(veths(&ns), 2);
    // network rm releases the warm ones with the network: no veth, no address left.
    i.ok(&["network", "rm", "w", "cold"]);
    assert_eq!(veths(&ns), 0, "{}", ns.sh("ip -o link"));
    assert!(ns.reserved("w").is_empty());
    assert!(!ns.state().join("ipam/vessel1/w").exists());
    assert_eq!(i.ok(&["system", "check"]).trim(), "no problems found");
}

/// The address of container `name` on the default network, from `network inspect`.
fn ip_on_default(i: &Instance, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["network", "inspect", "vessel"])).unwrap();
    v[0]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Name"] == name)
        .and_then(|c| c["Attachment"]["ip"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn two_roots_on_one_bridge_never_share_an_address() {
    if !ready() {
        return;
    }
    let ns = Netns::new("roots");
    let a = instance(&ns);
    let b = instance(&ns);
    let (img_a, img_b) = (a.busybox(), b.busybox());
    // Both roots put containers on the default network (bridge vessel0, 10.88.0.0/16) at once.
    for (i, img, names) in [(&a, img_a, ["x", "x2"]), (&b, img_b, ["y", "y2"])] {
        for n in names {
            pinger(i, n, img);
        }
    }
    let ips = [
        ip_on_default(&a, "x"),
        ip_on_default(&a, "x2"),
        ip_on_default(&b, "y"),
        ip_on_default(&b, "y2"),
    ];
    let mut unique = ips.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "addresses handed out twice: {ips:?}");
    // One bridge: a container of one root reaches the other root's.
    assert!(a.v(&["exec", "x", "ping", "-c1", "-W2", &ips[2]]).status.success());
    // One root's CNI DEL (rm, then prune releasing the warm attachments) leaves the other
    // root's firewall rules and addresses alone.
    a.ok(&["rm", "-f", "x", "x2"]);
    assert!(a
        .ok(&["system", "prune", "-f"])
        .contains("Released warm network attachments: 2"));
    let rules = ns.sh("iptables -w -S CNI-FORWARD");
    for ip in &ips[2..] {
        assert!(rules.contains(&format!("-s {ip}/32")), "{ip}: {rules}");
    }
    assert_eq!(ns.reserved("vessel"), {
        let mut v = ips[2..].to_vec();
        v.sort();
        v
    });
    assert!(b.v(&["exec", "y", "ping", "-c1", "-W2", "10.88.0.1"]).status.success());
    assert!(b.v(&["exec", "y", "ping", "-c1", "-W2", &ips[3]]).status.success());
    assert_eq!(b.ok(&["system", "check"]).trim(), "no problems found");
    assert_eq!(a.ok(&["system", "check"]).trim(), "no problems found");
}

#[test]
fn a_deleted_root_leaves_nothing_once_another_root_checks() {
    if !ready() {
        return;
    }
    let ns = Netns::new("gone");
    let a = instance(&ns);
    let b = instance(&ns);
    let img = a.busybox();
    let img_b = b.busybox();
    // Root b keeps a container on vessel0 throughout.
    pinger(&b, "keep", img_b);
    let keep_ip = ip_on_default(&b, "keep");
    // Two warm attachments of root a on vessel0 (veths, addresses, namespace files under
    // a), and a network of its own whose bridge stays after its container.
    for n in ["w1", "w2"] {
        pinger(&a, n, img);
    }
    a.ok(&["rm", "-f", "w1", "w2"]);
    a.ok(&["network", "create", "--warm", "0", "--subnet", "10.93.0.0/24", "gnet"]);
    a.ok(&["run", "--rm", "--network", "gnet", img, "true"]);
    assert_eq!((warm(&a, "vessel"), veths(&ns), ns.reserved("vessel").len()), (2, 3, 3));
    assert!(!ns.sh("ip -o link show vessel1").is_empty());
    // Deleting root a fails on its namespace files (mount points), and leaves the rest.
    let rm = Command::new("rm").arg("-rf").arg(a.root()).output().unwrap();
    assert!(
        !rm.status.success(),
        "rm -rf of a root holding namespace files succeeded"
    );
    assert!(!a.root().join("vessel.db").exists());
    // Root b's check finds them (a's root is gone): two attachments and a's own bridge
    // (vessel0 stays: b uses it).
    let o = b.v(&["system", "check", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1));
    let report = stdout(&o);
    assert_eq!(report.matches("is gone").count(), 3, "{report}");
    assert!(report.contains(&a.root().display().to_string()), "{report}");
    assert!(
        report.contains("bridge vessel1") && !report.contains("bridge vessel0"),
        "{report}"
    );
    assert_eq!(veths(&ns), 3);
    let report = b.ok(&["system", "check"]);
    assert_eq!(report.matches("is gone").count(), 3, "{report}");
    assert_eq!(veths(&ns), 1, "{}", ns.sh("ip -o link"));
    assert!(ns.sh("ip -o link show vessel1").is_empty());
    assert!(!ns.sh("ip -o link show vessel0").is_empty());
    assert_eq!(ns.reserved("vessel"), vec![keep_ip]);
    assert!(ns.reserved("gnet").is_empty());
    assert!(b
        .v(&["exec", "keep", "ping", "-c1", "-W2", "10.88.0.1"])
        .status
        .success());
    assert!(a.mounts_under_root().is_empty(), "{:?}", a.mounts_under_root());
    let rm = Command::new("rm").arg("-rf").arg(a.root()).output().unwrap();
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    assert_eq!(b.ok(&["system", "check"]).trim(), "no problems found");
}

/// `vessel ARGS` of instance `i` on a terminal (script(1)) on which `input` is typed; what
/// the terminal showed.
fn on_terminal(i: &Instance, args: &str, input: &str) -> String {
    use std::io::Write;
    let cmd = i.cmd();
    let mut line: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    line.extend(
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned()),
    );
    line.push(args.to_string());
    let mut child = Command::new("script")
        .args(["-qec", &line.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = stdout(&out);
    eprintln!("on a terminal: vessel {args}: {}\n{text}", out.status);
    text
}

#[test]
fn system_reset_removes_the_root_and_what_it_made_on_the_host() {
    if !ready() || !have(&["script"]) {
        return;
    }
    let ns = Netns::new("reset");
    let a = instance(&ns);
    let b = instance(&ns);
    let (img_a, img_b) = (a.busybox(), b.busybox());
    a.ok(&["network", "create", "--subnet", "10.94.0.0/24", "anet"]);
    a.ok(&[
        "run",
        "-d",
        "--network",
        "anet",
        "--name",
        "p",
        "-p",
        "8383:80",
        img_a,
        "sleep",
        "1000",
    ]);
    a.ok(&[
        "run",
        "-d",
        "--network",
        "bridge",
        "--name",
        "q",
        img_a,
        "sleep",
        "1000",
    ]);
    a.ok(&["run", "--rm", "--network", "bridge", img_a, "true"]);
    pinger(&b, "r", img_b);
    assert_eq!(veths(&ns), 4, "{}", ns.sh("ip -o link"));
    // Without -f and without a terminal: refused, nothing removed.
    let o = a.v(&["system", "reset"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("-f"), "{}", stderr(&o));
    assert_eq!(a.ok(&["ps", "-aq"]).lines().count(), 2);
    // On a terminal it asks; "n" keeps everything.
    let asked = on_terminal(&a, "system reset", "n\n");
    assert!(asked.contains("Are you sure you want to continue? [y/N]"), "{asked}");
    assert!(asked.contains("nothing removed"), "{asked}");
    assert_eq!(a.ok(&["ps", "-aq"]).lines().count(), 2);
    // -f: root a's containers, images, networks and warm attachment go; b's stay, and
    // so does vessel0, which b uses.
    a.ok(&["system", "reset", "-f"]);
    assert_eq!(a.ok(&["ps", "-aq"]), "");
    assert_eq!(a.ok(&["images", "--format", "json"]).trim(), "[]");
    assert!(!a.ok(&["network", "ls"]).contains("anet"));
    assert_eq!(veths(&ns), 1, "{}", ns.sh("ip -o link"));
    assert!(ns.sh("ip -o link show vessel1").is_empty());
    assert!(!ns.sh("ip -o link show vessel0").is_empty());
    assert!(!ns.sh("iptables-save -t nat").contains("8383"));
    assert!(a.mounts_under_root().is_empty());
    assert!(!a.root().join("containers").exists());
    assert!(b.v(&["exec", "r", "ping", "-c1", "-W2", "10.88.0.1"]).status.success());
    // The last root's reset ("y" on a terminal) takes vessel0 and the plugins' shared
    // chains too.
    let done = on_terminal(&b, "system reset", "y\n");
    assert!(done.contains("removed container r"), "{done}");
    assert_eq!(veths(&ns), 0, "{}", ns.sh("ip -o link"));
    assert!(
        ns.sh("ip -o link show type bridge").is_empty(),
        "{}",
        ns.sh("ip -o link")
    );
    let rules = ns.sh("iptables-save");
    assert!(!rules.contains("CNI-"), "{rules}");
    let roots = std::fs::read_dir(ns.state().join("roots")).map_or(0, |d| d.count());
    assert_eq!(roots, 0);
    assert!(ns.reserved("vessel").is_empty());
}

/// Starts a detached `sleep 1000` container NAME of IMG on the default bridge network,
/// with CAP_NET_RAW so that busybox's ping (raw sockets only) works in it.
fn pinger(i: &Instance, name: &str, img: &str) {
    i.ok(&[
        "run",
        "-d",
        "--cap-add",
        "NET_RAW",
        "--network",
        "bridge",
        "--name",
        name,
        img,
        "sleep",
        "1000",
    ]);
}
