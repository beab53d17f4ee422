//! checkpoint and restore through CRIU (runc-checkpoint(8), runc-restore(8)): a
//! counter that continues where it stopped, `--leave-running`, refused operations,
//! CRIU features this kernel lacks, and cleanup that never deletes across a mount.
//! CRIU is the one `scripts/setup` installs (see `vessel_runtime::checkpoint`).

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// A loop that appends 1, 2, 3... to /count in the (writable) rootfs and to stdout.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; echo $i; sleep 0.05; done";

/// The numbers in the counter's file, checked to be 1..=N with none lost or repeated.
#[track_caller]
fn count(c: &TestContainer) -> u64 {
    let text = fs::read_to_string(c.rootfs.join("count")).unwrap_or_default();
    let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64 + 1,
            "count file has {n} at line {}: lost or repeated numbers",
            i + 1
        );
    }
    nums.len() as u64
}

/// Runs `cmd` with the stdout it was given (run_cmd would replace it); its stderr is
/// captured when `capture`, else left as given.
fn run_with_stdout(cmd: &mut std::process::Command, capture: bool) -> Out {
    let mut err = tempfile::tempfile().unwrap();
    if capture {
        cmd.stderr(err.try_clone().unwrap());
    }
    let mut child = cmd.spawn().expect("spawn vessel-oci");
    let st = wait_timeout(&mut child, TIMEOUT).expect("vessel-oci timed out");
    let mut stderr = String::new();
    use std::io::{Read, Seek};
    err.rewind().unwrap();
    err.read_to_string(&mut stderr).unwrap();
    Out {
        code: exit_code(st),
        stdout: String::new(),
        stderr,
    }
}

/// A running counter container, its stdout and stderr a pipe (as containerd and
/// podman's conmon give them): the read end, kept open by the test.
fn counter(test: &str) -> (TestContainer, std::io::PipeReader) {
    let mut c = TestContainer::new(test);
    c.readonly(false).sh(COUNTER);
    c.write_spec();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = c.cmd();
    cmd.args(["create", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    run_with_stdout(&mut cmd, false).assert_ok("create");
    c.record_pid(c.pid());
    c.start().assert_ok("start");
    c.wait_status("running", Duration::from_secs(10));
    assert!(wait_until(TIMEOUT, || count(&c) >= 3), "the counter counts");
    (c, reader)
}

/// `restore -d` of this test's container from `images`, stdout to `out`.
fn restore(c: &TestContainer, images: &Path, out: &Path) -> Out {
    let mut cmd = c.cmd();
    cmd.args(["restore", "-d", "--image-path"])
        .arg(images)
        .arg("--bundle")
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(fs::File::create(out).unwrap());
    let res = run_with_stdout(&mut cmd, true);
    if let Some(pid) = c.state_of(&c.id).and_then(|s| s["pid"].as_i64()) {
        c.record_pid(pid as i32);
    }
    res
}

#[test]
fn checkpoint_then_restore_continues_the_count() {
    let (c, _pipe) = counter("cr-count");
    let images = c.dir.join("images");
    let out = c.oci(&["checkpoint", "--image-path", images.to_str().unwrap(), &c.id]);
    criu_ok(out, &images, "checkpoint");
    assert!(images.join("inventory.img").exists(), "CRIU images written");
    // Without --leave-running the container is gone, as with runc.
    assert!(c.state_of(&c.id).is_none(), "container removed by checkpoint");
    assert!(cgroup_dirs(&c.cgroups_path).is_empty(), "cgroup removed by checkpoint");
    let stopped_at = count(&c);

    let out = c.dir.join("restored.out");
    restore(&c, &images, &out).assert_ok("restore");
    assert_eq!(c.status(), "running", "restored container runs");
    assert!(!cgroup_dirs(&c.cgroups_path).is_empty(), "restored into its cgroup");
    assert!(
        wait_until(TIMEOUT, || count(&c) >= stopped_at + 5),
        "the count continues after restore"
    );
    // The restored init's stdout is the restoring process's (--inherit-fd).
    let first: u64 = fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(
        first,
        stopped_at + 1,
        "restored stdout goes to restore's stdout and starts after {stopped_at}"
    );
    assert!(
        host_mounts_naming(&c.dir).is_empty(),
        "no criu-root or cgyard mount left on the host"
    );
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
    c.assert_no_leftovers("after restore and delete");
}

#[test]
fn checkpoint_leave_running_keeps_the_container() {
    let (c, _pipe) = counter("cr-leave");
    let pid = c.pid();
    let images = c.dir.join("images");
    c.oci(&[
        "checkpoint",
        "--leave-running",
        "--image-path",
        images.to_str().unwrap(),
        &c.id,
    ])
    .assert_ok("checkpoint --leave-running");
    assert!(images.join("inventory.img").exists(), "CRIU images written");
    assert_eq!(c.status(), "running");
    assert_eq!(c.pid(), pid, "same init");
    let n = count(&c);
    assert!(wait_until(TIMEOUT, || count(&c) > n + 3), "still counting");
}

#[test]
fn checkpoint_of_missing_created_or_stopped_container_is_refused() {
    let mut c = TestContainer::new("cr-state");
    let images = c.dir.join("images");
    let img = images.to_str().unwrap().to_string();
    let out = c.oci(&["checkpoint", "--image-path", &img, &c.id]);
    out.assert_fail("checkpoint of a missing container");
    assert!(out.mentions("does not exist"), "{out}");

    c.args(&["sleep", "1000"]);
    c.create().assert_ok("create");
    let out = c.oci(&["checkpoint", "--image-path", &img, &c.id]);
    out.assert_fail("checkpoint of a created container");
    assert!(out.mentions("not running"), "{out}");
    c.start().assert_ok("start");
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    let out = c.oci(&["checkpoint", "--image-path", &img, &c.id]);
    out.assert_fail("checkpoint of a stopped container");
    assert!(out.mentions("not running"), "{out}");
    assert!(!images.join("inventory.img").exists(), "nothing dumped");
}

#[test]
fn restore_into_an_existing_id_is_refused() {
    let (c, _pipe) = counter("cr-exists");
    let images = c.dir.join("images");
    c.oci(&[
        "checkpoint",
        "--leave-running",
        "--image-path",
        images.to_str().unwrap(),
        &c.id,
    ])
    .assert_ok("checkpoint --leave-running");
    let pid = c.pid();
    let out = restore(&c, &images, &c.dir.join("r.out"));
    out.assert_fail("restore into a running id");
    assert!(out.mentions("already exists"), "{out}");
    assert_eq!(c.pid(), pid, "the existing container is untouched");
    assert!(!c.root.join(&c.id).join("criu-root").exists(), "no criu-root made");
    assert!(host_mounts_naming(&c.dir).is_empty(), "no mount left");
}

/// A restore that CRIU fails (its images are damaged) leaves no state dir, cgroup or
/// mount: CRIU runs in a private mount namespace.
#[test]
fn failed_restore_leaves_nothing() {
    let (c, _pipe) = counter("cr-fail");
    let images = c.dir.join("images");
    c.oci(&["checkpoint", "--image-path", images.to_str().unwrap(), &c.id])
        .assert_ok("checkpoint");
    // The process tree image, emptied: CRIU cannot read it.
    fs::write(images.join("pstree.img"), b"").unwrap();
    let out = restore(&c, &images, &c.dir.join("r.out"));
    out.assert_fail("restore from damaged images");
    assert!(out.mentions("criu restore failed"), "{out}");
    assert!(out.mentions("restore.log"), "names CRIU's log: {out}");
    c.assert_no_leftovers("after a failed restore");
}

/// `delete` unmounts what is mounted in a state dir before removing it: a `criu-root`
/// bind mount of a rootfs (which a killed restore of runc leaves) is never deleted
/// through.
#[test]
fn delete_never_removes_files_across_a_mount_point() {
    let mut c = TestContainer::new("cr-mnt");
    c.args(&["true"]);
    c.create().assert_ok("create");
    c.start().assert_ok("start");
    c.wait_status("stopped", Duration::from_secs(10));
    let canary = c.dir.join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("keep"), b"data").unwrap();
    let target = c.root.join(&c.id).join("criu-root");
    fs::create_dir(&target).unwrap();
    let st = std::process::Command::new("mount")
        .arg("--bind")
        .arg(&canary)
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success(), "bind mount the canary");
    c.delete().assert_ok("delete");
    assert_eq!(
        fs::read(canary.join("keep")).unwrap(),
        b"data",
        "files behind the mount survive"
    );
    c.assert_no_leftovers("after delete");
}

/// Pre-dump needs memory tracking (soft-dirty bits): where the kernel lacks it, the
/// checkpoint fails with CRIU's word for it instead of a silent full dump.
#[test]
fn pre_dump_without_memory_tracking_fails_clearly() {
    let tracks = std::process::Command::new(vessel_criu())
        .args(["check", "--feature", "mem_dirty_track"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let (c, _pipe) = counter("cr-predump");
    let images = c.dir.join("images");
    let out = c.oci(&[
        "checkpoint",
        "--pre-dump",
        "--image-path",
        images.to_str().unwrap(),
        &c.id,
    ]);
    if tracks {
        out.assert_ok("pre-dump where the kernel tracks memory");
    } else {
        out.assert_fail("pre-dump without memory tracking");
        assert!(out.mentions("mem_dirty_track"), "{out}");
    }
    assert_eq!(c.status(), "running", "a pre-dump leaves the container running");
}

/// The criu the runtime uses (as `vessel_runtime::checkpoint::criu_path` finds it).
fn vessel_criu() -> std::path::PathBuf {
    match std::env::var_os("VESSEL_CRIU").filter(|v| !v.is_empty()) {
        Some(p) => p.into(),
        None if Path::new("/opt/vessel-criu/bin/criu").exists() => "/opt/vessel-criu/bin/criu".into(),
        None => "criu".into(),
    }
}

/// The rootfs bind mount CRIU restores from (`criu-root`) exists only in the private
/// mount namespace the runtime makes for CRIU: seen from the host there is none, and a
/// restore killed (-9) part way leaves none. CRIU is replaced by a script that reports
/// what it sees and waits.
#[test]
fn killed_restore_leaves_no_mount_on_the_host() {
    let (c, _pipe) = counter("cr-kill");
    let images = c.dir.join("images");
    c.oci(&["checkpoint", "--image-path", images.to_str().unwrap(), &c.id])
        .assert_ok("checkpoint");
    let fake = c.dir.join("fake-criu");
    let seen = c.dir.join("seen");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\ngrep criu-root /proc/self/mountinfo > {0}.tmp; echo $$ >> {0}.tmp; mv {0}.tmp {0}; exec sleep 1000\n",
            seen.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = c.cmd();
    cmd.env("VESSEL_CRIU", &fake)
        .args(["restore", "-d", "--image-path"])
        .arg(&images)
        .arg("--bundle")
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ChildGuard(cmd.spawn().unwrap());
    assert!(wait_until(TIMEOUT, || seen.exists()), "the fake criu ran");
    let text = fs::read_to_string(&seen).unwrap();
    let criu_pid: i32 = text.lines().last().and_then(|l| l.trim().parse().ok()).unwrap();
    c.record_pid(criu_pid);
    assert!(text.contains("criu-root"), "criu sees the rootfs at criu-root: {text}");
    assert!(host_mounts_naming(&c.dir).is_empty(), "the host does not see it");
    // SAFETY: kill(2) of the runtime this test started and of the fake criu it ran.
    unsafe {
        libc::kill(child.pid(), libc::SIGKILL);
        libc::kill(criu_pid, libc::SIGKILL);
    }
    let _ = child.0.wait();
    assert!(wait_until(TIMEOUT, || !pid_alive(criu_pid)), "fake criu gone");
    assert!(host_mounts_naming(&c.dir).is_empty(), "nothing mounted after the kill");
    // What the killed restore left (a state dir without state) goes with delete.
    c.oci(&["delete", "--force", &c.id]).assert_ok("delete --force");
    assert!(!c.root.join(&c.id).exists(), "state dir removed");
}

/// `out` of a checkpoint or restore into `dir`, asserted to be a success; on failure
/// CRIU's log there (its last 60 lines) goes to stderr first: in the VM nothing else
/// keeps it.
#[track_caller]
fn criu_ok(out: Out, dir: &Path, what: &str) {
    if !out.ok() {
        show_criu_logs(dir);
    }
    out.assert_ok(what);
}

/// The last 60 lines of CRIU's logs in `dir`, to stderr.
fn show_criu_logs(dir: &Path) {
    for log in ["dump.log", "restore.log", "lazy-pages.log"] {
        if let Ok(text) = fs::read_to_string(dir.join(log)) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- {} (tail) ---", dir.join(log).display());
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
        }
    }
}

/// A counter that also holds 2 MiB in a shell variable and checks its length on every
/// round: a restore that loses or garbles that memory writes the round to /bad.
const MEM_COUNTER: &str = "x=$(head -c 2097152 /dev/zero | tr '\\0' m); i=0; while true; do i=$((i+1)); [ ${#x} -eq 2097152 ] || echo $i >> /bad; echo $i >> /count; echo $i; sleep 0.05; done";

/// A running MEM_COUNTER container (stdio a pipe, as in `counter`).
fn mem_counter(test: &str) -> (TestContainer, std::io::PipeReader) {
    let mut c = TestContainer::new(test);
    c.readonly(false).sh(MEM_COUNTER);
    c.write_spec();
    let (reader, writer) = std::io::pipe().unwrap();
    let mut cmd = c.cmd();
    cmd.args(["create", "--bundle"])
        .arg(&c.bundle)
        .arg(&c.id)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    run_with_stdout(&mut cmd, false).assert_ok("create");
    c.record_pid(c.pid());
    c.start().assert_ok("start");
    c.wait_status("running", Duration::from_secs(10));
    assert!(wait_until(TIMEOUT, || count(&c) >= 3), "the counter counts");
    (c, reader)
}

/// Why `criu check --feature FEATURE` fails here, or None when it passes.
fn criu_lacks(feature: &str) -> Option<String> {
    let out = std::process::Command::new(vessel_criu())
        .args(["check", "--feature", feature])
        .output()
        .expect("run criu check");
    if out.status.success() {
        return None;
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(format!(
        "criu check --feature {feature} fails: {}",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// Why a lazy-pages dump cannot grow its pipes here (no CAP_SYS_RESOURCE and
/// fs.pipe-max-size under 4 MiB), or None.
fn lazy_pipes_refused() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let max: u64 = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if cap_eff & (1 << 24) != 0 || max >= 4 << 20 {
        return None;
    }
    Some(format!(
        "no CAP_SYS_RESOURCE (CapEff {cap_eff:x}) and fs.pipe-max-size {max} < 4 MiB: criu's lazy-pages tee pipe cannot grow"
    ))
}

/// A loopback TCP port free at the time of asking.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Total bytes of CRIU's page images (`pages-*.img`) in `dir`.
fn page_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("pages-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// After a restore: the count goes on from `stopped_at`, the restored stdout starts
/// right after it, and the memory the counter checks is whole.
#[track_caller]
fn assert_continues(c: &TestContainer, id: &str, stopped_at: u64, out: &Path) {
    let status = c.state_of(id).and_then(|s| s["status"].as_str().map(str::to_string));
    assert_eq!(status.as_deref(), Some("running"), "restored container {id} runs");
    assert!(
        wait_until(TIMEOUT, || count(c) >= stopped_at + 5),
        "the count continues after restore"
    );
    let first: u64 = fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(first, stopped_at + 1, "restored stdout starts after {stopped_at}");
    assert!(
        !c.rootfs.join("bad").exists(),
        "the counter's 2 MiB were garbled after restore (rounds in /bad)"
    );
}

/// runc's pre-copy: `checkpoint --pre-dump --image-path D1` (memory only, tracking
/// changes; the container runs on), then `checkpoint --parent-path ../D1 --image-path
/// D2` dumps only the pages dirtied since, and `restore --image-path D2` brings the
/// whole memory back. Where the kernel lacks soft-dirty bits both commands fail with
/// CRIU's `mem_dirty_track` and the container runs on.
#[test]
fn pre_dump_then_dump_with_parent_restores() {
    let (c, _pipe) = mem_counter("cr-parent");
    let d1 = c.dir.join("images/d1");
    let d2 = c.dir.join("images/d2");
    let pre = c.oci(&["checkpoint", "--pre-dump", "--image-path", d1.to_str().unwrap(), &c.id]);
    if let Some(why) = criu_lacks("mem_dirty_track") {
        pre.assert_fail("pre-dump without memory tracking");
        assert!(pre.mentions("mem_dirty_track"), "{pre}");
        let out = c.oci(&[
            "checkpoint",
            "--parent-path",
            "../d1",
            "--image-path",
            d2.to_str().unwrap(),
            &c.id,
        ]);
        out.assert_fail("dump with a parent without memory tracking");
        assert!(out.mentions("mem_dirty_track"), "{out}");
        assert_eq!(c.status(), "running", "the container runs on");
        let n = count(&c);
        assert!(wait_until(TIMEOUT, || count(&c) > n + 2), "still counting");
        eprintln!("skipped: pre-copy restore: {why}");
        return;
    }
    criu_ok(pre, &d1, "pre-dump");
    assert_eq!(c.status(), "running", "a pre-dump leaves the container running");
    let n = count(&c);
    assert!(
        wait_until(TIMEOUT, || count(&c) > n + 2),
        "still counting after pre-dump"
    );
    let out = c.oci(&[
        "checkpoint",
        "--parent-path",
        "../d1",
        "--image-path",
        d2.to_str().unwrap(),
        &c.id,
    ]);
    criu_ok(out, &d2, "dump with --parent-path");
    assert!(c.state_of(&c.id).is_none(), "container removed by checkpoint");
    let (full, dirty) = (page_bytes(&d1), page_bytes(&d2));
    eprintln!("pre-dump pages {full} bytes, dump with parent {dirty} bytes");
    assert!(full >= 2 << 20, "the pre-dump holds the 2 MiB ({full} bytes)");
    assert!(
        dirty < full / 2,
        "the dump holds only dirty pages: {dirty} of {full} bytes"
    );
    let stopped_at = count(&c);
    let out = c.dir.join("restored.out");
    criu_ok(restore(&c, &d2, &out), &d2, "restore from the dump with parent");
    assert_continues(&c, &c.id, stopped_at, &out);
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
    c.assert_no_leftovers("after pre-copy restore and delete");
}

/// `checkpoint --page-server 127.0.0.1:PORT` sends the pages to a `criu page-server`
/// (the image dir keeps the rest); with the page server's files beside the others the
/// container restores whole.
#[test]
fn page_server_receives_the_pages() {
    let (c, _pipe) = mem_counter("cr-ps");
    let images = c.dir.join("images");
    let pages = c.dir.join("pages");
    fs::create_dir_all(&pages).unwrap();
    let port = free_port();
    let pidfile = c.dir.join("ps.pid");
    let st = std::process::Command::new(vessel_criu())
        .args(["page-server", "--daemon", "--address", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--images-dir")
        .arg(&pages)
        .arg("--pidfile")
        .arg(&pidfile)
        .args(["-o", "ps.log", "-v4"])
        .status()
        .unwrap();
    assert!(st.success(), "criu page-server --daemon");
    let ps_pid: i32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    c.record_pid(ps_pid);
    let out = c.oci(&[
        "checkpoint",
        "--page-server",
        &format!("127.0.0.1:{port}"),
        "--image-path",
        images.to_str().unwrap(),
        &c.id,
    ]);
    criu_ok(out, &images, "checkpoint --page-server");
    assert_eq!(page_bytes(&images), 0, "no page image in the image dir");
    assert!(page_bytes(&pages) >= 2 << 20, "the page server got the 2 MiB");
    assert!(wait_until(TIMEOUT, || !pid_alive(ps_pid)), "page server done");
    for e in fs::read_dir(&pages).unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".img") {
            fs::rename(e.path(), images.join(&name)).unwrap();
        }
    }
    let stopped_at = count(&c);
    let out = c.dir.join("restored.out");
    criu_ok(restore(&c, &images, &out), &images, "restore");
    assert_continues(&c, &c.id, stopped_at, &out);
    c.kill("KILL").assert_ok("kill");
    c.wait_status("stopped", Duration::from_secs(10));
    c.delete().assert_ok("delete");
    c.assert_no_leftovers("after a page-server checkpoint");
}

/// runc's post-copy: `checkpoint --lazy-pages --page-server ADDR:PORT --status-fd FD`
/// serves the pages from the dump (a byte on FD when ready), `criu lazy-pages` on the
/// restoring side pulls them, and `restore --lazy-pages` runs the container before its
/// memory has arrived. Without a page server the flag is refused; where the kernel or
/// this host cannot (no userfaultfd, or pipes CRIU cannot grow) the checkpoint fails
/// with that reason before it freezes anything.
#[test]
fn lazy_pages_restore() {
    let (c, _pipe) = mem_counter("cr-lazy");
    let images = c.dir.join("images");
    let img = images.to_str().unwrap().to_string();
    let out = c.oci(&["checkpoint", "--lazy-pages", "--image-path", &img, &c.id]);
    out.assert_fail("--lazy-pages without --page-server");
    assert!(out.mentions("--page-server"), "{out}");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let why = criu_lacks("uffd-noncoop").or_else(lazy_pipes_refused);
    if let Some(why) = why {
        let out = c.oci(&[
            "checkpoint",
            "--lazy-pages",
            "--page-server",
            &addr,
            "--image-path",
            &img,
            &c.id,
        ]);
        out.assert_fail("--lazy-pages where it cannot work");
        assert!(
            out.mentions("uffd-noncoop") || (out.mentions("pipe-max-size") && out.mentions("CAP_SYS_RESOURCE")),
            "names the reason: {out}"
        );
        assert_eq!(c.status(), "running", "the container runs on");
        let n = count(&c);
        assert!(wait_until(TIMEOUT, || count(&c) > n + 2), "still counting");
        eprintln!("skipped: lazy-pages restore: {why}");
        return;
    }
    let (ready_r, ready_w) = std::io::pipe().unwrap();
    let mut cmd = c.cmd();
    cmd.args([
        "checkpoint",
        "--lazy-pages",
        "--page-server",
        &addr,
        "--status-fd",
        "3",
        "--image-path",
        &img,
        &c.id,
    ])
    .stdout(Stdio::null());
    with_inherited_fds(&mut cmd, vec![(fs::File::from(std::os::fd::OwnedFd::from(ready_w)), 3)]);
    let mut dump = ChildGuard(cmd.spawn().unwrap());
    // The Command holds the pipe's writing end: gone, a dump that fails ends the read.
    drop(cmd);
    let mut byte = [0u8; 1];
    use std::io::Read;
    let n = (&ready_r).read(&mut byte).unwrap();
    if n != 1 {
        show_criu_logs(&images);
    }
    assert_eq!(n, 1, "the dump says on --status-fd that it serves the pages");
    let stopped_at = count(&c);
    // The restoring side, as on another host: its own id and cgroup (the source stays
    // frozen in its own until the dump ends), the same rootfs.
    let id2 = format!("{}-r", c.id);
    let cg2 = format!("/vessel-test-{id2}");
    c.record_id(&id2);
    c.record_cgroup(&cg2);
    let bundle2 = c.dir.join("bundle2");
    fs::create_dir_all(&bundle2).unwrap();
    let mut spec2 = c.spec.clone();
    spec2["root"]["path"] = serde_json::json!(c.rootfs.to_str().unwrap());
    spec2["linux"]["cgroupsPath"] = serde_json::json!(cg2);
    write_json(&bundle2.join("config.json"), &spec2);
    let daemon = ChildGuard(
        std::process::Command::new(vessel_criu())
            .args(["lazy-pages", "--page-server", "--address", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .arg("--images-dir")
            .arg(&images)
            .arg("--work-dir")
            .arg(&images)
            .args(["-o", "lazy-pages.log", "-v4"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_until(TIMEOUT, || images.join("lazy-pages.socket").exists()),
        "criu lazy-pages listens"
    );
    let mut cmd = c.cmd();
    let out = c.dir.join("restored.out");
    cmd.args(["restore", "-d", "--lazy-pages", "--image-path"])
        .arg(&images)
        .arg("--bundle")
        .arg(&bundle2)
        .arg(&id2)
        .stdout(fs::File::create(&out).unwrap());
    let res = run_with_stdout(&mut cmd, true);
    if let Some(pid) = c.state_of(&id2).and_then(|s| s["pid"].as_i64()) {
        c.record_pid(pid as i32);
    }
    criu_ok(res, &images, "restore --lazy-pages");
    assert_continues(&c, &id2, stopped_at, &out);
    let st = wait_timeout(&mut dump.0, TIMEOUT).expect("the lazy dump ends once every page is pulled");
    assert!(st.success(), "checkpoint --lazy-pages exits 0 ({st})");
    assert!(
        c.state_of(&c.id).is_none(),
        "the source container removed by checkpoint"
    );
    let mut daemon = daemon;
    let st = wait_timeout(&mut daemon.0, TIMEOUT).expect("criu lazy-pages ends");
    assert!(st.success(), "criu lazy-pages exits 0 ({st})");
    assert_continues(&c, &id2, stopped_at, &out);
    c.oci(&["kill", &id2, "KILL"]).assert_ok("kill");
    assert!(
        wait_until(TIMEOUT, || c.state_of(&id2).is_some_and(|s| s["status"] == "stopped")),
        "stopped"
    );
    c.oci(&["delete", &id2]).assert_ok("delete");
    assert!(cgroup_dirs(&cg2).is_empty(), "restored cgroup removed");
    c.assert_no_leftovers("after a lazy-pages restore");
}
