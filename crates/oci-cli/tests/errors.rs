//! Errors: bad bundles, unknown ids, wrong states. Every failure exits non-zero and
//! leaves no state dir, mount or cgroup behind.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

#[track_caller]
fn create_fails_cleanly(c: &TestContainer, what: &str) -> Out {
    let out = c.create_id(&c.id, &c.bundle, &[]);
    out.assert_fail(what);
    assert!(
        !out.stderr.trim().is_empty(),
        "{what}: an error message on stderr: {out}"
    );
    assert!(
        c.state_of(&c.id).is_none(),
        "{what}: no container after a failed create"
    );
    c.assert_no_leftovers(what);
    out
}

#[test]
fn missing_config_json() {
    let c = TestContainer::new("err-noconfig");
    fs::remove_file(c.bundle.join("config.json")).unwrap();
    let out = create_fails_cleanly(&c, "create without config.json");
    assert!(out.stderr.contains("config.json"), "message names config.json: {out}");
}

#[test]
fn malformed_config_json() {
    let c = TestContainer::new("err-badjson");
    fs::write(
        c.bundle.join("config.json"),
        "{\"ociVersion\": \"1.0.2\", \"process\": {",
    )
    .unwrap();
    create_fails_cleanly(&c, "create with malformed config.json");
}

#[test]
fn missing_rootfs() {
    let c = TestContainer::new("err-norootfs");
    fs::remove_dir_all(&c.rootfs).unwrap();
    create_fails_cleanly(&c, "create without rootfs");
}

#[test]
fn missing_executable() {
    // The process cannot start: create (or start) fails, nothing is left after delete.
    let mut c = TestContainer::new("err-noexe");
    c.args(&["/no/such/binary"]);
    let out = c.run();
    out.assert_fail("run of a missing binary");
    let _ = c.oci(&["delete", "--force", &c.id]);
    c.assert_no_leftovers("run of a missing binary");
}

#[test]
fn unknown_container_id() {
    let c = TestContainer::new("err-unknown");
    fs::create_dir_all(&c.root).unwrap();
    for args in [
        vec!["state", c.id.as_str()],
        vec!["start", c.id.as_str()],
        vec!["kill", c.id.as_str()],
        vec!["kill", c.id.as_str(), "KILL"],
        vec!["delete", c.id.as_str()],
    ] {
        let out = c.oci(&args);
        out.assert_fail(&args.join(" "));
        let msgs = error_messages(&out.stderr);
        assert!(
            msgs.len() == 1 && msgs[0].contains("does not exist"),
            "{args:?}: one error line, in runc's format: {out}"
        );
        // runc 1.1.5 says `container does not exist` without the id; vessel names it.
        if !is_runc() {
            assert_eq!(
                msgs[0],
                format!("container \"{}\" does not exist", c.id),
                "{args:?}: {out}"
            );
        }
    }
    c.assert_no_leftovers("unknown id");
}

/// Errors are printed as runc prints them, because clients parse them (issue 17, 9):
/// logrus's text line on stderr by default, a JSON line under `--log-format json`, and
/// with `--log FILE` the line goes to the file while stderr gets the bare message.
#[test]
fn errors_are_reported_in_runc_s_log_format() {
    let c = TestContainer::new("err-format");
    fs::create_dir_all(&c.root).unwrap();
    let out = c.oci(&["delete", &c.id]);
    out.assert_fail("delete of a missing container");
    let line = out.stderr.trim_end();
    assert!(
        line.starts_with("time=\"") && line.contains("Z\" level=error msg=\""),
        "text format: {out}"
    );
    let out = c.oci(&["--log-format", "json", "kill", &c.id, "KILL"]);
    out.assert_fail("kill of a missing container");
    let v: serde_json::Value = serde_json::from_str(out.stderr.trim_end()).expect("one JSON line on stderr");
    assert_eq!(v["level"], "error", "{v}");
    assert!(v["msg"].as_str().unwrap_or("").contains("does not exist"), "{v}");
    assert!(v["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{v}");
    for format in ["text", "json"] {
        let log = c.dir.join(format!("{format}.log"));
        let out = c.oci(&["--log", log.to_str().unwrap(), "--log-format", format, "state", &c.id]);
        out.assert_fail("state of a missing container");
        let logged = fs::read_to_string(&log).unwrap_or_default();
        let msgs = error_messages(&logged);
        assert!(
            msgs.len() == 1 && msgs[0].contains("does not exist"),
            "{format}: the log file holds the error line: {logged:?}"
        );
        assert_eq!(out.stderr.trim_end(), msgs[0], "{format}: stderr has the bare message");
    }
}

/// An ociVersion that is not a semantic version, or of a major version other than 1,
/// is refused with a clear error, as crun does; runc 1.1 accepts anything.
#[test]
fn invalid_oci_version_is_refused() {
    if is_runc() {
        return; // runc 1.1.5 does not check ociVersion
    }
    for bad in ["1.0", "not-a-version", "2.0.0", ""] {
        let mut c = TestContainer::new("err-ociversion");
        c.spec["ociVersion"] = serde_json::json!(bad);
        c.args(&["true"]);
        let out = c.create();
        out.assert_fail(&format!("create with ociVersion {bad:?}"));
        let msgs = error_messages(&out.stderr);
        assert!(
            msgs.len() == 1 && msgs[0].contains("ociVersion") && msgs[0].contains(&format!("{bad:?}")),
            "{bad:?}: the error names the field and value: {out}"
        );
        c.assert_no_leftovers("after a refused ociVersion");
    }
    let mut c = TestContainer::new("err-ociversion-ok");
    c.spec["ociVersion"] = serde_json::json!("1.0.2-dev");
    c.args(&["true"]);
    c.run().assert_ok("run with ociVersion 1.0.2-dev");
}

/// An unknown capability name in config.json is an error naming it (stricter than
/// runc 1.1, which warns and ignores it): a typo must not silently drop a capability.
#[test]
fn unknown_capability_name_is_an_error() {
    if is_runc() {
        return; // runc 1.1.5 ignores unknown capability names
    }
    let mut c = TestContainer::new("err-cap");
    c.spec["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_KILL", "CAP_NO_SUCH_THING"]);
    c.args(&["true"]);
    let out = c.create();
    out.assert_fail("create with an unknown capability");
    assert!(out.stderr.contains("NO_SUCH_THING"), "the error names it: {out}");
    c.assert_no_leftovers("after an unknown capability");
}

#[test]
fn delete_force_of_missing_container_succeeds() {
    // runc: `delete --force` of an id that does not exist is not an error, so podman's
    // and containerd's clean-up after a failed create stays quiet.
    let c = TestContainer::new("err-delforce");
    fs::create_dir_all(&c.root).unwrap();
    c.oci(&["delete", "--force", &c.id])
        .assert_ok("delete --force of a missing container");
    c.assert_no_leftovers("delete --force of a missing container");
}

#[test]
fn duplicate_id_on_create() {
    let mut c = TestContainer::new("err-dup");
    c.args(&["sleep", "1000"]);
    c.create().assert_ok("first create");
    let pid = c.pid();
    let out = c.create_id(&c.id, &c.bundle, &[]);
    out.assert_fail("second create with the same id");
    let st = c.state();
    assert_eq!(st["status"], "created", "first container untouched: {st}");
    assert_eq!(st["pid"].as_i64(), Some(pid as i64));
    assert!(pid_alive(pid));
}

#[test]
fn start_twice_fails() {
    let mut c = TestContainer::new("err-start2");
    c.start_sleeper();
    let out = c.start();
    out.assert_fail("start of a running container");
    assert_eq!(c.status(), "running");
}

#[test]
fn delete_running_needs_force() {
    let mut c = TestContainer::new("err-delrun");
    c.start_sleeper();
    let pid = c.pid();
    let out = c.delete();
    out.assert_fail("delete of a running container");
    assert_eq!(c.status(), "running", "still running after a refused delete");
    assert!(pid_alive(pid));

    c.oci(&["delete", "--force", &c.id]).assert_ok("delete --force");
    assert!(
        wait_until(Duration::from_secs(10), || !pid_alive(pid)),
        "delete --force kills the init"
    );
    assert!(c.state_of(&c.id).is_none(), "container gone");
    c.assert_no_leftovers("delete --force");
}

#[test]
fn delete_created_container() {
    // A created (never started) container is deleted without --force, like runc.
    let mut c = TestContainer::new("err-delcreated");
    c.args(&["sleep", "1000"]);
    c.create().assert_ok("create");
    let pid = c.pid();
    c.delete().assert_ok("delete of a created container");
    assert!(wait_until(Duration::from_secs(10), || !pid_alive(pid)));
    c.assert_no_leftovers("delete of a created container");
}

#[test]
fn kill_stopped_container_fails() {
    let mut c = TestContainer::new("err-killstopped");
    c.args(&["true"]);
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    c.kill("KILL").assert_fail("kill of a stopped container");
    c.delete().assert_ok("delete of a stopped container");
    c.assert_no_leftovers("after delete");
}

#[test]
fn bad_signal_name() {
    let mut c = TestContainer::new("err-badsig");
    c.start_sleeper();
    c.kill("NOTASIGNAL").assert_fail("kill with an unknown signal");
    assert_eq!(c.status(), "running");
}
