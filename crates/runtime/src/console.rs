//! The container's terminal (runtime-spec config.md "Console"; runc's
//! `--console-socket`): a pty made inside the container, its master sent over a unix
//! socket with SCM_RIGHTS, its slave made the process's stdio and controlling
//! terminal, and bound onto /dev/console for the init.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use rustix::pty::{self, OpenptFlags};

use crate::error::{Context, Error, Result};

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
/// the slave is also bind-mounted on /dev/console (the init; not exec).
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
    let slave = rustix::fs::open(
        name.as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open pty slave {name}"))?;
    drop(master);
    if bind_console {
        let console = Path::new("/dev/console");
        if !console.exists() {
            std::fs::File::create(console).ctx(|| "create /dev/console")?;
        }
        nix::mount::mount(
            Some(name.as_str()),
            console,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
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
