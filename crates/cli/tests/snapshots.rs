//! `vessel snapshot ...` end to end, with real containers (a busybox image made by umoci and
//! the built-in `host` image), real overlay mounts and cgroups: snapshots before changes and
//! restores after them (running, created and stopped containers), ls/show/rm, schedules and
//! expiry through `run-due`, commands killed with SIGKILL at named points
//! (`VESSEL_TEST_PAUSE_AT`) and finished or cleaned by the next command, and a root on a
//! 16 MiB tmpfs that fills up during a snapshot.

mod instance;
mod run_vessel;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use instance::{have, stderr, stdout, wait_for, Instance};

/// A command for `run -d` that ends at once on SIGTERM (busybox sh as pid 1 ignores it
/// otherwise, and stop would wait its 10 s).
const IDLE: &str = "trap 'exit 0' TERM; while true; do sleep 0.2; done";

fn exec(i: &Instance, c: &str, script: &str) -> String {
    i.ok(&["exec", c, "sh", "-c", script])
}

fn state(i: &Instance, c: &str) -> String {
    i.ok(&["inspect", "-f", "{{.State.Status}}", c]).trim().to_string()
}

fn names(i: &Instance, c: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["snapshot", "ls", "--format", "json", c])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn id_of(i: &Instance, c: &str) -> String {
    i.ok(&["inspect", "-f", "{{.Id}}", c]).trim().to_string()
}

fn snap_dir(i: &Instance, c: &str) -> PathBuf {
    i.root().join("containers").join(id_of(i, c)).join("snapshots")
}

/// Entries of the container's snapshot dir whose names start with `prefix`.
fn entries(i: &Instance, c: &str, prefix: &str) -> Vec<String> {
    fs::read_dir(snap_dir(i, c))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Runs `vessel ARGS` with `VESSEL_TEST_PAUSE_AT=point`, waits until it reports that it
/// stopped there, and kills it with SIGKILL.
fn kill_at(i: &Instance, point: &str, args: &[&str]) {
    let mut child = i
        .cmd()
        .args(args)
        .env("VESSEL_TEST_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            let _ = child.wait();
            panic!("vessel {args:?} ended before the point {point}: {seen}");
        }
        seen.push_str(&line);
        if line.contains(&format!("test pause at {point}")) {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    eprintln!("vessel {args:?}: killed at {point}");
}

#[test]
fn snapshot_and_restore_a_running_busybox_container() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", "c", img, "sh", "-c", IDLE]);
    exec(
        &i,
        "c",
        "echo one > /a && mkdir -p /d/e && echo x > /d/f && ln /a /hl && ln -s /a /sl \
         && rm /etc/group && dd if=/dev/zero of=/sparse bs=1 count=1 seek=50000000 2>/dev/null",
    );
    let pid = i.ok(&["inspect", "-f", "{{.State.Pid}}", "c"]);
    assert_eq!(i.ok(&["snapshot", "create", "c"]).trim(), "snap0");
    // Frozen only while copying: it runs on, the same process.
    assert_eq!(state(&i, "c"), "running");
    assert_eq!(i.ok(&["inspect", "-f", "{{.State.Pid}}", "c"]), pid);
    exec(
        &i,
        "c",
        "echo two > /a && rm -r /d && echo new > /new && rm /etc/passwd && rm /sparse",
    );
    i.ok(&["snapshot", "restore", "c", "snap0"]);
    assert_eq!(state(&i, "c"), "running", "started again after the restore");
    assert_ne!(i.ok(&["inspect", "-f", "{{.State.Pid}}", "c"]), pid);
    let got = exec(
        &i,
        "c",
        "cat /a /d/f; ls /new /etc/group 2>&1; cat /etc/passwd | head -1; \
         stat -c '%h %s' /a; readlink /sl; ls -d /d/e; stat -c '%s %b' /sparse",
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "one");
    assert_eq!(lines[1], "x");
    assert!(lines[2].contains("/new") && lines[2].contains("No such file"), "{got}");
    assert!(
        lines[3].contains("/etc/group") && lines[3].contains("No such file"),
        "whiteout kept: {got}"
    );
    assert!(lines[4].starts_with("root:"), "{got}");
    assert_eq!(lines[5], "2 4", "hardlink kept");
    assert_eq!(lines[6], "/a");
    assert_eq!(lines[7], "/d/e");
    let (size, blocks) = lines[8].split_once(' ').unwrap();
    assert_eq!(size, "50000001");
    assert!(blocks.parse::<u64>().unwrap() < 1000, "sparse file kept sparse: {got}");

    // ls, show, rm.
    i.ok(&["snapshot", "create", "c", "second", "--expiry", "7d"]);
    let table = i.ok(&["snapshot", "ls", "c"]);
    let head: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(head, ["NAME", "CREATED", "EXPIRES", "SIZE", "STATEFUL"]);
    assert!(table.contains("snap0") && table.contains("never") && table.contains("second"));
    let show: serde_json::Value = serde_json::from_str(&i.ok(&["snapshot", "show", "c", "second"])).unwrap();
    assert_eq!(show["name"], "second");
    assert_eq!(show["stateful"], false);
    assert!(show["size"].as_u64().unwrap() > 50_000_000);
    let created = chrono::DateTime::parse_from_rfc3339(show["created"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(show["expires"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_days(), 7);
    let o = i.v(&["snapshot", "create", "c", "second"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("already has a snapshot \"second\""),
        "{}",
        stderr(&o)
    );
    i.ok(&["snapshot", "rm", "c", "second"]);
    assert_eq!(names(&i, "c"), ["snap0"]);
    let o = i.v(&["snapshot", "show", "c", "second"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("has no snapshot \"second\""), "{}", stderr(&o));
    assert_eq!(i.ok(&["snapshot", "create", "c"]).trim(), "snap1");
    let o = i.v(&["snapshot", "create", "c", "../x"]);
    assert_eq!(o.status.code(), Some(125));

    // A stopped container stays stopped; its files change all the same.
    i.ok(&["stop", "c"]);
    i.ok(&["snapshot", "restore", "c", "snap0"]);
    assert_eq!(state(&i, "c"), "exited");
    i.ok(&["start", "c"]);
    assert_eq!(exec(&i, "c", "cat /a"), "one\n");

    // rm takes the snapshots with the container.
    let dir = snap_dir(&i, "c");
    assert!(dir.join("snap0/snapshot.json").exists());
    i.ok(&["rm", "-f", "c"]);
    assert!(!dir.exists());
    assert!(i.mounts_under_root().is_empty());
}

#[test]
fn a_created_container_is_created_again_after_a_restore() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["create", "--name", "k", img, "cat", "/a"]);
    i.ok(&["snapshot", "create", "k", "empty"]);
    // Files written into the stopped container's upper, as a tool on the host would.
    let upper = i.root().join("snapshots/active").join(id_of(&i, "k")).join("upper");
    assert_eq!(state(&i, "k"), "created");
    fs::write(upper.join("a"), "later\n").unwrap();
    i.ok(&["snapshot", "restore", "k", "empty"]);
    assert_eq!(state(&i, "k"), "created");
    assert!(!upper.join("a").exists());
    let o = i.v(&["start", "-a", "k"]);
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
}

#[test]
fn host_image_snapshot_restores_its_etc_and_root() {
    let i = Instance::new();
    i.ok(&["run", "-d", "--name", "h", "host", "sh", "-c", IDLE]);
    exec(
        &i,
        "h",
        "echo kept > /root/r && echo vessel-snap-test >> /etc/motd && echo 1 > /etc/added",
    );
    i.ok(&["snapshot", "create", "h", "base"]);
    exec(
        &i,
        "h",
        "echo changed > /root/r && rm /etc/motd /etc/added && echo 2 > /etc/new",
    );
    i.ok(&["snapshot", "restore", "h", "base"]);
    assert_eq!(state(&i, "h"), "running");
    let got = exec(
        &i,
        "h",
        "cat /root/r; tail -1 /etc/motd; cat /etc/added; ls /etc/new 2>&1; true",
    );
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[..3], ["kept", "vessel-snap-test", "1"]);
    assert!(lines[3].contains("No such file"), "{got}");
    assert!(snap_dir(&i, "h").join("base/host-etc").is_dir());
}

/// Appends 1, 2, 3... to /count, 20 a second.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done";

/// How far the counter in `file` got, checked to be 1..=N: a number lost or repeated (a
/// restart from 1, or a restored process writing on after files that were not restored)
/// fails.
#[track_caller]
fn counted(file: &std::path::Path) -> u64 {
    let text = fs::read_to_string(file).unwrap_or_default();
    let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (k, n) in nums.iter().enumerate() {
        assert_eq!(*n, k as u64 + 1, "{}: {n} at line {}", file.display(), k + 1);
    }
    nums.len() as u64
}

#[test]
fn stateful_snapshots_keep_the_processes_and_restore_brings_them_back() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // Refused: a stateful snapshot of a container that does not run, and a stateful
    // restore of a snapshot without processes.
    i.ok(&["create", "--name", "s", img, "true"]);
    let o = i.v(&["snapshot", "create", "--stateful", "s"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("take it without --stateful"), "{}", stderr(&o));
    i.ok(&["snapshot", "create", "s", "plain"]);
    let o = i.v(&["snapshot", "restore", "--stateful", "s", "plain"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("holds no processes"), "{}", stderr(&o));
    assert_eq!(names(&i, "s"), ["plain"]);

    // A counter in its own user namespace (the default).
    i.ok(&["run", "-d", "--name", "c", img, "sh", "-c", COUNTER]);
    let live = i
        .root()
        .join("snapshots/active")
        .join(id_of(&i, "c"))
        .join("upper/count");
    wait_for("the counter to count", || counted(&live) >= 3);
    i.ok(&["snapshot", "create", "--stateful", "c", "live"]);
    assert_eq!(state(&i, "c"), "running");
    let snap = snap_dir(&i, "c").join("live");
    assert!(snap.join("checkpoint/inventory.img").is_file());
    let at_snapshot = counted(&snap.join("rootfs/count"));
    let show: serde_json::Value = serde_json::from_str(&i.ok(&["snapshot", "show", "c", "live"])).unwrap();
    assert_eq!(show["stateful"], true, "{show}");
    // The processes go on after the snapshot.
    wait_for("the count to go on", || counted(&live) >= at_snapshot + 10);
    // Restored: files and processes as at the snapshot, so the count goes on from its
    // value there, with no number lost or repeated.
    i.ok(&["snapshot", "restore", "--stateful", "c", "live"]);
    assert_eq!(state(&i, "c"), "running");
    wait_for("the restored count to go on", || counted(&live) >= at_snapshot + 5);
    i.ok(&["rm", "-f", "c", "s"]);
    assert!(i.mounts_under_root().is_empty(), "{:?}", i.mounts_under_root());
}

#[test]
fn schedules_take_due_snapshots_and_expired_ones_go() {
    let i = Instance::new();
    i.ok(&["create", "--name", "s", "host", "true"]);
    let o = i.v(&["update", "--snapshot-schedule", "@sometimes", "s"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("snapshot schedule"), "{}", stderr(&o));
    let o = i.v(&["update", "--snapshot-schedule", "* * * *", "s"]);
    assert_eq!(o.status.code(), Some(125));
    let o = i.v(&["update", "--snapshot-expiry", "soon", "s"]);
    assert_eq!(o.status.code(), Some(125));
    i.ok(&[
        "update",
        "--snapshot-schedule",
        "@hourly",
        "--snapshot-expiry",
        "1s",
        "s",
    ]);
    let insp = i.ok(&["inspect", "-f", "{{.Snapshots.Schedule}} {{.Snapshots.Expiry}}", "s"]);
    assert_eq!(insp.trim(), "@hourly 1s");
    // Before the snapshots are taken: the schedule has not fired since it was set, and
    // nothing has expired yet (1 s later it has: the clock of the snapshot commands is set
    // for that).
    let now = chrono::Utc::now();
    i.ok(&["snapshot", "create", "s", "keep", "--expiry", "7d"]);
    // The container's expiry: 1s.
    i.ok(&["snapshot", "create", "s", "short"]);
    let at = |secs: i64| (now + chrono::Duration::seconds(secs)).to_rfc3339();
    let run_due = |t: &str, dry: bool| {
        let mut c = i.cmd();
        c.args(["snapshot", "run-due"]).env("VESSEL_TEST_NOW", t);
        if dry {
            c.arg("--dry-run");
        }
        let o = c.output().unwrap();
        eprintln!("run-due at {t}: {}{}", stdout(&o), stderr(&o));
        assert!(o.status.success());
        stdout(&o)
    };
    assert_eq!(run_due(&at(0), false), "");
    // Two hours on: an hourly schedule has fired; "short" has expired.
    let dry = run_due(&at(7200), true);
    assert!(dry.contains("s: would take snapshot auto-"), "{dry}");
    assert!(dry.contains("s: would remove snapshot short"), "{dry}");
    assert_eq!(names(&i, "s"), ["keep", "short"]);
    let out = run_due(&at(7200), false);
    assert!(
        out.contains("s: took snapshot auto-") && out.contains("removed snapshot short"),
        "{out}"
    );
    let n = names(&i, "s");
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(n.contains(&"keep".to_string()) && n.iter().any(|s| s.starts_with("auto-")));
    // Not due again at the same time; the auto snapshot (expiry 1s) expires a second on.
    assert_eq!(run_due(&at(7200), false), "");
    let out = run_due(&at(7201), false);
    assert!(out.contains("removed snapshot auto-"), "{out}");
    assert_eq!(names(&i, "s"), ["keep"]);
    // An empty schedule removes it.
    i.ok(&["update", "--snapshot-schedule", "", "s"]);
    assert_eq!(run_due(&at(90000), false), "");
    let insp = i.ok(&["inspect", "-f", "{{json .Snapshots.Schedule}}", "s"]);
    assert_eq!(insp.trim(), "null");
}

#[test]
fn killed_snapshot_commands_leave_before_or_after_and_are_finished() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", "c", img, "sh", "-c", IDLE]);
    exec(&i, "c", "echo one > /a");
    i.ok(&["snapshot", "create", "c", "one"]);

    // create killed while the container is frozen: check thaws it.
    kill_at(&i, "create-frozen", &["snapshot", "create", "c", "frozen"]);
    let o = i.v(&["exec", "c", "true"]);
    assert!(stderr(&o).contains("paused"), "frozen: {}", stderr(&o));
    let o = i.v(&["system", "check"]);
    assert!(
        stdout(&o).contains("frozen by an interrupted snapshot"),
        "{}",
        stdout(&o)
    );
    exec(&i, "c", "true");
    // create killed after the copy: no snapshot, a .tmp- leftover that check removes.
    kill_at(&i, "create-copied", &["snapshot", "create", "c", "half"]);
    assert_eq!(state(&i, "c"), "running", "thawed before the kill point");
    assert_eq!(names(&i, "c"), ["one"]);
    assert_eq!(entries(&i, "c", ".tmp-").len(), 1);
    let o = i.v(&["system", "check", "--dry-run"]);
    assert!(stdout(&o).contains("unfinished snapshot operation"), "{}", stdout(&o));
    // create killed after the rename, before snapshot.json: not a snapshot either.
    kill_at(&i, "create-renamed", &["snapshot", "create", "c", "nojson"]);
    assert_eq!(names(&i, "c"), ["one"]);
    i.ok(&["system", "check"]);
    assert!(entries(&i, "c", ".tmp-").is_empty());
    assert!(entries(&i, "c", "nojson").is_empty());
    i.ok(&["snapshot", "create", "c", "half"]);

    // rm killed after its rename: gone, and its leftover is garbage.
    kill_at(&i, "rm-renamed", &["snapshot", "rm", "c", "half"]);
    assert_eq!(names(&i, "c"), ["one"]);
    i.ok(&["system", "check"]);
    assert!(entries(&i, "c", ".tmp-").is_empty());

    // restore killed before its journal: the files as before; the copy is removed.
    exec(&i, "c", "echo two > /a");
    kill_at(&i, "restore-copied", &["snapshot", "restore", "c", "one"]);
    let upper = i.root().join("snapshots/active").join(id_of(&i, "c")).join("upper");
    assert!(upper.with_extension("new").exists());
    assert_eq!(fs::read_to_string(upper.join("a")).unwrap(), "two\n");
    i.ok(&["system", "check"]);
    assert!(!upper.with_extension("new").exists());
    i.ok(&["start", "c"]);
    assert_eq!(exec(&i, "c", "cat /a"), "two\n");

    // restore killed in the middle of the swap (the old upper moved aside): `system check`
    // finishes it and starts the container again, as the restore would have.
    kill_at(&i, "restore-swapping", &["snapshot", "restore", "c", "one"]);
    assert!(!upper.exists(), "killed between the two renames");
    let o = i.v(&["system", "check"]);
    assert!(
        stdout(&o).contains("snapshot restore was interrupted"),
        "{}",
        stdout(&o)
    );
    assert_eq!(state(&i, "c"), "running");
    assert_eq!(exec(&i, "c", "cat /a"), "one\n");
    assert!(!upper.with_extension("old").exists());

    // The same on a stopped container, finished by the next `start`.
    exec(&i, "c", "echo three > /a");
    i.ok(&["stop", "c"]);
    kill_at(&i, "restore-swapping", &["snapshot", "restore", "c", "one"]);
    i.ok(&["start", "c"]);
    assert_eq!(exec(&i, "c", "cat /a"), "one\n");
    assert!(snap_dir(&i, "c").join(".restore").symlink_metadata().is_err());
}

#[test]
fn a_full_disk_during_a_snapshot_is_a_clear_error_and_loses_nothing() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let root = i.root();
    fs::create_dir_all(&root).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "vessel-snap-test"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(ok.success());
    // Unmounted by the instance's guard (every mount under its root), also on failure.
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", "c", img, "sh", "-c", IDLE]);
    i.ok(&["snapshot", "create", "c", "small"]);
    exec(&i, "c", "dd if=/dev/urandom of=/big bs=1M count=9 2>/dev/null; sync");
    let sum = exec(&i, "c", "md5sum /big");
    let o = i.v(&["snapshot", "create", "c", "big"]);
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("no space left") && e.contains("taking snapshot big of container c"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert_eq!(names(&i, "c"), ["small"]);
    assert!(entries(&i, "c", ".tmp-").is_empty());
    assert!(entries(&i, "c", "big").is_empty());
    assert_eq!(state(&i, "c"), "running");
    assert_eq!(exec(&i, "c", "md5sum /big"), sum);
    // With the space back, the same snapshot works.
    exec(&i, "c", "rm /big");
    i.ok(&["snapshot", "create", "c", "big"]);
}
