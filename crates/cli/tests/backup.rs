//! `vessel backup create|restore`, `vessel export` and `vessel import` end to end: real
//! containers (an image made by umoci, imported or served by docker-registry on
//! 127.0.0.1, and the built-in `host` image), restored into fresh roots and started;
//! archives truncated, tampered with, killed part way and written to a full disk.

mod instance;
mod run_vessel;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use instance::{have, stderr, stdout, wait_for, Instance};
use run_vessel::sh;

/// docker-registry on a free loopback port, serving from the test's temp dir; killed on drop.
struct Registry {
    child: Option<std::process::Child>,
    port: u16,
}

impl Registry {
    fn start(dir: &Path) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = dir.join("reg.yml");
        fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the registry", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Registry {
            child: Some(child),
            port,
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn id_of(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
}

fn upper(i: &Instance, id: &str) -> PathBuf {
    i.root().join("snapshots/active").join(id).join("upper")
}

/// Nothing of a failed restore is left: no record, bundle, active snapshot or temp dir.
fn assert_nothing_restored(i: &Instance) {
    assert_eq!(stdout(&i.v(&["ps", "-aq"])), "");
    assert_eq!(i.left("containers"), 0, "bundles left");
    assert_eq!(i.left("snapshots/active"), 0, "active snapshots left");
    assert_eq!(i.left("backups-tmp"), 0, "restore temp dirs left");
}

/// The container `src` of `i`: ran once from `img` and wrote, as uid 0 inside, a file
/// owned by 1234:5678, a hardlink to it, a 64 MiB sparse file with one byte at 32 MiB,
/// and removed a file of the image (a whiteout); the test then added an opaque directory
/// to its upper dir.
fn make_source(i: &Instance, img: &str) -> String {
    let script = "cat /data/hello 2>/dev/null || { mkdir /data && echo hello-backup > /data/hello \
                  && busybox chown 1234:5678 /data/hello && busybox ln /data/hello /data/hl \
                  && busybox truncate -s 64M /data/sparse \
                  && echo x | busybox dd of=/data/sparse bs=1 seek=33554432 conv=notrunc 2>/dev/null \
                  && rm /bin/noexec; }; echo FOO=$FOO; pwd";
    let o = i.ok(&[
        "run", "--name", "src", "-e", "FOO=bar", "-w", "/srv", img, "sh", "-c", script,
    ]);
    assert_eq!(o, "FOO=bar\n/srv\n");
    let id = id_of(i, "src");
    let up = upper(i, &id);
    fs::create_dir(up.join("op")).unwrap();
    fs::write(up.join("op/inside"), "in opaque\n").unwrap();
    rustix::fs::setxattr(
        up.join("op"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    id
}

/// The host uid and gid that uid/gid 0 of container `id` of `i` is (its own user
/// namespace's range, the default; 0 with the host's ids).
fn range_root(i: &Instance, id: &str) -> (u32, u32) {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["inspect", id])).unwrap();
    let r = &v[0]["HostConfig"]["IdRange"];
    let n = |k: &str| r[k].as_u64().unwrap_or(0) as u32;
    (n("UidStart"), n("GidStart"))
}

/// The restored upper `up` of container `id` has what [`make_source`] made, owned by the
/// ids that 1234:5678 inside are on the host (the restored container's own range).
fn check_upper(i: &Instance, id: &str) {
    let up = upper(i, id);
    let (u, g) = range_root(i, id);
    let hello = fs::metadata(up.join("data/hello")).unwrap();
    assert_eq!((hello.uid(), hello.gid(), hello.nlink()), (u + 1234, g + 5678, 2));
    assert_eq!(
        hello.ino(),
        fs::metadata(up.join("data/hl")).unwrap().ino(),
        "hardlink kept"
    );
    let sparse = fs::metadata(up.join("data/sparse")).unwrap();
    assert_eq!(sparse.len(), 64 << 20);
    assert!(
        sparse.blocks() * 512 < 1 << 20,
        "sparse file made dense: {} blocks",
        sparse.blocks()
    );
    let wh = fs::symlink_metadata(up.join("bin/noexec")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout kept");
    let mut v = [0u8; 8];
    let n = rustix::fs::getxattr(up.join("op"), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y", "opaque dir kept");
}

#[test]
fn backup_restore_into_a_fresh_root_keeps_files_snapshots_and_config() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let id = make_source(&i, img);
    // A snapshot laid out as the snapshot contract says, and an unfinished one.
    let snaps = i.root().join("containers").join(&id).join("snapshots");
    fs::create_dir_all(snaps.join("s1/rootfs/etc")).unwrap();
    fs::write(snaps.join("s1/rootfs/etc/motd"), "snapshot one\n").unwrap();
    fs::write(
        snaps.join("s1/snapshot.json"),
        r#"{"name":"s1","created":"2026-12-03T12:00:00Z","expires":null,"size":13,"stateful":false}"#,
    )
    .unwrap();
    fs::create_dir_all(snaps.join(".tmp-s2-x/rootfs")).unwrap();
    let file = i.dir.path().join("src.backup");
    let f = file.to_str().unwrap();
    i.ok(&["backup", "create", "--include-snapshots", "--include-image", "src", f]);
    // Into a fresh root that has no image at all.
    let j = Instance::new();
    let new_id = j.ok(&["backup", "restore", f]).trim().to_string();
    let ps = j.ok(&["ps", "-a", "--format", "json"]);
    assert!(ps.contains("\"src\"") && ps.contains("exited"), "{ps}");
    check_upper(&j, &new_id);
    let rs = j.root().join("containers").join(&new_id).join("snapshots");
    assert_eq!(
        fs::read_to_string(rs.join("s1/rootfs/etc/motd")).unwrap(),
        "snapshot one\n"
    );
    assert!(rs.join("s1/snapshot.json").is_file());
    assert!(!rs.join(".tmp-s2-x").exists(), "unfinished snapshot left out");
    // It starts with its files, its environment and working dir.
    let o = j.v(&["start", "-a", "src"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello-backup\nFOO=bar\n/srv\n");
    // The same root again: the name is taken, --name makes a second one.
    let o = j.v(&["backup", "restore", f]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("already in use") && stderr(&o).contains("--name"),
        "{}",
        stderr(&o)
    );
    j.ok(&["backup", "restore", "--name", "copy", f]);
    assert_eq!(j.ok(&["start", "-a", "copy"]), "hello-backup\nFOO=bar\n/srv\n");
    // Through a pipe: `backup create NAME -` | `backup restore -`.
    let k = Instance::new();
    let mut create = i
        .cmd()
        .args(["backup", "create", "--include-image", "src", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = k
        .cmd()
        .args(["backup", "restore", "-"])
        .stdin(create.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(create.wait().unwrap().success());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(k.ok(&["start", "-a", "src"]), "hello-backup\nFOO=bar\n/srv\n");
}

#[test]
fn restore_pulls_the_image_by_digest_or_takes_it_from_the_archive() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let mut reg = Registry::start(i.dir.path());
    i.busybox();
    let name = format!("127.0.0.1:{}/bk/bb:1", reg.port);
    sh(
        &format!("skopeo copy -q --dest-tls-verify=false oci:img:1 docker://{name}"),
        i.dir.path(),
    );
    make_source(&i, &name);
    let plain = i.dir.path().join("plain.backup");
    let full = i.dir.path().join("full.backup");
    i.ok(&["backup", "create", "src", plain.to_str().unwrap()]);
    i.ok(&["backup", "create", "--include-image", "src", full.to_str().unwrap()]);
    // Without the image: pulled by digest from the recorded registry.
    let j = Instance::new();
    let o = j.v(&["backup", "restore", plain.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("@sha256:"), "pulled by digest: {}", stderr(&o));
    assert_eq!(j.ok(&["start", "-a", "src"]), "hello-backup\nFOO=bar\n/srv\n");
    // With the registry gone: the plain backup cannot be restored (and leaves nothing),
    // the one with the image can.
    reg.stop();
    let k = Instance::new();
    let o = k.v(&["backup", "restore", plain.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("--include-image"), "{}", stderr(&o));
    assert_nothing_restored(&k);
    let id = k.ok(&["backup", "restore", full.to_str().unwrap()]).trim().to_string();
    check_upper(&k, &id);
    assert_eq!(k.ok(&["start", "-a", "src"]), "hello-backup\nFOO=bar\n/srv\n");
}

#[test]
fn truncated_or_tampered_backups_are_refused_and_leave_nothing() {
    if !have(&["umoci", "busybox", "zstd"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    make_source(&i, img);
    let file = i.dir.path().join("src.backup");
    i.ok(&["backup", "create", "src", file.to_str().unwrap()]);
    let data = fs::read(&file).unwrap();
    let j = Instance::new();
    // Cut at several places: each is refused.
    for cut in [10, data.len() / 3, data.len() - 10] {
        let t = i.dir.path().join("cut.backup");
        fs::write(&t, &data[..cut]).unwrap();
        let o = j.v(&["backup", "restore", t.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(125), "cut at {cut}");
        assert!(stderr(&o).contains("truncated"), "cut at {cut}: {}", stderr(&o));
        assert_nothing_restored(&j);
    }
    // One byte of a file changed, the archive compressed again (its zstd checksum is
    // then right): the member's digest tells.
    sh(
        "zstd -qd src.backup -o src.tar && python3 -c \"
import sys; d=open('src.tar','rb').read(); i=d.index(b'hello-backup\\n'); open('src.tar','wb').write(d[:i]+b'J'+d[i+1:])\" \
         && zstd -q src.tar -o bad.backup",
        i.dir.path(),
    );
    let o = j.v(&["backup", "restore", i.dir.path().join("bad.backup").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("member layer/upper/data/hello: digest"),
        "{}",
        stderr(&o)
    );
    assert_nothing_restored(&j);
    // A member left out (the archive rewritten without it): missing from the index's view.
    sh(
        "mkdir x && tar -C x -xf src.tar && tar -C x -cf - --format=gnu backup.json layer ctr.log index.json index.json.sha256 2>/dev/null | zstd -q -o reordered.backup",
        i.dir.path(),
    );
    let o = j.v(&[
        "backup",
        "restore",
        i.dir.path().join("reordered.backup").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert_nothing_restored(&j);
}

#[test]
fn host_container_backup_keeps_its_private_etc() {
    let i = Instance::new();
    let script = "cat /etc/vessel-backup-mark /root/mark 2>/dev/null || { echo etc-mark > /etc/vessel-backup-mark; echo root-mark > /root/mark; }";
    i.ok(&["run", "--name", "h", "host", "sh", "-c", script]);
    let file = i.dir.path().join("h.backup");
    i.ok(&["backup", "create", "h", file.to_str().unwrap()]);
    let j = Instance::new();
    let id = j
        .ok(&["backup", "restore", "--name", "h2", file.to_str().unwrap()])
        .trim()
        .to_string();
    assert!(j
        .root()
        .join("containers")
        .join(&id)
        .join("host-etc/upper/vessel-backup-mark")
        .is_file());
    assert_eq!(j.ok(&["start", "-a", "h2"]), "etc-mark\nroot-mark\n");
    // The host's own /etc never had it.
    assert!(!Path::new("/etc/vessel-backup-mark").exists());
}

#[test]
fn export_lists_the_merged_root_and_import_makes_a_runnable_image() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    make_source(&i, img);
    // Stopped: its layers are mounted read-only for the export, and unmounted after.
    let mut exp = i.cmd().args(["export", "src"]).stdout(Stdio::piped()).spawn().unwrap();
    let list = Command::new("tar")
        .arg("-t")
        .stdin(exp.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(exp.wait().unwrap().success());
    let names = stdout(&list);
    for want in [
        "bin/busybox\n",
        "data/hello\n",
        "data/hl\n",
        "op/inside\n",
        "etc/passwd\n",
    ] {
        assert!(names.contains(want), "{want} missing from:\n{names}");
    }
    assert!(
        !names.contains("bin/noexec"),
        "a removed file is not in the merged view"
    );
    assert!(i.mounts_under_root().is_empty(), "{:?}", i.mounts_under_root());
    // Running: its mounted root.
    i.ok(&[
        "run",
        "-d",
        "--name",
        "live",
        img,
        "sh",
        "-c",
        "echo running > /live; sleep 1000",
    ]);
    let c = i.root().join("containers").join(id_of(&i, "live")).join("rootfs/live");
    wait_for("the running container's file", || c.is_file());
    let out = i.dir.path().join("live.tar");
    i.ok(&["export", "-o", out.to_str().unwrap(), "live"]);
    let o = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    assert!(stdout(&o).contains("live\n"), "{}", stdout(&o));
    // Import it (stdin) with changes, and run the image.
    let f = fs::File::open(&out).unwrap();
    let o = i
        .cmd()
        .args([
            "import",
            "--change",
            r#"CMD ["cat", "/live"]"#,
            "--change",
            "ENV=GREETING hi",
            "-m",
            "from live",
            "-",
            "localhost/imported:1",
        ])
        .stdin(f)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().starts_with("sha256:"));
    assert_eq!(i.ok(&["run", "--rm", "localhost/imported:1"]), "running\n");
    assert_eq!(
        i.ok(&["run", "--rm", "localhost/imported:1", "sh", "-c", "echo $GREETING"]),
        "hi\n"
    );
    let inspect = i.ok(&["image", "inspect", "localhost/imported:1"]);
    assert!(inspect.contains("from live"), "{inspect}");
    // A URL is refused with a hint.
    let o = i.v(&["import", "http://127.0.0.1:1/x.tar", "localhost/x:1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("download"));
}

/// The names in `dir` that start with `prefix`.
fn files_named(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn killed_backup_and_restore_leave_nothing_half_done() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // 256 MiB that does not compress: the backup takes long enough to be caught writing.
    i.ok(&[
        "run",
        "--name",
        "big",
        img,
        "sh",
        "-c",
        "busybox dd if=/dev/urandom of=/big bs=1M count=256 2>/dev/null",
    ]);
    let file = i.dir.path().join("big.backup");
    let mut child = i
        .cmd()
        .args(["backup", "create", "big", file.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for("the backup's temp file to grow", || {
        files_named(i.dir.path(), "big.backup.tmp-").iter().any(|n| {
            fs::metadata(i.dir.path().join(n))
                .map(|m| m.len() > 1 << 20)
                .unwrap_or(false)
        })
    });
    // Stopped first, so that it cannot finish between the look and the kill.
    let _ = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
    assert!(
        !file.exists(),
        "the backup finished before it was stopped: make it bigger"
    );
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    let _ = child.wait();
    assert!(!file.exists(), "no archive at FILE");
    assert_eq!(files_named(i.dir.path(), "big.backup.tmp-").len(), 1);
    // system check finds and removes it; a new backup to the same FILE works.
    let report = i.ok(&["system", "check"]);
    assert!(report.contains("partial archive"), "{report}");
    assert!(files_named(i.dir.path(), "big.backup.tmp-").is_empty());
    i.ok(&["backup", "create", "big", file.to_str().unwrap()]);
    assert!(files_named(i.dir.path(), "big.backup.tmp-").is_empty());

    // A restore fed through a fifo, killed once it has half the archive.
    let j = Instance::new();
    let fifo = i.dir.path().join("feed");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut restore = j
        .cmd()
        .args(["backup", "restore", fifo.to_str().unwrap()])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let data = fs::read(&file).unwrap();
    let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    std::io::Write::write_all(&mut w, &data[..data.len() / 2]).unwrap();
    let tmp = j.root().join("backups-tmp");
    wait_for("the restore's temp dir", || {
        tmp.is_dir() && fs::read_dir(&tmp).unwrap().count() > 0
    });
    let _ = Command::new("kill").args(["-KILL", &restore.id().to_string()]).status();
    let _ = restore.wait();
    drop(w);
    assert_eq!(stdout(&j.v(&["ps", "-aq"])), "");
    assert_eq!(j.left("containers"), 0);
    assert_eq!(j.left("snapshots/active"), 0);
    let report = j.ok(&["system", "check"]);
    assert!(report.contains("backup restore"), "{report}");
    assert_eq!(j.left("backups-tmp"), 0);
}

/// A tmpfs mounted on a dir of the test (and unmounted on drop).
struct SmallDisk(PathBuf);

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_backup_clearly_and_the_container_runs_on() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    i.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        img,
        "sh",
        "-c",
        "busybox dd if=/dev/urandom of=/big bs=1M count=4 2>/dev/null; sleep 1000",
    ]);
    let c = i.root().join("containers").join(id_of(&i, "web")).join("rootfs/big");
    wait_for("the container's file", || {
        fs::metadata(&c).map(|m| m.len() == 4 << 20).unwrap_or(false)
    });
    let disk = i.dir.path().join("small");
    fs::create_dir(&disk).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "vessel-test-small"])
        .arg(&disk)
        .status()
        .unwrap()
        .success());
    let _guard = SmallDisk(disk.clone());
    let o = i.v(&["backup", "create", "web", disk.join("web.backup").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("No space left on device"), "{}", stderr(&o));
    assert!(stderr(&o).contains("write the backup elsewhere"), "{}", stderr(&o));
    assert_eq!(fs::read_dir(&disk).unwrap().count(), 0, "nothing left on the full disk");
    let state = i.ok(&["inspect", "-f", "{{.State.Status}}", "web"]);
    assert_eq!(state.trim(), "running");
    assert_eq!(i.ok(&["exec", "web", "echo", "alive"]), "alive\n");
    // Elsewhere it works, the container frozen only while its files are read.
    let file = i.dir.path().join("web.backup");
    i.ok(&["backup", "create", "--include-image", "web", file.to_str().unwrap()]);
    assert_eq!(i.ok(&["inspect", "-f", "{{.State.Status}}", "web"]).trim(), "running");
    let j = Instance::new();
    let id = j.ok(&["backup", "restore", file.to_str().unwrap()]).trim().to_string();
    assert_eq!(fs::metadata(upper(&j, &id).join("big")).unwrap().len(), 4 << 20);
}
