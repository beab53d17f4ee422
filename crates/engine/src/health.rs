//! Healthchecks (docker's `HEALTHCHECK`, `--health-cmd` and the Docker API's
//! `Config.Healthcheck`): what to run and how often ([`Healthcheck`], kept with the
//! container's options), and what the runs found ([`Health`], in `BUNDLE/health.json`,
//! which `inspect` and `ps` read).
//!
//! The monitor runs the checks (its event loop has the timer): each probe is a child it
//! forks, which enters the container through the runtime's exec path with its output
//! on a pipe, waits for the command at most the timeout, and exits with its code
//! ([`probe`]). The monitor records the result ([`Health::record`]).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::Record;
use crate::error::{Error, IoContext, Result};
use crate::paths::Paths;

/// docker's defaults: 30 s interval and timeout, 3 retries, no start period.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// See [`DEFAULT_INTERVAL`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// See [`DEFAULT_INTERVAL`].
pub const DEFAULT_RETRIES: u32 = 3;
/// How many results `Health.Log` keeps (docker keeps 5).
pub const LOG_ENTRIES: usize = 5;
/// How much of a probe's output a log entry keeps, bytes (docker keeps 4 KiB).
pub const MAX_OUTPUT: usize = 4096;

/// A container's healthcheck, as docker's `Config.Healthcheck` (durations in
/// nanoseconds there, kept here as [`Duration`]s; 0 means docker's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    /// `["CMD", ARGS...]`, `["CMD-SHELL", "COMMAND"]` (run by `/bin/sh -c`) or `["NONE"]`.
    pub test: Vec<String>,
    /// Time between the end of one probe and the start of the next.
    pub interval: Duration,
    /// How long a probe may run before it counts as failed.
    pub timeout: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
    /// Time after the start during which failures do not count.
    pub start_period: Duration,
}

impl Healthcheck {
    /// The command a probe runs; None when the test is `NONE` or empty (no checks).
    ///
    /// Errors: [`Error::BadInput`] for a test of another form.
    pub fn command(&self) -> Result<Option<Vec<String>>> {
        match self.test.split_first() {
            None => Ok(None),
            Some((k, _)) if k == "NONE" => Ok(None),
            Some((k, rest)) if k == "CMD" && !rest.is_empty() => Ok(Some(rest.to_vec())),
            Some((k, [cmd])) if k == "CMD-SHELL" => Ok(Some(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])),
            _ => Err(Error::BadInput(format!(
                "healthcheck test {:?}: use [\"CMD\", ARGS...], [\"CMD-SHELL\", COMMAND] or [\"NONE\"]",
                self.test
            ))),
        }
    }

    /// The interval, docker's default for 0.
    pub fn interval(&self) -> Duration {
        nonzero(self.interval, DEFAULT_INTERVAL)
    }

    /// The timeout, docker's default for 0.
    pub fn timeout(&self) -> Duration {
        nonzero(self.timeout, DEFAULT_TIMEOUT)
    }

    /// The retries, docker's default for 0.
    pub fn retries(&self) -> u32 {
        if self.retries == 0 {
            DEFAULT_RETRIES
        } else {
            self.retries
        }
    }
}

/// An image configuration's `config.Healthcheck` (docker's image config: `Test`,
/// `Interval`, `Timeout`, `StartPeriod` in nanoseconds, `Retries`; OCI image configs
/// have no such field, so `raw` is the config blob as stored). None when there is none,
/// it is not of that shape, or its test is empty.
pub fn of_image(raw: &[u8]) -> Option<Healthcheck> {
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase", default)]
    struct Docker {
        test: Vec<String>,
        interval: u64,
        timeout: u64,
        start_period: u64,
        retries: u32,
    }
    let v: serde_json::Value = serde_json::from_slice(raw).ok()?;
    let d: Docker = serde_json::from_value(v.get("config")?.get("Healthcheck")?.clone()).ok()?;
    (!d.test.is_empty()).then(|| Healthcheck {
        test: d.test,
        interval: Duration::from_nanos(d.interval),
        timeout: Duration::from_nanos(d.timeout),
        retries: d.retries,
        start_period: Duration::from_nanos(d.start_period),
    })
}

/// The healthcheck a container gets from the user's (`user`: `--health-*`,
/// `--no-healthcheck`, the API's `Config.Healthcheck`) and its image's, as docker merges
/// them: none given (or an empty test) takes the image's whole; a given test keeps it,
/// and each of its durations and retries left at 0 is the image's. `["NONE"]` from the
/// user disables the image's.
pub fn with_image(user: Option<Healthcheck>, image: Option<Healthcheck>) -> Option<Healthcheck> {
    let Some(mut h) = user.filter(|h| !h.test.is_empty()) else {
        return image;
    };
    if let Some(i) = image {
        let zero_or = |d: Duration, i: Duration| if d.is_zero() { i } else { d };
        h.interval = zero_or(h.interval, i.interval);
        h.timeout = zero_or(h.timeout, i.timeout);
        h.start_period = zero_or(h.start_period, i.start_period);
        if h.retries == 0 {
            h.retries = i.retries;
        }
    }
    Some(h)
}

fn nonzero(d: Duration, default: Duration) -> Duration {
    if d.is_zero() {
        default
    } else {
        d
    }
}

/// One probe's result, as docker's `State.Health.Log` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    /// When it started, RFC 3339.
    pub start: String,
    /// When it ended, RFC 3339.
    pub end: String,
    /// The command's exit code; -1 when it ran out of time or could not be run.
    pub exit_code: i32,
    /// Its stdout and stderr, at most [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// What the checks found, as docker's `State.Health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failures in a row.
    pub failing_streak: u32,
    /// The last [`LOG_ENTRIES`] probes, oldest first.
    pub log: Vec<Probe>,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            status: "starting".into(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }
}

impl Health {
    /// Takes one probe's result: success makes the container healthy; a failure counts
    /// unless `in_start_period` (then the status stays as it is), and `retries` of them
    /// in a row make it unhealthy.
    pub fn record(&mut self, probe: Probe, retries: u32, in_start_period: bool) {
        if probe.exit_code == 0 {
            self.status = "healthy".into();
            self.failing_streak = 0;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(probe);
        if self.log.len() > LOG_ENTRIES {
            self.log.remove(0);
        }
    }
}

/// `BUNDLE/health.json` of container `id`.
pub fn path(paths: &Paths, id: &str) -> PathBuf {
    paths.bundle(id).join("health.json")
}

/// The health of container `id`, when it has a healthcheck that has started.
pub fn read(paths: &Paths, id: &str) -> Option<Health> {
    serde_json::from_slice(&std::fs::read(path(paths, id)).ok()?).ok()
}

/// Writes the health of container `id` (temp file + rename: readers see whole files).
///
/// Errors: [`Error::Io`].
pub fn write(paths: &Paths, id: &str, h: &Health) -> Result<()> {
    let p = path(paths, id);
    let text = serde_json::to_vec(h).map_err(|e| Error::BadInput(format!("health.json: {e}")))?;
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, text).at("write", &tmp)?;
    std::fs::rename(&tmp, &p).at("rename", &p)
}

/// The text `ps` shows after `Up ...` for a running container with a healthcheck:
/// ` (healthy)`, ` (unhealthy)`, ` (health: starting)`; empty without one.
pub fn ps_suffix(paths: &Paths, r: &Record) -> String {
    let has = r
        .options
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.command().ok().flatten().is_some());
    if !has || !r.state.is_live() {
        return String::new();
    }
    match read(paths, &r.id).map(|h| h.status) {
        Some(s) if s == "starting" => " (health: starting)".into(),
        Some(s) => format!(" ({s})"),
        None => " (health: starting)".into(),
    }
}

/// Child side of a probe (after the monitor's fork; never returns): the output goes to
/// `out`, the command runs in container `r` through the runtime's exec path, at most
/// `timeout`; the exit code is the command's, 255 when it could not run or ran out of
/// time (with a line on `out` saying so).
pub fn probe(paths: &Paths, r: &Record, command: Vec<String>, timeout: Duration, out: OwnedFd) -> ! {
    let code = probe_inner(paths, r, command, timeout, &out).unwrap_or_else(|e| {
        let _ = rustix::io::write(&out, format!("healthcheck: {e}\n").as_bytes());
        255
    });
    // SAFETY: _exit ends this forked child at once, without running the parent's
    // atexit handlers or flushing buffers that belong to the monitor.
    unsafe { libc::_exit(code) }
}

fn probe_inner(paths: &Paths, r: &Record, command: Vec<String>, timeout: Duration, out: &OwnedFd) -> Result<i32> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    // The monitor blocks signals for its signalfd: the probe and its command must not.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let null = rustix::fs::open("/dev/null", rustix::fs::OFlags::RDWR, rustix::fs::Mode::empty())
        .map_err(|e| Error::io("open", "/dev/null", e.into()))?;
    let dup = |from: &OwnedFd, to: i32| {
        // SAFETY: dup2 on descriptors this process owns; fds 0-2 are replaced on purpose.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(from), to) }
    };
    if dup(&null, 0) < 0 || dup(out, 1) < 0 || dup(out, 2) < 0 {
        return Err(Error::io("dup2", "", std::io::Error::last_os_error()));
    }
    let state = vessel_runtime::Container::load(&paths.oci_root(), &r.id)?.state;
    let spec = vessel_runtime::spec::load(&paths.bundle(&r.id))?;
    let process = crate::exec::process(
        paths,
        r,
        &spec,
        &crate::exec::ExecRequest {
            command,
            ..Default::default()
        },
    )?;
    let pid = vessel_runtime::exec::exec(
        &state,
        vessel_runtime::ExecOptions {
            process,
            console: None,
            preserve_fds: 0,
            spec,
            seccomp_cache: Some(vessel_runtime::seccomp::cache_dir(&paths.oci_root())),
            sub_cgroups: Vec::new(),
            ignore_paused: false,
        },
    )?;
    let start = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(pid);
    loop {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => return Ok(vessel_runtime::foreground::exit_code(st).unwrap_or(255)),
            Err(e) => return Err(Error::io("wait for", "healthcheck command", e.into())),
        }
        if start.elapsed() >= timeout {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            let _ = rustix::io::write(
                out.as_fd(),
                format!("Health check exceeded timeout ({timeout:?})\n").as_bytes(),
            );
            return Ok(255);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_healthcheck_is_the_default_and_user_fields_win() {
        let raw = br#"{"config":{"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":2000000000,"Retries":4}}}"#;
        let img = of_image(raw).unwrap();
        assert_eq!(img.test, vec!["CMD-SHELL", "true"]);
        assert_eq!((img.interval, img.retries), (Duration::from_secs(2), 4));
        assert_eq!(of_image(br#"{"config":{}}"#), None);
        assert_eq!(with_image(None, Some(img.clone())), Some(img.clone()));
        let none = Healthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        let got = with_image(Some(none), Some(img.clone())).unwrap();
        assert_eq!(got.command().unwrap(), None);
        let mine = Healthcheck {
            test: vec!["CMD".into(), "x".into()],
            timeout: Duration::from_secs(1),
            ..Default::default()
        };
        let got = with_image(Some(mine), Some(img)).unwrap();
        assert_eq!(got.test, vec!["CMD", "x"]);
        assert_eq!(
            (got.interval, got.timeout, got.retries),
            (Duration::from_secs(2), Duration::from_secs(1), 4)
        );
    }

    fn probe(code: i32) -> Probe {
        Probe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn status_follows_docker() {
        let mut h = Health::default();
        h.record(probe(1), 2, true);
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0));
        h.record(probe(0), 2, true);
        assert_eq!(h.status, "healthy");
        h.record(probe(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 1));
        h.record(probe(1), 2, false);
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        for _ in 0..5 {
            h.record(probe(0), 2, false);
        }
        assert_eq!((h.status.as_str(), h.failing_streak, h.log.len()), ("healthy", 0, 5));
    }

    #[test]
    fn commands() {
        let hc = |t: &[&str]| Healthcheck {
            test: t.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(hc(&["CMD", "true"]).command().unwrap(), Some(vec!["true".to_string()]));
        assert_eq!(
            hc(&["CMD-SHELL", "exit 1"]).command().unwrap().unwrap(),
            ["/bin/sh", "-c", "exit 1"]
        );
        assert_eq!(hc(&["NONE"]).command().unwrap(), None);
        assert!(hc(&["CMD"]).command().is_err() && hc(&["X"]).command().is_err());
    }
}
