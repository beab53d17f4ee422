//! Manifests, indexes and image configs: parsing (OCI image spec and Docker schema2, whose
//! JSON has the same shape), platform matching, and the checks a manifest must pass.

use std::fmt;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::{ImageError, Result};
use crate::layer::Compression;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Every manifest type vessel asks registries for.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// A platform, `os/arch[/variant]` (image spec "Image Index", `platform`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH names: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`.
    pub arch: String,
    /// `v7`, `v8`, ...
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            arch: arch.into(),
            variant: variant.map(String::from),
        }
    }

    /// Parses `os/arch[/variant]` (or `arch` alone, meaning linux).
    ///
    /// # Errors
    /// A message naming the text when it is not `os/arch[/variant]`.
    pub fn parse(s: &str) -> std::result::Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if parts.is_empty() || parts.len() > 3 || !parts.iter().all(ok) {
            return Err(format!("platform {s:?} is not os/arch[/variant]"));
        }
        Ok(match parts.as_slice() {
            [arch] => Platform {
                os: "linux".into(),
                arch: arch.to_string(),
                variant: None,
            },
            [os, arch] => Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            },
            [os, arch, v] => Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            },
            _ => return Err(format!("platform {s:?} is not os/arch[/variant]")),
        })
    }

    /// Whether an image of `os/arch/variant` runs here as `self` asks (arm64's `v8` is the
    /// same as no variant; a wanted variant must match when both name one).
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let norm = |v: Option<&str>| match (arch, v) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        self.os == os
            && self.arch == arch
            && match (&self.variant, norm(variant)) {
                (Some(w), Some(v)) => *w == v || (arch == "arm64" && w == "v8"),
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A parsed manifest-or-index blob.
#[derive(Debug)]
pub enum Manifestish {
    /// An image index / manifest list.
    Index(ImageIndex),
    /// A single-platform manifest.
    Manifest(ImageManifest),
}

/// Parses a manifest or index blob named `digest`, telling them apart by `mediaType` (or by
/// the fields present when it is missing, as OCI allows).
///
/// # Errors
/// [`ImageError::BadManifest`] for invalid JSON or a schema1 manifest,
/// [`ImageError::UnsupportedMediaType`] for other types.
pub fn parse_manifestish(data: &[u8], digest: &Digest) -> Result<Manifestish> {
    let bad = |reason: String| ImageError::BadManifest {
        what: "manifest",
        digest: digest.clone(),
        reason,
    };
    let v: serde_json::Value = serde_json::from_slice(data).map_err(|e| bad(format!("not JSON: {e}")))?;
    if v.get("schemaVersion").and_then(|s| s.as_i64()) != Some(2) {
        return Err(bad(
            "schemaVersion is not 2 (Docker schema1 images are not supported)".into()
        ));
    }
    let mt = v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string);
    let is_index = match mt.as_deref() {
        Some(OCI_INDEX) | Some(DOCKER_MANIFEST_LIST) => true,
        Some(OCI_MANIFEST) | Some(DOCKER_MANIFEST) => false,
        None => v.get("manifests").is_some(),
        Some(other) => {
            return Err(ImageError::UnsupportedMediaType {
                digest: digest.clone(),
                media_type: other.to_string(),
            })
        }
    };
    if is_index {
        let i: ImageIndex = serde_json::from_value(v).map_err(|e| bad(format!("invalid index: {e}")))?;
        Ok(Manifestish::Index(i))
    } else {
        let m: ImageManifest = serde_json::from_value(v).map_err(|e| bad(format!("invalid manifest: {e}")))?;
        for l in m.layers() {
            let mt = l.media_type().to_string();
            if Compression::from_media_type(&mt).is_none() {
                return Err(ImageError::UnsupportedMediaType {
                    digest: Digest::parse(l.digest().as_ref()).unwrap_or_else(|_| digest.clone()),
                    media_type: mt,
                });
            }
        }
        Ok(Manifestish::Manifest(m))
    }
}

/// Picks the manifest for `want` from an index: its digest and media type.
///
/// # Errors
/// [`ImageError::NoMatchingPlatform`] naming what the index offers.
pub fn choose_platform(
    index: &ImageIndex,
    digest: &Digest,
    reference: &str,
    want: &Platform,
) -> Result<(Digest, String, u64)> {
    let mut available = Vec::new();
    let mut best: Option<(&oci_spec::image::Descriptor, bool)> = None;
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        let os = p.os().to_string();
        let arch = p.architecture().to_string();
        let variant = p.variant().clone();
        available.push(match &variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
        if want.matches(&os, &arch, variant.as_deref()) {
            let exact = variant.as_deref() == want.variant.as_deref();
            if best.is_none_or(|(_, e)| !e && exact) {
                best = Some((d, exact));
            }
        }
    }
    match best {
        Some((d, _)) => Ok((
            Digest::parse(d.digest().as_ref())?,
            d.media_type().to_string(),
            d.size(),
        )),
        None => Err(ImageError::NoMatchingPlatform {
            reference: reference.into(),
            digest: digest.clone(),
            wanted: want.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        }),
    }
}

/// Parses an image config blob and checks it against the manifest's layer count.
///
/// # Errors
/// [`ImageError::BadManifest`].
pub fn parse_config(data: &[u8], digest: &Digest, layers: usize) -> Result<(ImageConfiguration, Vec<Digest>)> {
    let bad = |reason: String| ImageError::BadManifest {
        what: "image config",
        digest: digest.clone(),
        reason,
    };
    let c: ImageConfiguration = serde_json::from_slice(data).map_err(|e| bad(format!("invalid image config: {e}")))?;
    let diff_ids = c
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()
        .map_err(|e| bad(e.to_string()))?;
    if diff_ids.len() != layers {
        return Err(bad(format!(
            "rootfs.diff_ids has {} entries but the manifest has {layers} layers",
            diff_ids.len()
        )));
    }
    Ok((c, diff_ids))
}

/// `os/arch[/variant]` of a config.
pub fn config_platform(c: &ImageConfiguration) -> String {
    let mut s = format!("{}/{}", c.os(), c.architecture());
    if let Some(v) = c.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}
