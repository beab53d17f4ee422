//! The monitor's healthcheck timer ([`crate::health`]): from the start of the container,
//! every interval a probe child is forked (the monitor is single-threaded, so a fork is
//! safe), its output read from a pipe, and its exit code, reaped with the monitor's
//! other children, recorded in `BUNDLE/health.json`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::db::Record;
use crate::health::{self, Health, Healthcheck, Probe};
use crate::paths::Paths;

/// A probe that runs.
struct Running {
    pid: i32,
    out: OwnedFd,
    output: Vec<u8>,
    /// The pipe reached EOF (every writer closed): no more polling it.
    eof: bool,
    began: Instant,
    began_at: String,
}

/// The healthcheck of a running container.
pub(super) struct Timer {
    check: Healthcheck,
    command: Vec<String>,
    started: Instant,
    next: Instant,
    running: Option<Running>,
    health: Health,
}

fn now() -> String {
    vessel_runtime::state::now_rfc3339()
}

impl Timer {
    /// The timer of `rec` started now (status `starting`, written out), when it has a
    /// healthcheck with a command.
    pub(super) fn start(paths: &Paths, rec: &Record) -> Option<Timer> {
        let check = rec.options.healthcheck.clone()?;
        let command = check.command().ok().flatten()?;
        let health = Health::default();
        let _ = health::write(paths, &rec.id, &health);
        let now = Instant::now();
        Some(Timer {
            next: now + check.interval(),
            check,
            command,
            started: now,
            running: None,
            health,
        })
    }

    /// How long the event loop may sleep before the next probe is due (none while one
    /// runs: its pipe and its exit wake the loop).
    pub(super) fn wait(&self) -> Option<Duration> {
        if self.running.is_some() {
            return None;
        }
        Some(self.next.saturating_duration_since(Instant::now()))
    }

    /// The running probe's output pipe, for the poll set.
    pub(super) fn pipe(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().filter(|r| !r.eof).map(|r| r.out.as_fd())
    }

    /// Starts a probe when one is due.
    pub(super) fn tick(&mut self, paths: &Paths, rec: &Record) {
        if self.running.is_some() || Instant::now() < self.next {
            return;
        }
        let Ok((r, w)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK)
        else {
            self.next = Instant::now() + self.check.interval();
            return;
        };
        let began_at = now();
        // SAFETY: the monitor is single-threaded, so the child may run any code; it
        // leaves through _exit (health::probe never returns).
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(r);
                // The write end must stay open across the runtime's exec of the command.
                let _ = rustix::io::fcntl_setfd(&w, rustix::io::FdFlags::empty());
                let _ = rustix::fs::fcntl_setfl(&w, rustix::fs::OFlags::empty());
                health::probe(paths, rec, self.command.clone(), self.check.timeout(), w)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(w);
                self.running = Some(Running {
                    pid: child.as_raw(),
                    out: r,
                    output: Vec::new(),
                    eof: false,
                    began: Instant::now(),
                    began_at,
                });
            }
            Err(_) => self.next = Instant::now() + self.check.interval(),
        }
    }

    /// Reads what the probe wrote (keeps the first [`health::MAX_OUTPUT`] bytes).
    pub(super) fn read(&mut self) {
        let Some(run) = self.running.as_mut() else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = rustix::io::read(&run.out, &mut buf) {
            if n == 0 {
                run.eof = true;
                break;
            }
            let room = health::MAX_OUTPUT.saturating_sub(run.output.len());
            run.output.extend_from_slice(&buf[..n.min(room)]);
        }
    }

    /// Whether `pid` is the running probe.
    pub(super) fn owns(&self, pid: i32) -> bool {
        self.running.as_ref().is_some_and(|r| r.pid == pid)
    }

    /// The probe `pid` ended with `code`: its result recorded, the next one scheduled.
    pub(super) fn ended(&mut self, paths: &Paths, id: &str, code: i32) {
        self.read();
        let Some(run) = self.running.take() else { return };
        let timed_out = run.began.elapsed() >= self.check.timeout();
        let probe = Probe {
            start: run.began_at,
            end: now(),
            exit_code: if timed_out || code == 255 { -1 } else { code },
            output: String::from_utf8_lossy(&run.output).into_owned(),
        };
        let in_start_period = self.started.elapsed() < self.check.start_period;
        self.health.record(probe, self.check.retries(), in_start_period);
        let _ = health::write(paths, id, &self.health);
        self.next = Instant::now() + self.check.interval();
    }
}
