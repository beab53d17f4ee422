//! A local image to eStargz (`vessel image convert --estargz`, and `optimize` with the files
//! to prefetch): every layer rewritten by [`super::writer`], the config's
//! `rootfs.diff_ids` replaced, an OCI manifest whose layer descriptors carry the
//! `containerd.io/snapshot/stargz/toc.digest` and `io.containers.estargz.uncompressed-size`
//! annotations, and an image record under the new name. Each new layer is unpacked into its
//! snapshot from the new blob (which checks its diff id), so the new image runs locally too.

use std::io::BufReader;

use serde_json::{json, Value};

use super::writer::{write_layer, WriteOptions};
use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::layer::{decompress, ingest_layer, Compression, LayerSpec};
use crate::lazy::toc::{TOC_DIGEST_ANNOTATION, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::manifest::{OCI_CONFIG, OCI_MANIFEST};
use crate::records::{add_image, ImageRecord, LayerRecord};
use crate::store::Store;

/// The media type of eStargz layers (gzip: any reader of OCI layers reads them).
pub const ESTARGZ_MEDIA_TYPE: &str = crate::diff::LAYER_MEDIA_TYPE;

/// What a conversion made, per layer.
#[derive(Clone, Debug)]
pub struct ConvertedLayer {
    /// The source layer's blob.
    pub from: Digest,
    /// The eStargz blob.
    pub digest: Digest,
    /// Its TOC digest.
    pub toc_digest: Digest,
    /// Prioritized files it holds (0: no-prefetch landmark).
    pub prioritized: usize,
}

/// Converts image `src` in `store` to eStargz and records it as `name` (a full reference);
/// `opts.prioritized` applies to every layer (each puts first those of the files it holds).
/// Returns the new record and what each layer became.
///
/// # Errors
/// [`ImageError::Estargz`] for a layer that cannot be read, [`ImageError::BadManifest`] for a
/// config that is not a JSON object, the store's errors.
pub fn convert(
    store: &Store,
    src: &ImageRecord,
    name: &str,
    opts: &WriteOptions,
) -> Result<(ImageRecord, Vec<ConvertedLayer>)> {
    // Shared: a prune waits until the new record holds its blobs and snapshots.
    let _gc = store.gc_lock(false)?;
    let mut config: Value = serde_json::from_slice(&store.read_blob(&src.id)?).map_err(|source| ImageError::Json {
        what: format!("image config {}", src.id),
        source,
    })?;
    let mut written = Vec::new();
    for l in &src.layers {
        let compression = Compression::from_media_type(&l.media_type).unwrap_or(Compression::Gzip);
        let blob = BufReader::new(store.open_blob(&l.digest)?);
        let mut tar = decompress(blob, compression).map_err(|e| ImageError::Estargz {
            layer: l.digest.clone(),
            reason: format!("open the {} layer: {e}", compression.name()),
            hint: "",
        })?;
        written.push(write_layer(store, &l.digest, &mut tar, opts)?);
    }
    let diff_ids: Vec<Digest> = written.iter().map(|w| w.diff_id.clone()).collect();
    let obj = config.as_object_mut().ok_or_else(|| ImageError::BadManifest {
        what: "image config",
        digest: src.id.clone(),
        reason: "not a JSON object".into(),
    })?;
    obj.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
    );
    let config_bytes = serde_json::to_vec(&config).map_err(|source| ImageError::Json {
        what: "image config".into(),
        source,
    })?;
    let config_digest = Digest::of_bytes(&config_bytes);
    let chains = chain_ids(&diff_ids);
    let mut layers = Vec::new();
    for (i, w) in written.iter().enumerate() {
        let chain = chains[i].clone();
        if !store.snapshots().has(&chain) {
            let spec = LayerSpec {
                digest: w.digest.clone(),
                size: w.size,
                compression: Compression::Gzip,
                diff_id: w.diff_id.clone(),
                chain_id: chain.clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
            };
            let f = BufReader::new(store.open_blob(&w.digest)?);
            let unpack = crate::pull::PullOptions::default().unpack;
            ingest_layer(store, f, &spec, false, &unpack)?;
        }
        layers.push(LayerRecord {
            digest: w.digest.clone(),
            media_type: ESTARGZ_MEDIA_TYPE.into(),
            size: w.size,
            diff_id: w.diff_id.clone(),
            chain_id: chain,
        });
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_bytes.len()},
        "layers": written.iter().map(|w| json!({
            "mediaType": ESTARGZ_MEDIA_TYPE,
            "digest": w.digest.to_string(),
            "size": w.size,
            "annotations": {
                TOC_DIGEST_ANNOTATION: w.toc_digest.to_string(),
                UNCOMPRESSED_SIZE_ANNOTATION: w.uncompressed_size.to_string(),
            },
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|source| ImageError::Json {
        what: "manifest".into(),
        source,
    })?;
    let manifest_digest = Digest::of_bytes(&manifest_bytes);
    store.put_blob("image config", &config_bytes, &config_digest, None)?;
    store.put_blob("manifest", &manifest_bytes, &manifest_digest, None)?;
    let rec = ImageRecord {
        id: config_digest,
        names: vec![name.to_string()],
        manifest: manifest_digest,
        manifest_media_type: OCI_MANIFEST.into(),
        index: None,
        platform: src.platform.clone(),
        size: config_bytes.len() as u64 + layers.iter().map(|l| l.size).sum::<u64>(),
        layers,
        unpacked_size: written.iter().map(|w| w.uncompressed_size).sum(),
        created: src.created.clone(),
        added: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let rec = add_image(store, rec)?;
    let report = src
        .layers
        .iter()
        .zip(&written)
        .map(|(l, w)| ConvertedLayer {
            from: l.digest.clone(),
            digest: w.digest.clone(),
            toc_digest: w.toc_digest.clone(),
            prioritized: w.prioritized,
        })
        .collect();
    Ok((rec, report))
}
