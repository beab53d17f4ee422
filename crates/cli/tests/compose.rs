//! docker compose (Debian's docker-compose 1.29, installed by scripts/setup without its
//! recommended docker.io) against `vessel serve`: two services on a user network, a
//! published port, a named volume, environment and a healthcheck; `up -d`, `ps`,
//! `logs`, `exec`, `down -v`. The server and compose run inside a network namespace the
//! test makes, so the bridge, the veths and the published port live only there.

mod api_server;
mod instance;
mod run_vessel;

use std::process::{Command, Output, Stdio};

use api_server::{tools, Server};
use instance::{have, stderr, stdout, wait_for, Instance, TestNetns};

const COMPOSE: &str = "/usr/bin/docker-compose";

const FILE: &str = r#"version: "3.7"
services:
  web:
    image: localhost/bb:1
    command: ["sh", "-c", "mkdir -p /w && echo $$GREETING > /w/index.html && echo $$GREETING > /data/seen && echo web-up && httpd -f -p 80 -h /w"]
    environment:
      GREETING: hello-compose
    ports:
      - "18080:80"
    volumes:
      - data:/data
    networks: [front]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1/index.html"]
      interval: 200ms
      retries: 3
  client:
    image: localhost/bb:1
    command: ["sh", "-c", "until wget -q -O- http://web/index.html; do sleep 0.2; done; echo client-done; sleep 1000"]
    networks: [front]
    depends_on: [web]
networks:
  front: {}
volumes:
  data: {}
"#;

/// `docker-compose -p vt ARGS` in the project dir, inside the test's namespace.
fn compose(ns: &TestNetns, s: &Server, dir: &std::path::Path, args: &[&str]) -> Output {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.0))
        .arg(COMPOSE)
        .args(["--no-ansi", "-p", "vt"])
        .args(args)
        .current_dir(dir)
        .envs(s.env())
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!(
        "docker-compose {args:?}: {}\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

fn compose_ok(ns: &TestNetns, s: &Server, dir: &std::path::Path, args: &[&str]) -> String {
    let o = compose(ns, s, dir, args);
    assert!(o.status.success(), "docker-compose {args:?}: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn compose_up_ps_logs_exec_down() {
    if !tools() || !have(&["docker-compose"]) || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    let ns = TestNetns::new("compose");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    i.busybox();
    let s = Server::start(&i);
    let dir = i.dir.path().join("proj");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), FILE).unwrap();

    compose_ok(&ns, &s, &dir, &["up", "-d"]);
    // The network, the volume and the containers with compose's labels.
    assert!(s.docker_ok(&["network", "ls"]).contains("vt_front"));
    assert!(s.docker_ok(&["volume", "ls", "-q"]).contains("vt_data"));
    wait_for("web healthy", || {
        compose_ok(&ns, &s, &dir, &["ps"])
            .lines()
            .any(|l| l.starts_with("vt_web_1") && l.contains("Up (healthy)"))
    });
    let ps = compose_ok(&ns, &s, &dir, &["ps"]);
    assert!(ps.contains("0.0.0.0:18080->80/tcp"), "{ps}");
    assert!(
        ps.lines().any(|l| l.starts_with("vt_client_1") && l.contains("Up")),
        "{ps}"
    );
    // The published port answers on the namespace's loopback, with the environment's text.
    let got = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "busybox",
            "wget",
            "-q",
            "-O-",
            "http://127.0.0.1:18080/index.html",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&got), "hello-compose\n");
    // The client reached the web service by its service name (compose's network alias).
    wait_for("the client's fetch", || {
        let logs = compose_ok(&ns, &s, &dir, &["logs", "client"]);
        logs.contains("client_1  | hello-compose") && logs.contains("client-done")
    });
    assert!(compose_ok(&ns, &s, &dir, &["logs", "web"]).contains("web_1     | web-up"));
    // The named volume holds what the service wrote.
    let data = i.root().join("volumes/vt_data/_data/seen");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "hello-compose\n");

    // exec into a running service (hijacked exec through the API).
    assert_eq!(
        compose_ok(&ns, &s, &dir, &["exec", "-T", "web", "cat", "/data/seen"]),
        "hello-compose\n"
    );

    compose_ok(&ns, &s, &dir, &["down", "-v"]);
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "");
    assert!(!s.docker_ok(&["network", "ls"]).contains("vt_front"));
    assert_eq!(s.docker_ok(&["volume", "ls", "-q"]).trim(), "");
    assert!(!i.root().join("volumes/vt_data").exists());
}
