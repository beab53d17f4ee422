//! Networks, named volumes and images through `vessel serve` and the `vessel` CLI: the
//! real docker CLI against a server on a temp socket and root. Network work happens
//! only inside a network namespace the test makes (the server runs in it, as the
//! "host"), never on the machine's own network.

mod api_server;
#[path = "../../image/tests/common/mod.rs"]
mod common;
mod instance;
mod run_vessel;

use api_server::{tools, Server};
use instance::{have, stderr, Instance, TestNetns};

fn cni() -> bool {
    std::path::Path::new("/usr/lib/cni/bridge").exists()
}

#[test]
fn docker_network_create_ls_inspect_connect_rm() {
    if !tools() || !cni() {
        return;
    }
    let ns = TestNetns::new("apinet");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    let s = Server::start(&i);

    let id = s.docker_ok(&[
        "network",
        "create",
        "--subnet",
        "10.89.77.0/24",
        "--label",
        "team=a",
        "front",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    s.docker_ok(&["network", "create", "--subnet", "10.89.78.0/24", "back"]);
    let ls = s.docker_ok(&["network", "ls"]);
    assert!(
        ls.contains(" front ") && ls.contains(" back ") && ls.contains(" bridge "),
        "{ls}"
    );
    // The label filter compose uses to find its networks.
    let labelled = s.docker_ok(&["network", "ls", "-q", "--filter", "label=team=a"]);
    assert_eq!(labelled.trim(), &id.trim()[..12]);
    assert_eq!(
        s.docker_ok(&[
            "network",
            "inspect",
            "front",
            "--format",
            "{{(index .IPAM.Config 0).Subnet}} {{.Driver}} {{.Labels.team}}"
        ])
        .trim(),
        "10.89.77.0/24 bridge a"
    );
    // The same network by id prefix.
    assert!(s
        .docker_ok(&["network", "inspect", &id.trim()[..10]])
        .contains("\"Name\": \"front\""));
    assert!(s.docker_err(&["network", "create", "front"]).contains("already exists"));
    assert!(s
        .docker_err(&["network", "inspect", "vessel-none"])
        .contains("No such network: vessel-none"));

    // A server on the network, reached by name from a second container on it.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        img,
        "sh",
        "-c",
        "mkdir -p /w && echo served > /w/index.html && httpd -f -p 80 -h /w",
    ]);
    let ip = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.front.IPAddress}}",
        "web",
    ]);
    assert!(ip.starts_with("10.89.77."), "{ip}");
    let members = s.docker_ok(&[
        "network",
        "inspect",
        "front",
        "--format",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
    ]);
    assert_eq!(members.trim(), format!("web {}/24", ip.trim()));
    let got = s.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        img,
        "wget",
        "-q",
        "-O-",
        "http://web/index.html",
    ]);
    assert_eq!(got, "served\n");

    // A running container connected to a second network, as docker does it: one more
    // interface (eth1) with an address of that network, no second default route; it
    // reaches a server there by address and by name.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "peer",
        "--network",
        "back",
        img,
        "sh",
        "-c",
        "mkdir /w && echo back > /w/index.html && httpd -f -p 80 -h /w",
    ]);
    let peer_ip = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.back.IPAddress}}",
        "peer",
    ]);
    let peer_ip = peer_ip.trim();
    s.docker_ok(&["network", "connect", "back", "web"]);
    let ips = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.front.IPAddress}} {{.NetworkSettings.Networks.back.IPAddress}}",
        "web",
    ]);
    let (front_ip, back_ip) = ips.trim().split_once(' ').unwrap();
    assert_eq!(front_ip, ip.trim());
    assert!(back_ip.starts_with("10.89.78."), "{ips}");
    let eth1 = s.docker_ok(&["exec", "web", "ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains(&format!("inet {back_ip}/24")), "{eth1}");
    let routes = s.docker_ok(&["exec", "web", "ip", "route"]);
    assert_eq!(routes.matches("default").count(), 1, "{routes}");
    assert!(routes.contains("default via 10.89.77.1 dev eth0"), "{routes}");
    let url = format!("http://{peer_ip}/index.html");
    assert_eq!(s.docker_ok(&["exec", "web", "wget", "-q", "-O-", &url]), "back\n");
    assert_eq!(
        s.docker_ok(&["exec", "web", "wget", "-q", "-O-", "http://peer/index.html"]),
        "back\n"
    );
    let members = s.docker_ok(&[
        "network",
        "inspect",
        "back",
        "--format",
        "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
    ]);
    assert!(members.contains(&format!("web={back_ip}/24")), "{members}");
    let ps = s.docker_ok(&["ps", "--filter", "name=web", "--format", "{{.Networks}}"]);
    assert!(ps.contains("front") && ps.contains("back"), "{ps}");
    // A restart brings both attachments back.
    s.docker_ok(&["restart", "-t", "1", "web"]);
    let eth1 = s.docker_ok(&["exec", "web", "ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(eth1.contains("inet 10.89.78."), "{eth1}");
    assert_eq!(s.docker_ok(&["exec", "web", "wget", "-q", "-O-", &url]), "back\n");
    let back_ip = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.back.IPAddress}}",
        "web",
    ]);
    let back_ip = back_ip.trim().to_string();
    assert!(ipam_holds(&ns, "back", &back_ip));
    // Disconnect takes the interface out at once and gives the address back.
    s.docker_ok(&["network", "disconnect", "back", "web"]);
    let e = s.docker_err(&["exec", "web", "ip", "link", "show", "eth1"]);
    assert!(e.contains("eth1"), "{e}");
    assert_eq!(
        s.docker_ok(&["inspect", "--format", "{{len .NetworkSettings.Networks}}", "web"])
            .trim(),
        "1"
    );
    assert!(!ipam_holds(&ns, "back", &back_ip));
    // The first network, the one its namespace was made for, stays while it runs.
    let e = s.docker_err(&["network", "disconnect", "front", "web"]);
    assert!(e.contains("stop it, disconnect it, then start it again"), "{e}");
    // podman's verbs in the vessel CLI, on the same records.
    i.ok(&["network", "connect", "back", "web"]);
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", "web"])).unwrap();
    let nets = &v[0]["NetworkSettings"]["Networks"];
    assert_eq!(nets["back"]["Interface"], "eth1", "{nets}");
    assert!(s.docker_ok(&["exec", "web", "ip", "-o", "link"]).contains("eth1"));
    i.ok(&["network", "disconnect", "back", "web"]);
    assert!(!s.docker_ok(&["exec", "web", "ip", "-o", "link"]).contains("eth1"));
    // Connected again: removing the container releases that attachment too.
    s.docker_ok(&["network", "connect", "back", "web"]);
    let back_ip = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.NetworkSettings.Networks.back.IPAddress}}",
        "web",
    ]);
    let back_ip = back_ip.trim().to_string();
    assert!(ipam_holds(&ns, "back", &back_ip));
    // A created container moves: disconnect leaves it on no network, connect puts it on
    // another, and it runs there.
    s.docker_ok(&[
        "create",
        "--name",
        "mover",
        "--network",
        "front",
        img,
        "sh",
        "-c",
        "ip -o -4 addr show",
    ]);
    s.docker_ok(&["network", "disconnect", "front", "mover"]);
    assert_eq!(
        s.docker_ok(&["inspect", "--format", "{{.HostConfig.NetworkMode}}", "mover"])
            .trim(),
        "none"
    );
    s.docker_ok(&["network", "connect", "back", "mover"]);
    let out = s.docker_ok(&["start", "-a", "mover"]);
    assert!(out.contains("inet 10.89.78.") && !out.contains("10.89.77."), "{out}");
    assert!(s
        .docker_err(&["network", "disconnect", "front", "mover"])
        .contains("is not connected to network front"));

    // Removal: refused while a container is on it; the default network never.
    let e = s.docker_err(&["network", "rm", "front"]);
    assert!(e.contains("in use") && e.contains("web"), "{e}");
    assert!(s.docker_err(&["network", "rm", "bridge"]).contains("cannot be removed"));
    s.docker_ok(&["rm", "-f", "web", "mover", "peer"]);
    assert!(!ipam_holds(&ns, "back", &back_ip));
    s.docker_ok(&["network", "rm", "front", "back"]);
    let ls = s.docker_ok(&["network", "ls"]);
    assert!(!ls.contains("front") && !ls.contains(" back "), "{ls}");
    // The bridges went with them (the namespace keeps only the default one's), and no
    // veth is left.
    let links = ns_links(&ns);
    assert!(!links.contains("vessel1") && !links.contains("vessel2"), "{links}");
    assert!(!links.contains("veth"), "{links}");
}

/// Whether host-local holds address `ip` of network `net` in the test namespace's
/// host-wide state (`/run/vessel-net/netns-<inode>/ipam/<bridge>/<net>/<ip>`).
fn ipam_holds(ns: &TestNetns, net: &str, ip: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(format!("/run/netns/{}", ns.0)).unwrap().ino();
    let ipam = std::path::PathBuf::from(format!("/run/vessel-net/netns-{ino}/ipam"));
    std::fs::read_dir(&ipam)
        .map(|d| d.flatten().any(|b| b.path().join(net).join(ip).exists()))
        .unwrap_or(false)
}

fn ns_links(ns: &TestNetns) -> String {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, "ip", "-o", "link"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn named_volumes_with_the_vessel_cli() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    assert_eq!(i.ok(&["volume", "create", "data"]).trim(), "data");
    // Made again: the same volume, no error (as docker).
    i.ok(&["volume", "create", "data"]);
    assert!(i.ok(&["volume", "ls"]).contains(" local   data "));
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["volume", "inspect", "data"])).unwrap();
    let mountpoint = i.root().join("volumes/data/_data");
    assert_eq!(v[0]["Mountpoint"].as_str(), Some(mountpoint.to_str().unwrap()));
    // Data written by one container is read by the next, also read-only.
    i.ok(&["run", "--rm", "-v", "data:/d", img, "sh", "-c", "echo one > /d/f"]);
    assert_eq!(i.ok(&["run", "--rm", "-v", "data:/d:ro", img, "cat", "/d/f"]), "one\n");
    let ro = i.v(&["run", "--rm", "-v", "data:/d:ro", img, "touch", "/d/g"]);
    assert!(!ro.status.success());
    assert_eq!(std::fs::read_to_string(mountpoint.join("f")).unwrap(), "one\n");
    // A volume named by `run` is made on first use.
    i.ok(&["run", "--rm", "-v", "auto:/d", img, "true"]);
    assert_eq!(i.ok(&["volume", "ls", "-q"]), "auto\ndata\n");
    // Bad names are refused before anything is made.
    let bad = i.v(&["run", "--rm", "-v", "_x:/d", img, "true"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("volume name"), "{}", stderr(&bad));
    // In use (by a container in any state): rm refused, naming it.
    i.ok(&["create", "--name", "holder", "-v", "data:/d", img, "true"]);
    let o = i.v(&["volume", "rm", "data"]);
    assert!(!o.status.success() && stderr(&o).contains("in use by container(s) holder"));
    // prune takes only what no container uses.
    let pruned = i.ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains("Deleted Volumes:\nauto\n"), "{pruned}");
    assert_eq!(i.ok(&["volume", "ls", "-q"]), "data\n");
    i.ok(&["rm", "holder"]);
    i.ok(&["volume", "rm", "data"]);
    assert!(!i.root().join("volumes/data").exists());
    let o = i.v(&["volume", "inspect", "data"]);
    assert!(!o.status.success() && stderr(&o).contains("no such volume: data"));
    // -f: a missing volume is no error.
    i.ok(&["volume", "rm", "-f", "data"]);
}

#[test]
fn docker_volume_create_ls_inspect_rm_and_run_v() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    assert_eq!(s.docker_ok(&["volume", "create", "--label", "x=y", "dv"]).trim(), "dv");
    assert!(s.docker_ok(&["volume", "ls", "-q"]).contains("dv"));
    assert_eq!(
        s.docker_ok(&["volume", "ls", "-q", "--filter", "label=x=y"]).trim(),
        "dv"
    );
    assert_eq!(s.docker_ok(&["volume", "ls", "-q", "--filter", "label=x=z"]).trim(), "");
    assert_eq!(
        s.docker_ok(&[
            "volume",
            "inspect",
            "--format",
            "{{.Mountpoint}} {{.Driver}} {{.Labels.x}}",
            "dv"
        ])
        .trim(),
        format!("{} local y", i.root().join("volumes/dv/_data").display())
    );
    s.docker_ok(&["run", "--rm", "-v", "dv:/d", img, "sh", "-c", "echo two > /d/f"]);
    assert_eq!(
        s.docker_ok(&["run", "--rm", "-v", "dv:/d:ro", img, "cat", "/d/f"]),
        "two\n"
    );
    // The vessel CLI sees the same volume.
    assert!(i.ok(&["volume", "ls", "-q"]).contains("dv"));
    s.docker_ok(&["run", "-d", "--name", "h", "-v", "dv:/d", img, "sleep", "100"]);
    assert_eq!(
        s.docker_ok(&[
            "inspect",
            "--format",
            "{{(index .Mounts 0).Type}} {{(index .Mounts 0).Name}} {{(index .Mounts 0).Destination}}",
            "h"
        ])
        .trim(),
        "volume dv /d"
    );
    let e = s.docker_err(&["volume", "rm", "dv"]);
    assert!(e.contains("in use by container(s) h"), "{e}");
    // An unused volume made by `run -v` goes with prune; dv stays while h exists.
    s.docker_ok(&["run", "--rm", "-v", "scratch:/d", img, "true"]);
    let pruned = s.docker_ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains("scratch") && !pruned.contains("dv"), "{pruned}");
    s.docker_ok(&["rm", "-f", "h"]);
    s.docker_ok(&["volume", "rm", "dv"]);
    assert!(s
        .docker_err(&["volume", "inspect", "dv"])
        .contains("No such volume: dv"));
    // Raw API: a driver vessel lacks, and a name docker's rule refuses.
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Name\": \"nfs1\", \"Driver\": \"nfs\"}",
        "http://d/v1.41/volumes/create",
    ]);
    assert_eq!(code, 400, "{body}");
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Name\": \"../up\"}",
        "http://d/v1.41/volumes/create",
    ]);
    assert_eq!(code, 400, "{body}");
    assert!(!i.root().join("up").exists());
}

#[test]
fn docker_tag_push_with_registry_auth_then_pull_elsewhere() {
    if !tools() || !have(&["docker-registry", "htpasswd"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let t = tempfile::tempdir().unwrap();
    let htp = t.path().join("htpasswd");
    run_vessel::sh(
        &format!("htpasswd -Bbc {} alice s3cret 2>/dev/null", htp.display()),
        t.path(),
    );
    let reg = common::Registry::start(&t.path().join("reg"), Some(&htp));
    let s = Server::start(&i);
    let dest = format!("{}/team/bb:2", reg.addr);
    s.docker_ok(&["tag", img, &dest]);
    // The filters docker compose and `docker images` use.
    let pattern = format!("{}/team/*", reg.addr);
    let listed = s.docker_ok(&[
        "images",
        "--filter",
        &format!("reference={pattern}"),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]);
    assert_eq!(listed.trim(), dest);
    assert_eq!(s.docker_ok(&["images", "-q", "--filter", "dangling=true"]).trim(), "");
    assert!(s
        .docker_ok(&[
            "images",
            "--filter",
            "reference=localhost/bb:1",
            "--format",
            "{{.Repository}}"
        ])
        .contains("localhost/bb"));
    // Without credentials the registry refuses, and the stream's error says so.
    let e = s.docker_err(&["push", &dest]);
    assert!(e.contains(&reg.addr) && e.contains("401"), "{e}");
    // docker login: POST /auth checks the credentials with the registry (401 with its
    // words when it refuses them); the docker CLI then keeps them in its config.json
    // and sends them in X-Registry-Auth.
    let e = s.docker_err(&["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    assert!(e.contains(&reg.addr) && e.contains("Not authorized"), "{e}");
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!(
            "{{\"username\":\"alice\",\"password\":\"wrong\",\"serveraddress\":\"{}\"}}",
            reg.addr
        ),
        "http://d/v1.41/auth",
    ]);
    assert_eq!(code, 401, "{body}");
    let out = s.docker_ok(&["login", "-u", "alice", "-p", "s3cret", &reg.addr]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let cfg = s.socket.with_file_name("docker-config");
    let saved = std::fs::read_to_string(cfg.join("config.json")).unwrap();
    assert!(saved.contains(&base64_of("alice:s3cret")), "{saved}");
    let out = s.docker_ok(&["push", &dest]);
    assert!(
        out.contains("The push refers to repository") && out.contains("2: digest: sha256:"),
        "{out}"
    );
    // A second push finds every blob there.
    let again = s.docker_ok(&["push", &dest]);
    assert!(
        again.contains("Layer already exists") && !again.contains("Pushed"),
        "{again}"
    );
    // An image the server lacks: the API's 404.
    let e = s.docker_err(&["push", &format!("{}/team/none:1", reg.addr)]);
    assert!(e.contains("No such image"), "{e}");
    // Another root pulls what was pushed and runs it; the image id is the same.
    let fresh = Instance::new();
    fresh.ok(&["pull", "--creds", "alice:s3cret", &dest]);
    assert_eq!(fresh.ok(&["run", "--rm", &dest, "echo", "pushed"]), "pushed\n");
    let id = |inst: &Instance| {
        let v: serde_json::Value = serde_json::from_str(&inst.ok(&["image", "inspect", &dest])).unwrap();
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(id(&fresh), id(&i));
    s.docker_ok(&["rmi", &dest]);
    assert!(!s.docker_ok(&["images"]).contains("team/bb"));
}

/// Base64 (standard alphabet, padded) of `s`, as docker's config.json keeps `auth`.
fn base64_of(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[((n >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn docker_container_and_image_prune_with_filters() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    let names = || {
        let mut n: Vec<String> = s
            .docker_ok(&["ps", "-a", "--format", "{{.Names}}"])
            .lines()
            .map(String::from)
            .collect();
        n.sort();
        n.join(" ")
    };
    s.docker_ok(&["create", "--name", "keep", "--label", "keep=yes", img, "true"]);
    s.docker_ok(&["run", "--name", "old", "--label", "team=a", img, "true"]);
    s.docker_ok(&["run", "-d", "--name", "up", img, "sleep", "100"]);
    // until: none was made before an hour ago.
    let out = s.docker_ok(&["container", "prune", "-f", "--filter", "until=1h"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(names(), "keep old up");
    // label!: the exited one without the label goes; the running one stays.
    let old_id = s.docker_ok(&["inspect", "--format", "{{.Id}}", "old"]);
    let out = s.docker_ok(&["container", "prune", "-f", "--filter", "label!=keep"]);
    assert!(out.contains(old_id.trim()), "{out}");
    assert_eq!(names(), "keep up");
    // label=KEY=VALUE: the created one carrying it goes.
    s.docker_ok(&["container", "prune", "-f", "--filter", "label=keep=yes"]);
    assert_eq!(names(), "up");
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "http://d/v1.41/containers/prune?filters=%7B%22until%22%3A%5B%22soon%22%5D%7D",
    ]);
    assert_eq!(code, 400, "{body}");

    // Images: dangling only by default (the busybox image has a name); with -a every
    // image no container uses, here none while `up` runs on it.
    let image_id = s.docker_ok(&["images", "-q", "--no-trunc"]);
    s.docker_ok(&["image", "prune", "-f"]);
    s.docker_ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(s.docker_ok(&["images", "-q", "--no-trunc"]), image_id);
    s.docker_ok(&["rm", "-f", "up"]);
    let out = s.docker_ok(&["image", "prune", "-a", "-f"]);
    assert!(
        out.contains(&format!("deleted: {}", image_id.trim())) || out.contains(image_id.trim()),
        "{out}"
    );
    assert_eq!(s.docker_ok(&["images", "-q"]).trim(), "");
}
