//! A `vessel serve` of a test instance on a temp socket, and the docker CLI (taken out of
//! Debian's docker.io .deb by scripts/setup to /opt/vessel-docker/bin/docker, never
//! installed) pointed at it with `DOCKER_HOST`. The server runs where the instance's
//! commands run (inside the test's network namespace when it has one).
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
        let socket = i.dir.path().join("vessel.sock");
        let child = i
            .cmd()
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

    /// What a client of this server needs in its environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", format!("unix://{}", self.socket.display())),
            (
                "DOCKER_CONFIG",
                self.socket.with_file_name("docker-config").display().to_string(),
            ),
        ]
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let out = Command::new(DOCKER)
            .args(args)
            .envs(self.env())
            .stdin(Stdio::null())
            .output()
            .unwrap();
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

/// The docker CLI and what the image fixture needs are there.
pub fn tools() -> bool {
    if !Path::new(DOCKER).exists() {
        eprintln!("\n!!!!! SKIPPED: no {DOCKER} (scripts/setup unpacks it) !!!!!\n");
        return false;
    }
    have(&["umoci", "busybox", "curl"])
}
