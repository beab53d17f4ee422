//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1) of images built by umoci
//! and pushed by skopeo; the unpacked, overlay-mounted root file system is compared file by
//! file with `umoci unpack`. Skips loudly when those tools are missing.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vessel_image::pull::{pull, NoProgress, PullOptions};
use vessel_image::{layout, records, ImageError, Platform, Reference, Store};

fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !Path::new(&format!("/usr/bin/{t}")).exists()).collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (apt-get install docker-registry skopeo umoci apache2-utils busybox-static) !!!!!\n");
        return false;
    }
    true
}

fn sh(script: &str, dir: &Path) {
    let out = Command::new("bash").arg("-euo").arg("pipefail").arg("-c").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "script failed: {script}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A docker-registry process on 127.0.0.1, killed (by pid) on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let auth = htpasswd
            .map(|p| format!("auth:\n  htpasswd:\n    realm: vessel-test\n    path: {}\n", p.display()))
            .unwrap_or_default();
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}", storage.display()),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry").arg("serve").arg(&cfg).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let reg = Registry { child, addr: format!("127.0.0.1:{port}"), storage };
        let start = Instant::now();
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// The file holding a blob in the registry's storage.
    fn blob_file(&self, digest: &vessel_image::Digest) -> PathBuf {
        self.storage.join("docker/registry/v2/blobs/sha256").join(&digest.hex()[..2]).join(digest.hex()).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `img:v2` in an OCI layout with umoci: layer 1 busybox + files, layer 2 deletes a
/// file, replaces one, and replaces a directory's content.
fn build_image(dir: &Path) {
    sh(
        r#"
umoci init --layout img
umoci new --image img:v1
umoci config --image img:v1 --config.cmd sh
umoci unpack --image img:v1 b1 >/dev/null
mkdir -p b1/rootfs/bin b1/rootfs/etc b1/rootfs/opq/sub b1/rootfs/keep
cp /usr/bin/busybox b1/rootfs/bin/busybox
for t in sh ls cat; do ln -s busybox b1/rootfs/bin/$t; done
ln b1/rootfs/bin/busybox b1/rootfs/bin/hardbox
echo hello > b1/rootfs/etc/motd; echo del > b1/rootfs/etc/gone; echo x > b1/rootfs/opq/sub/old
echo k > b1/rootfs/keep/file; chmod 4755 b1/rootfs/bin/busybox; chown 12:34 b1/rootfs/etc/motd
umoci repack --image img:v1 b1 && rm -rf b1
umoci unpack --image img:v1 b2 >/dev/null
rm b2/rootfs/etc/gone; echo changed > b2/rootfs/etc/motd
rm -rf b2/rootfs/opq; mkdir -p b2/rootfs/opq; echo new > b2/rootfs/opq/new
umoci repack --image img:v2 b2 && rm -rf b2
umoci unpack --image img:v2 expected >/dev/null
"#,
        dir,
    );
}

fn push(dir: &Path, reg: &Registry, repo: &str, creds: Option<&str>) -> String {
    let dest = format!("{}/{repo}", reg.addr);
    let c = creds.map(|c| format!("--dest-creds {c}")).unwrap_or_default();
    sh(&format!("skopeo copy -q --dest-tls-verify=false {c} oci:img:v2 docker://{dest}"), dir);
    dest
}

type Tree = BTreeMap<String, String>;

/// Type, mode, owner, size, content/target of every file below `root`.
fn tree(root: &Path) -> Tree {
    let mut m = Tree::new();
    fn walk(p: &Path, root: &Path, m: &mut Tree) {
        let mut entries: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let md = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_dir() {
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("symlink {}", fs::read_link(&path).unwrap().display())
            } else if md.file_type().is_char_device() {
                format!("char {}", md.rdev())
            } else {
                format!("file {}", vessel_image::Digest::of_bytes(&fs::read(&path).unwrap()))
            };
            let mode = if md.file_type().is_symlink() { 0 } else { md.mode() & 0o7777 };
            let mtime = if md.is_file() { md.mtime() } else { 0 };
            m.insert(rel, format!("{what} mode={mode:o} owner={}:{} mtime={mtime}", md.uid(), md.gid()));
            if md.is_dir() {
                walk(&path, root, m);
            }
        }
    }
    walk(root, root, &mut m);
    m
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Mounts an active snapshot of `top`, compares it with umoci's unpack, cleans up.
fn compare_mounted(store: &Store, rec: &vessel_image::ImageRecord, expected: &Path, key: &str) {
    let snaps = store.snapshots();
    let active = snaps.prepare(key, rec.top_chain_id()).unwrap();
    assert_eq!(active.lowers.len(), rec.layers.len());
    let target = store.root().join("mnt");
    fs::create_dir_all(&target).unwrap();
    snaps.mount(key, &target).unwrap();
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = vessel_image::snapshot::unmount(self.0);
        }
    }
    let guard = Unmount(&target);
    let got = tree(&target);
    let want = tree(expected);
    // Writes land in the upper dir, lowers stay untouched.
    fs::write(target.join("etc/motd"), b"container write").unwrap();
    drop(guard);
    assert_eq!(fs::read(active.upper.join("etc/motd")).unwrap(), b"container write");
    snaps.remove(key).unwrap();
    assert_eq!(got, want, "mounted rootfs differs from umoci unpack");
    assert!(got.contains_key("opq/new") && !got.contains_key("opq/sub") && !got.contains_key("etc/gone"));
}

#[test]
fn pull_anonymous_matches_umoci_unpack_and_is_idempotent() {
    if !have(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = push(t.path(), &reg, "test/bb:v2", None);
    let store = Store::open(t.path().join("root")).unwrap();
    let r = Reference::parse(&name).unwrap();
    let rec = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap();
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.names, vec![name.clone()]);
    for l in &rec.layers {
        assert!(store.has_blob(&l.digest) && store.snapshots().has(&l.chain_id));
    }
    compare_mounted(&store, &rec, &t.path().join("expected/rootfs"), "c1");
    // Warm pull: nothing downloaded, same record.
    let start = Instant::now();
    let again = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap();
    eprintln!("warm pull: {:?}", start.elapsed());
    assert_eq!(again, rec);
    // Look-ups, export/import round trip, removal and prune.
    assert_eq!(records::find_image(&store, &rec.id.hex()[..8]).unwrap().id, rec.id);
    assert_eq!(records::find_image(&store, &name).unwrap().id, rec.id);
    let archive = t.path().join("bb.tar");
    layout::export(&store, &rec, &layout::Location::OciArchive(archive.clone(), None)).unwrap();
    layout::export(&store, &rec, &layout::Location::OciDir(t.path().join("out"), Some("v2".into()))).unwrap();
    sh("umoci unpack --image out:v2 fromexport >/dev/null", t.path());
    assert_eq!(tree(&t.path().join("fromexport/rootfs")), tree(&t.path().join("expected/rootfs")));
    let store2 = Store::open(t.path().join("root2")).unwrap();
    let imported = layout::import(&store2, &layout::Location::OciArchive(archive, None), Some("localhost/bb:imp"), None).unwrap();
    assert_eq!(imported.id, rec.id);
    compare_mounted(&store2, &imported, &t.path().join("expected/rootfs"), "c2");
    let from_dir = layout::import(&store2, &layout::Location::OciDir(t.path().join("img"), Some("v2".into())), None, None).unwrap();
    assert_eq!(from_dir.manifest, imported.manifest);
    records::remove_image(&store, &name).unwrap();
    let report = records::prune(&store).unwrap();
    assert_eq!(report.snapshots.len(), 2);
    assert!(store.images().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.root().join("content/blobs/sha256")).unwrap().count(), 0);
}

#[test]
fn tampered_missing_and_foreign_content_is_refused() {
    if !have(&["docker-registry", "skopeo", "umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = push(t.path(), &reg, "test/bb:v2", None);
    let r = Reference::parse(&name).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&fs::read(t.path().join("img/index.json")).unwrap()).unwrap();
    let _ = index;
    // Find the layers from a pull into a scratch store.
    let scratch = Store::open(t.path().join("scratch")).unwrap();
    let rec = rt().block_on(pull(&scratch, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap();

    // Another platform than the image's.
    let store = Store::open(t.path().join("root")).unwrap();
    let opts = PullOptions { platform: Some(Platform::parse("linux/s390x").unwrap()), ..Default::default() };
    let err = rt().block_on(pull(&store, &r, &opts, Arc::new(NoProgress))).unwrap_err();
    assert!(matches!(err, ImageError::PlatformMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&rec.manifest.to_string()), "{err}");

    // A tampered layer (same size, one byte flipped).
    let layer = &rec.layers[1];
    let blob = reg.blob_file(&layer.digest);
    let good = fs::read(&blob).unwrap();
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    fs::write(&blob, &bad).unwrap();
    let err = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap_err();
    eprintln!("tampered: {err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(matches!(err, ImageError::DigestMismatch { .. } | ImageError::LayerStream { .. }), "{err:?}");
    assert!(!store.has_blob(&layer.digest));
    assert!(!store.snapshots().has(&layer.chain_id));
    assert!(store.images().unwrap().is_empty());
    assert_eq!(fs::read_dir(store.root().join("content/tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(store.root().join("snapshots/tmp")).unwrap().count(), 0);

    // A missing blob.
    fs::remove_file(&blob).unwrap();
    let err = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap_err();
    eprintln!("missing: {err}");
    assert!(err.to_string().contains(&layer.digest.to_string()), "{err}");
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn pull_with_basic_auth() {
    if !have(&["docker-registry", "skopeo", "umoci", "htpasswd"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    let htp = t.path().join("htpasswd");
    sh(&format!("htpasswd -Bbc {} alice s3cret 2>/dev/null", htp.display()), t.path());
    let reg = Registry::start(&t.path().join("reg"), Some(&htp));
    let name = push(t.path(), &reg, "private/bb:v2", Some("alice:s3cret"));
    let r = Reference::parse(&name).unwrap();
    let store = Store::open(t.path().join("root")).unwrap();
    let err = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap_err();
    assert!(matches!(err, ImageError::Registry { .. }), "{err:?}");
    assert!(err.to_string().contains("vessel login"), "{err}");
    // Wrong password refused by login's check, right one saved and used by pull.
    let bad = vessel_image::auth::Credentials { username: "alice".into(), password: "nope".into() };
    let opts = PullOptions { credentials: Some(bad), ..Default::default() };
    let reg_client = vessel_image::pull::Registry::connect(&store, &r, &opts).unwrap();
    assert!(rt().block_on(reg_client.check_login()).is_err());
    let good = vessel_image::auth::Credentials { username: "alice".into(), password: "s3cret".into() };
    let opts = PullOptions { credentials: Some(good.clone()), ..Default::default() };
    rt().block_on(vessel_image::pull::Registry::connect(&store, &r, &opts).unwrap().check_login()).unwrap();
    vessel_image::auth::save(store.root(), &reg.addr, &good).unwrap();
    let rec = rt().block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress))).unwrap();
    assert_eq!(rec.layers.len(), 2);
}
