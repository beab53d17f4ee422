//! Unpacking untrusted layers: every escape is refused and nothing outside the snapshot
//! directory changes; whiteouts, modes, ownership, times and xattrs are kept.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use vessel_image::unpack::{unpack_tar, DeviceNodes, UnpackOptions};
use vessel_image::ImageError;

/// One tar entry, with a raw name (so `..` and absolute names can be written).
enum E<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    Char(&'a str),
}

fn tar(entries: &[E]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_old();
        let (name, data): (&str, &[u8]) = match e {
            E::File(n, d, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                (n, d)
            }
            E::Dir(n) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (n, b"")
            }
            E::Symlink(n, t) | E::Hardlink(n, t) => {
                h.set_entry_type(if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                h.set_mode(0o777);
                let lb = &mut h.as_old_mut().linkname;
                lb[..t.len()].copy_from_slice(t.as_bytes());
                (n, b"")
            }
            E::Char(n) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                (n, b"")
            }
        };
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_uid(1234);
        h.set_gid(4321);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A snapshot dir `layer/` beside an `outside/` dir holding a file, and a listing of the
/// whole temp dir outside `layer/` to compare after.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("layer")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/file"), b"precious").unwrap();
        Scene { dir }
    }
    fn layer(&self) -> std::path::PathBuf {
        self.dir.path().join("layer")
    }
    fn outside_state(&self) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
        let mut m = BTreeMap::new();
        fn walk(p: &Path, base: &Path, skip: &Path, m: &mut BTreeMap<String, (u32, u64, Vec<u8>)>) {
            for e in fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if path == skip {
                    continue;
                }
                let md = fs::symlink_metadata(&path).unwrap();
                let data = if md.is_file() {
                    fs::read(&path).unwrap()
                } else {
                    Vec::new()
                };
                m.insert(
                    path.strip_prefix(base).unwrap().display().to_string(),
                    (md.mode(), md.mtime() as u64, data),
                );
                if md.is_dir() {
                    walk(&path, base, skip, m);
                }
            }
        }
        walk(self.dir.path(), self.dir.path(), &self.layer(), &mut m);
        m
    }
    fn unpack(&self, entries: &[E], opts: &UnpackOptions) -> vessel_image::Result<vessel_image::unpack::UnpackStats> {
        let data = tar(entries);
        unpack_tar(&data[..], &self.layer(), opts, "test layer", "uncompressed")
    }
}

fn assert_refused(entries: &[E], what: &str) {
    let s = Scene::new();
    let before = s.outside_state();
    let r = s.unpack(entries, &UnpackOptions::default());
    match r {
        Err(ImageError::UnsafeEntry { ref entry, ref reason }) => eprintln!("{what}: refused {entry:?}: {reason}"),
        other => panic!("{what}: expected UnsafeEntry, got {other:?}"),
    }
    assert_eq!(s.outside_state(), before, "{what}: something outside the layer changed");
    assert_eq!(fs::read(s.dir.path().join("outside/file")).unwrap(), b"precious");
}

#[test]
fn dotdot_entry_is_refused() {
    assert_refused(&[E::File("../outside/file", b"pwned", 0o644)], "..");
    assert_refused(&[E::File("a/../../evil", b"pwned", 0o644)], "a/../..");
}

#[test]
fn absolute_entry_is_refused() {
    let s = Scene::new();
    let abs = format!("{}/outside/abs", s.dir.path().display());
    drop(s);
    assert_refused(&[E::File(Box::leak(abs.into_boxed_str()), b"pwned", 0o644)], "absolute");
}

#[test]
fn write_through_symlink_leading_out_is_refused() {
    let s = Scene::new();
    let outside = format!("{}/outside", s.dir.path().display());
    let before = s.outside_state();
    let r = s.unpack(
        &[E::Symlink("link", &outside), E::File("link/file", b"pwned", 0o644)],
        &UnpackOptions::default(),
    );
    assert!(matches!(r, Err(ImageError::UnsafeEntry { .. })), "{r:?}");
    assert_eq!(s.outside_state(), before);
    // Relative escapes too.
    assert_refused(
        &[E::Symlink("up", "../outside"), E::File("up/new", b"pwned", 0o644)],
        "relative symlink out",
    );
    assert_refused(
        &[
            E::Dir("d"),
            E::Symlink("d/up", "../../../../../"),
            E::File("d/up/tmp/x", b"p", 0o644),
        ],
        "deep",
    );
}

#[test]
fn file_replacing_an_outward_symlink_does_not_write_through_it() {
    let s = Scene::new();
    let target = format!("{}/outside/file", s.dir.path().display());
    let before = s.outside_state();
    s.unpack(
        &[E::Symlink("f", &target), E::File("f", b"new", 0o644)],
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(s.outside_state(), before);
    let md = fs::symlink_metadata(s.layer().join("f")).unwrap();
    assert!(md.is_file());
    assert_eq!(fs::read(s.layer().join("f")).unwrap(), b"new");
}

#[test]
fn hardlink_to_outside_is_refused() {
    assert_refused(&[E::Hardlink("hl", "../outside/file")], "hardlink ..");
    let s = Scene::new();
    let abs = format!("{}/outside/file", s.dir.path().display());
    drop(s);
    assert_refused(
        &[E::Hardlink("hl", Box::leak(abs.into_boxed_str()))],
        "hardlink absolute",
    );
    let s = Scene::new();
    let outside = format!("{}/outside", s.dir.path().display());
    drop(s);
    assert_refused(
        &[
            E::Symlink("l", Box::leak(outside.into_boxed_str())),
            E::Hardlink("hl", "l/file"),
        ],
        "hardlink through symlink",
    );
}

#[test]
fn hardlink_inside_works() {
    let s = Scene::new();
    s.unpack(
        &[E::File("a", b"data", 0o644), E::Hardlink("b", "a")],
        &UnpackOptions::default(),
    )
    .unwrap();
    let (a, b) = (
        fs::metadata(s.layer().join("a")).unwrap(),
        fs::metadata(s.layer().join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn device_nodes_only_when_allowed() {
    assert_refused(&[E::Char("dev/evil")], "char device");
    let s = Scene::new();
    let opts = UnpackOptions {
        devices: DeviceNodes::Create,
        ..Default::default()
    };
    s.unpack(&[E::Char("null")], &opts).unwrap();
    assert!(fs::symlink_metadata(s.layer().join("null"))
        .unwrap()
        .file_type()
        .is_char_device());
    // Rootless: skipped and counted, the rest of the layer unpacked.
    let s = Scene::new();
    let opts = UnpackOptions {
        devices: DeviceNodes::Skip,
        ..Default::default()
    };
    let stats = s
        .unpack(&[E::Char("dev/null"), E::File("f", b"x", 0o644)], &opts)
        .unwrap();
    assert_eq!(stats.skipped_devices, 1);
    assert!(fs::symlink_metadata(s.layer().join("dev/null")).is_err());
    assert!(s.layer().join("f").is_file());
    // A device entry whose name leads out is refused even when devices are allowed.
    for devices in [DeviceNodes::Create, DeviceNodes::Skip] {
        let s = Scene::new();
        let opts = UnpackOptions {
            devices,
            ..Default::default()
        };
        assert!(s.unpack(&[E::Char("../evil")], &opts).is_err());
    }
}

#[test]
fn setuid_kept_only_when_asked() {
    let s = Scene::new();
    s.unpack(&[E::File("su", b"x", 0o4755)], &UnpackOptions::default())
        .unwrap();
    assert_eq!(
        fs::metadata(s.layer().join("su")).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    let s = Scene::new();
    s.unpack(
        &[E::File("su", b"x", 0o4755)],
        &UnpackOptions {
            keep_setuid: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs::metadata(s.layer().join("su")).unwrap().permissions().mode() & 0o7777,
        0o4755
    );
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_metadata_is_kept() {
    let s = Scene::new();
    let st = s
        .unpack(
            &[
                E::Dir("etc"),
                E::File("etc/.wh.passwd", b"", 0o644),
                E::Dir("opq"),
                E::File("opq/.wh..wh..opq", b"", 0o644),
                E::File("opq/new", b"n", 0o640),
                E::Symlink("etc/sh", "/bin/busybox"),
            ],
            &UnpackOptions::default(),
        )
        .unwrap();
    assert_eq!((st.whiteouts, st.opaque_dirs), (1, 1));
    let wh = fs::symlink_metadata(s.layer().join("etc/passwd")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!s.layer().join("etc/.wh.passwd").exists());
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(s.layer().join("opq"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    let md = fs::metadata(s.layer().join("opq/new")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777, md.mtime()),
        (1234, 4321, 0o640, 1_600_000_000)
    );
    assert_eq!(fs::metadata(s.layer().join("opq")).unwrap().mtime(), 1_600_000_000);
    assert_eq!(
        fs::read_link(s.layer().join("etc/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
}

#[test]
fn truncated_gzip_is_a_stream_error() {
    use vessel_image::layer::{ingest_layer, Compression, LayerSpec};
    let data = tar(&[E::File("big", &vec![7u8; 200_000], 0o644)]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&data).unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() / 2];
    let root = tempfile::tempdir().unwrap();
    let store = vessel_image::Store::open(root.path()).unwrap();
    let digest = vessel_image::Digest::of_bytes(cut);
    let spec = LayerSpec {
        digest: digest.clone(),
        size: cut.len() as u64,
        compression: Compression::Gzip,
        diff_id: vessel_image::Digest::of_bytes(&data),
        chain_id: vessel_image::Digest::of_bytes(&data),
        parent: None,
    };
    let err = ingest_layer(&store, cut, &spec, true, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, ImageError::LayerStream { .. }), "{err:?}");
    assert!(err.to_string().contains(&digest.to_string()), "{err}");
    assert!(!store.has_blob(&digest));
    assert!(!store.snapshots().has(&spec.chain_id));
    assert_eq!(fs::read_dir(root.path().join("content/tmp")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.path().join("snapshots/tmp")).unwrap().count(), 0);
    // A tampered (but complete) blob: the digest check names both digests.
    let mut bad = gz.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    let spec2 = LayerSpec {
        digest: vessel_image::Digest::of_bytes(&gz),
        size: gz.len() as u64,
        ..spec
    };
    let err = ingest_layer(&store, &bad[..], &spec2, true, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    assert!(!store.has_blob(&spec2.digest));
    // And the good one goes through, zstd too.
    ingest_layer(&store, &gz[..], &spec2, true, &UnpackOptions::default()).unwrap();
    assert!(store.has_blob(&spec2.digest) && store.snapshots().has(&spec2.chain_id));
}
