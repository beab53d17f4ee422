//! The channel between the runtime and a process it forks (a SOCK_SEQPACKET socket
//! pair): one datagram per message, so no framing is needed. The child reports
//! readiness, a seccomp notify fd, or an error text; the parent says when the child may
//! go on and hands it the container state the in-container hooks read.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

use crate::error::{Context, Error, Result};

/// A message on the sync channel.
#[derive(Debug)]
pub enum Msg {
    /// Parent to child: id maps and cgroup are in place; go on. Carries the state JSON
    /// for createContainer and startContainer hooks.
    Go(String),
    /// Parent to child: the cgroup limits are set (and the child has entered its cgroup
    /// itself, after Go); it may unshare its cgroup namespace and mount cgroups.
    CgroupJoined,
    /// Child to parent: set-up is done (the init now waits on the exec fifo).
    Ready,
    /// Child to parent: set-up failed with this text; the child exits.
    Failed(String),
    /// Intermediate child to parent: the host pid of the init it forked.
    Pid(i32),
    /// Child to parent: the seccomp user-notification fd, for the listener.
    SeccompFd(OwnedFd),
}

/// Makes the pair: (parent's end, child's end), both close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
        .ctx(|| "socketpair for the sync channel")
}

/// Sends one message.
pub fn send(fd: impl AsFd, msg: &Msg) -> Result<()> {
    let buf: Vec<u8> = match msg {
        Msg::Go(state) => [b"G".as_slice(), state.as_bytes()].concat(),
        Msg::Ready => vec![b'R'],
        Msg::CgroupJoined => vec![b'C'],
        Msg::Failed(text) => [b"F".as_slice(), text.as_bytes()].concat(),
        Msg::Pid(pid) => [b"P".as_slice(), &pid.to_le_bytes()].concat(),
        Msg::SeccompFd(_) => vec![b'S'],
    };
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Msg::SeccompFd(fd) = msg {
        fds = [fd.as_fd()];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    net::sendmsg(fd, &[IoSlice::new(&buf)], &mut control, SendFlags::NOSIGNAL).ctx(|| "send on the sync channel")?;
    Ok(())
}

/// Receives one message; `None` when the other end closed without a word (it died).
pub fn recv(fd: impl AsFd) -> Result<Option<Msg>> {
    let mut buf = vec![0u8; 65536];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut resets = 0;
    let n = loop {
        match net::recvmsg(
            &fd,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) => break r.bytes,
            Err(rustix::io::Errno::INTR) => continue,
            // The peer exited with a message of ours unread: the kernel reports that once,
            // ahead of what the peer sent before exiting (its error text), which follows.
            Err(rustix::io::Errno::CONNRESET) if resets == 0 => resets += 1,
            Err(e) => return Err(Error::sys("receive on the sync channel", e)),
        }
    };
    let mut passed: Option<OwnedFd> = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = m {
            passed = fds.next();
        }
    }
    Ok(match buf.get(..n) {
        Some([]) | None => None,
        Some([b'G', state @ ..]) => Some(Msg::Go(String::from_utf8_lossy(state).into_owned())),
        Some([b'R']) => Some(Msg::Ready),
        Some([b'C']) => Some(Msg::CgroupJoined),
        Some([b'P', a, b, c, d]) => Some(Msg::Pid(i32::from_le_bytes([*a, *b, *c, *d]))),
        Some([b'S']) => passed
            .map(Msg::SeccompFd)
            .or(Some(Msg::Failed("seccomp fd message without an fd".into()))),
        Some([b'F', text @ ..]) => Some(Msg::Failed(String::from_utf8_lossy(text).into_owned())),
        Some(other) => Some(Msg::Failed(format!(
            "unexpected sync message {:?}",
            &other[..other.len().min(16)]
        ))),
    })
}
