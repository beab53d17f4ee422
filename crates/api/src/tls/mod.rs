//! Mutual TLS for `vessel serve --listen`: the server's identity (a certificate made
//! with rcgen on first use under `ROOT/serve/`, or the one given), the trust store of
//! client certificates and the one-time join tokens ([`trust`]), and the rustls
//! configuration whose client verifier refuses the handshake of every client that is
//! neither trusted nor presenting a valid join proof ([`verifier`]).
//!
//! The model is Incus's: clients are trusted by the SHA-256 fingerprint of their
//! certificate; a server prints a join token (its own fingerprint and a secret) with
//! `vessel trust add`; the client pins that fingerprint and presents the secret once.

pub mod store;
pub mod trust;
pub mod verifier;

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What went wrong with certificates, keys, the trust store or a token.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file operation.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A PEM file that holds no usable certificate or key.
    #[error("{path}: {what}: give a PEM file with a certificate (or a PKCS#8/PKCS#1/SEC1 key)")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rcgen could not make a certificate.
    #[error("making a certificate for {what}: {error}")]
    Generate {
        /// Whose certificate.
        what: String,
        /// rcgen's error.
        error: rcgen::Error,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A join token that cannot be decoded.
    #[error("bad join token: {0}: copy the whole line `vessel trust add` printed")]
    BadToken(String),
    /// A join token that was used already, expired, or never made here.
    #[error("join token refused: {0}: make a new one with `vessel trust add` on the server")]
    TokenRefused(String),
    /// No trusted client matches.
    #[error("no trusted client {0}: see `vessel trust ls`")]
    NoSuchClient(String),
    /// A name or value that is not acceptable.
    #[error("{0}")]
    BadInput(String),
}

/// Maps an I/O error of `op` on `path` to [`TlsError::Io`].
pub fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |error| TlsError::Io {
        op,
        path: path.to_path_buf(),
        error,
    }
}

/// The SHA-256 fingerprint of a DER certificate, lowercase hex (64 characters), as
/// Incus and `openssl x509 -fingerprint -sha256` (without colons) give it.
pub fn fingerprint(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A certificate and its private key, both PEM, as read from or written to disk.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The certificate chain (PEM), leaf first.
    pub cert_pem: String,
    /// The private key (PEM).
    pub key_pem: String,
}

impl Identity {
    /// Reads a certificate and key from PEM files.
    ///
    /// Errors: [`TlsError::Io`] when a file cannot be read; [`TlsError::Pem`] when it
    /// holds no certificate or key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let id = Identity {
            cert_pem: std::fs::read_to_string(cert).map_err(io("read", cert))?,
            key_pem: std::fs::read_to_string(key).map_err(io("read", key))?,
        };
        id.chain(cert)?;
        id.key(key)?;
        Ok(id)
    }

    /// Reads `DIR/NAME.crt` and `DIR/NAME.key`, or makes a self-signed certificate
    /// for `names` (subject alternative names) with a new ECDSA P-256 key and writes
    /// them there (the key mode 0600) when the certificate is missing.
    ///
    /// Errors: as [`Identity::load`]; [`TlsError::Generate`] when rcgen fails.
    pub fn load_or_generate(dir: &Path, name: &str, names: Vec<String>) -> Result<Identity, TlsError> {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        if cert.exists() {
            return Identity::load(&cert, &key);
        }
        let made = rcgen::generate_simple_self_signed(names).map_err(|error| TlsError::Generate {
            what: cert.display().to_string(),
            error,
        })?;
        let id = Identity {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
        };
        store::write_private(&key, id.key_pem.as_bytes())?;
        store::write_private(&cert, id.cert_pem.as_bytes())?;
        Ok(id)
    }

    /// The certificate chain, DER. `path` names the file in errors.
    pub fn chain(&self, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem {
                path: path.to_path_buf(),
                what: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Pem {
                path: path.to_path_buf(),
                what: "no CERTIFICATE block".into(),
            });
        }
        Ok(certs)
    }

    /// The private key, DER. `path` names the file in errors.
    pub fn key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })
    }

    /// The fingerprint of the leaf certificate ([`fingerprint`]).
    pub fn fingerprint(&self) -> Result<String, TlsError> {
        let chain = self.chain(Path::new("certificate"))?;
        Ok(fingerprint(&chain[0]))
    }
}

/// The server's own certificate: `--tls-cert`/`--tls-key` when given, else
/// `ROOT/serve/server.crt` and `server.key`, made on first use for `localhost`,
/// `127.0.0.1`, `::1` and the host name (clients pin its fingerprint, so the names
/// matter little).
pub fn server_identity(root: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<Identity, TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => Identity::load(c, k),
        (None, None) => {
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
            if let Ok(h) = nix::unistd::gethostname() {
                if let Some(h) = h.to_str().filter(|h| !h.is_empty() && *h != "localhost") {
                    names.push(h.to_string());
                }
            }
            Identity::load_or_generate(&serve_dir(root), "server", names)
        }
        _ => Err(TlsError::BadInput(
            "--tls-cert and --tls-key go together: give both, or neither to use ROOT/serve/server.crt".into(),
        )),
    }
}

/// `ROOT/serve/`: the server's certificate, its trust store and its join tokens.
pub fn serve_dir(root: &Path) -> PathBuf {
    root.join("serve")
}
