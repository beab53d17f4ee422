//! The client of a remote `vessel serve --listen` ([`Remote`]): HTTPS with this
//! user's client certificate, the server's certificate pinned by its SHA-256
//! fingerprint (no CA, no host name check: trust on first use or the join token's
//! fingerprint, as Incus does). Typed calls for the Docker API routes and `/1.0`
//! (async operations waited for), and [`Remote::request_stream`] for bodies streamed
//! both ways (logs, bulk transfer for migration). [`config`] keeps the remotes a user
//! added and the user's certificate.
//!
//! Each call opens its own connection (TCP, TLS 1.3, HTTP/1.1): calls are few and a
//! stream holds its connection for itself.

mod calls;
pub mod config;
mod pinned;

use std::net::ToSocketAddrs;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::tls::trust::join_name;
use crate::tls::{Identity, TlsError};
pub use pinned::PinnedServer;

/// Why a call to a remote failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `https://HOST[:PORT]`.
    #[error("{0}: give the remote as https://HOST:PORT")]
    Url(String),
    /// No TCP connection.
    #[error("connect to {addr}: {error}: is `vessel serve --listen` running there?")]
    Connect {
        /// host:port.
        addr: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The server's certificate is not the one pinned.
    #[error("{addr}: the server's certificate fingerprint is {got}, not {expected} as pinned: someone may be in between; if the server's certificate changed, remove and add the remote again")]
    Fingerprint {
        /// host:port.
        addr: String,
        /// Pinned.
        expected: String,
        /// Presented.
        got: String,
    },
    /// The TLS handshake failed (a server that does not trust this client refuses it).
    #[error("TLS handshake with {addr}: {error}: the server does not trust this client's certificate (add it with a token from `vessel trust add` on the server)")]
    Handshake {
        /// host:port.
        addr: String,
        /// rustls's error, as I/O.
        error: std::io::Error,
    },
    /// HTTP failed on the connection.
    #[error("HTTP with {addr}: {error}")]
    Http {
        /// host:port.
        addr: String,
        /// hyper's error.
        error: hyper::Error,
    },
    /// The server answered with an error.
    #[error("{status}: {message}")]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The server's message.
        message: String,
    },
    /// An answer that is not the JSON expected.
    #[error("{what}: {detail}")]
    Decode {
        /// Which answer.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// Certificates and keys.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A remote vessel server.
#[derive(Clone)]
pub struct Remote {
    addr: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    seen: Arc<Mutex<Option<String>>>,
    expected: Option<String>,
}

/// `https://HOST[:PORT][/]` → (`HOST:PORT`, HOST); the port defaults to 8443.
pub fn parse_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return Err(ClientError::Url(url.to_string()));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(|| ClientError::Url(url.to_string()))?;
        let port = tail.strip_prefix(':').unwrap_or("8443");
        (h.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (rest.to_string(), "8443"),
        }
    };
    let port: u16 = port.parse().map_err(|_| ClientError::Url(url.to_string()))?;
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((addr, host))
}

impl Remote {
    /// A remote at `url` whose certificate must have fingerprint `fingerprint`, called
    /// with `identity` (this user's client certificate).
    ///
    /// Errors: [`ClientError::Url`]; [`ClientError::Tls`] for the identity.
    pub fn new(url: &str, fingerprint: &str, identity: &Identity) -> Result<Remote, ClientError> {
        Remote::build(url, Some(fingerprint.to_string()), Some(identity))
    }

    /// A remote to join with a token's `secret`: the client presents a join
    /// certificate (its own key, a name that proves the secret) and may only post its
    /// certificate ([`Remote::join`]).
    ///
    /// Errors: as [`Remote::new`]; [`TlsError::Generate`] for the join certificate.
    pub fn joining(url: &str, fingerprint: &str, identity: &Identity, secret: &str) -> Result<Remote, ClientError> {
        let key = rcgen::KeyPair::from_pem(&identity.key_pem).map_err(|error| TlsError::Generate {
            what: "the join certificate".into(),
            error,
        })?;
        let cert = rcgen::CertificateParams::new(vec![join_name(secret)])
            .and_then(|p| p.self_signed(&key))
            .map_err(|error| TlsError::Generate {
                what: "the join certificate".into(),
                error,
            })?;
        let join = Identity {
            cert_pem: cert.pem(),
            key_pem: identity.key_pem.clone(),
        };
        Remote::build(url, Some(fingerprint.to_string()), Some(&join))
    }

    /// The fingerprint of the certificate the server at `url` presents (trust on first
    /// use: show it to the user). The handshake is abandoned once it is seen.
    ///
    /// Errors: [`ClientError::Url`], [`ClientError::Connect`], or
    /// [`ClientError::Handshake`] when no certificate came.
    pub async fn probe_fingerprint(url: &str) -> Result<String, ClientError> {
        let r = Remote::build(url, None, None)?;
        let _ = r.connect().await;
        let seen = r.seen.lock().ok().and_then(|s| s.clone());
        seen.ok_or_else(|| ClientError::Handshake {
            addr: r.addr.clone(),
            error: std::io::Error::other("the server presented no certificate"),
        })
    }

    fn build(url: &str, expected: Option<String>, identity: Option<&Identity>) -> Result<Remote, ClientError> {
        let (addr, host) = parse_url(url)?;
        let server_name = ServerName::try_from(host.clone()).map_err(|_| ClientError::Url(url.to_string()))?;
        let seen = Arc::new(Mutex::new(None));
        let verifier = Arc::new(PinnedServer::new(expected.clone(), seen.clone()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::from)?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut cfg = match identity {
            Some(id) => builder
                .with_client_auth_cert(
                    id.chain(std::path::Path::new("client certificate"))?,
                    id.key(std::path::Path::new("client key"))?,
                )
                .map_err(TlsError::from)?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Remote {
            addr,
            server_name: server_name.to_owned(),
            tls: Arc::new(cfg),
            seen,
            expected,
        })
    }

    /// `HOST:PORT` of the remote.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .map_err(|error| ClientError::Connect {
                addr: self.addr.clone(),
                error,
            })?
            .collect();
        let tcp = TcpStream::connect(&addrs[..])
            .await
            .map_err(|error| ClientError::Connect {
                addr: self.addr.clone(),
                error,
            })?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| self.handshake_error(source))
    }

    fn handshake_error(&self, source: std::io::Error) -> ClientError {
        let seen = self.seen.lock().ok().and_then(|s| s.clone());
        match (&self.expected, seen) {
            (Some(expected), Some(got)) if *expected != got => ClientError::Fingerprint {
                addr: self.addr.clone(),
                expected: expected.clone(),
                got,
            },
            _ => ClientError::Handshake {
                addr: self.addr.clone(),
                error: source,
            },
        }
    }

    /// Sends `method path` with `body` (streamed as it comes, of `content_type`) and
    /// returns the answer with its body still to read (streamed): for logs that follow,
    /// backups, and the bulk transfer of migration. Any status is returned as is.
    ///
    /// Errors: [`ClientError::Connect`], [`ClientError::Handshake`],
    /// [`ClientError::Fingerprint`], [`ClientError::Http`].
    pub async fn request_stream<B>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: B,
    ) -> Result<Response<Incoming>, ClientError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let body = Body::new(body);
        let tls = self.connect().await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tls))
            .await
            .map_err(|source| self.http_error(source))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| ClientError::Decode {
                what: format!("request {path}"),
                detail: e.to_string(),
            })?;
        send.send_request(req).await.map_err(|source| self.http_error(source))
    }

    /// Sends `method path` asking to upgrade the connection (HTTP/1.1 `Connection:
    /// Upgrade`, `Upgrade: tcp`, as docker's attach does) and returns the raw
    /// full-duplex stream once the server answered `101 Switching Protocols`; it stays
    /// inside the mutual-TLS connection. Used by migration over the API.
    ///
    /// Errors: as [`Remote::request_stream`]; [`ClientError::Api`] with the server's
    /// message when it answered anything but 101.
    pub async fn upgrade(&self, method: Method, path: &str) -> Result<hyper::upgrade::Upgraded, ClientError> {
        self.upgrade_with(method, path, None).await
    }

    /// As [`Remote::upgrade`], with a JSON `body` in the request (docker's exec start
    /// takes `{"Detach", "Tty"}`): attach and exec of `vessel --remote` (hijacked
    /// streams, as the docker CLI's).
    ///
    /// Errors: as [`Remote::upgrade`].
    pub async fn upgrade_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::upgrade::Upgraded, ClientError> {
        let (body, content_type) = match body {
            Some(v) => (
                Body::from(serde_json::to_vec(v).unwrap_or_default()),
                "application/json",
            ),
            None => (Body::empty(), "text/plain"),
        };
        let tls = self.connect().await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(tls))
            .await
            .map_err(|source| self.http_error(source))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.as_str())
            .header(hyper::header::CONNECTION, "Upgrade")
            .header(hyper::header::UPGRADE, "tcp")
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(body)
            .map_err(|e| ClientError::Decode {
                what: format!("request {path}"),
                detail: e.to_string(),
            })?;
        let resp = send.send_request(req).await.map_err(|source| self.http_error(source))?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().or(v["message"].as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api { status, message });
        }
        hyper::upgrade::on(resp).await.map_err(|source| self.http_error(source))
    }

    fn http_error(&self, source: hyper::Error) -> ClientError {
        // A refused client certificate shows as a connection closed during the first
        // exchange: tell it as the handshake failure it is.
        let io = std::error::Error::source(&source)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(|e| std::io::Error::new(e.kind(), e.to_string()));
        match io {
            Some(e) if e.to_string().contains("alert") || e.to_string().contains("Certificate") => {
                ClientError::Handshake {
                    addr: self.addr.clone(),
                    error: e,
                }
            }
            _ => ClientError::Http {
                addr: self.addr.clone(),
                error: source,
            },
        }
    }

    /// Sends `method path` with an optional JSON body; returns the status and the whole
    /// body.
    ///
    /// Errors: as [`Remote::request_stream`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Body::empty(),
        };
        let resp = self.request_stream(method, path, "application/json", body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|source| self.http_error(source))?
            .to_bytes();
        Ok((status, bytes))
    }

    /// A Docker API call: the decoded JSON answer, or [`ClientError::Api`] with the
    /// server's `message` for a status of 400 and above. An empty answer decodes as
    /// JSON null.
    ///
    /// Errors: as [`Remote::request`]; [`ClientError::Api`]; [`ClientError::Decode`].
    pub async fn docker<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        if status.as_u16() >= 400 {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["message"].as_str().map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api { status, message });
        }
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: path.to_string(),
            detail: e.to_string(),
        })
    }

    /// A `/1.0` call: the `metadata` of a sync answer; for an async answer the
    /// operation is waited for and its `metadata` returned ([`ClientError::Api`] when it
    /// failed).
    ///
    /// Errors: as [`Remote::request`]; [`ClientError::Api`] for `type: error` answers and
    /// failed operations.
    pub async fn v1(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let (status, bytes) = self.request(method, path, body).await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            what: path.to_string(),
            detail: format!("{e} (HTTP {status})"),
        })?;
        match v["type"].as_str() {
            Some("sync") => Ok(v["metadata"].clone()),
            Some("async") => {
                let op = v["operation"].as_str().unwrap_or_default().to_string();
                let done = self.wait_operation(&op).await?;
                if done["status"] == "Success" {
                    Ok(done["metadata"].clone())
                } else {
                    Err(ClientError::Api {
                        status: StatusCode::BAD_REQUEST,
                        message: done["err"].as_str().unwrap_or("operation failed").to_string(),
                    })
                }
            }
            _ => Err(ClientError::Api {
                status,
                message: v["error"].as_str().unwrap_or("error").to_string(),
            }),
        }
    }

    /// Waits for the operation at URL `op` (`/1.0/operations/ID`) to end; returns it.
    ///
    /// Errors: as [`Remote::v1`].
    pub async fn wait_operation(&self, op: &str) -> Result<Value, ClientError> {
        loop {
            let v = Box::pin(self.v1(Method::GET, &format!("{op}/wait?timeout=30"), None)).await?;
            if v["status"] != "Running" {
                return Ok(v);
            }
        }
    }
}

/// Percent-encodes what is not unreserved (RFC 3986) for a path segment or query value.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
