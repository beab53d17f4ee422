//! `vessel pull` from a registry with basic auth (docker-registry + htpasswd on 127.0.0.1),
//! with credentials found where other tools keep them and `vessel login` was never run:
//! podman's auth.json (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`)
//! and Docker's `$DOCKER_CONFIG/config.json`.

#[path = "../../image/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{build_image, have, push, sh, Registry};

/// Runs `vessel --root ROOT pull REF` with a clean credential environment plus `env`.
fn pull(root: &Path, home: &Path, reference: &str, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vessel"));
    cmd.arg("--root").arg(root).args(["pull", "-q", reference]);
    for var in ["REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"] {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run vessel");
    eprintln!(
        "vessel pull {reference} {env:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An auth.json with `user:password` for `registry_key`: base64 of "alice:s3cret" or
/// "alice:wrong", the only two the test uses.
fn auth_json(registry_key: &str, user_pass: &str) -> String {
    let b64 = match user_pass {
        "alice:s3cret" => "YWxpY2U6czNjcmV0",
        "alice:wrong" => "YWxpY2U6d3Jvbmc=",
        other => panic!("no base64 for {other}"),
    };
    serde_json::json!({"auths": {registry_key: {"auth": b64}}}).to_string()
}

#[test]
fn credentials_from_podman_and_docker_files() {
    if !have(&["docker-registry", "skopeo", "umoci", "htpasswd"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    build_image(t.path());
    let htp = t.path().join("htpasswd");
    sh(
        &format!("htpasswd -Bbc {} alice s3cret 2>/dev/null", htp.display()),
        t.path(),
    );
    let reg = Registry::start(&t.path().join("reg"), Some(&htp));
    let name = push(t.path(), &reg, "private/bb:v3", Some("alice:s3cret"));
    let home = t.path().join("home");
    std::fs::create_dir_all(&home).unwrap();

    // Nothing anywhere: refused.
    let out = pull(&t.path().join("root-none"), &home, &name, &[]);
    assert!(!out.status.success(), "anonymous pull of a private repo must fail");

    // podman's auth.json named by REGISTRY_AUTH_FILE.
    let podman_file = t.path().join("podman-auth.json");
    std::fs::write(&podman_file, auth_json(&reg.addr, "alice:s3cret")).unwrap();
    let out = pull(
        &t.path().join("root-podman"),
        &home,
        &name,
        &[("REGISTRY_AUTH_FILE", &podman_file)],
    );
    assert!(out.status.success(), "pull with podman's REGISTRY_AUTH_FILE");

    // podman's default place under XDG_RUNTIME_DIR.
    let xdg = t.path().join("xdg");
    std::fs::create_dir_all(xdg.join("containers")).unwrap();
    std::fs::write(xdg.join("containers/auth.json"), auth_json(&reg.addr, "alice:s3cret")).unwrap();
    let out = pull(&t.path().join("root-xdg"), &home, &name, &[("XDG_RUNTIME_DIR", &xdg)]);
    assert!(out.status.success(), "pull with $XDG_RUNTIME_DIR/containers/auth.json");

    // Docker's config.json (key with a scheme, as `docker login` writes some of them).
    let docker = t.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), auth_json(&reg.addr, "alice:s3cret")).unwrap();
    let out = pull(
        &t.path().join("root-docker"),
        &home,
        &name,
        &[("DOCKER_CONFIG", &docker)],
    );
    assert!(out.status.success(), "pull with Docker's config.json");

    // A wrong password in the file is refused, not silently replaced by anonymous access.
    std::fs::write(&podman_file, auth_json(&reg.addr, "alice:wrong")).unwrap();
    let out = pull(
        &t.path().join("root-wrong"),
        &home,
        &name,
        &[("REGISTRY_AUTH_FILE", &podman_file)],
    );
    assert!(!out.status.success(), "a wrong password from auth.json must fail");
}
