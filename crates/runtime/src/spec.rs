//! Reading and checking config.json (runtime-spec config.md), and the default config
//! that `vessel-oci spec` writes (the same shape as `runc spec`).

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceType, Mount, Process, Spec};

use crate::error::{Error, Result};
use crate::OCI_VERSION;

/// Name of the config file inside a bundle (runtime-spec bundle.md).
pub const CONFIG_FILE: &str = "config.json";

/// Reads `<bundle>/config.json` and checks what the runtime needs: an `ociVersion`
/// of runtime-spec 1.x ([`check_oci_version`]), a process with args, a root whose path exists and is a directory, namespaces listed at most once.
///
/// Errors: [`Error::Config`] for a missing or malformed file (with serde's line and
/// column), [`Error::Invalid`] for a config that parses but cannot be run.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join(CONFIG_FILE);
    let data = fs::read(&path).map_err(|e| Error::Config {
        path: path.clone(),
        msg: if e.kind() == std::io::ErrorKind::NotFound {
            "not found: is --bundle the directory that holds config.json?".into()
        } else {
            e.to_string()
        },
    })?;
    let spec: Spec = serde_json::from_slice(&data).map_err(|e| Error::Config {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    validate(&spec, bundle)?;
    Ok(spec)
}

/// Reads a process.json as `exec --process` takes it (runtime-spec config.md "Process").
///
/// Errors: [`Error::Config`] naming the file.
pub fn load_process(path: &Path) -> Result<Process> {
    let data = fs::read(path).map_err(|e| Error::Config {
        path: path.into(),
        msg: e.to_string(),
    })?;
    serde_json::from_slice(&data).map_err(|e| Error::Config {
        path: path.into(),
        msg: e.to_string(),
    })
}

/// Checks `ociVersion` (config.md "Specification version": REQUIRED, SemVer v2.0.0):
/// a semantic version whose major version is 1, the only one there is. crun refuses
/// what it does not know too ("unknown version specified"); runc 1.1 takes anything.
///
/// Errors: [`Error::Invalid`] naming the value and what is accepted.
pub fn check_oci_version(v: &str) -> Result<()> {
    let Some(major) = semver_major(v) else {
        return Err(Error::Invalid(format!(
            "ociVersion {v:?} is not a semantic version (MAJOR.MINOR.PATCH, e.g. \"{OCI_VERSION}\")"
        )));
    };
    if major != 1 {
        return Err(Error::Invalid(format!(
            "ociVersion {v:?}: runtime-spec major version {major} is not supported; this runtime \
             implements 1.x (up to {OCI_VERSION})"
        )));
    }
    Ok(())
}

/// The major version of a SemVer 2.0.0 string, or None when it is not one.
fn semver_major(v: &str) -> Option<u64> {
    let numeric = |s: &str| -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    };
    let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 || !parts.iter().all(|p| numeric(p)) {
        return None;
    }
    if let Some(pre) = pre {
        let ok = pre
            .split('.')
            .all(|p| ident(p) && (!p.bytes().all(|b| b.is_ascii_digit()) || numeric(p)));
        if !ok {
            return None;
        }
    }
    if build.is_some_and(|b| !b.split('.').all(ident)) {
        return None;
    }
    parts[0].parse().ok()
}

fn validate(spec: &Spec, bundle: &Path) -> Result<()> {
    check_oci_version(spec.version())?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json has no \"process\"".into()))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::Invalid("process.args must name the program to run".into()));
    }
    if !process.cwd().is_absolute() {
        return Err(Error::Invalid(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    let rootfs = rootfs_path(spec, bundle)?;
    match fs::metadata(&rootfs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "root.path {} is not a directory",
                rootfs.display()
            )))
        }
        Err(e) => return Err(Error::sys(format!("root.path {}", rootfs.display()), e)),
    }
    if let Some(namespaces) = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) {
        for (i, ns) in namespaces.iter().enumerate() {
            if namespaces[..i].iter().any(|o| o.typ() == ns.typ()) {
                return Err(Error::Invalid(format!("namespace {} is listed twice", ns.typ())));
            }
        }
        let has_user = namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
        let linux = spec.linux().as_ref();
        let has_maps = linux.is_some_and(|l| l.uid_mappings().as_ref().is_some_and(|m| !m.is_empty()));
        if has_user && !has_maps {
            return Err(Error::Invalid(
                "a new user namespace needs linux.uidMappings and linux.gidMappings".into(),
            ));
        }
    }
    for m in spec.mounts().iter().flatten() {
        if !m.destination().is_absolute() {
            return Err(Error::Invalid(format!(
                "mount destination {:?} must be absolute",
                m.destination()
            )));
        }
    }
    Ok(())
}

/// The absolute host path of the container's root: `root.path`, relative to the bundle
/// unless absolute.
///
/// Errors: [`Error::Invalid`] when config.json has no `root`.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config.json has no \"root\"".into()))?;
    Ok(bundle.join(root.path()))
}

/// True when config.json asks for a new or joined namespace of this type.
pub fn has_namespace(spec: &Spec, typ: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == typ))
}

/// The config `vessel-oci spec` writes: runc's default (busybox-friendly `sh`, a
/// terminal, the standard mounts, masked and read-only paths, the default capability
/// set in bounding, effective and permitted only, as runc 1.1.2 and later write it). With `rootless`, a user namespace mapping the caller's uid and gid to root,
/// and mounts a user namespace may make.
pub fn default_spec(rootless: bool) -> Spec {
    let mut spec = if rootless {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut spec = Spec::rootless(uid, gid);
        if let Some(linux) = spec.linux_mut() {
            let map = |id| {
                LinuxIdMappingBuilder::default()
                    .container_id(0u32)
                    .host_id(id)
                    .size(1u32)
                    .build()
                    .ok()
            };
            linux.set_uid_mappings(map(uid).map(|m| vec![m]));
            linux.set_gid_mappings(map(gid).map(|m| vec![m]));
        }
        spec
    } else {
        Spec::default()
    };
    spec.set_version(OCI_VERSION.to_string());
    spec.set_hostname(Some("vessel".into()));
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
        // No inheritable or ambient capabilities: runc removed them from its default
        // spec after CVE-2022-29162 (a program exec'd by the container's user could
        // otherwise gain them as file capabilities' inheritable half allows).
        if let Some(mut caps) = p.capabilities().clone() {
            caps.set_inheritable(None);
            caps.set_ambient(None);
            p.set_capabilities(Some(caps));
        }
    }
    if spec.linux().is_none() {
        spec.set_linux(LinuxBuilder::default().build().ok());
    }
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }
    spec
}

/// The mounts of a config, empty when it has none.
pub fn mounts(spec: &Spec) -> &[Mount] {
    spec.mounts().as_deref().unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_versions() {
        for ok in ["1.0.0", "1.0.2-dev", "1.1.0", "1.2.0", "1.0.0-rc.1+build.5", "1.3.0"] {
            assert!(check_oci_version(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "1", "1.0", "one", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0+",
        ] {
            let e = check_oci_version(bad).unwrap_err().to_string();
            assert!(e.contains("not a semantic version"), "{bad}: {e}");
        }
        for bad in ["0.6.0", "2.0.0"] {
            let e = check_oci_version(bad).unwrap_err().to_string();
            assert!(e.contains("not supported"), "{bad}: {e}");
        }
    }
}
