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

/// Adds tag `hc` to the busybox layout `img` (made by [`Instance::busybox`]) whose image
/// config carries docker's `config.Healthcheck` = `healthcheck` (JSON), and imports it.
fn healthcheck_image(i: &Instance, healthcheck: &str) -> &'static str {
    let script = r#"
import hashlib, json, sys
d, hc = sys.argv[1], json.loads(sys.argv[2])
idx = json.load(open(d + "/index.json"))
m = [x for x in idx["manifests"] if x.get("annotations", {}).get("org.opencontainers.image.ref.name") == "1"][0]
blob = lambda dg: d + "/blobs/sha256/" + dg.split(":")[1]
man = json.load(open(blob(m["digest"])))
cfg = json.load(open(blob(man["config"]["digest"])))
cfg.setdefault("config", {})["Healthcheck"] = hc
def put(obj):
    b = json.dumps(obj).encode()
    h = hashlib.sha256(b).hexdigest()
    open(d + "/blobs/sha256/" + h, "wb").write(b)
    return "sha256:" + h, len(b)
man["config"]["digest"], man["config"]["size"] = put(cfg)
dg, size = put(man)
idx["manifests"].append({"mediaType": m["mediaType"], "digest": dg, "size": size,
                         "annotations": {"org.opencontainers.image.ref.name": "hc"}})
json.dump(idx, open(d + "/index.json", "w"))
"#;
    let layout = i.dir.path().join("img");
    let ok = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&layout)
        .arg(healthcheck)
        .status()
        .unwrap();
    assert!(ok.success(), "adding a Healthcheck to the image config");
    let src = format!("oci:{}:hc", layout.display());
    i.ok(&["image", "import", &src, "localhost/hc:1"]);
    "localhost/hc:1"
}

#[test]
fn image_healthcheck_is_the_default_of_run_and_the_api() {
    if !have(&["umoci", "busybox", "python3"]) {
        return;
    }
    let i = Instance::new();
    i.busybox();
    let img = healthcheck_image(
        &i,
        r#"{"Test":["CMD-SHELL","cat /ok"],"Interval":100000000,"Timeout":5000000000,"StartPeriod":0,"Retries":2}"#,
    );
    // vessel run without --health-*: the image's check, unhealthy until /ok exists.
    i.ok(&["run", "-d", "--name", "h", img, "sleep", "100"]);
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", "h"])).unwrap();
    assert_eq!(
        v[0]["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "cat /ok"])
    );
    assert_eq!(v[0]["Config"]["Healthcheck"]["Interval"], 100_000_000);
    wait_for("unhealthy", || health(&i, "h")["Status"] == "unhealthy");
    i.ok(&["exec", "h", "sh", "-c", "echo fine > /ok"]);
    wait_for("healthy", || health(&i, "h")["Status"] == "healthy");
    // A user's --health-cmd replaces the image's test and keeps its interval.
    i.ok(&[
        "run",
        "-d",
        "--name",
        "mine",
        "--health-cmd",
        "true",
        img,
        "sleep",
        "100",
    ]);
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", "mine"])).unwrap();
    assert_eq!(
        v[0]["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    assert_eq!(v[0]["Config"]["Healthcheck"]["Interval"], 100_000_000);
    // --no-healthcheck: none at all.
    i.ok(&["run", "-d", "--name", "off", "--no-healthcheck", img, "sleep", "100"]);
    assert!(health(&i, "off").is_null(), "{}", health(&i, "off"));
    let ps = i.ok(&["ps"]);
    let off = ps.lines().find(|l| l.contains(" off")).unwrap_or_default();
    assert!(off.contains("Up") && !off.contains("(health"), "{ps}");
    i.ok(&["rm", "-f", "h", "mine", "off"]);

    // The same through the Docker API: docker run without flags, and --no-healthcheck
    // (Healthcheck.Test ["NONE"]).
    if !tools() {
        return;
    }
    let s = Server::start(&i);
    s.docker_ok(&["run", "-d", "--name", "dh", img, "sh", "-c", "echo > /ok; sleep 100"]);
    wait_for("healthy through the API", || {
        s.docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", "dh"])
            .trim()
            == "healthy"
    });
    s.docker_ok(&["run", "-d", "--name", "doff", "--no-healthcheck", img, "sleep", "100"]);
    assert_eq!(
        s.docker_ok(&["inspect", "--format", "{{.State.Health}}", "doff"])
            .trim(),
        "<nil>"
    );
    s.docker_ok(&["rm", "-f", "dh", "doff"]);
}
