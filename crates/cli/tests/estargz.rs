//! eStargz images written by vessel (`vessel image convert --estargz`), pushed to a real
//! registry on 127.0.0.1 (docker-registry) with `vessel push`, read back by an independent
//! reader (Python's gzip/tarfile/zlib: tests/estargz_check/check.py checks the tar stream,
//! diff id, footer, TOC digest and every chunk digest) and by vessel's own lazy pull.

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod instance;
mod run_vessel;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::Registry;
use instance::{have, stderr, stdout, wait_for, Instance};

const TOC_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
const SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";

/// Kills (SIGKILL, by pid) the `vessel-lazy` servers of an instance and detaches their
/// mounts, when dropped.
struct Servers(PathBuf);
impl Drop for Servers {
    fn drop(&mut self) {
        let Ok(rd) = fs::read_dir(self.0.join("snapshots/lazy")) else {
            return;
        };
        for e in rd.flatten() {
            let pid: Option<i32> = fs::read_to_string(e.path().join("serve.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            if let Some(pid) = pid {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "vessel-lazy" {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    wait_for("a killed server to end", || {
                        fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
                    });
                }
            }
            let _ = Command::new("umount")
                .arg("-l")
                .arg(e.path().join("mnt"))
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ready() -> bool {
    have(&["docker-registry", "umoci", "python3"])
}

/// A busybox image with /etc/hello, /etc/other and a 5 MiB /data/big, imported as
/// `localhost/src:1`.
fn source_image(inst: &Instance) -> &'static str {
    common::sh(
        "umoci init --layout img && umoci new --image img:1 \
         && umoci config --image img:1 --config.cmd sh --config.env PATH=/bin \
         && umoci unpack --image img:1 b >/dev/null && mkdir -p b/rootfs/bin b/rootfs/etc b/rootfs/data \
         && cp /usr/bin/busybox b/rootfs/bin/ && for t in sh cat sha256sum head wc; do ln -s busybox b/rootfs/bin/$t; done \
         && echo 'hello from vessel estargz' > b/rootfs/etc/hello && echo other > b/rootfs/etc/other \
         && ln b/rootfs/etc/hello b/rootfs/etc/hello.link && mkfifo b/rootfs/data/fifo \
         && head -c 5242880 /dev/urandom > b/rootfs/data/big \
         && umoci repack --image img:1 b && rm -rf b",
        inst.dir.path(),
    );
    let src = format!("oci:{}:1", inst.dir.path().join("img").display());
    inst.ok(&["image", "import", &src, "localhost/src:1"]);
    "localhost/src:1"
}

/// The image's manifest and config, from `vessel image inspect`.
fn inspect(inst: &Instance, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&inst.ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

/// Runs the independent reader on a layer blob; its TOC lines (`TYPE NAME CHUNKOFFSET`).
fn check_blob(blob: &Path, diff_id: &str, toc_digest: &str) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/estargz_check/check.py");
    let out: Output = Command::new("python3")
        .arg(script)
        .arg(blob)
        .arg(diff_id)
        .arg(toc_digest)
        .output()
        .unwrap();
    assert!(out.status.success(), "check.py: {}", stderr(&out));
    stdout(&out).lines().map(String::from).collect()
}

#[test]
fn convert_estargz_push_lazy_pull_and_independent_reader() {
    if !ready() {
        eprintln!("skipped: docker-registry, umoci or python3 missing");
        return;
    }
    let inst = Instance::new();
    let reg = Registry::start(inst.dir.path(), None);
    let src = source_image(&inst);
    let dest = format!("{}/esgz/conv:1", reg.addr);
    inst.ok(&[
        "image",
        "convert",
        "--estargz",
        "--estargz-chunk-size",
        "1048576",
        src,
        &dest,
    ]);
    let img = inspect(&inst, &dest);
    let layer = &img["Manifest"]["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let toc_digest = layer["annotations"][TOC_ANNOTATION].as_str().unwrap().to_string();
    assert!(
        layer["annotations"][SIZE_ANNOTATION]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 5 << 20
    );
    let diff_id = img["Record"]["layers"][0]["diff_id"].as_str().unwrap().to_string();
    let digest = vessel_image::Digest::parse(layer["digest"].as_str().unwrap()).unwrap();

    // The local blob, read by another reader than ours.
    let blob = inst.root().join("content/blobs/sha256").join(digest.hex());
    let toc = check_blob(&blob, &diff_id, &toc_digest);
    assert_eq!(toc[0], "reg .no.prefetch.landmark 0", "no prioritized files: {toc:?}");
    assert!(toc.contains(&"hardlink etc/hello.link 0".to_string()), "{toc:?}");
    assert!(toc.contains(&"fifo data/fifo 0".to_string()), "{toc:?}");
    assert!(toc.contains(&"symlink bin/sh 0".to_string()), "{toc:?}");
    let big: Vec<&String> = toc.iter().filter(|l| l.contains(" data/big ")).collect();
    assert_eq!(big.len(), 5, "5 chunks of 1 MiB: {toc:?}");
    assert_eq!(big[4], &format!("chunk data/big {}", 4 << 20));

    // The converted image runs locally (its layers were unpacked from the new blobs).
    let out = inst.ok(&["run", "--rm", "--network", "none", &dest, "cat", "/etc/hello"]);
    assert_eq!(out, "hello from vessel estargz\n");

    // Pushed, the annotations survive on the registry's manifest.
    let out = inst.v(&["push", &dest]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(reg.blob_file(&digest).is_file());

    // A lazy pull by another vessel instance: the layer is served through FUSE from the
    // TOC (no background fetch, so every byte read comes through range requests).
    let other = Instance::new();
    let servers = Servers(other.root());
    let env = [("VESSEL_LAZY_BACKGROUND", "0")];
    let run = |args: &[&str]| {
        let o = other.cmd().envs(env).args(args).output().unwrap();
        eprintln!("vessel {args:?}: {}\n{}{}", o.status, stdout(&o), stderr(&o));
        o
    };
    let out = run(&[
        "run",
        "--lazy",
        "--rm",
        "--network",
        "none",
        &dest,
        "cat",
        "/etc/hello.link",
    ]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello from vessel estargz\n");
    let v: serde_json::Value = serde_json::from_str(&stdout(&run(&["image", "inspect", &dest]))).unwrap();
    assert_eq!(v[0]["Lazy"]["State"], "lazy");
    assert_eq!(v[0]["Manifest"]["layers"][0]["annotations"][TOC_ANNOTATION], toc_digest);
    let out = run(&["run", "--rm", "--network", "none", &dest, "sha256sum", "/data/big"]);
    assert!(out.status.success());
    let local = inst.ok(&["run", "--rm", "--network", "none", &dest, "sha256sum", "/data/big"]);
    assert_eq!(stdout(&out), local, "the lazily read file is the converted one");
    drop(servers);
}

#[test]
fn optimize_puts_the_files_read_first_then_the_prefetch_landmark() {
    if !ready() {
        eprintln!("skipped: docker-registry, umoci or python3 missing");
        return;
    }
    let inst = Instance::new();
    let reg = Registry::start(inst.dir.path(), None);
    let src = source_image(&inst);
    let dest = format!("{}/esgz/opt:1", reg.addr);
    // The command reads two known files (and busybox is executed).
    inst.ok(&[
        "image",
        "optimize",
        "--period",
        "5",
        "--estargz-chunk-size",
        "1048576",
        src,
        &dest,
        "--",
        "sh",
        "-c",
        "cat /etc/other /data/big > /dev/null",
    ]);
    assert!(inst.left("containers") == 0, "the recording container was removed");
    let img = inspect(&inst, &dest);
    let layer = &img["Manifest"]["layers"][0];
    let toc_digest = layer["annotations"][TOC_ANNOTATION].as_str().unwrap().to_string();
    let diff_id = img["Record"]["layers"][0]["diff_id"].as_str().unwrap().to_string();
    let digest = vessel_image::Digest::parse(layer["digest"].as_str().unwrap()).unwrap();
    let blob = inst.root().join("content/blobs/sha256").join(digest.hex());
    let toc = check_blob(&blob, &diff_id, &toc_digest);
    let mark = toc
        .iter()
        .position(|l| l == "reg .prefetch.landmark 0")
        .unwrap_or_else(|| panic!("no prefetch landmark: {toc:?}"));
    let first: Vec<&str> = toc[..mark]
        .iter()
        .filter(|l| l.starts_with("reg "))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(first, ["bin/busybox", "etc/other", "data/big"], "{toc:?}");
    // Their parent directories come before them; data/big's chunks right before the mark.
    assert!(toc[..mark].contains(&"dir data 0".to_string()), "{toc:?}");
    assert_eq!(toc[mark - 1], format!("chunk data/big {}", 4 << 20));
    assert!(toc[mark + 1..].contains(&"reg etc/hello 0".to_string()));
    assert!(!toc.iter().any(|l| l.contains(".no.prefetch.landmark")));

    // A lazy run of the pushed image (prefetch and background fetch on) reads them.
    inst.ok(&["push", &dest]);
    let other = Instance::new();
    let servers = Servers(other.root());
    let out = other.ok(&["run", "--lazy", "--rm", "--network", "none", &dest, "cat", "/etc/other"]);
    assert_eq!(out, "other\n");
    drop(servers);
}
