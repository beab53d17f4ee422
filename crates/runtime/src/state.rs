//! Container state on disk: `<root>/<id>/state.json` (runtime-spec runtime.md "State"),
//! written atomically (temp file, rename), and the status derived from the
//! live process: a state file says what was created, the kernel says whether it runs.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// File holding the state inside a container's state directory.
pub const STATE_FILE: &str = "state.json";
/// The fifo `start` opens to release the container's init (present while "created").
pub const EXEC_FIFO: &str = "exec.fifo";

/// Container status as the spec names them (runtime.md "State"), plus runc's "paused".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The container is being created.
    Creating,
    /// Created: the init waits for `start`.
    Created,
    /// The user program runs.
    Running,
    /// The cgroup is frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime keeps about one container. The first six fields are the spec's
/// state; the rest is ours (runc's `state` prints `rootfs`, `created`, `owner` too).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// runtime-spec version of this state.
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Status at the time of the query (recomputed by [`State::refresh`]).
    pub status: Status,
    /// Host pid of the container's init; 0 once stopped.
    pub pid: i32,
    /// Absolute path of the bundle.
    pub bundle: PathBuf,
    /// config.json annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// Absolute path of the rootfs.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339 in UTC.
    pub created: String,
    /// Owner (user name of the creating uid; runc prints it in `list`).
    pub owner: String,
    /// Start time of the init in clock ticks since boot (/proc/PID/stat field 22): tells
    /// our init from a later process that reuses its pid.
    pub init_start_time: u64,
    /// The cgroup path the container's processes were put into (runtime-spec
    /// `linux.cgroupsPath`, made absolute).
    pub cgroup_path: PathBuf,
    /// Whether the init has a new pid namespace (then killing it ends the container).
    pub own_pid_ns: bool,
    /// Whether config.json has poststart or poststop hooks (`start` and `delete` read
    /// the config again only then).
    #[serde(default)]
    pub post_hooks: bool,
}

/// The state directory of a container.
pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Checks an id the way runc does: letters, digits, `_ + - .`, not `.` or `..`.
///
/// Errors: [`Error::InvalidId`].
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c))
        && id != "."
        && id != "..";
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.into()))
    }
}

impl State {
    /// Loads `<root>/<id>/state.json` and refreshes its status from the kernel.
    ///
    /// Errors: [`Error::NotExist`] when there is no such container, [`Error::Config`]
    /// for a corrupt state file.
    pub fn load(root: &Path, id: &str) -> Result<State> {
        check_id(id)?;
        let path = dir(root, id).join(STATE_FILE);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotExist(id.into())),
            Err(e) => return Err(Error::sys(format!("read {}", path.display()), e)),
        };
        let mut state: State = serde_json::from_slice(&data).map_err(|e| Error::Config {
            path: path.clone(),
            msg: format!("{e}; the state is corrupt: `delete --force {id}` removes it"),
        })?;
        state.refresh(root);
        Ok(state)
    }

    /// Writes the state atomically: a temp file in the same directory, then rename, so
    /// a runtime killed mid-write leaves the old state. No fsync (runc has none either):
    /// the state describes processes that a machine crash ends anyway, and the default
    /// root is a tmpfs.
    pub fn save(&self, root: &Path) -> Result<()> {
        let d = dir(root, &self.id);
        let tmp = d.join(".state.json.tmp");
        let data = serde_json::to_vec(self).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut f = fs::File::create(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        f.write_all(&data).ctx(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, d.join(STATE_FILE)).ctx(|| format!("rename into {}", d.display()))
    }

    /// Recomputes `status` (and clears `pid` when stopped) from the live process: its
    /// pid must exist, not be a zombie, and have the start time we recorded.
    pub fn refresh(&mut self, root: &Path) {
        let alive = self.pid > 0
            && process_start_time(self.pid).is_some_and(|(t, zombie)| t == self.init_start_time && !zombie);
        self.status = if !alive {
            Status::Stopped
        } else if dir(root, &self.id).join(EXEC_FIFO).exists() {
            Status::Created
        } else if crate::cgroups::is_frozen(&self.cgroup_path) {
            Status::Paused
        } else {
            Status::Running
        };
        if self.status == Status::Stopped {
            self.pid = 0;
        }
    }

    /// The spec's state JSON (runtime.md "State") with runc's extra fields, as `state`
    /// prints it and hooks receive it on stdin.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": self.pid,
            "status": self.status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": self.owner,
            "annotations": self.annotations,
        })
    }
}

/// The spec's state (runtime.md "State") for hooks and seccomp agents, before a
/// [`State`] exists: ociVersion, id, status, pid, bundle, annotations.
pub fn oci_state(
    id: &str,
    status: Status,
    pid: i32,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": spec.annotations().clone().unwrap_or_default(),
    })
}

/// Start time (clock ticks after boot) of a process and whether it is a zombie, from
/// /proc/PID/stat (proc(5)); None when there is no such process.
pub fn process_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and ')': fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

/// The ids of all containers under `root`, sorted (directories holding a state.json).
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::sys(format!("read {}", root.display()), e)),
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(STATE_FILE).exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    Ok(ids)
}

/// The current time as RFC 3339 with nanoseconds, in UTC ("2026-11-21T18:00:00.123456789Z").
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// Removes a state directory without ever deleting across a mount point: mounts at or
/// below `dir` (a `criu-root` bind mount of a rootfs that a killed restore of another
/// runtime left, say) are unmounted first, deepest first (MNT_DETACH), and the removal
/// is refused if one is still there, so no file of a rootfs is deleted through one.
///
/// Errors: [`Error::Sys`] naming the mount that could not be unmounted or the file
/// that could not be removed.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let mounted_below = || -> Result<Vec<PathBuf>> {
        let mut v: Vec<PathBuf> = crate::rootfs::read_mountinfo()?
            .into_iter()
            .map(|m| PathBuf::from(m.mount_point))
            .filter(|p| p.starts_with(dir))
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        Ok(v)
    };
    for m in mounted_below()? {
        rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH)
            .ctx(|| format!("unmount {} before removing {}", m.display(), dir.display()))?;
    }
    if let Some(m) = mounted_below()?.first() {
        return Err(Error::sys(
            format!("remove {}: {} is still a mount point", dir.display(), m.display()),
            std::io::Error::from_raw_os_error(libc::EBUSY),
        ));
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::sys(format!("remove {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("vessel-abc_1.2+3").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "ä"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_start_time_is_found() {
        let (t, zombie) = process_start_time(std::process::id() as i32).unwrap();
        assert!(t > 0 && !zombie);
        assert!(process_start_time(-5).is_none());
    }

    #[test]
    fn rfc3339_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 30, "{s}");
        assert!(s.starts_with("20") && s.ends_with('Z'));
    }
}
