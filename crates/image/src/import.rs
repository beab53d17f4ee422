//! Images from a flat file-system tar (docker's `import`: what `docker export` writes):
//! the tar becomes the single layer of a new image, stored through the content store,
//! unpacked like a pulled layer, with a config made here (docker's `--change` and
//! `--message` applied by the caller through [`ImportConfig`]).

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::manifest::{self, Platform};
use crate::pull::{import_manifest, NoProgress};
use crate::records::ImageRecord;
use crate::reference::Reference;
use crate::store::Store;
use crate::unpack::{DeviceNodes, UnpackOptions};

/// What the new image's config says besides its layer (docker's `--change` instructions
/// and `--message`). Empty fields are left out of the config.
#[derive(Debug, Clone, Default)]
pub struct ImportConfig {
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `ENV K=V`, in order.
    pub env: Vec<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `EXPOSE 80/tcp`.
    pub exposed_ports: Vec<String>,
    /// `LABEL K=V`.
    pub labels: Vec<(String, String)>,
    /// `STOPSIGNAL`.
    pub stop_signal: Option<String>,
    /// `VOLUME`.
    pub volumes: Vec<String>,
    /// `--message`: the history entry's comment.
    pub message: Option<String>,
}

/// A writer that hashes what it passes on.
struct Tee<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Imports the flat tar read from `src` as a one-layer image named `name`
/// (`IMAGE[:TAG]`, normalised as a pull would; `:latest` when no tag), for this machine's
/// platform. The layer is stored uncompressed (its digest is its diff id), unpacked with
/// the rules of a pull (entries that would escape refused, device nodes only as root).
/// `source` names the input in errors.
///
/// # Errors
/// [`ImageError::InvalidReference`] for a bad name, [`ImageError::Io`] when the input
/// cannot be read or the store written, the unpack errors of a pulled layer
/// ([`ImageError::UnsafeEntry`], [`ImageError::LayerStream`] for input that is not a tar).
pub fn import_tar<R: Read>(
    store: &Store,
    mut src: R,
    source: &str,
    name: &str,
    cfg: &ImportConfig,
) -> Result<ImageRecord> {
    let reference = Reference::parse(name)?;
    let _gc = store.gc_lock(false)?;
    store.remove_stale_tmp();
    let mut tee = Tee {
        inner: store.blob_writer()?,
        hash: Sha256::new(),
    };
    let size = io::copy(&mut src, &mut tee).map_err(|e| ImageError::io("read", source, e))?;
    let layer = Digest::from_hasher(tee.hash);
    tee.inner.commit("imported layer", &layer, Some(size))?;
    let platform = Platform::host();
    let config = config_json(cfg, &platform, &layer);
    let config_bytes = to_vec(&config, "image config")?;
    let config_digest = Digest::of_bytes(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.to_string(),
            "size": size,
        }],
    });
    let manifest_bytes = to_vec(&manifest, "manifest")?;
    let manifest_digest = Digest::of_bytes(&manifest_bytes);
    let opts = UnpackOptions {
        devices: DeviceNodes::for_this_user(),
        keep_setuid: true,
        keep_ownership: true,
    };
    import_manifest(
        store,
        manifest_bytes,
        manifest_digest,
        config_bytes,
        vec![reference.to_string()],
        &platform,
        &opts,
        &NoProgress,
        |_| Ok(None),
    )
}

fn to_vec(v: &serde_json::Value, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|source| ImageError::Json {
        what: what.into(),
        source,
    })
}

fn config_json(cfg: &ImportConfig, platform: &Platform, layer: &Digest) -> serde_json::Value {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let mut c = serde_json::Map::new();
    if let Some(v) = &cfg.cmd {
        c.insert("Cmd".into(), v.clone().into());
    }
    if let Some(v) = &cfg.entrypoint {
        c.insert("Entrypoint".into(), v.clone().into());
    }
    if !cfg.env.is_empty() {
        c.insert("Env".into(), cfg.env.clone().into());
    }
    if let Some(v) = &cfg.workdir {
        c.insert("WorkingDir".into(), v.clone().into());
    }
    if let Some(v) = &cfg.user {
        c.insert("User".into(), v.clone().into());
    }
    if let Some(v) = &cfg.stop_signal {
        c.insert("StopSignal".into(), v.clone().into());
    }
    let set = |items: &[String]| -> serde_json::Value {
        items
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    if !cfg.exposed_ports.is_empty() {
        c.insert("ExposedPorts".into(), set(&cfg.exposed_ports));
    }
    if !cfg.volumes.is_empty() {
        c.insert("Volumes".into(), set(&cfg.volumes));
    }
    if !cfg.labels.is_empty() {
        let l: serde_json::Map<_, _> = cfg.labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        c.insert("Labels".into(), l.into());
    }
    let mut history = serde_json::json!({ "created": now, "created_by": "vessel import" });
    if let Some(m) = &cfg.message {
        history["comment"] = m.clone().into();
    }
    let mut v = serde_json::json!({
        "created": now,
        "architecture": platform.arch,
        "os": platform.os,
        "config": c,
        "rootfs": { "type": "layers", "diff_ids": [layer.to_string()] },
        "history": [history],
    });
    if let Some(variant) = &platform.variant {
        v["variant"] = variant.clone().into();
    }
    v
}
