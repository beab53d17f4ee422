//! The channel between the runtime and a process it forks (a SOCK_SEQPACKET socket
//! pair): one datagram per message, so no framing is needed. The child reports
//! readiness or an error text; the parent says when the child may go on.

use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::error::{Context, Error, Result};

/// A message on the sync channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// Parent to child: id maps and cgroup are in place; go on.
    Go,
    /// Child to parent: set-up is done (the init now waits on the exec fifo).
    Ready,
    /// Child to parent: set-up failed with this text; the child exits.
    Failed(String),
    /// Intermediate child to parent: the host pid of the init it forked.
    Pid(i32),
}

/// Makes the pair: (parent's end, child's end), both close-on-exec.
pub fn pair() -> Result<(OwnedFd, OwnedFd)> {
    net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).ctx(|| "socketpair for the sync channel")
}

/// Sends one message.
pub fn send(fd: impl AsFd, msg: &Msg) -> Result<()> {
    let buf: Vec<u8> = match msg {
        Msg::Go => vec![b'G'],
        Msg::Ready => vec![b'R'],
        Msg::Failed(text) => [b"F".as_slice(), text.as_bytes()].concat(),
        Msg::Pid(pid) => [b"P".as_slice(), &pid.to_le_bytes()].concat(),
    };
    net::send(fd, &buf, SendFlags::NOSIGNAL).ctx(|| "send on the sync channel")?;
    Ok(())
}

/// Receives one message; `None` when the other end closed without a word (it died).
pub fn recv(fd: impl AsFd) -> Result<Option<Msg>> {
    let mut buf = vec![0u8; 8192];
    let n = loop {
        match net::recv(&fd, &mut buf, RecvFlags::empty()) {
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::sys("receive on the sync channel", e)),
        }
    };
    Ok(match buf.get(..n) {
        Some([]) | None => None,
        Some([b'G']) => Some(Msg::Go),
        Some([b'R']) => Some(Msg::Ready),
        Some([b'P', a, b, c, d]) => Some(Msg::Pid(i32::from_le_bytes([*a, *b, *c, *d]))),
        Some([b'F', text @ ..]) => Some(Msg::Failed(String::from_utf8_lossy(text).into_owned())),
        Some(other) => Some(Msg::Failed(format!("unexpected sync message {other:?}"))),
    })
}
