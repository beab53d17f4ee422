//! What `vessel inspect` and `vessel ps` report, end to end with the real binary:
//! limits changed by `update`, `State.OOMKilled`, published ports in `ps`, and
//! `inspect --format` templates.

mod instance;
mod run_vessel;

use instance::{have, stderr, Instance, TestNetns};

fn inspect(i: &Instance, c: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", c])).unwrap();
    v[0].clone()
}

#[test]
fn inspect_shows_limits_set_by_update() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let id = i
        .ok(&["run", "-d", "--memory", "64m", img, "sleep", "1000"])
        .trim()
        .to_string();
    assert_eq!(inspect(&i, &id)["HostConfig"]["Memory"], 64u64 << 20);
    i.ok(&["update", "--memory", "128m", "--pids-limit", "77", "--cpus", "0.5", &id]);
    let v = inspect(&i, &id);
    assert_eq!(v["HostConfig"]["Memory"], 128u64 << 20, "{v}");
    assert_eq!(v["HostConfig"]["PidsLimit"], 77, "{v}");
    assert_eq!(v["HostConfig"]["NanoCpus"], 500_000_000, "{v}");
    assert_eq!(v["State"]["OOMKilled"], false, "{v}");
    i.ok(&["rm", "-f", &id]);
}

#[test]
fn oom_killed_is_recorded() {
    let i = Instance::new();
    // The host's GNU tail keeps a line that never ends in memory: 400 MB of it under
    // a 32 MB limit.
    let o = i.v(&[
        "run",
        "--name",
        "oom",
        "--memory",
        "32m",
        "host",
        "sh",
        "-c",
        "head -c 400000000 /dev/zero | tail",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let v = inspect(&i, "oom");
    assert_eq!(v["State"]["OOMKilled"], true, "{v}");
    assert_eq!(v["State"]["ExitCode"], 137, "{v}");
    i.ok(&["rm", "-f", "oom"]);
    let o = i.v(&["run", "--name", "fine", "--memory", "32m", "host", "true"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inspect(&i, "fine")["State"]["OOMKilled"], false);
}

#[test]
fn ps_shows_published_ports_and_inspect_takes_templates() {
    if !have(&["umoci", "busybox"]) || !std::path::Path::new("/usr/lib/cni/bridge").exists() {
        return;
    }
    let ns = TestNetns::new("psports");
    let mut i = Instance::new();
    i.netns = Some(ns.0.clone());
    let img = i.busybox();
    let id = i
        .ok(&[
            "run",
            "-d",
            "--network",
            "bridge",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1:5353:53/udp",
            img,
            "sleep",
            "1000",
        ])
        .trim()
        .to_string();
    // docker's template subset on the same container.
    let v = inspect(&i, &id);
    let f = |t: &str| i.ok(&["inspect", "--format", t, &id]);
    assert_eq!(f("{{.State.Pid}}").trim(), v["State"]["Pid"].to_string());
    let ip = f("{{.NetworkSettings.IPAddress}}");
    assert!(ip.trim().starts_with("10.88."), "{ip}");
    assert_eq!(ip.trim(), v["NetworkSettings"]["Attachment"]["ip"].as_str().unwrap());
    let config: serde_json::Value = serde_json::from_str(&f("{{json .Config}}")).unwrap();
    assert_eq!(config, v["Config"]);
    assert_eq!(f("{{range .Config.Cmd}}<{{.}}>{{end}}"), "<sleep><1000>\n");
    assert_eq!(f("{{if .State.Running}}up{{else}}down{{end}}"), "up\n");
    let o = i.v(&["inspect", "--format", "{{.State.Pid", &id]);
    assert_eq!(o.status.code(), Some(125));
    let table = i.ok(&["ps"]);
    assert!(table.contains("0.0.0.0:8080->80/tcp"), "{table}");
    assert!(table.contains("127.0.0.1:5353->53/udp"), "{table}");
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["ps", "--format", "json"])).unwrap();
    let ports = v[0]["Ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{v}");
    assert_eq!(ports[0]["host_port"], 8080);
    assert_eq!(ports[0]["container_port"], 80);
    assert_eq!(ports[0]["protocol"], "tcp");
    assert_eq!(ports[1]["host_ip"], "127.0.0.1");
    assert_eq!(ports[1]["protocol"], "udp");
    i.ok(&["rm", "-f", &id]);
}
