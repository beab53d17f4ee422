//! Pushing a local image to a registry (OCI distribution spec, "Push"): for each blob (the
//! layers, then the config) a HEAD tells whether the registry has it already (then it is
//! skipped); missing blobs are uploaded from the content store in chunks; the manifest goes
//! last, under the destination's tag (or by digest), byte for byte as stored, so its digest
//! stays the image's. Credentials and the TLS policy are the pull's ([`Registry::connect`]).

use std::io::Read;
use std::sync::Arc;

use futures_util::StreamExt;
use oci_client::RegistryOperation;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::pull::{PullOptions, Registry};
use crate::records::ImageRecord;
use crate::reference::Reference;
use crate::registry_error::registry_err;
use crate::store::Store;

/// Receives push progress (called from several tasks at once).
pub trait PushProgress: Send + Sync {
    /// A blob of `size` bytes is considered.
    fn blob_start(&self, _digest: &Digest, _size: u64) {}
    /// `n` more bytes of it were sent.
    fn blob_bytes(&self, _digest: &Digest, _n: u64) {}
    /// It is on the registry; `skipped` when it was there already.
    fn blob_done(&self, _digest: &Digest, _skipped: bool) {}
}

/// A [`PushProgress`] that ignores everything.
pub struct NoPushProgress;
impl PushProgress for NoPushProgress {}

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// The manifest's digest (the image's digest on the registry).
    pub manifest: Option<Digest>,
    /// Blobs uploaded.
    pub uploaded: Vec<Digest>,
    /// Blobs the registry had already (HEAD answered 200).
    pub skipped: Vec<Digest>,
}

/// Size of the pieces a blob is read and sent in, bytes.
const CHUNK: usize = 1 << 20;

/// Pushes image `rec` from `store` to `dest` (its registry, repository and tag; a digest-only
/// reference pushes the manifest by its digest). `opts` gives the TLS policy and credentials
/// as for a pull (`platform`, `unpack` and concurrency are not used).
///
/// # Errors
/// [`ImageError::Registry`] (with a hint to `vessel login` when the registry refuses),
/// [`ImageError::RegistryUnreachable`], [`ImageError::RegistryUnresolvable`], and the
/// store's errors for a missing blob (pull the image again).
pub async fn push(
    store: &Store,
    rec: &ImageRecord,
    dest: &Reference,
    opts: &PullOptions,
    progress: Arc<dyn PushProgress>,
) -> Result<PushReport> {
    let reg = Registry::connect(store, dest, opts)?;
    let oref = Registry::oref(dest);
    let target = dest.to_string();
    for op in [RegistryOperation::Push, RegistryOperation::Pull] {
        reg.client
            .auth(&oref, &reg.auth, op)
            .await
            .map_err(|e| registry_err(&reg.registry, format!("log in to push {target}"), e))?;
    }
    let manifest_bytes = store.read_blob(&rec.manifest)?;
    let mut blobs: Vec<(Digest, u64)> = rec.layers.iter().map(|l| (l.digest.clone(), l.size)).collect();
    let config_size = store.blob_size(&rec.id).ok_or_else(|| {
        ImageError::io(
            "read blob",
            store.blob_path(&rec.id),
            std::io::ErrorKind::NotFound.into(),
        )
    })?;
    blobs.push((rec.id.clone(), config_size));
    let mut report = PushReport::default();
    for (digest, size) in blobs {
        progress.blob_start(&digest, size);
        let d = digest.to_string();
        let exists = reg
            .client
            .blob_exists(&oref, &d)
            .await
            .map_err(|e| registry_err(&reg.registry, format!("check blob {digest} of {target}"), e))?;
        if exists {
            progress.blob_done(&digest, true);
            report.skipped.push(digest);
            continue;
        }
        let file = store.open_blob(&digest)?;
        let path = store.blob_path(&digest);
        let p = progress.clone();
        let dg = digest.clone();
        let stream = futures_util::stream::unfold(Some(file), move |state| {
            let p = p.clone();
            let dg = dg.clone();
            let path = path.clone();
            async move {
                let mut f = state?;
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                while filled < CHUNK {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) => {
                            let err = oci_client::errors::OciDistributionError::GenericError(Some(format!(
                                "read {}: {e}",
                                path.display()
                            )));
                            return Some((Err(err), None));
                        }
                    }
                }
                if filled == 0 {
                    return None;
                }
                buf.truncate(filled);
                p.blob_bytes(&dg, filled as u64);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            }
        })
        .boxed();
        reg.client
            .push_blob_stream(&oref, stream, &d, Some(size))
            .await
            .map_err(|e| registry_err(&reg.registry, format!("push blob {digest} to {target}"), e))?;
        progress.blob_done(&digest, false);
        report.uploaded.push(digest);
    }
    let content_type = http::HeaderValue::from_str(&rec.manifest_media_type)
        .unwrap_or_else(|_| http::HeaderValue::from_static(crate::manifest::OCI_MANIFEST));
    reg.client
        .push_manifest_raw(&oref, manifest_bytes, content_type)
        .await
        .map_err(|e| registry_err(&reg.registry, format!("push manifest {target}"), e))?;
    report.manifest = Some(rec.manifest.clone());
    Ok(report)
}
