//! A `vessel pull` killed (SIGKILL) part way through a large layer: the store keeps no blob
//! under its final name that does not hash to it, no half snapshot as a committed one, no
//! image record; the next pull restarts cleanly (removing the dead pull's leftovers) and the
//! image's mounted root file system is umoci's.

#[path = "../../image/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_blobs_verified, assert_v2_shape, build_image, compare_mounted, have, sh, skopeo_push, tree, Registry, Tree,
};
use vessel_image::{records, Store};

/// Size of the random (incompressible) file in the top layer, MiB.
const BIG_MB: u64 = 48;

/// Kills (SIGKILL, by pid) and reaps the child on drop: a failing test leaves no pull running.
struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn entries(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().map(|m| m.len()).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The committed layer snapshots (`snapshots/<64 hex>`) and their trees.
fn committed_snapshots(root: &Path) -> BTreeMap<String, Tree> {
    let mut out = BTreeMap::new();
    for (name, _) in entries(&root.join("snapshots")) {
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            let fs_dir = root.join("snapshots").join(&name).join("fs");
            assert!(fs_dir.is_dir(), "snapshot {name} is committed without its fs/ dir");
            out.insert(name, tree(&fs_dir));
        }
    }
    out
}

#[test]
fn killed_pull_leaves_no_half_content_and_the_next_pull_completes() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    sh(
        &format!(
            "umoci unpack --image img:v2 b >/dev/null && head -c {}M /dev/urandom > b/rootfs/big.bin \
             && umoci repack --image img:big b && rm -rf b && umoci unpack --image img:big expected-big >/dev/null",
            BIG_MB
        ),
        t.path(),
    );
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = skopeo_push(t.path(), "oci:img:big", &reg, "big/bb:1", "");
    let root = t.path().join("root");
    let vessel = env!("CARGO_BIN_EXE_vessel");

    // Start the pull, kill it once a few MB of the big layer are in a temporary blob.
    let child = Command::new(vessel)
        .arg("--root")
        .arg(&root)
        .args(["pull", "-q", &name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let start = Instant::now();
    loop {
        if entries(&root.join("content/tmp"))
            .iter()
            .any(|(_, size)| *size >= 8 << 20)
        {
            break;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the pull ended ({status}) before it could be killed part way");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no partial blob appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success());
    eprintln!("killed after {:?}", start.elapsed());

    // What the dead pull left: partial blob and half unpack under tmp/ only.
    assert!(!entries(&root.join("content/tmp")).is_empty());
    assert!(!entries(&root.join("snapshots/tmp")).is_empty());
    assert_blobs_verified(&root);
    let blobs_before = entries(&root.join("content/blobs/sha256"));
    let snaps_before = committed_snapshots(&root);
    eprintln!(
        "after the kill: {} blobs, {} committed snapshots",
        blobs_before.len(),
        snaps_before.len()
    );
    let store = Store::open(&root).unwrap();
    assert!(store.images().unwrap().is_empty(), "a killed pull recorded an image");

    // The next pull completes.
    let out = Command::new(vessel)
        .arg("--root")
        .arg(&root)
        .args(["pull", &name])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("second pull: {}\n{stderr}", out.status);
    assert!(out.status.success());
    let rec = records::find_image(&store, &name).unwrap();
    assert_eq!(rec.layers.len(), 3);
    let big = &rec.layers[2];
    assert!(
        !blobs_before.iter().any(|(n, _)| n == big.digest.hex()),
        "the big layer's blob was published by the killed pull"
    );
    // Snapshots committed before the kill were whole: they are the image's and unchanged.
    for (id, before) in &snaps_before {
        assert!(
            rec.layers.iter().any(|l| l.chain_id.hex() == id),
            "snapshot {id} is not one of the image's"
        );
        assert_eq!(&tree(&root.join("snapshots").join(id).join("fs")), before);
    }
    assert_eq!(
        stderr.matches("already present").count(),
        snaps_before.len(),
        "layers with a committed snapshot are reused"
    );
    // The dead pull's leftovers are gone; the store holds only verified blobs.
    assert_eq!(entries(&root.join("content/tmp")), vec![]);
    assert_eq!(entries(&root.join("snapshots/tmp")), vec![]);
    assert_blobs_verified(&root);
    let got = compare_mounted(&store, &rec, &t.path().join("expected-big/rootfs"), "c");
    assert_v2_shape(&got);
    assert!(got.contains_key("big.bin"));
}

/// Starts `vessel pull -q NAME` and waits until a partial blob of at least 8 MiB is in
/// `content/tmp`.
fn pull_until_partial(vessel: &str, root: &Path, name: &str) -> KillOnDrop {
    let child = Command::new(vessel)
        .arg("--root")
        .arg(root)
        .args(["pull", "-q", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let start = Instant::now();
    while !entries(&root.join("content/tmp"))
        .iter()
        .any(|(_, size)| *size >= 8 << 20)
    {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("the pull ended ({status}) before it could be stopped part way");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no partial blob appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Sizes of the regular files under `dir`, bytes.
fn file_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    let m = fs::symlink_metadata(e.path()).unwrap();
                    if m.is_dir() {
                        file_bytes(&e.path())
                    } else if m.is_file() {
                        m.len()
                    } else {
                        0
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn partial_bytes(root: &Path) -> u64 {
    file_bytes(&root.join("content/tmp")) + file_bytes(&root.join("snapshots/tmp"))
}

fn vessel_out(vessel: &str, root: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(vessel)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "vessel {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn system_check_and_image_prune_find_and_free_a_killed_pulls_partial_files_but_not_a_running_ones() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    sh(
        &format!(
            "umoci unpack --image img:v2 b >/dev/null && head -c {BIG_MB}M /dev/urandom > b/rootfs/big.bin \
             && umoci repack --image img:big b && rm -rf b"
        ),
        t.path(),
    );
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = skopeo_push(t.path(), "oci:img:big", &reg, "big/bb:1", "");
    let root = t.path().join("root");
    let vessel = env!("CARGO_BIN_EXE_vessel");

    // A pull killed late: its partial files are found (dry run: reported, kept) and removed.
    let mut child = pull_until_partial(vessel, &root, &name);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let left = partial_bytes(&root);
    assert!(left >= 8 << 20);
    let out = vessel_out(vessel, &root, &["system", "check", "--dry-run"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("partial files of unfinished pulls"), "{report}");
    assert!(report.contains(&format!("({left} bytes)")), "{report}");
    assert_eq!(partial_bytes(&root), left, "a dry run removed something");
    let out = vessel_out(vessel, &root, &["system", "check"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "({left} bytes), under content/tmp and snapshots/tmp: repaired"
    )));
    assert_eq!(entries(&root.join("content/tmp")), vec![]);
    assert_eq!(entries(&root.join("snapshots/tmp")), vec![]);
    let out = vessel_out(vessel, &root, &["system", "check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));

    // Another, killed too: `image prune` frees it and says how much.
    let mut child = pull_until_partial(vessel, &root, &name);
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let left = partial_bytes(&root);
    let out = vessel_out(vessel, &root, &["image", "prune", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["partials"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        v["bytes"].as_u64().unwrap() >= left,
        "{v} (partial files: {left} bytes)"
    );
    assert_eq!(partial_bytes(&root), 0);

    // A pull running now (stopped part way, so that it is surely still running): its files
    // are not partial for check or another pull; continued, it completes.
    let mut child = pull_until_partial(vessel, &root, &name);
    let pid = child.0.id() as i32;
    // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let running = (entries(&root.join("content/tmp")), entries(&root.join("snapshots/tmp")));
    let out = vessel_out(vessel, &root, &["system", "check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no problems found"));
    // (prune waits for running pulls: another pull, which clears partial files as it starts.)
    let small = skopeo_push(t.path(), "oci:img:v2", &reg, "small/bb:1", "");
    assert!(vessel_out(vessel, &root, &["pull", "-q", &small]).status.success());
    assert_eq!(
        (entries(&root.join("content/tmp")), entries(&root.join("snapshots/tmp"))),
        running
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the running pull failed: {status}");
    let store = Store::open(&root).unwrap();
    assert!(records::find_image(&store, &name).is_ok());
    assert_blobs_verified(&root);
}
