//! `vessel system prune` end to end, by docker's rules: stopped containers and dangling
//! images (no name left) by default, every image no container uses with `-a`. (The
//! network side of `system check` and `system reset` is in network.rs, inside a network
//! namespace of its own.)

mod instance;
mod run_vessel;

use instance::{have, Instance};
use run_vessel::sh;

/// The names of the root's images, one sorted list per image (empty: dangling).
fn images(i: &Instance) -> Vec<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(&i.ok(&["images", "--format", "json"])).unwrap();
    let mut out: Vec<Vec<String>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|img| {
            let mut n: Vec<String> = img["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        })
        .collect();
    out.sort();
    out
}

#[test]
fn system_prune_removes_dangling_images_and_with_a_every_unused_one() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    // Two more images from the same layout (other configs): one takes the name
    // localhost/bb:1, so the first image is left without a name (dangling).
    sh(
        "umoci config --image img:1 --tag 2 --config.env X=2 && umoci config --image img:1 --tag 3 --config.env X=3",
        i.dir.path(),
    );
    let layout = i.dir.path().join("img");
    i.ok(&["image", "import", &format!("oci:{}:2", layout.display()), img]);
    i.ok(&[
        "image",
        "import",
        &format!("oci:{}:3", layout.display()),
        "localhost/used:1",
    ]);
    let bb = "localhost/bb:1".to_string();
    let used = "localhost/used:1".to_string();
    assert_eq!(images(&i), vec![vec![], vec![bb.clone()], vec![used.clone()]]);
    i.ok(&["run", "-d", "--name", "keep", &used, "sleep", "1000"]);
    i.ok(&["run", "--name", "stopped", img, "true"]);
    // Default: the stopped container and the dangling image; named images stay.
    let out = i.ok(&["system", "prune", "-f"]);
    assert!(out.contains("Deleted containers: 1\n  stopped\n"), "{out}");
    assert!(out.contains("Deleted images: 1\n"), "{out}");
    assert_eq!(images(&i), vec![vec![bb.clone()], vec![used.clone()]]);
    assert_eq!(i.ok(&["ps", "-a", "--format", "json"]).matches("\"keep\"").count(), 1);
    // -a: every image no container uses; the running container's stays.
    let out = i.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains(&format!("Deleted images: 1\n  {bb}\n")), "{out}");
    assert_eq!(images(&i), vec![vec![used.clone()]]);
    i.ok(&["rm", "-f", "keep"]);
    i.ok(&["system", "prune", "-a"]);
    assert!(images(&i).is_empty());
}
