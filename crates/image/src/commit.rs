//! New images from a base image and a container's changes (`vessel commit`): the base's layers
//! plus a new top layer ([`crate::diff::write_layer`]), the base config with the changes
//! applied (docker's `--change` instructions, a history entry, `rootfs.diff_ids`, `created`),
//! an OCI manifest, and an image record, stored as a pulled image is. The new layer is unpacked
//! into its layer snapshot (by chain id) from the blob, so containers of the new image stand on
//! exactly what the blob holds.

use std::path::Path;

use serde_json::{json, Map, Value};

use crate::diff::{self, NewLayer};
use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::layer::{ingest_layer, Compression, LayerSpec};
use crate::manifest::{OCI_CONFIG, OCI_MANIFEST};
use crate::records::{add_image, ImageRecord, LayerRecord};
use crate::store::Store;

/// One `--change` instruction (Dockerfile syntax, as `docker commit --change` takes it;
/// `KEY=VALUE` as well as `KEY VALUE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// `CMD ["a","b"]` or `CMD a b` (shell form: `/bin/sh -c "a b"`).
    Cmd(Vec<String>),
    /// `ENTRYPOINT ...`, the same forms as CMD.
    Entrypoint(Vec<String>),
    /// `ENV K=V [K2=V2 ...]` or `ENV K V`.
    Env(Vec<(String, String)>),
    /// `WORKDIR /path`.
    Workdir(String),
    /// `EXPOSE 80[/tcp] [53/udp ...]`.
    Expose(Vec<String>),
    /// `LABEL k=v [k2=v2 ...]`.
    Label(Vec<(String, String)>),
    /// `USER name[:group]`.
    User(String),
    /// `STOPSIGNAL SIGTERM`.
    StopSignal(String),
    /// `VOLUME /a [/b ...]` or a JSON array.
    Volume(Vec<String>),
}

/// Splits `k=v` pairs, unquoting `"..."` values; `ENV K V` (one pair, space form) too.
fn pairs(what: &str, value: &str, space_form: bool) -> std::result::Result<Vec<(String, String)>, String> {
    let value = value.trim();
    if space_form {
        if let Some((k, v)) = value.split_once(' ') {
            if !k.contains('=') {
                return Ok(vec![(k.to_string(), v.trim().to_string())]);
            }
        }
    }
    let mut out = Vec::new();
    for word in shell_words(value) {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!("{what} {value:?}: expected KEY=VALUE"));
        };
        if k.is_empty() {
            return Err(format!("{what} {value:?}: empty key"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    if out.is_empty() {
        return Err(format!("{what}: nothing given"));
    }
    Ok(out)
}

/// Splits on spaces, keeping `"..."` together (quotes removed).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' | '\t' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `["a","b"]` (JSON, exec form) or a shell form run by `/bin/sh -c`.
fn command(value: &str) -> Vec<String> {
    let v = value.trim();
    if v.starts_with('[') {
        if let Ok(list) = serde_json::from_str::<Vec<String>>(v) {
            return list;
        }
    }
    vec!["/bin/sh".into(), "-c".into(), v.to_string()]
}

impl ConfigChange {
    /// Parses `INSTRUCTION VALUE` or `INSTRUCTION=VALUE` (instruction names in any case).
    ///
    /// # Errors
    /// A message naming the instruction when it is unknown or its value malformed.
    pub fn parse(s: &str) -> std::result::Result<ConfigChange, String> {
        let s = s.trim();
        let cut = s.find([' ', '=', '\t']).ok_or_else(|| {
            format!("--change {s:?}: expected INSTRUCTION VALUE (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, STOPSIGNAL, VOLUME)")
        })?;
        let (key, value) = (s[..cut].to_ascii_uppercase(), s[cut + 1..].trim());
        let space_form = s.as_bytes()[cut] != b'=';
        Ok(match key.as_str() {
            "CMD" => ConfigChange::Cmd(command(value)),
            "ENTRYPOINT" => ConfigChange::Entrypoint(command(value)),
            "ENV" => ConfigChange::Env(pairs("ENV", value, space_form)?),
            "LABEL" => ConfigChange::Label(pairs("LABEL", value, false)?),
            "WORKDIR" if value.starts_with('/') => ConfigChange::Workdir(value.to_string()),
            "WORKDIR" => return Err(format!("WORKDIR {value:?}: must be an absolute path")),
            "USER" if !value.is_empty() => ConfigChange::User(value.to_string()),
            "STOPSIGNAL" if !value.is_empty() => ConfigChange::StopSignal(value.to_string()),
            "EXPOSE" => {
                let mut ports = Vec::new();
                for p in value.split_whitespace() {
                    let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    if port.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(format!("EXPOSE {p:?}: expected PORT[/tcp|udp|sctp]"));
                    }
                    ports.push(format!("{port}/{proto}"));
                }
                if ports.is_empty() {
                    return Err("EXPOSE: no port given".into());
                }
                ConfigChange::Expose(ports)
            }
            "VOLUME" => {
                let list = if value.starts_with('[') {
                    serde_json::from_str::<Vec<String>>(value).map_err(|e| format!("VOLUME {value:?}: {e}"))?
                } else {
                    value.split_whitespace().map(String::from).collect()
                };
                ConfigChange::Volume(list)
            }
            _ => {
                return Err(format!(
                    "--change {s:?}: unknown or empty instruction {key:?} (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR, STOPSIGNAL, VOLUME)"
                ))
            }
        })
    }

    /// Applies the change to an image config's `config` object.
    fn apply(&self, c: &mut Map<String, Value>) {
        let set_map = |c: &mut Map<String, Value>, key: &str, items: &[String]| {
            let m = c.entry(key).or_insert_with(|| json!({}));
            if !m.is_object() {
                *m = json!({});
            }
            if let Some(m) = m.as_object_mut() {
                for i in items {
                    m.insert(i.clone(), json!({}));
                }
            }
        };
        match self {
            ConfigChange::Cmd(v) => {
                c.insert("Cmd".into(), json!(v));
            }
            ConfigChange::Entrypoint(v) => {
                c.insert("Entrypoint".into(), json!(v));
            }
            ConfigChange::Env(pairs) => {
                let mut env: Vec<String> = c
                    .get("Env")
                    .and_then(|e| serde_json::from_value(e.clone()).ok())
                    .unwrap_or_default();
                for (k, v) in pairs {
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) != k);
                    env.push(format!("{k}={v}"));
                }
                c.insert("Env".into(), json!(env));
            }
            ConfigChange::Workdir(w) => {
                c.insert("WorkingDir".into(), json!(w));
            }
            ConfigChange::Expose(p) => set_map(c, "ExposedPorts", p),
            ConfigChange::Volume(v) => set_map(c, "Volumes", v),
            ConfigChange::Label(pairs) => {
                let m = c.entry("Labels").or_insert_with(|| json!({}));
                if !m.is_object() {
                    *m = json!({});
                }
                if let Some(m) = m.as_object_mut() {
                    for (k, v) in pairs {
                        m.insert(k.clone(), json!(v));
                    }
                }
            }
            ConfigChange::User(u) => {
                c.insert("User".into(), json!(u));
            }
            ConfigChange::StopSignal(s) => {
                c.insert("StopSignal".into(), json!(s));
            }
        }
    }
}

/// What the new image gets besides the layer.
#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    /// Names to give it (full references); empty makes a dangling image, as `docker commit`
    /// without a name does.
    pub names: Vec<String>,
    /// The creation time, RFC 3339 (config `created` and the history entry's).
    pub created: String,
    /// `--message`: the history entry's `comment`.
    pub message: Option<String>,
    /// `--author`: the config's `author` and the history entry's.
    pub author: Option<String>,
    /// The history entry's `created_by` (docker puts the container's command there).
    pub created_by: String,
    /// Changes made first: what the container was run with (its command, env, ...).
    pub defaults: Vec<ConfigChange>,
    /// `--change` instructions, applied after `defaults`.
    pub changes: Vec<ConfigChange>,
    /// Entries of the upper dir to leave out, relative to the root
    /// ([`diff::placeholders`]: the mount points the runtime made).
    pub skip: std::collections::HashSet<std::path::PathBuf>,
    /// The container's id maps when it runs in its own user namespace: the layer's owners
    /// are written as the container sees them.
    pub owners: Option<diff::OwnerMap>,
}

/// OCI layer media type for a base layer's (Docker schema2 types become their OCI twins, so
/// that the new manifest is all OCI).
fn oci_layer_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => diff::LAYER_MEDIA_TYPE.into(),
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar".into(),
        other => other.into(),
    }
}

fn json_bytes(v: &Value, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| ImageError::Json {
        what: what.into(),
        source,
    })
}

/// Makes a new image from `base` (None: an image of the upper dir alone) and the upper dir
/// `upper` of a container standing on it (see the module's doc), and records it with
/// `opts.names`. The caller keeps `upper` still (a paused or stopped container).
///
/// # Errors
/// [`ImageError::Io`] reading the upper dir or writing blobs and the snapshot,
/// [`ImageError::Json`] / [`ImageError::BadManifest`] for a base config that is not an
/// object, the store's errors.
pub fn commit(store: &Store, base: Option<&ImageRecord>, upper: &Path, opts: &CommitOptions) -> Result<ImageRecord> {
    // Shared: a prune waits until the new record holds its blobs and snapshot.
    let _gc = store.gc_lock(false)?;
    let mut config: Value = match base {
        Some(b) => serde_json::from_slice(&store.read_blob(&b.id)?).map_err(|source| ImageError::Json {
            what: format!("image config {}", b.id),
            source,
        })?,
        None => json!({"architecture": crate::manifest::Platform::host().arch, "os": "linux", "config": {}}),
    };
    let layer = diff::write_layer(store, upper, &opts.skip, opts.owners.as_ref())?;
    let base_layers: Vec<LayerRecord> = base.map(|b| b.layers.clone()).unwrap_or_default();
    let (config_bytes, diff_ids) = new_config(&mut config, base, &base_layers, &layer, opts)?;
    let config_digest = Digest::of_bytes(&config_bytes);

    let chains = chain_ids(&diff_ids);
    let top_chain = chains.last().cloned().unwrap_or_else(|| layer.diff_id.clone());
    let parent = chains.len().checked_sub(2).map(|i| chains[i].clone());
    let spec = LayerSpec {
        digest: layer.digest.clone(),
        size: layer.size,
        compression: Compression::Gzip,
        diff_id: layer.diff_id.clone(),
        chain_id: top_chain.clone(),
        parent,
    };
    if !store.snapshots().has(&top_chain) {
        let f = store.open_blob(&layer.digest)?;
        let unpack = crate::pull::PullOptions::default().unpack;
        ingest_layer(store, std::io::BufReader::new(f), &spec, false, &unpack)?;
    }

    let mut layers: Vec<LayerRecord> = base_layers
        .into_iter()
        .map(|mut l| {
            l.media_type = oci_layer_type(&l.media_type);
            l
        })
        .collect();
    layers.push(LayerRecord {
        digest: layer.digest.clone(),
        media_type: layer.media_type.into(),
        size: layer.size,
        diff_id: layer.diff_id.clone(),
        chain_id: top_chain,
    });
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = json_bytes(&manifest, "manifest")?;
    let manifest_digest = Digest::of_bytes(&manifest_bytes);
    store.put_blob("image config", &config_bytes, &config_digest, None)?;
    store.put_blob("manifest", &manifest_bytes, &manifest_digest, None)?;
    let platform = base.map(|b| b.platform.clone()).unwrap_or_else(|| {
        let p = crate::manifest::Platform::host();
        format!("{}/{}", p.os, p.arch)
    });
    let rec = ImageRecord {
        id: config_digest,
        names: opts.names.clone(),
        manifest: manifest_digest,
        manifest_media_type: OCI_MANIFEST.into(),
        index: None,
        platform,
        size: config_bytes.len() as u64 + layers.iter().map(|l| l.size).sum::<u64>(),
        layers,
        unpacked_size: base.map_or(0, |b| b.unpacked_size(store)) + layer.tar_size,
        created: Some(opts.created.clone()),
        added: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    add_image(store, rec)
}

/// Applies `opts` and the new layer to `config`; returns its bytes and every diff id.
fn new_config(
    config: &mut Value,
    base: Option<&ImageRecord>,
    base_layers: &[LayerRecord],
    layer: &NewLayer,
    opts: &CommitOptions,
) -> Result<(Vec<u8>, Vec<Digest>)> {
    let bad = |reason: &str| ImageError::BadManifest {
        what: "image config",
        digest: base.map(|b| b.id.clone()).unwrap_or_else(|| layer.diff_id.clone()),
        reason: reason.into(),
    };
    let obj = config.as_object_mut().ok_or_else(|| bad("not a JSON object"))?;
    obj.insert("created".into(), json!(opts.created));
    if let Some(a) = &opts.author {
        obj.insert("author".into(), json!(a));
    }
    let c = obj.entry("config").or_insert_with(|| json!({}));
    if !c.is_object() {
        *c = json!({});
    }
    if let Some(c) = c.as_object_mut() {
        for ch in opts.defaults.iter().chain(&opts.changes) {
            ch.apply(c);
        }
    }
    let mut diff_ids: Vec<Digest> = base_layers.iter().map(|l| l.diff_id.clone()).collect();
    diff_ids.push(layer.diff_id.clone());
    obj.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
    );
    let mut entry = Map::new();
    entry.insert("created".into(), json!(opts.created));
    entry.insert("created_by".into(), json!(opts.created_by));
    if let Some(a) = &opts.author {
        entry.insert("author".into(), json!(a));
    }
    if let Some(m) = &opts.message {
        entry.insert("comment".into(), json!(m));
    }
    let history = obj.entry("history").or_insert_with(|| json!([]));
    if !history.is_array() {
        *history = json!([]);
    }
    if let Some(h) = history.as_array_mut() {
        h.push(Value::Object(entry));
    }
    Ok((json_bytes(config, "image config")?, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::ConfigChange as C;

    #[test]
    fn change_instructions() {
        assert_eq!(
            C::parse(r#"CMD ["echo","hi"]"#),
            Ok(C::Cmd(vec!["echo".into(), "hi".into()]))
        );
        assert_eq!(
            C::parse("CMD=echo hi"),
            Ok(C::Cmd(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]))
        );
        assert_eq!(C::parse("ENV A=1"), Ok(C::Env(vec![("A".into(), "1".into())])));
        assert_eq!(C::parse("ENV A 1 2"), Ok(C::Env(vec![("A".into(), "1 2".into())])));
        assert_eq!(C::parse("ENV=A=1"), Ok(C::Env(vec![("A".into(), "1".into())])));
        assert_eq!(
            C::parse(r#"LABEL a=1 b="x y""#),
            Ok(C::Label(vec![("a".into(), "1".into()), ("b".into(), "x y".into())]))
        );
        assert_eq!(
            C::parse("EXPOSE 80 53/udp"),
            Ok(C::Expose(vec!["80/tcp".into(), "53/udp".into()]))
        );
        assert_eq!(C::parse("workdir /srv"), Ok(C::Workdir("/srv".into())));
        assert!(C::parse("WORKDIR srv").is_err());
        assert!(C::parse("EXPOSE http").is_err());
        assert!(C::parse("FROM busybox").is_err());
        assert!(C::parse("CMD").is_err());
    }
}
