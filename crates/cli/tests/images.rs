//! The `vessel` image commands end to end: a real registry on 127.0.0.1 (docker-registry), an
//! image made by umoci and pushed by skopeo; pull, images, inspect, export, import, rmi, prune.

mod run_vessel;

use run_vessel::{sh, vessel};
use std::fs;
use std::net::TcpListener;
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
