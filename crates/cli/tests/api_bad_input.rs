//! `vessel serve` against bad input: every error with the Docker API's status and a
//! `{"message": ...}` body, unknown fields accepted as docker does, bodies over the
//! limit refused (413), unknown ids 404 on every container route, path arguments with
//! `..` or `/` kept inside the root, slow and vanishing clients that never hold up the
//! others, and bytes that are not HTTP at all; after each, the server still serves.

mod instance;
mod run_vessel;
mod served;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use instance::{have, wait_for, Instance};
use served::{Server, DOCKER};

fn tools() -> bool {
    if !Path::new(DOCKER).exists() {
        eprintln!("\n!!!!! SKIPPED: no {DOCKER} (scripts/setup unpacks it) !!!!!\n");
        return false;
    }
    have(&["umoci", "busybox", "curl"])
}

/// The `message` of a JSON error body; panics (naming the body) when it is not one.
fn message(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON body ({e}): {body:?}"));
    v["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {body}"))
        .to_string()
}

/// The server answers `_ping` and its process runs.
fn still_serving(s: &mut Server) {
    assert!(s.alive(), "the server is gone");
    assert_eq!(s.curl(&["http://d/_ping"]), (200, "OK".to_string()));
}

/// Sends `raw` on a fresh connection and reads until the server closes it or 20 s
/// pass: what came back.
fn raw(s: &Server, raw: &[u8]) -> String {
    let mut c = UnixStream::connect(&s.socket).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = c.write_all(raw);
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn errors_are_json_with_the_api_status() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let mut s = Server::start(&i);
    let create = |body: &str, query: &str| {
        s.curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
            &format!("http://d/v1.41/containers/create{query}"),
        ])
    };
    // Malformed JSON, a wrong type, a JSON that is not an object.
    for body in [r#"{"Image": "#, r#"{"Image": 5}"#, "[1,2]", "\u{1}\u{2}"] {
        let (code, b) = create(body, "");
        assert_eq!(code, 400, "{body}: {b}");
        assert!(message(&b).contains("JSON"), "{b}");
    }
    // Unknown fields are accepted, as docker accepts them (newer clients send more).
    let (code, b) = create(
        &format!(r#"{{"Image":"{img}","Cmd":["true"],"NoSuchField":{{"x":[1]}},"HostConfig":{{"Bogus":true}}}}"#),
        "?name=unknown-fields",
    );
    assert_eq!(code, 201, "{b}");
    assert!(i.ok(&["ps", "-a"]).contains("unknown-fields"));
    s.curl(&["-X", "DELETE", "http://d/containers/unknown-fields"]);

    // Bodies over the limit: with a length, and chunked without one.
    let big = i.dir.path().join("big.json");
    std::fs::write(&big, format!(r#"{{"Image":"{}"}}"#, "x".repeat(4 << 20))).unwrap();
    let at = format!("@{}", big.display());
    for extra in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let args = [
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &at,
            ][..],
            extra,
            &["http://d/containers/create"][..],
        ]
        .concat();
        let (code, b) = s.curl(&args);
        assert_eq!(code, 413, "{extra:?}: {b}");
        message(&b);
    }
    // What the framework answers by itself: an unknown method, an unknown path, a
    // query or path that is not UTF-8.
    let (code, b) = s.curl(&["-X", "PUT", "http://d/containers/json"]);
    assert_eq!(code, 405, "{b}");
    message(&b);
    let (code, b) = s.curl(&["http://d/v1.41/no/such/route"]);
    assert_eq!(code, 404);
    message(&b);
    let (code, b) = s.curl(&["-X", "POST", "http://d/containers/create?name=%FF%FE"]);
    assert_eq!(code, 400, "{b}");
    message(&b);
    let (code, b) = s.curl(&["http://d/containers/%FF/json"]);
    assert!(code == 400 || code == 404, "{code} {b}");
    message(&b);

    // Unknown ids on every container route: docker's 404 and words.
    let routes: [(&str, &str); 14] = [
        ("GET", "/containers/nosuch/json"),
        ("POST", "/containers/nosuch/start"),
        ("POST", "/containers/nosuch/stop"),
        ("POST", "/containers/nosuch/restart"),
        ("POST", "/containers/nosuch/kill"),
        ("POST", "/containers/nosuch/wait"),
        ("POST", "/containers/nosuch/pause"),
        ("POST", "/containers/nosuch/unpause"),
        ("POST", "/containers/nosuch/rename?name=other"),
        ("GET", "/containers/nosuch/top"),
        ("GET", "/containers/nosuch/logs?stdout=1"),
        ("POST", "/containers/nosuch/attach?stream=1&stdout=1"),
        ("DELETE", "/containers/nosuch"),
        ("DELETE", "/containers/nosuch?force=1"),
    ];
    for (method, path) in routes {
        // (attach asks for the upgrade, as its clients do)
        let (code, b) = s.curl(&[
            "-X",
            method,
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: tcp",
            &format!("http://d/v1.41{path}"),
        ]);
        assert_eq!(code, 404, "{method} {path}: {b}");
        assert_eq!(message(&b), "No such container: nosuch", "{method} {path}");
    }
    for (method, path) in [
        ("GET", "/images/nosuch:1/json"),
        ("DELETE", "/images/nosuch:1"),
        ("POST", "/images/nosuch:1/tag?repo=x"),
    ] {
        let (code, b) = s.curl(&["-X", method, &format!("http://d{path}")]);
        assert_eq!(code, 404, "{method} {path}: {b}");
        assert!(message(&b).starts_with("No such image"), "{method} {path}: {b}");
    }
    still_serving(&mut s);
}

#[test]
fn path_arguments_never_leave_the_root() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let mut s = Server::start(&i);
    s.docker_ok(&["run", "-d", "--name", "target", img, "sleep", "100"]);
    // A canary beside the root: what a `..` would reach.
    let canary = i.dir.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("keep"), "x").unwrap();
    let before: Vec<_> = std::fs::read_dir(i.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();

    let ids = [
        "..",
        "%2e%2e",
        "..%2F..%2Fcanary",
        "..%2f..%2f..%2f..%2fetc",
        "target%2F..%2F..%2Fcanary",
        "%2Ftmp",
        "..%2Fcontainers",
        "a%2Fb",
    ];
    for id in ids {
        for (method, tail) in [
            ("GET", "/json"),
            ("POST", "/start"),
            ("POST", "/stop?t=0"),
            ("POST", "/kill"),
            ("GET", "/logs?stdout=1"),
            ("GET", "/top"),
            ("POST", "/rename?name=x"),
            ("DELETE", "?force=1"),
        ] {
            let url = format!("http://d/containers/{id}{tail}");
            let (code, b) = s.curl(&["-X", method, "--path-as-is", &url]);
            assert!(code == 404 || code == 400, "{method} {url}: {code} {b}");
            message(&b);
        }
    }
    // Names with `..` or `/`: refused at create and rename, as docker refuses them
    // (one leading `/`, docker's own form of a name, is dropped: `/abs` is `abs`).
    for name in ["..", "../canary", "a/b", "//abs", "/..", "..%2Fx"] {
        let (code, b) = s.curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!(r#"{{"Image":"{img}","Cmd":["true"]}}"#),
            &format!("http://d/containers/create?name={}", name.replace('/', "%2F")),
        ]);
        assert_eq!(code, 400, "create name {name}: {b}");
        message(&b);
        let (code, b) = s.curl(&[
            "-X",
            "POST",
            &format!("http://d/containers/target/rename?name={}", name.replace('/', "%2F")),
        ]);
        assert_eq!(code, 400, "rename to {name}: {b}");
        message(&b);
    }
    let (code, b) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!(r#"{{"Image":"{img}","Cmd":["true"]}}"#),
        "http://d/containers/create?name=%2Fabs",
    ]);
    assert_eq!(code, 201, "{b}");
    assert!(i.ok(&["ps", "-a", "--format", "json"]).contains(r#""abs""#));
    let (code, b) = s.curl(&["-X", "POST", "http://d/containers/abs/rename?name=%2Fabs2"]);
    assert_eq!(code, 204, "{b}");
    s.curl(&["-X", "DELETE", "http://d/containers/abs2"]);
    // Image names that try to climb out.
    for name in ["..%2F..%2Fcanary", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e"] {
        let (code, b) = s.curl(&["--path-as-is", &format!("http://d/images/{name}/json")]);
        assert!(code == 404 || code == 400, "{name}: {code} {b}");
        message(&b);
        let (code, b) = s.curl(&["-X", "DELETE", "--path-as-is", &format!("http://d/images/{name}")]);
        assert!(code == 404 || code == 400, "{name}: {code} {b}");
        message(&b);
    }
    let (code, b) = s.curl(&[
        "-X",
        "POST",
        &format!("http://d/images/{img}/tag?repo=..%2F..%2Fcanary"),
    ]);
    assert_eq!(code, 400, "{b}");
    message(&b);

    // Nothing was made, moved or removed outside the root; the container is as it was.
    let after: Vec<_> = std::fs::read_dir(i.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before.len(), after.len(), "{before:?} {after:?}");
    assert_eq!(std::fs::read_dir(&canary).unwrap().count(), 1);
    assert_eq!(
        i.ok(&["inspect", "-f", "{{.State.Status}} {{.Name}}", "target"]).trim(),
        "running target"
    );
    still_serving(&mut s);
}

#[test]
fn a_slow_client_never_holds_up_the_others() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    // A short header timeout so that the test need not wait hyper's 30 s.
    let socket = i.dir.path().join("vessel.sock");
    let mut cmd = i.cmd();
    cmd.env("VESSEL_API_HEADER_TIMEOUT", "2");
    let child = cmd
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the server's socket", || UnixStream::connect(&socket).is_ok());
    let mut s = Server {
        child,
        socket,
        metrics: None,
    };

    // A request head sent byte by byte, well within the timeout, is answered; other
    // clients are served in between.
    let mut slow = UnixStream::connect(&s.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for (n, b) in b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n".iter().enumerate() {
        slow.write_all(&[*b]).unwrap();
        if n % 8 == 0 {
            assert_eq!(s.curl(&["http://d/_ping"]).0, 200);
        }
    }
    let mut buf = [0u8; 512];
    let n = slow.read(&mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // Clients that start a head and never finish it: closed once the timeout passes;
    // meanwhile the others are served.
    let mut stalled: Vec<UnixStream> = (0..20)
        .map(|_| {
            let mut c = UnixStream::connect(&s.socket).unwrap();
            c.write_all(b"GET /containers/json HTTP/1.1\r\nHost: d\r\nX-Slow: ")
                .unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            c
        })
        .collect();
    assert_eq!(s.curl(&["http://d/containers/json"]).0, 200);
    let start = Instant::now();
    for c in &mut stalled {
        let mut out = Vec::new();
        // EOF (or hyper's 408 then EOF); a read timeout means the server kept it open.
        let r = c.read_to_end(&mut out);
        assert!(r.is_ok(), "a stalled client was kept for {:?}: {r:?}", start.elapsed());
        let text = String::from_utf8_lossy(&out);
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    still_serving(&mut s);
}

/// How many fds the process `pid` holds.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn clients_gone_mid_stream_are_let_go() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let mut s = Server::start(&i);
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        img,
        "sh",
        "-c",
        "while true; do echo tick; sleep 0.2; done",
    ]);
    still_serving(&mut s);
    let pid = s.child.id();
    let baseline = fds(pid);
    // The container's monitor, which holds one end of each attach.
    let id = i.ok(&["inspect", "-f", "{{.Id}}", "talker"]).trim().to_string();
    let monitor = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("__monitor\0{id}")))
        })
        .expect("the container's monitor");
    let monitor_baseline = fds(monitor);
    for round in 0..3 {
        // logs -f over curl, attach through the docker CLI: both killed mid-stream.
        let mut logs = Command::new("curl")
            .args(["-s", "-N", "--unix-socket"])
            .arg(&s.socket)
            .arg("http://d/containers/talker/logs?follow=1&stdout=1")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut attach = Command::new(DOCKER)
            .args(["attach", "--no-stdin", "talker"])
            .env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
            .env("DOCKER_CONFIG", i.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Each has received output.
        for child in [&mut logs, &mut attach] {
            let mut buf = [0u8; 5];
            child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
        }
        assert!(fds(pid) > baseline, "round {round}: the streams hold connections");
        for child in [&mut logs, &mut attach] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        // The server lets the connections and whatever they held go.
        wait_for("the server to free the streams", || fds(pid) <= baseline);
        wait_for("the monitor to free its attach ends", || {
            fds(monitor) <= monitor_baseline
        });
        still_serving(&mut s);
    }
    assert_eq!(
        i.ok(&["inspect", "-f", "{{.State.Status}}", "talker"]).trim(),
        "running"
    );
}

#[test]
fn bytes_that_are_not_http() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let mut s = Server::start(&i);
    // Not HTTP at all, a request line without a version, a header without a colon: 400
    // and the connection closed.
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET /_ping\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        let answer = raw(&s, junk);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{junk:?}: {answer}"
        );
    }
    // A header far larger than any client sends: refused (431), not buffered.
    let huge = format!(
        "GET /_ping HTTP/1.1\r\nHost: d\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let answer = raw(&s, huge.as_bytes());
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A request cut off in its body: the server drops it, no container is made.
    let cut = "POST /containers/create HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"Image\":";
    {
        let mut c = UnixStream::connect(&s.socket).unwrap();
        c.write_all(cut.as_bytes()).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = c.read_to_string(&mut out);
    }
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "");
    still_serving(&mut s);
}

/// A handler that panics answers 500 and costs nothing else: the server keeps serving
/// this and other connections. The route exists only with `VESSEL_API_PANIC_ROUTE` set.
/// `VESSEL_SERVE_BIN=target/release/vessel` runs the same against a release build (whose
/// profile must unwind for this to hold: with `panic = "abort"` the server dies).
#[test]
fn a_panicking_handler_is_a_500_and_the_server_serves_on() {
    if !have(&["curl"]) {
        return;
    }
    let i = Instance::new();
    let bin = std::env::var_os("VESSEL_SERVE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_vessel").into());
    let socket = i.dir.path().join("vessel.sock");
    let child = Command::new(&bin)
        .arg("--root")
        .arg(i.root())
        .args(["serve", "--socket"])
        .arg(&socket)
        .env("VESSEL_API_PANIC_ROUTE", "1")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Server {
        child,
        socket: socket.clone(),
        metrics: None,
    };
    wait_for("the server's socket", || UnixStream::connect(&socket).is_ok());
    // A connection held open across the panic is served on too.
    let mut held = UnixStream::connect(&socket).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for _ in 0..3 {
        let (code, body) = s.curl(&["http://d/_vessel/panic"]);
        assert_eq!(code, 500, "{body}");
        assert!(message(&body).contains("it keeps serving"), "{body}");
        still_serving(&mut s);
    }
    held.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = held.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("OK"), "{out}");
    assert_eq!(s.curl(&["http://d/containers/json"]), (200, "[]".to_string()));
}
