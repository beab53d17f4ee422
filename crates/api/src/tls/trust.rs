//! The server's trust store (`ROOT/serve/trust/FINGERPRINT.json`: the client
//! certificates it accepts) and its pending join tokens (`ROOT/serve/tokens/ID.json`),
//! in Incus's model: `vessel trust add` makes a token that carries the server's
//! fingerprint and a secret; a client proves the secret once (in its handshake, see
//! [`join_name`], and in the body of `POST /1.0/certificates`) and its certificate is
//! added. A token is claimed by renaming its file away, so two clients racing with one
//! token cannot both win; an expired token is refused and removed.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::store::{read_all, write_private};
use super::{fingerprint, hex, io, serve_dir, TlsError};

/// A client certificate the server accepts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrustedClient {
    /// The name given (`vessel trust add --name`, or the token's).
    pub name: String,
    /// SHA-256 of the certificate, lowercase hex.
    pub fingerprint: String,
    /// The certificate, PEM.
    pub certificate: String,
    /// When it was added (RFC 3339, UTC).
    pub added: String,
}

/// A join token as the server keeps it until used or expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingToken {
    /// SHA-256 of the secret, hex: the file's name.
    pub id: String,
    /// The name the client gets in the trust store.
    pub name: String,
    /// The secret, hex (32 random bytes).
    pub secret: String,
    /// Expiry, seconds since the epoch.
    pub expires: u64,
}

impl PendingToken {
    /// Whether the token is past its expiry at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= self.expires
    }
}

/// What `vessel trust add` prints (base64 of this JSON, as Incus's tokens are): the
/// server's certificate fingerprint, the secret, the client's name and the expiry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinToken {
    /// The name the client gets on the server.
    pub client_name: String,
    /// The server certificate's SHA-256 fingerprint: the client pins it.
    pub fingerprint: String,
    /// The one-time secret, hex.
    pub secret: String,
    /// Expiry (RFC 3339, UTC).
    pub expires_at: String,
}

impl JoinToken {
    /// The printed form: base64 (standard alphabet) of the JSON.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Parses the printed form.
    ///
    /// Errors: [`TlsError::BadToken`] for anything that is not base64 of the JSON.
    pub fn decode(text: &str) -> Result<JoinToken, TlsError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| TlsError::BadToken(format!("not base64: {e}")))?;
        let t: JoinToken = serde_json::from_slice(&bytes).map_err(|e| TlsError::BadToken(e.to_string()))?;
        if t.fingerprint.len() != 64 || t.secret.len() != 64 {
            return Err(TlsError::BadToken("fingerprint or secret of the wrong length".into()));
        }
        Ok(t)
    }
}

/// The DNS name a joining client puts in its join certificate's subject alternative
/// names to prove it holds `secret` without sending it in the clear before the
/// handshake ends: 40 hex digits of HMAC-SHA256(secret, "vessel-join") under
/// `join.vessel.invalid`. The server's verifier lets such a handshake through while the
/// token is pending; that connection may only call `POST /1.0/certificates`.
pub fn join_name(secret: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, b"vessel-join");
    format!("{}.join.vessel.invalid", &hex(tag.as_ref())[..40])
}

/// The trust store and the pending tokens of one instance (`ROOT/serve/`).
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    /// The store of the instance at `root`.
    pub fn new(root: &Path) -> TrustStore {
        TrustStore { dir: serve_dir(root) }
    }

    fn clients_dir(&self) -> PathBuf {
        self.dir.join("trust")
    }

    fn tokens_dir(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// The trusted clients, by name.
    pub fn clients(&self) -> Result<Vec<TrustedClient>, TlsError> {
        let mut all: Vec<TrustedClient> = read_all(&self.clients_dir())?.into_iter().map(|(_, c)| c).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The trusted client whose certificate has fingerprint `fp`.
    pub fn trusted(&self, fp: &str) -> Option<TrustedClient> {
        if fp.len() != 64 || !fp.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let bytes = std::fs::read(self.clients_dir().join(format!("{fp}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Adds the certificate `cert_pem` (its first certificate) under `name`.
    ///
    /// Errors: [`TlsError::BadInput`] for a name that is empty or not printable, or a
    /// PEM that holds no parsable X.509 certificate; [`TlsError::Io`].
    pub fn add(&self, name: &str, cert_pem: &str) -> Result<TrustedClient, TlsError> {
        check_name(name)?;
        let der = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| TlsError::BadInput("no CERTIFICATE block in the certificate given".into()))?
            .map_err(|e| TlsError::BadInput(format!("certificate: {e}")))?;
        webpki::EndEntityCert::try_from(&der)
            .map_err(|e| TlsError::BadInput(format!("certificate does not parse as X.509: {e}")))?;
        let fp = fingerprint(&der);
        let pem = pem_of(&der);
        let c = TrustedClient {
            name: name.to_string(),
            fingerprint: fp.clone(),
            certificate: pem,
            added: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let json = serde_json::to_vec_pretty(&c).map_err(|e| TlsError::BadInput(e.to_string()))?;
        write_private(&self.clients_dir().join(format!("{fp}.json")), &json)?;
        Ok(c)
    }

    /// Removes the trusted client named `what`, or whose fingerprint starts with `what`
    /// (at least 12 hex digits, as `vessel trust ls` prints them).
    ///
    /// Errors: [`TlsError::NoSuchClient`]; [`TlsError::BadInput`] when `what` matches
    /// more than one; [`TlsError::Io`].
    pub fn remove(&self, what: &str) -> Result<TrustedClient, TlsError> {
        let all = self.clients()?;
        let hits: Vec<_> = all
            .iter()
            .filter(|c| c.name == what || (what.len() >= 12 && c.fingerprint.starts_with(what)))
            .collect();
        match hits.as_slice() {
            [] => Err(TlsError::NoSuchClient(what.to_string())),
            [c] => {
                let path = self.clients_dir().join(format!("{}.json", c.fingerprint));
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                Ok((*c).clone())
            }
            _ => Err(TlsError::BadInput(format!(
                "{what} names {} trusted clients: give the fingerprint",
                hits.len()
            ))),
        }
    }

    /// Makes a join token for a client to be called `name`, valid for `ttl`, carrying
    /// `server_fp`.
    ///
    /// Errors: [`TlsError::BadInput`] for a bad name or a name already trusted;
    /// [`TlsError::Io`].
    pub fn make_token(&self, name: &str, ttl: Duration, server_fp: &str) -> Result<JoinToken, TlsError> {
        check_name(name)?;
        if self.clients()?.iter().any(|c| c.name == name) {
            return Err(TlsError::BadInput(format!(
                "a client named {name} is trusted already: remove it with `vessel trust rm {name}` or give another --name"
            )));
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| TlsError::BadInput("the system's random source failed".into()))?;
        let secret = hex(&secret);
        let expires = SystemTime::now() + ttl;
        let p = PendingToken {
            id: token_id(&secret),
            name: name.to_string(),
            secret: secret.clone(),
            expires: expires.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_vec(&p).map_err(|e| TlsError::BadInput(e.to_string()))?;
        write_private(&self.tokens_dir().join(format!("{}.json", p.id)), &json)?;
        Ok(JoinToken {
            client_name: name.to_string(),
            fingerprint: server_fp.to_string(),
            secret,
            expires_at: humantime::format_rfc3339_seconds(expires).to_string(),
        })
    }

    /// The tokens not used yet and not expired.
    pub fn pending(&self) -> Result<Vec<PendingToken>, TlsError> {
        let now = SystemTime::now();
        Ok(read_all::<PendingToken>(&self.tokens_dir())?
            .into_iter()
            .map(|(_, t)| t)
            .filter(|t| !t.expired(now))
            .collect())
    }

    /// Uses up the token whose secret is `secret`: its file is renamed away first (only
    /// one claimer wins), then removed; an expired token is removed and refused.
    ///
    /// Errors: [`TlsError::TokenRefused`] for a token used already, expired or unknown.
    pub fn claim(&self, secret: &str) -> Result<PendingToken, TlsError> {
        if secret.len() != 64 || !secret.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(TlsError::TokenRefused("malformed secret".into()));
        }
        let id = token_id(secret);
        let path = self.tokens_dir().join(format!("{id}.json"));
        let claimed = self.tokens_dir().join(format!(".claimed-{id}"));
        std::fs::rename(&path, &claimed)
            .map_err(|_| TlsError::TokenRefused("it was used already or never made on this server".into()))?;
        let t = std::fs::read(&claimed)
            .ok()
            .and_then(|b| serde_json::from_slice::<PendingToken>(&b).ok());
        let _ = std::fs::remove_file(&claimed);
        let t = t.ok_or_else(|| TlsError::TokenRefused("its record is unreadable".into()))?;
        if t.expired(SystemTime::now()) {
            return Err(TlsError::TokenRefused("it expired".into()));
        }
        Ok(t)
    }

    /// Removes the token files that expired.
    pub fn prune(&self) {
        let now = SystemTime::now();
        if let Ok(all) = read_all::<PendingToken>(&self.tokens_dir()) {
            for (path, t) in all {
                if t.expired(now) {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

fn token_id(secret: &str) -> String {
    fingerprint(secret.as_bytes())
}

fn check_name(name: &str) -> Result<(), TlsError> {
    if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_graphic()) || name.contains('/') {
        return Err(TlsError::BadInput(format!(
            "client name {name:?}: use 1 to 128 printable characters without spaces or '/'"
        )));
    }
    Ok(())
}

/// PEM of a DER certificate.
pub fn pem_of(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TrustStore) {
        let d = tempfile::tempdir().unwrap();
        let s = TrustStore::new(d.path());
        (d, s)
    }

    #[test]
    fn a_token_round_trips_and_is_claimed_once() {
        let (_d, s) = store();
        let fp = "ab".repeat(32);
        let t = s.make_token("laptop", Duration::from_secs(60), &fp).unwrap();
        let back = JoinToken::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.fingerprint, fp);
        assert_eq!(s.pending().unwrap().len(), 1);
        assert_eq!(s.claim(&t.secret).unwrap().name, "laptop");
        assert!(matches!(s.claim(&t.secret), Err(TlsError::TokenRefused(_))));
        assert!(s.pending().unwrap().is_empty());
    }

    #[test]
    fn an_expired_token_is_refused_and_not_pending() {
        let (_d, s) = store();
        let t = s.make_token("late", Duration::ZERO, &"00".repeat(32)).unwrap();
        assert!(s.pending().unwrap().is_empty());
        let e = s.claim(&t.secret).unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
    }

    #[test]
    fn bad_tokens_and_secrets_are_refused() {
        let (_d, s) = store();
        assert!(matches!(JoinToken::decode("not base64!"), Err(TlsError::BadToken(_))));
        assert!(matches!(JoinToken::decode("e30="), Err(TlsError::BadToken(_))));
        assert!(matches!(s.claim("../../etc/passwd"), Err(TlsError::TokenRefused(_))));
        assert!(matches!(s.claim(&"0".repeat(64)), Err(TlsError::TokenRefused(_))));
        assert!(s.make_token("a/b", Duration::from_secs(1), "x").is_err());
        assert!(s.make_token("", Duration::from_secs(1), "x").is_err());
    }

    #[test]
    fn join_names_differ_by_secret_and_fit_a_dns_label() {
        let a = join_name(&"1".repeat(64));
        let b = join_name(&"2".repeat(64));
        assert_ne!(a, b);
        assert_eq!(a, join_name(&"1".repeat(64)));
        assert!(a.split('.').all(|l| !l.is_empty() && l.len() <= 63), "{a}");
        assert!(rustls::pki_types::ServerName::try_from(a.clone()).is_ok());
    }

    #[test]
    fn clients_are_added_listed_and_removed() {
        let (_d, s) = store();
        let made = rcgen::generate_simple_self_signed(vec!["c.invalid".to_string()]).unwrap();
        let c = s.add("ci", &made.cert.pem()).unwrap();
        assert_eq!(c.fingerprint, fingerprint(made.cert.der()));
        assert_eq!(s.trusted(&c.fingerprint).unwrap().name, "ci");
        assert!(s.make_token("ci", Duration::from_secs(1), "x").is_err(), "name taken");
        assert!(matches!(s.add("x", "garbage"), Err(TlsError::BadInput(_))));
        assert!(s.remove(&c.fingerprint[..12]).is_ok());
        assert!(s.trusted(&c.fingerprint).is_none());
        assert!(matches!(s.remove("ci"), Err(TlsError::NoSuchClient(_))));
        assert!(s.trusted("../x").is_none());
    }
}
