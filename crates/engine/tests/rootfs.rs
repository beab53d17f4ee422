//! Root file systems with real mounts (run as root): containers from a small image made by
//! umoci (shared lowers, private uppers, remount, removal, errors) and from the built-in
//! host image (skeleton, extra mounts done in a private mount namespace with `unshare`).
//! Every test keeps its files in a `vessel-` temp dir and unmounts all under it on drop.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use vessel_engine::rootfs::{self, Prepared, Source, HOST_IMAGE};
use vessel_engine::Error;
use vessel_image::layout::{import, Location};
use vessel_image::{ImageError, ImageRecord, Store};

/// A temp dir with a store in it; on drop every mount under the dir is detached before the
/// dir is removed, so a failed assertion leaves nothing mounted.
struct Env {
    dir: tempfile::TempDir,
    store: Store,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("vessel-rootfs-").tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        Env { dir, store }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.path().join("containers").join(id)
    }

    fn active(&self, key: &str) -> PathBuf {
        self.store.root().join("snapshots/active").join(key)
    }

    /// Builds a one-layer image with umoci (busybox, /etc/passwd, /etc/shared) and imports it.
    fn image(&self) -> ImageRecord {
        sh(
            r#"
umoci init --layout img
umoci new --image img:v1
umoci config --image img:v1 --config.cmd sh --config.env PATH=/bin
umoci unpack --image img:v1 b >/dev/null
mkdir -p b/rootfs/bin b/rootfs/etc b/rootfs/tmp
cp /bin/busybox b/rootfs/bin/busybox
ln -s busybox b/rootfs/bin/sh
echo 'root:x:0:0:root:/root:/bin/sh' > b/rootfs/etc/passwd
echo shared > b/rootfs/etc/shared
umoci repack --image img:v1 b
rm -rf b
"#,
            self.path(),
        );
        let loc = Location::OciDir(self.path().join("img"), Some("v1".into()));
        import(&self.store, &loc, Some("localhost/vessel-rootfs-test:v1"), None).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let mut mine: Vec<PathBuf> = mounts()
            .into_iter()
            .filter(|(p, _)| p.starts_with(self.path()))
            .map(|(p, _)| p)
            .collect();
        mine.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for p in mine {
            let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// (mount point, fs type) of every mount in our namespace.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let mp = f[4]
                .replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\");
            Some((PathBuf::from(mp), f.get(sep + 1)?.to_string()))
        })
        .collect()
}

/// How many times `p` is mounted on, and with which types.
fn mounted_at(p: &Path) -> Vec<String> {
    mounts().into_iter().filter(|(m, _)| m == p).map(|(_, t)| t).collect()
}

fn have(tools: &[&str]) -> bool {
    let missing: Vec<_> = tools
        .iter()
        .filter(|t| !["/usr/bin", "/usr/sbin"].iter().any(|d| Path::new(d).join(t).exists()))
        .collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (apt-get install umoci busybox-static util-linux) !!!!!\n");
    }
    missing.is_empty()
}

fn sh_out(script: &str, dir: &Path) -> std::process::Output {
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap()
}

fn sh(script: &str, dir: &Path) -> String {
    let out = sh_out(script, dir);
    assert!(
        out.status.success(),
        "script failed: {script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ino(p: &Path) -> u64 {
    fs::metadata(p).unwrap().ino()
}

/// Asserts `remove` left nothing of container `key`.
fn assert_gone(env: &Env, bundle: &Path, key: &str) {
    let rootfs = bundle.join("rootfs");
    assert!(mounted_at(&rootfs).is_empty(), "{} still mounted", rootfs.display());
    assert!(!rootfs.exists(), "{} still exists", rootfs.display());
    assert!(!env.active(key).exists(), "snapshot {key} still exists");
    assert!(!bundle.join("host-etc").exists());
}

#[test]
fn image_rootfs_shares_lowers_keeps_uppers_private_and_is_removed() {
    if !have(&["umoci"]) {
        return;
    }
    let env = Env::new();
    let rec = env.image();
    let source = Source::Image(rec.clone());
    let (b1, b2) = (env.bundle("vessel-c1"), env.bundle("vessel-c2"));
    let p1 = rootfs::prepare(&env.store, &b1, "vessel-c1", &source, None).unwrap();
    let p2 = rootfs::prepare(&env.store, &b2, "vessel-c2", &source, None).unwrap();

    let Prepared {
        rootfs: r1,
        extra_mounts,
        image_config,
        users_root,
        image_id,
    } = p1;
    assert_eq!(r1, b1.join("rootfs"));
    assert_eq!(mounted_at(&r1), ["overlay"]);
    assert!(extra_mounts.is_empty());
    assert_eq!(users_root, r1);
    assert_eq!(image_id, rec.id.to_string());
    assert!(image_id.starts_with("sha256:"));
    let cfg = image_config.config().as_ref().unwrap();
    assert_eq!(cfg.cmd().as_deref(), Some(&["sh".to_string()][..]));
    assert_eq!(rootfs::image_config(&env.store, &rec).unwrap(), image_config);
    let r2 = p2.rootfs.clone();
    assert_eq!(
        fs::read_to_string(r1.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\n"
    );

    // One lower for both: an unchanged file has the inode of the layer snapshot's file in
    // both (overlayfs shows the lower's inode number; the device is each overlay's own).
    let lower = env.store.snapshots().dir(rec.top_chain_id().unwrap()).join("fs");
    let lower_ino = ino(&lower.join("bin/busybox"));
    assert_eq!(ino(&r1.join("bin/busybox")), lower_ino);
    assert_eq!(ino(&r2.join("bin/busybox")), lower_ino);

    // Writes are private: not in the other container, not in the shared lower.
    fs::write(r1.join("etc/private"), "c1").unwrap();
    fs::write(r1.join("etc/shared"), "changed by c1").unwrap();
    assert!(!r2.join("etc/private").exists());
    assert_eq!(fs::read_to_string(r2.join("etc/shared")).unwrap(), "shared\n");
    assert_eq!(fs::read_to_string(lower.join("etc/shared")).unwrap(), "shared\n");
    assert!(!lower.join("etc/private").exists());
    assert!(env.active("vessel-c1").join("upper/etc/private").is_file());

    // mount() of a mounted rootfs does nothing; unmount is idempotent; mount() again (a
    // restart) brings back the container's own files.
    rootfs::mount(&env.store, &b1, "vessel-c1", false, None).unwrap();
    assert_eq!(mounted_at(&r1), ["overlay"]);
    rootfs::unmount(&b1).unwrap();
    assert!(mounted_at(&r1).is_empty());
    assert!(!r1.join("etc/private").exists());
    rootfs::unmount(&b1).unwrap();
    rootfs::unmount(&env.bundle("vessel-no-such")).unwrap();
    rootfs::mount(&env.store, &b1, "vessel-c1", false, None).unwrap();
    assert_eq!(mounted_at(&r1), ["overlay"]);
    assert_eq!(fs::read_to_string(r1.join("etc/private")).unwrap(), "c1");

    // A busy rootfs (a process's cwd inside) is detached lazily.
    let mut busy = ChildGuard(
        Command::new("sleep")
            .arg("30")
            .current_dir(r1.join("etc"))
            .spawn()
            .unwrap(),
    );
    rootfs::remove(&env.store, &b1, "vessel-c1").unwrap();
    assert_gone(&env, &b1, "vessel-c1");
    let _ = busy.0.kill();
    // Idempotent, also on a bundle that never was.
    rootfs::remove(&env.store, &b1, "vessel-c1").unwrap();
    rootfs::remove(&env.store, &env.bundle("vessel-none"), "vessel-none").unwrap();

    // The other container is untouched.
    assert_eq!(fs::read_to_string(r2.join("etc/shared")).unwrap(), "shared\n");
    rootfs::remove(&env.store, &b2, "vessel-c2").unwrap();
    assert_gone(&env, &b2, "vessel-c2");
    assert!(lower.join("bin/busybox").is_file());
}

/// Kills and reaps a child on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn errors_leave_nothing_behind() {
    if !have(&["umoci"]) {
        return;
    }
    let env = Env::new();
    let rec = env.image();
    let source = Source::Image(rec.clone());

    // The key is taken: the existing container is not disturbed, the new bundle not left.
    let b1 = env.bundle("vessel-one");
    let p1 = rootfs::prepare(&env.store, &b1, "vessel-one", &source, None).unwrap();
    let b2 = env.bundle("vessel-two");
    let e = rootfs::prepare(&env.store, &b2, "vessel-one", &source, None).unwrap_err();
    assert!(matches!(e, Error::Image(ImageError::SnapshotConflict { .. })), "{e:?}");
    assert!(!b2.exists());
    assert_eq!(mounted_at(&p1.rootfs), ["overlay"]);
    assert!(p1.rootfs.join("bin/busybox").is_file());

    // A mounted rootfs is not mounted over.
    let e = rootfs::prepare(&env.store, &b1, "vessel-other", &source, None).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    assert!(!env.active("vessel-other").exists());
    assert_eq!(mounted_at(&p1.rootfs), ["overlay"]);

    // A malformed key.
    let e = rootfs::prepare(&env.store, &b2, "../x", &source, None).unwrap_err();
    assert!(matches!(e, Error::Image(ImageError::SnapshotConflict { .. })), "{e:?}");
    assert!(!b2.exists());

    // The image's layer snapshot is gone (pruned, or a half-finished pull).
    rootfs::remove(&env.store, &b1, "vessel-one").unwrap();
    let chain = rec.top_chain_id().unwrap().clone();
    fs::remove_dir_all(env.store.snapshots().dir(&chain)).unwrap();
    let b3 = env.bundle("vessel-three");
    fs::create_dir_all(&b3).unwrap();
    let e = rootfs::prepare(&env.store, &b3, "vessel-three", &source, None).unwrap_err();
    assert!(matches!(e, Error::Image(ImageError::SnapshotNotFound { .. })), "{e:?}");
    assert!(!env.active("vessel-three").exists());
    assert!(b3.is_dir(), "a bundle the caller made stays");
    assert!(!b3.join("rootfs").exists());
    assert!(mounts().iter().all(|(p, _)| !p.starts_with(env.path())));

    // mount() of a container whose snapshot is gone.
    let e = rootfs::mount(&env.store, &b3, "vessel-three", false, None).unwrap_err();
    assert!(matches!(e, Error::Image(ImageError::SnapshotNotFound { .. })), "{e:?}");
    assert!(!b3.join("rootfs").exists());

    // The config blob is gone.
    fs::remove_file(env.store.blob_path(&rec.id)).unwrap();
    let e = rootfs::image_config(&env.store, &rec).unwrap_err();
    assert!(matches!(e, Error::Image(ImageError::Io { .. })), "{e:?}");
    let e = rootfs::prepare(&env.store, &b3, "vessel-three", &source, None).unwrap_err();
    assert!(matches!(e, Error::Image(_)), "{e:?}");
    assert!(!env.active("vessel-three").exists());
}

/// Does `extra_mounts` as the runtime would, in a private mount namespace (`unshare`), then
/// runs `script` chrooted into the rootfs; returns its output.
fn in_container(p: &Prepared, script: &str) -> std::process::Output {
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let mut cmds = vec!["set -eu".to_string()];
    for m in &p.extra_mounts {
        let dest = p.rootfs.join(m.destination().strip_prefix("/").unwrap());
        let dest = q(&dest.display().to_string());
        let opts = m.options().clone().unwrap_or_default();
        match m.typ().as_deref() {
            Some("bind") => {
                let src = q(&m.source().as_ref().unwrap().display().to_string());
                cmds.push(format!("mount --rbind {src} {dest}"));
                if opts.iter().any(|o| o == "ro") {
                    cmds.push(format!("mount -o remount,bind,ro {dest}"));
                }
            }
            Some(t) => cmds.push(format!("mount -t {t} {t} -o {} {dest}", q(&opts.join(",")))),
            None => panic!("mount without type: {m:?}"),
        }
    }
    cmds.push(format!(
        "exec chroot {} /bin/sh -c {}",
        q(&p.rootfs.display().to_string()),
        q(script)
    ));
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &cmds.join("\n")])
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn host_image_is_a_sparse_root_over_the_hosts_usr() {
    if !have(&["unshare", "chroot", "stat"]) {
        return;
    }
    let env = Env::new();
    let (b1, b2) = (env.bundle("vessel-h1"), env.bundle("vessel-h2"));
    let p1 = rootfs::prepare(&env.store, &b1, "vessel-h1", &Source::Host, None).unwrap();
    let p2 = rootfs::prepare(&env.store, &b2, "vessel-h2", &Source::Host, None).unwrap();
    let r1 = p1.rootfs.clone();
    assert_eq!(r1, b1.join("rootfs"));
    assert_eq!(mounted_at(&r1), ["overlay"], "only the rootfs overlay is on the host");
    assert!(mounted_at(&r1.join("usr")).is_empty() && mounted_at(&r1.join("etc")).is_empty());
    assert_eq!(p1.image_id, HOST_IMAGE);
    assert_eq!(p1.users_root, Path::new("/"));
    let cfg = p1.image_config.config().as_ref().unwrap();
    let want_shell = if Path::new("/bin/bash").is_file() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    assert_eq!(cfg.cmd().as_deref(), Some(&[want_shell.to_string()][..]));
    assert!(cfg.env().as_ref().unwrap()[0].starts_with("PATH=/usr/local/sbin:"));

    // The skeleton: /usr-style symlinks as the host has them, empty mount points, modes.
    for name in ["bin", "lib", "lib32", "lib64", "libx32", "sbin"] {
        let host = Path::new("/").join(name);
        let ours = r1.join(name);
        match fs::read_link(&host) {
            Ok(t) if t.starts_with("usr") || t.starts_with("/usr") => assert_eq!(fs::read_link(&ours).unwrap(), t),
            _ if host.is_dir() => assert!(ours.is_dir() && !ours.is_symlink(), "{name}"),
            _ => assert!(!ours.exists(), "{name}"),
        }
    }
    for d in [
        "usr", "etc", "dev", "proc", "sys", "run", "mnt", "opt", "srv", "home", "var/log", "var/lib",
    ] {
        assert!(r1.join(d).is_dir(), "{d}");
    }
    assert_eq!(fs::read_dir(r1.join("usr")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(r1.join("etc")).unwrap().count(), 0);
    let mode = |p: &str| fs::symlink_metadata(r1.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(mode("var/tmp"), 0o1777);
    assert_eq!(mode("root"), 0o700);
    let skeletons: Vec<_> = fs::read_dir(env.store.root().join("host")).unwrap().flatten().collect();
    assert_eq!(skeletons.len(), 1, "one skeleton for both containers");
    let skeleton = skeletons[0].path().join("root");

    // The mounts config.json must add: /usr (and non-symlink top dirs) read-only, /etc overlay.
    let m = &p1.extra_mounts;
    assert_eq!(m[0].destination(), Path::new("/usr"));
    assert_eq!(m[0].source().as_deref(), Some(Path::new("/usr")));
    assert!(m[0].options().as_ref().unwrap().contains(&"ro".to_string()));
    let etc = m.last().unwrap();
    assert_eq!(etc.destination(), Path::new("/etc"));
    assert_eq!(etc.typ().as_deref(), Some("overlay"));
    let up = format!("upperdir={}", b1.join("host-etc/upper").display());
    assert!(etc.options().as_ref().unwrap().contains(&up), "{etc:?}");

    // Writes in the rootfs are the container's own.
    fs::write(r1.join("var/log/vessel-x"), "h1").unwrap();
    assert!(!p2.rootfs.join("var/log/vessel-x").exists());
    assert!(!skeleton.join("var/log/vessel-x").exists());
    assert!(env.active("vessel-h1").join("upper/var/log/vessel-x").is_file());

    // Inside: the host's /usr itself (same inode), read-only; /etc from the host, private.
    let usr_env = fs::metadata("/usr/bin/env").unwrap().ino();
    let marker = format!("vessel-rootfs-{}", std::process::id());
    let out = ok(in_container(
        &p1,
        &format!(
            "stat -c %i /usr/bin/env; cat /etc/hostname >/dev/null || true; test -s /etc/passwd; \
             echo private > /etc/{marker}; cat /etc/{marker}; \
             if touch /usr/vessel-ro 2>/dev/null; then echo usr-writable; fi; \
             echo y > /tmp/{marker}; ls /var/log"
        ),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], usr_env.to_string(), "{out}");
    assert_eq!(lines[1], "private", "{out}");
    assert!(!out.contains("usr-writable"), "{out}");
    assert!(out.contains("vessel-x"), "{out}");
    assert!(!Path::new("/etc").join(&marker).exists(), "the host's /etc was written");
    assert!(!Path::new("/tmp").join(&marker).exists(), "the host's /tmp was written");
    assert!(b1.join("host-etc/upper").join(&marker).is_file());
    let out = ok(in_container(
        &p2,
        &format!("test ! -e /etc/{marker} && test -s /etc/passwd && echo ok"),
    ));
    assert_eq!(out.trim(), "ok");

    // Restart: unmount, mount again; the container's files come back.
    rootfs::unmount(&b1).unwrap();
    assert!(mounted_at(&r1).is_empty());
    rootfs::mount(&env.store, &b1, "vessel-h1", true, None).unwrap();
    rootfs::mount(&env.store, &b1, "vessel-h1", true, None).unwrap();
    assert_eq!(mounted_at(&r1), ["overlay"]);
    assert!(r1.join("var/log/vessel-x").is_file());
    let out = ok(in_container(&p1, &format!("cat /etc/{marker}")));
    assert_eq!(out.trim(), "private");

    for (b, k) in [(&b1, "vessel-h1"), (&b2, "vessel-h2")] {
        rootfs::remove(&env.store, b, k).unwrap();
        assert_gone(&env, b, k);
        rootfs::remove(&env.store, b, k).unwrap();
    }
    assert!(skeleton.is_dir(), "the skeleton is shared and stays");
}

#[test]
fn host_image_refuses_bundle_paths_overlay_options_cannot_carry() {
    let env = Env::new();
    let b = env.path().join("a,b");
    let e = rootfs::prepare(&env.store, &b, "vessel-comma", &Source::Host, None).unwrap_err();
    assert!(matches!(e, Error::BadInput(_)), "{e:?}");
    assert!(!b.exists() && !env.active("vessel-comma").exists());
}

/// The loop devices whose backing file is `file`.
fn loops_of(file: &Path) -> Vec<String> {
    let want = fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("loop/backing_file")).is_ok_and(|b| {
                Path::new(b.trim_end()) == want || b.trim_end() == format!("{} (deleted)", want.display())
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn writable_layer_of_a_stopped_container_with_a_disk_quota() {
    if !have(&["mkfs.xfs", "xfs_growfs"]) {
        return;
    }
    let env = Env::new();
    let key = "vessel-quota-writable";
    let bundle = env.bundle(key);
    fs::create_dir_all(&bundle).unwrap();
    vessel_engine::quota::create(&bundle, 300 << 20).unwrap();
    let disk = bundle.join("disk.img");
    let p = rootfs::prepare(&env.store, &bundle, key, &Source::Host, None).unwrap();
    assert_eq!(loops_of(&disk).len(), 1);
    fs::write(p.rootfs.join("root/file"), "in the layer").unwrap();
    fs::write(bundle.join("host-etc/upper/etc-file"), "in /etc").unwrap();
    let upper = env.active(key).join("upper");
    assert_eq!(fs::read_to_string(upper.join("root/file")).unwrap(), "in the layer");
    // Both uppers are on the container's own xfs, not on the store's file system.
    assert_eq!(mounted_at(&env.active(key)), ["xfs"]);
    assert_eq!(mounted_at(&bundle.join("host-etc")), ["xfs"]);

    // Unmounted (a stopped container): the layer's path does not pretend to be empty.
    rootfs::unmount(&bundle).unwrap();
    assert!(loops_of(&disk).is_empty());
    assert!(!upper.exists() && !bundle.join("host-etc/upper").exists());
    {
        let w = rootfs::writable(&env.store, &bundle, key).unwrap();
        assert_eq!(w.upper, upper);
        assert_eq!(fs::read_to_string(w.upper.join("root/file")).unwrap(), "in the layer");
        let etc = w.host_etc_upper.clone().unwrap();
        assert_eq!(fs::read_to_string(etc.join("etc-file")).unwrap(), "in /etc");
    }
    assert!(!upper.exists() && loops_of(&disk).is_empty(), "unmounted again on drop");

    // Mounted again (a start): the same files; then removed whole.
    rootfs::mount(&env.store, &bundle, key, true, None).unwrap();
    assert_eq!(fs::read_to_string(p.rootfs.join("root/file")).unwrap(), "in the layer");
    rootfs::remove(&env.store, &bundle, key).unwrap();
    assert_gone(&env, &bundle, key);
    assert!(!disk.exists() && loops_of(&disk).is_empty());
}
