//! Pulling from registries (OCI distribution spec) through oci-client: resolve the reference
//! (index → platform manifest), fetch the config, then download layers concurrently, each
//! streamed into the content store and unpacked into its snapshot as it arrives.

use std::io::{self, Read};
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::auth::{self, Credentials};
use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::layer::{ingest_layer, Compression, LayerSpec};
use crate::manifest::{self, choose_platform, parse_config, parse_manifestish, Manifestish, Platform};
use crate::records::{add_image, ImageRecord, LayerRecord};
use crate::reference::Reference;
use crate::registry_error::{is_not_found, refuses_credentials, registry_err};
use crate::store::Store;
use crate::unpack::{DeviceNodes, UnpackOptions};

/// Largest manifest or config accepted, bytes (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST_SIZE: u64 = 8 << 20;

/// How to pull.
#[derive(Clone, Debug)]
pub struct PullOptions {
    /// The platform to resolve an index to (default: this machine's).
    pub platform: Option<Platform>,
    /// `Some(false)`: plain http and no certificate checks; `Some(true)`: https even for
    /// localhost; `None`: https except for registries on the loopback (podman's default).
    pub tls_verify: Option<bool>,
    /// Credentials to use instead of those found in auth files.
    pub credentials: Option<Credentials>,
    /// Layers downloaded at once.
    pub max_concurrent: usize,
    /// What layer entries may keep.
    pub unpack: UnpackOptions,
}

impl Default for PullOptions {
    /// Host platform, default TLS policy, credentials from files, 3 concurrent layers, and
    /// unpack rules of an image runtime: setuid kept (su, ping), device nodes created as
    /// root and skipped otherwise ([`DeviceNodes::for_this_user`]).
    fn default() -> Self {
        PullOptions {
            platform: None,
            tls_verify: None,
            credentials: None,
            max_concurrent: 3,
            unpack: UnpackOptions {
                devices: DeviceNodes::for_this_user(),
                keep_setuid: true,
                keep_ownership: true,
            },
        }
    }
}

/// How a layer was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerOutcome {
    /// Blob and snapshot were present.
    AlreadyPresent,
    /// The blob was present; the snapshot was unpacked from it.
    UnpackedFromStore,
    /// Downloaded and unpacked.
    Downloaded,
}

/// Receives pull progress (called from several tasks at once).
pub trait Progress: Send + Sync {
    /// The reference resolved to `manifest` with `layers` layers.
    fn resolved(&self, _reference: &str, _manifest: &Digest, _layers: usize) {}
    /// A layer of `size` bytes starts.
    fn layer_start(&self, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of a layer arrived.
    fn layer_bytes(&self, _digest: &Digest, _n: u64) {}
    /// A layer is done.
    fn layer_done(&self, _digest: &Digest, _outcome: LayerOutcome) {}
    /// `n` device node entries of a layer were left out ([`DeviceNodes::Skip`]: rootless).
    fn devices_skipped(&self, _digest: &Digest, _n: u64) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// A connected registry client for one reference.
pub struct Registry {
    pub(crate) client: Client,
    pub(crate) auth: RegistryAuth,
    pub(crate) registry: String,
}

impl Registry {
    /// A client for `reference`'s registry with the TLS policy and credentials of `opts`
    /// (credentials from auth files when `opts` has none).
    ///
    /// # Errors
    /// [`ImageError::Auth`] for unreadable auth files.
    pub fn connect(store: &Store, reference: &Reference, opts: &PullOptions) -> Result<Registry> {
        // Installing the process-wide rustls provider fails only when one is set already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let insecure = match opts.tls_verify {
            Some(v) => !v,
            None => crate::registries::insecure(store.root(), &reference.registry)?
                .unwrap_or_else(|| reference.is_local_registry()),
        };
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: opts.tls_verify == Some(false),
            max_concurrent_download: opts.max_concurrent.max(1),
            ..Default::default()
        };
        let creds = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(store.root(), &reference.registry)?,
        };
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Client::new(config),
            auth,
            registry: reference.registry.clone(),
        })
    }

    pub(crate) fn oref(reference: &Reference) -> oci_client::Reference {
        match (&reference.tag, &reference.digest) {
            (_, Some(d)) => oci_client::Reference::with_digest(
                reference.registry.clone(),
                reference.repository.clone(),
                d.to_string(),
            ),
            (Some(t), None) => {
                oci_client::Reference::with_tag(reference.registry.clone(), reference.repository.clone(), t.clone())
            }
            (None, None) => oci_client::Reference::with_tag(
                reference.registry.clone(),
                reference.repository.clone(),
                "latest".into(),
            ),
        }
    }

    /// Checks the credentials against the registry (a tag listing of a probe repository: 401,
    /// 403, UNAUTHORIZED/DENIED or a failed token request mean refused; any other answer, such
    /// as NAME_UNKNOWN, means the registry let the credentials in).
    ///
    /// # Errors
    /// [`ImageError::Registry`] when the registry refuses them or cannot be reached.
    pub async fn check_login(&self) -> Result<()> {
        let probe =
            oci_client::Reference::with_tag(self.registry.clone(), "vessel/login-check".into(), "latest".into());
        match self.client.list_tags(&probe, &self.auth, Some(1), None).await {
            Ok(_) => Ok(()),
            Err(e) if refuses_credentials(&e) => Err(registry_err(&self.registry, "log in".into(), e)),
            // Anything else (most often NAME_UNKNOWN for the probe repository) came from a
            // registry that accepted the credentials.
            Err(_) => Ok(()),
        }
    }

    /// Fetches a manifest or index by tag or digest, verifying the digest when pinned.
    async fn manifest(&self, reference: &Reference) -> Result<(Vec<u8>, Digest)> {
        let (data, digest) = self
            .client
            .pull_manifest_raw(&Self::oref(reference), &self.auth, &manifest::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    ImageError::NotInRegistry {
                        reference: reference.to_string(),
                        registry: self.registry.clone(),
                    }
                } else {
                    registry_err(&self.registry, format!("pull manifest {reference}"), e)
                }
            })?;
        if data.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(ImageError::BadManifest {
                what: "manifest",
                digest: Digest::of_bytes(&data),
                reason: "larger than 8 MiB".into(),
            });
        }
        let actual = Digest::of_bytes(&data);
        if let Some(d) = &reference.digest {
            if *d != actual {
                return Err(ImageError::DigestMismatch {
                    what: "manifest".into(),
                    expected: d.clone(),
                    actual,
                });
            }
        } else if let Ok(claimed) = Digest::parse(&digest) {
            if claimed != actual {
                return Err(ImageError::DigestMismatch {
                    what: "manifest".into(),
                    expected: claimed,
                    actual,
                });
            }
        }
        Ok((data.to_vec(), actual))
    }

    /// Fetches a small blob (config) into memory, verified.
    async fn small_blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        size: u64,
        referrer: &Digest,
    ) -> Result<Vec<u8>> {
        if size > MAX_MANIFEST_SIZE {
            return Err(ImageError::BadManifest {
                what: "image config",
                digest: digest.clone(),
                reason: format!("{size} bytes is larger than 8 MiB"),
            });
        }
        let d = digest.to_string();
        let mut s = self
            .client
            .pull_blob_stream(&Self::oref(reference), d.as_str())
            .await
            .map_err(|e| self.blob_err(e, digest, referrer))?;
        let mut out = Vec::with_capacity(size as usize);
        while let Some(chunk) = s.stream.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(_) if out.len() as u64 >= size => break,
                Err(e) => {
                    return Err(ImageError::Registry {
                        registry: self.registry.clone(),
                        what: format!("pull blob {digest}"),
                        message: e.to_string(),
                        hint: "",
                    })
                }
            }
            if out.len() as u64 > size {
                break;
            }
        }
        if out.len() as u64 != size {
            return Err(ImageError::SizeMismatch {
                what: "image config".into(),
                digest: digest.clone(),
                expected: size,
                actual: out.len() as u64,
            });
        }
        let actual = Digest::of_bytes(&out);
        if actual != *digest {
            return Err(ImageError::DigestMismatch {
                what: "image config".into(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(out)
    }

    fn blob_err(&self, e: OciDistributionError, digest: &Digest, referrer: &Digest) -> ImageError {
        if is_not_found(&e) {
            ImageError::MissingBlob {
                digest: digest.clone(),
                referrer: format!("manifest {referrer}"),
                source_name: format!("registry {}", self.registry),
            }
        } else {
            registry_err(&self.registry, format!("pull blob {digest}"), e)
        }
    }
}

/// Reads what the download task sends.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<bytes::Bytes>>,
    cur: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// The checked content of a resolved image, before its layers are fetched.
pub(crate) struct Resolved {
    manifest_bytes: Vec<u8>,
    pub(crate) manifest_digest: Digest,
    manifest_media_type: String,
    index: Option<(Vec<u8>, Digest)>,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    platform: String,
    created: Option<String>,
    pub(crate) layers: Vec<(LayerSpec, String)>,
}

/// Pulls `reference` into `store`: the image record is written only after every blob and
/// snapshot was verified and published; a failed pull keeps no record and no unverified data.
///
/// # Errors
/// Registry, verification, platform and unpack errors (see [`ImageError`]), each naming the
/// digest concerned.
pub async fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
) -> Result<ImageRecord> {
    let _gc = store.gc_lock(false)?;
    // A pull killed part way left its partial blob and snapshot under tmp/: this one restarts
    // the download and unpack from scratch, so those are garbage.
    store.remove_stale_tmp();
    let (reg, resolved, _) = resolve_remote(store, reference, opts).await?;
    progress.resolved(&reference.to_string(), &resolved.manifest_digest, resolved.layers.len());
    fetch_layers(store, reg, reference, opts, progress, resolved).await
}

/// Resolves `reference` at its registry: the platform's manifest (through an index) and
/// its config, checked, with the layer specs.
pub(crate) async fn resolve_remote(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<(Registry, Resolved, oci_spec::image::ImageManifest)> {
    let reg = Registry::connect(store, reference, opts)?;
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let (top, top_digest) = reg.manifest(reference).await?;
    let (index, manifest_bytes, manifest_digest) = match parse_manifestish(&top, &top_digest)? {
        Manifestish::Index(i) => {
            let (d, _mt, size) = choose_platform(&i, &top_digest, &reference.to_string(), &want)?;
            // The platform manifest is named by digest: a stored copy (verified) is the same.
            let local = size <= MAX_MANIFEST_SIZE && store.blob_size(&d) == Some(size);
            let (m, md) = match local.then(|| store.read_blob(&d)) {
                Some(Ok(b)) => (b, d.clone()),
                _ => reg.manifest(&reference.with_digest(d.clone())).await?,
            };
            if m.len() as u64 != size {
                return Err(ImageError::SizeMismatch {
                    what: "manifest".into(),
                    digest: d,
                    expected: size,
                    actual: m.len() as u64,
                });
            }
            (Some((top, top_digest)), m, md)
        }
        Manifestish::Manifest(_) => (None, top, top_digest),
    };
    let Manifestish::Manifest(m) = parse_manifestish(&manifest_bytes, &manifest_digest)? else {
        return Err(ImageError::BadManifest {
            what: "manifest",
            digest: manifest_digest,
            reason: "an index names another index; nested indexes are not supported".into(),
        });
    };
    let config_digest = Digest::parse(m.config().digest().as_ref())?;
    // A config already in the store (verified when written, and again by read_blob) saves a
    // round trip: the usual case of a warm pull.
    let config_size = m.config().size();
    let config_local = config_size <= MAX_MANIFEST_SIZE && store.blob_size(&config_digest) == Some(config_size);
    let config_bytes = match config_local.then(|| store.read_blob(&config_digest)) {
        Some(Ok(b)) => b,
        _ => {
            reg.small_blob(reference, &config_digest, m.config().size(), &manifest_digest)
                .await?
        }
    };
    let resolved = resolve(
        manifest_bytes,
        manifest_digest,
        &m,
        index,
        config_bytes,
        config_digest,
        &want,
        reference,
    )?;
    Ok((reg, resolved, m))
}

/// Downloads and unpacks the layers of `resolved` that are not local, then records the image.
async fn fetch_layers(
    store: &Store,
    reg: Registry,
    reference: &Reference,
    opts: &PullOptions,
    progress: Arc<dyn Progress>,
    resolved: Resolved,
) -> Result<ImageRecord> {
    let reg = Arc::new(reg);
    let oref = Registry::oref(reference);
    let results: Vec<()> = futures_util::stream::iter(resolved.layers.iter().cloned())
        .map(|(spec, _mt)| {
            let store = store.clone();
            let reg = reg.clone();
            let progress = progress.clone();
            let oref = oref.clone();
            let unpack = opts.unpack.clone();
            let referrer = resolved.manifest_digest.clone();
            async move {
                progress.layer_start(&spec.digest, spec.size);
                let snaps = store.snapshots();
                let outcome = if snaps.has(&spec.chain_id) && store.has_blob(&spec.digest) {
                    LayerOutcome::AlreadyPresent
                } else if store.has_blob(&spec.digest) {
                    let st = store.clone();
                    let sp = spec.clone();
                    let stats = tokio::task::spawn_blocking(move || {
                        let f = st.open_blob(&sp.digest)?;
                        ingest_layer(&st, io::BufReader::with_capacity(256 * 1024, f), &sp, false, &unpack)
                    })
                    .await
                    .map_err(|e| ImageError::io("unpack", store.blob_path(&spec.digest), io::Error::other(e)))??;
                    if stats.skipped_devices > 0 {
                        progress.devices_skipped(&spec.digest, stats.skipped_devices);
                    }
                    LayerOutcome::UnpackedFromStore
                } else {
                    let d = spec.digest.to_string();
                    let mut s = reg
                        .client
                        .pull_blob_stream(&oref, d.as_str())
                        .await
                        .map_err(|e| reg.blob_err(e, &spec.digest, &referrer))?;
                    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(32);
                    let st = store.clone();
                    let sp = spec.clone();
                    let task = tokio::task::spawn_blocking(move || {
                        ingest_layer(
                            &st,
                            ChannelReader {
                                rx,
                                cur: bytes::Bytes::new(),
                            },
                            &sp,
                            true,
                            &unpack,
                        )
                    });
                    let mut received: u64 = 0;
                    while let Some(item) = s.stream.next().await {
                        match item {
                            Ok(b) => {
                                received += b.len() as u64;
                                progress.layer_bytes(&spec.digest, b.len() as u64);
                                if tx.send(Ok(b)).await.is_err() || received > spec.size {
                                    break;
                                }
                            }
                            // oci-client's own digest check fails at the end of the stream: let
                            // ours report it, naming both digests.
                            Err(_) if received >= spec.size => break,
                            Err(e) => {
                                let _ = tx.send(Err(e)).await;
                                break;
                            }
                        }
                    }
                    drop(tx);
                    let stats = task
                        .await
                        .map_err(|e| ImageError::io("unpack", store.blob_path(&spec.digest), io::Error::other(e)))??;
                    if stats.skipped_devices > 0 {
                        progress.devices_skipped(&spec.digest, stats.skipped_devices);
                    }
                    LayerOutcome::Downloaded
                };
                progress.layer_done(&spec.digest, outcome);
                Ok::<(), ImageError>(())
            }
        })
        .buffer_unordered(opts.max_concurrent.max(1))
        .try_collect()
        .await?;
    drop(results);
    finish(store, resolved, vec![reference.to_string()])
}

/// Checks a manifest and its config and computes the layer specs.
#[allow(clippy::too_many_arguments)]
fn resolve(
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    m: &oci_spec::image::ImageManifest,
    index: Option<(Vec<u8>, Digest)>,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    want: &Platform,
    reference: &Reference,
) -> Result<Resolved> {
    let (config, diff_ids) = parse_config(&config_bytes, &config_digest, m.layers().len())?;
    let os = config.os().to_string();
    let arch = config.architecture().to_string();
    let found = manifest::config_platform(&config);
    if !os.is_empty() && !arch.is_empty() && !want.matches(&os, &arch, config.variant().as_deref()) {
        return Err(ImageError::PlatformMismatch {
            reference: reference.to_string(),
            digest: manifest_digest,
            wanted: want.to_string(),
            found,
        });
    }
    build_resolved(
        manifest_bytes,
        manifest_digest,
        m,
        index,
        config_bytes,
        config_digest,
        found,
        config.created().clone(),
        &diff_ids,
    )
}

#[allow(clippy::too_many_arguments)]
fn build_resolved(
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    m: &oci_spec::image::ImageManifest,
    index: Option<(Vec<u8>, Digest)>,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    platform: String,
    created: Option<String>,
    diff_ids: &[Digest],
) -> Result<Resolved> {
    let chains = chain_ids(diff_ids);
    let mut layers = Vec::new();
    for (i, l) in m.layers().iter().enumerate() {
        let digest = Digest::parse(l.digest().as_ref())?;
        let mt = l.media_type().to_string();
        let compression = Compression::from_media_type(&mt).ok_or_else(|| ImageError::UnsupportedMediaType {
            digest: digest.clone(),
            media_type: mt.clone(),
        })?;
        layers.push((
            LayerSpec {
                digest,
                size: l.size(),
                compression,
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: if i == 0 { None } else { Some(chains[i - 1].clone()) },
            },
            mt,
        ));
    }
    let manifest_media_type = m
        .media_type()
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
    Ok(Resolved {
        manifest_bytes,
        manifest_digest,
        manifest_media_type,
        index,
        config_bytes,
        config_digest,
        platform,
        created,
        layers,
    })
}

/// Stores manifest, index and config blobs and writes the image record.
pub(crate) fn finish(store: &Store, r: Resolved, names: Vec<String>) -> Result<ImageRecord> {
    store.put_blob("image config", &r.config_bytes, &r.config_digest, None)?;
    store.put_blob("manifest", &r.manifest_bytes, &r.manifest_digest, None)?;
    if let Some((b, d)) = &r.index {
        store.put_blob("index", b, d, None)?;
    }
    let size = r.config_bytes.len() as u64 + r.layers.iter().map(|(l, _)| l.size).sum::<u64>();
    let snaps = store.snapshots();
    let unpacked_size = r.layers.iter().map(|(l, _)| snaps.unpacked_size(&l.chain_id)).sum();
    let rec = ImageRecord {
        id: r.config_digest,
        names,
        manifest: r.manifest_digest,
        manifest_media_type: r.manifest_media_type,
        index: r.index.map(|(_, d)| d),
        platform: r.platform,
        layers: r
            .layers
            .into_iter()
            .map(|(l, mt)| LayerRecord {
                digest: l.digest,
                media_type: mt,
                size: l.size,
                diff_id: l.diff_id,
                chain_id: l.chain_id,
            })
            .collect(),
        size,
        unpacked_size,
        created: r.created,
        added: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    add_image(store, rec)
}

/// For the layout importer: checks a manifest and config the same way a pull does, ingests
/// the layers with `open_layer` giving each blob's bytes, and records the image.
#[allow(clippy::too_many_arguments)]
pub(crate) fn import_manifest(
    store: &Store,
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    config_bytes: Vec<u8>,
    names: Vec<String>,
    want: &Platform,
    opts: &UnpackOptions,
    progress: &dyn Progress,
    mut open_layer: impl FnMut(&LayerSpec) -> Result<Option<Box<dyn Read>>>,
) -> Result<ImageRecord> {
    let Manifestish::Manifest(m) = parse_manifestish(&manifest_bytes, &manifest_digest)? else {
        return Err(ImageError::BadManifest {
            what: "manifest",
            digest: manifest_digest,
            reason: "expected a manifest, found an index".into(),
        });
    };
    let config_digest = Digest::parse(m.config().digest().as_ref())?;
    let actual = Digest::of_bytes(&config_bytes);
    if actual != config_digest {
        return Err(ImageError::DigestMismatch {
            what: "image config".into(),
            expected: config_digest,
            actual,
        });
    }
    let placeholder = Reference {
        registry: "localhost".into(),
        repository: "import".into(),
        tag: None,
        digest: Some(manifest_digest.clone()),
    };
    let reference = names
        .first()
        .and_then(|n| Reference::parse(n).ok())
        .unwrap_or(placeholder);
    let resolved = resolve(
        manifest_bytes,
        manifest_digest,
        &m,
        None,
        config_bytes,
        config_digest,
        want,
        &reference,
    )?;
    for (spec, _) in &resolved.layers {
        if store.snapshots().has(&spec.chain_id) && store.has_blob(&spec.digest) {
            continue;
        }
        let (reader, write) = match open_layer(spec)? {
            Some(r) => (r, true),
            None => (
                Box::new(io::BufReader::new(store.open_blob(&spec.digest)?)) as Box<dyn Read>,
                false,
            ),
        };
        let stats = ingest_layer(store, reader, spec, write, opts)?;
        if stats.skipped_devices > 0 {
            progress.devices_skipped(&spec.digest, stats.skipped_devices);
        }
    }
    finish(store, resolved, names)
}
