//! `vessel serve` end to end: the real docker CLI (taken out of Debian's docker.io .deb
//! by scripts/setup to /opt/vessel-docker/bin/docker, never installed) against a server
//! on a temp socket and root, and raw HTTP (curl --unix-socket) for the errors.

mod api_server;
mod instance;
mod run_vessel;

use std::process::{Child, Command, Stdio};

use api_server::{tools, Server};
use instance::{have, stderr, stdout, wait_for, Instance};

#[test]
fn docker_cli_everyday_commands() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let mut s = Server::start(&i);
    assert!(s.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]).trim() == "1.41");
    let info = s.docker_ok(&["info", "--format", "{{.Images}} {{.OSType}}"]);
    assert_eq!(info.trim(), "1 linux");
    assert!(s.docker_ok(&["images"]).contains("localhost/bb"));

    // Foreground run: attach + start + wait; the output arrives and --rm removes it.
    assert_eq!(s.docker_ok(&["run", "--rm", img, "echo", "hi"]), "hi\n");
    let o = s.docker(&["run", "--rm", img, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "", "--rm containers are gone");

    // Detached, then the everyday commands; the CLI and `vessel ps` see the same records.
    let id = s.docker_ok(&["run", "-d", "--name", "x", img, "sh", "-c", "echo logged; sleep 100"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(s.docker_ok(&["ps"]).contains(" x\n"));
    assert!(i.ok(&["ps"]).contains(&id[..12]));
    // What the client leaves to the server, the server's environment chooses, as for
    // `vessel run`: no network (VESSEL_NETWORK=none: nothing on the machine's own network)
    // and the test's cgroup parent.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(i.root().join("containers").join(id).join("config.json")).unwrap())
            .unwrap();
    let cgroup = cfg["linux"]["cgroupsPath"].as_str().unwrap_or_default();
    assert!(cgroup.starts_with(&run_vessel::cgroup_parent(&i.root())), "{cgroup}");
    let netns = cfg["linux"]["namespaces"]
        .as_array()
        .and_then(|a| a.iter().find(|n| n["type"] == "network"))
        .cloned()
        .unwrap_or_default();
    assert!(netns.get("path").is_none(), "a network namespace of a bridge: {netns}");
    assert_eq!(
        s.docker_ok(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.Name}} {{.Config.Image}}",
            "x"
        ])
        .trim(),
        format!("running /x {img}")
    );
    wait_for("the log line", || s.docker_ok(&["logs", "x"]) == "logged\n");
    assert!(s.docker_ok(&["top", "x"]).contains("sleep 100"));
    s.docker_ok(&["stop", "-t", "1", "x"]);
    assert!(s.docker_ok(&["ps"]).lines().count() == 1, "only the header");
    assert!(s.docker_ok(&["ps", "-a"]).contains("Exited (137)"));
    assert!(i.ok(&["ps", "-a"]).contains("Exited"));
    // A container made by the CLI is seen by the server too.
    i.ok(&["create", "--name", "fromcli", img, "true"]);
    assert!(s
        .docker_ok(&["ps", "-a", "--filter", "name=fromcli"])
        .contains("fromcli"));
    // create, start, wait, pause/unpause, rename, kill; -e and --memory reach the container.
    let o = s.docker_ok(&[
        "run",
        "--rm",
        "-e",
        "A=from-api",
        "--memory",
        "64m",
        img,
        "sh",
        "-c",
        "echo $A",
    ]);
    assert_eq!(o, "from-api\n");
    s.docker_ok(&["create", "--name", "later", img, "sh", "-c", "exit 7"]);
    s.docker_ok(&["start", "later"]);
    assert_eq!(s.docker_ok(&["wait", "later"]).trim(), "7");
    s.docker_ok(&["run", "-d", "--name", "p", img, "sleep", "100"]);
    s.docker_ok(&["pause", "p"]);
    assert!(s.docker_ok(&["ps", "--filter", "name=p"]).contains("(Paused)"));
    s.docker_ok(&["unpause", "p"]);
    s.docker_ok(&["rename", "p", "q"]);
    s.docker_ok(&["kill", "q"]);
    assert_eq!(s.docker_ok(&["wait", "q"]).trim(), "137");
    s.docker_ok(&["rm", "later", "q"]);
    s.docker_ok(&["rm", "x", "fromcli"]);
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "");
    let missing = s.docker(&["rm", "x"]);
    assert!(!missing.status.success() && stderr(&missing).contains("No such container: x"));

    s.docker_ok(&["tag", img, "localhost/other:2"]);
    assert!(s.docker_ok(&["images"]).contains("localhost/other"));
    s.docker_ok(&["rmi", "localhost/other:2", img]);
    assert!(!s.docker_ok(&["images"]).contains("localhost/"));

    // SIGTERM: a clean stop, the socket removed.
    assert!(s.stop(), "serve exits 0 on SIGTERM");
    assert!(!s.socket.exists(), "socket removed");
    // No container's root file system stays mounted (the network pool's warm
    // namespaces under run/netns are the instance's, removed by its guard).
    let left: Vec<String> = i
        .mounts_under_root()
        .into_iter()
        .filter(|m| m.contains("/containers/"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn api_errors_are_clear_and_the_server_keeps_serving() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    // Unknown container: 404 with docker's message, on any /v1.NN prefix and none.
    for prefix in ["/v1.41", "/v1.40", ""] {
        let (code, body) = s.curl(&[&format!("http://d{prefix}/containers/vessel-nope/json")]);
        assert_eq!(code, 404);
        assert!(
            body.contains("\"message\":\"No such container: vessel-nope\""),
            "{body}"
        );
    }
    // Malformed JSON: 400, the parser's words.
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"Image\": ",
        "http://d/v1.41/containers/create",
    ]);
    assert_eq!(code, 400);
    assert!(body.contains("malformed JSON"), "{body}");
    // A wrong type: 400 too.
    let (code, _) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Image\": 5}",
        "http://d/v1.41/containers/create",
    ]);
    assert_eq!(code, 400);
    // A huge body (4 MiB) is refused without being read whole.
    let big = i.dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 4 << 20]).unwrap();
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", big.display()),
        "http://d/v1.41/containers/create",
    ]);
    assert_eq!(code, 413, "{body}");
    // Unknown image: 404 "No such image" (the docker CLI pulls on it).
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Image\": \"localhost/none:1\"}",
        "http://d/v1.41/containers/create",
    ]);
    assert_eq!(code, 404);
    assert!(body.contains("No such image"), "{body}");
    // A conflict: the name in use.
    s.docker_ok(&["run", "-d", "--name", "busy", img, "sleep", "100"]);
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "--data",
        &format!("{{\"Image\": \"{img}\"}}"),
        "http://d/v1.41/containers/create?name=busy",
    ]);
    assert_eq!(code, 409, "{body}");
    // A running container's removal without force: 409.
    let (code, _) = s.curl(&["-X", "DELETE", "http://d/v1.41/containers/busy"]);
    assert_eq!(code, 409);
    // A client that goes away during `logs -f`: the server goes on serving.
    let mut follower = Command::new("curl")
        .args(["-s", "-N", "--unix-socket"])
        .arg(&s.socket)
        .arg("http://d/v1.41/containers/busy/logs?follow=1&stdout=1&stderr=1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    follower.kill().unwrap();
    follower.wait().unwrap();
    let (code, body) = s.curl(&["http://d/_ping"]);
    assert_eq!((code, body.as_str()), (200, "OK"));
    let (code, _) = s.curl(&["-X", "DELETE", "http://d/v1.41/containers/busy?force=1"]);
    assert_eq!(code, 204);
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "");
}

/// A docker-registry process, killed on drop.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn docker_pull_from_a_loopback_registry_then_run() {
    if !tools() || !have(&["docker-registry", "skopeo"]) {
        return;
    }
    let i = Instance::new();
    let t = i.dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = t.join("reg.yml");
    std::fs::write(&cfg, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n", t.display())).unwrap();
    let _reg = Registry(
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run_vessel::sh(
        &format!(
            "umoci init --layout img && umoci new --image img:1 && umoci config --image img:1 --config.env PATH=/bin \
             && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin && cp /usr/bin/busybox b/rootfs/bin/ \
             && ln -s busybox b/rootfs/bin/echo && umoci repack --image img:1 b \
             && skopeo copy -q --dest-tls-verify=false oci:img:1 docker://127.0.0.1:{port}/api/bb:1"
        ),
        t,
    );
    let s = Server::start(&i);
    let name = format!("127.0.0.1:{port}/api/bb:1");
    let out = s.docker_ok(&["pull", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert!(s.docker_ok(&["images"]).contains(&format!("127.0.0.1:{port}/api/bb")));
    assert_eq!(s.docker_ok(&["run", "--rm", &name, "echo", "pulled"]), "pulled\n");
    // A tag the registry does not have: the pull fails with the registry's words.
    let o = s.docker(&["pull", &format!("127.0.0.1:{port}/api/bb:nope")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
}
