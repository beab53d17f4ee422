//! `vessel pull` of a multi-arch image index pushed by `skopeo copy --all` to a real registry
//! on 127.0.0.1 (linux/amd64: the busybox image built by umoci; linux/arm64: a second image
//! with its own layer), `--platform` choosing, and `vessel image import docker-archive:FILE`
//! of what `skopeo copy` wrote; unpacked images are compared with `umoci unpack`.

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod run_vessel;

use std::path::Path;
use std::process::Output;

use run_vessel::vessel;

use common::{
    add_index, assert_blobs_verified, assert_v2_shape, build_image, compare_mounted, have, sh, skopeo_push, Registry,
};
use vessel_image::{records, Store};

fn inspect(root: &Path, image: &str) -> serde_json::Value {
    let out = vessel(root, &["image", "inspect", image]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

fn pulled_id(out: &Output) -> String {
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    id
}

/// Builds (in `dir`) `img:v2` ([`build_image`]), `img:arm` (linux/arm64, one layer with a
/// marker file) and the OCI index `img:multi` listing both; returns the index digest.
fn build_multi(dir: &Path) -> vessel_image::Digest {
    build_image(dir);
    // The arm64 image: its own config (architecture arm64) and one layer with a marker file.
    sh(
        "umoci new --image img:arm && umoci config --image img:arm --os linux --architecture arm64 --config.cmd sh \
         && umoci unpack --image img:arm a >/dev/null && mkdir a/rootfs/etc && echo arm64 > a/rootfs/only-arm64 \
         && echo arm > a/rootfs/etc/motd && umoci repack --image img:arm a && rm -rf a",
        dir,
    );
    add_index(
        &dir.join("img"),
        "multi",
        &[("v2", "linux", "amd64"), ("arm", "linux", "arm64")],
    )
}

#[test]
fn pull_platform_from_index() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let index = build_multi(t.path());
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = skopeo_push(t.path(), "oci:img:multi", &reg, "multi/bb:1", "--all");
    check_platform_choice(t.path(), &name, &index, "application/vnd.oci.image.manifest.v1+json");
}

/// The same multi-arch image pushed as a Docker schema2 manifest list (skopeo 1.9 converts the
/// OCI index and its manifests with `--all --format v2s2`): the same platform choice.
#[test]
fn pull_platform_from_docker_manifest_list() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox", "curl"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_multi(t.path());
    let reg = Registry::start(&t.path().join("reg"), None);
    let name = skopeo_push(
        t.path(),
        "oci:img:multi",
        &reg,
        "dockerlist/bb:1",
        "--all --format v2s2",
    );
    // What the registry serves is a Docker list of Docker manifests.
    let list = common::sh_out(
        &format!("curl -sSf -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' http://{}/v2/dockerlist/bb/manifests/1", reg.addr),
        t.path(),
    );
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        v["mediaType"], "application/vnd.docker.distribution.manifest.list.v2+json",
        "{list}"
    );
    assert_eq!(
        v["manifests"][0]["mediaType"], "application/vnd.docker.distribution.manifest.v2+json",
        "{list}"
    );
    let list_digest = vessel_image::Digest::of_bytes(list.as_bytes());
    check_platform_choice(
        t.path(),
        &name,
        &list_digest,
        "application/vnd.docker.distribution.manifest.v2+json",
    );
}

/// Pulls `name` (an index or list of [`build_multi`]'s two images, digest `index`) for the host
/// platform, then with `--platform linux/arm64`, then for a platform it lacks; compares the
/// unpacked images with umoci's.
fn check_platform_choice(dir: &Path, name: &str, index: &vessel_image::Digest, manifest_type: &str) {
    let t = dir;
    let root = t.join("root");

    // The host's platform (amd64) by default.
    let amd = pulled_id(&vessel(&root, &["pull", name]));
    let v = inspect(&root, name);
    assert_eq!(v["Id"], amd.as_str());
    assert_eq!(v["Config"]["architecture"], "amd64");
    assert_eq!(v["Platform"], "linux/amd64");
    assert_eq!(v["Record"]["index"], index.to_string().as_str());
    assert_eq!(v["Record"]["manifest_media_type"], manifest_type);
    let store = Store::open(&root).unwrap();
    let rec = records::find_image(&store, &amd).unwrap();
    assert_v2_shape(&compare_mounted(&store, &rec, &t.join("expected/rootfs"), "amd"));

    // --platform picks the other manifest; the name moves to it (as docker and podman do).
    let arm = pulled_id(&vessel(&root, &["pull", "--platform", "linux/arm64", name]));
    assert_ne!(arm, amd);
    let v = inspect(&root, &arm);
    assert_eq!(v["Config"]["architecture"], "arm64");
    assert_eq!(v["Platform"], "linux/arm64");
    assert_eq!(v["Record"]["manifest_media_type"], manifest_type);
    assert_eq!(inspect(&root, name)["Id"], arm.as_str());
    let rec = records::find_image(&store, &arm).unwrap();
    assert_eq!(rec.layers.len(), 1);
    let lowers = store.snapshots().lowers(rec.top_chain_id().unwrap()).unwrap();
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("only-arm64")).unwrap(),
        "arm64\n"
    );
    sh("umoci unpack --image img:arm arm-expected >/dev/null", t);
    compare_mounted(&store, &rec, &t.join("arm-expected/rootfs"), "arm");
    // The amd64 image stays, nameless.
    assert!(records::find_image(&store, &amd).unwrap().names.is_empty());
    assert!(store.has_blob(&vessel_image::Digest::from_hex(&amd).unwrap()));

    // A platform the index does not have: a clear error naming what it has.
    let out = vessel(&root, &["pull", "--platform", "linux/s390x", name]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux/s390x")
            && err.contains("available: linux/amd64, linux/arm64")
            && err.contains(&index.to_string()),
        "{err}"
    );
    assert!(err.contains("--platform"), "{err}");
    assert_eq!(store.images().unwrap().len(), 2);
    assert_blobs_verified(&root);
}

#[test]
fn import_docker_archive_written_by_skopeo() {
    if !have(&["skopeo", "umoci", "busybox"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    sh(
        "skopeo copy -q oci:img:v2 docker-archive:bb.tar:localhost/dockerbb:v2",
        t.path(),
    );
    let root = t.path().join("root");
    let src = format!("docker-archive:{}", t.path().join("bb.tar").display());
    let id = pulled_id(&vessel(&root, &["image", "import", &src]));
    let v = inspect(&root, "localhost/dockerbb:v2");
    assert_eq!(v["Id"], id.as_str());
    assert_eq!(v["Config"]["architecture"], "amd64");
    let store = Store::open(&root).unwrap();
    let rec = records::find_image(&store, &id).unwrap();
    // No runtime here: the image "runs" as far as its mounted root file system is umoci's.
    assert_v2_shape(&compare_mounted(&store, &rec, &t.path().join("expected/rootfs"), "c"));
    assert_blobs_verified(&root);
    // Exported as OCI and read back by umoci, it is still the same file system.
    let out = t.path().join("out");
    assert!(vessel(
        &root,
        &["image", "export", &id[..12], &format!("oci:{}:x", out.display())]
    )
    .status
    .success());
    sh("umoci unpack --image out:x fromexport >/dev/null", t.path());
    assert_eq!(
        common::tree(&t.path().join("fromexport/rootfs")),
        common::tree(&t.path().join("expected/rootfs"))
    );
}
