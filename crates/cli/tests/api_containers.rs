//! `vessel serve`, container side: the docker CLI's exec (plain, -i, -d, -it on a
//! pty with its size), stats (one and streamed), update, events (with since/until
//! and filters, and changes made by the `vessel` command), system df, logs -f,
//! attach (both ways, and detaching with ctrl-p ctrl-q), against a server on a temp
//! socket and root.

mod api_server;
mod instance;
mod run_vessel;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use api_server::{tools, Follower, Server};
use instance::{stderr, stdout, wait_for, Instance};

#[test]
fn docker_exec_every_mode() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    s.docker_ok(&["run", "-d", "--name", "x", img, "sleep", "1000"]);
    // Plain: both streams apart (multiplexed), the exit code through /exec/{id}/json.
    let o = s.docker(&["exec", "x", "sh", "-c", "echo out; echo err >&2; exit 4"]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!((stdout(&o).as_str(), stderr(&o).as_str()), ("out\n", "err\n"));
    // -e, -u, -w reach the process.
    let o = s.docker_ok(&[
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
    ]);
    assert_eq!(o, "b 33 /etc\n");
    // -i: stdin reaches the process, and its end is the process's EOF.
    let o = s.docker_stdin(&["exec", "-i", "x", "sh", "-c", "cat; echo done"], "line1\nline2\n");
    assert!(o.status.success());
    assert_eq!(stdout(&o), "line1\nline2\ndone\n");
    // -d: runs on after the CLI returns.
    s.docker_ok(&["exec", "-d", "x", "sh", "-c", "echo detached > /d"]);
    wait_for("the detached exec's file", || {
        s.docker(&["exec", "x", "cat", "/d"]).status.success()
    });
    assert_eq!(s.docker_ok(&["exec", "x", "cat", "/d"]), "detached\n");
    // -it on a pty: a terminal inside, of the client's size (resize), and typing works.
    let (out, code) = s.docker_pty(&["exec", "-it", "x", "sh", "-c", "tty; stty size"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("33 77"), "{out}");
    let (out, code) = s.docker_pty(
        &["exec", "-it", "x", "sh"],
        &[("", "echo $((6*7))\r"), ("42", "exit 3\r")],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("42"), "{out}");
    // The API's own view of an exec, and its errors.
    let (code, body) = s.curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"Cmd\": [\"true\"], \"AttachStdout\": true}",
        "http://d/v1.41/containers/x/exec",
    ]);
    assert_eq!(code, 201, "{body}");
    let exec: serde_json::Value = serde_json::from_str(&body).unwrap();
    let eid = exec["Id"].as_str().unwrap();
    let (code, body) = s.curl(&[&format!("http://d/v1.41/exec/{eid}/json")]);
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["Running"].as_bool(), v["ExitCode"].is_null()),
        (Some(false), true),
        "{v}"
    );
    let (code, _) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Detach\": true}",
        &format!("http://d/v1.41/exec/{eid}/start"),
    ]);
    assert_eq!(code, 200);
    let (code, _) = s.curl(&[
        "-X",
        "POST",
        "--data",
        "{\"Detach\": true}",
        &format!("http://d/v1.41/exec/{eid}/start"),
    ]);
    assert_eq!(code, 409, "an exec runs once");
    let (code, body) = s.curl(&["http://d/v1.41/exec/nope/json"]);
    assert_eq!(code, 404, "{body}");
    let (code, _) = s.curl(&["-X", "POST", "--data", "{}", "http://d/v1.41/containers/x/exec"]);
    assert_eq!(code, 400, "no Cmd");
    s.docker_ok(&["stop", "-t", "0", "x"]);
    let o = s.docker(&["exec", "x", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("is not running"),
        "{}",
        stderr(&o)
    );
    s.docker_ok(&["rm", "x"]);
}

#[test]
fn docker_stats_update_df_and_events() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    // info and version as the CLI prints them: no warnings for what vessel supports.
    let o = s.docker(&["info"]);
    assert!(o.status.success());
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains(" Cgroup Driver: cgroupfs") && out.contains(" Runtimes: vessel"),
        "{out}"
    );
    for w in ["No cpu shares support", "No cpuset support", "No memory limit support"] {
        assert!(!err.contains(w), "{err}");
    }
    let o = s.docker_ok(&["version"]);
    assert!(
        o.contains("Server: vessel") && o.contains("1.41 (minimum version 1.12)"),
        "{o}"
    );
    assert!(o.contains("Experimental:     false"), "{o}");
    s.docker_ok(&[
        "run", "-d", "--name", "st", "--memory", "64m", "--cpus", "0.5", img, "sleep", "1000",
    ]);
    let o = s.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}} {{.PIDs}}",
        "st",
    ]);
    let o = o.trim();
    assert!(
        o.starts_with("st ") && o.contains("/ 64MiB") && o.ends_with(" 1"),
        "{o}"
    );
    // The streamed form: a line a second until the client goes.
    let mut f = Follower(
        s.docker_cmd(&["stats", "--format", "{{.Name}} {{.PIDs}}", "st"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = BufReader::new(f.0.stdout.take().unwrap()).lines();
    let mut seen = 0;
    while seen < 2 {
        let l = lines.next().unwrap().unwrap();
        if l.contains("st 1") {
            seen += 1;
        }
    }
    drop(f);
    // update: new limits on the cgroup, in inspect.
    s.docker_ok(&["update", "--memory", "128m", "--cpus", "1.5", "st"]);
    let o = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        "st",
    ]);
    assert_eq!(o.trim(), "134217728 1500000000");
    let o = s.docker_ok(&["stats", "--no-stream", "--format", "{{.MemUsage}}", "st"]);
    assert!(o.contains("/ 128MiB"), "{o}");
    // system df: the image and its one container.
    let o = s.docker_ok(&["system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}"]);
    assert!(o.contains("Images 1 1") && o.contains("Containers 1 1"), "{o}");

    // events: the past, with since/until and filters; then the live stream.
    s.docker_ok(&["rename", "st", "st2"]);
    i.ok(&["run", "--name", "cli", img, "true"]);
    i.ok(&["rm", "cli"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let until = now.to_string();
    let all = s.docker_ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--format",
        "{{.Actor.Attributes.name}} {{.Action}}",
    ]);
    let all: Vec<&str> = all.lines().collect();
    assert_eq!(
        all,
        [
            "st create",
            "st start",
            "st2 rename",
            "cli create",
            "cli start",
            "cli die",
            "cli destroy"
        ],
    );
    let o = s.docker_ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "container=cli",
        "--filter",
        "event=die",
        "--format",
        "{{.Action}} {{.Actor.Attributes.exitCode}} {{.Type}}",
    ]);
    assert_eq!(o, "die 0 container\n");
    let o = s.docker_ok(&["events", "--since", "0", "--until", &until, "--filter", "type=network"]);
    assert_eq!(o, "");
    let mut f = Follower(
        s.docker_cmd(&[
            "events",
            "--format",
            "{{.Actor.Attributes.name}} {{.Action}} {{.Actor.Attributes.exitCode}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    let mut lines = BufReader::new(f.0.stdout.take().unwrap()).lines();
    // Events only from now on: the stream's headers come first, then the kill.
    s.docker_ok(&["kill", "st2"]);
    assert_eq!(lines.next().unwrap().unwrap(), "st2 die 137");
    i.ok(&["rm", "st2"]);
    assert_eq!(lines.next().unwrap().unwrap(), "st2 destroy <no value>");
    drop(f);
    let (code, _) = s.curl(&["http://d/v1.41/events?since=yesterday"]);
    assert_eq!(code, 400);
}

#[test]
fn docker_logs_follow_and_attach_both_ways() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    // logs -f: what comes later arrives, stdout and stderr apart, until the container ends.
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "l",
        img,
        "sh",
        "-c",
        "echo one; while [ ! -e /go ]; do sleep 0.1; done; echo two >&2; echo three",
    ]);
    let mut f = Follower(
        s.docker_cmd(&["logs", "-f", "l"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(f.0.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(f.0.stderr.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "one");
    s.docker_ok(&["exec", "l", "touch", "/go"]);
    assert_eq!(err.next().unwrap().unwrap(), "two");
    assert_eq!(out.next().unwrap().unwrap(), "three");
    assert!(out.next().is_none(), "logs -f ends with the container");
    assert!(f.0.wait().unwrap().success());
    drop(f);

    // attach without a tty: stdin in, output out.
    s.docker_ok(&["run", "-d", "-i", "--name", "a", img, "sh", "-c", "read l; echo got $l"]);
    let o = s.docker_stdin(&["attach", "a"], "hello\n");
    assert_eq!(stdout(&o), "got hello\n");
    assert_eq!(s.docker_ok(&["wait", "a"]).trim(), "0");
    // attach with a tty: typing reaches the shell; ctrl-p ctrl-q detaches and leaves it running.
    s.docker_ok(&["run", "-d", "-i", "-t", "--name", "t", img, "sh"]);
    let (out, _) = s.docker_pty(&["attach", "t"], &[("", "echo $((6*7))\r"), ("42", "\x10\x11")]);
    assert!(out.contains("42"), "{out}");
    // The docker 20.10 CLI ends a detach with this message (and exit status 1).
    assert!(out.contains("read escape sequence"), "{out}");
    assert_eq!(
        s.docker_ok(&["inspect", "--format", "{{.State.Status}}", "t"]).trim(),
        "running"
    );
    let (out, code) = s.docker_pty(&["attach", "t"], &[("", "\recho again\r"), ("again\r\n", "exit 5\r")]);
    assert!(out.contains("again"), "{out}");
    let _ = code;
    assert_eq!(s.docker_ok(&["wait", "t"]).trim(), "5");
    s.docker_ok(&["rm", "l", "a", "t"]);
}

/// `ip netns exec NS sh -c SCRIPT`: its stdout.
fn in_netns(ns: &str, script: &str) -> String {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .output()
        .unwrap();
    stdout(&o)
}

#[test]
fn docker_run_flags_reach_vessel() {
    if !tools() || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    // The server (and so every container's network) lives in the test's own namespace.
    let ns = instance::TestNetns::new("apirun");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    let s = Server::start(&i);
    let data = i.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // The container's root is its own id range's root (the default user namespace), not
    // the host's: it writes into a host dir that lets everyone write, as any user would.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let vol = format!("{}:/data", data.display());
    let id = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-e",
        "GREETING=hello-api",
        "-v",
        &vol,
        "-p",
        "80",
        "--network",
        "bridge",
        "--memory",
        "48m",
        "--cpus",
        "0.25",
        img,
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; echo $GREETING > /data/out; mkdir /www; echo $GREETING > /www/index.html; \
         httpd -p 80 -h /www; while true; do sleep 0.1; done",
    ]);
    let id = id.trim();
    // -v and -e: the container wrote the variable's value into the host's dir.
    wait_for("the volume's file", || data.join("out").exists());
    assert_eq!(std::fs::read_to_string(data.join("out")).unwrap(), "hello-api\n");
    // --memory, --cpus: in config.json's resources; --network bridge: a namespace of a bridge.
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(i.root().join("containers").join(id).join("config.json")).unwrap())
            .unwrap();
    let res = &cfg["linux"]["resources"];
    assert_eq!(res["memory"]["limit"], 48 << 20, "{res}");
    assert_eq!(
        (res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_i64()),
        (Some(25_000), Some(100_000)),
        "{res}"
    );
    // -p 80: a host port chosen by the server, in inspect, reaching the container on 127.0.0.1.
    let port = s.docker_ok(&[
        "inspect",
        "--format",
        "{{(index (index .NetworkSettings.Ports \"80/tcp\") 0).HostPort}}",
        "web",
    ]);
    let port: u16 = port.trim().parse().unwrap();
    assert_ne!(port, 0);
    wait_for("httpd on the published port", || {
        in_netns(&ns.0, &format!("busybox wget -qO- http://127.0.0.1:{port}/")) == "hello-api\n"
    });
    let o = s.docker_ok(&["port", "web", "80"]);
    assert!(o.contains(&format!(":{port}")), "{o}");
    // inspect: the fields the CLI reads.
    let o = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.Config.Image}} {{.HostConfig.NetworkMode}} {{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{(index .Mounts 0).Destination}}",
        "web",
    ]);
    assert_eq!(o.trim(), format!("true {img} bridge 50331648 250000000 /data"));
    let env = s.docker_ok(&["inspect", "--format", "{{range .Config.Env}}{{.}} {{end}}", "web"]);
    assert!(env.contains("GREETING=hello-api "), "{env}");
    // top with ps args; kill -s; restart.
    let o = s.docker_ok(&["top", "web", "-eo", "pid,comm"]);
    assert!(
        o.starts_with("PID") && o.contains("COMMAND") && o.contains("httpd"),
        "{o}"
    );
    s.docker_ok(&["kill", "-s", "USR1", "web"]);
    wait_for("the trap's line", || s.docker_ok(&["logs", "web"]).contains("got-usr1"));
    let before = s.docker_ok(&["inspect", "--format", "{{.State.StartedAt}} {{.State.Pid}}", "web"]);
    s.docker_ok(&["restart", "-t", "1", "web"]);
    let after = s.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.StartedAt}} {{.State.Pid}} {{.State.Status}}",
        "web",
    ]);
    assert!(
        after.trim().ends_with("running") && !after.starts_with(before.split(' ').next().unwrap()),
        "{before} {after}"
    );
    s.docker_ok(&["rm", "-f", "web"]);
    // --rm and -it on a pty: the terminal, and the container gone after.
    let (out, code) = s.docker_pty(
        &["run", "--rm", "-it", "--name", "tty", img, "sh", "-c", "tty; exit 6"],
        &[],
    );
    assert_eq!(code, 6, "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert_eq!(s.docker_ok(&["ps", "-aq"]).trim(), "");
}

const VENV_PYTHON: &str = "/opt/vessel-venv/bin/python";

#[test]
fn docker_py_and_testcontainers() {
    if !tools() || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    if !std::path::Path::new(VENV_PYTHON).exists() {
        eprintln!("\n!!!!! SKIPPED: no {VENV_PYTHON} (scripts/setup makes it) !!!!!\n");
        return;
    }
    // The server, its containers' networks and the Python clients all live in the
    // test's own network namespace: the clients reach the published ports on its 127.0.0.1.
    let ns = instance::TestNetns::new("apipy");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    let s = Server::start_with(&i, &[("VESSEL_NETWORK", "bridge")]);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_server/clients.py");
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.0, VENV_PYTHON])
        .arg(script)
        .arg(img)
        .env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
        .env("TESTCONTAINERS_RYUK_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    eprintln!("clients.py: {}\n{}{}", o.status, stdout(&o), stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("ok docker-py port=") && out.contains("page=page-dockerpy"),
        "{out}"
    );
    assert!(
        out.contains("ok testcontainers port=") && out.contains("ok removed"),
        "{out}"
    );
    assert_eq!(i.ok(&["ps", "-aq"]).trim(), "");
}
