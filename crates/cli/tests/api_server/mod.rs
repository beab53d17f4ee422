//! The harness of the `vessel serve` tests that drive real clients: a server of an
//! [`Instance`] on a temp socket (SIGTERM and reaped on drop), the docker CLI pointed
//! at it, and a pty for the CLI's `-it` commands.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::instance::{have, stderr, stdout, wait_for, Instance};

pub const DOCKER: &str = "/opt/vessel-docker/bin/docker";

/// A `vessel serve` of an instance; SIGTERM and reaped on drop.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
}

impl Server {
    pub fn start(i: &Instance) -> Server {
        Server::start_with(i, &[])
    }

    /// A server with `env` added to its environment (`VESSEL_NETWORK=bridge`: the
    /// network of containers whose client names none).
    pub fn start_with(i: &Instance, env: &[(&str, &str)]) -> Server {
        let socket = i.dir.path().join("vessel.sock");
        let child = i
            .cmd()
            .envs(env.iter().copied())
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the server's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        Server { child, socket }
    }

    /// SIGTERM and wait: true when it exited by itself with status 0.
    pub fn stop(&mut self) -> bool {
        // SAFETY: kill takes plain integers; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// What a client of this server needs in its environment (docker CLI, compose).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", format!("unix://{}", self.socket.display())),
            (
                "DOCKER_CONFIG",
                self.socket.with_file_name("docker-config").display().to_string(),
            ),
        ]
    }

    /// The docker CLI with ARGS, pointed at this server.
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.args(args).envs(self.env()).stdin(Stdio::null());
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let out = self.docker_cmd(args).output().unwrap();
        eprintln!("docker {args:?}: {}\n{}{}", out.status, stdout(&out), stderr(&out));
        out
    }

    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {args:?}: {}", stderr(&o));
        stdout(&o)
    }

    /// `docker ARGS` that must fail; its stderr.
    pub fn docker_err(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(!o.status.success(), "docker {args:?} succeeded");
        stderr(&o)
    }

    /// The docker CLI with `input` on its stdin (a pipe).
    pub fn docker_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .docker_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "docker {args:?} <{input:?}: {}\n{}{}",
            out.status,
            stdout(&out),
            stderr(&out)
        );
        out
    }

    /// The docker CLI on a pty of 33 rows and 77 columns (`tests/api_server/pty.py`):
    /// for each `(expect, send)` step, waits until the output holds `expect`, then
    /// types `send`; then reads until the CLI exits. Its output and exit code.
    pub fn docker_pty(&self, args: &[&str], steps: &[(&str, &str)]) -> (String, i32) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api_server/pty.py");
        let steps = serde_json::to_string(steps).unwrap();
        let out = Command::new("python3")
            .arg(script)
            .arg(steps)
            .arg(DOCKER)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.socket.with_file_name("docker-config"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&out);
        eprintln!("docker (pty) {args:?}: {}\n{text}{}", out.status, stderr(&out));
        (text, out.status.code().unwrap_or(-1))
    }

    /// `curl --unix-socket` ARGS: (status code, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = Command::new("curl")
            .arg("-s")
            .arg("--max-time")
            .arg("20")
            .arg("--unix-socket")
            .arg(&self.socket)
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = stdout(&out);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        eprintln!("curl {args:?}: {code} {body}");
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// Whether the docker CLI and the tools of the tests are here (a loud skip if not).
pub fn tools() -> bool {
    if !Path::new(DOCKER).exists() {
        eprintln!("\n!!!!! SKIPPED: no {DOCKER} (scripts/setup unpacks it) !!!!!\n");
        return false;
    }
    have(&["umoci", "busybox", "curl", "python3"])
}

/// A child process killed and reaped on drop (a follower: `logs -f`, `events`).
pub struct Follower(pub Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
