//! A `vessel serve` of a test [`Instance`] on a temp socket, for the test files that
//! drive the API (metrics.rs, api_bad_input.rs): start, the docker CLI and curl
//! against it, SIGTERM and reap on drop.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use crate::instance::{stderr, stdout, wait_for, Instance};

pub const DOCKER: &str = "/opt/vessel-docker/bin/docker";

/// A running `vessel serve`.
pub struct Server {
    pub child: Child,
    pub socket: PathBuf,
    /// The `--metrics-listen` address, when asked for.
    pub metrics: Option<String>,
}

/// A TCP port on 127.0.0.1 that nobody listened on a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Server {
    /// `vessel serve --socket DIR/vessel.sock EXTRA...`, once its socket answers.
    pub fn start_with(i: &Instance, extra: &[&str]) -> Server {
        let socket = i.dir.path().join("vessel.sock");
        let child = i
            .cmd()
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the server's socket", || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        let metrics = extra
            .iter()
            .position(|a| *a == "--metrics-listen")
            .and_then(|p| extra.get(p + 1))
            .map(|a| a.to_string());
        Server { child, socket, metrics }
    }

    pub fn start(i: &Instance) -> Server {
        Server::start_with(i, &[])
    }

    /// `vessel serve` with `--metrics-listen 127.0.0.1:FREE_PORT`.
    pub fn start_with_metrics(i: &Instance) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let s = Server::start_with(i, &["--metrics-listen", &addr]);
        wait_for("the metrics listener", || std::net::TcpStream::connect(&addr).is_ok());
        s
    }

    /// SIGTERM and wait: true when it exited by itself with status 0.
    pub fn stop(&mut self) -> bool {
        // SAFETY: kill takes plain integers; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().is_ok_and(|s| s.success())
    }

    /// Whether the server process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let out = Command::new(DOCKER)
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env("DOCKER_CONFIG", self.socket.with_file_name("docker-config"))
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

    /// `curl --unix-socket` ARGS: (status code, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let sock = self.socket.to_string_lossy().into_owned();
        curl(&[&["--unix-socket", &sock], args].concat())
    }
}

/// `curl -s ARGS` (20 s at most): (status code, body).
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let shown: String = body.chars().take(2000).collect();
    eprintln!("curl {args:?}: {code} {shown}");
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            self.stop();
        }
    }
}
