//! Root file systems of containers in their own user namespace (mount_setattr(2)
//! `MOUNT_ATTR_IDMAP`, open_tree(2), overlayfs "lowerdir+" by file descriptor): the
//! image's lower dirs are shared between containers of different id ranges unchanged,
//! each container seeing them through idmapped mounts made with a user namespace that has
//! its maps; only the empty upper dirs are chowned to the range's root.
//!
//! The user namespace for the idmapped mounts is made before the container's own (which
//! the runtime makes later): a short-lived child is cloned into one, its maps are written, and
//! its `/proc/PID/ns/user` is kept open for as long as the mounts are being made.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::idmap;
use crate::options::{IdMap, IdMappings};

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
        .collect()
}

/// A user namespace with the maps `ids`, as an open `/proc/PID/ns/user` of a child that
/// made it and has exited since.
///
/// # Errors
/// [`Error::Io`] when the child cannot be made or its maps cannot be written (a map the
/// kernel refuses: overlapping lines, more than 340 lines).
pub fn userns_fd(ids: &IdMappings) -> Result<OwnedFd> {
    // `go`: the parent closes its end when the child may exit.
    let (go_r, go_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).at("make a pipe for", "user namespace")?;
    // The child is born in its new user namespace (clone(2) CLONE_NEWUSER) and shares
    // this process's memory (CLONE_VM, its own small stack), so neither a page-table
    // copy nor a handshake is paid: the maps can be written at once. It only waits for
    // `go` to close, then exits.
    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // Both ends of `go`, passed by value: read end in the high half.
        let fds = arg as usize as u64;
        let (read_end, write_end) = ((fds >> 32) as libc::c_int, (fds & 0xffff_ffff) as libc::c_int);
        let mut r = 0u8;
        // SAFETY: raw close and read on this child's copies of the pipe's ends, into a
        // local byte, then exit (which never returns); the child touches nothing of the
        // parent's memory. Its copy of the write end goes first, else the read never
        // sees the end of the pipe.
        unsafe {
            libc::syscall(libc::SYS_close, write_end);
            libc::syscall(
                libc::SYS_read,
                read_end,
                (&mut r as *mut u8).cast::<libc::c_void>(),
                1usize,
            );
            libc::syscall(libc::SYS_exit, 0);
        }
        0
    }
    let mut stack = vec![0u8; 64 << 10];
    // The stack grows down: its top, 16-byte aligned.
    let top = {
        let end = stack.as_mut_ptr() as usize + stack.len();
        (end & !15) as *mut libc::c_void
    };
    // SAFETY: `child` runs on `stack`, which outlives it (the child is reaped below
    // before `stack` is dropped); it calls only raw read and exit syscalls.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            (((go_r.as_raw_fd() as u64) << 32) | go_w.as_raw_fd() as u64) as usize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(Error::io(
            "clone a child in a new",
            "user namespace",
            io::Error::last_os_error(),
        ));
    }
    drop(go_r);
    let made = (|| -> Result<OwnedFd> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        for (file, maps) in [("uid_map", &ids.uid), ("gid_map", &ids.gid)] {
            let p = proc.join(file);
            fs::write(&p, map_text(maps)).at("write", &p)?;
        }
        let ns = proc.join("ns/user");
        let f = fs::File::open(&ns).at("open", &ns)?;
        Ok(OwnedFd::from(f))
    })();
    drop(go_w);
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    drop(stack);
    made
}

/// Makes a detached idmapped clone of the directory `dir` with the user namespace `userns`.
fn idmapped_tree(dir: &Path, userns: &OwnedFd) -> io::Result<OwnedFd> {
    use rustix::mount::OpenTreeFlags;
    let tree = rustix::mount::open_tree(
        rustix::fs::CWD,
        dir,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: tree is an open detached mount, the path is a static empty C string, attr
    // lives across the call and its size is passed along.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

/// Mounts overlayfs on `target` with `lowers` (topmost first) each through an idmapped
/// mount with `userns`, and `upper`/`work` as they are.
///
/// Kernels whose overlayfs takes layers by file descriptor (`fsconfig(FSCONFIG_SET_FD,
/// "lowerdir+")`, Linux 6.13+) get the detached idmapped mounts themselves: nothing is
/// attached, so nothing has to be unmounted after (each umount(2) waits for an RCU grace
/// period: 5 to 15 ms apiece on a loaded machine). Where that is refused (older kernels:
/// EINVAL), the idmapped mounts are attached under `stage` (made and removed here) while
/// overlayfs takes its own clones of them (overlayfs refuses detached mounts named by
/// path: "failed to clone lowerpath").
///
/// # Errors
/// [`Error::Image`] `Mount` with the kernel's error (EINVAL: the lower's file system
/// cannot be idmapped), [`Error::Io`] when `stage` cannot be made.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
    userns: &OwnedFd,
    stage: &Path,
) -> Result<()> {
    let joined = lowers
        .iter()
        .map(|l| l.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let err = |source| {
        Error::Image(vessel_image::ImageError::Mount {
            target: target.to_path_buf(),
            lowers: format!("{joined} (idmapped)"),
            source,
        })
    };
    let trees = lowers
        .iter()
        .map(|l| idmapped_tree(l, userns))
        .collect::<io::Result<Vec<_>>>()
        .map_err(err)?;
    // Refused (layers by descriptor unknown to this kernel): stage them. A refusal for
    // another reason comes back from the staged way with the kernel's error.
    if overlay_from_fds(&trees, upper, work, target).is_ok() {
        return Ok(());
    }
    fs::create_dir_all(stage).at("create", stage)?;
    let mut staged = Vec::new();
    let mounted = (|| -> io::Result<()> {
        use rustix::mount::MoveMountFlags;
        let mut at_paths = Vec::new();
        for (i, tree) in trees.iter().enumerate() {
            let at = stage.join(i.to_string());
            fs::create_dir_all(&at)?;
            staged.push(at.clone());
            rustix::mount::move_mount(tree, "", rustix::fs::CWD, &at, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)?;
            at_paths.push(at);
        }
        overlay(upper, work, target, |fsfd| {
            for at in &at_paths {
                rustix::mount::fsconfig_set_string(fsfd, "lowerdir+", at)?;
            }
            Ok(())
        })
    })();
    // The overlay holds private clones of its layers: the staged mounts can go.
    for at in &staged {
        let _ = rustix::mount::unmount(at, rustix::mount::UnmountFlags::DETACH);
        let _ = fs::remove_dir(at);
    }
    let _ = fs::remove_dir(stage);
    mounted.map_err(err)
}

/// The overlay with the detached mounts `trees` as its lower layers, by descriptor.
fn overlay_from_fds(trees: &[OwnedFd], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    overlay(upper, work, target, |fsfd| {
        for tree in trees {
            rustix::mount::fsconfig_set_fd(fsfd, "lowerdir+", tree)?;
        }
        Ok(())
    })
}

/// fsopen("overlay"), `lowers` adds the lower layers, then upper and work dirs, index
/// off, and the new mount is attached on `target`.
fn overlay(
    upper: &Path,
    work: &Path,
    target: &Path,
    lowers: impl FnOnce(&OwnedFd) -> io::Result<()>,
) -> io::Result<()> {
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags};
    let fsfd = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    lowers(&fsfd)?;
    rustix::mount::fsconfig_set_string(&fsfd, "upperdir", upper)?;
    rustix::mount::fsconfig_set_string(&fsfd, "workdir", work)?;
    let _ = rustix::mount::fsconfig_set_string(&fsfd, "index", "off");
    rustix::mount::fsconfig_create(&fsfd)?;
    let mfd = rustix::mount::fsmount(&fsfd, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    rustix::mount::move_mount(
        &mfd,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Binds `dir` idmapped with `userns` onto `target` (`-v SRC:DST:idmap`,
/// [`super::idmapped_volumes`]; the host image's /etc lower); `target` must exist and be
/// of the same kind as `dir`.
///
/// # Errors
/// The kernel's error: EINVAL from mount_setattr(2) when the file system of `dir` cannot
/// be idmapped, EPERM without CAP_SYS_ADMIN over it.
pub fn bind_tree(dir: &Path, target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let tree = idmapped_tree(dir, userns)?;
    rustix::mount::move_mount(
        &tree,
        "",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?;
    Ok(())
}

/// Chowns the directory `dir` (not what is in it) so that it belongs to the container's
/// root: host uid and gid 0 map to the range's first ids.
///
/// # Errors
/// [`Error::BadInput`] when the maps have no root, [`Error::Io`] when chown fails.
pub fn chown_to_root(dir: &Path, ids: &IdMappings) -> Result<()> {
    let (uid, gid) = root_of(ids)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).at("chown", dir)
}

/// The host uid and gid of root in the container.
pub fn root_of(ids: &IdMappings) -> Result<(u32, u32)> {
    match (idmap::to_host(&ids.uid, 0), idmap::to_host(&ids.gid, 0)) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(Error::BadInput(
            "the user namespace maps no root (uid and gid 0): give --uidmap/--gidmap lines for 0".into(),
        )),
    }
}

/// Moves the owners of every file under `dir` (and `dir`) from one container's ids to
/// another's: a file of host uid N, which is container uid C under `from` (N itself when
/// `from` is None or does not map N), becomes the host uid that C is under `to` (C itself
/// when `to` is None or does not map C). For trees vessel made from host files (the host
/// image's /etc upper: `from` None) and writable layers restored from a backup of a
/// container with another range. Symlinks are changed, not followed.
///
/// # Errors
/// [`Error::Io`] when a directory cannot be read or an owner changed.
pub fn remap_tree(dir: &Path, from: Option<&IdMappings>, to: Option<&IdMappings>) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let one = |h: u32, pick: fn(&IdMappings) -> &[IdMap]| -> u32 {
        let c = from.and_then(|m| idmap::to_container(pick(m), h)).unwrap_or(h);
        to.and_then(|m| idmap::to_host(pick(m), c)).unwrap_or(c)
    };
    walk(dir, &|p: &Path, meta: &fs::Metadata| {
        let uid = one(meta.uid(), |m| &m.uid);
        let gid = one(meta.gid(), |m| &m.gid);
        if (uid, gid) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::lchown(p, Some(uid), Some(gid)).at("chown", p)?;
        }
        Ok(())
    })
}

fn walk(p: &Path, f: &dyn Fn(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let meta = fs::symlink_metadata(p).at("stat", p)?;
    f(p, &meta)?;
    if meta.is_dir() {
        for e in fs::read_dir(p).at("read", p)? {
            let e = e.at("read", p)?;
            walk(&e.path(), f)?;
        }
    }
    Ok(())
}
