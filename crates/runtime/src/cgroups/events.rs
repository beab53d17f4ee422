//! Out-of-memory notifications of a container's cgroup: on v1 an eventfd registered on
//! memory.oom_control through cgroup.event_control (cgroup-v1/memory.rst "OOM Control"),
//! on v2 inotify on memory.events and its `oom_kill` counter (cgroup-v2.rst
//! "memory.events"). Both counted against the kernel's `oom_kill` counter, so a cgroup
//! being removed (which also wakes a v1 eventfd) is not reported as an OOM.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::stats::flat_keyed;
use crate::error::{Context, Error, Result};

/// What [`OomWatcher::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomEvent {
    /// This many new OOM kills (or, with the OOM killer disabled on v1, OOM stalls).
    Oom(u64),
    /// Nothing within the timeout.
    Timeout,
    /// The cgroup is gone.
    Gone,
}

enum Kind {
    V1 { eventfd: OwnedFd, _control: fs::File },
    V2 { inotify: OwnedFd },
}

/// Watches one cgroup for OOM kills.
pub struct OomWatcher {
    kind: Kind,
    /// memory.oom_control (v1) or memory.events (v2).
    file: PathBuf,
    /// The kernel's oom_kill count when last looked.
    last: u64,
    /// v1: under_oom was reported (with the OOM killer disabled nothing is killed).
    under_oom: bool,
}

fn counters(file: &Path) -> Option<(u64, bool)> {
    if !file.exists() {
        return None;
    }
    let m = flat_keyed(file);
    Some((
        m.get("oom_kill").copied().unwrap_or(0),
        m.get("under_oom").copied().unwrap_or(0) == 1,
    ))
}

impl OomWatcher {
    /// Registers an eventfd on the v1 memory cgroup `dir`.
    ///
    /// Errors: [`Error::Sys`] when the files cannot be opened or registered.
    pub fn v1(dir: &Path) -> Result<OomWatcher> {
        let file = dir.join("memory.oom_control");
        let control = fs::File::open(&file).ctx(|| format!("open {}", file.display()))?;
        // SAFETY: eventfd with valid flags; the result is checked before use.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(Error::sys("eventfd", std::io::Error::last_os_error()));
        }
        // SAFETY: a new fd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        let reg = dir.join("cgroup.event_control");
        fs::write(&reg, format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd()))
            .ctx(|| format!("register an OOM eventfd in {}", reg.display()))?;
        let (last, _) = counters(&file).unwrap_or((0, false));
        Ok(OomWatcher {
            kind: Kind::V1 {
                eventfd,
                _control: control,
            },
            file,
            last,
            under_oom: false,
        })
    }

    /// Watches memory.events of the v2 cgroup `dir` with inotify.
    ///
    /// Errors: [`Error::Sys`] when inotify fails or the file is missing.
    pub fn v2(dir: &Path) -> Result<OomWatcher> {
        let file = dir.join("memory.events");
        // SAFETY: inotify_init1 with valid flags; checked before use.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(Error::sys("inotify_init1", std::io::Error::last_os_error()));
        }
        // SAFETY: a new fd that nothing else owns.
        let inotify = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Invalid(format!("cgroup path {} holds a NUL", file.display())))?;
        // SAFETY: a valid inotify fd and NUL-terminated path.
        if unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0 {
            return Err(Error::sys(
                format!("watch {}", file.display()),
                std::io::Error::last_os_error(),
            ));
        }
        let (last, _) = counters(&file).unwrap_or((0, false));
        Ok(OomWatcher {
            kind: Kind::V2 { inotify },
            file,
            last,
            under_oom: false,
        })
    }

    /// Waits up to `timeout` for an OOM kill.
    ///
    /// Errors: [`Error::Sys`] from poll(2) or read(2).
    pub fn wait(&mut self, timeout: Duration) -> Result<OomEvent> {
        if let Some(ev) = self.check() {
            return Ok(ev);
        }
        let fd = match &self.kind {
            Kind::V1 { eventfd, .. } => eventfd.as_fd(),
            Kind::V2 { inotify } => inotify.as_fd(),
        };
        let mut fds = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => return Ok(self.check().unwrap_or(OomEvent::Timeout)),
            Ok(_) => {}
            Err(e) => return Err(Error::sys("poll the OOM notifier", e)),
        }
        // Drain: 8 bytes of eventfd counter, or any number of inotify records.
        let mut buf = [0u8; 4096];
        let _ = rustix::io::read(fd, &mut buf);
        Ok(self.check().unwrap_or(OomEvent::Timeout))
    }

    /// Compares the kernel's counters with the last ones seen.
    fn check(&mut self) -> Option<OomEvent> {
        let Some((kills, under)) = counters(&self.file) else {
            return Some(OomEvent::Gone);
        };
        if kills > self.last {
            let n = kills - self.last;
            self.last = kills;
            return Some(OomEvent::Oom(n));
        }
        // With the OOM killer disabled (v1), the group stalls instead: report it once.
        if under && !self.under_oom {
            self.under_oom = true;
            return Some(OomEvent::Oom(1));
        }
        self.under_oom = under;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_counts_from_the_file() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("memory.events");
        fs::write(&f, "oom 0\noom_kill 0\n").unwrap();
        let mut w = OomWatcher::v2(d.path()).unwrap();
        assert_eq!(w.wait(Duration::from_millis(10)).unwrap(), OomEvent::Timeout);
        fs::write(&f, "oom 2\noom_kill 2\n").unwrap();
        assert_eq!(w.wait(Duration::from_millis(500)).unwrap(), OomEvent::Oom(2));
        assert_eq!(w.wait(Duration::from_millis(10)).unwrap(), OomEvent::Timeout);
        fs::remove_file(&f).unwrap();
        assert_eq!(w.wait(Duration::from_millis(10)).unwrap(), OomEvent::Gone);
    }
}
