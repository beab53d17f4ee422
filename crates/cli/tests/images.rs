//! The `vessel` image commands end to end: a real registry on 127.0.0.1 (docker-registry), an
//! image made by umoci and pushed by skopeo; pull, images, inspect, export, import, rmi, prune.

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod instance;
mod run_vessel;

use instance::{stderr, stdout, Instance};
use run_vessel::{sh, vessel};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Registry(Child);
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pull_list_inspect_export_import_rmi() {
    let missing: Vec<_> = ["docker-registry", "skopeo", "umoci", "busybox"]
        .into_iter()
        .filter(|t| !Path::new(&format!("/usr/bin/{t}")).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (apt-get install docker-registry skopeo umoci busybox-static) !!!!!\n");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = t.path().join("reg.yml");
    fs::write(&cfg, format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n", t.path().display())).unwrap();
    let _reg = Registry(
        Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(50));
    }
    sh(
        &format!(
            "umoci init --layout img && umoci new --image img:1 && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin && cp /usr/bin/busybox b/rootfs/bin/ && umoci repack --image img:1 b && skopeo copy -q --dest-tls-verify=false oci:img:1 docker://127.0.0.1:{port}/cli/bb:1"
        ),
        t.path(),
    );
    let root = t.path().join("root");
    let name = format!("127.0.0.1:{port}/cli/bb:1");
    let out = vessel(&root, &["pull", &name]);
    assert!(out.status.success());
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(id.len(), 64);
    let out = vessel(&root, &["images"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id[..12]));
    let out = vessel(&root, &["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["names"][0], name);
    let out = vessel(&root, &["image", "inspect", &id[..10]]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["Id"], id.as_str());
    assert_eq!(v[0]["Config"]["architecture"], "amd64");
    let arch = t.path().join("x.tar");
    assert!(vessel(
        &root,
        &["image", "export", &name, &format!("oci-archive:{}", arch.display())]
    )
    .status
    .success());
    assert!(vessel(&root, &["rmi", &name]).status.success());
    assert!(!vessel(&root, &["image", "inspect", &name]).status.success());
    let out = vessel(
        &root,
        &[
            "image",
            "import",
            &format!("oci-archive:{}", arch.display()),
            "localhost/again:1",
        ],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), id);
    assert!(vessel(&root, &["rmi", &id[..12]]).status.success());
    let out = vessel(&root, &["images", "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert_eq!(fs::read_dir(root.join("content/blobs/sha256")).unwrap().count(), 0);
    let out = vessel(
        &root,
        &["pull", "--tls-verify=false", &format!("127.0.0.1:{port}/cli/nothere:1")],
    );
    assert_eq!(out.status.code(), Some(125));
}

/// `major:minor` of the block device holding the host's root file system (from mountinfo).
fn root_disk() -> Option<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[4] == "/")
        .map(|f| f[2].to_string())
        .filter(|mm| Path::new(&format!("/sys/dev/block/{mm}")).exists())
}

/// Builds (with umoci, from a rootfs made with mknod as a debootstrap image has) the image
/// `img:dev` in `dir`: busybox plus /dev/null, /dev/console, /dev/zero, `/disk`, a block
/// node for the host's root disk `mm`, and `/loop`, one for /dev/loop0 (7:0), which the host
/// itself can open (this machine's root may not open its disk: the loop node shows that
/// the node in the layer is what would work outside the container).
fn build_device_image(dir: &Path, mm: &str) {
    let (major, minor) = mm.split_once(':').unwrap();
    sh(
        &format!(
            "umoci init --layout img && umoci new --image img:dev \
             && umoci config --image img:dev --config.cmd sh --config.env PATH=/bin \
             && umoci unpack --image img:dev b >/dev/null && mkdir -p b/rootfs/bin b/rootfs/dev \
             && cp /usr/bin/busybox b/rootfs/bin/ && for t in sh head ls stat cat echo; do ln -s busybox b/rootfs/bin/$t; done \
             && mknod -m 666 b/rootfs/dev/null c 1 3 && mknod -m 600 b/rootfs/dev/console c 5 1 \
             && mknod -m 666 b/rootfs/dev/zero c 1 5 && mknod -m 660 b/rootfs/disk b {major} {minor} \
             && mknod -m 660 b/rootfs/loop b 7 0 && head -c1 b/rootfs/loop >/dev/null \
             && umoci repack --image img:dev b && rm -rf b"
        ),
        dir,
    );
}

/// The committed snapshot entries `rel` of the store under `root` (one per snapshot that has it).
fn in_snapshots(root: &Path, rel: &str) -> Vec<fs::Metadata> {
    fs::read_dir(root.join("snapshots"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::symlink_metadata(e.path().join("fs").join(rel)).ok())
        .collect()
}

#[test]
fn images_with_device_nodes_import_pull_and_run_with_the_nodes_useless() {
    if !instance::have(&["docker-registry", "skopeo", "umoci", "busybox", "catatonit"]) {
        return;
    }
    let Some(mm) = root_disk() else {
        eprintln!("\n!!!!! SKIPPED: the root file system is not on a block device !!!!!\n");
        return;
    };
    let i = Instance::new();
    build_device_image(i.dir.path(), &mm);
    // import: the nodes are created in the snapshot, as podman does as root.
    let src = format!("oci:{}:dev", i.dir.path().join("img").display());
    i.ok(&["image", "import", &src, "localhost/devs:1"]);
    let disk = in_snapshots(&i.root(), "disk");
    assert_eq!(disk.len(), 1);
    assert!(disk[0].file_type().is_block_device());
    assert!(in_snapshots(&i.root(), "dev/null")[0].file_type().is_char_device());

    // pull from the loopback registry into another root, and run from it.
    let reg = common::Registry::start(&i.dir.path().join("reg"), None);
    let name = common::skopeo_push(i.dir.path(), "oci:img:dev", &reg, "debian/devs:1", "");
    let p = Instance::new();
    p.ok(&["pull", &name]);
    assert!(in_snapshots(&p.root(), "disk")[0].file_type().is_block_device());
    // The node shipped in the layer is there, but reading it fails (device cgroup, nodev);
    // the container's own /dev works. Never written.
    let out = p.v(&[
        "run",
        "--rm",
        &name,
        "sh",
        "-c",
        "stat -c '%F %t:%T' /disk /loop; head -c1 /disk >/dev/null && echo READ-THE-DISK; \
         head -c1 /loop >/dev/null && echo OPENED-THE-LOOP; echo ok > /dev/null && echo devnull-ok",
    ]);
    let o = stdout(&out);
    assert_eq!(o.matches("block special file").count(), 2, "{o}");
    assert!(
        !o.contains("READ-THE-DISK"),
        "the block node of the host disk was readable"
    );
    assert!(!o.contains("OPENED-THE-LOOP"), "the loop node was opened inside");
    assert!(o.contains("devnull-ok"), "{o}");
    assert!(
        stderr(&out).contains("Operation not permitted") || stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn registry_errors_are_told_in_peoples_words() {
    if !instance::have(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    common::build_image(i.dir.path());
    let reg = common::Registry::start(&i.dir.path().join("reg"), None);
    let name = common::push(i.dir.path(), &reg, "words/bb:1", None);
    let once = |out: &std::process::Output| {
        let e = stderr(out);
        assert_eq!(out.status.code(), Some(125), "{e}");
        assert_eq!(e.matches("vessel:").count(), 1, "one error line: {e}");
        assert!(!e.contains("http://") && !e.contains("https://"), "no URL: {e}");
        e
    };
    // A tag and a repository the registry does not have.
    for missing in [
        format!("{}/words/bb:2", reg.addr),
        format!("{}/words/nothere:1", reg.addr),
    ] {
        let e = once(&i.v(&["pull", &missing]));
        assert!(
            e.contains(&format!("image {missing} not found in registry {}", reg.addr)),
            "{e}"
        );
    }
    // The image itself pulls; `run` of a missing tag says the same.
    i.ok(&["pull", "-q", &name]);
    let e = once(&i.v(&["run", "--rm", &format!("{}/words/bb:3", reg.addr), "true"]));
    assert!(e.contains("not found in registry"), "{e}");
    // A host name that does not resolve (.invalid never does).
    let e = once(&i.v(&["pull", "nonexistent.invalid/x"]));
    assert!(
        e.contains("the host name \"nonexistent.invalid\" does not resolve"),
        "{e}"
    );
    assert!(!e.contains("tls-verify"), "{e}");
    // A loopback port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = once(&i.v(&["pull", &format!("127.0.0.1:{port}/x:1")]));
    assert!(e.contains(&format!("registry 127.0.0.1:{port} does not answer")), "{e}");
    assert!(e.contains("refused"), "{e}");
    assert!(!e.contains("tls-verify"), "{e}");
    // https asked of a plain-http registry: the hint is for this case.
    let e = once(&i.v(&["pull", "--tls-verify=true", &name]));
    assert!(e.contains("--tls-verify=false"), "{e}");
}

#[test]
fn rmi_refuses_an_image_in_use_unless_forced_and_reports_each_error_once() {
    if !instance::have(&["umoci", "busybox", "catatonit"]) {
        return;
    }
    let i = Instance::new();
    // A missing image: one error line, non-zero exit; `-f` is an option, not an image.
    for args in [&["rmi", "nothere:1"][..], &["rmi", "-f", "nothere:1"][..]] {
        let out = i.v(args);
        assert_eq!(out.status.code(), Some(125));
        let e = stderr(&out);
        assert_eq!(e.matches("vessel:").count(), 1, "{e}");
        assert!(e.contains("\"nothere:1\" not found"), "{e}");
    }
    // Two missing: each said once.
    let e = stderr(&i.v(&["rmi", "a:1", "b:1"]));
    assert_eq!(
        (e.matches("\"a:1\"").count(), e.matches("\"b:1\"").count()),
        (1, 1),
        "{e}"
    );

    let img = i.busybox();
    let id = i.ok(&["create", "--name", "user1", img, "echo", "still-runs"]);
    let out = i.v(&["rmi", img]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(e.contains("in use by container user1"), "{e}");
    assert_eq!(e.matches("vessel:").count(), 1, "{e}");
    assert!(i.ok(&["images"]).contains("localhost/bb"), "refused, yet removed");
    // By id too.
    let image_id = i.ok(&["images", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&image_id).unwrap();
    let hex = v[0]["id"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    assert!(!i.v(&["rmi", &hex[..12]]).status.success());
    // One of two names is only untagged, in use or not.
    i.ok(&[
        "image",
        "import",
        &format!("oci:{}:1", i.dir.path().join("img").display()),
        "localhost/bb:two",
    ]);
    i.ok(&["rmi", "localhost/bb:two"]);
    // Forced: the image goes, the container keeps its layers and still runs.
    i.ok(&["rmi", "-f", img]);
    assert_eq!(i.ok(&["images", "--format", "json"]).trim(), "[]");
    assert!(i.ok(&["start", "-a", id.trim()]).contains("still-runs"));
    i.ok(&["rm", id.trim()]);
}

#[test]
fn images_shows_the_config_creation_time_and_the_unpacked_size() {
    if !instance::have(&["docker-registry", "skopeo", "umoci", "busybox", "catatonit"]) {
        return;
    }
    let i = Instance::new();
    sh(
        "umoci init --layout img && umoci new --image img:1 \
         && umoci config --image img:1 --config.cmd sh --config.env PATH=/bin --created 2020-01-02T03:04:05Z \
         && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin \
         && cp /usr/bin/busybox b/rootfs/bin/ && ln -s busybox b/rootfs/bin/sh && ln -s busybox b/rootfs/bin/true \
         && umoci repack --image img:1 b && rm -rf b",
        i.dir.path(),
    );
    let reg = common::Registry::start(&i.dir.path().join("reg"), None);
    let name = common::skopeo_push(i.dir.path(), "oci:img:1", &reg, "debian/old:bookworm", "");
    // `run` of an image not yet here pulls it, naming the tag.
    let out = i.v(&["run", "--rm", &name, "true"]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&format!("Trying to pull {name}...")),
        "{}",
        stderr(&out)
    );

    // What the layers unpack to: their uncompressed tar sizes, from the layout umoci wrote.
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["image", "inspect", &name])).unwrap();
    let mut expected = 0u64;
    for l in v[0]["Record"]["layers"].as_array().unwrap() {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let blob = i.dir.path().join("img/blobs/sha256").join(hex);
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | wc -c", blob.display()))
            .output()
            .unwrap();
        expected += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap();
    }
    let compressed = v[0]["Record"]["size"].as_u64().unwrap();
    assert!(expected > compressed, "busybox compresses: {expected} vs {compressed}");
    assert_eq!(v[0]["Size"].as_u64(), Some(expected));
    assert_eq!(v[0]["CompressedSize"].as_u64(), Some(compressed));
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(v[0]["unpacked_size"].as_u64(), Some(expected));

    // The table: CREATED from the config (2020), SIZE the unpacked size (docker's units).
    let table = i.ok(&["images"]);
    let line = table.lines().find(|l| l.contains("debian/old")).unwrap();
    assert!(line.contains("bookworm"), "{line}");
    assert!(line.contains(" years ago"), "{line}");
    assert!(
        line.contains(&format!("{:.3} MB", expected as f64 / 1e6)),
        "{line} (expected {expected} bytes)"
    );
}

#[test]
fn rootless_import_leaves_device_nodes_out_with_a_warning() {
    if !instance::have(&["umoci", "busybox", "unshare"]) {
        return;
    }
    let Some(mm) = root_disk() else {
        eprintln!("\n!!!!! SKIPPED: the root file system is not on a block device !!!!!\n");
        return;
    };
    let i = Instance::new();
    build_device_image(i.dir.path(), &mm);
    // uid 0 of a user namespace of its own, as rootless podman runs: no CAP_MKNOD there.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", env!("CARGO_BIN_EXE_vessel"), "--root"])
        .arg(i.root())
        .args(["image", "import"])
        .arg(format!("oci:{}:dev", i.dir.path().join("img").display()))
        .arg("localhost/devs:1")
        .output()
        .unwrap();
    let e = stderr(&out);
    assert!(out.status.success(), "{e}");
    assert!(e.contains("WARNING: layer sha256:"), "{e}");
    assert!(e.contains(": 5 device node(s) left out"), "{e}");
    assert!(in_snapshots(&i.root(), "disk").is_empty());
    assert!(in_snapshots(&i.root(), "dev/null").is_empty());
    assert!(in_snapshots(&i.root(), "bin/busybox")[0].is_file());
}
