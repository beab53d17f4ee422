//! Remote hosts end to end: two vessel hosts on one machine (two `--root`s), host B
//! running `vessel serve --listen 127.0.0.1:0` (mutual TLS, loopback only), host A a
//! client that joins with a token from `vessel trust add` and runs commands with
//! `--remote b`. Also: clients without a trusted certificate get no HTTP at all, join
//! tokens work once and expire, and `/1.0` (snapshots as operations, resources,
//! openapi.json) over TLS with curl.

mod instance;
mod run_vessel;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use instance::{have, stderr, stdout, wait_for, Instance, TestNetns};

/// A `vessel serve --listen 127.0.0.1:0` of an instance: its address and certificate
/// fingerprint as it printed them; SIGTERM and reaped on drop.
struct TlsServer {
    child: Child,
    url: String,
    fingerprint: String,
}

impl TlsServer {
    fn start(i: &Instance) -> TlsServer {
        TlsServer::start_with(i, &[])
    }

    /// With more flags for `vessel serve`.
    fn start_with(i: &Instance, extra: &[&str]) -> TlsServer {
        TlsServer::start_env(i, extra, &[])
    }

    /// With more flags and environment variables for `vessel serve`.
    fn start_env(i: &Instance, extra: &[&str], env: &[(&str, &str)]) -> TlsServer {
        let mut child = i
            .cmd()
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--socket")
            .arg(i.dir.path().join("vessel.sock"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut url = String::new();
        let mut fingerprint = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            eprintln!("server: {line}");
            if let Some(rest) = line.split("listening on https://").nth(1) {
                url = format!("https://{}", rest.split_whitespace().next().unwrap());
                fingerprint = rest
                    .rsplit("fingerprint ")
                    .next()
                    .unwrap()
                    .trim_end_matches(')')
                    .to_string();
            }
            if line.contains("listening on unix://") {
                break;
            }
        }
        assert!(url.starts_with("https://127.0.0.1:"), "no https address printed");
        // Keep draining its stderr (into the test's) so that it never blocks.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("server: {l}");
            }
        });
        TlsServer {
            child,
            url,
            fingerprint,
        }
    }

    /// curl ARGS against PATH on this server with the certificate pair `cert` (None: no
    /// client certificate): (curl's exit code, HTTP code, body).
    fn curl(&self, cert: Option<(&Path, &Path)>, args: &[&str], path: &str) -> (i32, u16, String) {
        let mut c = Command::new("curl");
        // -k: curl cannot pin a fingerprint; vessel's own client does (tested below).
        c.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
        if let Some((crt, key)) = cert {
            c.arg("--cert").arg(crt).arg("--key").arg(key);
        }
        let out = c.args(args).arg(format!("{}{path}", self.url)).output().unwrap();
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        eprintln!("curl {args:?} {path}: exit {:?} http {code} {body}", out.status.code());
        (
            out.status.code().unwrap_or(-1),
            code.trim().parse().unwrap_or(0),
            body.to_string(),
        )
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// `openssl ARGS` in `dir`, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// A self-signed P-256 certificate NAME.crt/NAME.key in `dir`.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")))
}

fn tools() -> bool {
    have(&["umoci", "busybox", "curl", "openssl"])
}

/// `vessel --remote b ARGS` on host `a`.
fn on_b(a: &Instance, args: &[&str]) -> Output {
    let mut all = vec!["--remote", "b"];
    all.extend_from_slice(args);
    a.v(&all)
}

fn ok_on_b(a: &Instance, args: &[&str]) -> String {
    let o = on_b(a, args);
    assert!(o.status.success(), "vessel --remote b {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// Host A joins host B with a token; returns A's client certificate and key.
fn join(a: &Instance, b: &Instance, server: &TlsServer) -> (PathBuf, PathBuf) {
    let token = b.ok(&["trust", "add", "--name", "host-a"]);
    a.ok(&["remote", "add", "b", &server.url, "--token", token.trim()]);
    let dir = a.root().join("client");
    (dir.join("client.crt"), dir.join("client.key"))
}

#[test]
fn remote_host_runs_containers_after_a_token_join() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let img = b.busybox();
    let server = TlsServer::start(&b);
    let a = Instance::new();
    join(&a, &b, &server);

    // Both sides agree on who trusts whom.
    let remotes = a.ok(&["remote", "ls", "--format", "json"]);
    let remotes: serde_json::Value = serde_json::from_str(&remotes).unwrap();
    assert_eq!(remotes["remotes"]["b"]["fingerprint"], server.fingerprint.as_str());
    let trusted = b.ok(&["trust", "ls", "--format", "json"]);
    let trusted: serde_json::Value = serde_json::from_str(&trusted).unwrap();
    assert_eq!(trusted[0]["name"], "host-a");
    let client_pem = std::fs::read(a.root().join("client/client.crt")).unwrap();
    assert!(client_pem.starts_with(b"-----BEGIN CERTIFICATE-----"));

    // images and pull-less run on B; A has no image at all.
    assert!(ok_on_b(&a, &["images"]).contains("localhost/bb"));
    let envfile = a.dir.path().join("env");
    std::fs::write(&envfile, "# comment\nFROM_FILE=yes\n").unwrap();
    let id = ok_on_b(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "x",
            "--memory",
            "64m",
            "--env-file",
            envfile.to_str().unwrap(),
            "-e",
            "GIVEN=1",
            img,
            "sh",
            "-c",
            "echo hello from b; sleep 100",
        ],
    );
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    assert!(ok_on_b(&a, &["ps"]).contains(" x"));
    assert!(b.ok(&["ps"]).contains(&id[..12]), "B's own CLI sees the container");
    assert_eq!(a.ok(&["ps", "-aq"]).trim(), "", "nothing ran on A");
    instance::wait_for("the container's output", || {
        stdout(&on_b(&a, &["logs", "x"])).contains("hello from b")
    });
    b.ok(&["exec", "x", "sh", "-c", "echo second >> /proc/1/fd/1"]);
    instance::wait_for("the second line", || {
        stdout(&on_b(&a, &["logs", "x"])).contains("second")
    });
    assert_eq!(ok_on_b(&a, &["logs", "--tail", "1", "x"]), "second\n");
    let inspect: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "x"])).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    assert_eq!(inspect[0]["State"]["Running"], true);
    assert_eq!(inspect[0]["HostConfig"]["Memory"], 64 << 20);
    let env = ok_on_b(&a, &["exec", "x", "sh", "-c", "echo $FROM_FILE $GIVEN"]);
    assert_eq!(env, "yes 1\n");
    // Flags the API does not take are refused by name, not dropped.
    let o = on_b(&a, &["run", "-d", "--dns", "1.1.1.1", "--tmpfs", "/x", img, "true"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--tmpfs, --dns not sent"), "{}", stderr(&o));

    // exec, non-interactive: output and exit code come back.
    assert_eq!(ok_on_b(&a, &["exec", "x", "echo", "inside"]), "inside\n");
    let o = on_b(&a, &["exec", "x", "sh", "-c", "echo e >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stderr(&o), "e\n");

    // Foreground run with --rm: output on the right streams, the exit code, gone after.
    let o = on_b(&a, &["run", "--rm", img, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    ok_on_b(&a, &["stop", "-t", "1", "x"]);
    assert!(!ok_on_b(&a, &["ps"]).contains(" x"));
    ok_on_b(&a, &["rm", "x"]);
    assert_eq!(ok_on_b(&a, &["ps", "-aq"]).trim(), "");
    assert_eq!(b.ok(&["ps", "-aq"]).trim(), "");

    // Errors of the remote come back as errors.
    let o = on_b(&a, &["logs", "nosuch"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No such container"), "{}", stderr(&o));
    // Commands that only run locally say so instead of running here.
    let o = on_b(&a, &["diff", "x"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("runs only on this host"), "{}", stderr(&o));

    // switch makes b the default; local takes it back.
    a.ok(&["remote", "switch", "b"]);
    assert!(a.ok(&["images"]).contains("localhost/bb"), "images of b by default");
    assert!(a.ok(&["--remote", "local", "images"]).trim().lines().count() <= 1);
    a.ok(&["remote", "switch", "local"]);
    a.ok(&["remote", "rm", "b"]);
    assert!(!on_b(&a, &["ps"]).status.success(), "a removed remote is gone");
}

/// `vessel --remote b ARGS` of host `a` on a new pty of 33x77 (tests/api_server/pty.py:
/// `steps` of [expect, send]); what it wrote, then `[echo on]` when it left the
/// terminal's settings restored; its exit code.
fn pty_on_b(a: &Instance, args: &[&str], steps: &[(&str, &str)]) -> (String, i32) {
    let base = a.cmd();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_server/pty.py");
    let mut c = Command::new("python3");
    c.arg(script)
        .arg(serde_json::to_string(steps).unwrap())
        .arg(base.get_program())
        .args(base.get_args())
        .args(["--remote", "b"])
        .args(args)
        .env("PTY_REPORT_ECHO", "1")
        .stdin(Stdio::null());
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let out = c.output().unwrap();
    let text = stdout(&out);
    eprintln!(
        "vessel --remote b (pty) {args:?}: {}\n{text}{}",
        out.status,
        stderr(&out)
    );
    (text, out.status.code().unwrap_or(-1))
}

/// `curl URL` inside the test's network namespace: its output.
fn curl_in(ns: &TestNetns, url: &str) -> String {
    let o = Command::new("ip")
        .args(["netns", "exec", &ns.0, "curl", "-s", "--max-time", "5", url])
        .output()
        .unwrap();
    stdout(&o)
}

/// Everything of `vessel --remote` beyond the basics, with one server and client (both
/// in a network namespace of the test, for the bridge and the published port):
/// terminals (exec -it with its size at the start and after a SIGWINCH, run -it --rm,
/// attach with detach keys and the exit code), stdin's end through a hijacked stream,
/// run flags (a named volume, a published port answering, env, labels, limits), and
/// the other verbs.
#[test]
fn remote_terminals_streams_ports_and_verbs() {
    if !tools() || !have(&["python3"]) || !Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    let ns = TestNetns::new("remote");
    let mut b = Instance::new();
    b.netns = Some(ns.0.clone());
    let img = b.busybox();
    let server = TlsServer::start(&b);
    let mut a = Instance::new();
    a.netns = Some(ns.0.clone());
    join(&a, &b, &server);

    // exec: stdin's end reaches the process (a half-close of the TLS stream); -e -u -w.
    ok_on_b(&a, &["run", "-d", "--name", "x", img, "sleep", "1000"]);
    let o = a.with_stdin(
        &["--remote", "b", "exec", "-i", "x", "sh", "-c", "cat; echo done"],
        "hi\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hi\ndone\n");
    let o = ok_on_b(
        &a,
        &[
            "exec",
            "-e",
            "A=b",
            "-u",
            "www",
            "-w",
            "/etc",
            "x",
            "sh",
            "-c",
            "echo $A $(id -u) $PWD",
        ],
    );
    assert_eq!(o, "b 33 /etc\n");
    // exec -it: a terminal of the client's size from the start; the terminal restored.
    let (out, code) = pty_on_b(&a, &["exec", "-it", "x", "sh", "-c", "tty; stty size"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/dev/pts/") && out.contains("33 77"), "{out}");
    assert!(out.ends_with("[echo on]\n"), "{out}");
    // A resize of the client's terminal (SIGWINCH) reaches the process's terminal.
    let (out, code) = pty_on_b(
        &a,
        &[
            "exec",
            "-it",
            "x",
            "sh",
            "-c",
            "stty size; while [ \"$(stty size)\" != \"40 100\" ]; do sleep 0.1; done; echo resized; exit 3",
        ],
        &[("33 77", "\0winsize 40 100")],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("resized") && out.ends_with("[echo on]\n"), "{out}");

    // run -it --rm: the terminal and its size before the start, the exit code, gone after.
    let (out, code) = pty_on_b(
        &a,
        &[
            "run",
            "--rm",
            "-it",
            "--name",
            "tty",
            img,
            "sh",
            "-c",
            "tty; stty size; exit 6",
        ],
        &[],
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("/dev/pts/") && out.contains("33 77"), "{out}");
    assert!(!ok_on_b(&a, &["ps", "-a"]).contains(" tty"));
    // attach: typing reaches the shell; ctrl-p ctrl-q detaches and it runs on; then its
    // exit code comes back through a second attach.
    ok_on_b(&a, &["run", "-d", "-i", "-t", "--name", "t", img, "sh"]);
    let (out, code) = pty_on_b(&a, &["attach", "t"], &[("", "echo $((6*7))\r"), ("42", "\x10\x11")]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("[echo on]\n"), "{out}");
    let state: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "t"])).unwrap();
    assert_eq!(state[0]["State"]["Status"], "running");
    let (out, code) = pty_on_b(
        &a,
        &["attach", "t"],
        &[("", "\recho again-$((2+2))\r"), ("again-4", "exit 5\r")],
    );
    assert_eq!(code, 5, "{out}");
    // The local `vessel attach` (on B itself): stdin in, output out, the exit code.
    ok_on_b(
        &a,
        &[
            "run",
            "-d",
            "-i",
            "--name",
            "a2",
            img,
            "sh",
            "-c",
            "read l; echo got $l; exit 2",
        ],
    );
    let o = b.with_stdin(&["attach", "a2"], "hello\n");
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(2), "got hello\n"));
    // Without a tty, a signal to the client reaches the container (docker's sig-proxy).
    let mut c = a
        .cmd()
        .args(["--remote", "b", "run", "--rm", "--name", "sig", img, "sh", "-c"])
        .arg("trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // SAFETY: kill takes plain integers; the pid is our own unreaped child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    assert_eq!(c.wait().unwrap().code(), Some(9));
    // start -a: output and exit code of a created container.
    ok_on_b(
        &a,
        &["create", "--name", "sa", img, "sh", "-c", "echo started-a; exit 4"],
    );
    let o = on_b(&a, &["start", "-a", "sa"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(4), "started-a\n"));

    // run flags: a named volume (made on the remote, kept between containers), a
    // published port of the remote that answers, env, labels, limits.
    ok_on_b(&a, &["volume", "create", "--label", "k=v", "data"]);
    ok_on_b(
        &a,
        &["run", "--rm", "-v", "data:/d", img, "sh", "-c", "echo kept > /d/f"],
    );
    assert_eq!(
        ok_on_b(&a, &["run", "--rm", "-v", "data:/d:ro", img, "cat", "/d/f"]),
        "kept\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.root().join("volumes/data/_data/f")).unwrap(),
        "kept\n"
    );
    assert_eq!(ok_on_b(&a, &["volume", "ls", "-q"]).trim(), "data");
    let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["volume", "inspect", "data"])).unwrap();
    assert_eq!(v[0]["Labels"]["k"], "v", "{v}");
    ok_on_b(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "bridge",
            "-p",
            "18080:80",
            "-e",
            "MSG=hello-remote",
            "-l",
            "role=web",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "--pids-limit",
            "64",
            img,
            "sh",
            "-c",
            "mkdir /www && echo $MSG > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    assert_eq!(ok_on_b(&a, &["port", "web"]), "80/tcp -> 0.0.0.0:18080\n");
    wait_for("the published port", || {
        curl_in(&ns, "http://127.0.0.1:18080/index.html") == "hello-remote\n"
    });
    let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "web"])).unwrap();
    let hc = &v[0]["HostConfig"];
    assert_eq!(
        (hc["Memory"].as_i64(), hc["NanoCpus"].as_i64()),
        (Some(64 << 20), Some(500_000_000)),
        "{hc}"
    );
    assert_eq!(hc["PidsLimit"].as_i64(), Some(64), "{hc}");
    assert_eq!(v[0]["Config"]["Labels"]["role"], "web");

    // The other verbs.
    assert!(ok_on_b(&a, &["top", "web"]).contains("httpd"));
    assert!(ok_on_b(&a, &["stats", "--no-stream", "web"]).contains("web"));
    ok_on_b(&a, &["update", "--memory", "128m", "web"]);
    let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "web"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["Memory"].as_i64(), Some(128 << 20));
    ok_on_b(&a, &["pause", "web"]);
    let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "web"])).unwrap();
    assert_eq!(v[0]["State"]["Status"], "paused");
    ok_on_b(&a, &["unpause", "web"]);
    ok_on_b(&a, &["rename", "web", "web2"]);
    assert!(ok_on_b(&a, &["ps"]).contains(" web2"));
    ok_on_b(&a, &["rm", "-f", "web2"]);
    ok_on_b(&a, &["kill", "-s", "KILL", "x"]);
    wait_for("x to be exited", || {
        let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["inspect", "x"])).unwrap();
        v[0]["State"]["Status"] == "exited"
    });
    assert_eq!(ok_on_b(&a, &["wait", "x"]).trim(), "137");
    ok_on_b(&a, &["start", "x"]);
    ok_on_b(&a, &["restart", "-t", "0", "x"]);
    assert_eq!(ok_on_b(&a, &["exec", "x", "echo", "back"]), "back\n");
    // logs -f follows until the container ends.
    ok_on_b(
        &a,
        &[
            "run",
            "-d",
            "--name",
            "lf",
            img,
            "sh",
            "-c",
            "echo one; while [ ! -e /go ]; do sleep 0.1; done; echo two",
        ],
    );
    let mut f = a
        .cmd()
        .args(["--remote", "b", "logs", "-f", "lf"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(f.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "one");
    ok_on_b(&a, &["exec", "lf", "touch", "/go"]);
    assert_eq!(lines.next().unwrap().unwrap(), "two");
    assert!(lines.next().is_none(), "logs -f ends with the container");
    assert!(f.wait().unwrap().success());
    // Images: tag, rmi.
    ok_on_b(&a, &["tag", img, "localhost/extra:1"]);
    assert!(ok_on_b(&a, &["images"]).contains("localhost/extra"));
    assert!(ok_on_b(&a, &["rmi", "localhost/extra:1"]).contains("Untagged: localhost/extra:1"));
    assert!(!ok_on_b(&a, &["images"]).contains("localhost/extra"));
    // Networks.
    ok_on_b(&a, &["network", "create", "--subnet", "10.99.7.0/24", "rnet"]);
    assert!(ok_on_b(&a, &["network", "ls"]).contains("10.99.7.0/24"));
    let v: serde_json::Value = serde_json::from_str(&ok_on_b(&a, &["network", "inspect", "rnet"])).unwrap();
    assert_eq!(v[0]["Name"], "rnet");
    ok_on_b(&a, &["network", "rm", "rnet"]);
    assert!(!ok_on_b(&a, &["network", "ls"]).contains("rnet"));
    // Snapshots through /1.0.
    assert_eq!(ok_on_b(&a, &["snapshot", "create", "x", "s1"]).trim(), "s1");
    assert!(ok_on_b(&a, &["snapshot", "ls", "x"]).contains("s1"));
    ok_on_b(&a, &["snapshot", "rm", "x", "s1"]);
    // cp both ways through the archive endpoints: a file to a new name, a directory
    // into an existing one, a file under a new name, and tar streams on stdio.
    let here = a.dir.path().join("cp");
    std::fs::create_dir_all(here.join("tree/sub")).unwrap();
    std::fs::write(here.join("tree/sub/f"), "in-tree\n").unwrap();
    std::fs::write(here.join("one"), "one-file\n").unwrap();
    let out = here.join("passwd-copy");
    ok_on_b(&a, &["cp", "x:/etc/passwd", out.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("root:x:0:0"));
    ok_on_b(&a, &["cp", here.join("tree").to_str().unwrap(), "x:/etc"]);
    assert_eq!(ok_on_b(&a, &["exec", "x", "cat", "/etc/tree/sub/f"]), "in-tree\n");
    ok_on_b(&a, &["cp", here.join("one").to_str().unwrap(), "x:/renamed"]);
    assert_eq!(ok_on_b(&a, &["exec", "x", "cat", "/renamed"]), "one-file\n");
    ok_on_b(&a, &["cp", "x:/etc/tree", here.join("back").to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(here.join("back/sub/f")).unwrap(), "in-tree\n");
    // `DIR/.`: the content, into a directory made for it.
    let contents = format!("{}/.", here.join("tree").display());
    ok_on_b(&a, &["cp", &contents, "x:/etc/flat"]);
    assert_eq!(ok_on_b(&a, &["exec", "x", "cat", "/etc/flat/sub/f"]), "in-tree\n");
    ok_on_b(&a, &["cp", "x:/etc/flat/.", here.join("flat-back").to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(here.join("flat-back/sub/f")).unwrap(),
        "in-tree\n"
    );
    let o = on_b(&a, &["cp", "x:/etc/tree", "-"]);
    assert!(o.status.success());
    assert!(
        o.stdout.windows(10).any(|w| w == b"tree/sub/f"),
        "a tar with tree/sub/f"
    );
    // The same tar unpacked into another directory from stdin.
    std::fs::write(here.join("t.tar"), &o.stdout).unwrap();
    ok_on_b(&a, &["exec", "x", "mkdir", "/root"]);
    let o = a
        .cmd()
        .args(["--remote", "b", "cp", "-", "x:/root"])
        .stdin(std::fs::File::open(here.join("t.tar")).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ok_on_b(&a, &["exec", "x", "cat", "/root/tree/sub/f"]), "in-tree\n");
    let o = on_b(&a, &["cp", "x:/nosuch", here.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains("could not find"),
        "{}",
        stderr(&o)
    );
    // What stays local says so.
    let o = on_b(&a, &["commit", "x", "localhost/c:1"]);
    assert!(stderr(&o).contains("runs only on this host"), "{}", stderr(&o));

    ok_on_b(&a, &["rm", "-f", "x", "t", "sa", "lf", "a2"]);
    ok_on_b(&a, &["volume", "rm", "data"]);
    assert_eq!(b.ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn clients_without_a_trusted_certificate_get_nothing() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let server = TlsServer::start(&b);
    // A token is pending the whole time: it must not open the door to anyone.
    let _pending = b.ok(&["trust", "add", "--name", "someone"]);

    // No client certificate: the handshake fails, no HTTP status at all.
    let (code, http, body) = server.curl(None, &[], "/1.0");
    assert_ne!(code, 0);
    assert_eq!(http, 0);
    assert_eq!(body, "");
    let (code, http, _) = server.curl(None, &[], "/v1.41/containers/json");
    assert_ne!(code, 0);
    assert_eq!(http, 0);

    // A self-signed certificate that is not in the trust store: likewise.
    let dir = b.dir.path();
    let (crt, key) = (dir.join("self.crt"), dir.join("self.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-subj", "/CN=intruder", "-days", "1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let (code, http, body) = server.curl(Some((&crt, &key)), &[], "/1.0");
    assert_ne!(code, 0);
    assert_eq!(http, 0);
    assert_eq!(body, "");

    // vessel's own client, pinned but not trusted: refused in the handshake.
    let c = Instance::new();
    c.ok(&["remote", "add", "b", &server.url, "--accept-certificate"]);
    let o = c.v(&["--remote", "b", "ps"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("TLS handshake"), "{}", stderr(&o));

    // A client that connects and never starts its handshake holds up nobody.
    let _stalled = std::net::TcpStream::connect(server.url.trim_start_matches("https://")).unwrap();

    // The same self-signed certificate once trusted by hand gets through.
    let fp = b.ok(&["trust", "add-cert", crt.to_str().unwrap(), "--name", "by-hand"]);
    let (code, http, body) = server.curl(Some((&crt, &key)), &[], "/1.0");
    assert_eq!((code, http), (0, 200), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["metadata"]["auth"], "trusted");
    assert_eq!(v["metadata"]["environment"]["client_fingerprint"], fp.trim());
    b.ok(&["trust", "rm", "by-hand"]);
    let (code, http, _) = server.curl(Some((&crt, &key)), &[], "/1.0");
    assert_ne!(code, 0, "removed from the trust store: refused again");
    assert_eq!(http, 0);
}

#[test]
fn join_tokens_work_once_and_expire() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let server = TlsServer::start(&b);
    let token = b.ok(&["trust", "add", "--name", "first"]);
    let token = token.trim();

    let a = Instance::new();
    a.ok(&["remote", "add", "b", &server.url, "--token", token]);
    // Another client with the same token: refused (the handshake, as the token is gone).
    let c = Instance::new();
    let o = c.v(&["remote", "add", "b", &server.url, "--token", token]);
    assert!(!o.status.success());
    assert!(!c.v(&["--remote", "b", "ps"]).status.success());

    // An expired token.
    let expired = b.ok(&["trust", "add", "--name", "late", "--expiry", "0s"]);
    let o = c.v(&["remote", "add", "b", &server.url, "--token", expired.trim()]);
    assert!(!o.status.success());
    // A token whose fingerprint is not the server's: the client refuses the server.
    let other = Instance::new();
    let forged = other.ok(&["trust", "add", "--name", "x"]);
    let o = c.v(&["remote", "add", "b", &server.url, "--token", forged.trim()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fingerprint"), "{}", stderr(&o));
    // A token's secret presented over the API a second time (by a trusted client) is
    // refused with 403, and the trust store holds only the first client.
    let (crt, key) = (a.root().join("client/client.crt"), a.root().join("client/client.key"));
    let secret = {
        use std::io::Read;
        let mut d = Command::new("base64")
            .arg("-d")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(d.stdin.as_mut().unwrap(), token.as_bytes()).unwrap();
        drop(d.stdin.take());
        let mut s = String::new();
        d.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        d.wait().unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        v["secret"].as_str().unwrap().to_string()
    };
    let pem = std::fs::read_to_string(&crt).unwrap();
    let body = serde_json::json!({"certificate": pem, "trust_token": secret}).to_string();
    let (_, http, reply) = server.curl(Some((&crt, &key)), &["-X", "POST", "-d", &body], "/1.0/certificates");
    assert_eq!(http, 403, "{reply}");
    let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(v["type"], "error");
    let names = b.ok(&["trust", "ls"]);
    assert!(
        names.contains("first") && !names.contains("late") && !names.contains(" x "),
        "{names}"
    );
}

#[test]
fn v1_snapshots_as_operations_resources_and_openapi() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let img = b.busybox();
    let server = TlsServer::start(&b);
    let a = Instance::new();
    let (crt, key) = join(&a, &b, &server);
    let cert = Some((crt.as_path(), key.as_path()));
    let get = |path: &str| -> (u16, serde_json::Value) {
        let (_, http, body) = server.curl(cert, &[], path);
        (http, serde_json::from_str(&body).unwrap_or_default())
    };

    let (http, info) = get("/1.0");
    assert_eq!(http, 200);
    assert_eq!(info["type"], "sync");
    assert_eq!(info["metadata"]["api_version"], "1.0");
    assert!(info["metadata"]["api_extensions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "snapshots"));

    // The file is written by exec, not by the command: a restart alone would not bring
    // it back.
    b.ok(&["run", "-d", "--name", "s", img, "sleep", "100"]);
    b.ok(&["exec", "s", "sh", "-c", "echo one > /data"]);
    let (http, res) = get("/1.0/resources");
    assert_eq!(http, 200);
    let m = &res["metadata"];
    assert!(m["memory"]["total"].as_u64().unwrap() > m["memory"]["used"].as_u64().unwrap());
    assert!(m["cpu"]["total"].as_u64().unwrap() >= 1);
    assert_eq!(m["containers"]["running"], 1);
    if Path::new("/proc/pressure/cpu").exists() {
        assert!(m["pressure"]["cpu_some_avg10"].is_number(), "{m}");
    }

    // Create: async, an operation to wait for.
    let (_, http, body) = server.curl(
        cert,
        &["-X", "POST", "-d", r#"{"name":"before"}"#],
        "/1.0/instances/s/snapshots",
    );
    assert_eq!(http, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(op["type"], "async");
    let url = op["operation"].as_str().unwrap().to_string();
    assert!(url.starts_with("/1.0/operations/"));
    let (http, done) = get(&format!("{url}/wait?timeout=60"));
    assert_eq!(http, 200);
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    assert_eq!(done["metadata"]["metadata"]["name"], "before");
    let (_, one) = get(&url);
    assert_eq!(one["metadata"]["id"], done["metadata"]["id"]);
    let (_, ops) = get("/1.0/operations");
    assert!(ops["metadata"].as_array().unwrap().iter().any(|u| u == url.as_str()));
    // The unix socket and the TLS listener are one server: the same operations.
    let local = Command::new("curl")
        .arg("-s")
        .arg("--unix-socket")
        .arg(b.dir.path().join("vessel.sock"))
        .arg(format!("http://vessel{url}"))
        .output()
        .unwrap();
    let local: serde_json::Value = serde_json::from_str(&stdout(&local)).unwrap();
    assert_eq!(local["metadata"]["status"], "Success", "{local}");

    let (_, list) = get("/1.0/instances/s/snapshots");
    assert_eq!(
        list["metadata"],
        serde_json::json!(["/1.0/instances/s/snapshots/before"])
    );
    let (_, list) = get("/1.0/instances/s/snapshots?recursion=1");
    assert_eq!(list["metadata"][0]["name"], "before");
    let (http, _) = get("/1.0/instances/s/snapshots/before");
    assert_eq!(http, 200);

    // Change the file, restore, and the old content is back.
    b.ok(&["exec", "s", "sh", "-c", "echo two > /data"]);
    let (_, http, body) = server.curl(
        cert,
        &["-X", "PUT", "-d", r#"{"restore":"before"}"#],
        "/1.0/instances/s",
    );
    assert_eq!(http, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (_, done) = get(&format!("{}/wait", op["operation"].as_str().unwrap()));
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    // A running container is started again after the restore.
    assert_eq!(b.ok(&["exec", "s", "cat", "/data"]), "one\n");

    // Delete, then it is gone (404 in the error shape).
    let (_, http, body) = server.curl(cert, &["-X", "DELETE"], "/1.0/instances/s/snapshots/before");
    assert_eq!(http, 202, "{body}");
    let op: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (_, done) = get(&format!("{}/wait", op["operation"].as_str().unwrap()));
    assert_eq!(done["metadata"]["status"], "Success", "{done}");
    let (http, gone) = get("/1.0/instances/s/snapshots/before");
    assert_eq!(http, 404);
    assert_eq!(gone["type"], "error");
    assert_eq!(gone["error_code"], 404);
    // Bad input: unknown container, a name that tries to escape, malformed JSON.
    let (http, _) = get("/1.0/instances/nosuch/snapshots");
    assert_eq!(http, 404);
    let (http, _) = get("/1.0/instances/s/snapshots/..%2F..%2Fetc");
    assert!(http == 400 || http == 404, "{http}");
    let (_, http, _) = server.curl(cert, &["-X", "POST", "-d", "{nope"], "/1.0/instances/s/snapshots");
    assert_eq!(http, 400);
    let (http, _) = get("/1.0/operations/nosuch");
    assert_eq!(http, 404);

    // The OpenAPI document parses and lists every /1.0 endpoint.
    let (http, doc) = get("/openapi.json");
    assert_eq!(http, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/1.0",
        "/1.0/resources",
        "/1.0/certificates",
        "/1.0/certificates/{fingerprint}",
        "/1.0/operations",
        "/1.0/operations/{id}",
        "/1.0/operations/{id}/wait",
        "/1.0/instances/{name}",
        "/1.0/instances/{name}/snapshots",
        "/1.0/instances/{name}/snapshots/{snapshot}",
        "/1.0/instances/{name}/checkpoint",
        "/1.0/instances/{name}/restore",
        "/1.0/instances/{name}/exec",
        "/1.0/instances/{name}/backup",
        "/1.0/instances",
        "/1.0/migrations/{token}",
        "/1.0/migrations/{token}/receive",
        "/1.0/migrations/{token}/pages/{port}",
    ] {
        assert!(paths.contains_key(p), "openapi.json lacks {p}");
    }
    b.ok(&["rm", "-f", "s"]);
}

#[test]
fn given_server_certificate_and_client_ca() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let d = b.dir.path();
    // A CA, a client certificate it signed (X.509 v3, for client authentication), the
    // server's own certificate.
    std::fs::write(
        d.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let (ca, _) = self_signed(d, "ca");
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=signed-client",
            "-keyout",
            "signed.key",
            "-out",
            "signed.csr",
        ],
    );
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "signed.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.ext",
            "-out",
            "signed.crt",
        ],
    );
    let (srv_crt, srv_key) = self_signed(d, "server");
    let server = TlsServer::start_with(
        &b,
        &[
            "--tls-cert",
            srv_crt.to_str().unwrap(),
            "--tls-key",
            srv_key.to_str().unwrap(),
            "--client-ca",
            ca.to_str().unwrap(),
        ],
    );
    // The fingerprint printed is the given certificate's (as openssl computes it).
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&srv_crt)
        .output()
        .unwrap();
    let want = stdout(&o)
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(server.fingerprint, want);
    assert!(
        !b.root().join("serve/server.crt").exists(),
        "no certificate made when one is given"
    );

    // Signed by the CA: in, without any trust store entry.
    let (code, http, body) = server.curl(Some((&d.join("signed.crt"), &d.join("signed.key"))), &[], "/1.0");
    assert_eq!((code, http), (0, 200), "{body}");
    let (_, http, _) = server.curl(
        Some((&d.join("signed.crt"), &d.join("signed.key"))),
        &[],
        "/v1.41/containers/json",
    );
    assert_eq!(http, 200);
    // Not signed by it: refused in the handshake.
    let (other, other_key) = self_signed(d, "other");
    let (code, http, _) = server.curl(Some((&other, &other_key)), &[], "/1.0");
    assert_ne!(code, 0);
    assert_eq!(http, 0);

    // Tokens carry the given certificate's fingerprint with `trust add --tls-cert`.
    let token = b.ok(&["trust", "add", "--name", "a", "--tls-cert", srv_crt.to_str().unwrap()]);
    let a = Instance::new();
    a.ok(&["remote", "add", "b", &server.url, "--token", token.trim()]);
    assert_eq!(ok_on_b(&a, &["ps", "-aq"]).trim(), "");
}

/// A docker-registry process on loopback, killed on drop.
struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pull_on_a_remote_from_a_loopback_registry() {
    if !tools() || !have(&["docker-registry", "skopeo"]) {
        return;
    }
    let b = Instance::new();
    let t = b.dir.path();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = t.join("reg.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
            t.display()
        ),
    )
    .unwrap();
    let _reg = Registry(
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    instance::wait_for("the registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    run_vessel::sh(
        &format!(
            "umoci init --layout img && umoci new --image img:1 && umoci config --image img:1 --config.env PATH=/bin \
             && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin && cp /usr/bin/busybox b/rootfs/bin/ \
             && ln -s busybox b/rootfs/bin/echo && umoci repack --image img:1 b \
             && skopeo copy -q --dest-tls-verify=false oci:img:1 docker://127.0.0.1:{port}/remote/bb:1"
        ),
        t,
    );
    let server = TlsServer::start(&b);
    let a = Instance::new();
    join(&a, &b, &server);
    let name = format!("127.0.0.1:{port}/remote/bb:1");
    ok_on_b(&a, &["pull", &name]);
    assert!(
        b.ok(&["images"]).contains(&format!("127.0.0.1:{port}/remote/bb")),
        "pulled on B"
    );
    assert!(!a.ok(&["images"]).contains("remote/bb"), "not on A");
    assert_eq!(ok_on_b(&a, &["run", "--rm", &name, "echo", "pulled"]), "pulled\n");
    let o = on_b(&a, &["pull", &format!("127.0.0.1:{port}/remote/bb:nope")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    // tag and push on B, from B's store to the registry; the registry has it after.
    let pushed = format!("127.0.0.1:{port}/remote/pushed:2");
    ok_on_b(&a, &["tag", &name, &pushed]);
    ok_on_b(&a, &["push", &pushed]);
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", &format!("docker://{pushed}")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = on_b(&a, &["push", &pushed, "elsewhere/x:1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("tag it there first"),
        "{}",
        stderr(&o)
    );
}

/// Posts to `path` over TLS and waits for the operation it starts: the operation.
fn run_operation(server: &TlsServer, cert: Option<(&Path, &Path)>, path: &str, body: &str) -> serde_json::Value {
    let (_, http, reply) = server.curl(cert, &["-X", "POST", "-d", body], path);
    assert_eq!(http, 202, "{reply}");
    let op: serde_json::Value = serde_json::from_str(&reply).unwrap();
    let (_, http, done) = server.curl(
        cert,
        &[],
        &format!("{}/wait?timeout=120", op["operation"].as_str().unwrap()),
    );
    assert_eq!(http, 200, "{done}");
    let done: serde_json::Value = serde_json::from_str(&done).unwrap();
    done["metadata"].clone()
}

#[test]
fn v1_checkpoint_restore_and_exec_of_a_counter() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let img = b.busybox();
    // A default remote in the server's environment must not send its exec elsewhere.
    let server = TlsServer::start_env(&b, &[], &[("VESSEL_REMOTE", "elsewhere")]);
    let a = Instance::new();
    let (crt, key) = join(&a, &b, &server);
    let cert = Some((crt.as_path(), key.as_path()));
    let counter = "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.05; done";
    b.ok(&["run", "-d", "--userns=host", "--name", "c", img, "sh", "-c", counter]);
    let count = || -> u64 {
        stdout(&b.v(&["exec", "c", "cat", "/count"]))
            .trim()
            .parse()
            .unwrap_or(0)
    };
    instance::wait_for("the counter", || count() >= 3);

    // exec through /1.0: the output recorded in the operation.
    let op = run_operation(
        &server,
        cert,
        "/1.0/instances/c/exec",
        r#"{"command":["sh","-c","echo hi; echo oops >&2; exit 4"]}"#,
    );
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(op["metadata"]["return"], 4);
    assert_eq!(op["metadata"]["stdout"], "hi\n");
    assert_eq!(op["metadata"]["stderr"], "oops\n");
    let (_, http, _) = server.curl(
        cert,
        &["-X", "POST", "-d", r#"{"command":["true"],"environment":{"A=B":"x"}}"#],
        "/1.0/instances/c/exec",
    );
    assert_eq!(http, 400);

    // Checkpoint (the container stops), restore (it counts on from there).
    let op = run_operation(&server, cert, "/1.0/instances/c/checkpoint", "{}");
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(b.ok(&["inspect", "-f", "{{.State.Status}}", "c"]).trim(), "exited");
    let id = b.ok(&["inspect", "-f", "{{.Id}}", "c"]);
    let images = b.root().join("containers").join(id.trim()).join("checkpoint");
    assert!(
        images.join("inventory.img").exists(),
        "CRIU images in {}",
        images.display()
    );
    let op = run_operation(&server, cert, "/1.0/instances/c/restore", "");
    assert_eq!(op["status"], "Success", "{op}");
    assert_eq!(b.ok(&["inspect", "-f", "{{.State.Status}}", "c"]).trim(), "running");
    let after = count();
    instance::wait_for("the count to go on", || count() > after + 3);
    // A checkpoint of a container that does not run fails as an operation, with why.
    b.ok(&["stop", "-t", "1", "c"]);
    let op = run_operation(&server, cert, "/1.0/instances/c/checkpoint", "{}");
    assert_eq!(op["status"], "Failure", "{op}");
    assert!(!op["err"].as_str().unwrap().is_empty());
    b.ok(&["rm", "-f", "c"]);
}

#[test]
fn a_container_streams_from_one_host_to_another_through_the_client_library() {
    if !tools() {
        return;
    }
    let b = Instance::new();
    let img = b.busybox();
    let server_b = TlsServer::start(&b);
    let c = Instance::new();
    let server_c = TlsServer::start(&c);
    let a = Instance::new();
    join(&a, &b, &server_b);
    let token = c.ok(&["trust", "add", "--name", "host-a"]);
    a.ok(&["remote", "add", "c", &server_c.url, "--token", token.trim()]);

    b.ok(&["run", "-d", "--name", "mover", img, "sleep", "100"]);
    // 8 MiB of data that must arrive whole.
    b.ok(&[
        "exec",
        "mover",
        "sh",
        "-c",
        "head -c 8388608 /dev/urandom > /blob; echo kept > /note",
    ]);
    let sum = |i: &Instance, name: &str| {
        let o = i.ok(&["exec", name, "sh", "-c", "cat /blob | wc -c; cat /note"]);
        o.split_whitespace().map(String::from).collect::<Vec<_>>()
    };
    let before = sum(&b, "mover");
    assert_eq!(before, ["8388608", "kept"]);
    let blob_b = std::fs::read(
        b.root()
            .join("snapshots/active")
            .join(b.ok(&["inspect", "-f", "{{.Id}}", "mover"]).trim())
            .join("upper/blob"),
    )
    .unwrap();

    // The download's body is the upload's body: nothing in between holds the archive.
    let cfg = vessel_api::client::config::ClientConfig::new(a.root().join("client"));
    let (rb, rc) = (cfg.remote("b").unwrap(), cfg.remote("c").unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let made = rt.block_on(async {
        let down = rb.backup_download("mover", true).await.unwrap();
        assert_eq!(down.status(), 200);
        rc.backup_upload(Some("moved"), down.into_body()).await
    });
    let made = made.unwrap();
    assert_eq!(made["name"], "moved");
    c.ok(&["start", "moved"]);
    assert_eq!(sum(&c, "moved"), before);
    let id = c.ok(&["inspect", "-f", "{{.Id}}", "moved"]);
    let blob_c = std::fs::read(c.root().join("snapshots/active").join(id.trim()).join("upper/blob")).unwrap();
    assert!(blob_b == blob_c, "the 8 MiB arrived unchanged");

    // A broken archive (the first 64 KiB of one) is refused and leaves no container.
    let bad = rt.block_on(async {
        let down = rb.backup_download("mover", false).await.unwrap();
        use http_body_util::BodyExt;
        let all = down.into_body().collect().await.unwrap().to_bytes();
        let cut = http_body_util::Full::new(all.slice(..65536.min(all.len())));
        rc.backup_upload(Some("broken"), cut).await
    });
    assert!(bad.is_err(), "{bad:?}");
    assert!(!c.ok(&["ps", "-a"]).contains("broken"));
    // An unknown container: the API's 404.
    let missing = rt.block_on(rb.backup_download("nosuch", false));
    assert!(matches!(missing, Err(vessel_api::client::ClientError::Api { status, .. }) if status == 404));
    b.ok(&["rm", "-f", "mover"]);
    c.ok(&["rm", "-f", "moved"]);
}
