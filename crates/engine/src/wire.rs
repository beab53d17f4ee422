//! The monitor's attach socket: SOCK_SEQPACKET messages of one text line, some with
//! file descriptors (SCM_RIGHTS). A client (the `vessel` CLI) sends `start`,
//! `attach STDIN START` with its own stdin, stdout and stderr, `resize` (its own
//! terminal's size) or `resize ROWS COLS`; the monitor
//! answers `started PID`, `resized`, `error MESSAGE` and, when the container has exited and been
//! cleaned up, `exit CODE`. The monitor writes the container's output straight to the
//! client's descriptors, so no framing is needed for the data itself.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// The socket's file name in the monitor's run directory.
pub const SOCKET: &str = "attach.sock";

/// The socket address of `dir/attach.sock` through `/proc/self/fd/N`, which keeps it
/// under the 108-byte limit of sun_path whatever the directory's length. `dir_fd`
/// must stay open while the address is used.
pub fn address(dir_fd: BorrowedFd<'_>) -> std::io::Result<SocketAddrUnix> {
    use std::os::fd::AsRawFd;
    SocketAddrUnix::new(format!("/proc/self/fd/{}/{SOCKET}", dir_fd.as_raw_fd())).map_err(Into::into)
}

fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Binds and listens on `dir/attach.sock` (mode 0600, replacing a stale socket).
pub fn listen(dir: &Path) -> std::io::Result<OwnedFd> {
    let d = open_dir(dir)?;
    let _ = std::fs::remove_file(dir.join(SOCKET));
    let sock = net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    net::bind(&sock, &address(d.as_fd())?)?;
    std::fs::set_permissions(dir.join(SOCKET), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    net::listen(&sock, 8)?;
    Ok(sock)
}

/// Connects to the monitor listening in `dir`.
pub fn connect(dir: &Path) -> std::io::Result<OwnedFd> {
    let d = open_dir(dir)?;
    let sock = net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
    net::connect(&sock, &address(d.as_fd())?)?;
    Ok(sock)
}

/// Sends one message with up to three descriptors.
pub fn send(sock: impl AsFd, msg: &str, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(SendAncillaryMessage::ScmRights(fds));
    }
    net::sendmsg(sock, &[IoSlice::new(msg.as_bytes())], &mut control, SendFlags::NOSIGNAL)?;
    Ok(())
}

/// Receives one message and its descriptors; None when the peer has closed.
pub fn recv(sock: impl AsFd) -> std::io::Result<Option<(String, Vec<OwnedFd>)>> {
    let mut buf = [0u8; 4096];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(got) = m {
            fds.extend(got);
        }
    }
    if r.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((String::from_utf8_lossy(&buf[..r.bytes]).into_owned(), fds)))
}
