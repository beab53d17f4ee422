//! `vessel pull` and `vessel login` against a real registry (docker-registry) configured for
//! bearer-token auth (`auth: token:`), with a token server the test starts on 127.0.0.1
//! (python3 http.server signing RS256 JWTs with a self-signed certificate in `x5c`, see
//! `TokenServer`): anonymous pull refused with a hint at `vessel login`, a wrong password
//! refused, the right one saved by `vessel login` and then used by `vessel pull` (the bearer
//! flow: 401 with `WWW-Authenticate: Bearer realm=...`, token request, retry with the token).

#[path = "../../image/tests/common/mod.rs"]
mod common;
mod run_vessel;

use std::process::Command;

use run_vessel::vessel;

use common::{assert_blobs_verified, have, sh, skopeo_push, Registry, TokenServer};

fn python_jwt() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("\n!!!!! SKIPPED: python3 jwt/cryptography missing (apt-get install python3-jwt python3-cryptography) !!!!!\n");
    }
    ok
}

#[test]
fn pull_with_bearer_token_auth() {
    if !have(&["docker-registry", "skopeo", "umoci", "busybox", "python3"]) || !python_jwt() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // Dropped in reverse order: the registry first, then the token server (both by pid).
    let tokens = TokenServer::start(&t.path().join("tokens"), "alice", "s3cret");
    let reg = Registry::start_with_tokens(&t.path().join("reg"), &tokens);
    sh(
        "umoci init --layout img && umoci new --image img:1 && umoci unpack --image img:1 b >/dev/null \
         && mkdir -p b/rootfs/bin && cp /usr/bin/busybox b/rootfs/bin/ && echo token > b/rootfs/marker \
         && umoci repack --image img:1 b",
        t.path(),
    );
    // skopeo pushes through the same token flow.
    let name = skopeo_push(t.path(), "oci:img:1", &reg, "private/bb:1", "--dest-creds alice:s3cret");
    assert!(
        tokens.requests().contains("alice repository:private/bb:"),
        "{}",
        tokens.requests()
    );
    let root = t.path().join("root");

    // Anonymous: the token server hands out a token granting nothing; the registry refuses.
    let out = vessel(&root, &["pull", &name]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vessel login"), "no login hint: {err}");
    assert!(err.contains(&reg.addr), "{err}");
    assert!(
        tokens.requests().contains("anonymous repository:private/bb:pull"),
        "{}",
        tokens.requests()
    );
    assert!(Registry::nothing_stored(&root), "anonymous refused pull kept something");

    // A wrong password: refused by the token server, nothing saved.
    let out = vessel(&root, &["login", "-u", "alice", "-p", "wrong", &reg.addr]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&reg.addr), "{err}");
    assert!(tokens.requests().contains("refused"), "{}", tokens.requests());
    assert!(
        !root.join("auth.json").exists()
            || !std::fs::read_to_string(root.join("auth.json"))
                .unwrap()
                .contains(&reg.addr)
    );
    let out = vessel(&root, &["pull", &name]);
    assert_eq!(out.status.code(), Some(125));

    // The right one: saved by login, used by pull.
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--root")
        .arg(&root)
        .args(["login", "-u", "alice", "--password-stdin", &reg.addr])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = vessel(&root, &["pull", &name]);
    assert!(out.status.success());
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    let store = vessel_image::Store::open(&root).unwrap();
    let rec = vessel_image::records::find_image(&store, &id).unwrap();
    let lowers = store.snapshots().lowers(rec.top_chain_id().unwrap()).unwrap();
    assert_eq!(std::fs::read_to_string(lowers[0].join("marker")).unwrap(), "token\n");
    assert_blobs_verified(&root);

    // After logout, anonymous again: refused.
    assert!(vessel(&root, &["logout", &reg.addr]).status.success());
    assert!(vessel(&root, &["rmi", &name]).status.success());
    assert_eq!(vessel(&root, &["pull", &name]).status.code(), Some(125));
}
