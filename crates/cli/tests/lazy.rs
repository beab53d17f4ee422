//! Lazy pulling of eStargz images from a real registry on 127.0.0.1 (docker-registry),
//! through the `vessel` binary and its `vessel-lazy` servers: a container runs before its
//! layer is complete (files are fetched with range requests when read), a tampered chunk
//! is refused (EIO and a log line), a registry that is killed gives EIO after the retry
//! time and is used again when it comes back, a killed server leaves no stuck mount and
//! its restarted container finds what was cached, the background fetch turns the layer into
//! a plain snapshot, and a plain image with `--lazy` is pulled whole.
//!
//! The eStargz blobs are made by a small writer here (gzip member per chunk, TOC
//! `stargz.index.json` at the end, 51-byte footer; containerd/stargz-snapshotter
//! docs/estargz.md).

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod instance;
mod run_vessel;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::{push_dir_raw, Registry};
use instance::{have, stderr, stdout, wait_for, Instance};

const TOC_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// Size of /data/big, bytes (6 chunks of 1 MiB).
const BIG: usize = 6 << 20;
const CHUNK: usize = 1 << 20;

fn sha(b: &[u8]) -> String {
    vessel_image::Digest::of_bytes(b).to_string()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32, link: Option<&str>) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// What goes into the test layer, in blob order.
enum Item {
    Dir(&'static str),
    File(&'static str, Vec<u8>, u32),
    Link(&'static str, &'static str),
}

/// An eStargz layer: (blob, uncompressed tar, TOC JSON, blob span of each chunk of each
/// file as (name, chunk offset, start, end)).
struct Layer {
    blob: Vec<u8>,
    plain: Vec<u8>,
    toc: Vec<u8>,
    chunks: Vec<(String, usize, usize, usize)>,
}

fn estargz(items: &[Item]) -> Layer {
    let mut blob = Vec::new();
    let mut plain = Vec::new();
    let mut entries = Vec::new();
    let mut chunks = Vec::new();
    let mut member = |blob: &mut Vec<u8>, data: &[u8]| {
        plain.extend_from_slice(data);
        blob.extend_from_slice(&gz(data));
    };
    for it in items {
        match it {
            Item::Dir(n) => {
                member(
                    &mut blob,
                    &header(&format!("{n}/"), tar::EntryType::Directory, 0, 0o755, None),
                );
                entries.push(serde_json::json!({"name": format!("{n}/"), "type": "dir", "mode": 0o755}));
            }
            Item::Link(n, to) => {
                member(&mut blob, &header(n, tar::EntryType::Symlink, 0, 0o777, Some(to)));
                entries.push(serde_json::json!({"name": n, "type": "symlink", "linkName": to, "mode": 0o777}));
            }
            Item::File(n, data, mode) => {
                member(
                    &mut blob,
                    &header(n, tar::EntryType::Regular, data.len() as u64, *mode, None),
                );
                let parts: Vec<&[u8]> = if data.is_empty() {
                    Vec::new()
                } else {
                    data.chunks(CHUNK).collect()
                };
                if parts.is_empty() {
                    entries.push(serde_json::json!({"name": n, "type": "reg", "size": 0, "mode": mode}));
                }
                for (i, part) in parts.iter().enumerate() {
                    let start = blob.len();
                    let mut d = part.to_vec();
                    if i == parts.len() - 1 {
                        d.resize(d.len().div_ceil(512) * 512, 0);
                    }
                    member(&mut blob, &d);
                    chunks.push((n.to_string(), i * CHUNK, start, blob.len()));
                    let mut e = serde_json::json!({
                        "name": n, "offset": start, "chunkOffset": i * CHUNK,
                        "chunkSize": if parts.len() > 1 { part.len() } else { 0 },
                        "chunkDigest": sha(part),
                    });
                    if i == 0 {
                        e["type"] = "reg".into();
                        e["size"] = data.len().into();
                        e["mode"] = (*mode).into();
                        e["digest"] = sha(data).into();
                    } else {
                        e["type"] = "chunk".into();
                    }
                    entries.push(e);
                }
            }
        }
    }
    let toc = serde_json::to_vec(&serde_json::json!({"version": 1, "entries": entries})).unwrap();
    let toc_offset = blob.len();
    let mut t = header(
        "stargz.index.json",
        tar::EntryType::Regular,
        toc.len() as u64,
        0o644,
        None,
    );
    t.extend_from_slice(&toc);
    t.resize(t.len().div_ceil(512) * 512 + 1024, 0);
    member(&mut blob, &t);
    let mut footer = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0];
    footer.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    footer.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(footer.len(), 51);
    blob.extend_from_slice(&footer);
    Layer {
        blob,
        plain,
        toc,
        chunks,
    }
}

/// Pseudo-random (incompressible) bytes.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The test image's layer: busybox and a few files, `/data/big` after the prefetch landmark.
fn layer() -> Layer {
    let bb = fs::read("/usr/bin/busybox").unwrap();
    estargz(&[
        Item::Dir("bin"),
        Item::File("bin/busybox", bb, 0o755),
        Item::Link("bin/sh", "busybox"),
        Item::Link("bin/cat", "busybox"),
        Item::Link("bin/sleep", "busybox"),
        Item::Link("bin/wc", "busybox"),
        Item::Dir("etc"),
        Item::File("etc/hello", b"hello from a lazy layer\n".to_vec(), 0o644),
        Item::File(".prefetch.landmark", vec![0xf], 0o644),
        Item::Dir("data"),
        Item::File("data/big", noise(BIG, 0x9e37_79b9_7f4a_7c15), 0o644),
    ])
}

/// Writes the image as a `dir:` directory (blobs by hex + manifest.json) and pushes it
/// byte for byte; `annotate`: with the TOC digest annotation (else a plain gzip image).
/// Returns (reference, the layer, its chain id hex).
fn push(tmp: &Path, reg: &Registry, repo: &str, annotate: bool) -> (String, Layer, String) {
    let l = layer();
    let d = tmp.join(format!("img-{repo}"));
    fs::create_dir_all(&d).unwrap();
    let diff_id = sha(&l.plain);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let mut layer_desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": sha(&l.blob), "size": l.blob.len(),
    });
    if annotate {
        layer_desc["annotations"] = serde_json::json!({ TOC_ANNOTATION: sha(&l.toc) });
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [layer_desc],
    }))
    .unwrap();
    for b in [&l.blob, &config] {
        fs::write(d.join(&sha(b)[7..]), b).unwrap();
    }
    fs::write(d.join("manifest.json"), manifest).unwrap();
    let name = push_dir_raw(tmp, d.to_str().unwrap(), reg, repo, "1");
    // A one-layer image: the chain id is the diff id.
    let chain = diff_id[7..].to_string();
    (name, l, chain)
}

/// A registry with the config of `reg` (same address and storage), restarted after `reg`
/// was killed; killed (by pid) on drop.
struct Restarted(Child);
impl Restarted {
    fn start(cfg: &Path, addr: &str) -> Restarted {
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Restarted(child);
        wait_for("the registry to listen again", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        r
    }
}
impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Ends the lazy servers of the instance (by the pid each wrote) and detaches their
/// mounts, even when the test fails.
struct Servers(PathBuf);
impl Servers {
    fn pids(&self) -> Vec<i32> {
        let Ok(rd) = fs::read_dir(self.0.join("snapshots/lazy")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| fs::read_to_string(e.path().join("serve.pid")).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}
impl Drop for Servers {
    fn drop(&mut self) {
        self.kill_all();
    }
}
impl Servers {
    /// Kills (SIGKILL, by pid) the live servers and detaches their mounts.
    fn kill_all(&self) {
        for pid in self.pids() {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "vessel-lazy" {
                // SAFETY: plain integers; the pid was checked to be a vessel-lazy process.
                unsafe { libc_kill(pid, 9) };
                wait_for("a killed server to end", || {
                    fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z"))
                });
            }
        }
        if let Ok(rd) = fs::read_dir(self.0.join("snapshots/lazy")) {
            for e in rd.flatten() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(e.path().join("mnt"))
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// `vessel ARGS` with the lazy knobs in its environment (its servers inherit them).
fn lv(inst: &Instance, env: &[(&str, &str)], args: &[&str]) -> Output {
    // The default user namespace: the FUSE lower is idmapped like every other lower (the
    // server opts in with FUSE_ALLOW_IDMAP).
    let out = inst.cmd().envs(env.iter().copied()).args(args).output().unwrap();
    eprintln!("vessel {args:?}: {}\n{}{}", out.status, stdout(&out), stderr(&out));
    out
}

fn mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

fn ready() -> bool {
    have(&["docker-registry", "curl"])
}

#[test]
fn lazy_run_before_the_layer_is_complete_and_tampered_chunk_refused() {
    if !ready() {
        eprintln!("skipped: docker-registry or curl missing");
        return;
    }
    let inst = Instance::new();
    let servers = Servers(inst.root());
    let reg = Registry::start(inst.dir.path(), None);
    let (name, l, chain) = push(inst.dir.path(), &reg, "lazy-bad", true);
    // Tamper the registry's copy: one byte inside the second chunk of /data/big (stored
    // deflate blocks of random data: the member still decompresses, to other bytes).
    let (_, _, start, end) = l
        .chunks
        .iter()
        .find(|c| c.0 == "data/big" && c.1 == CHUNK)
        .unwrap()
        .clone();
    let blob_file = reg.blob_file(&vessel_image::Digest::parse(&sha(&l.blob)).unwrap());
    let mut bytes = fs::read(&blob_file).unwrap();
    bytes[(start + end) / 2] ^= 0xff;
    fs::write(&blob_file, bytes).unwrap();

    let env = [("VESSEL_LAZY_TIMEOUT", "3")];
    let out = lv(
        &inst,
        &env,
        &["run", "--lazy", "--rm", "--network", "none", &name, "cat", "/etc/hello"],
    );
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello from a lazy layer\n");
    // The command ran from the FUSE mount: the layer is not a snapshot (it never can be:
    // its blob fails the layer digest).
    assert!(!inst.root().join("snapshots").join(&chain).join("fs").exists());
    let lazy = inst.root().join("snapshots/lazy").join(&chain);
    assert!(lazy.join("layer.json").is_file());

    let out = lv(
        &inst,
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &name,
            "sh",
            "-c",
            "cat /data/big > /dev/null",
        ],
    );
    assert!(!out.status.success(), "a tampered chunk was served");
    let log = fs::read_to_string(lazy.join("serve.log")).unwrap();
    let layer = sha(&l.blob);
    assert!(
        log.lines().any(|line| line.contains(&layer)
            && line.contains(&format!("data/big@{CHUNK}"))
            && line.contains("refused")),
        "no log line naming the layer and chunk: {log}"
    );
    // Other chunks of the same file are served.
    let out = lv(
        &inst,
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &name,
            "sh",
            "-c",
            "head -c 1000000 /data/big | wc -c",
        ],
    );
    assert_eq!(stdout(&out).trim(), "1000000");
    drop(servers);
}

#[test]
fn lazy_registry_killed_then_back_and_server_killed() {
    if !ready() {
        eprintln!("skipped: docker-registry or curl missing");
        return;
    }
    let inst = Instance::new();
    let servers = Servers(inst.root());
    let reg = Registry::start(inst.dir.path(), None);
    let (name, _l, chain) = push(inst.dir.path(), &reg, "lazy-good", true);
    let (cfg, addr) = (inst.dir.path().join("config.yml"), reg.addr.clone());
    // No background fetch: the layer stays lazy, only what is read is fetched.
    let env = [("VESSEL_LAZY_TIMEOUT", "2"), ("VESSEL_LAZY_BACKGROUND", "0")];
    let id = stdout(&lv(
        &inst,
        &env,
        &["run", "-d", "--lazy", "--network", "none", &name, "sleep", "1000"],
    ))
    .trim()
    .to_string();
    assert_eq!(id.len(), 64);
    let out = lv(&inst, &env, &["exec", &id, "cat", "/etc/hello"]);
    assert_eq!(stdout(&out), "hello from a lazy layer\n");
    // Part of the layer is here: `vessel images` says how much, inspect says lazy.
    let images = stdout(&lv(&inst, &env, &["images"]));
    let local = images.lines().find(|l| l.contains("lazy-good")).unwrap().to_string();
    assert!(local.contains("LAZY ") && !local.contains("LAZY 100%"), "{images}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&lv(&inst, &env, &["image", "inspect", &name]))).unwrap();
    assert_eq!(v[0]["Lazy"]["State"], "lazy");
    assert!(v[0]["Lazy"]["LocalBytes"].as_u64().unwrap() < v[0]["Lazy"]["Bytes"].as_u64().unwrap());

    // Registry gone: a file not yet local fails (EIO after the retry time), no hang.
    drop(reg);
    let out = lv(&inst, &env, &["exec", &id, "sh", "-c", "cat /data/big > /dev/null"]);
    assert!(!out.status.success());
    let log = fs::read_to_string(inst.root().join("snapshots/lazy").join(&chain).join("serve.log")).unwrap();
    assert!(log.contains("retried for 2.0 s"), "{log}");

    // Back: the same read works.
    let back = Restarted::start(&cfg, &addr);
    let out = lv(&inst, &env, &["exec", &id, "sh", "-c", "wc -c < /data/big"]);
    assert_eq!(stdout(&out).trim(), BIG.to_string());
    drop(back);

    // kill -9 of the server: the next command cleans its mount, a restart of the container
    // starts a new server, which serves what was cached (the registry is down).
    let pids = servers.pids();
    assert_eq!(pids.len(), 1);
    Command::new("kill")
        .arg("-9")
        .arg(pids[0].to_string())
        .status()
        .unwrap();
    wait_for("the server to die", || {
        fs::read_to_string(format!("/proc/{}/stat", pids[0])).map_or(true, |s| s.contains(") Z"))
    });
    let mnt = inst.root().join("snapshots/lazy").join(&chain).join("mnt");
    let mnt = mnt.to_str().unwrap().to_string();
    lv(&inst, &env, &["stop", "-t", "1", &id]);
    lv(&inst, &env, &["ps", "-a"]);
    assert!(!mount_points().contains(&mnt), "dead FUSE mount left on {mnt}");
    let out = lv(&inst, &env, &["start", &id]);
    assert!(out.status.success());
    assert!(mount_points().contains(&mnt));
    let out = lv(
        &inst,
        &env,
        &["exec", &id, "sh", "-c", "cat /etc/hello; wc -c < /data/big"],
    );
    assert_eq!(stdout(&out), format!("hello from a lazy layer\n{BIG}\n"));
    lv(&inst, &env, &["rm", "-f", &id]);

    // The cache is bounded: prune drops idle partial copies past the limit (the TOC stays),
    // and a layer no image uses any more goes whole.
    servers.kill_all();
    let lazy = inst.root().join("snapshots/lazy").join(&chain);
    assert!(lazy.join("blob").is_file());
    let out = lv(&inst, &[("VESSEL_LAZY_CACHE_MAX", "0")], &["image", "prune"]);
    assert!(out.status.success());
    assert!(!lazy.join("blob").exists() && lazy.join("toc.json").is_file());
    assert!(!mount_points().contains(&mnt));
    lv(&inst, &[], &["rmi", &name]);
    assert!(!lazy.exists(), "lazy layer of a removed image left");
    drop(servers);
}

#[test]
fn lazy_layer_completes_in_the_background_and_plain_images_fall_back() {
    if !ready() {
        eprintln!("skipped: docker-registry or curl missing");
        return;
    }
    let inst = Instance::new();
    let servers = Servers(inst.root());
    let reg = Registry::start(inst.dir.path(), None);
    let (name, _l, chain) = push(inst.dir.path(), &reg, "lazy-full", true);
    let out = lv(&inst, &[], &["pull", "--lazy", &name]);
    assert!(out.status.success());
    // The server fetches the rest, unpacks it into the plain snapshot and exits.
    let snap = inst.root().join("snapshots").join(&chain).join("fs");
    let lazy = inst.root().join("snapshots/lazy").join(&chain);
    // Not a timing check: the bound only keeps a broken server from hanging the test (a
    // debug build unpacks slowly on a loaded machine).
    let start = std::time::Instant::now();
    while !snap.is_dir() || lazy.exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "the layer did not complete: {}",
            fs::read_to_string(lazy.join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = lv(
        &inst,
        &[],
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &name,
            "sh",
            "-c",
            "cat /etc/hello; wc -c < /data/big",
        ],
    );
    assert_eq!(stdout(&out), format!("hello from a lazy layer\n{BIG}\n"));
    // Only this instance's mounts: other tests of this file run lazy layers meanwhile.
    let own = inst.root().join("snapshots/lazy").to_string_lossy().into_owned();
    assert!(!mount_points().iter().any(|m| m.starts_with(&own)));
    let v: serde_json::Value = serde_json::from_str(&stdout(&lv(&inst, &[], &["image", "inspect", &name]))).unwrap();
    assert_eq!(v[0]["Lazy"]["State"], "complete");

    // A plain gzip image with --lazy: a note, then a whole pull.
    let (plain, _, chain) = push(inst.dir.path(), &reg, "plain", false);
    let out = lv(&inst, &[], &["pull", "--lazy", &plain]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("not an eStargz image"), "{}", stderr(&out));
    assert!(inst.root().join("snapshots").join(&chain).join("fs").is_dir());
    drop(servers);
}

/// A private containerd (temp root, state and socket), killed (by pid) on drop: the
/// content store `ctr-remote` converts images in.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new().prefix("vessel-ctd-").tempdir().unwrap();
        let d = dir.path().display().to_string();
        let config = dir.path().join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  address = \"{d}/debug.sock\"\n[metrics]\n  address = \"\"\n"
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Containerd { dir, child };
        wait_for("containerd to listen", || c.ctr(&["version"]).status.success());
        c
    }

    /// `ctr-remote -a SOCK -n vessel-lazy ARGS`.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr-remote")
            .arg("-a")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", "vessel-lazy"])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) {
        let o = self.ctr(args);
        assert!(o.status.success(), "ctr-remote {args:?}: {}", stderr(&o));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn lazy_run_of_an_image_converted_by_ctr_remote() {
    if !ready() || !have(&["ctr-remote", "containerd", "umoci", "skopeo"]) {
        eprintln!("skipped: ctr-remote (stargz-snapshotter), containerd, umoci or skopeo missing");
        return;
    }
    let inst = Instance::new();
    let servers = Servers(inst.root());
    let reg = Registry::start(inst.dir.path(), None);
    // A busybox image made by umoci, pushed by skopeo, converted to eStargz by ctr-remote
    // in a private containerd and pushed back.
    common::sh(
        &format!(
            "umoci init --layout img && umoci new --image img:1 && umoci unpack --image img:1 b >/dev/null \
             && mkdir -p b/rootfs/bin b/rootfs/etc && cp /usr/bin/busybox b/rootfs/bin/ && ln -s busybox b/rootfs/bin/sh \
             && echo 'converted by ctr-remote' > b/rootfs/etc/hello && umoci repack --image img:1 b && rm -rf b \
             && skopeo copy -q --dest-tls-verify=false oci:img:1 docker://{}/base:1",
            reg.addr
        ),
        inst.dir.path(),
    );
    let ctd = Containerd::start();
    let (base, esgz) = (format!("{}/base:1", reg.addr), format!("{}/esgz:1", reg.addr));
    ctd.ok(&["images", "pull", "--plain-http", &base]);
    ctd.ok(&["images", "convert", "--estargz", "--oci", &base, &esgz]);
    ctd.ok(&["images", "push", "--plain-http", &esgz]);
    drop(ctd);

    let env = [("VESSEL_LAZY_BACKGROUND", "0")];
    let out = lv(
        &inst,
        &env,
        &[
            "run",
            "--lazy",
            "--rm",
            "--network",
            "none",
            &esgz,
            "/bin/busybox",
            "cat",
            "/etc/hello",
        ],
    );
    assert!(out.status.success());
    assert_eq!(stdout(&out), "converted by ctr-remote\n");
    let v: serde_json::Value = serde_json::from_str(&stdout(&lv(&inst, &env, &["image", "inspect", &esgz]))).unwrap();
    assert_eq!(v[0]["Lazy"]["State"], "lazy");
    drop(servers);
}

/// An HTTP proxy in front of a registry that logs each request's path and `Range` header
/// in order and sends the answers on at about 8 MB/s (a 2 MB span takes a quarter of a
/// second, so that a request sent while another is under way shows in the log). Its
/// threads end with the connections; the listener's thread with the test process.
struct RangeLog {
    addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<(String, Option<(u64, u64)>)>>>,
}

impl RangeLog {
    fn start(upstream: &str) -> RangeLog {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, l2) = (upstream.to_string(), log.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_in, mut c_out) = (client.try_clone().unwrap(), client);
                let (mut s_in, mut s_out) = (server.try_clone().unwrap(), server);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 << 10];
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 || c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
                let log = l2.clone();
                std::thread::spawn(move || {
                    let (mut buf, mut pending) = ([0u8; 16 << 10], Vec::new());
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        pending.extend_from_slice(&buf[..n]);
                        // GET and HEAD requests only (no bodies): each ends at a blank line.
                        while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                            pending.drain(..end + 4);
                            let mut lines = head.lines();
                            let path = lines.next().unwrap_or("").to_string();
                            let range = lines
                                .filter_map(|l| l.split_once(':'))
                                .find(|(k, _)| k.trim().eq_ignore_ascii_case("range"))
                                .and_then(|(_, v)| v.trim().strip_prefix("bytes=").map(str::to_string))
                                .and_then(|v| {
                                    let (a, b) = v.split_once('-')?;
                                    Some((a.parse().ok()?, b.parse::<u64>().ok()? + 1))
                                });
                            log.lock().unwrap().push((path, range));
                        }
                        if s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        RangeLog { addr, log }
    }

    /// The ranges asked of blob `digest`, in the order the requests came.
    fn ranges(&self, digest: &str) -> Vec<(u64, u64)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.contains(&format!("/blobs/{digest}")))
            .filter_map(|(_, r)| *r)
            .collect()
    }
}

#[test]
fn lazy_prefetch_span_is_fetched_first_in_one_request() {
    if !ready() {
        eprintln!("skipped: docker-registry or curl missing");
        return;
    }
    let inst = Instance::new();
    let servers = Servers(inst.root());
    let reg = Registry::start(inst.dir.path(), None);
    let (name, l, _chain) = push(inst.dir.path(), &reg, "lazy-prefetch", true);
    let proxy = RangeLog::start(&reg.addr);
    let name = name.replacen(&reg.addr, &proxy.addr, 1);
    // The prefetch span: every member up to the first of /data/big (after the landmark);
    // the TOC and footer: from the end of /data/big's last member.
    let span_end = l.chunks.iter().find(|c| c.0 == "data/big").unwrap().2 as u64;
    let toc_start = l.chunks.last().unwrap().3 as u64;
    // No background fetch: every request after the prefetch is a read the program made.
    let env = [("VESSEL_LAZY_BACKGROUND", "0")];
    let out = lv(
        &inst,
        &env,
        &[
            "run",
            "--lazy",
            "--rm",
            "--network",
            "none",
            &name,
            "sh",
            "-c",
            "cat /data/big | wc -c; cat /proc/self/uid_map",
        ],
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next().map(str::trim), Some(BIG.to_string().as_str()), "{text}");
    // The default user namespace (a private id range), over the idmapped FUSE lower.
    let map: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map.len(), 3, "{text}");
    assert!(
        map[1] != "0" && map[2] != "4294967295",
        "host ids, not a private range: {text}"
    );
    let ranges = proxy.ranges(&sha(&l.blob));
    eprintln!("ranges asked, in order: {ranges:?}");
    let data: Vec<(u64, u64)> = ranges.iter().copied().filter(|r| r.0 < toc_start).collect();
    // First the whole prefetch span in one request (busybox, /etc/hello, the landmark),
    // then only reads outside it: nothing in the span was asked again on demand.
    assert_eq!(data.first(), Some(&(0, span_end)), "{ranges:?}");
    assert!(
        data.len() > 1,
        "/data/big was not read through range requests: {ranges:?}"
    );
    assert!(
        data[1..].iter().all(|r| r.0 >= span_end),
        "an on-demand read inside the prefetch span: {ranges:?}"
    );
    // /data/big (6 chunks) read sequentially: its first chunk alone, then the rest in one
    // read-ahead request, not one round trip per chunk.
    assert!(data.len() <= 3, "{ranges:?}");
    drop(servers);
}
