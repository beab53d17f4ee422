//! Registry answers in people's words: oci-client's errors classified by their structure
//! (HTTP status, OCI error codes of the distribution spec's error envelope, the transport
//! error's chain), never by their text, which holds the URL and its port.

use std::error::Error as _;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::error::ImageError;

/// How a request that never got an answer failed.
#[derive(Debug, PartialEq, Eq)]
enum Transport {
    /// The host name did not resolve.
    Dns,
    /// The host did not answer (refused, unreachable, timed out): the OS error's text.
    NoAnswer(String),
}

/// What the transport error under `e` says, when the request never got an answer: a name
/// that does not resolve (hyper's connector labels its resolver's failure "dns error"), or
/// an OS error saying that nobody answered (refused, unreachable, timed out). A connection
/// that was answered (a TLS handshake with a plain-http server) is not one of these.
fn transport_failure(e: &OciDistributionError) -> Option<Transport> {
    use std::io::ErrorKind as K;
    let OciDistributionError::RequestError(r) = e else {
        return None;
    };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = r.source();
    while let Some(err) = cur {
        // hyper-util's ConnectError displays only its label.
        if r.is_connect() && err.to_string() == "dns error" {
            return Some(Transport::Dns);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown | K::TimedOut
            ) {
                return Some(Transport::NoAnswer(io.to_string()));
            }
        }
        cur = err.source();
    }
    r.is_timeout().then(|| Transport::NoAnswer("timed out".into()))
}

/// The innermost cause of a request error (reqwest's own text names the URL).
fn innermost(r: &(dyn std::error::Error + 'static)) -> String {
    let mut last = r.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = r.source();
    while let Some(err) = cur {
        last = err.to_string();
        cur = err.source();
    }
    last
}

/// The error for a failed registry request `what` to `registry`: a host that does not
/// resolve or does not answer in those words ([`ImageError::RegistryUnresolvable`],
/// [`ImageError::RegistryUnreachable`]); anything else as [`ImageError::Registry`] with a
/// hint (log in for refused credentials; `--tls-verify=false` only when an https request got
/// an answer that was not TLS).
pub(crate) fn registry_err(registry: &str, what: String, e: OciDistributionError) -> ImageError {
    match transport_failure(&e) {
        Some(Transport::Dns) => {
            return ImageError::RegistryUnresolvable {
                registry: registry.into(),
                host: registry.rsplit_once(':').map_or(registry, |(h, _)| h).into(),
            }
        }
        Some(Transport::NoAnswer(reason)) => {
            return ImageError::RegistryUnreachable {
                registry: registry.into(),
                reason,
            }
        }
        None => {}
    }
    let hint = match &e {
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            " (log in with `vessel login REGISTRY`, or check the credentials in auth.json)"
        }
        OciDistributionError::ServerError { code: 401 | 403, .. } => {
            " (log in with `vessel login REGISTRY`, or check the credentials in auth.json)"
        }
        OciDistributionError::RequestError(r) if r.status().is_some_and(|s| matches!(s.as_u16(), 401 | 403)) => {
            " (log in with `vessel login REGISTRY`, or check the credentials in auth.json)"
        }
        OciDistributionError::RequestError(r) if r.url().is_some_and(|u| u.scheme() == "https") => {
            " (for a plain-http registry pass --tls-verify=false)"
        }
        _ => "",
    };
    let message = match &e {
        // The envelope's codes and messages, without the URL.
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| {
                let code = serde_json::to_value(&err.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_else(|| format!("{:?}", err.code));
                format!("{code}: {}", err.message)
            })
            .collect::<Vec<_>>()
            .join("; "),
        // A status error's text names the URL: the status alone says it.
        OciDistributionError::RequestError(r) if r.status().is_some() => {
            format!("HTTP {}", r.status().map(|s| s.to_string()).unwrap_or_default())
        }
        OciDistributionError::RequestError(r) => innermost(r),
        _ => e.to_string(),
    };
    ImageError::Registry {
        registry: registry.into(),
        what,
        message,
        hint,
    }
}

/// Whether a registry answer says the manifest, blob or repository does not exist (HTTP 404,
/// or a `*_UNKNOWN`/`NOT_FOUND` error code).
pub(crate) fn is_not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RequestError(r) => r.status().is_some_and(|s| s.as_u16() == 404),
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|err| {
            matches!(
                err.code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// Whether a registry answer refuses the credentials (HTTP 401/403, an `UNAUTHORIZED` or
/// `DENIED` error code, a failed token request) or could not be had at all (a transport error).
pub(crate) fn refuses_credentials(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::RequestError(_) => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|err| matches!(err.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(code: &str, url: &str) -> OciDistributionError {
        let body = format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#);
        OciDistributionError::RegistryError {
            envelope: serde_json::from_str(&body).unwrap(),
            url: url.into(),
        }
    }

    #[test]
    fn answers_are_classified_by_structure_not_by_the_port_in_the_url() {
        // Ports that read like status codes: 401xx and 404xx.
        let url = "http://127.0.0.1:40173/v2/vessel/login-check/tags/list";
        assert!(!refuses_credentials(&envelope("NAME_UNKNOWN", url)));
        assert!(!is_not_found(&envelope(
            "UNSUPPORTED",
            "http://127.0.0.1:40404/v2/a/manifests/1"
        )));
        assert!(is_not_found(&envelope("NAME_UNKNOWN", url)));
        assert!(is_not_found(&envelope("MANIFEST_UNKNOWN", url)));
        assert!(refuses_credentials(&envelope("DENIED", url)));
        assert!(refuses_credentials(&envelope("UNAUTHORIZED", url)));
        assert!(refuses_credentials(&OciDistributionError::UnauthorizedError {
            url: url.into()
        }));
        let server = |code| OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1:40104/v2/".into(),
            message: "401 404".into(),
        };
        assert!(refuses_credentials(&server(403)));
        assert!(!refuses_credentials(&server(500)));
        assert!(is_not_found(&server(404)));
        assert!(!is_not_found(&server(500)));
    }

    #[test]
    fn an_error_envelope_is_told_without_its_url() {
        let e = registry_err(
            "127.0.0.1:5000",
            "pull manifest x".into(),
            envelope("UNSUPPORTED", "http://127.0.0.1:5000/v2/a/manifests/1"),
        );
        let text = e.to_string();
        assert!(!text.contains("http://"), "{text}");
        assert!(text.contains("UNSUPPORTED: m"), "{text}");
    }
}
