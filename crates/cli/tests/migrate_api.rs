//! `vessel migrate NAME REMOTE` through the authenticated remote API: two vessel roots
//! on this machine, the target running `vessel serve --listen 127.0.0.1:0` (mutual
//! TLS), the source joined with `vessel trust add` + `vessel remote add b`. The
//! receiving side and the page stream go over upgraded connections of that TLS
//! server. Workloads: a counter (no number lost or repeated) and a shell holding
//! 100 MB (same digest after). Faults: a taken name, the target's `vessel serve`
//! killed (-9) during the transfer. The page-server tunnel refuses other ports; an
//! untrusted client gets nothing; `vessel balance` and `vessel --remote b system
//! load` read the remote's load via `/1.0/resources`.

mod instance;
mod run_vessel;
mod tls_server;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use instance::{have, stderr, stdout, wait_for, Instance};
use tls_server::TlsServer;

/// Appends 1, 2, 3... to /count.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done";

/// Source and target roots (the image on the target), the target served over TLS and
/// added on the source as remote `b`.
fn hosts() -> (Instance, Instance, TlsServer) {
    let src = host_ids();
    let dst = host_ids();
    dst.busybox();
    let server = TlsServer::start(&dst);
    let token = dst.ok(&["trust", "add", "--name", "source"]);
    src.ok(&["remote", "add", "b", &server.url, "--token", token.trim()]);
    // Commands on the source run there; only the migration's target is `b`.
    src.ok(&["remote", "switch", "local"]);
    (src, dst, server)
}

fn migrate(src: &Instance, name: &str) -> Command {
    let mut c = src.cmd();
    c.args(["migrate", name, "b"]);
    c
}

fn run(mut c: Command) -> Output {
    let o = c.output().unwrap();
    eprintln!("{}{}", stdout(&o), stderr(&o));
    o
}

fn id_of(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
}

fn state(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.State.Status}}", name]).trim().to_string()
}

fn upper(i: &Instance, name: &str, f: &str) -> String {
    let id = id_of(i, name);
    fs::read_to_string(i.root().join("snapshots/active").join(id).join("upper").join(f)).unwrap_or_default()
}

/// The counter's numbers in `i`'s container `name`, checked to be 1..=N.
fn count(i: &Instance, name: &str) -> u64 {
    let nums: Vec<u64> = upper(i, name, "count")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for (k, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            k as u64 + 1,
            "count file: {n} at line {}: a number lost or repeated",
            k + 1
        );
    }
    nums.len() as u64
}

fn counter(i: &Instance, name: &str) {
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", name, img, "sh", "-c", COUNTER]);
    wait_for("the counter to count", || count(i, name) >= 3);
}

/// Nothing of a migration left in either root.
#[track_caller]
fn nothing_left(src: &Instance, dst: &Instance) {
    for i in [src, dst] {
        wait_for("the migrate dir to empty", || i.left("migrate") == 0);
        if i.ok(&["ps", "-aq"]).trim().is_empty() {
            assert!(i.mounts_under_root().is_empty(), "{:?}", i.mounts_under_root());
        }
    }
}

/// Whether a process runs whose command line holds every one of `words`.
fn running(words: &[&str]) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        words.iter().all(|w| cmd.contains(w))
    })
}

#[test]
fn migrate_through_the_api_continues_the_count() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, _server) = hosts();
    counter(&src, "vessel-mapi-count");
    let o = run(migrate(&src, "vessel-mapi-count"));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("round 1") && out.contains("running on remote b"), "{out}");
    assert_eq!(src.ok(&["ps", "-aq"]).trim(), "", "removed on the source");
    assert_eq!(state(&dst, "vessel-mapi-count"), "running");
    let n = count(&dst, "vessel-mapi-count");
    wait_for("the count to continue on the target", || {
        count(&dst, "vessel-mapi-count") >= n + 5
    });
    dst.ok(&["rm", "-f", "vessel-mapi-count"]);
    nothing_left(&src, &dst);
}

#[test]
fn migrate_through_the_api_keeps_100_mb_of_memory() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, _server) = hosts();
    let img = src.busybox();
    let script = "x=$(busybox head -c 100000000 /dev/urandom | busybox base64); \
                  echo \"$x\" | busybox sha256sum > /before; \
                  while [ ! -e /go ]; do sleep 0.1; done; echo \"$x\" | busybox sha256sum > /after; sleep 1000";
    src.ok(&["run", "-d", "--name", "vessel-mapi-mem", img, "sh", "-c", script]);
    let start = Instant::now();
    while upper(&src, "vessel-mapi-mem", "before").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "the digest before");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = upper(&src, "vessel-mapi-mem", "before");
    let o = run(migrate(&src, "vessel-mapi-mem"));
    assert!(o.status.success(), "{}", stderr(&o));
    let pages: u64 = stdout(&o)
        .lines()
        .find_map(|l| {
            l.strip_prefix("round 1 (final dump, frozen): ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(
        pages * 4096 >= 100_000_000,
        "100 MB through the page tunnel: {pages} pages"
    );
    dst.ok(&["exec", "vessel-mapi-mem", "touch", "/go"]);
    let start = Instant::now();
    while upper(&dst, "vessel-mapi-mem", "after").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "the digest after");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(upper(&dst, "vessel-mapi-mem", "after"), before, "same 100 MB after");
    dst.ok(&["rm", "-f", "vessel-mapi-mem"]);
    nothing_left(&src, &dst);
}

#[test]
fn migrate_through_the_api_into_a_taken_name_is_refused() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, _server) = hosts();
    counter(&src, "vessel-mapi-taken");
    dst.ok(&["create", "--name", "vessel-mapi-taken", "localhost/bb:1", "true"]);
    let o = run(migrate(&src, "vessel-mapi-taken"));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vessel-mapi-taken"),
        "names the taken name: {}",
        stderr(&o)
    );
    assert_eq!(state(&src, "vessel-mapi-taken"), "running", "the source runs on");
    assert_eq!(
        state(&dst, "vessel-mapi-taken"),
        "created",
        "the target's own container untouched"
    );
    let n = count(&src, "vessel-mapi-taken");
    wait_for("the count to go on at the source", || {
        count(&src, "vessel-mapi-taken") > n + 3
    });
    src.ok(&["rm", "-f", "vessel-mapi-taken"]);
    dst.ok(&["rm", "-f", "vessel-mapi-taken"]);
    nothing_left(&src, &dst);
}

/// Starts `c` paused at `point` (resumed when `resume` appears) and returns it once
/// it said so.
fn paused_at(mut c: Command, point: &str, resume: &Path) -> Child {
    c.env("VESSEL_TEST_PAUSE_AT", point)
        .env("VESSEL_TEST_RESUME_FILE", resume)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "migrate ended before {point}");
        eprint!("{line}");
        if line.contains(&format!("test pause at {point}")) {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut s = String::new();
        while err.read_line(&mut s).unwrap_or(0) > 0 {
            eprint!("{s}");
            s.clear();
        }
    });
    child
}

#[test]
fn killed_target_serve_during_the_transfer_thaws_the_source() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, mut server) = hosts();
    counter(&src, "vessel-mapi-kill");
    let resume = src.dir.path().join("resume");
    let child = paused_at(migrate(&src, "vessel-mapi-kill"), "migrate-transfer", &resume);
    // kill -9 of the target's `vessel serve` (our child), mid-transfer.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    fs::write(&resume, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125), "the migration reports the failure");
    let (s, d) = (src.root().display().to_string(), dst.root().display().to_string());
    wait_for("the guard and the target's receiver to end", || {
        !running(&["__migrate-guard", &s]) && !running(&["migrate-receive", &d])
    });
    assert_eq!(state(&src, "vessel-mapi-kill"), "running", "the source is thawed");
    assert_eq!(dst.ok(&["ps", "-aq"]).trim(), "", "nothing on the target");
    let n = count(&src, "vessel-mapi-kill");
    wait_for("the count to go on at the source", || {
        count(&src, "vessel-mapi-kill") > n + 3
    });
    src.ok(&["rm", "-f", "vessel-mapi-kill"]);
    nothing_left(&src, &dst);
}

/// curl -X POST with an upgrade to `path` on `server`, with `src`'s client
/// certificate or none: (curl's exit code, HTTP code, body).
fn curl_upgrade(src: &Instance, server: &TlsServer, cert: bool, path: &str) -> (i32, u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}", "-X", "POST"]);
    c.args(["-H", "Connection: Upgrade", "-H", "Upgrade: tcp"]);
    if cert {
        let dir = src.root().join("client");
        c.arg("--cert")
            .arg(dir.join("client.crt"))
            .arg("--key")
            .arg(dir.join("client.key"));
    }
    let out = c.arg(format!("{}{path}", server.url)).output().unwrap();
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    eprintln!("curl {path}: exit {:?} http {code} {body}", out.status.code());
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_string(),
    )
}

#[test]
fn page_tunnel_refuses_other_ports_and_untrusted_clients_get_nothing() {
    if !have(&["umoci", "busybox", "curl"]) {
        return;
    }
    let (src, _dst, server) = hosts();
    // No migration runs: the server's own port (or any) is no page server of one.
    let path = format!("/1.0/migrations/00ff00ff00ff00ff/pages/{}", server.port());
    let (_, code, body) = curl_upgrade(&src, &server, true, &path);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not the page server"), "{body}");
    // Nor a receive for an untrusted client: the TLS handshake fails, no HTTP at all.
    let (exit, code, _) = curl_upgrade(&src, &server, false, "/1.0/migrations/00ff00ff00ff00ff/receive");
    assert_ne!(exit, 0);
    assert_eq!(code, 0, "no HTTP answer without a trusted certificate");
}

#[test]
fn balance_reads_a_remote_load_through_the_api() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, _server) = hosts();
    // hosts() imported the image on the target: 32 and 16 MB in /dev/shm there.
    for (name, mb) in [("vessel-mapi-big", 32), ("vessel-mapi-small", 16)] {
        let script = format!("busybox head -c {mb}000000 /dev/zero > /dev/shm/x; sleep 1000");
        dst.ok(&["run", "-d", "--name", name, "localhost/bb:1", "sh", "-c", &script]);
    }
    let local = format!("local://{}", src.root().display());
    wait_for("the plan to move one of b's containers here", || {
        let o = src.v(&["balance", "--dry-run", "--threshold", "10", &local, "b"]);
        let out = stdout(&o);
        eprintln!("{out}{}", stderr(&o));
        o.status.success() && out.contains("b: 2 containers") && out.contains(&format!("from b to {local}"))
    });
    // The same figures with `vessel --remote b system load --json`.
    let l: serde_json::Value = serde_json::from_str(&src.ok(&["--remote", "b", "system", "load", "--json"])).unwrap();
    assert_eq!(l["count"], 2, "{l}");
    assert_eq!(l["containers"][0]["name"], "vessel-mapi-big", "{l}");
    dst.ok(&["rm", "-f", "vessel-mapi-big", "vessel-mapi-small"]);
}

#[test]
fn balance_moves_a_container_to_an_api_remote() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst, _server) = hosts();
    let img = src.busybox();
    for (name, mb) in [("vessel-mapi-mv1", 32), ("vessel-mapi-mv2", 16)] {
        let script = format!("busybox head -c {mb}000000 /dev/zero > /dev/shm/x; sleep 1000");
        src.ok(&["run", "-d", "--name", name, img, "sh", "-c", &script]);
    }
    let local = format!("local://{}", src.root().display());
    wait_for("the plan to move one of ours to b", || {
        let o = src.v(&["balance", "--dry-run", "--threshold", "10", &local, "b"]);
        stdout(&o).contains(" to b")
    });
    // The move runs `vessel migrate NAME b` on the source root, through b's API.
    let o = run({
        let mut c = src.cmd();
        c.args(["balance", "--threshold", "10", &local, "b"]);
        c
    });
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let moved = out
        .lines()
        .find_map(|l| l.strip_prefix("migrated ")?.split(' ').next())
        .unwrap_or_else(|| panic!("no move printed: {out}"))
        .to_string();
    let moved = moved.as_str();
    assert!(moved.starts_with("vessel-mapi-mv"), "{out}");
    assert_eq!(state(&dst, moved), "running", "runs on b");
    assert!(
        src.v(&["inspect", moved]).status.code() != Some(0),
        "gone from the source"
    );
    dst.ok(&["rm", "-f", moved]);
    for n in ["vessel-mapi-mv1", "vessel-mapi-mv2"] {
        if n != moved {
            src.ok(&["rm", "-f", n]);
        }
    }
    nothing_left(&src, &dst);
}

/// A "host": an instance whose containers run in their own user namespace (the default).
fn host_ids() -> Instance {
    Instance::new()
}
