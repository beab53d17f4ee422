//! The container's terminal (runtime-spec config.md "Console"; runc's
//! `--console-socket`): a pty made inside the container, its master sent over a unix
//! socket with SCM_RIGHTS, its slave made the process's stdio and controlling
//! terminal, and bound onto /dev/console for the init.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{MoveMountFlags, OpenTreeFlags};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::pty::{self, OpenptFlags};

use crate::error::{Context, Error, Result};

/// An `O_PATH` descriptor of the container's /dev/console, made as an empty regular
/// file when absent, never through a symlink (CVE-2025-52565): /dev must be a
/// directory reached without symlinks, and an existing /dev/console must be a
/// regular file.
///
/// Errors: [`Error::Invalid`] saying what /dev or /dev/console is instead.
fn console_target() -> Result<OwnedFd> {
    let refuse = |what: &str| {
        Error::Invalid(format!(
            "{what}: refusing to mount the console there (process.terminal); mount a tmpfs on \
             /dev in config.json or remove it from the image"
        ))
    };
    let dev = match rustix::fs::openat2(
        rustix::fs::CWD,
        "/dev",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => return Err(refuse("/dev in the container is a symlink")),
        Err(e) => return Err(Error::sys("open /dev in the container", e)),
    };
    let open = || {
        rustix::fs::openat(
            &dev,
            "console",
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
    };
    let fd = match open() {
        Err(Errno::NOENT) => {
            let create = OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC;
            match rustix::fs::openat(&dev, "console", create, Mode::from_raw_mode(0o600)) {
                Ok(_) | Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::sys("create /dev/console", e)),
            }
            open().ctx(|| "open /dev/console")?
        }
        r => r.ctx(|| "open /dev/console")?,
    };
    let st = rustix::fs::fstat(&fd).ctx(|| "stat /dev/console")?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(fd),
        FileType::Symlink => Err(refuse("/dev/console in the container is a symlink")),
        _ => Err(refuse("/dev/console in the container is not a regular file")),
    }
}

/// Connects to the console socket a caller (containerd's shim, podman's conmon) listens on.
///
/// Errors: [`Error::Sys`] naming the socket path.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let sock = net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None)
        .ctx(|| "socket for --console-socket")?;
    let addr = SocketAddrUnix::new(path).ctx(|| format!("console socket path {}", path.display()))?;
    net::connect(&sock, &addr).ctx(|| format!("connect to console socket {}", path.display()))?;
    Ok(sock)
}

/// Sends `fd` over the unix socket with SCM_RIGHTS; the payload is `name` (runc sends
/// the pty's name; a seccomp agent gets the container process state JSON).
pub fn send_fd(sock: impl AsFd, fd: impl AsFd, name: &str) -> Result<()> {
    let fds = [fd.as_fd()];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    control.push(SendAncillaryMessage::ScmRights(&fds));
    let payload = if name.is_empty() { "pty" } else { name };
    net::sendmsg(
        sock,
        &[std::io::IoSlice::new(payload.as_bytes())],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .ctx(|| "send the pty master over the console socket")?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`].
///
/// Errors: [`Error::Init`] when the message carries no fd.
pub fn recv_fd(sock: impl AsFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ctx(|| "receive the pty master")?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::Init("the console message carried no file descriptor".into()))
}

/// Makes a pty from /dev/ptmx of the current mount namespace, sets its window size
/// (`process.consoleSize`: height rows, width columns), sends the master over
/// `socket`, and makes the slave this process's stdin, stdout, stderr and
/// controlling terminal (the caller must have called setsid). With `bind_console`,
/// the slave is also bind-mounted on /dev/console (the init; not exec), which must be
/// absent or a regular file (see `console_target`).
///
/// Errors: [`Error::Sys`] naming the step.
pub fn setup(socket: OwnedFd, size: Option<(u16, u16)>, bind_console: bool) -> Result<()> {
    let master =
        pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).ctx(|| "open /dev/ptmx")?;
    pty::grantpt(&master).ctx(|| "grantpt")?;
    pty::unlockpt(&master).ctx(|| "unlockpt")?;
    let name = pty::ptsname(&master, Vec::new()).ctx(|| "ptsname")?;
    let name = name.to_string_lossy().into_owned();
    if let Some((rows, cols)) = size {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&master, ws).ctx(|| "set the console size")?;
    }
    send_fd(&socket, &master, &name)?;
    drop(socket);
    // The slave comes from the master itself (TIOCGPTPEER), not from a path under the
    // container's /dev/pts.
    let slave = pty::ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .ctx(|| format!("open pty slave {name} (TIOCGPTPEER)"))?;
    drop(master);
    if bind_console {
        let target = console_target()?;
        let tree = rustix::mount::open_tree(
            &slave,
            "",
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .ctx(|| format!("copy the mount of {name}"))?;
        rustix::mount::move_mount(
            &tree,
            "",
            &target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .ctx(|| format!("bind {name} onto /dev/console"))?;
    }
    // SAFETY: TIOCSCTTY takes an int argument; `slave` is an open tty.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
        return Err(Error::sys(
            "make the pty the controlling terminal",
            std::io::Error::last_os_error(),
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto stdio numbers; `slave` stays open until the end of this function.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys(
                format!("dup the pty onto fd {target}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
