//! Real tests of vessel-net: the CNI plugins of /usr/lib/cni, iptables and busybox, all
//! inside network namespaces the test makes.
//!
//! Each test runs again in its own network and mount namespaces ([`sandbox`]).
//! Nothing touches the machine's own interfaces, routes or firewall; traffic goes only
//! to loopback and to addresses inside those namespaces.

mod sandbox;

use std::path::Path;
use std::time::{Duration, Instant};

use sandbox::{
    connect_from, http_get, in_ns, ipam_files, local_unreachable, sandbox, sandbox_with_env, sh, try_sh, Server,
};

use vessel_net::{
    attach, attached, attachment, detach, netns, parse_publish, publish, setup_loopback, unpublish, AttachRequest,
    NetError, Network, Networks, Pool, DEFAULT_NETWORK,
};

fn req<'a>(id: &'a str, ns: &'a Path, network: &'a Network) -> AttachRequest<'a> {
    AttachRequest {
        container_id: id,
        netns: ns,
        network,
        ifname: "eth0",
        ports: &[],
        ip: None,
        mac: None,
    }
}

#[test]
fn networks_create_list_get_remove() {
    let Some(sb) = sandbox("networks_create_list_get_remove") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let all = nets.list().unwrap();
    assert_eq!(all.len(), 1);
    let def = &all[0];
    assert_eq!(
        (
            def.name.as_str(),
            def.subnet.as_str(),
            def.gateway.as_deref(),
            def.bridge.as_str()
        ),
        (DEFAULT_NETWORK, "10.88.0.0/16", Some("10.88.0.1"), "vessel0")
    );
    assert_eq!(def.id.len(), 64);
    assert_eq!(nets.get(DEFAULT_NETWORK).unwrap(), *def);

    let a = nets.create("a", None, None, false, 2).unwrap();
    assert_eq!(
        (a.subnet.as_str(), a.gateway.as_deref(), a.bridge.as_str()),
        ("10.89.0.0/24", Some("10.89.0.1"), "vessel1")
    );
    assert!(!a.internal);
    assert!(a.created.ends_with('Z'));
    assert!(sb.root.join("networks/a.json").is_file());
    let b = nets.create("b", None, None, false, 2).unwrap();
    assert_eq!((b.subnet.as_str(), b.bridge.as_str()), ("10.89.1.0/24", "vessel2"));
    assert_eq!(nets.get("b").unwrap(), b);

    let err = |r: Result<Network, NetError>| r.unwrap_err().to_string();
    let e = err(nets.create("a", None, None, false, 2));
    assert!(e.contains("network \"a\" already exists"), "{e}");
    assert!(err(nets.create(DEFAULT_NETWORK, None, None, false, 2)).contains("already exists"));
    let e = err(nets.create("c", Some("10.89.0.128/25"), None, false, 2));
    assert!(e.contains("overlaps network \"a\" (10.89.0.0/24)"), "{e}");
    let e = err(nets.create("c", Some("10.88.5.0/24"), None, false, 2));
    assert!(e.contains("overlaps network \"vessel\" (10.88.0.0/16)"), "{e}");
    sh(
        "ip link add vessel-dummy0 type veth peer name vessel-dummy1 && ip addr add 10.99.0.1/16 dev vessel-dummy0 \
        && ip link set vessel-dummy1 up && ip link set vessel-dummy0 up",
    );
    let e = err(nets.create("c", Some("10.99.3.0/24"), None, false, 2));
    assert!(
        e.contains("overlaps the host's route 10.99.0.0/16 dev vessel-dummy0"),
        "{e}"
    );
    let e = err(nets.create("c", Some("banana"), None, false, 2));
    assert!(e.contains("invalid subnet \"banana\""), "{e}");
    let e = err(nets.create("c", Some("10.70.0.9/24"), None, false, 2));
    assert!(e.contains("it should be 10.70.0.0/24"), "{e}");
    let e = err(nets.create("c", Some("10.70.0.0/24"), Some("10.71.0.1"), false, 2));
    assert!(
        e.contains("gateway \"10.71.0.1\"") && e.contains("outside the subnet"),
        "{e}"
    );
    let e = err(nets.create("bad/name", None, None, false, 2));
    assert!(e.contains("invalid network name"), "{e}");

    let c = nets
        .create("c", Some("10.70.0.0/24"), Some("10.70.0.254"), true, 2)
        .unwrap();
    assert_eq!((c.gateway.as_deref(), c.internal), (Some("10.70.0.254"), true));

    let e = nets.get("nope").unwrap_err().to_string();
    assert_eq!(e, "unknown network \"nope\": see `vessel network ls`");
    let e = nets.remove("a", &["web".into(), "db".into()]).unwrap_err().to_string();
    assert!(e.contains("in use by container(s) web, db"), "{e}");
    assert!(matches!(
        nets.remove(DEFAULT_NETWORK, &[]),
        Err(NetError::DefaultNetwork(_))
    ));
    assert!(matches!(nets.remove("nope", &[]), Err(NetError::UnknownNetwork(_))));
    nets.remove("a", &[]).unwrap();
    assert!(matches!(nets.get("a"), Err(NetError::UnknownNetwork(_))));
    assert!(!sb.root.join("networks/a.json").exists());

    // The default choice skips what routes cover: 10.89.0.0/24 is free again but routed.
    sh("ip addr add 10.89.0.1/24 dev vessel-dummy0");
    let d = nets.create("d", None, None, false, 2).unwrap();
    assert_eq!(d.subnet, "10.89.2.0/24");
    assert_eq!(d.bridge, "vessel1", "the freed bridge name is reused");
    let names: Vec<String> = nets.list().unwrap().into_iter().map(|n| n.name).collect();
    assert_eq!(names, ["b", "c", "d", "vessel"]);
}

#[test]
fn netns_files_and_loopback() {
    let Some(sb) = sandbox("netns_files_and_loopback") else {
        return;
    };
    let p = sb.dir.join("ns/one");
    netns::create(&p).unwrap();
    assert!(netns::is_netns(&p));
    let e = netns::create(&p).unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");
    let (_, out, _) = in_ns(&p, "ip -o link show lo");
    assert!(!out.contains(",UP"), "lo starts down: {out}");
    setup_loopback(&p).unwrap();
    setup_loopback(&p).unwrap();
    let (_, out, _) = in_ns(&p, "ip -o link show lo");
    assert!(out.contains(",UP"), "{out}");
    let (ok, _, err) = in_ns(&p, "busybox ping -c1 -W2 127.0.0.1");
    assert!(ok, "{err}");
    // The namespace is not ours: the test's own namespace has a different inode.
    let theirs = std::fs::metadata(&p)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let ours = std::fs::metadata("/proc/self/ns/net")
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    assert_ne!(theirs, ours);
    netns::remove(&p).unwrap();
    assert!(!p.exists());
    netns::remove(&p).unwrap();
}

#[test]
fn two_containers_talk_and_publish_a_port() {
    let Some(sb) = sandbox("two_containers_talk_and_publish_a_port") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.get(DEFAULT_NETWORK).unwrap();
    let (c1, c2) = (sb.container("c1"), sb.container("c2"));
    let ports = parse_publish("18080:80").unwrap();
    let t = Instant::now();
    let a1 = attach(
        &sb.root,
        &AttachRequest {
            ports: &ports,
            mac: Some("02:42:0a:58:00:99"),
            ..req("aaaa1", &c1, &net)
        },
    )
    .unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    let a2 = attach(&sb.root, &req("aaaa2", &c2, &net)).unwrap();
    let second = t.elapsed();
    eprintln!("timing: attach (bridge creation) {first:?}, attach {second:?}");

    for a in [&a1, &a2] {
        assert_eq!(
            (a.network.as_str(), a.interface.as_str(), a.prefix),
            ("vessel", "eth0", 16)
        );
        assert_eq!(a.gateway.as_deref(), Some("10.88.0.1"));
        assert!(a.ip.starts_with("10.88."), "{a:?}");
    }
    assert_ne!(a1.ip, a2.ip);
    assert_eq!(a1.mac, "02:42:0a:58:00:99");
    let (_, link, _) = in_ns(&c1, "ip -o link show eth0");
    assert!(link.contains("02:42:0a:58:00:99"), "{link}");
    let (_, link, _) = in_ns(&c2, "ip -o link show eth0");
    assert!(link.contains(&a2.mac), "{link} vs {}", a2.mac);
    assert_eq!(
        attachment(&sb.root, "aaaa1", "vessel", "eth0").unwrap(),
        Some(a1.clone())
    );
    assert_eq!(
        attached(&sb.root).unwrap(),
        vec![
            ("aaaa1".to_string(), "vessel".to_string(), "eth0".to_string()),
            ("aaaa2".to_string(), "vessel".to_string(), "eth0".to_string())
        ]
    );

    // Container to container, both ways, and to the gateway.
    for (from, to) in [(&c1, &a2.ip), (&c2, &a1.ip), (&c1, &"10.88.0.1".to_string())] {
        let (ok, out, err) = in_ns(from, &format!("busybox ping -c1 -W2 {to}"));
        assert!(ok, "ping {to}: {out}{err}");
    }

    // A web server in c1 on port 80, published as 18080.
    let www = sb.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from c1\n").unwrap();
    let _httpd = Server::start(
        &c1,
        &["busybox", "httpd", "-f", "-p", "80", "-h", www.to_str().unwrap()],
    );
    let direct = http_get(&format!("{}:80", a1.ip));
    assert!(direct.contains("hello from c1"), "{direct}");
    let local = http_get("127.0.0.1:18080");
    assert!(local.contains("hello from c1"), "{local}");
    let gw = http_get("10.88.0.1:18080");
    assert!(gw.contains("hello from c1"), "{gw}");
    // portmap set route_localnet on the bridge itself (in this namespace only).
    let rl = std::fs::read_to_string("/proc/sys/net/ipv4/conf/vessel0/route_localnet").unwrap();
    assert_eq!(rl.trim(), "1");
    // From the other container through the published port (hairpin through the bridge).
    let (ok, out, err) = in_ns(
        &c2,
        r#"printf "GET / HTTP/1.0\r\n\r\n" | busybox nc -w 5 10.88.0.1 18080"#,
    );
    assert!(ok && out.contains("hello from c1"), "{out}{err}");

    // A plugin's own error comes back: c1's address asked for again.
    let c3 = sb.container("c3");
    let e = attach(
        &sb.root,
        &AttachRequest {
            ip: Some(&a1.ip),
            ..req("aaaa3", &c3, &net)
        },
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, NetError::Plugin(_)), "{text}");
    assert!(
        text.contains("CNI plugin bridge ADD of container aaaa3 on network \"vessel\" failed"),
        "{text}"
    );
    assert!(text.contains(&a1.ip) && text.contains("not available"), "{text}");
    assert_eq!(
        attached(&sb.root).unwrap().len(),
        2,
        "the failed ADD left no cache entry"
    );
    let (_, links, _) = in_ns(&c3, "ip -o link");
    assert!(!links.contains("eth0"), "the failed ADD was undone: {links}");

    let t = Instant::now();
    detach(&sb.root, "aaaa1", "vessel", "eth0", Some(&c1)).unwrap();
    let d = t.elapsed();
    detach(&sb.root, "aaaa2", "vessel", "eth0", Some(&c2)).unwrap();
    eprintln!("timing: detach {d:?}");
    detach(&sb.root, "aaaa2", "vessel", "eth0", Some(&c2)).unwrap();
    assert!(attached(&sb.root).unwrap().is_empty());
    assert!(
        ipam_files(&sb.root, "vessel").is_empty(),
        "{:?}",
        ipam_files(&sb.root, "vessel")
    );
    let (_, links, _) = in_ns(&c1, "ip -o link");
    assert!(!links.contains("eth0"), "{links}");
    let nat = sh("iptables -t nat -S");
    assert!(!nat.contains("CNI-DN-") && !nat.contains("aaaa1"), "{nat}");
    assert!(local_unreachable("127.0.0.1:18080"));

    // A network's bridge goes with the network once nothing is on it.
    let x = nets.create("x", None, None, false, 2).unwrap();
    attach(&sb.root, &req("aaaa4", &c1, &x)).unwrap();
    assert!(try_sh(&format!("ip link show {}", x.bridge)).0);
    assert!(nets.remove("x", &["c1".into()]).is_err());
    detach(&sb.root, "aaaa4", "x", "eth0", Some(&c1)).unwrap();
    nets.remove("x", &[]).unwrap();
    assert!(
        !try_sh(&format!("ip link show {}", x.bridge)).0,
        "bridge {} removed",
        x.bridge
    );
}

#[test]
fn internal_network_has_no_way_out() {
    let Some(sb) = sandbox("internal_network_has_no_way_out") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let def = nets.get(DEFAULT_NETWORK).unwrap();
    let int = nets.create("int", Some("10.89.9.0/24"), None, true, 2).unwrap();
    let (c1, c2, c3) = (sb.container("c1"), sb.container("c2"), sb.container("c3"));
    let ports = parse_publish("18082:80").unwrap();
    let e = attach(
        &sb.root,
        &AttachRequest {
            ports: &ports,
            ..req("bbbb1", &c1, &int)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("internal"), "{e}");
    let a1 = attach(&sb.root, &req("bbbb1", &c1, &int)).unwrap();
    let a3 = attach(&sb.root, &req("bbbb3", &c3, &int)).unwrap();
    // A container on the default network gives the host side a reachable address.
    attach(&sb.root, &req("bbbb2", &c2, &def)).unwrap();
    assert_eq!(a1.gateway, None);
    assert!(a1.ip.starts_with("10.89.9."), "{a1:?}");

    let (_, routes, _) = in_ns(&c1, "ip route");
    assert!(!routes.contains("default"), "{routes}");
    // The host side listens on every address; the internal container cannot reach it.
    let listener = std::net::TcpListener::bind("0.0.0.0:18083").unwrap();
    let e = connect_from(&c1, "10.88.0.1:18083").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENETUNREACH), "{e}");
    let (ok, _, _) = in_ns(&c1, "busybox ping -c1 -W1 10.89.9.1");
    assert!(!ok, "the internal bridge has no address");
    let (ok, _, err) = in_ns(&c1, "ip route get 10.88.0.1");
    assert!(!ok && err.contains("unreachable"), "{err}");
    // The host side has no route into the internal subnet either.
    assert!(!try_sh(&format!("ip route get {}", a1.ip)).1.contains("vessel1"));
    // The default network's container does reach the host side.
    connect_from(&c2, "10.88.0.1:18083").expect("default network to host");
    drop(listener);
    // Containers on the internal network reach each other.
    let (ok, out, err) = in_ns(&c1, &format!("busybox ping -c1 -W2 {}", a3.ip));
    assert!(ok, "{out}{err}");
    for (id, ns, net) in [("bbbb1", &c1, "int"), ("bbbb3", &c3, "int"), ("bbbb2", &c2, "vessel")] {
        detach(&sb.root, id, net, "eth0", Some(ns)).unwrap();
    }
    assert!(ipam_files(&sb.root, "int").is_empty());
}

#[test]
fn detach_releases_addresses_300_cycles_on_a_slash_24() {
    let Some(sb) = sandbox("detach_releases_addresses_300_cycles_on_a_slash_24") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.create("small", Some("10.89.50.0/24"), None, false, 2).unwrap();
    let c1 = sb.container("c1");
    let ports = parse_publish("18090:80").unwrap();
    let (mut att, mut det) = (Duration::ZERO, Duration::ZERO);
    let mut seen = std::collections::HashSet::new();
    for i in 0..300 {
        let t = Instant::now();
        let a = attach(
            &sb.root,
            &AttachRequest {
                ports: &ports,
                ..req("cccc1", &c1, &net)
            },
        )
        .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        att += t.elapsed();
        seen.insert(a.ip);
        let t = Instant::now();
        detach(&sb.root, "cccc1", "small", "eth0", Some(&c1)).unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        det += t.elapsed();
    }
    eprintln!(
        "timing: 300 cycles, attach {:?} each, detach {:?} each (with a published port), {} distinct addresses",
        att / 300,
        det / 300,
        seen.len()
    );
    // host-local hands addresses out round-robin: 253 distinct ones, then reuse.
    assert_eq!(seen.len(), 253);
    assert!(ipam_files(&sb.root, "small").is_empty());
    assert!(attached(&sb.root).unwrap().is_empty());
    let nat = sh("iptables -t nat -S");
    assert!(!nat.contains("CNI-DN-"), "{nat}");
    assert_eq!(
        nat.matches("-N CNI-").count(),
        3,
        "only portmap's shared chains are left: {nat}"
    );
}

#[test]
fn detach_after_the_namespace_is_gone() {
    let Some(sb) = sandbox("detach_after_the_namespace_is_gone") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.get(DEFAULT_NETWORK).unwrap();
    let c1 = sb.container("c1");
    let ports = parse_publish("127.0.0.1:18081:80").unwrap();
    let a = attach(
        &sb.root,
        &AttachRequest {
            ports: &ports,
            ..req("dddd1", &c1, &net)
        },
    )
    .unwrap();
    assert_eq!(ipam_files(&sb.root, "vessel"), vec![a.ip.clone()]);
    let nat = sh("iptables -t nat -S");
    assert!(nat.contains("CNI-DN-") && nat.contains("id: \\\"dddd1\\\""), "{nat}");
    let filter = sh("iptables -S");
    assert!(filter.contains(&a.ip), "{filter}");

    // The crash: the namespace goes away without a DEL.
    netns::remove(&c1).unwrap();
    detach(&sb.root, "dddd1", "vessel", "eth0", Some(&c1)).unwrap();
    assert!(ipam_files(&sb.root, "vessel").is_empty());
    let nat = sh("iptables -t nat -S");
    assert!(!nat.contains("CNI-DN-") && !nat.contains("dddd1"), "{nat}");
    assert_eq!(nat.matches("-N CNI-").count(), 3, "no masquerade chain is left: {nat}");
    let filter = sh("iptables -S");
    assert!(!filter.contains(&a.ip), "{filter}");
    assert!(attached(&sb.root).unwrap().is_empty());
    detach(&sb.root, "dddd1", "vessel", "eth0", None).unwrap();

    // The address and the port are free again: a new container gets both.
    let c2 = sb.container("c2");
    let b = attach(
        &sb.root,
        &AttachRequest {
            ports: &ports,
            ip: Some(&a.ip),
            ..req("dddd2", &c2, &net)
        },
    )
    .unwrap();
    assert_eq!(b.ip, a.ip);
    let www = sb.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "second\n").unwrap();
    let _httpd = Server::start(
        &c2,
        &["busybox", "httpd", "-f", "-p", "80", "-h", www.to_str().unwrap()],
    );
    assert!(http_get("127.0.0.1:18081").contains("second"));
    // Without a namespace argument at all (the engine lost it): same clean-up.
    drop(_httpd);
    netns::remove(&c2).unwrap();
    detach(&sb.root, "dddd2", "vessel", "eth0", None).unwrap();
    assert!(ipam_files(&sb.root, "vessel").is_empty());
    assert!(!sh("iptables -t nat -S").contains("dddd2"));
}

#[test]
fn missing_plugins_say_how_to_install_them() {
    let Some(sb) = sandbox_with_env(
        "missing_plugins_say_how_to_install_them",
        &[("VESSEL_CNI_PATH", "/nonexistent-vessel-cni")],
    ) else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.get(DEFAULT_NETWORK).unwrap();
    let c1 = sb.container("c1");
    let e = attach(&sb.root, &req("eeee1", &c1, &net)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "CNI plugin bridge not found in /nonexistent-vessel-cni: apt-get install containernetworking-plugins"
    );
    assert!(attached(&sb.root).unwrap().is_empty());
    let (_, links, _) = in_ns(&c1, "ip -o link");
    assert!(!links.contains("eth0"), "{links}");
}

#[test]
fn ipv6_network() {
    let Some(sb) = sandbox("ipv6_network") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.create("six", Some("fd00:89:1::/64"), None, false, 2).unwrap();
    assert_eq!(net.gateway.as_deref(), Some("fd00:89:1::1"));
    let (c1, c2) = (sb.container("c1"), sb.container("c2"));
    let t = Instant::now();
    let a1 = attach(&sb.root, &req("ffff1", &c1, &net)).unwrap();
    eprintln!("timing: IPv6 attach {:?}", t.elapsed());
    let a2 = attach(&sb.root, &req("ffff2", &c2, &net)).unwrap();
    assert_eq!((a1.prefix, a1.gateway.as_deref()), (64, Some("fd00:89:1::1")));
    assert!(a1.ip.starts_with("fd00:89:1::"), "{a1:?}");
    let (ok, out, err) = in_ns(&c1, &format!("busybox ping -c1 -W2 {}", a2.ip));
    assert!(ok, "{out}{err}");
    let (_, routes, _) = in_ns(&c1, "ip -6 route");
    assert!(routes.contains("default via fd00:89:1::1"), "{routes}");
    netns::remove(&c2).unwrap();
    detach(&sb.root, "ffff1", "six", "eth0", Some(&c1)).unwrap();
    detach(&sb.root, "ffff2", "six", "eth0", None).unwrap();
    assert!(ipam_files(&sb.root, "six").is_empty());
    let nat = sh("ip6tables -t nat -S");
    assert!(!nat.contains("ffff"), "{nat}");
}

#[test]
fn detach_after_a_crash_in_the_middle_of_attach() {
    let Some(sb) = sandbox("detach_after_a_crash_in_the_middle_of_attach") else {
        return;
    };
    let nets = Networks::open(&sb.root);
    let net = nets.get(DEFAULT_NETWORK).unwrap();
    let c1 = sb.container("c1");
    let e = attach(&sb.root, &req("gggg1", &sb.dir.join("no-such-ns"), &net)).unwrap_err();
    assert!(e.to_string().contains("is not a network namespace"), "{e}");
    let ports = parse_publish("18085:80").unwrap();
    attach(
        &sb.root,
        &AttachRequest {
            ports: &ports,
            ..req("gggg1", &c1, &net)
        },
    )
    .unwrap();
    // What a crash during ADD leaves: the entry written before ADD, without result.
    let cache = sb.root.join("cni/cache/vessel-gggg1-eth0");
    let mut entry: serde_json::Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    entry.as_object_mut().unwrap().remove("result");
    std::fs::write(&cache, serde_json::to_vec(&entry).unwrap()).unwrap();
    assert_eq!(attachment(&sb.root, "gggg1", "vessel", "eth0").unwrap(), None);
    assert_eq!(attached(&sb.root).unwrap().len(), 1);
    detach(&sb.root, "gggg1", "vessel", "eth0", Some(&c1)).unwrap();
    assert!(ipam_files(&sb.root, "vessel").is_empty());
    assert!(!sh("iptables -t nat -S").contains("CNI-DN-"));
    let (_, links, _) = in_ns(&c1, "ip -o link");
    assert!(!links.contains("eth0"), "{links}");
    // Attaching again over a stale entry detaches it first.
    attach(&sb.root, &req("gggg1", &c1, &net)).unwrap();
    let again = attach(&sb.root, &req("gggg1", &c1, &net)).unwrap();
    assert_eq!(ipam_files(&sb.root, "vessel"), vec![again.ip.clone()]);
    detach(&sb.root, "gggg1", "vessel", "eth0", Some(&c1)).unwrap();
    assert!(ipam_files(&sb.root, "vessel").is_empty());
}

#[test]
fn warm_pool_and_ports_published_on_a_warm_attachment() {
    let Some(sb) = sandbox("warm_pool_and_ports_published_on_a_warm_attachment") else {
        return;
    };
    let net = Networks::open(&sb.root).get(DEFAULT_NETWORK).unwrap();
    let run = sb.root.join("run");
    let pool = Pool::open(&sb.root, &run.join("netns"), &run.join("warm"));
    assert!(pool.take("vessel").unwrap().is_none());
    let id = vessel_net::warm::new_id().unwrap();
    let ns = pool.netns(&id);
    netns::create(&ns).unwrap();
    setup_loopback(&ns).unwrap();
    let a = attach(&sb.root, &req(&id, &ns, &net)).unwrap();
    // Kept only while the pool has room.
    assert!(!pool.give("vessel", &id, 0).unwrap());
    assert!(pool.give("vessel", &id, 2).unwrap());
    assert!(pool.is_free("vessel", &id));
    assert_eq!(pool.free("vessel"), vec![id.clone()]);
    let w = pool.take("vessel").unwrap().unwrap();
    assert_eq!((w.cni_id.as_str(), &w.netns, &w.attachment), (id.as_str(), &ns, &a));
    assert!(pool.take("vessel").unwrap().is_none(), "taken twice");

    // Ports on the taken attachment: portmap alone, on and off again.
    let ports = parse_publish("127.0.0.1:18082:80").unwrap();
    publish(&sb.root, &id, &net, "eth0", &ns, &ports).unwrap();
    let comment = format!("id: \\\"{id}\\\"");
    let nat = sh("iptables -t nat -S");
    assert!(nat.contains("CNI-DN-") && nat.contains(&comment), "{nat}");
    let e = publish(&sb.root, &id, &net, "eth0", &ns, &ports).unwrap_err();
    assert!(e.to_string().contains("already publishes"), "{e}");
    unpublish(&sb.root, &id, "vessel", "eth0", &ns).unwrap();
    let nat = sh("iptables -t nat -S");
    assert!(!nat.contains("CNI-DN-"), "{nat}");
    assert_eq!(ipam_files(&sb.root, "vessel"), vec![a.ip.clone()]);
    assert_eq!(attachment(&sb.root, &id, "vessel", "eth0").unwrap(), Some(a.clone()));

    // A warm one whose namespace is gone (a reboot) is released when met, not handed out.
    assert!(pool.give("vessel", &id, 2).unwrap());
    netns::remove(&ns).unwrap();
    assert!(pool.take("vessel").unwrap().is_none());
    assert!(ipam_files(&sb.root, "vessel").is_empty());
    assert!(attached(&sb.root).unwrap().is_empty());
    assert!(pool.free("vessel").is_empty());

    // drain releases every free one.
    for _ in 0..2 {
        let id = vessel_net::warm::new_id().unwrap();
        let ns = pool.netns(&id);
        netns::create(&ns).unwrap();
        attach(&sb.root, &req(&id, &ns, &net)).unwrap();
        assert!(pool.give("vessel", &id, 2).unwrap());
    }
    assert_eq!(pool.drain("vessel").unwrap(), 2);
    assert!(ipam_files(&sb.root, "vessel").is_empty());
    assert!(attached(&sb.root).unwrap().is_empty());
}

#[test]
fn two_roots_share_one_pool_and_release_all_then_remove_shared() {
    let Some(sb) = sandbox("two_roots_share_one_pool_and_release_all_then_remove_shared") else {
        return;
    };
    let host = vessel_net::HostState::open();
    // Two roots, each with its own definitions and its own CNI cache in the host state.
    let (ra, rb) = (sb.dir.join("a"), sb.dir.join("b"));
    let (sa, sb_state) = (host.register(&ra).unwrap(), host.register(&rb).unwrap());
    let (na, nb) = (
        Networks::open(&ra).get(DEFAULT_NETWORK).unwrap(),
        Networks::open(&rb).get(DEFAULT_NETWORK).unwrap(),
    );
    let mut ips = Vec::new();
    for (state, net, id) in [
        (&sa, &na, "ra1"),
        (&sb_state, &nb, "rb1"),
        (&sa, &na, "ra2"),
        (&sb_state, &nb, "rb2"),
    ] {
        let ns = sb.container(id);
        let ports = if id == "ra1" {
            parse_publish("18090:80").unwrap()
        } else {
            Vec::new()
        };
        let a = attach(
            state,
            &AttachRequest {
                ports: &ports,
                ..req(id, &ns, net)
            },
        )
        .unwrap();
        ips.push(a.ip);
    }
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4, "{ips:?}");
    assert_eq!(ipam_files(&sb.root, "vessel"), unique);
    // A network of root b avoids root a's: another bridge, another subnet.
    let a_net = Networks::open(&ra).create("mine", None, None, false, 0).unwrap();
    let b_net = Networks::open(&rb).create("mine", None, None, false, 0).unwrap();
    assert_ne!(a_net.bridge, b_net.bridge);
    assert_ne!(a_net.subnet, b_net.subnet);
    // Root a's whole cache is released: its namespaces, addresses and rules go, b's stay.
    let released = vessel_net::release_all(&sa).unwrap();
    assert_eq!(released.len(), 2);
    assert!(!sb.dir.join("ns/ra1").exists() && !sb.dir.join("ns/ra2").exists());
    assert_eq!(ipam_files(&sb.root, "vessel").len(), 2);
    let filter = sh("iptables -S");
    assert!(!filter.contains(&format!("{}/32", ips[0])) && filter.contains(&format!("{}/32", ips[1])));
    // The bridge and the firewall plugin's chains stay while b's veths and rules are
    // there (portmap's go: no container publishes a port any more); then they go too.
    let removed = host.remove_shared("vessel0").unwrap();
    assert!(removed.iter().all(|r| r.contains("nat/CNI-HOSTPORT-")), "{removed:?}");
    assert!(sh("iptables -S").contains("-N CNI-FORWARD"));
    assert!(!sh("ip -o link show vessel0").is_empty());
    vessel_net::release_all(&sb_state).unwrap();
    let removed = host.remove_shared("vessel0").unwrap();
    assert!(removed.contains(&"bridge vessel0".to_string()), "{removed:?}");
    assert!(!sh("iptables-save").contains("CNI-"), "{}", sh("iptables-save"));
    assert!(!host.ipam_dir("vessel0").exists());
    host.unregister(&ra).unwrap();
    host.unregister(&rb).unwrap();
    assert!(host.roots().unwrap().is_empty());
}
