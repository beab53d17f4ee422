//! Small helpers shared by the modules: crash-safe writes, a directory lock, ids,
//! timestamps and the name rules of the CNI protocol.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, NetError, Result};

/// Writes `data` to `path` through a temporary file, fsync and rename, then fsyncs the
/// directory: a crash leaves the old file or the new one, never a torn one.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).at("create", dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .at("create", &tmp)?;
        f.write_all(data).at("write", &tmp)?;
        f.sync_all().at("fsync", &tmp)?;
        std::fs::rename(&tmp, path).at("rename", path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive `flock` on a file, released on drop.
pub(crate) struct Lock(#[allow(dead_code)] File);

impl Lock {
    /// Takes the lock on `path` (created when missing), waiting for other holders.
    pub(crate) fn take(path: &Path) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at("create", dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .at("open", path)?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive).at("lock", path)?;
        Ok(Lock(f))
    }
}

/// 64 lowercase hex digits from the kernel's random source.
pub(crate) fn random_hex64() -> Result<String> {
    let mut buf = [0u8; 32];
    let mut filled = 0;
    while filled < buf.len() {
        let n = rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| NetError::io("getrandom", "/dev/urandom", e.into()))?;
        filled += n;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The current time as RFC 3339 in UTC with nanoseconds (`2026-11-21T10:00:00.123456789Z`).
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Checks a network name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters (podman's
/// rule; it is also a file name under ROOT/networks and a CNI network name).
pub(crate) fn check_network_name(name: &str) -> Result<()> {
    check_name("network name", name, 64)
}

/// Checks a container id as libcni does (`ValidateContainerID`): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn check_container_id(id: &str) -> Result<()> {
    check_name("container id", id, 255)
}

fn check_name(what: &'static str, name: &str, max: usize) -> Result<()> {
    let bad = |reason| {
        Err(NetError::BadName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("it is empty"),
        Some(c) if !c.is_ascii_alphanumeric() => return bad("it must start with a letter or digit"),
        _ => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    if name.len() > max {
        return bad("it is too long");
    }
    Ok(())
}

/// Checks an interface name as libcni does (`ValidateInterfaceName`): 1 to 15 bytes, not
/// `.` or `..`, no `/`, `:` or white space.
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(NetError::BadName {
            what: "interface name",
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 15 {
        return bad("it is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("it is . or ..");
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return bad("'/', ':' and white space are not allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_network_name("vessel").is_ok());
        assert!(check_network_name("my_net.2-a").is_ok());
        assert!(check_network_name("").is_err());
        assert!(check_network_name("-x").is_err());
        assert!(check_network_name("a/b").is_err());
        assert!(check_network_name(&"a".repeat(65)).is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a:b").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
    }

    #[test]
    fn ids_and_time() {
        let a = random_hex64().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex64().unwrap());
        let t = now_rfc3339();
        assert_eq!(t.len(), 30, "{t}");
        assert!(t.ends_with('Z'));
    }
}
