//! Helpers shared by the registry tests of vessel-image and the `vessel` command tests
//! (`crates/cli/tests` include this file with `#[path]`): a real docker-registry on 127.0.0.1
//! killed by pid on drop, images built by umoci and pushed by skopeo (or by plain HTTP with
//! curl where skopeo would recompress), and a file-by-file comparison of a mounted snapshot
//! with what `umoci unpack` makes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vessel_image::{Digest, ImageRecord, Store};

/// Whether all `tools` are in /usr/bin; says loudly which are missing when not.
pub fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools
        .iter()
        .filter(|t| !Path::new(&format!("/usr/bin/{t}")).exists())
        .collect();
    if !missing.is_empty() {
        eprintln!("\n!!!!! SKIPPED: missing {missing:?} (apt-get install docker-registry skopeo umoci apache2-utils busybox-static curl zstd) !!!!!\n");
        return false;
    }
    true
}

/// Runs a bash script in `dir` (with -euo pipefail), panicking with its output on failure.
pub fn sh(script: &str, dir: &Path) {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed: {script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// As [`sh`], returning standard output.
pub fn sh_out(script: &str, dir: &Path) -> String {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed: {script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A docker-registry process on 127.0.0.1, killed (by pid) on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The registry's storage directory.
    pub storage: PathBuf,
}

impl Registry {
    /// Starts a registry keeping its files under `dir`, with htpasswd basic auth when given.
    pub fn start(dir: &Path, htpasswd: Option<&Path>) -> Registry {
        let auth = htpasswd
            .map(|p| {
                format!(
                    "auth:\n  htpasswd:\n    realm: vessel-test\n    path: {}\n",
                    p.display()
                )
            })
            .unwrap_or_default();
        Registry::start_with_auth(dir, &auth)
    }

    /// Starts a registry with bearer-token auth: tokens from `tokens` (its realm, service,
    /// issuer and signing certificate).
    pub fn start_with_tokens(dir: &Path, tokens: &TokenServer) -> Registry {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            tokens.realm(),
            TokenServer::SERVICE,
            TokenServer::ISSUER,
            tokens.cert.display()
        );
        Registry::start_with_auth(dir, &auth)
    }

    /// Starts a registry with the `auth:` section `auth` (YAML, may be empty).
    pub fn start_with_auth(dir: &Path, auth: &str) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).unwrap();
        let cfg = dir.join("config.yml");
        fs::write(
            &cfg,
            format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}", storage.display()),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Built before waiting, so that a registry that never listens is killed too.
        let reg = Registry {
            child,
            addr: format!("127.0.0.1:{port}"),
            storage,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(10), "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// Whether a vessel store under `root` holds no blob (or does not exist).
    pub fn nothing_stored(root: &Path) -> bool {
        fs::read_dir(root.join("content/blobs/sha256"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_file(&self, digest: &Digest) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&digest.hex()[..2])
            .join(digest.hex())
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The token server of a registry's bearer-token auth (`auth: token:`), a small python3
/// `http.server` on 127.0.0.1 killed (by pid) on drop. It makes a self-signed RSA certificate
/// (`cert.pem`, the registry's `rootcertbundle`) and answers `GET /token?service=&scope=` with
/// an RS256 JWT carrying that certificate in its `x5c` header: the requested actions for
/// `user`/`password` (basic auth), a token granting nothing for anonymous requests (as
/// Docker Hub does), 401 for wrong credentials. Every request is logged to `requests.log`.
pub struct TokenServer {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The signing certificate (PEM).
    pub cert: PathBuf,
    /// One line per token request: `anonymous|USER|refused SCOPES`.
    pub log: PathBuf,
}

const TOKEN_SERVER_PY: &str = r#"
import base64, datetime, http.server, json, sys, time, uuid, urllib.parse
import jwt
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

d, port, user, password, service, issuer = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vessel test token signer")])
now = datetime.datetime.utcnow()
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
open(d + "/cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
log = open(d + "/requests.log", "a", buffering=1)

class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path != "/token":
            self.send_response(404); self.end_headers(); return
        q = urllib.parse.parse_qs(u.query)
        scopes = [s for v in q.get("scope", []) for s in v.split(" ") if s]
        who = "anonymous"
        h = self.headers.get("Authorization", "")
        if h.startswith("Basic "):
            u_, _, p_ = base64.b64decode(h[6:]).decode().partition(":")
            if (u_, p_) != (user, password):
                log.write("refused %s\n" % " ".join(scopes))
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"details":"incorrect username or password"}')
                return
            who = u_
        log.write("%s %s\n" % (who, " ".join(scopes)))
        access = []
        if who != "anonymous":
            for s in scopes:
                typ, _, rest = s.partition(":")
                nm, _, actions = rest.rpartition(":")
                access.append({"type": typ, "name": nm, "actions": [a for a in actions.split(",") if a]})
        t = int(time.time())
        claims = {"iss": issuer, "sub": "" if who == "anonymous" else who, "aud": q.get("service", [service])[0],
                  "exp": t + 300, "nbf": t - 10, "iat": t, "jti": uuid.uuid4().hex, "access": access}
        tok = jwt.encode(claims, pem, algorithm="RS256", headers={"x5c": [x5c]})
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": 300,
                           "issued_at": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

impl TokenServer {
    /// The registry's `service` (the tokens' audience).
    pub const SERVICE: &'static str = "vessel-test-registry";
    /// The tokens' issuer.
    pub const ISSUER: &'static str = "vessel-test-issuer";

    /// Starts a token server under `dir` that accepts `user`:`password`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        fs::create_dir_all(dir).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = dir.join("token_server.py");
        fs::write(&script, TOKEN_SERVER_PY).unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(dir)
            .arg(port.to_string())
            .args([user, password, Self::SERVICE, Self::ISSUER])
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut ts = TokenServer {
            child,
            addr: format!("127.0.0.1:{port}"),
            cert: dir.join("cert.pem"),
            log: dir.join("requests.log"),
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(&ts.addr).is_err() {
            if let Ok(Some(st)) = ts.child.try_wait() {
                panic!(
                    "token server exited ({st}): {}",
                    fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(10), "token server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        ts
    }

    /// The `realm` the registry sends clients to.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The requests logged so far.
    pub fn requests(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds `img:v2` in an OCI layout with umoci (in `dir`): layer 1 busybox + files, layer 2
/// deletes a file, replaces one, and replaces a directory's content. umoci's own unpack of it
/// is left in `dir/expected/rootfs`.
pub fn build_image(dir: &Path) {
    sh(
        r#"
umoci init --layout img
umoci new --image img:v1
umoci config --image img:v1 --config.cmd sh
umoci unpack --image img:v1 b1 >/dev/null
mkdir -p b1/rootfs/bin b1/rootfs/etc b1/rootfs/opq/sub b1/rootfs/keep
cp /usr/bin/busybox b1/rootfs/bin/busybox
for t in sh ls cat; do ln -s busybox b1/rootfs/bin/$t; done
ln b1/rootfs/bin/busybox b1/rootfs/bin/hardbox
echo hello > b1/rootfs/etc/motd; echo del > b1/rootfs/etc/gone; echo x > b1/rootfs/opq/sub/old
echo k > b1/rootfs/keep/file; chmod 4755 b1/rootfs/bin/busybox; chown 12:34 b1/rootfs/etc/motd
umoci repack --image img:v1 b1 && rm -rf b1
umoci unpack --image img:v1 b2 >/dev/null
rm b2/rootfs/etc/gone; echo changed > b2/rootfs/etc/motd
rm -rf b2/rootfs/opq; mkdir -p b2/rootfs/opq; echo new > b2/rootfs/opq/new
umoci repack --image img:v2 b2 && rm -rf b2
umoci unpack --image img:v2 expected >/dev/null
"#,
        dir,
    );
}

/// Pushes `img:v2` (in `dir`) to `reg` as `repo` with skopeo.
pub fn push(dir: &Path, reg: &Registry, repo: &str, creds: Option<&str>) -> String {
    let c = creds.map(|c| format!("--dest-creds {c}")).unwrap_or_default();
    skopeo_push(dir, "oci:img:v2", reg, repo, &c)
}

/// `skopeo copy [extra] SRC docker://REG/REPO`; returns the pushed name.
pub fn skopeo_push(dir: &Path, src: &str, reg: &Registry, repo: &str, extra: &str) -> String {
    let dest = format!("{}/{repo}", reg.addr);
    sh(
        &format!("skopeo copy -q --dest-tls-verify=false {extra} {src} docker://{dest}"),
        dir,
    );
    dest
}

/// Pushes a `dir:` transport directory (as `skopeo copy ... dir:D` writes it: blobs named by
/// their hex digest and `manifest.json`) byte for byte with the distribution API over curl.
/// skopeo itself recompresses uncompressed layers on the way to a registry. Returns the name.
pub fn push_dir_raw(dir: &Path, d: &str, reg: &Registry, repo: &str, tag: &str) -> String {
    sh(
        &format!(
            r#"
cd {d}
for f in $(ls | grep -E '^[0-9a-f]{{64}}$'); do
    loc=$(curl -sSf -X POST -D - -o /dev/null http://{addr}/v2/{repo}/blobs/uploads/ | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    case $loc in http*) ;; *) loc=http://{addr}$loc ;; esac
    case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
    curl -sSf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @$f "$loc${{sep}}digest=sha256:$f" >/dev/null
done
mt=$(grep -q '"manifests"' manifest.json && echo application/vnd.oci.image.index.v1+json || echo application/vnd.oci.image.manifest.v1+json)
curl -sSf -X PUT -H "Content-Type: $mt" --data-binary @manifest.json http://{addr}/v2/{repo}/manifests/{tag} >/dev/null
"#,
            addr = reg.addr
        ),
        dir,
    );
    format!("{}/{repo}:{tag}", reg.addr)
}

/// Adds to the OCI layout `layout` an image index blob listing the manifests that the tags
/// `entries` name, with the platforms given (`(tag, os, arch)`), and names it `tag` in
/// index.json. Returns the index digest.
pub fn add_index(layout: &Path, tag: &str, entries: &[(&str, &str, &str)]) -> Digest {
    const REF: &str = "org.opencontainers.image.ref.name";
    let ipath = layout.join("index.json");
    let mut top: serde_json::Value = serde_json::from_slice(&fs::read(&ipath).unwrap()).unwrap();
    let listed = top["manifests"].as_array().unwrap().clone();
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(t, os, arch)| {
            let d = listed
                .iter()
                .find(|m| m["annotations"][REF] == *t)
                .unwrap_or_else(|| panic!("no tag {t} in {}", ipath.display()));
            serde_json::json!({
                "mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                "platform": { "os": os, "architecture": arch },
            })
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let digest = Digest::of_bytes(&index);
    fs::write(layout.join("blobs/sha256").join(digest.hex()), &index).unwrap();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest.to_string(),
        "size": index.len(),
        "annotations": { REF: tag },
    }));
    fs::write(&ipath, serde_json::to_vec(&top).unwrap()).unwrap();
    digest
}

/// Path → type, mode, owner, size, content/target of every file below a root.
pub type Tree = BTreeMap<String, String>;

/// sha256 of a file: in process for small files, with sha256sum for large ones (the tests
/// are debug builds, where hashing tens of MB in process takes seconds).
fn file_digest(path: &Path, size: u64) -> String {
    if size < (4 << 20) {
        return Digest::of_bytes(&fs::read(path).unwrap()).to_string();
    }
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    format!(
        "sha256:{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
    )
}

/// Type, mode, owner, content/target and mtime of every file below `root`.
pub fn tree(root: &Path) -> Tree {
    let mut m = Tree::new();
    fn walk(p: &Path, root: &Path, m: &mut Tree) {
        let mut entries: Vec<_> = fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let md = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let what = if md.is_dir() {
                "dir".to_string()
            } else if md.file_type().is_symlink() {
                format!("symlink {}", fs::read_link(&path).unwrap().display())
            } else if md.file_type().is_char_device() {
                format!("char {}", md.rdev())
            } else {
                format!("file {}", file_digest(&path, md.len()))
            };
            let mode = if md.file_type().is_symlink() {
                0
            } else {
                md.mode() & 0o7777
            };
            let mtime = if md.is_file() { md.mtime() } else { 0 };
            m.insert(
                rel,
                format!("{what} mode={mode:o} owner={}:{} mtime={mtime}", md.uid(), md.gid()),
            );
            if md.is_dir() {
                walk(&path, root, m);
            }
        }
    }
    walk(root, root, &mut m);
    m
}

/// A tokio runtime like the one `vessel` uses.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Mounts an active snapshot `key` of `rec`'s top layer, compares it with `expected` (umoci's
/// unpack) file by file, checks that a write lands in the upper dir, unmounts and removes the
/// snapshot (also when the comparison panics). Returns the mounted tree.
pub fn compare_mounted(store: &Store, rec: &ImageRecord, expected: &Path, key: &str) -> Tree {
    let snaps = store.snapshots();
    let active = snaps.prepare(key, rec.top_chain_id()).unwrap();
    assert_eq!(active.lowers.len(), rec.layers.len());
    let target = store.root().join(format!("mnt-{key}"));
    fs::create_dir_all(&target).unwrap();
    struct Cleanup<'a>(&'a Path, Option<(&'a vessel_image::Snapshotter, &'a str)>);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = vessel_image::snapshot::unmount(self.0);
            if let Some((s, k)) = self.1 {
                let _ = s.remove(k);
            }
        }
    }
    // Removes the active snapshot even when something below panics.
    let _remove = Cleanup(Path::new(""), Some((&snaps, key)));
    snaps.mount(key, &target).unwrap();
    let guard = Cleanup(&target, None);
    let got = tree(&target);
    let want = tree(expected);
    // Writes land in the upper dir (copy-up of a lower file where there is one), lowers stay
    // untouched.
    let probe = if got.contains_key("etc/motd") {
        "etc/motd"
    } else {
        "vessel-probe"
    };
    fs::write(target.join(probe), b"container write").unwrap();
    drop(guard);
    assert_eq!(fs::read(active.upper.join(probe)).unwrap(), b"container write");
    for l in &active.lowers {
        assert!(!l.join(probe).exists() || fs::read(l.join(probe)).unwrap() != b"container write");
    }
    assert_eq!(got, want, "mounted rootfs differs from umoci unpack");
    got
}

/// The shape of `img:v2` from [`build_image`]: whiteouts and the opaque dir took effect.
pub fn assert_v2_shape(got: &Tree) {
    assert!(
        got.contains_key("opq/new") && !got.contains_key("opq/sub") && !got.contains_key("etc/gone"),
        "whiteouts not applied"
    );
}

/// Every file under `ROOT/content/blobs/sha256` hashes to its name.
pub fn assert_blobs_verified(root: &Path) {
    let dir = root.join("content/blobs/sha256");
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let md = e.metadata().unwrap();
        assert!(md.is_file(), "{name}: not a regular file");
        let d = file_digest(&e.path(), md.len());
        assert_eq!(
            d,
            format!("sha256:{name}"),
            "blob {name} in the store does not hash to its name"
        );
    }
}
