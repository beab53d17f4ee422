//! The container's user: `-u USER[:GROUP]` resolved against the image's etc/passwd and
//! etc/group, the way docker and runc do it (runc's `user.GetExecUser`): names or
//! numbers, numeric ids that the files do not list are allowed, and the supplementary
//! groups are those of etc/group that list the user.
//!
//! The files are read inside the container's root with openat2(2) `RESOLVE_IN_ROOT`:
//! a symlink in the image (`etc/passwd -> /etc/passwd`, `../../etc/shadow`) resolves
//! within the image, never to the host's files.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// A user as the container process runs: ids for `process.user`, and the passwd entry's
/// home and name when the user has one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id (`process.user.uid`).
    pub uid: u32,
    /// Primary group id (`process.user.gid`).
    pub gid: u32,
    /// Supplementary groups (`process.user.additionalGids`): the groups of etc/group
    /// that list the user by name; empty when a group was given explicitly.
    pub additional_gids: Vec<u32>,
    /// Home directory from etc/passwd; `None` when the user has no entry.
    pub home: Option<String>,
    /// User name from etc/passwd; `None` when the user has no entry.
    pub name: Option<String>,
}

/// One line of etc/passwd.
#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of etc/group.
#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The largest id docker and runc accept (ids are signed 32-bit in their code, and
/// 2^32-1 is the kernel's "no id").
const MAX_ID: u32 = i32::MAX as u32;

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n <= MAX_ID)
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            // name:password:uid:gid:gecos:home:shell; shorter lines are skipped as runc does
            // for lines whose ids do not parse.
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: parse_id(f.get(2)?)?,
                gid: parse_id(f.get(3)?)?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: parse_id(f.get(2)?)?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `rel` (relative, like "etc/passwd") inside `root`, resolving every symlink as if
/// `root` were "/". `Ok(None)` when it does not exist.
fn read_in_root(root: &Path, rel: &str) -> Result<Option<String>> {
    let full = root.join(rel);
    let dir: OwnedFd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Error::io("open the container root", root, e.into()))?;
    let mut tries = 0;
    let fd = loop {
        match rustix::fs::openat2(
            &dir,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => break fd,
            Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Ok(None),
            // openat2 asks for a retry when a rename raced with the lookup.
            Err(Errno::AGAIN) | Err(Errno::INTR) if tries < 16 => tries += 1,
            Err(e) => return Err(Error::io("open", full, e.into())),
        }
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", &full, e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::BadInput(format!(
            "{} is not a regular file: the image's user database is unusable",
            full.display()
        )));
    }
    let mut bytes = Vec::new();
    // Cap what we read: a user database larger than this is not one.
    std::fs::File::from(fd)
        .take(64 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &full, e))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Resolves the container's user from `-u`: `name`, `uid`, `name:group`, `uid:gid`
/// (or mixed, `name:gid`, `uid:group`); `None` (or "") is root, uid 0. Looks the names
/// up in `root`/etc/passwd and `root`/etc/group, where `root` is the container's root
/// file system (or "/" for the built-in host image); symlinks are resolved inside
/// `root` (openat2 `RESOLVE_IN_ROOT`). Missing files count as empty.
///
/// As docker and runc: a number that passwd does not list is the uid, with gid 0 (or
/// the given group) and no home; a user found in passwd brings its primary gid, home and
/// name; without an explicit group, the supplementary groups are those that list the
/// user's name in etc/group.
///
/// Errors: [`Error::BadInput`] `unable to find user X: no matching entries in passwd
/// file` for an unknown name (likewise for groups), and for ids above 2147483647;
/// [`Error::Io`] when a file exists but cannot be read.
pub fn resolve(root: &Path, user: Option<&str>) -> Result<ResolvedUser> {
    let spec = user.unwrap_or("").trim();
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let group_arg = group_arg.filter(|g| !g.is_empty());
    let numeric = |s: &str| -> Result<Option<u32>> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return parse_id(s)
                .map(Some)
                .ok_or_else(|| Error::BadInput(format!("invalid user {spec:?}: ids must be in the range 0-{MAX_ID}")));
        }
        Ok(None)
    };
    let uid_arg = numeric(user_arg)?;
    let gid_arg = group_arg.map(numeric).transpose()?.flatten();

    let passwd = read_in_root(root, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let entry = if user_arg.is_empty() {
        passwd.iter().find(|p| p.uid == 0)
    } else if let Some(uid) = uid_arg {
        passwd.iter().find(|p| p.uid == uid)
    } else {
        passwd.iter().find(|p| p.name == user_arg)
    };
    let mut out = match (entry, uid_arg) {
        (Some(p), _) => ResolvedUser {
            uid: p.uid,
            gid: p.gid,
            additional_gids: Vec::new(),
            home: Some(p.home.clone()),
            name: Some(p.name.clone()),
        },
        (None, Some(uid)) => ResolvedUser {
            uid,
            ..ResolvedUser::default()
        },
        (None, None) if user_arg.is_empty() => ResolvedUser::default(),
        (None, None) => {
            return Err(Error::BadInput(format!(
                "unable to find user {user_arg}: no matching entries in passwd file"
            )))
        }
    };

    if group_arg.is_none() && out.name.is_none() {
        return Ok(out);
    }
    let groups = read_in_root(root, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    match group_arg {
        Some(g) => {
            let found = match gid_arg {
                Some(gid) => groups.iter().find(|e| e.gid == gid).map(|e| e.gid).or(Some(gid)),
                None => groups.iter().find(|e| e.name == g).map(|e| e.gid),
            };
            out.gid = found.ok_or_else(|| {
                Error::BadInput(format!("unable to find group {g}: no matching entries in group file"))
            })?;
        }
        None => {
            if let Some(name) = &out.name {
                for e in groups.iter().filter(|e| e.members.iter().any(|m| m == name)) {
                    if !out.additional_gids.contains(&e.gid) {
                        out.additional_gids.push(e.gid);
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n\
             # a comment\n\
             daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
             broken:x:notanumber:1::/:/bin/sh\n\
             app:x:1000:1001:App:/home/app:/bin/sh\n\
             nohome:x:1002:1002\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\n\
             wheel:x:10:root,app\n\
             app:x:1001:\n\
             audio:x:29:app\n\
             staff:x:50:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn default_is_root_with_its_groups() {
        let r = rootfs();
        let u = resolve(r.path(), None).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![10],
                home: Some("/root".into()),
                name: Some("root".into())
            }
        );
        assert_eq!(resolve(r.path(), Some("")).unwrap(), u);
        assert_eq!(resolve(r.path(), Some("0")).unwrap(), u);
    }

    #[test]
    fn names_and_numbers() {
        let r = rootfs();
        let u = resolve(r.path(), Some("app")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![10, 29]);
        assert_eq!(u.home.as_deref(), Some("/home/app"));
        assert_eq!(resolve(r.path(), Some("1000")).unwrap(), u);

        // An explicit group replaces the primary gid and drops the supplementary ones.
        let u = resolve(r.path(), Some("app:staff")).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.len()), (1000, 50, 0));
        let u = resolve(r.path(), Some("app:4242")).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 4242));
        let u = resolve(r.path(), Some("1:wheel")).unwrap();
        assert_eq!((u.uid, u.gid, u.name.as_deref()), (1, 10, Some("daemon")));

        // Numeric ids the files do not list are allowed (docker).
        let u = resolve(r.path(), Some("4000")).unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 4000,
                ..Default::default()
            }
        );
        let u = resolve(r.path(), Some("4000:4001")).unwrap();
        assert_eq!((u.uid, u.gid, u.home), (4000, 4001, None));
        let u = resolve(r.path(), Some("nohome")).unwrap();
        assert_eq!((u.uid, u.home.as_deref()), (1002, Some("")));
    }

    #[test]
    fn unknown_names_fail() {
        let r = rootfs();
        let e = resolve(r.path(), Some("nobody")).unwrap_err();
        assert!(matches!(e, Error::BadInput(_)));
        assert_eq!(
            e.to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        let e = resolve(r.path(), Some("app:nogroup")).unwrap_err().to_string();
        assert_eq!(e, "unable to find group nogroup: no matching entries in group file");
        // "broken" has an unparsable uid: skipped, so unknown.
        assert!(resolve(r.path(), Some("broken")).is_err());
        let e = resolve(r.path(), Some("99999999999")).unwrap_err().to_string();
        assert!(e.contains("0-2147483647"), "{e}");
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(dir.path(), None).unwrap(), ResolvedUser::default());
        let u = resolve(dir.path(), Some("5:6")).unwrap();
        assert_eq!((u.uid, u.gid), (5, 6));
        assert!(resolve(dir.path(), Some("app")).is_err());
        assert!(resolve(dir.path(), Some("0:wheel")).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        // A passwd outside the root that lists "escapee".
        let outside = tempfile::tempdir().unwrap();
        let evil = outside.path().join("passwd");
        fs::write(&evil, "escapee:x:777:777::/evil:/bin/sh\n").unwrap();

        // Absolute symlink: resolved as <root>/<outside path>, which does not exist.
        let r = tempfile::tempdir().unwrap();
        fs::create_dir_all(r.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&evil, r.path().join("etc/passwd")).unwrap();
        let e = resolve(r.path(), Some("escapee")).unwrap_err().to_string();
        assert!(e.contains("unable to find user escapee"), "{e}");

        // Relative symlink climbing out: clamped at the root.
        let r2 = tempfile::tempdir().unwrap();
        fs::create_dir_all(r2.path().join("etc")).unwrap();
        let mut up = PathBuf::new();
        for _ in 0..r2.path().components().count() + 2 {
            up.push("..");
        }
        std::os::unix::fs::symlink(up.join(evil.strip_prefix("/").unwrap()), r2.path().join("etc/passwd")).unwrap();
        assert!(resolve(r2.path(), Some("escapee")).is_err());

        // A symlink that stays inside the root is followed.
        let r3 = rootfs();
        fs::rename(r3.path().join("etc/passwd"), r3.path().join("etc/passwd.real")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd.real", r3.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(r3.path(), Some("app")).unwrap().uid, 1000);

        // The host's own database, as for the built-in host image.
        assert_eq!(resolve(Path::new("/"), Some("root")).unwrap().uid, 0);
    }
}
