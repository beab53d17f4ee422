//! Rootless networking through slirp4netns(1) (Debian's `slirp4netns` package), as
//! podman's `--network slirp4netns`: a user-mode TCP/IP stack (libslirp) that gives a
//! container's network namespace a tap interface `tap0` configured as 10.0.2.100/24 with
//! gateway 10.0.2.2 and DNS 10.0.2.3 (`--configure`), and carries its traffic through
//! ordinary sockets of the caller. Published ports are added through its API socket
//! (`add_hostfwd`, slirp4netns(1) "API"). Connections to the gateway do not reach the
//! caller's loopback (`--disable-host-loopback`, podman's default).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{NetError, Result};
use crate::ports::{PortMapping, Protocol};

/// The address slirp4netns gives the container (`--configure`).
pub const GUEST_ADDR: &str = "10.0.2.100";

/// slirp4netns's DNS forwarder, reached from the container (to the caller's resolvers).
pub const DNS_ADDR: &str = "10.0.2.3";

/// The API socket's name in [`Files::dir`].
const API_NAME: &str = "slirp4netns.sock";

/// The slirp4netns binary: `$VESSEL_SLIRP4NETNS`, else `slirp4netns` on PATH, else
/// /usr/bin/slirp4netns.
pub fn program() -> PathBuf {
    if let Some(p) = std::env::var_os("VESSEL_SLIRP4NETNS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("slirp4netns"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/slirp4netns"))
}

/// Where a running slirp4netns of a container keeps its files: its pid, API socket and log.
#[derive(Debug, Clone)]
pub struct Files {
    /// The directory of the files, slirp4netns's working directory: the API socket is
    /// named relative to it, as a socket's path may have at most 107 bytes.
    pub dir: PathBuf,
    /// The pid of slirp4netns, written here once it is ready.
    pub pid: PathBuf,
    /// Its API socket (`--api-socket`).
    pub api: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Files {
    /// The files in the directory `dir` (the container's bundle): `slirp4netns.pid`,
    /// `slirp4netns.sock`, `slirp4netns.log`.
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            dir: dir.to_path_buf(),
            pid: dir.join("slirp4netns.pid"),
            api: dir.join("slirp4netns.sock"),
            log: dir.join("slirp4netns.log"),
        }
    }
}

fn command_err(prog: &Path, args: &[String], msg: String) -> NetError {
    NetError::Command {
        program: prog.display().to_string(),
        args: args.join(" "),
        msg,
    }
}

/// Starts slirp4netns for the network namespace file `netns` (the caller must hold
/// CAP_SYS_ADMIN in the user namespace that owns it), waits until it has configured
/// `tap0` (its ready fd), then forwards `ports` from the caller's network namespace to
/// the container through [`add_hostfwd`]. slirp4netns stays a child of the caller, which
/// must reap it; its pid goes to `files.pid`. On error nothing is left running.
///
/// Errors: [`NetError::Exec`] when slirp4netns cannot be run (install `slirp4netns`),
/// [`NetError::Command`] with its log when it fails before it is ready or a port cannot
/// be forwarded.
pub fn start(netns: &Path, ports: &[PortMapping], files: &Files) -> Result<()> {
    let prog = program();
    let _ = std::fs::remove_file(&files.api);
    let args: Vec<String> = vec![
        "--configure".into(),
        "--mtu=65520".into(),
        "--disable-host-loopback".into(),
        "--ready-fd=3".into(),
        format!("--api-socket={API_NAME}"),
        "--netns-type=path".into(),
        netns.display().to_string(),
        "tap0".into(),
    ];
    let io_err = |what: &str, e: std::io::Error| NetError::Exec {
        program: prog.clone(),
        source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
    };
    let (ready_r, ready_w): (OwnedFd, OwnedFd) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| io_err("make a pipe", e.into()))?;
    let log = std::fs::File::create(&files.log).map_err(|e| io_err("create its log", e))?;
    let log2 = log.try_clone().map_err(|e| io_err("create its log", e))?;
    let w = ready_w.as_raw_fd();
    let mut cmd = Command::new(&prog);
    cmd.args(&args)
        .current_dir(&files.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // SAFETY: between fork and exec the closure calls only dup2, fcntl, sigemptyset and
    // sigprocmask, which are async-signal-safe, on an fd this process owns and a local set.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec: clear it then.
            let rc = if w == 3 {
                libc::fcntl(w, libc::F_SETFD, 0)
            } else {
                libc::dup2(w, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The caller (the monitor) blocks SIGTERM and others for its signalfd: a mask
            // exec keeps, which would leave slirp4netns deaf to `stop`.
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| NetError::Exec {
        program: prog.clone(),
        source: std::io::Error::new(e.kind(), format!("{e} (install Debian's slirp4netns package)")),
    })?;
    drop(ready_w);
    let mut b = [0u8; 1];
    let ready = matches!(rustix::io::read(&ready_r, &mut b), Ok(1));
    let fail = |child: &mut std::process::Child, msg: String| {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&files.api);
        command_err(&prog, &args, msg)
    };
    if !ready {
        let text = std::fs::read_to_string(&files.log).unwrap_or_default();
        return Err(fail(
            &mut child,
            format!("it ended before it was ready: {}", text.trim().replace('\n', "; ")),
        ));
    }
    if let Err(e) = std::fs::write(&files.pid, format!("{}\n", child.id())) {
        return Err(fail(&mut child, format!("write {}: {e}", files.pid.display())));
    }
    for p in ports {
        if let Err(e) = add_hostfwd(&files.dir, p) {
            let _ = std::fs::remove_file(&files.pid);
            return Err(fail(&mut child, e.to_string()));
        }
    }
    // The caller (the monitor) reaps it; the handle is let go without killing it.
    drop(child);
    Ok(())
}

/// The API request forwarding `p` (slirp4netns(1) "add_hostfwd"): the host address (all
/// when none is given), the host port, the guest port on [`GUEST_ADDR`].
pub fn hostfwd_request(p: &PortMapping) -> String {
    let proto = if p.protocol == Protocol::Udp { "udp" } else { "tcp" };
    let host = p.host_ip.as_deref().filter(|ip| !ip.is_empty()).unwrap_or("0.0.0.0");
    serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": proto,
            "host_addr": host,
            "host_port": p.host_port,
            "guest_addr": GUEST_ADDR,
            "guest_port": p.container_port,
        }
    })
    .to_string()
}

/// Asks the slirp4netns whose API socket is in the directory `dir` to forward `p`. The
/// socket is reached through an `O_PATH` descriptor of `dir` (`/proc/self/fd/N/...`), so
/// a long `dir` does not matter.
///
/// Errors: [`NetError::Command`] with slirp4netns's own error (a port in use) or the
/// socket's error.
pub fn add_hostfwd(dir: &Path, p: &PortMapping) -> Result<()> {
    let req = hostfwd_request(p);
    let api = dir.join(API_NAME);
    let err = |msg: String| {
        command_err(
            Path::new("slirp4netns API"),
            &[api.display().to_string(), req.clone()],
            msg,
        )
    };
    let d = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| err(format!("open {}: {e}", dir.display())))?;
    let short = format!("/proc/self/fd/{}/{API_NAME}", d.as_raw_fd());
    let mut s = UnixStream::connect(&short).map_err(|e| err(format!("connect: {e}")))?;
    s.write_all(req.as_bytes()).map_err(|e| err(format!("send: {e}")))?;
    s.shutdown(std::net::Shutdown::Write)
        .map_err(|e| err(format!("send: {e}")))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| err(format!("read: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&answer).map_err(|e| err(format!("answer {answer:?}: {e}")))?;
    if let Some(e) = v.get("error") {
        let desc = e.get("desc").and_then(|d| d.as_str()).unwrap_or("unknown error");
        return Err(err(format!("cannot forward host port {}: {desc}", p.host_port)));
    }
    Ok(())
}

/// Ends the slirp4netns whose pid is in `files.pid` (SIGTERM; SIGKILL after 0.5 s), reaps
/// it when the caller is its parent, and removes its files. A missing file or process is
/// fine.
pub fn stop(files: &Files) {
    if let Some(pid) = std::fs::read_to_string(&files.pid)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
    {
        // SAFETY: kill with a pid slirp4netns's starter wrote and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        // The starter (the monitor) is its parent: reap it, or it stays a zombie once
        // the monitor is gone (ECHILD at once when the caller is another process).
        for i in 0..100 {
            let mut status = 0;
            // SAFETY: waitpid on a pid with a valid status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r != 0 {
                break;
            }
            if i == 50 {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(&files.pid);
    let _ = std::fs::remove_file(&files.api);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request() {
        let p = PortMapping {
            host_ip: Some("127.0.0.1".into()),
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        };
        let v: serde_json::Value = serde_json::from_str(&hostfwd_request(&p)).unwrap();
        assert_eq!(v["execute"], "add_hostfwd");
        assert_eq!(v["arguments"]["host_addr"], "127.0.0.1");
        assert_eq!(v["arguments"]["host_port"], 8080);
        assert_eq!(v["arguments"]["guest_port"], 80);
        assert_eq!(v["arguments"]["proto"], "tcp");
    }
}
