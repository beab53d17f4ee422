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
