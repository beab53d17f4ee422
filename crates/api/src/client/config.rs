//! A user's remotes and client certificate, in one directory (`vessel` chooses it:
//! `ROOT/client/` for root or with `--root`, else `~/.config/vessel/`):
//! `client.crt`/`client.key` (made once, on first need) and `remotes.json`
//! (`{"default": NAME?, "remotes": {NAME: {"url", "fingerprint"}}}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ClientError, Remote};
use crate::tls::store::write_private;
use crate::tls::{io, Identity, TlsError};

/// A remote as remembered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteEntry {
    /// `https://HOST:PORT`.
    pub url: String,
    /// The server certificate's pinned SHA-256 fingerprint.
    pub fingerprint: String,
}

/// `remotes.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Remotes {
    /// The remote commands go to without `--remote` (None: this host).
    #[serde(default)]
    pub default: Option<String>,
    /// By name.
    #[serde(default)]
    pub remotes: BTreeMap<String, RemoteEntry>,
}

/// The client's configuration directory.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    dir: PathBuf,
}

impl ClientConfig {
    /// The configuration kept in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join("remotes.json")
    }

    /// This user's client certificate, made on first use (`client.crt`, `client.key`).
    ///
    /// Errors: [`TlsError`] for unreadable or unmakeable files.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map_or_else(|| "vessel-client".to_string(), |u| u.name);
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default();
        Identity::load_or_generate(
            &self.dir,
            "client",
            vec![format!("{user}.{host}.vessel-client.invalid")],
        )
    }

    /// `remotes.json` (empty when missing).
    ///
    /// Errors: [`TlsError::Io`]; [`TlsError::BadInput`] when it does not parse.
    pub fn load(&self) -> Result<Remotes, TlsError> {
        let path = self.file();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| TlsError::BadInput(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Remotes::default()),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Writes `remotes.json` (temp + fsync + rename).
    pub fn save(&self, r: &Remotes) -> Result<(), TlsError> {
        let json = serde_json::to_vec_pretty(r).map_err(|e| TlsError::BadInput(e.to_string()))?;
        write_private(&self.file(), &json)
    }

    /// The client of remote `name`.
    ///
    /// Errors: [`TlsError::BadInput`] (wrapped) when no such remote was added.
    pub fn remote(&self, name: &str) -> Result<Remote, ClientError> {
        let all = self.load()?;
        let e = all.remotes.get(name).ok_or_else(|| {
            TlsError::BadInput(format!(
                "no remote {name}: add it with `vessel remote add {name} https://HOST:PORT --token T`"
            ))
        })?;
        Remote::new(&e.url, &e.fingerprint, &self.identity()?)
    }
}
