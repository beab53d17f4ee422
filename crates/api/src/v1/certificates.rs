//! `/1.0/certificates`: the server's trust store over the API. A joining client (its
//! TLS handshake proved a pending token, [`crate::tls::trust::join_name`]) posts its
//! certificate with the token's secret; the token is used up and the certificate
//! trusted under the token's name. Local root (the unix socket) and trusted clients
//! may add a certificate without a token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::response::{error, sync, V1Result};
use super::V1;
use crate::error::ApiError;
use crate::tls::trust::{JoinToken, TrustStore};
use crate::tls::verifier::Peer;
use crate::tls::TlsError;

/// `POST /1.0/certificates`'s body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatesPost {
    /// The client certificate to trust (PEM).
    pub certificate: String,
    /// Its name (ignored with a token: the token's name is used).
    #[serde(default)]
    pub name: Option<String>,
    /// The join token (the printed form) or its secret (hex).
    #[serde(default)]
    pub trust_token: Option<String>,
}

/// A trusted client as listed (without its PEM).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CertificateInfo {
    /// Its name.
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// When it was added.
    pub added: String,
}

impl From<TlsError> for ApiError {
    fn from(e: TlsError) -> ApiError {
        match e {
            TlsError::TokenRefused(_) => ApiError {
                status: StatusCode::FORBIDDEN,
                message: e.to_string(),
            },
            TlsError::NoSuchClient(_) => ApiError::not_found(e.to_string()),
            TlsError::BadInput(_) | TlsError::BadToken(_) | TlsError::Pem { .. } => ApiError::bad(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

/// `GET /1.0/certificates`: the trusted clients.
#[utoipa::path(get, path = "/1.0/certificates", tag = "certificates",
    responses((status = 200, description = "sync: list of CertificateInfo", body = super::response::Envelope)))]
pub async fn list(State(st): State<V1>) -> V1Result {
    let store = TrustStore::new(&st.paths.root);
    let all: Vec<CertificateInfo> = store
        .clients()
        .map_err(ApiError::from)?
        .into_iter()
        .map(|c| CertificateInfo {
            name: c.name,
            fingerprint: c.fingerprint,
            added: c.added,
        })
        .collect();
    Ok(sync(all))
}

/// `POST /1.0/certificates`: trust a client certificate (with a join token, or as a
/// trusted client).
#[utoipa::path(post, path = "/1.0/certificates", tag = "certificates", request_body = CertificatesPost,
    responses((status = 200, description = "sync: the CertificateInfo added", body = super::response::Envelope),
        (status = 403, description = "token used, expired or unknown; or no token from an untrusted client")))]
pub async fn add(State(st): State<V1>, peer: Option<Extension<Peer>>, body: axum::body::Bytes) -> V1Result {
    let req: CertificatesPost = crate::docker::json_body(&body)?;
    let store = TrustStore::new(&st.paths.root);
    let joining = matches!(peer.as_deref(), Some(Peer::Joining { .. }));
    let name = match req.trust_token.as_deref() {
        Some(t) => {
            let secret = if t.len() == 64 {
                t.to_string()
            } else {
                JoinToken::decode(t).map_err(ApiError::from)?.secret
            };
            let s2 = store.clone();
            tokio::task::spawn_blocking(move || s2.claim(&secret))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(ApiError::from)?
                .name
        }
        None if joining => {
            return Ok(error(
                StatusCode::FORBIDDEN,
                "not authorized: give the join token (trust_token)",
            ));
        }
        None => req
            .name
            .clone()
            .ok_or_else(|| ApiError::bad("give the client's name (name)"))?,
    };
    let c = store.add(&name, &req.certificate).map_err(ApiError::from)?;
    eprintln!("vessel serve: trusted client {} ({})", c.name, c.fingerprint);
    Ok(sync(CertificateInfo {
        name: c.name,
        fingerprint: c.fingerprint,
        added: c.added,
    }))
}

/// `DELETE /1.0/certificates/{fingerprint}`: stop trusting a client (name or
/// fingerprint prefix of 12+ digits).
#[utoipa::path(delete, path = "/1.0/certificates/{fingerprint}", tag = "certificates",
    params(("fingerprint" = String, Path, description = "name or fingerprint (12+ hex digits)")),
    responses((status = 200, description = "sync: the CertificateInfo removed", body = super::response::Envelope),
        (status = 404, description = "no such client")))]
pub async fn remove(State(st): State<V1>, Path(what): Path<String>) -> V1Result {
    let c = TrustStore::new(&st.paths.root).remove(&what).map_err(ApiError::from)?;
    Ok(sync(CertificateInfo {
        name: c.name,
        fingerprint: c.fingerprint,
        added: c.added,
    }))
}
