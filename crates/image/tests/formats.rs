//! Layer compressions and archive formats made by other tools: the same umoci image pushed
//! by skopeo with gzip and with zstd layers, and pushed byte for byte with uncompressed
//! layers; `skopeo copy` to a docker-archive imported. Each unpacked, overlay-mounted root
//! file system is compared file by file with `umoci unpack` of the image.

mod common;

use std::fs;
use std::sync::Arc;

use common::{
    assert_blobs_verified, assert_v2_shape, build_image, compare_mounted, have, push, push_dir_raw, rt, sh,
    skopeo_push, Registry,
};
use vessel_image::pull::{pull, NoProgress, PullOptions};
use vessel_image::{layout, ImageRecord, Reference, Store};

fn pull_into(root: &std::path::Path, name: &str) -> (Store, ImageRecord) {
    let store = Store::open(root).unwrap();
    let r = Reference::parse(name).unwrap();
    let rec = rt()
        .block_on(pull(&store, &r, &PullOptions::default(), Arc::new(NoProgress)))
        .unwrap();
    (store, rec)
}

#[test]
fn zstd_and_uncompressed_layers_unpack_like_gzip() {
    if !have(&["docker-registry", "skopeo", "umoci", "curl"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    let expected = t.path().join("expected/rootfs");
    let reg = Registry::start(&t.path().join("reg"), None);
    let gz_name = push(t.path(), &reg, "fmt/bb:gzip", None);
    // skopeo 1.9 reuses a blob the registry has in another compression instead of recompressing
    // (its blob-info cache maps the diff ids to the gzip blobs): zstd gets its own registry.
    let zreg = Registry::start(&t.path().join("zreg"), None);
    let zst_name = skopeo_push(
        t.path(),
        "oci:img:v2",
        &zreg,
        "fmt/bb:zstd",
        "--dest-compress-format zstd",
    );
    // skopeo recompresses uncompressed layers on the way to a registry: write them to a
    // dir: copy decompressed and push those bytes as they are.
    sh("skopeo copy -q --dest-decompress oci:img:v2 dir:raw", t.path());
    let raw_name = push_dir_raw(t.path(), "raw", &reg, "fmt/bb", "raw");

    let (gz_store, gz) = pull_into(&t.path().join("root-gzip"), &gz_name);
    let gz_tree = compare_mounted(&gz_store, &gz, &expected, "gz");
    assert_v2_shape(&gz_tree);

    let (zst_store, zst) = pull_into(&t.path().join("root-zstd"), &zst_name);
    let (raw_store, raw) = pull_into(&t.path().join("root-raw"), &raw_name);
    for (rec, store, suffix, magic) in [
        (&zst, &zst_store, "+zstd", &[0x28u8, 0xb5, 0x2f, 0xfd][..]),
        (&raw, &raw_store, "layer.v1.tar", &b""[..]),
    ] {
        assert_eq!(rec.layers.len(), 2);
        // Same config (diff ids are of the uncompressed tars), other blobs, same snapshots.
        assert_eq!(rec.id, gz.id);
        assert_ne!(rec.manifest, gz.manifest);
        for (l, g) in rec.layers.iter().zip(&gz.layers) {
            assert!(l.media_type.ends_with(suffix), "{} is not {suffix}", l.media_type);
            assert_ne!(l.digest, g.digest);
            assert_eq!((&l.diff_id, &l.chain_id), (&g.diff_id, &g.chain_id));
            let blob = fs::read(store.blob_path(&l.digest)).unwrap();
            assert!(blob.starts_with(magic));
            if magic.is_empty() {
                // An uncompressed layer's blob is its own diff id.
                assert_eq!(l.digest, l.diff_id);
            }
        }
        assert_blobs_verified(store.root());
    }
    let zst_tree = compare_mounted(&zst_store, &zst, &expected, "zst");
    let raw_tree = compare_mounted(&raw_store, &raw, &expected, "raw");
    assert_eq!(zst_tree, gz_tree);
    assert_eq!(raw_tree, gz_tree);
}

#[test]
fn docker_archive_import_matches_umoci_unpack() {
    if !have(&["skopeo", "umoci"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    sh(
        "skopeo copy -q oci:img:v2 docker-archive:bb.tar:localhost/dockerbb:v2",
        t.path(),
    );
    let store = Store::open(t.path().join("root")).unwrap();
    let loc = layout::Location::parse(&format!("docker-archive:{}", t.path().join("bb.tar").display())).unwrap();
    let rec = layout::import(&store, &loc, None, None).unwrap();
    assert_eq!(rec.names, vec!["localhost/dockerbb:v2".to_string()]);
    assert_eq!(rec.layers.len(), 2);
    assert_eq!(rec.platform, "linux/amd64");
    assert_v2_shape(&compare_mounted(&store, &rec, &t.path().join("expected/rootfs"), "da"));
    assert_blobs_verified(store.root());
    // A second import of the same archive finds everything present and changes nothing.
    let again = layout::import(&store, &loc, Some("localhost/other:1"), None).unwrap();
    assert_eq!(again.id, rec.id);
    assert_eq!(
        again.names,
        vec!["localhost/dockerbb:v2".to_string(), "localhost/other:1".to_string()]
    );
}
