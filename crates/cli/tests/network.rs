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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn getrandom(b: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(b).unwrap();
}

/// An instance whose commands run in `ns`; bridge networking by default.
fn instance(ns: &Netns) -> Instance {
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
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
    let ipam = i.root().join("cni/ipam/small");
    let kept: Vec<_> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("10.97."))
                .collect()
        })
        .unwrap_or_default();
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
    assert!(!i.root().join("cni/ipam/w").exists());
    assert_eq!(i.ok(&["system", "check"]).trim(), "no problems found");
}
