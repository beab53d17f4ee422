//! The HTTP/1.1 connection loop of `vessel serve`'s listeners (the unix socket and the
//! metrics TCP address): every connection in its own task, HTTP upgrades for the
//! hijacked attach streams, a header read timeout so that a client that sends its
//! request head slowly (or never finishes it) is closed instead of holding a
//! connection for ever, and a graceful stop (requests in flight finish; idle
//! connections close).
//!
//! axum's own `serve` sets no timer, so hyper applies no header read timeout there;
//! this loop is `axum::serve` with one.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tower_service::Service;

/// How long a client may take to send a request's head (request line and headers),
/// from the moment the server waits for it, unless `VESSEL_API_HEADER_TIMEOUT`
/// (seconds) says otherwise: hyper's default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The header read timeout in force: `VESSEL_API_HEADER_TIMEOUT` (whole seconds, at
/// least 1) when set and valid, else [`HEADER_READ_TIMEOUT`].
pub fn header_read_timeout() -> Duration {
    std::env::var("VESSEL_API_HEADER_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s >= 1)
        .map_or(HEADER_READ_TIMEOUT, Duration::from_secs)
}

/// Serves `svc` on every connection `listener` accepts until `stop` turns true, then
/// lets the connections end gracefully and returns once they have.
pub async fn run<L, S>(mut listener: L, svc: S, mut stop: watch::Receiver<bool>)
where
    L: Listener,
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let timeout = header_read_timeout();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (io, _addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        // Finished connection tasks are collected as new ones come.
        while conns.try_join_next().is_some() {}
        let svc = svc.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let svc = TowerToHyperService::new(tower::util::MapRequest::new(svc, |r: Request<Incoming>| {
                r.map(Body::new)
            }));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(io), svc)
                .with_upgrades();
            let mut conn = std::pin::pin!(conn);
            let stopping = tokio::select! {
                _ = conn.as_mut() => false,
                r = stop.wait_for(|s| *s) => r.is_ok(),
            };
            if stopping {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}
