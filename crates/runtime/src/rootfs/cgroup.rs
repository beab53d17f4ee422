//! The `cgroup` mount type (runtime-spec config-linux.md "Control groups", mounted the
//! way runc does): cgroup2 on a unified host; on v1 and hybrid hosts a tmpfs holding
//! one directory per hierarchy (a bind of the process's own cgroup, or a fresh mount
//! of the hierarchy inside a cgroup namespace), the "cpu -> cpu,cpuacct" links and, on
//! hybrid hosts, the `unified` cgroup2.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use super::mounts::{bind_host, remount_bind, sys_mount, Env};
use super::options::MountOptions;
use super::paths::{fd_path, Kind, Root};
use crate::error::{Context, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One line of /proc/self/mountinfo, the fields this module needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// Root of the mount within its filesystem.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Optional fields ("shared:12", "master:3").
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Superblock options ("rw,cpu,cpuacct").
    pub super_options: String,
}

/// Undoes the octal escapes of a /proc/self/mountinfo field ("\040" is a space; proc(5)):
/// the path as the kernel knows it. A backslash not followed by three octal digits stays.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses /proc/self/mountinfo text (proc(5)); malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(MountInfo {
                root: unescape(fields.get(3)?),
                mount_point: unescape(fields.get(4)?),
                optional: fields.get(6..sep)?.iter().map(|s| s.to_string()).collect(),
                fstype: fields.get(sep + 1)?.to_string(),
                super_options: fields.get(sep + 3).map(|s| unescape(s)).unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads this process's mount table.
pub(crate) fn read_mountinfo() -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ctx(|| "read /proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Parses /proc/self/cgroup (cgroups(7)): (controllers, path) per hierarchy; the v2
/// hierarchy has no controllers.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrl, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctrl.to_string(), path.to_string()))
        })
        .collect()
}

/// `mount_point` + the part of `own` (a cgroup path) below the mount's `root`.
fn own_source(mi: &MountInfo, own: &str) -> PathBuf {
    let rel = Path::new(own).strip_prefix(&mi.root).unwrap_or(Path::new(own));
    let rel = rel.strip_prefix("/").unwrap_or(rel);
    Path::new(&mi.mount_point).join(rel)
}

/// Mounts the cgroup filesystem(s) at `dest` inside `root`.
pub(crate) fn mount_cgroup(root: &Root, env: Env, dest: &Path, opts: &MountOptions) -> Result<()> {
    let flags = opts.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
    let target = root.ensure(dest, Kind::Dir)?;
    let own = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").ctx(|| "read /proc/self/cgroup")?);
    let host = rustix::fs::statfs(CGROUP_ROOT).ctx(|| format!("statfs {CGROUP_ROOT}"))?;

    if host.f_type as i64 == CGROUP2_SUPER_MAGIC {
        return match sys_mount(
            Some(OsStr::new("cgroup2")),
            &fd_path(&target),
            Some("cgroup2"),
            flags,
            None,
        ) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EBUSY)) => {
                // No cgroup namespace of our own (or not allowed): show our own cgroup.
                let path = own.iter().find(|(c, _)| c.is_empty()).map_or("/", |(_, p)| p.as_str());
                let mi = MountInfo {
                    root: "/".into(),
                    mount_point: CGROUP_ROOT.into(),
                    optional: vec![],
                    fstype: "cgroup2".into(),
                    super_options: String::new(),
                };
                let src = own_source(&mi, path);
                bind_host(root, dest, &target, &src, true, flags).ctx(|| format!("bind {}", src.display()))
            }
            r => r.ctx(|| "mount cgroup2"),
        };
    }

    let infos = read_mountinfo()?;
    let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    sys_mount(
        Some(OsStr::new("tmpfs")),
        &fd_path(&target),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .ctx(|| "mount tmpfs")?;
    let top = root.open_path(dest).map_err(|e| root.err("reopen", dest, e))?;
    let mut done = HashSet::new();
    for (ctrls, path) in &own {
        let wanted: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
        let mi = infos.iter().find(|mi| {
            if wanted.is_empty() {
                mi.fstype == "cgroup2" && mi.mount_point.starts_with("/sys/fs/cgroup/")
            } else {
                let have: Vec<&str> = mi.super_options.split(',').collect();
                mi.fstype == "cgroup" && wanted.iter().all(|w| have.contains(w))
            }
        });
        let Some(mi) = mi else { continue };
        let Some(name) = Path::new(&mi.mount_point).file_name().map(|n| n.to_os_string()) else {
            continue;
        };
        if !done.insert(name.clone()) {
            continue;
        }
        let sub = dest.join(&name);
        let sub_fd = root.mkdir_all(&sub)?;
        let at = fd_path(&sub_fd);
        let r = if env.cgroupns && wanted.is_empty() {
            sys_mount(Some(OsStr::new("cgroup2")), &at, Some("cgroup2"), flags, None)
        } else if env.cgroupns {
            sys_mount(Some(OsStr::new("cgroup")), &at, Some("cgroup"), flags, Some(ctrls))
        } else {
            bind_host(root, &sub, &sub_fd, &own_source(mi, path), true, flags)
        };
        r.ctx(|| format!("mount the {} hierarchy on {}", mi.mount_point, sub.display()))?;
        // "cpu" -> "cpu,cpuacct", as the host has them.
        let name = name.to_string_lossy().into_owned();
        for part in name.split(',').filter(|p| *p != name && !p.starts_with("name=")) {
            match rustix::fs::symlinkat(name.as_str(), &top, part) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(root.err("symlink", &dest.join(part), io::Error::from(e))),
            }
        }
    }
    if flags & libc::MS_RDONLY != 0 {
        remount_bind(&fd_path(&top), base | libc::MS_RDONLY).ctx(|| "remount the cgroup tmpfs read-only")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_proc_cgroup() {
        let text = "31 23 0:28 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755\n\
                    32 31 0:29 /sub /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                    40 27 0:40 / /mnt/with\\040space rw - ext4 /dev/vda rw\n\
                    garbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].optional, vec!["shared:9".to_string()]);
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,cpu,cpuacct");
        assert_eq!(m[2].mount_point, "/mnt/with space");

        let own = parse_proc_cgroup("2:cpu,cpuacct:/sub/c1\n1:name=systemd:/\n0::/x\n");
        assert_eq!(own[0], ("cpu,cpuacct".into(), "/sub/c1".into()));
        assert_eq!(own[2], (String::new(), "/x".into()));
        assert_eq!(
            own_source(&m[1], "/sub/c1"),
            PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/c1")
        );
        assert_eq!(own_source(&m[0], "/"), PathBuf::from("/sys/fs/cgroup"));
    }
}
