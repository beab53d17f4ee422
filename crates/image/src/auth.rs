//! Registry credentials: `vessel login`'s own file (`ROOT/auth.json`), podman's auth.json
//! (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`) and Docker's config.json with its credential helpers
//! (through docker_credential). All share the `{"auths": {"host": {"auth": base64(user:pass)}}}`
//! shape.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{ImageError, Result};
use crate::store::write_atomic;

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <secret>)", self.username)
    }
}

/// Normalises an auth.json key (`https://index.docker.io/v1/`, `host:5000`, `host/ns`) to the
/// registry host[:port] it is for.
fn key_registry(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn auth_files(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.join("auth.json")];
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE") {
        v.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(p).join("containers/auth.json"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        v.push(PathBuf::from(h).join(".config/containers/auth.json"));
    }
    v
}

fn from_file(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Ok(data) = std::fs::read(path) else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_slice(&data).map_err(|source| ImageError::Json {
        what: path.display().to_string(),
        source,
    })?;
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    for (k, entry) in auths {
        if key_registry(k) != registry {
            continue;
        }
        let Some(b64) = entry.get("auth").and_then(|a| a.as_str()) else {
            continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| ImageError::Auth {
                registry: registry.into(),
                reason: format!("{}: bad base64 in \"auth\": {e}", path.display()),
            })?;
        let s = String::from_utf8(decoded).map_err(|_| ImageError::Auth {
            registry: registry.into(),
            reason: format!("{}: \"auth\" is not UTF-8", path.display()),
        })?;
        let Some((u, p)) = s.split_once(':') else {
            return Err(ImageError::Auth {
                registry: registry.into(),
                reason: format!("{}: \"auth\" is not user:password", path.display()),
            });
        };
        return Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        }));
    }
    Ok(None)
}

/// The credentials for `registry` (host[:port]), first found in: `root/auth.json`, podman's
/// files, Docker's config (and its helpers). None means anonymous.
///
/// # Errors
/// [`ImageError::Auth`] / [`ImageError::Json`] for a malformed file.
pub fn lookup(root: &Path, registry: &str) -> Result<Option<Credentials>> {
    for f in auth_files(root) {
        if let Some(c) = from_file(&f, registry)? {
            return Ok(Some(c));
        }
    }
    let docker_key = if registry == "docker.io" {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    match docker_credential::get_credential(docker_key) {
        Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => Ok(Some(Credentials {
            username: u,
            password: p,
        })),
        _ => Ok(None),
    }
}

/// Saves credentials for `registry` in `root/auth.json` (mode 0600).
///
/// # Errors
/// [`ImageError::Io`] / [`ImageError::Json`].
pub fn save(root: &Path, registry: &str, creds: &Credentials) -> Result<()> {
    edit(root, |auths| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.username, creds.password));
        auths.insert(registry.to_string(), serde_json::json!({ "auth": b64 }));
    })
}

/// Removes saved credentials for `registry` from `root/auth.json`; true when there were some.
///
/// # Errors
/// [`ImageError::Io`] / [`ImageError::Json`].
pub fn remove(root: &Path, registry: &str) -> Result<bool> {
    let mut found = false;
    edit(root, |auths| {
        let keys: Vec<String> = auths.keys().filter(|k| key_registry(k) == registry).cloned().collect();
        for k in keys {
            auths.remove(&k);
            found = true;
        }
    })?;
    Ok(found)
}

fn edit(root: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Result<()> {
    let path = root.join("auth.json");
    std::fs::create_dir_all(root).map_err(|e| ImageError::io("create", root, e))?;
    let mut v: serde_json::Value = match std::fs::read(&path) {
        Ok(d) => serde_json::from_slice(&d).map_err(|source| ImageError::Json {
            what: path.display().to_string(),
            source,
        })?,
        Err(_) => serde_json::json!({ "auths": {} }),
    };
    if !v.get("auths").is_some_and(|a| a.is_object()) {
        v["auths"] = serde_json::json!({});
    }
    if let Some(auths) = v.get_mut("auths").and_then(|a| a.as_object_mut()) {
        f(auths);
    }
    let data = serde_json::to_vec_pretty(&v).map_err(|source| ImageError::Json {
        what: path.display().to_string(),
        source,
    })?;
    write_atomic(&path, &data)
}
