//! The per-container monitor as a process: which binary serves it (`vessel-monitor`
//! beside `vessel`, else `vessel __monitor`) and how much private memory an idle one
//! keeps (USS: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup). Each test has
//! its own `--root`; a guard removes every container it made.

mod instance;
mod run_vessel;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use instance::{have, stderr, stdout, Instance};

/// The most private memory an idle monitor of the debug build may keep, in KiB.
/// Measured 2026-12-03 with three monitors: 168-192 KiB after create, 336-356 KiB after
/// start, for the debug build of `vessel-monitor` (the release build: 248-254 KiB after
/// `run -d`; podman's conmon here: 332-340 KiB; the whole `vessel` binary as a monitor:
/// 1028-1820 KiB in release). About twice the measured figure, so that it cannot
/// flake.
const MAX_USS_KIB: u64 = 720;

/// Private_Clean + Private_Dirty of process `pid`, in KiB.
fn uss_kib(pid: i64) -> u64 {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    rollup
        .lines()
        .filter(|l| l.starts_with("Private_Clean:") || l.starts_with("Private_Dirty:"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The monitor pid of container `name`.
fn monitor_of(i: &Instance, name: &str) -> i64 {
    let insp: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", name])).unwrap();
    let pid = insp[0]["State"]["MonitorPid"].as_i64().unwrap();
    assert!(pid > 0, "no monitor pid: {insp}");
    pid
}

/// The program a process was started as (its argv[0]).
fn argv0(pid: i64) -> String {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    String::from_utf8_lossy(cmdline.split(|b| *b == 0).next().unwrap()).into_owned()
}

#[test]
fn the_monitor_is_the_small_binary_and_keeps_little_private_memory() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // Three monitors, so that the pages of the binary's code that every monitor maps
    // count as shared, as they are on a host with many containers: with a single
    // monitor, page-cache pages that only it maps count as Private_Clean too.
    let names = ["idle0", "idle1", "idle2"];
    let small = Path::new(env!("CARGO_BIN_EXE_vessel-monitor"));
    let built = fs::metadata(small).unwrap();
    let mut monitors = Vec::new();
    for name in names {
        // create, then start: the start goes through the monitor after it has given its
        // set-up pages back (stack included), so it proves the monitor still works.
        i.ok(&["create", "--name", name, img, "sleep", "1000"]);
        let monitor = monitor_of(&i, name);
        assert_eq!(argv0(monitor), small.display().to_string());
        // The running file is that binary (through a read-only bind mount of it: same
        // inode).
        let running = fs::metadata(format!("/proc/{monitor}/exe")).unwrap();
        assert_eq!((running.dev(), running.ino()), (built.dev(), built.ino()));
        monitors.push(monitor);
    }
    let created: Vec<u64> = monitors.iter().map(|m| uss_kib(*m)).collect();
    for name in names {
        i.ok(&["start", name]);
    }
    assert!(i.ok(&["exec", "idle0", "echo", "alive"]).contains("alive"));
    let running: Vec<u64> = monitors.iter().map(|m| uss_kib(*m)).collect();
    eprintln!("monitor USS (KiB): {created:?} after create, {running:?} after start");
    for uss in created.iter().chain(&running) {
        assert!(
            *uss <= MAX_USS_KIB,
            "an idle monitor keeps {uss} KiB of private memory, more than {MAX_USS_KIB} KiB ({created:?} after create, {running:?} after start)"
        );
    }
    // They still record the exit.
    i.ok(&["stop", "-t", "0", "idle1"]);
    let ps = i.ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
}

#[test]
fn without_the_small_binary_vessel_serves_as_its_own_monitor() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // `vessel` alone in a directory, without vessel-monitor beside it (a hard link:
    // the debug binary is large; a copy where the link fails).
    let alone = i.dir.path().join("bin");
    fs::create_dir(&alone).unwrap();
    let exe = alone.join("vessel");
    if fs::hard_link(env!("CARGO_BIN_EXE_vessel"), &exe).is_err() {
        fs::copy(env!("CARGO_BIN_EXE_vessel"), &exe).unwrap();
    }
    let base = i.cmd();
    let run = |args: &[&str]| {
        let o = Command::new(&exe)
            .args(base.get_args())
            .envs(base.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "vessel {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    run(&["run", "-d", "--name", "big", img, "sleep", "1000"]);
    let monitor = monitor_of(&i, "big");
    assert_eq!(argv0(monitor), exe.display().to_string());
    let cmdline = fs::read_to_string(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(cmdline.contains("\0__monitor\0"), "{cmdline:?}");
    run(&["stop", "-t", "0", "big"]);
    assert!(run(&["ps", "-a"]).contains("Exited (137)"));
}
