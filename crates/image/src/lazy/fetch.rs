//! Range requests for one layer blob (RFC 9110 §14 `Range: bytes=a-b`, OCI distribution's
//! blob GET), with the registry client, TLS policy and credentials of `vessel pull`
//! ([`Registry::connect`]), retried until a bounded time has passed: a registry that is
//! gone gives an error after that time, never a hang.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oci_client::client::BlobResponse;

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::pull::{PullOptions, Registry};
use crate::reference::Reference;
use crate::store::Store;

/// How long one read keeps retrying a registry that does not answer, by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);
/// The environment variable that sets that time, in seconds (`VESSEL_LAZY_TIMEOUT=5`).
pub const RETRY_ENV: &str = "VESSEL_LAZY_TIMEOUT";

/// The retry time: [`RETRY_ENV`] when it holds a number of seconds, else
/// [`DEFAULT_RETRY_FOR`].
pub fn retry_for() -> Duration {
    std::env::var(RETRY_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_RETRY_FOR)
}

/// Fetches byte ranges of one blob.
pub struct Fetcher {
    registry: Registry,
    oref: oci_client::Reference,
    layer: Digest,
    rt: tokio::runtime::Runtime,
    retry_for: Duration,
}

impl Fetcher {
    /// A fetcher of `layer` from `reference`'s repository, with the credentials and TLS
    /// policy `vessel pull` would use (`tls_verify` as `--tls-verify`).
    ///
    /// # Errors
    /// [`ImageError::Auth`] for unreadable auth files, [`ImageError::Io`] when no async
    /// runtime can be started.
    pub fn new(store: &Store, reference: &Reference, tls_verify: Option<bool>, layer: Digest) -> Result<Fetcher> {
        let opts = PullOptions {
            tls_verify,
            ..Default::default()
        };
        let registry = Registry::connect(store, reference, &opts)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ImageError::io("start the async runtime", store.root(), e))?;
        Ok(Fetcher {
            registry,
            oref: Registry::oref(reference),
            layer,
            rt,
            retry_for: retry_for(),
        })
    }

    /// The blob's bytes `[start, end)`, retrying failed requests (every 0.1 s doubling up
    /// to 2 s; each request may take at most the time left) for at most the retry time
    /// ([`retry_for`]). Safe to call from several threads at once.
    ///
    /// # Errors
    /// [`ImageError::Lazy`] naming the range and the last failure when the time is up.
    pub fn range(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let deadline = Instant::now() + self.retry_for;
        let mut wait = Duration::from_millis(100);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = self.rt.block_on(async {
                tokio::time::timeout(left.max(Duration::from_millis(50)), self.once(start, end)).await
            });
            let why = match attempt {
                Ok(Ok(b)) => return Ok(b),
                Ok(Err(e)) => e,
                Err(_) => "no answer in time".to_string(),
            };
            if Instant::now() + wait >= deadline {
                return Err(ImageError::Lazy {
                    layer: self.layer.clone(),
                    reason: format!(
                        "bytes {start}-{} from registry {}: {why} (retried for {:.1} s)",
                        end.saturating_sub(1),
                        self.registry.registry,
                        self.retry_for.as_secs_f64()
                    ),
                    hint: ": check that the registry is up; reads of files not yet local fail until it is",
                });
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    async fn once(&self, start: u64, end: u64) -> std::result::Result<Vec<u8>, String> {
        let len = end.saturating_sub(start);
        let d = self.layer.to_string();
        let resp = self
            .registry
            .client
            .pull_blob_stream_partial(&self.oref, d.as_str(), start, Some(len))
            .await
            .map_err(|e| e.to_string())?;
        let (mut stream, skip) = match resp {
            BlobResponse::Partial(s) => (s.stream, 0),
            // A registry that ignores Range sends the whole blob: skip to the range.
            BlobResponse::Full(s) => (s.stream, start),
        };
        let mut out = Vec::with_capacity(len as usize);
        let mut seen: u64 = 0;
        while let Some(item) = stream.next().await {
            let b = match item {
                Ok(b) => b,
                // oci-client checks the whole blob's digest at its end: irrelevant here.
                Err(_) if out.len() as u64 >= len => break,
                Err(e) => return Err(e.to_string()),
            };
            let from = skip.saturating_sub(seen).min(b.len() as u64) as usize;
            seen += b.len() as u64;
            out.extend_from_slice(&b[from..]);
            if out.len() as u64 >= len {
                break;
            }
        }
        if (out.len() as u64) < len {
            return Err(format!("short answer: {} of {len} bytes", out.len()));
        }
        out.truncate(len as usize);
        Ok(out)
    }
}
