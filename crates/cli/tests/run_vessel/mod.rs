//! Runs the `vessel` binary built for these tests and shows its output in the test log.

use std::path::Path;
use std::process::{Command, Output};

/// `vessel --root ROOT ARGS...`, to completion; stdout and stderr are echoed to the
/// test's stderr (shown when the test fails).
pub fn vessel(root: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "vessel {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `script` with `bash -euo pipefail` in `dir`; panics with its stderr on failure.
#[allow(dead_code)]
pub fn sh(script: &str, dir: &Path) {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
