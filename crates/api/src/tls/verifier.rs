//! The server's rustls configuration for `--listen`: TLS 1.3 only, a client
//! certificate mandatory, and a client verifier that lets a handshake finish only for
//! a certificate in the trust store, one signed by `--client-ca`, or a join
//! certificate that proves a pending token's secret ([`super::trust::join_name`]).
//! Every other client gets a refused handshake and no HTTP at all.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};

use super::trust::{join_name, TrustStore};
use super::{fingerprint, Identity, TlsError};

/// Who is at the other end of a TLS connection, as its certificate says. Handlers
/// find it in the request's extensions; requests on the unix socket carry none (local
/// root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A client in the trust store.
    Trusted {
        /// Its name there.
        name: String,
        /// Its certificate's fingerprint.
        fingerprint: String,
    },
    /// A client whose certificate `--client-ca` signed.
    CaSigned {
        /// Its certificate's fingerprint.
        fingerprint: String,
    },
    /// A client proving a pending join token: it may only `POST /1.0/certificates`.
    Joining {
        /// Its join certificate's fingerprint.
        fingerprint: String,
    },
}

/// The client verifier of `vessel serve --listen`.
#[derive(Debug)]
pub struct ClientVerifier {
    store: TrustStore,
    ca: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    /// A verifier over the trust store `store`, also accepting certificates that the CA
    /// certificates in the PEM file `client_ca` signed.
    ///
    /// Errors: [`TlsError::Io`]/[`TlsError::Pem`] for the CA file,
    /// [`TlsError::Config`] when rustls refuses it.
    pub fn new(store: TrustStore, client_ca: Option<&Path>) -> Result<ClientVerifier, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca = match client_ca {
            None => None,
            Some(path) => {
                let pem = std::fs::read_to_string(path).map_err(super::io("read", path))?;
                let id = Identity {
                    cert_pem: pem,
                    key_pem: String::new(),
                };
                let mut roots = rustls::RootCertStore::empty();
                for c in id.chain(path)? {
                    roots.add(c)?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Pem {
                        path: path.to_path_buf(),
                        what: e.to_string(),
                    })?;
                Some(v)
            }
        };
        Ok(ClientVerifier { store, ca, provider })
    }

    /// Who presents `end_entity` (with `intermediates`), or None: refuse.
    pub fn classify(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<Peer> {
        let fp = fingerprint(end_entity);
        if let Some(c) = self.store.trusted(&fp) {
            return Some(Peer::Trusted {
                name: c.name,
                fingerprint: fp,
            });
        }
        if let Some(ca) = &self.ca {
            if ca
                .verify_client_cert(end_entity, intermediates, UnixTime::now())
                .is_ok()
            {
                return Some(Peer::CaSigned { fingerprint: fp });
            }
        }
        let ee = webpki::EndEntityCert::try_from(end_entity).ok()?;
        let pending = self.store.pending().ok()?;
        let joining = pending.iter().any(|t| {
            ServerName::try_from(join_name(&t.secret))
                .is_ok_and(|name| ee.verify_is_valid_for_subject_name(&name).is_ok())
        });
        joining.then_some(Peer::Joining { fingerprint: fp })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.classify(end_entity, intermediates) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server's TLS configuration: TLS 1.3, HTTP/1.1 by ALPN, `identity` as the
/// server certificate, `verifier` for clients.
///
/// Errors: [`TlsError::Pem`] for the identity, [`TlsError::Config`] when rustls
/// refuses the key.
pub fn server_config(identity: &Identity, verifier: Arc<ClientVerifier>) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            identity.chain(Path::new("server certificate"))?,
            identity.key(Path::new("server key"))?,
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}
