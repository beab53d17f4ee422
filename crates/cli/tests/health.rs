//! Healthchecks end to end: `vessel run --health-*` and the Docker API's
//! `Config.Healthcheck` (docker run --health-*), run by the container's monitor; the
//! status (`starting`, `healthy`, `unhealthy`), failing streak and log in `inspect`,
//! `(healthy)` in `ps`. The checks' outcomes are driven by the test (a file the check
//! looks for), never by timing.

mod api_server;
mod instance;
mod run_vessel;

use api_server::{tools, Server};
use instance::{have, wait_for, Instance};

fn health(i: &Instance, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", name])).unwrap();
    v[0]["State"]["Health"].clone()
}

#[test]
fn health_cmd_turns_unhealthy_then_healthy_and_times_out() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&[
        "run",
        "-d",
        "--name",
        "h",
        "--health-cmd",
        "cat /ok",
        "--health-interval",
        "100ms",
        "--health-retries",
        "2",
        img,
        "sleep",
        "100",
    ]);
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", "h"])).unwrap();
    assert_eq!(
        v[0]["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "cat /ok"])
    );
    assert_eq!(v[0]["Config"]["Healthcheck"]["Interval"], 100_000_000);
    // The file is missing: two failures in a row make it unhealthy.
    wait_for("unhealthy", || health(&i, "h")["Status"] == "unhealthy");
    let h = health(&i, "h");
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let last = &h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{h}");
    assert!(last["Output"].as_str().unwrap().contains("No such file"), "{h}");
    assert!(i.ok(&["ps"]).contains("(unhealthy)"));
    // The check passes once the file is there.
    i.ok(&["exec", "h", "sh", "-c", "echo fine > /ok"]);
    wait_for("healthy", || health(&i, "h")["Status"] == "healthy");
    let h = health(&i, "h");
    assert_eq!(h["FailingStreak"], 0);
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5);
    assert_eq!(log.last().unwrap()["Output"], "fine\n");
    assert!(i.ok(&["ps"]).contains("(healthy)"));

    // A check that runs longer than its timeout fails with -1.
    i.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 50",
        "--health-interval",
        "100ms",
        "--health-timeout",
        "200ms",
        "--health-retries",
        "1",
        img,
        "sleep",
        "100",
    ]);
    wait_for("unhealthy", || health(&i, "slow")["Status"] == "unhealthy");
    let h = health(&i, "slow");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1, "{h}");
    assert!(last["Output"].as_str().unwrap().contains("exceeded timeout"), "{h}");
    // Without a healthcheck: no Health, nothing after `Up`.
    i.ok(&["run", "-d", "--name", "plain", img, "sleep", "100"]);
    assert!(health(&i, "plain").is_null());
    // Bad flags are refused.
    let o = i.v(&["run", "--rm", "--health-interval", "1s", img, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(instance::stderr(&o).contains("need --health-cmd"));
    let o = i.v(&[
        "run",
        "--rm",
        "--health-cmd",
        "true",
        "--health-interval",
        "soon",
        img,
        "true",
    ]);
    assert!(!o.status.success());
    i.ok(&["rm", "-f", "h", "slow", "plain"]);
    // The probes are the monitor's children: none is left once the containers are gone.
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("{}.*__monitor", i.root().display())])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "monitors left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn docker_run_health_flags_through_the_api() {
    if !tools() {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start(&i);
    s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "dh",
        "--health-cmd",
        "cat /ok",
        "--health-interval",
        "100ms",
        "--health-retries",
        "1",
        img,
        "sh",
        "-c",
        "echo ready > /ok; sleep 100",
    ]);
    wait_for("healthy", || {
        s.docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", "dh"])
            .trim()
            == "healthy"
    });
    assert!(s.docker_ok(&["ps"]).contains("(healthy)"));
    assert_eq!(
        s.docker_ok(&["ps", "-q", "--filter", "health=healthy"]).trim().len(),
        12
    );
    assert_eq!(
        s.docker_ok(&["inspect", "--format", "{{(index .State.Health.Log 0).Output}}", "dh"]),
        "ready\n\n"
    );
    // The vessel CLI sees the same state.
    assert!(i.ok(&["ps"]).contains("(healthy)"));
    s.docker_ok(&["rm", "-f", "dh"]);
}
