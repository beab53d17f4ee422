//! The transport of a migration: how the source reaches the target host. A [`Remote`]
//! runs a `vessel` command there with its stdin and stdout as streams, and opens a byte
//! stream to a TCP port on the target's loopback (the CRIU page server). Two exist:
//! [`Ssh`] (`ssh://[user@]host[:port][/root]`: everything inside one authenticated,
//! encrypted ssh connection per stream, the page stream through `ssh -W`) and [`Local`]
//! (`local:///root`: another root on this same host, for tests, the VM proof and
//! benchmarks; it never crosses a network). The third, over the authenticated API
//! (mutual TLS, `vessel remote add`), lives in the command line crate (it needs
//! `vessel_api`, which depends on this crate) and reaches the engine through
//! [`super::migrate_via`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::error::{Error, Result};

/// The environment variable naming the ssh command (split on spaces, like git's
/// `GIT_SSH_COMMAND`), e.g. `ssh -i KEY -o UserKnownHostsFile=FILE`; default `ssh`.
pub const SSH_COMMAND_ENV: &str = "VESSEL_SSH_COMMAND";

/// A byte stream to a port on the target: a reader, a writer, and the process that
/// carries it (ssh), if any, to be reaped when done.
pub struct Stream {
    /// Bytes from the target.
    pub reader: Box<dyn Read + Send>,
    /// Bytes to the target.
    pub writer: Box<dyn Write + Send>,
    /// The carrying process.
    pub child: Option<Child>,
}

/// How the source reaches the target host.
pub trait Remote: Send + Sync {
    /// Starts `vessel [--root ROOT] ARGS...` on the target with piped stdin and stdout
    /// (stderr goes to ours).
    ///
    /// Errors: [`Error::Migrate`] when the transport cannot be started.
    fn vessel(&self, args: &[String]) -> Result<Child>;
    /// Opens a byte stream to `127.0.0.1:port` on the target.
    ///
    /// Errors: [`Error::Migrate`] when it cannot be opened.
    fn connect(&self, port: u16) -> Result<Stream>;
    /// The remote as the user wrote it (for messages).
    fn describe(&self) -> String;
}

fn transport_err(remote: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Migrate(format!("{remote}: {what}: {e}"))
}

/// Parses a remote: `ssh://[user@]host[:port][/root]` or `local:///root`;
/// `vessel_bin` is the vessel binary on the target (`vessel` on its PATH when None).
///
/// Errors: [`Error::BadInput`] for any other form.
pub fn parse(url: &str, vessel_bin: Option<&str>) -> Result<Box<dyn Remote>> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let (authority, root) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(PathBuf::from(&rest[i..]))),
            None => (rest, None),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| Error::BadInput(format!("remote {url}: port {p:?} is not a number")))?,
                ),
            ),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err(Error::BadInput(format!(
                "remote {url}: no host: use ssh://[user@]HOST[:PORT][/ROOT]"
            )));
        }
        return Ok(Box::new(Ssh {
            url: url.into(),
            user,
            host: host.into(),
            port,
            root: root.filter(|r| r.as_os_str() != "/"),
            vessel: vessel_bin.unwrap_or("vessel").into(),
        }));
    }
    if let Some(root) = url.strip_prefix("local://") {
        if !root.starts_with('/') || root == "/" {
            return Err(Error::BadInput(format!(
                "remote {url}: name the target's root: local:///PATH (same host only)"
            )));
        }
        let vessel = match vessel_bin {
            Some(v) => PathBuf::from(v),
            None => std::env::current_exe().map_err(|e| transport_err(url, "find this vessel binary", e))?,
        };
        return Ok(Box::new(Local {
            url: url.into(),
            root: root.into(),
            vessel,
        }));
    }
    Err(Error::BadInput(format!(
        "remote {url}: use ssh://[user@]HOST[:PORT][/ROOT] or local:///ROOT (same host only)"
    )))
}

/// A target reached over ssh: one ssh process per command or stream, so the
/// authentication and encryption are ssh's; the target needs sshd and vessel.
pub struct Ssh {
    url: String,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    root: Option<PathBuf>,
    vessel: String,
}

/// Quotes `s` for the remote shell that sshd runs the command with.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Ssh {
    fn ssh(&self) -> Command {
        let line = std::env::var(SSH_COMMAND_ENV).unwrap_or_else(|_| "ssh".into());
        let mut words = line.split_whitespace();
        let mut c = Command::new(words.next().unwrap_or("ssh"));
        c.args(words).args(["-o", "BatchMode=yes", "-T"]);
        if let Some(p) = self.port {
            c.args(["-p", &p.to_string()]);
        }
        if let Some(u) = &self.user {
            c.args(["-l", u]);
        }
        c
    }
}

impl Remote for Ssh {
    fn vessel(&self, args: &[String]) -> Result<Child> {
        let mut line = vec![shell_quote(&self.vessel)];
        if let Some(r) = &self.root {
            line.push("--root".into());
            line.push(shell_quote(&r.to_string_lossy()));
        }
        line.extend(args.iter().map(|a| shell_quote(a)));
        self.ssh()
            .arg(&self.host)
            .arg("--")
            .arg(line.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| transport_err(&self.url, "start ssh", e))
    }

    fn connect(&self, port: u16) -> Result<Stream> {
        let mut child = self
            .ssh()
            .args(["-W", &format!("127.0.0.1:{port}")])
            .arg(&self.host)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| transport_err(&self.url, "start ssh -W", e))?;
        let (Some(w), Some(r)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(transport_err(&self.url, "ssh -W", "no pipes"));
        };
        Ok(Stream {
            reader: Box::new(r),
            writer: Box::new(w),
            child: Some(child),
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// Another root on this same host (`local:///ROOT`): for tests, the VM and benchmarks
/// only; nothing crosses a network.
pub struct Local {
    url: String,
    root: PathBuf,
    vessel: PathBuf,
}

impl Remote for Local {
    fn vessel(&self, args: &[String]) -> Result<Child> {
        Command::new(&self.vessel)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env_remove("VESSEL_ROOT")
            .env_remove("VESSEL_RUNROOT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| transport_err(&self.url, "start vessel", e))
    }

    fn connect(&self, port: u16) -> Result<Stream> {
        let s = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| transport_err(&self.url, &format!("connect to 127.0.0.1:{port}"), e))?;
        let r = s.try_clone().map_err(|e| transport_err(&self.url, "clone socket", e))?;
        Ok(Stream {
            reader: Box::new(r),
            writer: Box::new(TcpWriter(s)),
            child: None,
        })
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// The writing half of a TCP stream: dropping it ends the stream's writing side (the
/// reading half, a clone, keeps the socket itself open), as closing ssh's stdin does.
struct TcpWriter(TcpStream);

impl Write for TcpWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for TcpWriter {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ssh_and_local_remotes() {
        assert!(parse("ssh://h", None).is_ok());
        assert!(parse("ssh://u@h:2222/var/lib/v2", None).is_ok());
        assert!(parse("ssh://u@h:port", None).is_err());
        assert!(parse("ssh://", None).is_err());
        assert!(parse("local:///tmp/r", None).is_ok());
        assert!(parse("local://", None).is_err());
        assert!(parse("http://h", None).is_err());
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
