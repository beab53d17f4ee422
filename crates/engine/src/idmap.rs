//! Host id ranges for user namespaces (user_namespaces(7), subuid(5), subgid(5)): each
//! container made with `--userns=auto` (the default) gets a private range of
//! [`RANGE_SIZE`] host uids and as many gids, taken from the `/etc/subuid` and
//! `/etc/subgid` entries of the `vessel` user, so root inside is an unprivileged id on the
//! host that no other container shares.
//!
//! A range is the k-th block of [`RANGE_SIZE`] ids of the user's subordinate uids, paired
//! with the k-th block of its subordinate gids. It is recorded in the records' `idmaps`
//! table in the same transaction as the container's row ([`crate::db::Db::insert`]) and
//! deleted with it ([`crate::db::Db::delete`]): a killed `vessel run` leaves either both or
//! neither. `vessel system check` deletes ranges whose container row is gone.
//!
//! The files are `VESSEL_SUBUID` and `VESSEL_SUBGID` when set (tests use temp files), else
//! `/etc/subuid` and `/etc/subgid`; with the latter, a missing `vessel` user is made
//! (`useradd --system`) and missing entries are added, past every existing one.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::db::Db;
use crate::error::{Error, IoContext, Result};
use crate::options::{IdMap, IdMappings, IdRange, RunOptions};

/// Ids in each container's range: uid 0 to 65535 inside.
pub const RANGE_SIZE: u32 = 65536;

/// The user whose subordinate ids the ranges come from.
pub const VESSEL_USER: &str = "vessel";

/// Where the first run puts the `vessel` user's block when it has none (1e9 ids from 1e9:
/// 15258 ranges), unless existing entries reach past it.
const DEFAULT_BLOCK: (u64, u64) = (1_000_000_000, 1_000_000_000);

/// The subordinate uid and gid files: `VESSEL_SUBUID`/`VESSEL_SUBGID`, else
/// `/etc/subuid`/`/etc/subgid`.
pub fn subid_files() -> (PathBuf, PathBuf) {
    let get = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    (get("VESSEL_SUBUID", "/etc/subuid"), get("VESSEL_SUBGID", "/etc/subgid"))
}

/// The blocks `(start, count)` of `user` (by name, or by its uid `uid`) in the text of a
/// subuid(5)/subgid(5) file, in file order. Malformed lines are skipped (as shadow's tools do).
pub fn parse_blocks(text: &str, user: &str, uid: Option<u32>) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            let mine = who == user || uid.is_some_and(|u| who == u.to_string());
            let start: u32 = start.parse().ok()?;
            let count: u32 = count.parse().ok()?;
            (mine && count > 0).then_some((start, count))
        })
        .collect()
}

/// The uid of `user` in /etc/passwd, if there is one.
fn user_uid(user: &str) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then(|| f.nth(1)?.parse().ok())?
    })
}

/// The `vessel` user's subordinate uid and gid blocks, after making them where missing in
/// the system's files (not in files named by `VESSEL_SUBUID`/`VESSEL_SUBGID`).
#[derive(Debug, Clone)]
pub struct Pool {
    /// Subordinate uid blocks `(start, count)`.
    pub uids: Vec<(u32, u32)>,
    /// Subordinate gid blocks.
    pub gids: Vec<(u32, u32)>,
    /// The uid file, for messages.
    pub uid_file: PathBuf,
}

impl Pool {
    /// Reads the pool of the `vessel` user; on the system's files makes the user and its
    /// entries when missing ([`ensure_system_entries`]).
    ///
    /// # Errors
    /// [`Error::IdRange`] when a file named by `VESSEL_SUBUID`/`VESSEL_SUBGID` has no entry
    /// for `vessel` or cannot be read; [`Error::Io`] when the system's files cannot be
    /// written or `useradd` fails.
    pub fn load() -> Result<Pool> {
        let (uid_file, gid_file) = subid_files();
        let system = std::env::var_os("VESSEL_SUBUID").is_none() && std::env::var_os("VESSEL_SUBGID").is_none();
        if system {
            ensure_system_entries(&uid_file, &gid_file)?;
        }
        let uid = user_uid(VESSEL_USER);
        let read = |p: &Path| -> Result<Vec<(u32, u32)>> {
            let text = std::fs::read_to_string(p).map_err(|e| Error::IdRange {
                path: p.to_path_buf(),
                reason: format!(
                    "{e}: run scripts/setup (or `vessel` once as root) to add the {VESSEL_USER} user's entries"
                ),
            })?;
            let blocks = parse_blocks(&text, VESSEL_USER, uid);
            if blocks.is_empty() {
                return Err(Error::IdRange {
                    path: p.to_path_buf(),
                    reason: format!(
                        "no entry for the user {VESSEL_USER}: add a line like {VESSEL_USER}:{}:{}, or run with --userns=host",
                        DEFAULT_BLOCK.0, DEFAULT_BLOCK.1
                    ),
                });
            }
            Ok(blocks)
        };
        Ok(Pool {
            uids: read(&uid_file)?,
            gids: read(&gid_file)?,
            uid_file,
        })
    }

    /// The k-th range of the pool, if the pool has that many.
    fn slots(blocks: &[(u32, u32)]) -> impl Iterator<Item = u32> + '_ {
        blocks.iter().flat_map(|&(start, count)| {
            let n = count / RANGE_SIZE;
            (0..n).map(move |k| start + k * RANGE_SIZE)
        })
    }

    /// The first range whose uid and gid starts no container holds (`used`: what
    /// [`Db::id_ranges`] returns).
    ///
    /// # Errors
    /// [`Error::IdRange`] when every range of the pool is in use.
    pub fn pick(&self, used: &[(String, u32, u32)]) -> Result<IdRange> {
        let uids: HashSet<u32> = used.iter().map(|u| u.1).collect();
        let gids: HashSet<u32> = used.iter().map(|u| u.2).collect();
        Pool::slots(&self.uids)
            .zip(Pool::slots(&self.gids))
            .find(|(u, g)| !uids.contains(u) && !gids.contains(g))
            .map(|(uid_start, gid_start)| IdRange {
                uid_start,
                gid_start,
                size: RANGE_SIZE,
            })
            .ok_or_else(|| Error::IdRange {
                path: self.uid_file.clone(),
                reason: format!(
                    "every range of {RANGE_SIZE} ids of the {VESSEL_USER} user is in use ({} containers): give it a larger block, or remove containers",
                    used.len()
                ),
            })
    }
}

/// Makes the `vessel` system user when missing (`useradd --system --no-create-home`) and
/// appends a block for it to `uid_file` and `gid_file` where it has none, starting past
/// every existing entry (at 1000000000 unless entries reach beyond).
///
/// # Errors
/// [`Error::Io`] when `useradd` fails or a file cannot be read or written.
pub fn ensure_system_entries(uid_file: &Path, gid_file: &Path) -> Result<()> {
    if user_uid(VESSEL_USER).is_none() {
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                VESSEL_USER,
            ])
            .output()
            .at("run useradd for", VESSEL_USER)?;
        // Another vessel made it meanwhile: exit code 9 (name in use).
        if !out.status.success() && out.status.code() != Some(9) {
            return Err(Error::io(
                "useradd",
                VESSEL_USER,
                std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            ));
        }
    }
    let uid = user_uid(VESSEL_USER);
    for file in [uid_file, gid_file] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("read", file, e)),
        };
        if !parse_blocks(&text, VESSEL_USER, uid).is_empty() {
            continue;
        }
        let end = text
            .lines()
            .filter_map(|l| {
                let mut f = l.trim().split(':').skip(1);
                let start: u64 = f.next()?.parse().ok()?;
                let count: u64 = f.next()?.parse().ok()?;
                Some(start + count)
            })
            .max()
            .unwrap_or(0);
        let start = DEFAULT_BLOCK
            .0
            .max(end.div_ceil(u64::from(RANGE_SIZE)) * u64::from(RANGE_SIZE));
        // uid_t is 32 bits and (uid_t)-1 is never valid.
        let count = DEFAULT_BLOCK
            .1
            .min((u64::from(u32::MAX) - start) / u64::from(RANGE_SIZE) * u64::from(RANGE_SIZE));
        if count < u64::from(RANGE_SIZE) {
            return Err(Error::IdRange {
                path: file.to_path_buf(),
                reason: format!(
                    "no room past the existing entries for a block of the {VESSEL_USER} user: add one by hand"
                ),
            });
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .at("open", file)?;
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        f.write_all(format!("{sep}{VESSEL_USER}:{start}:{count}\n").as_bytes())
            .at("append to", file)?;
        f.sync_all().at("sync", file)?;
    }
    Ok(())
}

/// `CONTAINER:HOST:SIZE` of `--uidmap`/`--gidmap` (podman's form).
///
/// # Errors
/// [`Error::BadInput`] when a part is not a number, the size is 0 or a range passes 2^32-1.
pub fn parse_map(s: &str) -> Result<IdMap> {
    let bad = || {
        Error::BadInput(format!(
            "invalid id map {s:?}: use CONTAINER:HOST:SIZE (e.g. 0:100000:65536)"
        ))
    };
    let mut f = s.split(':');
    let mut num = || -> Result<u32> { f.next().and_then(|v| v.trim().parse().ok()).ok_or_else(bad) };
    let (container, host, size) = (num()?, num()?, num()?);
    if f.next().is_some()
        || size == 0
        || u64::from(container) + u64::from(size) > u64::from(u32::MAX)
        || u64::from(host) + u64::from(size) > u64::from(u32::MAX)
    {
        return Err(bad());
    }
    Ok(IdMap { container, host, size })
}

/// The maps of a container given `range`: container ids 0..size are the range; with
/// `keep` (`--userns=keep-id` of a caller with that uid or gid) that id maps to itself.
pub fn range_maps(start: u32, size: u32, keep: Option<u32>) -> Vec<IdMap> {
    match keep {
        None => vec![IdMap {
            container: 0,
            host: start,
            size,
        }],
        Some(k) if k < size => {
            let mut v = Vec::new();
            if k > 0 {
                v.push(IdMap {
                    container: 0,
                    host: start,
                    size: k,
                });
            }
            v.push(IdMap {
                container: k,
                host: k,
                size: 1,
            });
            if k + 1 < size {
                v.push(IdMap {
                    container: k + 1,
                    host: start + k + 1,
                    size: size - k - 1,
                });
            }
            v
        }
        Some(k) => vec![
            IdMap {
                container: 0,
                host: start,
                size,
            },
            IdMap {
                container: k,
                host: k,
                size: 1,
            },
        ],
    }
}

/// The user namespace mode a container asks for: `--userns`, defaulting to `auto`.
fn mode(opts: &RunOptions) -> Result<&str> {
    let m = opts.userns.as_deref().unwrap_or("auto");
    match m {
        "" | "auto" => Ok("auto"),
        "host" | "keep-id" => Ok(m),
        "private" => Ok("auto"),
        _ => Err(Error::BadInput(format!(
            "invalid --userns {m:?}: use auto (a private id range, the default), host or keep-id"
        ))),
    }
}

/// Resolves the user namespace of a new container from its options: None for the host's
/// ids (`--userns=host`, `--privileged`), the maps of the other container with
/// `--network container:X` (whose user namespace it joins), else the maps, with a range picked from the pool that
/// no recorded container holds (`Db::insert` records it, or refuses it when taken meanwhile).
///
/// # Errors
/// [`Error::BadInput`] for an unknown `--userns` or `--uidmap`/`--gidmap` with
/// `--userns=host`/`--privileged`; [`Error::IdRange`] when no range can be had.
pub fn resolve(db: &Db, opts: &RunOptions) -> Result<Option<IdMappings>> {
    let mode = mode(opts)?;
    let manual = !opts.uidmap.is_empty() || !opts.gidmap.is_empty();
    if let crate::network::Mode::Container(other) = crate::network::mode(opts) {
        // The other container's network namespace belongs to its user namespace: this
        // one joins that user namespace (network::apply), with its maps.
        let theirs = db.find(&other)?.options.id_mappings;
        return match (opts.userns.as_deref(), manual, opts.privileged) {
            (None, false, false) => Ok(theirs.map(|m| IdMappings { range: None, ..m })),
            (None | Some("host"), false, true) | (Some("host"), false, false) => Ok(None),
            _ => Err(Error::BadInput(format!(
                "--network container:{other} shares the network namespace of {other}, which its user namespace owns: \
                 leave out --userns/--uidmap/--gidmap (this container then joins that user namespace), or use --userns=host"
            ))),
        };
    }
    if manual {
        if opts.userns.is_some() || opts.privileged {
            return Err(Error::BadInput(
                "--uidmap/--gidmap cannot be combined with --userns or --privileged".into(),
            ));
        }
        let uid = if opts.uidmap.is_empty() {
            opts.gidmap.clone()
        } else {
            opts.uidmap.clone()
        };
        let gid = if opts.gidmap.is_empty() {
            opts.uidmap.clone()
        } else {
            opts.gidmap.clone()
        };
        return Ok(Some(IdMappings { uid, gid, range: None }));
    }
    // A rootless session is already a user namespace of the caller's ids and subuid
    // range (crate::rootless): its containers share it unless asked otherwise.
    if mode == "host" || opts.privileged || (opts.userns.is_none() && crate::rootless::is_rootless()) {
        return Ok(None);
    }
    // SAFETY: getuid and getgid cannot fail.
    let (caller_uid, caller_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if mode == "keep-id" && caller_uid == 0 {
        // Root's ids kept: every id maps to itself in a new user namespace (podman's
        // keep-id for root).
        let all = vec![IdMap {
            container: 0,
            host: 0,
            size: u32::MAX,
        }];
        return Ok(Some(IdMappings {
            uid: all.clone(),
            gid: all,
            range: None,
        }));
    }
    let range = Pool::load()?.pick(&db.id_ranges()?)?;
    let keep = mode == "keep-id";
    Ok(Some(IdMappings {
        uid: range_maps(range.uid_start, range.size, keep.then_some(caller_uid)),
        gid: range_maps(range.gid_start, range.size, keep.then_some(caller_gid)),
        range: Some(range),
    }))
}

/// The user namespace mode of a container as `inspect` shows it (podman's
/// `HostConfig.UsernsMode`): `host` without a user namespace, `container` when joined
/// with `--network container:X`, `private` for `--uidmap`/`--gidmap`, else `auto` or
/// `keep-id`.
pub fn mode_name(opts: &RunOptions) -> &'static str {
    let joined = matches!(crate::network::mode(opts), crate::network::Mode::Container(_));
    match &opts.id_mappings {
        None => "host",
        Some(_) if joined => "container",
        Some(m) if m.range.is_none() && opts.userns.as_deref() != Some("keep-id") => "private",
        Some(_) if opts.userns.as_deref() == Some("keep-id") => "keep-id",
        Some(_) => "auto",
    }
}

/// The host id that container id `id` maps to under `maps`, if any.
pub fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container && u64::from(id) < u64::from(m.container) + u64::from(m.size))
        .map(|m| m.host + (id - m.container))
}

/// The container id that host id `id` appears as under `maps`, if it is mapped.
pub fn to_container(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.host && u64::from(id) < u64::from(m.host) + u64::from(m.size))
        .map(|m| m.container + (id - m.host))
}

/// Reads a `/proc/PID/uid_map` or `gid_map` text into maps.
pub fn parse_proc_map(text: &str) -> Vec<IdMap> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|v| v.parse::<u32>().ok());
            Some(IdMap {
                container: f.next()??,
                host: f.next()??,
                size: f.next()??,
            })
        })
        .collect()
}

/// Makes `dir` reachable by a container's root in its own user namespace, which is an
/// unprivileged id on the host: the runtime's init opens the bundle (and the rootfs in
/// it) from inside that namespace, as podman's storage has its dirs 0711. Directories from
/// `owned` (the instance's root) down to `dir` get the search bit for all (`o+x`, no read);
/// the ones above `owned` are checked only.
///
/// # Errors
/// [`Error::BadInput`] naming a directory above `owned` that others cannot search (chmod
/// o+x it, or use `--userns=host`); [`Error::Io`] when a directory cannot be changed.
pub fn make_searchable(dir: &Path, owned: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors() {
        let meta = std::fs::metadata(d).at("stat", d)?;
        let mode = meta.permissions().mode();
        if mode & 0o001 != 0 {
            continue;
        }
        if d.starts_with(owned) {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode((mode & 0o7777) | 0o011)).at("chmod", d)?;
        } else {
            return Err(Error::BadInput(format!(
                "{} (mode {:o}) cannot be searched by a container's root in its own user namespace: \
                 `chmod o+x` it (or pick another --root), or run with --userns=host",
                d.display(),
                mode & 0o7777
            )));
        }
    }
    Ok(())
}

/// `vessel system check`: id ranges recorded for containers that no longer have a row;
/// with `repair`, deleted (released). One line per range.
///
/// # Errors
/// [`Error::Db`].
pub fn check(db: &Db, repair: bool) -> Result<Vec<String>> {
    Ok(db
        .orphan_id_ranges(repair)?
        .into_iter()
        .map(|id| format!("id range recorded for removed container {id}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_maps_and_picks() {
        let text = "alice:100000:65536\nvessel:1000000000:196608\n#x\n999:5:bad\n";
        assert_eq!(parse_blocks(text, "vessel", None), vec![(1_000_000_000, 196_608)]);
        let pool = Pool {
            uids: vec![(1_000_000_000, 196_608)],
            gids: vec![(2_000_000_000, 131_072)],
            uid_file: "x".into(),
        };
        let r = pool.pick(&[]).unwrap();
        assert_eq!((r.uid_start, r.gid_start), (1_000_000_000, 2_000_000_000));
        let r = pool.pick(&[("a".into(), 1_000_000_000, 2_000_000_000)]).unwrap();
        assert_eq!((r.uid_start, r.gid_start), (1_000_065_536, 2_000_065_536));
        let full = [
            ("a".into(), 1_000_000_000, 2_000_000_000),
            ("b".into(), 1_000_065_536, 2_000_065_536),
        ];
        assert!(matches!(pool.pick(&full), Err(Error::IdRange { .. })));
        assert_eq!(parse_map("0:100000:65536").unwrap().host, 100_000);
        assert!(parse_map("0:1").is_err() && parse_map("0:1:0").is_err());
        let keep = range_maps(1000, 65536, Some(10));
        assert_eq!(to_host(&keep, 10), Some(10));
        assert_eq!(to_host(&keep, 0), Some(1000));
        assert_eq!(to_host(&keep, 11), Some(1011));
        assert_eq!(to_container(&keep, 1011), Some(11));
        assert_eq!(to_host(&keep, 65536), None);
    }
}
