//! A cache of CRIU's feature probes (`criu check --feature NAME`, 0.3-0.6 s each on
//! these machines) for the choice of a migration's mode: one small file per feature
//! under `RUNROOT/criu-features/`, named by a digest of the criu binary (its path,
//! device, inode, size and mtime) and of the booted kernel (boot id and release). A
//! new criu binary or a reboot asks CRIU again; so does a file that cannot be read.
//! Only CRIU's own answers are kept: a criu that cannot be started is not cached.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// What CRIU and this kernel are: a digest naming the cache files, or None when the
/// criu binary cannot be found (then nothing is cached).
fn identity() -> Option<String> {
    let criu = vessel_runtime::checkpoint::criu_path();
    let criu = if criu.components().count() > 1 {
        criu
    } else {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(&criu))
            .find(|p| p.is_file())?
    };
    let m = fs::metadata(&criu).ok()?;
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let key = format!(
        "{}\0{}:{}:{}:{}.{}\0{}\0{}",
        criu.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        boot.trim(),
        release.trim()
    );
    let d = Sha256::digest(key.as_bytes());
    Some(d.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

fn cache_file(runroot: &Path, id: &str, feature: &str) -> Option<PathBuf> {
    if feature.is_empty()
        || !feature
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    Some(runroot.join("criu-features").join(format!("{id}-{feature}")))
}

/// [`vessel_runtime::checkpoint::require_feature`] with its answer kept under
/// `runroot` for this criu binary and kernel: `Ok` when CRIU has `feature`, else the
/// error's text (CRIU's words, and `what` needs it).
pub fn require_feature(runroot: &Path, feature: &str, what: &str) -> Result<(), String> {
    let file = identity().and_then(|id| cache_file(runroot, &id, feature));
    if let Some(text) = file.as_ref().and_then(|f| fs::read_to_string(f).ok()) {
        if text == "ok" {
            return Ok(());
        }
        if let Some(e) = text.strip_prefix("missing ") {
            return Err(e.to_string());
        }
    }
    let answer = vessel_runtime::checkpoint::require_feature(feature, what);
    let keep = match &answer {
        Ok(()) => Some("ok".to_string()),
        Err(vessel_runtime::Error::Criu { action, .. }) if action == "check" => {
            answer.as_ref().err().map(|e| format!("missing {e}"))
        }
        Err(_) => None,
    };
    if let (Some(f), Some(text)) = (&file, keep) {
        // Temp + rename: a reader sees the whole answer or none (a lost one is asked again).
        if let Some(dir) = f.parent() {
            let tmp = f.with_extension(format!("tmp{}", std::process::id()));
            let _ = fs::create_dir_all(dir)
                .and_then(|()| fs::write(&tmp, text))
                .and_then(|()| fs::rename(&tmp, f));
            let _ = fs::remove_file(&tmp);
        }
    }
    answer.map_err(|e| e.to_string())
}
