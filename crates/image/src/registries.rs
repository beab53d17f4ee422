//! Registry configuration in podman's `registries.conf` format (containers-registries.conf(5)):
//! `[[registry]]` tables with `location = "host[:port]"` and `insecure = true|false`, which
//! say whether a registry is reached over plain http. Files read, first match wins:
//! `ROOT/registries.conf`, then `$CONTAINERS_REGISTRIES_CONF` or
//! `/etc/containers/registries.conf`. Other keys of the format are ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ImageError, Result};

#[derive(Deserialize, Default)]
struct Conf {
    #[serde(default)]
    registry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    location: Option<String>,
    insecure: Option<bool>,
}

fn files(root: &Path) -> Vec<PathBuf> {
    let system = std::env::var_os("CONTAINERS_REGISTRIES_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/containers/registries.conf"));
    vec![root.join("registries.conf"), system]
}

/// What the configuration says of `registry` (host[:port]): `Some(true)` for plain http,
/// `Some(false)` for TLS, `None` when no file lists it.
///
/// # Errors
/// [`ImageError::RegistriesConf`] for a file that is not valid TOML.
pub fn insecure(root: &Path, registry: &str) -> Result<Option<bool>> {
    for path in files(root) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if let Some(v) = insecure_in(&text, registry).map_err(|reason| ImageError::RegistriesConf { path, reason })? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// [`insecure`] for one file's text. A `location` names a host[:port], optionally with a
/// namespace (`host/ns`); an entry matches when its host part is `registry`.
fn insecure_in(text: &str, registry: &str) -> std::result::Result<Option<bool>, String> {
    let conf: Conf = toml::from_str(text).map_err(|e| e.to_string())?;
    Ok(conf.registry.iter().find_map(|e| {
        let location = e.location.as_deref()?;
        let host = location.split('/').next().unwrap_or(location);
        (host == registry).then_some(e.insecure.unwrap_or(false))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "registry.internal:5000"
insecure = true

[[registry]]
location = "quay.io/team"
"#;

    #[test]
    fn listed_registries_and_defaults() {
        assert_eq!(insecure_in(CONF, "registry.internal:5000"), Ok(Some(true)));
        assert_eq!(insecure_in(CONF, "quay.io"), Ok(Some(false)));
        assert_eq!(insecure_in(CONF, "example.com"), Ok(None));
        assert_eq!(insecure_in("", "example.com"), Ok(None));
    }

    #[test]
    fn malformed_file_is_an_error() {
        assert!(insecure_in("[[registry]\nlocation = ", "x").is_err());
    }
}
