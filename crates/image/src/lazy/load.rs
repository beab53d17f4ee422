//! Getting blob ranges of a lazy layer into its local copy, each byte fetched once: the
//! readers' on-demand requests, the prefetch span and the background pieces all go
//! through one [`Loader`], which fetches only the missing parts of a span, waits for a
//! request already under way for the same bytes instead of sending it again, and tells
//! the background fetch when readers are waiting on the link ([`Demand`]).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::cache::BlobCache;
use super::fetch::Fetcher;
use crate::error::{ImageError, Result};

/// The background fetch waits while a reader needed the registry this recently, ms: the
/// program's next reads then do not queue behind a background piece on the link.
pub const YIELD_MS: u64 = 200;

/// When readers last needed the registry, ms since the server started.
pub struct Demand {
    start: Instant,
    last: std::sync::atomic::AtomicU64,
}

impl Default for Demand {
    fn default() -> Demand {
        Demand {
            start: Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl Demand {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Records that a reader needs (or will soon need) the registry.
    pub fn touch(&self) {
        self.last.store(self.now().max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until no reader has needed the registry for [`YIELD_MS`].
    pub fn wait_quiet(&self) {
        loop {
            let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
            if last == 0 || self.now().saturating_sub(last) >= YIELD_MS {
                return;
            }
            std::thread::sleep(Duration::from_millis(YIELD_MS / 4));
        }
    }
}

/// Who asks for a span: a reader (the program waits) or the background fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// A read the program waits for: counts as demand.
    Read,
    /// The prefetch span or a background piece.
    Background,
}

/// Fetches missing blob spans into a [`BlobCache`], once each.
pub struct Loader {
    cache: Arc<BlobCache>,
    fetcher: Arc<Fetcher>,
    /// Spans `[start, end)` being fetched now.
    inflight: Mutex<Vec<(u64, u64)>>,
    done: Condvar,
    /// When readers last needed the registry.
    pub demand: Demand,
}

/// Removes a span from the in-flight list when its request ends, however it ends.
struct Claim<'a> {
    loader: &'a Loader,
    span: (u64, u64),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.loader.inflight.lock() {
            if let Some(i) = f.iter().position(|s| *s == self.span) {
                f.swap_remove(i);
            }
        }
        self.loader.done.notify_all();
    }
}

impl Loader {
    /// A loader filling `cache` through `fetcher`.
    pub fn new(cache: Arc<BlobCache>, fetcher: Arc<Fetcher>) -> Loader {
        Loader {
            cache,
            fetcher,
            inflight: Mutex::new(Vec::new()),
            done: Condvar::new(),
            demand: Demand::default(),
        }
    }

    /// The local copy.
    pub fn cache(&self) -> &BlobCache {
        &self.cache
    }

    /// Makes blob bytes `[start, end)` local: waits for requests under way that overlap
    /// the span, then fetches what is still missing, one request per gap (so a span whose
    /// bytes are all missing is one request).
    ///
    /// # Errors
    /// [`ImageError::Lazy`] when the registry did not answer within the retry time,
    /// [`ImageError::Io`] when the copy cannot be written.
    pub fn ensure(&self, start: u64, end: u64, why: Why) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let claims = {
            let mut f = self.inflight.lock().map_err(|_| poisoned())?;
            loop {
                if self.cache.ranges().contains(start, end) {
                    return Ok(());
                }
                if !f.iter().any(|(s, e)| *s < end && start < *e) {
                    break;
                }
                f = self.done.wait(f).map_err(|_| poisoned())?;
            }
            let gaps = self.cache.ranges().gaps(start, end);
            f.extend(gaps.iter().copied());
            gaps.into_iter()
                .map(|span| Claim { loader: self, span })
                .collect::<Vec<_>>()
        };
        for c in &claims {
            let (s, e) = c.span;
            if why == Why::Read {
                self.demand.touch();
            }
            let bytes = self.fetcher.range(s, e)?;
            if why == Why::Read {
                self.demand.touch();
            }
            self.cache.put(s, &bytes)?;
        }
        Ok(())
    }
}

fn poisoned() -> ImageError {
    ImageError::io(
        "lock the in-flight list of",
        std::path::Path::new("lazy layer"),
        std::io::Error::other("a fetch thread panicked"),
    )
}
