//! The listener of `vessel serve`: a unix socket (mode 0660, group `vessel` when that
//! group exists, else root only), the Docker API router on it, and a clean stop on
//! SIGTERM or SIGINT (the socket file removed). With [`ServeOptions::metrics_listen`],
//! also plain HTTP on a TCP address that serves `GET /metrics` and nothing else
//! ([`crate::metrics`]), for Prometheus, which scrapes only HTTP(S) URLs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use vessel_engine::Paths;

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another server answers on the socket path.
    #[error("{0}: another server listens on this socket: stop it, or give another --socket")]
    InUse(PathBuf),
    /// A TCP address (`--listen`, `--metrics-listen`) cannot be bound.
    #[error("listen on {addr}: {source}: give a free address and port")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS set-up of `--listen` (certificates, keys, CA).
    #[error("--listen: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A file operation on the socket path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ServeError + 'a {
    move |source| ServeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Binds `socket`: a stale socket file (nobody answers) is replaced; a live one is
/// refused ([`ServeError::InUse`]).
fn bind(socket: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ServeError::InUse(socket.to_path_buf()));
        }
        std::fs::remove_file(socket).map_err(io("remove stale socket", socket))?;
    }
    let listener = UnixListener::bind(socket).map_err(io("bind", socket))?;
    let group = nix::unistd::Group::from_name("vessel").ok().flatten();
    if let Some(g) = &group {
        nix::unistd::chown(socket, None, Some(g.gid)).map_err(|e| ServeError::Io {
            op: "chown to group vessel",
            path: socket.to_path_buf(),
            source: e.into(),
        })?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", socket))?;
    Ok(listener)
}

/// What `vessel serve` listens on besides its unix socket.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// A TCP address for plain HTTP serving only `GET /metrics` (read-only: no
    /// container data beyond the metrics, no other route), e.g. `127.0.0.1:9323`.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--listen` and its certificates: HTTPS with mutual TLS.
    pub tls: Option<crate::remote_listener::TlsOptions>,
}

/// Serves the Docker Engine API for the instance at `paths` on the unix socket
/// `socket` until SIGTERM or SIGINT, then removes the socket. Streams still open
/// (attach, logs -f) get 5 seconds to end.
///
/// Must run inside a multi-threaded tokio runtime.
///
/// Errors: [`ServeError`] when the socket cannot be made.
pub async fn serve(paths: Paths, socket: &Path) -> Result<(), ServeError> {
    serve_with(paths, socket, ServeOptions::default()).await
}

/// [`serve`] with the listeners of `opts` too: HTTPS with mutual TLS on a TCP address
/// ([`crate::remote_listener`]: the same routes, `/1.0` included) and plain HTTP for
/// `GET /metrics` only.
///
/// Errors: [`ServeError`] when the socket or a listener cannot be made
/// ([`ServeError::Listen`] for a TCP address, [`ServeError::Tls`] for certificates).
pub async fn serve_with(paths: Paths, socket: &Path, opts: ServeOptions) -> Result<(), ServeError> {
    let router = crate::hardening::layer(
        crate::remote_listener::app(paths.clone()).merge(crate::metrics::router(paths.clone())),
    );
    let tcp = match opts.tls {
        Some(t) => Some(crate::remote_listener::start(paths.clone(), t, router.clone()).await?),
        None => None,
    };
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Listen { addr, source })?,
        ),
        None => None,
    };
    let listener = bind(socket)?;
    eprintln!("vessel serve: listening on unix://{}", socket.display());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    if let Some(l) = metrics_listener {
        let addr = l
            .local_addr()
            .map_err(io("local address of the metrics listener for", socket))?;
        eprintln!("vessel serve: metrics on http://{addr}/metrics");
        let app = crate::hardening::layer(crate::metrics::router(paths.clone()));
        servers.push(tokio::spawn(crate::conn::run(l, app, stop_rx.clone())));
    }
    let app = tower_layer::Layer::layer(&axum::middleware::map_request(crate::docker::strip_version), router);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(io("catch SIGTERM for", socket))?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(io("catch SIGINT for", socket))?;
    servers.push(tokio::spawn(crate::conn::run(listener, app, stop_rx)));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = stop_tx.send(true);
    if let Some(t) = tcp {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), futures_util::future::join_all(servers)).await;
    std::fs::remove_file(socket).map_err(io("remove", socket))?;
    eprintln!("vessel serve: stopped");
    Ok(())
}
