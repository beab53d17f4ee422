//! `restore` of a checkpoint: a new state dir and cgroup, then CRIU in a private
//! mount namespace of its own (see the parent module).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::criu::{require_feature, Run};
use super::{
    absolute, cgroup_binds, external_namespaces, is_bind, make_dir, os, RestoreOptions, DESCRIPTORS, RESTORE_LOG,
};
use crate::cgroups;
use crate::container::Container;
use crate::error::{Context, Error, Result};
use crate::state::{self, State, Status};
use crate::{hooks, spec, OCI_VERSION};

/// `restore`: brings a container dumped by [`Container::checkpoint`] back as `id`,
/// from the bundle's config (`spec`, as [`spec::load`] read it) and its rootfs, into a
/// new cgroup with the config's limits. The restored init is a child of the calling
/// process (CRIU's `--restore-sibling`). Returns the container, running.
///
/// Errors: [`Error::AlreadyExists`] when `id` exists; [`Error::Invalid`] for a
/// container with a terminal; [`Error::Criu`] with the log's last errors. On error
/// nothing is left: no state dir, cgroup or mount.
pub fn restore(root: &Path, id: &str, bundle: &Path, spec: &Spec, opts: RestoreOptions) -> Result<Container> {
    state::check_id(id)?;
    if opts.lazy_pages {
        require_feature("uffd-noncoop", "--lazy-pages")?;
    }
    let images = absolute(&opts.image_path)?;
    let descriptors = images.join(DESCRIPTORS);
    let keys: Vec<String> = match fs::read(&descriptors) {
        Ok(d) => serde_json::from_slice(&d).map_err(|e| Error::Config {
            path: descriptors.clone(),
            msg: format!("{e}: not the checkpoint of a vessel container"),
        })?,
        Err(e) => {
            return Err(Error::sys(
                format!(
                    "read {} (is {} the --image-path of a checkpoint?)",
                    descriptors.display(),
                    images.display()
                ),
                e,
            ))
        }
    };
    let has_tty = keys.iter().any(|k| k.starts_with("tty["));
    let terminal = spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal && !has_tty && !opts.shell_job {
        return Err(Error::Invalid(format!(
            "restore of container \"{id}\" with process.terminal: its checkpoint names no terminal (made by an older version?); check it out again"
        )));
    }
    if has_tty && opts.console.is_none() && !opts.shell_job {
        return Err(Error::Invalid(format!(
            "restore of container \"{id}\": it has a terminal; give --console-socket to receive its new pty master"
        )));
    }
    let external_mounts = super::mounts::load(&images)?;
    let bundle = fs::canonicalize(bundle).ctx(|| format!("bundle {}", bundle.display()))?;
    let rootfs = fs::canonicalize(spec::rootfs_path(spec, &bundle)?).ctx(|| "rootfs")?;
    let cgroup_path = cgroups::container_path(spec.linux().as_ref().and_then(|l| l.cgroups_path().as_deref()), id)?;
    fs::create_dir_all(root).ctx(|| format!("create runtime root {}", root.display()))?;
    let dir = state::dir(&absolute(root)?, id);
    match fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(Error::AlreadyExists(id.into())),
        Err(e) => return Err(Error::sys(format!("create state dir {}", dir.display()), e)),
    }
    let manager = cgroups::manager(&cgroup_path);
    let mut undo = Undo {
        dir: &dir,
        manager: Some(manager.as_ref()),
        armed: true,
    };
    // A state without a process first: a restore killed from here on leaves a
    // container that `delete --force` removes (cgroup and state dir).
    let mut state = State {
        oci_version: OCI_VERSION.into(),
        id: id.into(),
        status: Status::Creating,
        pid: 0,
        bundle: bundle.clone(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        rootfs: rootfs.clone(),
        created: state::now_rfc3339(),
        owner: crate::container::owner(),
        init_start_time: 0,
        cgroup_path: cgroup_path.clone(),
        post_hooks: !hooks::of(spec, hooks::Phase::Poststart).is_empty()
            || !hooks::of(spec, hooks::Phase::Poststop).is_empty(),
        own_pid_ns: spec::has_namespace(spec, LinuxNamespaceType::Pid)
            && !external_namespaces(spec)
                .iter()
                .any(|(t, _, _)| *t == LinuxNamespaceType::Pid),
    };
    state.save(root)?;
    drop(manager.entry(true)?);
    manager.set(&cgroups::devices::effective_resources(spec))?;
    let work = absolute(opts.work_path.as_deref().unwrap_or(&images))?;
    make_dir(&work)?;
    // In a user namespace the restored tasks open images themselves: first as host root
    // in a namespace without maps yet (timens-0.img), then as the container's root
    // (tty-info.img). The dirs stay root's and go to the group of the container's root,
    // 0750: both get in, no other host user does.
    if let Some((_, gid)) = host_root(spec) {
        for d in [&images, &work] {
            let me = rustix::process::geteuid().as_raw();
            std::os::unix::fs::chown(d, Some(me), Some(gid)).ctx(|| format!("chown {}", d.display()))?;
            fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o750))
                .ctx(|| format!("chmod {}", d.display()))?;
        }
    }
    let criu_root = dir.join("criu-root");
    fs::create_dir(&criu_root).ctx(|| format!("create {}", criu_root.display()))?;
    let pid_file = dir.join("restore.pid");
    let mut args = vec![
        os("-D"),
        images.clone().into(),
        os("-W"),
        work.clone().into(),
        os("-o"),
        os(RESTORE_LOG),
        os("-v4"),
        os("--root"),
        criu_root.clone().into(),
        os("--restore-detached"),
        os("--restore-sibling"),
        os("--pidfile"),
        pid_file.clone().into(),
        os(opts.manage_cgroups_mode.arg()),
        os("--cgroup-root"),
        cgroup_path.clone().into(),
    ];
    for (dest, host) in cgroup_binds(&cgroup_path)? {
        args.extend([
            os("--ext-mount-map"),
            os(format!("{}:{}", dest.display(), host.display())),
        ]);
    }
    for m in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
        let src = m.source().clone().unwrap_or_default();
        let src = if src.is_relative() { bundle.join(src) } else { src };
        args.extend([
            os("--ext-mount-map"),
            os(format!("{}:{}", m.destination().display(), src.display())),
        ]);
    }
    // Kept open (without close-on-exec) until CRIU has run: it inherits them.
    let mut inherited: Vec<OwnedFd> = Vec::new();
    // A new pty for a container with a terminal: its master goes to the console
    // socket (as runc's and crun's orphan-pts-master), its slave replaces the dumped one.
    let new_tty = match (&opts.console, has_tty) {
        (Some(sock), true) => Some(new_pty(sock, host_root(spec))?),
        _ => None,
    };
    for (dest, src) in &external_mounts {
        let src = if src == super::mounts::NEW_CONSOLE {
            match &new_tty {
                Some((_, path)) => path.clone(),
                None => continue,
            }
        } else {
            src.clone()
        };
        args.extend([os("--ext-mount-map"), os(format!("{dest}:{src}"))]);
    }
    for (_, path, key) in external_namespaces(spec) {
        let fd: OwnedFd = fs::File::open(&path)
            .ctx(|| format!("open namespace {}", path.display()))?
            .into();
        clear_cloexec(&fd)?;
        args.extend([os("--inherit-fd"), os(format!("fd[{}]:{key}", fd.as_raw_fd()))]);
        inherited.push(fd);
    }
    let mut seen = Vec::new();
    for (fd, key) in keys.iter().enumerate() {
        if key.is_empty() || seen.contains(key) {
            continue;
        }
        seen.push(key.clone());
        let fd = match (&new_tty, key.starts_with("tty[")) {
            (Some((slave, _)), true) => slave.as_raw_fd(),
            _ => fd as i32,
        };
        args.extend([os("--inherit-fd"), os(format!("fd[{fd}]:{key}"))]);
    }
    let flags = [
        (opts.tcp_established, "--tcp-established"),
        (opts.ext_unix_sk, "--ext-unix-sk"),
        (opts.shell_job, "--shell-job"),
        (opts.file_locks, "--file-locks"),
        (opts.lazy_pages, "--lazy-pages"),
    ];
    args.extend(flags.iter().filter(|(on, _)| *on).map(|(_, f)| os(*f)));
    let src =
        CString::new(rootfs.as_os_str().as_bytes()).map_err(|_| Error::Invalid("rootfs path has a NUL".into()))?;
    let dst =
        CString::new(criu_root.as_os_str().as_bytes()).map_err(|_| Error::Invalid("state path has a NUL".into()))?;
    // With established connections CRIU runs in the network namespace the container
    // joins by path (see the dump): its iptables locks go there.
    let netns: Option<OwnedFd> = match external_namespaces(spec)
        .into_iter()
        .find(|(t, _, _)| *t == LinuxNamespaceType::Network)
    {
        Some((_, path, _)) if opts.tcp_established && has_tcp_streams(&images) => Some(
            fs::File::open(&path)
                .ctx(|| format!("open namespace {}", path.display()))?
                .into(),
        ),
        _ => None,
    };
    let setup = move || {
        if let Some(fd) = &netns {
            super::enter_netns(fd)?;
        }
        private_root(&src, &dst)
    };
    let ran = Run {
        action: "restore",
        args,
        log: work.join(RESTORE_LOG),
    }
    .run(Some(Box::new(setup)));
    drop(inherited);
    drop(new_tty);
    let _ = fs::remove_dir(&criu_root);
    ran?;
    let pid: i32 = fs::read_to_string(&pid_file)
        .ctx(|| format!("read {}", pid_file.display()))?
        .trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{}: not a pid", pid_file.display())))?;
    let _ = fs::remove_file(&pid_file);
    state.status = Status::Running;
    state.pid = pid;
    state.init_start_time = state::process_start_time(pid).map(|(t, _)| t).unwrap_or(0);
    if let Err(e) = state.save(root) {
        // SAFETY: kill of the pid CRIU just restored as our child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(e);
    }
    undo.armed = false;
    Ok(Container {
        root: root.to_path_buf(),
        state,
    })
}

/// In CRIU's child, before exec: a private mount namespace (nothing propagates back to
/// the host) with the rootfs bind-mounted at `dst` for `--root`.
fn private_root(src: &CString, dst: &CString) -> std::io::Result<()> {
    // SAFETY: unshare and mount with pointers to NUL-terminated strings that live
    // across the calls; called in a freshly forked single-threaded child.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the images hold established TCP connections (`tcp-stream-*.img`).
fn has_tcp_streams(images: &Path) -> bool {
    fs::read_dir(images)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("tcp-stream-")))
}

/// The host uid and gid of the container's root when the config has a user namespace
/// with maps (`linux.uidMappings`, `linux.gidMappings`).
fn host_root(spec: &Spec) -> Option<(u32, u32)> {
    let linux = spec.linux().as_ref()?;
    let find =
        |maps: &[oci_spec::runtime::LinuxIdMapping]| maps.iter().find(|m| m.container_id() == 0).map(|m| m.host_id());
    Some((
        find(linux.uid_mappings().as_deref()?)?,
        find(linux.gid_mappings().as_deref()?)?,
    ))
}

/// Makes a pty from the host's /dev/ptmx, sends its master over the console socket
/// `sock` and returns its slave (inheritable: CRIU gets it) and the slave's path. With
/// `owner` (the host ids of a user namespace's root) the slave becomes its, so that
/// CRIU, inside that namespace, can give it its dumped owner back.
fn new_pty(sock: &OwnedFd, owner: Option<(u32, u32)>) -> Result<(OwnedFd, String)> {
    use rustix::pty::{self, OpenptFlags};
    let master =
        pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).ctx(|| "open /dev/ptmx")?;
    pty::grantpt(&master).ctx(|| "grantpt")?;
    pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let name = pty::ptsname(&master, Vec::new()).ctx(|| "ptsname")?;
    let name = name.to_string_lossy().into_owned();
    let slave = pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .ctx(|| format!("open pty slave {name} (TIOCGPTPEER)"))?;
    if let Some((uid, gid)) = owner {
        rustix::fs::fchown(
            &slave,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )
        .ctx(|| format!("chown pty slave {name}"))?;
    }
    crate::console::send_fd(sock, &master, &name)?;
    Ok((slave, name))
}

fn clear_cloexec(fd: &OwnedFd) -> Result<()> {
    let flags = rustix::io::fcntl_getfd(fd).ctx(|| "fcntl F_GETFD")?;
    rustix::io::fcntl_setfd(fd, flags - rustix::io::FdFlags::CLOEXEC).ctx(|| "fcntl F_SETFD")
}

/// Removes a failed restore's state dir (unmounting first: see
/// [`state::remove_dir`]) and cgroup unless disarmed.
struct Undo<'a> {
    dir: &'a Path,
    manager: Option<&'a dyn cgroups::CgroupManager>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(m) = self.manager {
                for _ in 0..100 {
                    let pids = m.pids().unwrap_or_default();
                    if pids.is_empty() {
                        break;
                    }
                    for pid in pids {
                        // SAFETY: kill takes plain integers; these are a failed restore's processes.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = m.remove();
            }
            let _ = state::remove_dir(self.dir);
        }
    }
}
