//! Image references: `registry[:port]/repository[:tag][@sha256:<hex>]`, with Docker's
//! normalisation (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;

use crate::digest::Digest;
use crate::error::{ImageError, Result};

/// The registry that short names (`busybox`, `user/app`) refer to.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image reference.
///
/// Invariants: `registry` is `host[:port]`; `repository` is one or more lowercase path
/// components (`[a-z0-9]+([._-][a-z0-9]+)*` each); at least one of `tag` and `digest` is set
/// (the tag defaults to `latest` when neither is given).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/busybox`, `team/app`.
    pub repository: String,
    /// `latest`, `1.36`.
    pub tag: Option<String>,
    /// A pinned manifest or index digest.
    pub digest: Option<Digest>,
}

fn bad(input: &str, reason: impl Into<String>) -> ImageError {
    ImageError::InvalidReference {
        input: input.to_string(),
        reason: reason.into(),
    }
}

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*, simplified: alnum at both ends, separators between.
    !c.is_empty()
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-')
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        && !c.contains("..")
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn valid_registry(r: &str) -> bool {
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || r.starts_with('[') => (h, Some(p)),
        _ => (r, None),
    };
    let host_ok = if host.starts_with('[') && host.ends_with(']') {
        host.len() > 2
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':')
    } else {
        !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

impl Reference {
    /// Parses and normalises a reference as Docker and podman do.
    ///
    /// # Errors
    /// [`ImageError::InvalidReference`] naming the input and the rule broken.
    pub fn parse(input: &str) -> Result<Self> {
        if input.is_empty() || input.len() > 4096 {
            return Err(bad(input, "empty or longer than 4096 bytes"));
        }
        let (name, digest) = match input.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| bad(input, "digest is not sha256:<64 lowercase hex>"))?),
            ),
            None => (input, None),
        };
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') =>
            {
                (first.to_string(), rest)
            }
            _ => (DOCKER_HUB.to_string(), name),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        if !valid_registry(&registry) {
            return Err(bad(input, format!("registry {registry:?} is not host[:port]")));
        }
        // The tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    input,
                    format!("tag {t:?} must be [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"),
                ));
            }
        }
        if let Some(c) = repo.split('/').find(|c| !valid_component(c)) {
            return Err(bad(
                input,
                format!("repository component {c:?} must be lowercase letters, digits and . _ - between them"),
            ));
        }
        let repository = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        // Checked after the `library/` default, so that what parses prints back to a
        // reference that parses too (found by the `reference` fuzz target).
        if repository.is_empty() || repository.len() > 255 {
            return Err(bad(input, "repository is empty or longer than 255 bytes"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference pinned to `digest` (tag dropped): what a manifest fetch by digest uses.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// Whether the registry is on this machine (`localhost`, `127.0.0.0/8`, `[::1]`):
    /// plain http is allowed there by default, as podman does.
    pub fn is_local_registry(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ImageError;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn length_limit_counts_the_library_default() {
        // 250 bytes: fits alone, but not as `library/` + 250.
        let name = "a".repeat(250);
        assert!(Reference::parse(&name).is_err());
        assert!(Reference::parse(&format!("127.0.0.1:5000/{name}")).is_ok());
        let printed = Reference::parse(&format!("docker.io/x/{}", "a".repeat(240)))
            .unwrap()
            .to_string();
        assert!(Reference::parse(&printed).is_ok());
    }

    #[test]
    fn short_names_normalise_to_docker_hub() {
        assert_eq!(p("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(p("user/app:1.0"), "docker.io/user/app:1.0");
        assert_eq!(p("index.docker.io/library/alpine"), "docker.io/library/alpine:latest");
    }

    #[test]
    fn registries_ports_tags_digests() {
        assert_eq!(p("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b:v1");
        assert_eq!(p("localhost/x"), "localhost/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(p(&format!("quay.io/x/y@{d}")), format!("quay.io/x/y@{d}"));
        assert_eq!(p(&format!("quay.io/x/y:t@{d}")), format!("quay.io/x/y:t@{d}"));
        let r = Reference::parse("localhost:5000/x").unwrap();
        assert!(r.is_local_registry());
        assert!(!Reference::parse("quay.io/x").unwrap().is_local_registry());
    }

    #[test]
    fn bad_references_are_refused() {
        for s in [
            "",
            "UPPER",
            "a/../b",
            "x:",
            "x@sha256:abc",
            "host:99999999/x",
            "a//b",
            "x:-tag",
            "/abs",
        ] {
            assert!(Reference::parse(s).is_err(), "{s} accepted");
        }
    }
}
