//! Tests that mount: each runs in a forked child inside a private mount namespace, so
//! every mount vanishes with the child; the parent owns the temp dirs and removes them.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};

use super::devices::{self, Device};
use super::mounts::{self, Env};
use super::paths::Root;
use super::{finalize_root, prepare, restrict_paths};

type Check = std::result::Result<(), String>;

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn ensure(cond: bool, what: &str) -> Check {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn e<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |err| format!("{what}: {err}")
}

/// Runs `f` in a forked child, in a new private mount namespace; returns what it reported.
fn in_child(f: impl FnOnce() -> Check) -> Check {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return Ok(());
    }
    let (r, w) = rustix::pipe::pipe().map_err(e("pipe"))?;
    // SAFETY: the child only runs `f` (allocation goes through glibc's fork-safe malloc;
    // no lock another test thread may hold is taken) and leaves through _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(r);
        let run = std::panic::AssertUnwindSafe(|| -> Check {
            // SAFETY: plain syscall in the single-threaded child.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                return Err(format!("unshare: {}", std::io::Error::last_os_error()));
            }
            mounts::sys_mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
                .map_err(e("rprivate /"))?;
            f()
        });
        let code = match std::panic::catch_unwind(run) {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                let _ = rustix::io::write(&w, msg.as_bytes());
                1
            }
            Err(_) => 101,
        };
        // SAFETY: ends the child at once, without the parent's exit handlers.
        unsafe { libc::_exit(code) }
    }
    drop(w);
    let mut msg = String::new();
    let _ = fs::File::from(r).read_to_string(&mut msg);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!("child failed (status {status:#x}): {msg}"))
    }
}

fn mount_of(json: &str) -> Mount {
    serde_json::from_str(json).expect("mount json")
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("vessel-{tag}-{}-{nanos}", std::process::id())
}

#[test]
fn mount_through_symlink_stays_in_rootfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::os::unix::fs::symlink("/", rootfs.join("etc/evil")).expect("symlink");
    let hostfile = tmp.path().join("hostfile");
    fs::write(&hostfile, "hello").expect("write");
    let u = unique("evil");

    let r = in_child(|| {
        let root = Root::open(&rootfs).map_err(e("open root"))?;
        let tmpfs = mount_of(&format!(
            r#"{{"destination":"/etc/evil/tmp/{u}/x","type":"tmpfs","source":"tmpfs","options":["size=1m","nosuid"]}}"#
        ));
        mounts::mount_entry(&root, Env::default(), &tmpfs).map_err(e("tmpfs mount"))?;
        let file = mount_of(&format!(
            r#"{{"destination":"/../etc/evil/tmp/{u}-file","type":"bind","source":"{}","options":["bind","ro"]}}"#,
            hostfile.display()
        ));
        mounts::mount_entry(&root, Env::default(), &file).map_err(e("bind mount"))?;

        let st = rustix::fs::statfs(rootfs.join("tmp").join(&u).join("x")).map_err(e("statfs"))?;
        ensure(
            st.f_type as i64 == TMPFS_MAGIC,
            "the tmpfs is mounted inside the rootfs",
        )?;
        ensure(
            !Path::new("/tmp").join(&u).exists(),
            "nothing was created in the host's /tmp",
        )?;
        let inside = rootfs.join("tmp").join(format!("{u}-file"));
        ensure(
            fs::read_to_string(&inside).map_err(e("read bind"))? == "hello",
            "the file bind shows the source",
        )?;
        let w = fs::OpenOptions::new().write(true).open(&inside);
        ensure(
            w.err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS),
            "the bind is read-only",
        )?;
        ensure(
            !Path::new("/tmp").join(format!("{u}-file")).exists(),
            "no file in the host's /tmp",
        )
    });
    assert!(!Path::new("/tmp").join(&u).exists());
    r.expect("child");
}

fn busybox_bundle() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
    fs::create_dir_all(tmp.path().join("data")).expect("mkdir");
    fs::write(tmp.path().join("data/hello.txt"), "hi").expect("write");
    (tmp, rootfs)
}

const SPEC: &str = r#"{
  "ociVersion": "1.2.0",
  "root": {"path": "rootfs", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    {"destination": "/bin/busybox", "type": "bind", "source": "/bin/busybox", "options": ["rbind", "ro"]},
    {"destination": "/data", "type": "bind", "source": "data", "options": ["bind", "ro", "nosuid", "rprivate"]}
  ],
  "linux": {
    "namespaces": [{"type": "mount"}],
    "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 0, "gid": 0}],
    "maskedPaths": ["/proc/kcore", "/proc/timer_list", "/proc/does-not-exist", "/sys/firmware"],
    "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
  }
}"#;

fn char_dev(p: &str, major: u32, minor: u32) -> Check {
    let m = fs::metadata(p).map_err(|err| format!("{p}: {err}"))?;
    ensure(m.file_type().is_char_device(), &format!("{p} is a char device"))?;
    ensure(
        m.rdev() == rustix::fs::makedev(major, minor),
        &format!("{p} is {major}:{minor}"),
    )
}

fn erofs(r: std::io::Result<impl Sized>) -> bool {
    r.err().and_then(|e| e.raw_os_error()) == Some(libc::EROFS)
}

#[test]
fn prepare_pivots_into_busybox() {
    let (tmp, rootfs) = busybox_bundle();
    let spec: Spec = serde_json::from_str(SPEC).expect("spec");
    let host_v1_memory = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
    let r = in_child(|| {
        std::env::set_current_dir(tmp.path()).map_err(e("chdir bundle"))?;
        prepare(&spec, &rootfs, false).map_err(e("prepare"))?;

        ensure(Path::new("/bin/busybox").is_file(), "/bin/busybox exists")?;
        ensure(!tmp.path().exists(), "the old root is gone")?;
        ensure(std::env::current_dir().map_err(e("cwd"))? == Path::new("/"), "cwd is /")?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(e("mountinfo"))?;
        let points: Vec<&str> = mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        let expected = ["/", "/proc", "/dev", "/sys", "/bin/busybox", "/data"];
        let stray = points
            .iter()
            .find(|p| !expected.iter().any(|x| p == &x || p.starts_with(&format!("{x}/"))));
        ensure(
            stray.is_none(),
            &format!("only the container's mounts are left, not {stray:?}"),
        )?;
        ensure(points.iter().filter(|p| **p == "/").count() == 1, "one mount at /")?;
        let out = std::process::Command::new("/bin/busybox")
            .args(["ls", "/dev"])
            .output()
            .map_err(e("busybox"))?;
        ensure(out.status.success(), "busybox runs in the new root")?;

        for (name, minor) in [("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)] {
            char_dev(&format!("/dev/{name}"), 1, minor)?;
        }
        char_dev("/dev/tty", 5, 0)?;
        char_dev("/dev/fuse", 10, 229)?;
        let mode = fs::metadata("/dev/null").map_err(e("stat"))?.permissions().mode() & 0o777;
        ensure(mode == 0o666, "/dev/null is 0666")?;
        ensure(
            fs::read_link("/dev/fd").map_err(e("readlink"))? == Path::new("/proc/self/fd"),
            "/dev/fd",
        )?;
        ensure(
            fs::read_link("/dev/stderr").map_err(e("readlink"))? == Path::new("/proc/self/fd/2"),
            "/dev/stderr",
        )?;
        ensure(
            fs::read_link("/dev/ptmx").map_err(e("readlink"))? == Path::new("pts/ptmx"),
            "/dev/ptmx",
        )?;
        ensure(
            Path::new("/dev/pts/ptmx").exists() && Path::new("/dev/mqueue").is_dir(),
            "devpts and mqueue",
        )?;
        ensure(Path::new("/sys/kernel").is_dir(), "sysfs is mounted")?;
        ensure(erofs(fs::write("/sys/kernel/vessel-test", "x")), "sysfs is read-only")?;
        if host_v1_memory {
            ensure(
                Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists(),
                "v1 memory hierarchy",
            )?;
            ensure(
                erofs(fs::create_dir("/sys/fs/cgroup/x")),
                "the cgroup tmpfs is read-only",
            )?;
        }
        ensure(
            fs::read_to_string("/data/hello.txt").map_err(e("read /data"))? == "hi",
            "relative bind source",
        )?;
        ensure(erofs(fs::write("/data/new", "x")), "/data is read-only")?;

        fs::write("/before-readonly", "x").map_err(e("write / before finalize_root"))?;
        finalize_root(&spec).map_err(e("finalize_root"))?;
        ensure(erofs(fs::write("/after-readonly", "x")), "/ is read-only")?;
        ensure(fs::write("/dev/shm/ok", "x").is_ok(), "/dev/shm stays writable")?;

        restrict_paths(&spec).map_err(e("restrict_paths"))?;
        char_dev("/proc/timer_list", 1, 3)?;
        ensure(
            Path::new("/proc/kcore").exists() == Path::new("/dev/core").exists(),
            "/dev/core only with /proc/kcore",
        )?;
        let firmware = fs::read_dir("/sys/firmware").map_err(e("read /sys/firmware"))?.count();
        ensure(firmware == 0, "/sys/firmware is masked")?;
        let w = fs::OpenOptions::new().write(true).open("/proc/sys/kernel/domainname");
        ensure(erofs(w), "/proc/sys is read-only")
    });
    r.expect("child");
    assert!(
        tmp.path().join("rootfs/bin/busybox").is_file(),
        "the bind target stays an empty file"
    );
}

#[test]
fn prepare_no_pivot_moves_root() {
    let (tmp, rootfs) = busybox_bundle();
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"},
            "mounts": [
              {"destination": "/proc", "type": "proc", "source": "proc"},
              {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
              {"destination": "/bin/busybox", "type": "bind", "source": "/bin/busybox", "options": ["bind"]}
            ],
            "linux": {"rootfsPropagation": "private", "namespaces": [{"type": "mount"}]}}"#,
    )
    .expect("spec");
    let r = in_child(|| {
        std::env::set_current_dir(tmp.path()).map_err(e("chdir bundle"))?;
        prepare(&spec, &rootfs, true).map_err(e("prepare"))?;
        ensure(Path::new("/bin/busybox").is_file(), "/bin/busybox exists")?;
        ensure(!tmp.path().exists(), "the host is out of sight")?;
        char_dev("/dev/null", 1, 3)?;
        ensure(fs::read_link("/dev/ptmx").is_err(), "no ptmx link without /dev/pts")?;
        // Nothing changes with root.readonly unset.
        finalize_root(&spec).map_err(e("finalize_root"))?;
        let mut f = fs::File::create("/dev/w").map_err(e("create"))?;
        f.write_all(b"x").map_err(e("write"))
    });
    r.expect("child");
}

#[test]
fn device_bind_for_user_namespaces() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let r = in_child(|| {
        let root = Root::open(tmp.path()).map_err(e("open root"))?;
        let null = Device {
            path: PathBuf::from("/dev/null"),
            kind: rustix::fs::FileType::CharacterDevice,
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        devices::create(&root, &null, true).map_err(e("create by bind"))?;
        char_dev(&tmp.path().join("dev/null").to_string_lossy(), 1, 3)?;
        // A second time keeps what is there.
        devices::create(&root, &null, false).map_err(e("create again"))
    });
    r.expect("child");
}

#[test]
fn bad_device_and_propagation_values_are_refused() {
    let d: oci_spec::runtime::LinuxDevice =
        serde_json::from_str(r#"{"path": "/dev/x", "type": "c", "major": -1, "minor": 1}"#).expect("device");
    assert!(matches!(devices::from_spec(&d), Err(crate::Error::Invalid(_))));
    let d: oci_spec::runtime::LinuxDevice =
        serde_json::from_str(r#"{"path": "dev/x", "type": "b", "major": 8, "minor": 1}"#).expect("device");
    assert!(devices::from_spec(&d).is_err());
    let spec: Spec =
        serde_json::from_str(r#"{"ociVersion": "1.2.0", "linux": {"rootfsPropagation": "sideways"}}"#).expect("spec");
    assert!(matches!(
        super::rootfs_propagation(&spec),
        Err(crate::Error::Invalid(_))
    ));
    let all = devices::wanted(&[]).expect("defaults");
    assert_eq!(all.len(), 6);
}

/// Enters a new user namespace (root mapped to root, one id) with new mount and ipc
/// namespaces, the state the init is in when config.json asks for a user namespace.
fn enter_userns() -> Check {
    // SAFETY: plain syscall in the single-threaded child.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC) } != 0 {
        return Err(format!("unshare user: {}", std::io::Error::last_os_error()));
    }
    fs::write("/proc/self/setgroups", "deny").map_err(e("setgroups"))?;
    fs::write("/proc/self/uid_map", "0 0 1").map_err(e("uid_map"))?;
    fs::write("/proc/self/gid_map", "0 0 1").map_err(e("gid_map"))
}

#[test]
fn prepare_in_user_namespace_binds_devices_and_sysfs() {
    let (tmp, rootfs) = busybox_bundle();
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs", "readonly": true},
            "mounts": [
              {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
              {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
              {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
              {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
              {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
              {"destination": "/bin/busybox", "type": "bind", "source": "/bin/busybox", "options": ["rbind", "ro", "nosuid"]}
            ],
            "linux": {"namespaces": [{"type": "user"}, {"type": "mount"}, {"type": "ipc"}],
                      "maskedPaths": ["/sys/firmware"], "readonlyPaths": ["/sys/kernel"]}}"#,
    )
    .expect("spec");
    let r = in_child(|| {
        enter_userns()?;
        std::env::set_current_dir(tmp.path()).map_err(e("chdir bundle"))?;
        prepare(&spec, &rootfs, false).map_err(e("prepare"))?;
        char_dev("/dev/null", 1, 3)?;
        char_dev("/dev/urandom", 1, 9)?;
        ensure(Path::new("/sys/kernel").is_dir(), "the host's /sys is bound")?;
        ensure(erofs(fs::write("/sys/kernel/vessel-test", "x")), "/sys is read-only")?;
        ensure(
            Path::new("/dev/pts/ptmx").exists() && Path::new("/dev/mqueue").is_dir(),
            "devpts and mqueue",
        )?;
        let out = std::process::Command::new("/bin/busybox")
            .arg("true")
            .status()
            .map_err(e("busybox"))?;
        ensure(out.success(), "busybox runs")?;
        finalize_root(&spec).map_err(e("finalize_root"))?;
        ensure(erofs(fs::write("/x", "x")), "/ is read-only")?;
        restrict_paths(&spec).map_err(e("restrict_paths"))?;
        ensure(
            fs::read_dir("/sys/firmware").map_err(e("read /sys/firmware"))?.count() == 0,
            "/sys/firmware masked",
        )
    });
    r.expect("child");
}

#[test]
fn tmpcopyup_fills_the_tmpfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let etc = tmp.path().join("etc");
    fs::create_dir_all(etc.join("sub")).expect("mkdir");
    fs::write(etc.join("sub/file"), "content").expect("write");
    fs::set_permissions(etc.join("sub/file"), fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::symlink("sub/file", etc.join("link")).expect("symlink");
    let r = in_child(|| {
        let root = Root::open(tmp.path()).map_err(e("open root"))?;
        let m = mount_of(
            r#"{"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup", "ro", "size=1m"]}"#,
        );
        mounts::mount_entry(&root, Env::default(), &m).map_err(e("mount"))?;
        let st = rustix::fs::statfs(&etc).map_err(e("statfs"))?;
        ensure(st.f_type as i64 == TMPFS_MAGIC, "a tmpfs is on /etc")?;
        ensure(
            fs::read_to_string(etc.join("link")).map_err(e("read"))? == "content",
            "the tree was copied",
        )?;
        let mode = fs::metadata(etc.join("sub/file"))
            .map_err(e("stat"))?
            .permissions()
            .mode()
            & 0o777;
        ensure(mode == 0o640, "modes are kept")?;
        ensure(
            erofs(fs::write(etc.join("new"), "x")),
            "the tmpfs is read-only after the copy",
        )
    });
    r.expect("child");
}

#[test]
fn cgroup_v1_mount_shows_own_cgroups() {
    if !Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists() {
        eprintln!("skipped: no cgroup v1 memory hierarchy on this host");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = mount_of(
        r#"{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "ro"]}"#,
    );
    let r = in_child(|| {
        let root = Root::open(tmp.path()).map_err(e("open root"))?;
        mounts::mount_entry(&root, Env::default(), &m).map_err(e("mount by bind"))?;
        let procs =
            fs::read_to_string(tmp.path().join("sys/fs/cgroup/memory/cgroup.procs")).map_err(e("read procs"))?;
        let me = std::process::id().to_string();
        ensure(
            procs.lines().any(|l| l == me),
            "the memory dir is this process's own cgroup",
        )?;
        ensure(
            erofs(fs::create_dir(tmp.path().join("sys/fs/cgroup/memory/x"))),
            "hierarchies are read-only",
        )?;
        ensure(
            erofs(fs::create_dir(tmp.path().join("sys/fs/cgroup/x"))),
            "the tmpfs is read-only",
        )?;

        // SAFETY: plain syscall in the single-threaded child.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
            return Err(format!("unshare cgroup: {}", std::io::Error::last_os_error()));
        }
        let m = mount_of(r#"{"destination": "/cg", "type": "cgroup", "source": "cgroup", "options": ["nosuid"]}"#);
        mounts::mount_entry(
            &root,
            Env {
                cgroupns: true,
                ..Env::default()
            },
            &m,
        )
        .map_err(e("mount in a cgroupns"))?;
        let procs = fs::read_to_string(tmp.path().join("cg/memory/cgroup.procs")).map_err(e("read procs"))?;
        ensure(
            procs.lines().any(|l| l == me),
            "the namespace root is this process's cgroup",
        )?;
        let unified = Path::new("/sys/fs/cgroup/unified").exists();
        ensure(
            !unified || tmp.path().join("cg/unified/cgroup.procs").exists(),
            "hybrid: the unified hierarchy too",
        )
    });
    r.expect("child");
}

#[test]
fn prepare_with_shared_root_propagation() {
    let (tmp, rootfs) = busybox_bundle();
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"rootfsPropagation": "rshared", "namespaces": [{"type": "mount"}]}}"#,
    )
    .expect("spec");
    let r = in_child(|| {
        std::env::set_current_dir(tmp.path()).map_err(e("chdir bundle"))?;
        prepare(&spec, &rootfs, false).map_err(e("prepare"))?;
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(e("mountinfo"))?;
        let root_line = mountinfo
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .ok_or("no / in mountinfo")?;
        ensure(root_line.contains(" shared:"), "the new / is shared")?;
        ensure(!tmp.path().exists(), "the old root is gone")
    });
    r.expect("child");
}
