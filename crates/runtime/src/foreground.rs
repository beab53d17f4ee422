//! A foreground container process (`run` and `exec` without `--detach`): the runtime
//! stays its parent, forwards the signals it gets to it, proxies a pty between its
//! own stdio and the container's console when there is no console socket, and exits
//! with the process's status (128+N when killed by signal N, as shells report it).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};

/// Signals blocked in the runtime and read from a signalfd while it waits. Create it
/// before forking, so no signal is lost; the child resets its mask before execve.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks every forwardable signal and SIGCHLD, and opens a signalfd for them.
    pub fn block() -> Result<Signals> {
        let mut set = SigSet::empty();
        for s in crate::signal::forwarded().chain([libc::SIGCHLD]) {
            if let Ok(sig) = Signal::try_from(s) {
                set.add(sig);
            } else {
                // Real-time signals have no nix::Signal; add them through libc.
                // SAFETY: `set` wraps a valid sigset_t and `s` is a valid signal number.
                unsafe { libc::sigaddset(std::ptr::from_mut(&mut set).cast(), s) };
            }
        }
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).ctx(|| "block signals")?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).ctx(|| "signalfd")?;
        Ok(Signals { fd })
    }
}

/// The shell's view of a wait status: the exit code, or 128 + the signal number.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// The terminal on stdin in raw mode (no echo, no line editing, no signal keys) until
/// dropped, when its settings are restored; nothing happens when stdin is no terminal.
pub struct RawMode {
    saved: Option<rustix::termios::Termios>,
}

impl RawMode {
    /// Saves stdin's terminal settings and switches it to raw mode.
    pub fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            raw.make_raw();
            let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = rustix::termios::tcsetattr(std::io::stdin(), rustix::termios::OptionalActions::Now, t);
        }
    }
}

fn copy_winsize(master: BorrowedFd<'_>) {
    if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stdin()) {
        let _ = rustix::termios::tcsetwinsize(master, ws);
    }
}

/// Waits for the child `pid`, forwarding signals to it and proxying `master` (the
/// container's pty) to our stdin and stdout when given. Returns the exit code.
///
/// Errors: [`Error::Sys`] when waiting itself fails.
pub fn wait(pid: i32, signals: &Signals, master: Option<OwnedFd>) -> Result<i32> {
    let _raw = master.as_ref().map(|_| RawMode::enter());
    if let Some(m) = &master {
        copy_winsize(m.as_fd());
    }
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 16384];
    loop {
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master.as_ref().filter(|_| master_open) {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if ready.get(1).copied().unwrap_or(false) {
            if let Some(m) = &master {
                match rustix::io::read(m, &mut buf) {
                    Ok(0) | Err(_) => master_open = false,
                    Ok(n) => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]).and_then(|_| out.flush());
                    }
                }
            }
        }
        if ready.get(2).copied().unwrap_or(false) {
            if let Some(m) = &master {
                match std::io::stdin().read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        let _ = rustix::io::write(m, &buf[..n]);
                    }
                }
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = signals.fd.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    if let Some(m) = &master {
                        copy_winsize(m.as_fd());
                    }
                } else if sig != libc::SIGCHLD {
                    // SAFETY: kill with a pid we forked and a valid signal number.
                    unsafe { libc::kill(pid, sig) };
                }
                if sig == libc::SIGCHLD {
                    break;
                }
            }
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => {
                    if let Some(code) = exit_code(status) {
                        if let Some(m) = &master {
                            drain(m.as_fd(), &mut buf);
                        }
                        return Ok(code);
                    }
                }
                Err(nix::errno::Errno::ECHILD) => return Err(Error::Init(format!("process {pid} is not our child"))),
                Err(e) => return Err(Error::sys(format!("wait for {pid}"), e)),
            }
        }
    }
}

fn drain(master: BorrowedFd<'_>, buf: &mut [u8]) {
    // SAFETY: fcntl on an fd we hold open, with integer arguments.
    unsafe {
        let flags = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let mut out = std::io::stdout();
    while let Ok(n) = rustix::io::read(master, &mut *buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}
