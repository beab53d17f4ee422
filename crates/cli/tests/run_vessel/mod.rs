//! Runs the `vessel` binary built for these tests and shows its output in the test log.

use std::path::Path;
use std::process::{Command, Output};

/// `vessel --root ROOT ARGS...`, to completion; stdout and stderr are echoed to the
/// test's stderr (shown when the test fails).
#[allow(dead_code)]
pub fn vessel(root: &Path, args: &[&str]) -> Output {
    let out = vessel_cmd(root).args(args).output().unwrap();
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

/// The cgroup parent of the containers of the instance at `root`: one per test root, so
/// the test can remove it afterwards without racing other tests.
#[allow(dead_code)]
pub fn cgroup_parent(root: &Path) -> String {
    let h = root.to_string_lossy().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("/vessel-test-{h:016x}")
}

/// `vessel --root ROOT` with the instance's own cgroup parent and `--network none`
/// as the default, ready for args.
pub fn vessel_cmd(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vessel"));
    c.arg("--root")
        .arg(root)
        .env("VESSEL_CGROUP_PARENT", cgroup_parent(root))
        // Never a bridge on the machine's own network: the network tests make their own
        // namespace and ask for bridges there.
        .env("VESSEL_NETWORK", "none");
    // Containers get id ranges from the test's own subuid/subgid files (never the
    // machine's), and their root, an unprivileged host id, must reach the bundle under
    // the test's temp dir.
    let dir = root.parent().unwrap_or(root);
    let (subuid, subgid) = (dir.join("vessel-subuid"), dir.join("vessel-subgid"));
    for f in [&subuid, &subgid] {
        if dir.is_dir() && !f.exists() {
            std::fs::write(f, "vessel:1000000000:1000000000\n").unwrap();
        }
    }
    if let Ok(m) = std::fs::metadata(dir) {
        use std::os::unix::fs::PermissionsExt;
        let mode = m.permissions().mode() & 0o7777;
        if mode & 0o001 == 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011));
        }
    }
    c.env("VESSEL_SUBUID", subuid).env("VESSEL_SUBGID", subgid);
    c
}
