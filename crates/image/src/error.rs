//! The one error type of vessel-image: every variant names the digest, reference or path it
//! concerns and, in its message, a hint of the fix.

use std::path::PathBuf;

use crate::digest::Digest;

/// Result with [`ImageError`].
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Everything that can go wrong with images, blobs, layers and snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// An image reference that does not follow `registry[:port]/repo[:tag][@digest]`.
    #[error(
        "invalid image reference {input:?}: {reason} (expected registry[:port]/repository[:tag][@sha256:<64 hex>])"
    )]
    InvalidReference {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A digest that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {input:?}: only sha256:<64 lowercase hex digits> is supported")]
    InvalidDigest {
        /// The text given.
        input: String,
    },
    /// Content whose sha256 differs from the digest that names it.
    #[error("{what} {expected}: content has digest {actual}: the source served tampered or corrupt data; nothing of it was kept")]
    DigestMismatch {
        /// What the content is ("layer blob", "manifest", ...).
        what: String,
        /// The digest promised by the manifest, index or reference.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },
    /// Content whose length differs from the size its descriptor promised.
    #[error("{what} {digest}: size {actual} bytes, the descriptor promised {expected}: tampered or truncated data; nothing of it was kept")]
    SizeMismatch {
        /// What the content is.
        what: String,
        /// Its digest.
        digest: Digest,
        /// Promised size, bytes.
        expected: u64,
        /// Size seen so far, bytes (may stop early when it overflows the promise).
        actual: u64,
    },
    /// An uncompressed layer whose sha256 differs from the image config's `rootfs.diff_ids` entry.
    #[error("layer {layer}: uncompressed content has diff id {actual}, the image config says {expected}: the image is inconsistent; nothing of the layer was kept")]
    DiffIdMismatch {
        /// The layer blob digest.
        layer: Digest,
        /// diff_id from the config.
        expected: Digest,
        /// sha256 of the uncompressed tar.
        actual: Digest,
    },
    /// A layer that could not be decompressed or read as tar (truncated gzip, bad zstd frame, ...).
    #[error("layer {layer}: cannot read its {compression} tar stream: {source} (truncated or corrupt blob); nothing of the layer was kept")]
    LayerStream {
        /// The layer blob digest (or a description of the stream).
        layer: String,
        /// "gzip", "zstd" or "uncompressed".
        compression: &'static str,
        /// The decoder's or tar reader's error.
        source: std::io::Error,
    },
    /// A tar entry refused because unpacking it would reach outside the snapshot or is not allowed.
    #[error("unsafe layer entry {entry:?}: {reason}; the layer was rejected and nothing outside the snapshot directory was touched")]
    UnsafeEntry {
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename", ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A manifest, index or config that cannot be parsed or is inconsistent.
    #[error("{what} {digest}: {reason}")]
    BadManifest {
        /// "manifest", "index", "image config".
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        reason: String,
    },
    /// A media type vessel does not handle.
    #[error("{digest}: unsupported media type {media_type:?} (vessel handles OCI and Docker schema2 manifests, indexes and tar/gzip/zstd layers)")]
    UnsupportedMediaType {
        /// The descriptor's digest.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An index with no manifest for the wanted platform.
    #[error("{reference}: index {digest} has no manifest for platform {wanted} (available: {available}); choose one with --platform")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The index digest.
        digest: Digest,
        /// The platform wanted, `os/arch[/variant]`.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// A single-platform manifest whose config names another platform.
    #[error("{reference}: manifest {digest} is for platform {found}, not {wanted}; pass --platform {found} to take it anyway")]
    PlatformMismatch {
        /// The reference pulled.
        reference: String,
        /// The manifest digest.
        digest: Digest,
        /// The platform wanted.
        wanted: String,
        /// The platform in the image config.
        found: String,
    },
    /// A blob the manifest names but the registry or layout does not have.
    #[error("blob {digest} named by {referrer} is missing from {source_name}: the image is incomplete; nothing of it was kept")]
    MissingBlob {
        /// The missing blob.
        digest: Digest,
        /// The manifest or index naming it.
        referrer: String,
        /// The registry or layout.
        source_name: String,
    },
    /// A registry request that failed.
    #[error("registry {registry}: {what}: {message}{hint}")]
    Registry {
        /// Registry host[:port].
        registry: String,
        /// The request ("pull manifest docker.io/library/busybox:latest", "pull blob sha256:...").
        what: String,
        /// The client's error text.
        message: String,
        /// A hint (may be empty).
        hint: &'static str,
    },
    /// A manifest (tag or digest) or repository that the registry does not have.
    #[error("image {reference} not found in registry {registry}: check the repository name and the tag")]
    NotInRegistry {
        /// The reference asked for.
        reference: String,
        /// Registry host[:port].
        registry: String,
    },
    /// A registry whose host name does not resolve.
    #[error("registry {registry}: the host name {host:?} does not resolve: check the name (or the DNS set-up in /etc/resolv.conf)")]
    RegistryUnresolvable {
        /// Registry host[:port].
        registry: String,
        /// The host name.
        host: String,
    },
    /// A registry host that does not answer (connection refused, unreachable, timed out).
    #[error(
        "registry {registry} does not answer ({reason}): is the registry running, and are the host and port right?"
    )]
    RegistryUnreachable {
        /// Registry host[:port].
        registry: String,
        /// The OS error of the connection.
        reason: String,
    },
    /// Credentials that could not be read or stored.
    #[error("credentials for {registry}: {reason}")]
    Auth {
        /// Registry host[:port].
        registry: String,
        /// What went wrong.
        reason: String,
    },
    /// No local image matches.
    #[error("image {name:?} not found in the local store (see `vessel images`; `vessel pull {name}` fetches it)")]
    ImageNotFound {
        /// The name, id or digest asked for.
        name: String,
    },
    /// A short id matching several images.
    #[error("image id prefix {name:?} matches several images ({candidates}); give more digits")]
    AmbiguousImage {
        /// The prefix.
        name: String,
        /// The matching ids.
        candidates: String,
    },
    /// A snapshot key or chain id that does not exist.
    #[error("snapshot {key:?} not found under {root}")]
    SnapshotNotFound {
        /// The key or chain id.
        key: String,
        /// The snapshots directory.
        root: PathBuf,
    },
    /// A snapshot key that already exists (prepare) or is in use (remove).
    #[error("snapshot {key:?}: {reason}")]
    SnapshotConflict {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A mount or unmount failed.
    #[error("mount overlay on {target}: {source} (lowers: {lowers})")]
    Mount {
        /// The mount point.
        target: PathBuf,
        /// Joined lower dirs (for the report).
        lowers: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An OCI layout or archive that is not usable.
    #[error("{location}: {reason}")]
    Layout {
        /// `oci:DIR`, `oci-archive:FILE`, ...
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// A registries.conf that is not valid TOML.
    #[error("{path}: {reason}: fix or remove the file")]
    RegistriesConf {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A layer that cannot be written as eStargz (`vessel image convert --estargz`, `optimize`).
    #[error("eStargz conversion of layer {layer}: {reason}{hint}")]
    Estargz {
        /// The source layer's blob digest.
        layer: Digest,
        /// What failed.
        reason: String,
        /// What to do (starts with ": ", or empty).
        hint: &'static str,
    },
    /// A lazy (eStargz) layer that cannot be read, fetched or served.
    #[error("lazy layer {layer}: {reason}{hint}")]
    Lazy {
        /// The layer's blob digest.
        layer: Digest,
        /// What failed.
        reason: String,
        /// What to do (starts with ": ", or empty).
        hint: &'static str,
    },
    /// JSON that cannot be written or read.
    #[error("{what}: {source}")]
    Json {
        /// What it is (a path or a digest).
        what: String,
        /// The parser's error.
        source: serde_json::Error,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `op` on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Adds an operation and a path to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    /// Maps the error into [`ImageError::Io`].
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| ImageError::io(op, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| ImageError::io(op, path, e.into()))
    }
}
