//! Reaps the monitors this server spawned. The engine starts a monitor with
//! `std::process::Command` and lets it live on; a CLI process exits and leaves it to
//! init, but the server lives on, so each monitor it started is waited for here:
//! through a pidfd (pidfd_open(2)) polled by tokio, then waitpid(2) of that pid only,
//! so that no other child's status (a CNI plugin's, `ps`'s) is taken.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// Waits in the background for `pid` to exit and reaps it, when it is our child; a
/// pid that is not our child (a monitor the CLI started) is left alone.
pub fn reap_later(pid: i32) {
    if pid <= 0 || !is_our_child(pid) {
        return;
    }
    let Ok(fd) = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).unwrap_or(rustix::process::Pid::INIT),
        rustix::process::PidfdFlags::NONBLOCK,
    ) else {
        return;
    };
    tokio::spawn(async move {
        // SAFETY: the pidfd is open and owned by the AsyncFd from here on: it stays
        // open and the same until the AsyncFd is dropped.
        if let Ok(afd) = unsafe { AsyncFd::register(fd) } {
            let _ = afd.readable().await;
        }
        loop {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                _ => return,
            }
        }
    });
}

/// Whether `pid`'s parent is this process (/proc/PID/stat's 4th field).
fn is_our_child(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name (2nd field) may hold spaces and parentheses: split after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return false;
    };
    rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id())
}
