//! A `vessel serve --listen 127.0.0.1:0` of an instance (mutual TLS, loopback only):
//! its address and certificate fingerprint as it printed them; SIGTERM and reaped on
//! drop (a server the test killed is only reaped).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use super::instance::Instance;

/// The server process and what it printed.
pub struct TlsServer {
    /// The `vessel serve` process.
    pub child: Child,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
}

impl TlsServer {
    /// Starts it on `i`'s root and waits until it listens.
    pub fn start(i: &Instance) -> TlsServer {
        let mut child = i
            .cmd()
            .arg("serve")
            .arg("--socket")
            .arg(i.dir.path().join("vessel.sock"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut url = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            eprintln!("server: {line}");
            if let Some(rest) = line.split("listening on https://").nth(1) {
                url = format!("https://{}", rest.split_whitespace().next().unwrap());
            }
            if line.contains("listening on unix://") {
                break;
            }
        }
        assert!(url.starts_with("https://127.0.0.1:"), "no https address printed");
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("server: {l}");
            }
        });
        TlsServer { child, url }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().unwrap().parse().unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers; the pid is our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
