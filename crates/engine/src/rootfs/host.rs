//! The built-in image `host`: a sparse root, as a Solaris sparse-root zone. The host's /usr
//! (and /bin, /lib, /lib32, /lib64, /libx32, /sbin where they are directories) is bound
//! read-only, so a file changed on the host is seen at once in every host container and
//! nothing is downloaded; /etc is a private copy-on-write overlay over the host's /etc;
//! /var, /home, /root and /tmp start empty and are the container's own.
//!
//! Built as: a skeleton root kept under `<store root>/host/<layout id>/root` (empty mount
//! points, the host's /bin-style symlinks into /usr, the /var skeleton), made once per host
//! layout in a temporary dir and renamed into place; the container's rootfs is an overlay
//! of that skeleton with the upper and work dirs of an active snapshot without parent. The
//! binds and the /etc overlay are config.json mounts ([`mounts`]), so the runtime does them
//! in the container's mount namespace.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{ConfigBuilder, ImageConfiguration};
use oci_spec::runtime::{Mount, MountBuilder};
use rustix::fs::{Mode, OFlags};
use vessel_image::{Digest, Store};

use super::{idmapped, Prepared, Undo, HOST_IMAGE};
use crate::options::IdMappings;
use vessel_image::snapshot::ActiveSnapshot;

pub mod secrets;
use crate::error::{Error, IoContext, Result};

/// The bundle's directory holding the upper and work dirs of the private /etc overlay.
pub(super) const HOST_ETC_DIR: &str = "host-etc";

/// Top-level directories that a merged-/usr host has as symlinks into /usr.
const TOP_DIRS: [&str; 6] = ["bin", "lib", "lib32", "lib64", "libx32", "sbin"];

/// Bumped whenever the skeleton's contents change, so that a new one is made.
const SKELETON_VERSION: &str = "vessel host skeleton 1";

/// `PATH` of the synthesized image config (docker's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Directories of the skeleton with their modes, parents first.
const SKELETON_DIRS: &[(&str, u32)] = &[
    ("usr", 0o755),
    ("etc", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
    ("var/log", 0o755),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/spool", 0o755),
    ("home", 0o755),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("run/lock", 0o1777),
    ("mnt", 0o755),
    ("opt", 0o755),
    ("srv", 0o755),
];

/// Symlinks of the skeleton (as Debian has them).
const SKELETON_LINKS: &[(&str, &str)] = &[("var/run", "/run"), ("var/lock", "/run/lock")];

/// What one of [`TOP_DIRS`] is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Missing (or not a directory): missing in the container too.
    Absent,
    /// A directory (or a symlink to one outside /usr): bound read-only.
    Dir,
    /// A symlink into /usr (merged /usr): the same symlink in the skeleton.
    Link(PathBuf),
}

/// The host's layout as far as the skeleton depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    entries: Vec<(&'static str, Entry)>,
}

impl Layout {
    /// Reads the layout of the host root `host` (normally "/").
    fn of(host: &Path) -> Result<Layout> {
        let mut entries = Vec::new();
        for name in TOP_DIRS {
            let p = host.join(name);
            let entry = match fs::symlink_metadata(&p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Entry::Absent,
                Err(e) => return Err(Error::io("stat", p, e)),
                Ok(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(&p).at("read link", &p)?;
                    if points_into_usr(&target) {
                        Entry::Link(target)
                    } else if p.is_dir() {
                        Entry::Dir
                    } else {
                        Entry::Absent
                    }
                }
                Ok(m) if m.is_dir() => Entry::Dir,
                Ok(_) => Entry::Absent,
            };
            entries.push((name, entry));
        }
        Ok(Layout { entries })
    }

    /// What the skeleton is made from, as text (kept beside it as `layout`).
    fn describe(&self) -> String {
        let mut s = format!("{SKELETON_VERSION}\n");
        for (name, e) in &self.entries {
            match e {
                Entry::Absent => s.push_str(&format!("{name} absent\n")),
                Entry::Dir => s.push_str(&format!("{name} dir\n")),
                Entry::Link(t) => s.push_str(&format!("{name} link {}\n", t.display())),
            }
        }
        s
    }

    /// The skeleton's directory name: a digest of [`Layout::describe`].
    fn id(&self) -> String {
        Digest::of_bytes(self.describe().as_bytes()).short().to_string()
    }
}

/// Whether a symlink at the top of the root with this target leads into /usr.
fn points_into_usr(target: &Path) -> bool {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => parts.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(n) => parts.push(n),
        }
    }
    parts.first().is_some_and(|p| *p == "usr")
}

/// Makes (once) the skeleton root for `layout` and returns its path.
/// Made in `<store root>/host/tmp-*` and renamed into place whole, so a skeleton that
/// exists is complete; a concurrent maker's copy wins or ours does, both are the same.
fn ensure_skeleton(store_root: &Path, layout: &Layout) -> Result<PathBuf> {
    let base = store_root.join("host");
    let dir = base.join(layout.id());
    let root = dir.join("root");
    if root.is_dir() {
        return Ok(root);
    }
    fs::create_dir_all(&base).at("create", &base)?;
    remove_stale_tmp(&base);
    let tmp = base.join(tmp_name());
    let made = build_skeleton(&tmp, layout).and_then(|()| {
        let fd = rustix::fs::open(
            &tmp,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .at("open", &tmp)?;
        rustix::fs::syncfs(&fd).at("syncfs", &tmp)?;
        fs::rename(&tmp, &dir).at("rename skeleton into place", &dir)
    });
    match made {
        Ok(()) => Ok(root),
        Err(_) if root.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(root)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn build_skeleton(tmp: &Path, layout: &Layout) -> Result<()> {
    fs::create_dir(tmp).at("create", tmp)?;
    let root = tmp.join("root");
    let mkdir = |rel: &str, mode: u32| -> Result<()> {
        let p = if rel.is_empty() { root.clone() } else { root.join(rel) };
        fs::create_dir(&p).at("create", &p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).at("chmod", &p)
    };
    mkdir("", 0o755)?;
    for (rel, mode) in SKELETON_DIRS {
        mkdir(rel, *mode)?;
    }
    for (rel, target) in SKELETON_LINKS {
        let p = root.join(rel);
        std::os::unix::fs::symlink(target, &p).at("create symlink", &p)?;
    }
    for (name, e) in &layout.entries {
        match e {
            Entry::Absent => {}
            Entry::Dir => mkdir(name, 0o755)?,
            Entry::Link(target) => {
                let p = root.join(name);
                std::os::unix::fs::symlink(target, &p).at("create symlink", &p)?;
            }
        }
    }
    let f = tmp.join("layout");
    fs::write(&f, layout.describe()).at("write", &f)
}

/// A temporary name that embeds our pid: `tmp-<pid>-<n>`.
fn tmp_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes `tmp-<pid>-*` dirs of processes that are gone (a killed skeleton build).
fn remove_stale_tmp(base: &Path) {
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tmp-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The synthesized configuration of the host image: `PATH`, and `Cmd` the host's bash
/// (`/bin/bash`) when it has one, `/bin/sh` otherwise; the host's architecture and OS.
///
/// # Errors
/// None in practice ([`Error::BadInput`] if oci-spec's builder refuses the fields).
pub fn host_image_config() -> Result<ImageConfiguration> {
    config_for(Path::new("/"))
}

fn config_for(host: &Path) -> Result<ImageConfiguration> {
    let shell = ["bin/bash", "usr/bin/bash", "bin/sh", "usr/bin/sh"]
        .into_iter()
        .find(|s| host.join(s).is_file())
        .unwrap_or("bin/sh");
    let config = ConfigBuilder::default()
        .env(vec![format!("PATH={DEFAULT_PATH}")])
        .cmd(vec![format!("/{shell}")])
        .build()
        .map_err(|e| Error::BadInput(format!("host image config: {e}")))?;
    let mut ic = ImageConfiguration::default();
    ic.set_config(Some(config));
    Ok(ic)
}

/// The upper and work dirs of the container's /etc overlay.
fn etc_dirs(bundle: &Path) -> (PathBuf, PathBuf) {
    let d = bundle.join(HOST_ETC_DIR);
    (d.join("upper"), d.join("work"))
}

/// Makes the /etc overlay's upper (owner and mode of the host's /etc: the overlay's root
/// takes them from the upper) and work dirs, when missing, and hides the host's secrets
/// in the upper ([`secrets::hide`]).
fn make_etc_dirs(bundle: &Path, host: &Path, ids: Option<&IdMappings>) -> Result<()> {
    let (upper, work) = etc_dirs(bundle);
    let etc = host.join("etc");
    let meta = fs::metadata(&etc).at("stat the host's /etc", &etc)?;
    for d in [&upper, &work] {
        if !d.is_dir() {
            fs::create_dir_all(d).at("create", d)?;
        }
    }
    fs::set_permissions(&upper, fs::Permissions::from_mode(meta.mode() & 0o7777)).at("chmod", &upper)?;
    std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid())).at("chown", &upper)?;
    secrets::hide(&upper, &etc)?;
    match ids {
        // Made from host files as host root: moved into the container's range.
        Some(ids) => idmapped::remap_tree(&upper, None, Some(ids)),
        None => Ok(()),
    }
}

/// The config.json mounts of a host container in `bundle`, made from the host root `host`.
fn mounts(bundle: &Path, host: &Path, layout: &Layout) -> Result<Vec<Mount>> {
    let build = |m: MountBuilder| m.build().map_err(|e| Error::BadInput(format!("host image mount: {e}")));
    let bind = |name: &str| {
        build(
            MountBuilder::default()
                .destination(Path::new("/").join(name))
                .typ("bind")
                .source(host.join(name))
                .options(vec!["rbind".to_string(), "ro".to_string(), "rro".to_string()]),
        )
    };
    let mut out = vec![bind("usr")?];
    for (name, e) in &layout.entries {
        if *e == Entry::Dir {
            out.push(bind(name)?);
        }
    }
    let (upper, work) = etc_dirs(bundle);
    out.push(build(
        MountBuilder::default()
            .destination("/etc")
            .typ("overlay")
            .source("overlay")
            .options(vec![
                format!("lowerdir={}", host.join("etc").display()),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
                "index=off".to_string(),
            ]),
    )?);
    Ok(out)
}

/// Overlay options are split at commas (and `\` escapes): paths with them cannot be given.
fn check_option_path(p: &Path) -> Result<()> {
    let s = p
        .to_str()
        .ok_or_else(|| Error::BadInput(format!("{}: the host image needs a bundle path in UTF-8", p.display())))?;
    if s.contains([',', '\\', '\n']) {
        return Err(Error::BadInput(format!(
            "{s}: the host image cannot use a bundle path with ',' or '\\' (overlay options): pick another --root"
        )));
    }
    Ok(())
}

/// [`super::prepare`] for the host image, over the host root `host`.
pub(super) fn prepare(
    store: &Store,
    bundle: &Path,
    rootfs: &Path,
    key: &str,
    host: &Path,
    ids: Option<&IdMappings>,
) -> Result<Prepared> {
    check_option_path(bundle)?;
    let image_config = config_for(host)?;
    let layout = Layout::of(host)?;
    let skeleton = ensure_skeleton(store.root(), &layout)?;
    let snapshots = store.snapshots();
    let mut undo = Undo::new(store);
    let active = snapshots.prepare(key, None)?;
    undo.snapshot = Some(key.to_string());
    undo.make_dirs(bundle, rootfs)?;
    let etc = bundle.join(HOST_ETC_DIR);
    // Left by an earlier failed attempt of this container (its snapshot is gone): start over.
    match fs::remove_dir_all(&etc) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(Error::io("remove", etc, e)),
        _ => {}
    }
    undo.trees.push(etc);
    undo.mount_disk(bundle, &active, true)?;
    make_etc_dirs(bundle, host, ids)?;
    let mut extra_mounts = mounts(bundle, host, &layout)?;
    mount_root(&skeleton, &active, bundle, rootfs, host, ids, &mut undo)?;
    if ids.is_some() {
        // The /etc overlay is on the rootfs already (over an idmapped host /etc).
        extra_mounts.retain(|m| m.destination() != Path::new("/etc"));
    }
    undo.disarm();
    Ok(Prepared {
        rootfs: rootfs.to_path_buf(),
        extra_mounts,
        image_config,
        users_root: host.to_path_buf(),
        image_id: HOST_IMAGE.to_string(),
    })
}

/// [`super::mount`] for a host container (its rootfs is not mounted, its snapshot exists).
pub(super) fn mount(
    store: &Store,
    bundle: &Path,
    rootfs: &Path,
    key: &str,
    host: &Path,
    ids: Option<&IdMappings>,
) -> Result<()> {
    let active = store.snapshots().active(key)?;
    let skeleton = ensure_skeleton(store.root(), &Layout::of(host)?)?;
    make_etc_dirs(bundle, host, ids)?;
    let mut undo = Undo::new(store);
    mount_root(&skeleton, &active, bundle, rootfs, host, ids, &mut undo)?;
    undo.disarm();
    Ok(())
}

/// Mounts the overlay of `skeleton` and `active` on `rootfs` (recorded in `undo`); with
/// `ids` over an idmapped skeleton, and the /etc overlay over an idmapped host /etc on
/// `<rootfs>/etc` (the runtime's rbind of the rootfs takes it along).
fn mount_root(
    skeleton: &Path,
    active: &ActiveSnapshot,
    bundle: &Path,
    rootfs: &Path,
    host: &Path,
    ids: Option<&IdMappings>,
    undo: &mut Undo<'_>,
) -> Result<()> {
    let Some(ids) = ids else {
        vessel_image::snapshot::mount_overlay(&[skeleton.to_path_buf()], Some((&active.upper, &active.work)), rootfs)?;
        undo.mounted = Some(rootfs.to_path_buf());
        return Ok(());
    };
    idmapped::chown_to_root(&active.upper, ids)?;
    let userns = idmapped::userns_fd(ids)?;
    let stage = bundle.join("idmap-stage");
    idmapped::mount_overlay(
        &[skeleton.to_path_buf()],
        &active.upper,
        &active.work,
        rootfs,
        &userns,
        &stage,
    )?;
    undo.mounted = Some(rootfs.to_path_buf());
    let (upper, work) = etc_dirs(bundle);
    idmapped::mount_overlay(&[host.join("etc")], &upper, &work, &rootfs.join("etc"), &userns, &stage)
}

/// The skeleton of this host's layout under `store` (made when missing).
pub(super) fn skeleton(store: &Store) -> Result<PathBuf> {
    ensure_skeleton(store.root(), &Layout::of(Path::new("/"))?)
}

/// Removes the /etc overlay dirs of a host container (nothing when there are none).
pub(super) fn remove_dirs(bundle: &Path) -> Result<()> {
    let etc = bundle.join(HOST_ETC_DIR);
    match fs::remove_dir_all(&etc) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io("remove", etc, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_into_usr() {
        assert!(points_into_usr(Path::new("usr/bin")));
        assert!(points_into_usr(Path::new("/usr/lib64")));
        assert!(points_into_usr(Path::new("./usr/../usr/sbin")));
        assert!(points_into_usr(Path::new("../../usr/lib")));
        assert!(!points_into_usr(Path::new("/opt/lib")));
        assert!(!points_into_usr(Path::new("lib")));
        assert!(!points_into_usr(Path::new("usr/../lib")));
    }

    /// A fake host root with /bin a directory, /lib a merged-/usr symlink, /lib64 a symlink
    /// to a directory elsewhere, /sbin missing.
    fn fake_host(dir: &Path) -> PathBuf {
        let h = dir.join("host");
        for d in ["usr/bin", "usr/lib", "bin", "opt/lib64", "etc"] {
            fs::create_dir_all(h.join(d)).unwrap();
        }
        fs::write(h.join("bin/bash"), "").unwrap();
        std::os::unix::fs::symlink("usr/lib", h.join("lib")).unwrap();
        std::os::unix::fs::symlink("/opt/lib64-not-in-fake-root", h.join("lib32")).unwrap();
        std::os::unix::fs::symlink("opt/lib64", h.join("lib64")).unwrap();
        h
    }

    #[test]
    fn layout_and_skeleton_of_a_split_usr_host() {
        let t = tempfile::Builder::new().prefix("vessel-host-").tempdir().unwrap();
        let host = fake_host(t.path());
        let layout = Layout::of(&host).unwrap();
        let get = |n: &str| layout.entries.iter().find(|(m, _)| *m == n).unwrap().1.clone();
        assert_eq!(get("bin"), Entry::Dir);
        assert_eq!(get("lib"), Entry::Link("usr/lib".into()));
        assert_eq!(get("lib32"), Entry::Absent);
        assert_eq!(get("lib64"), Entry::Dir);
        assert_eq!(get("sbin"), Entry::Absent);

        let store = t.path().join("store");
        let root = ensure_skeleton(&store, &Layout::of(&host).unwrap()).unwrap();
        assert_eq!(root, store.join("host").join(layout.id()).join("root"));
        assert!(root.join("bin").is_dir() && !root.join("bin").is_symlink());
        assert_eq!(fs::read_link(root.join("lib")).unwrap(), Path::new("usr/lib"));
        assert!(!root.join("sbin").exists() && !root.join("lib32").exists());
        let mode = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("var/tmp"), 0o1777);
        assert_eq!(mode("root"), 0o700);
        assert_eq!(mode("usr"), 0o755);
        assert_eq!(
            fs::read_to_string(root.parent().unwrap().join("layout")).unwrap(),
            layout.describe()
        );
        // Made once: a second call finds it, and leaves no temporary dir.
        assert_eq!(ensure_skeleton(&store, &Layout::of(&host).unwrap()).unwrap(), root);
        let names: Vec<_> = fs::read_dir(store.join("host"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");

        // A changed layout (/sbin appears) makes another skeleton; the first one stays.
        fs::create_dir(host.join("sbin")).unwrap();
        let root2 = ensure_skeleton(&store, &Layout::of(&host).unwrap()).unwrap();
        assert_ne!(root2, root);
        assert!(root2.join("sbin").is_dir() && root.is_dir());

        let m = mounts(Path::new("/b"), &host, &Layout::of(&host).unwrap()).unwrap();
        let dests: Vec<_> = m.iter().map(|m| m.destination().display().to_string()).collect();
        assert_eq!(dests, ["/usr", "/bin", "/lib64", "/sbin", "/etc"]);
        assert_eq!(m[1].source().as_deref(), Some(host.join("bin").as_path()));
        let etc = m[4].options().clone().unwrap();
        assert_eq!(etc[0], format!("lowerdir={}", host.join("etc").display()));
        assert_eq!(etc[1], "upperdir=/b/host-etc/upper");

        let cfg = config_for(&host).unwrap();
        let c = cfg.config().as_ref().unwrap();
        assert_eq!(c.cmd().as_deref(), Some(&["/bin/bash".to_string()][..]));
        assert_eq!(c.env().as_deref(), Some(&[format!("PATH={DEFAULT_PATH}")][..]));
        fs::remove_file(host.join("bin/bash")).unwrap();
        let cfg = config_for(&host).unwrap();
        assert_eq!(
            cfg.config().as_ref().unwrap().cmd().as_deref(),
            Some(&["/bin/sh".to_string()][..])
        );
    }

    #[test]
    fn stale_tmp_dirs_go() {
        let t = tempfile::Builder::new().prefix("vessel-host-").tempdir().unwrap();
        // A pid above pid_max is not running.
        let stale = t.path().join("tmp-4000000000-1");
        let ours = t.path().join(tmp_name());
        fs::create_dir_all(stale.join("root")).unwrap();
        fs::create_dir_all(&ours).unwrap();
        remove_stale_tmp(t.path());
        assert!(!stale.exists() && ours.exists());
    }

    #[test]
    fn bundle_paths_with_commas_are_refused() {
        assert!(check_option_path(Path::new("/var/lib/vessel/containers/abc")).is_ok());
        assert!(matches!(
            check_option_path(Path::new("/tmp/a,b")),
            Err(Error::BadInput(_))
        ));
    }
}
