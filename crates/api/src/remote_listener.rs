//! `vessel serve --listen ADDR:PORT`: HTTPS with mutual TLS only ([`crate::tls`]), the
//! same routes as the unix socket. Each connection's [`Peer`] goes into its requests'
//! extensions; a joining client (a pending token's proof, no trusted certificate yet)
//! may only call `POST /1.0/certificates`. A client the verifier refuses never gets
//! past the handshake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tower::ServiceExt;
use vessel_engine::Paths;

use crate::server::ServeError;
use crate::tls::verifier::{server_config, ClientVerifier, Peer};
use crate::tls::{server_identity, trust::TrustStore};

/// How long a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What `--listen`, `--tls-cert`, `--tls-key` and `--client-ca` say.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// The address to listen on (`127.0.0.1:8443`).
    pub listen: SocketAddr,
    /// The server certificate (PEM); with `key`. None: `ROOT/serve/server.crt`, made
    /// on first use.
    pub cert: Option<PathBuf>,
    /// The server key (PEM).
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) whose signed client certificates are trusted besides the
    /// trust store.
    pub client_ca: Option<PathBuf>,
}

/// Every route of the server: the Docker API and `/1.0` (with `/openapi.json`).
/// Put [`crate::docker::strip_version`] before it.
pub fn app(paths: Paths) -> Router {
    crate::docker::router(paths.clone()).merge(crate::v1::router(paths))
}

/// Binds `opts.listen` and serves `app` there (the same router as the unix socket's,
/// so that both share operations and exit codes) in a task until the task is aborted.
/// Prints the address and the server's certificate fingerprint to stderr. A client
/// that does not finish its handshake within [`HANDSHAKE_TIMEOUT`] is dropped.
///
/// Errors: [`ServeError::Tls`] for certificates and keys, [`ServeError::Listen`] when
/// the address cannot be bound.
pub async fn start(paths: Paths, opts: TlsOptions, app: Router) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let identity = server_identity(&paths.root, opts.cert.as_deref(), opts.key.as_deref())?;
    let fp = identity.fingerprint()?;
    let store = TrustStore::new(&paths.root);
    store.prune();
    let verifier = Arc::new(ClientVerifier::new(store, opts.client_ca.as_deref())?);
    let cfg = server_config(&identity, verifier.clone())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: opts.listen,
            source,
        })?;
    let local = listener.local_addr().unwrap_or(opts.listen);
    eprintln!("vessel serve: listening on https://{local} (mutual TLS; server fingerprint {fp})");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, from)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let verifier = verifier.clone();
            let app = app.clone();
            tokio::spawn(async move {
                // A refused handshake ends here: the client got nothing.
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        eprintln!("vessel serve: TLS handshake from {from} refused: {e}");
                        return;
                    }
                    Err(_) => {
                        eprintln!("vessel serve: TLS handshake from {from} timed out");
                        return;
                    }
                };
                let peer = {
                    let (_, conn) = tls.get_ref();
                    conn.peer_certificates()
                        .and_then(|c| c.split_first())
                        .and_then(|(ee, rest)| verifier.classify(ee, rest))
                };
                let Some(peer) = peer else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    handle(app.clone(), peer.clone(), req.map(Body::new))
                });
                // A client that trickles its request headers is dropped after 30 s.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    }))
}

async fn handle(
    app: Router,
    peer: Peer,
    mut req: Request,
) -> Result<axum::response::Response, std::convert::Infallible> {
    if matches!(peer, Peer::Joining { .. })
        && !(req.method() == axum::http::Method::POST && req.uri().path() == "/1.0/certificates")
    {
        return Ok(crate::v1::response::error(
            axum::http::StatusCode::FORBIDDEN,
            "not authorized: this certificate is not trusted yet; present the join token with POST /1.0/certificates (vessel remote add --token)",
        ));
    }
    req.extensions_mut().insert(peer);
    let req = crate::docker::strip_version(req).await;
    app.oneshot(req).await
}
