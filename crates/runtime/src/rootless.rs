//! Rootless operation (runc's and crun's rootless mode; user_namespaces(7),
//! newuidmap(1), newgidmap(1), subuid(5)): whether the runtime runs without root on the
//! host, and the id maps of a new user namespace written for such a caller. A process
//! that is not root in the initial user namespace may write only a map of its own uid
//! (and its gid, after `deny` in setgroups); wider maps, such as the caller's
//! `/etc/subuid` range, are written by the set-uid helpers `newuidmap` and `newgidmap`
//! (Debian's `uidmap` package), which check them against `/etc/subuid` and
//! `/etc/subgid`.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Error, Result};
use crate::procfs::ProcFs;

/// The uid map of a process that is root of the initial user namespace (all ids mapped
/// to themselves).
const FULL_MAP: &str = "0 0 4294967295";

/// True when this process is not root in the initial user namespace: its effective uid
/// is not 0, or it runs in a user namespace of its own (for example in `vessel`'s
/// rootless session, where it is uid 0 but owns nothing of the host). Such a caller
/// cannot make cgroups unless a subtree is delegated to it, and writes wide id maps
/// through the set-uid helpers.
pub fn is_rootless() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return true;
    }
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>().join(" ") != FULL_MAP,
        Err(_) => false,
    }
}

/// The id a process may map by itself: its own (effective) uid or gid, once.
fn only_own_id(maps: &[LinuxIdMapping], own: u32) -> bool {
    matches!(maps, [m] if m.host_id() == own && m.size() == 1)
}

/// Writes the id maps of the new user namespace of process `pid` for a caller that is
/// not root on the host (`geteuid() != 0`): a map of only the caller's own uid and gid
/// is written directly (setgroups is set to `deny` first, as the kernel requires);
/// anything wider goes through `newuidmap PID ID HOSTID SIZE...` and `newgidmap`. When
/// both helpers are needed they run at the same time (they write different files of
/// `pid`), so a rootless command waits for one set-uid exec instead of two in a row.
///
/// Errors: [`Error::Sys`] naming the helper when it is missing (install Debian's
/// `uidmap`) or the map file; [`Error::Invalid`] with the helper's own message when it
/// refuses the map (the range is not the caller's in /etc/subuid or /etc/subgid).
pub fn write_id_maps(pid: i32, uid_maps: &[LinuxIdMapping], gid_maps: &[LinuxIdMapping]) -> Result<()> {
    // SAFETY: geteuid and getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let proc = ProcFs::get()?;
    let uid_direct = uid_maps.is_empty() || only_own_id(uid_maps, uid);
    let gid_direct = gid_maps.is_empty() || only_own_id(gid_maps, gid);
    // The helpers start first; the direct writes happen while they run.
    let uid_helper = (!uid_direct)
        .then(|| Helper::spawn("newuidmap", pid, uid_maps))
        .transpose()?;
    let gid_helper = match (!gid_direct)
        .then(|| Helper::spawn("newgidmap", pid, gid_maps))
        .transpose()
    {
        Ok(h) => h,
        Err(e) => {
            if let Some(h) = uid_helper {
                let _ = h.finish();
            }
            return Err(e);
        }
    };
    let mut direct = Ok(());
    if uid_direct && !uid_maps.is_empty() {
        direct = proc.write_pid(pid, "uid_map", map_line(uid_maps).as_bytes());
    }
    if direct.is_ok() && gid_direct && !gid_maps.is_empty() {
        direct = proc
            .write_pid(pid, "setgroups", b"deny")
            .and_then(|()| proc.write_pid(pid, "gid_map", map_line(gid_maps).as_bytes()));
    }
    // Both helpers are waited for (none is left running), then the first error counts.
    let uid_done = uid_helper.map_or(Ok(()), Helper::finish);
    let gid_done = gid_helper.map_or(Ok(()), Helper::finish);
    direct.and(uid_done).and(gid_done)
}

fn map_line(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Finds a helper on PATH, then in /usr/bin and /usr/sbin.
fn find_helper(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A running `newuidmap`/`newgidmap` for one process, its output captured.
struct Helper {
    name: &'static str,
    pid: i32,
    map: String,
    child: std::process::Child,
}

impl Helper {
    /// Starts `name PID ID HOSTID SIZE...` for `maps`.
    fn spawn(name: &'static str, pid: i32, maps: &[LinuxIdMapping]) -> Result<Helper> {
        let helper = find_helper(name).ok_or_else(|| {
            Error::sys(
                format!("find {name} (needed to map more than the caller's own id into a user namespace; install Debian's uidmap package)"),
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        let mut cmd = Command::new(&helper);
        cmd.arg(pid.to_string());
        for m in maps {
            cmd.args([
                m.container_id().to_string(),
                m.host_id().to_string(),
                m.size().to_string(),
            ]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::sys(format!("run {}", helper.display()), e))?;
        Ok(Helper {
            name,
            pid,
            map: map_line(maps).trim().replace('\n', ", "),
            child,
        })
    }

    /// Waits for the helper; its stderr becomes the error when it refused the map.
    fn finish(self) -> Result<()> {
        let Helper { name, pid, map, child } = self;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::sys(format!("wait for {name} {pid}"), e))?;
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "{name} {pid} refused the map ({map}): {}: the host ranges must be the caller's in /etc/subuid and /etc/subgid",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    fn m(c: u32, h: u32, s: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(c)
            .host_id(h)
            .size(s)
            .build()
            .unwrap()
    }

    #[test]
    fn own_id_only() {
        assert!(only_own_id(&[m(0, 1000, 1)], 1000));
        assert!(!only_own_id(&[m(0, 1000, 1), m(1, 100000, 65536)], 1000));
        assert!(!only_own_id(&[m(0, 1000, 2)], 1000));
        assert!(!only_own_id(&[m(0, 1001, 1)], 1000));
        assert_eq!(
            map_line(&[m(0, 1000, 1), m(1, 100000, 65536)]),
            "0 1000 1\n1 100000 65536\n"
        );
    }
}
