//! The migration transport over the authenticated remote API: a remote added with
//! `vessel remote add NAME https://...` (mutual TLS, the server's certificate pinned)
//! as an implementation of the engine's [`remote::Remote`]. Like ssh, each stream is
//! carried by a process of its own: `vessel __api-stream` (hidden), which opens one
//! upgraded connection to the remote's `/1.0/migrations/...` endpoints and joins it to
//! its stdin and stdout. `migrate-receive --token T` becomes `POST
//! /1.0/migrations/T/receive`, the page stream to port P `POST
//! /1.0/migrations/T/pages/P` (the server tunnels only to the page server of that
//! receive), `migrate-receive --status T` `GET /1.0/migrations/T`, and `system load
//! --json` the `balance` part of `GET /1.0/resources`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hyper::Method;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vessel_api::client::config::ClientConfig;
use vessel_engine::migrate::remote::{self, Remote, Stream};
use vessel_engine::{Error, Result as EngineResult};

/// The transport named by `target`: `ssh://...` and `local:///...` as the engine
/// parses them, anything else a remote added with `vessel remote add` (its
/// configuration in `client_dir`).
///
/// Errors: the engine's [`Error::BadInput`] for a bad URL; a remote name that was
/// never added.
pub fn transport(client_dir: &std::path::Path, target: &str, vessel: Option<&str>) -> Result<Box<dyn Remote>> {
    if target.contains("://") {
        return Ok(remote::parse(target, vessel)?);
    }
    // Fails early with the client library's message for a name never added.
    ClientConfig::new(client_dir.to_path_buf())
        .remote(target)
        .with_context(|| {
            format!("target {target}: neither ssh://..., local:///... nor a remote added with `vessel remote add`")
        })?;
    Ok(Box::new(ApiRemote {
        name: target.to_string(),
        client_dir: client_dir.to_path_buf(),
        token: Mutex::new(None),
    }))
}

/// A target reached through its `vessel serve --listen` (mutual TLS).
pub struct ApiRemote {
    name: String,
    client_dir: PathBuf,
    /// The token of the receive started last: the page tunnel names it.
    token: Mutex<Option<String>>,
}

impl ApiRemote {
    fn carrier(&self, what: &[&str]) -> EngineResult<Child> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::Migrate(format!("remote {}: find this vessel binary: {e}", self.name)))?;
        Command::new(exe)
            .args(["--remote", "local", "__api-stream", "--client-dir"])
            .arg(&self.client_dir)
            .arg(&self.name)
            .args(what)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Migrate(format!("remote {}: start vessel __api-stream: {e}", self.name)))
    }
}

impl Remote for ApiRemote {
    fn vessel(&self, args: &[String]) -> EngineResult<Child> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["migrate-receive", "--token", t] => {
                if let Ok(mut g) = self.token.lock() {
                    *g = Some(t.to_string());
                }
                self.carrier(&["receive", t])
            }
            ["migrate-receive", "--status", t] => self.carrier(&["status", t]),
            ["system", "load", "--json"] => self.carrier(&["load"]),
            _ => Err(Error::Migrate(format!(
                "remote {}: `vessel {}` cannot run through the API (only the receiving side of a migration and the load): start it on that host",
                self.name,
                a.join(" ")
            ))),
        }
    }

    fn connect(&self, port: u16) -> EngineResult<Stream> {
        let token = self.token.lock().ok().and_then(|g| g.clone()).ok_or_else(|| {
            Error::Migrate(format!(
                "remote {}: a page stream needs a receive started first",
                self.name
            ))
        })?;
        let mut child = self.carrier(&["pages", &token, &port.to_string()])?;
        let (Some(w), Some(r)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Migrate(format!(
                "remote {}: vessel __api-stream has no pipes",
                self.name
            )));
        };
        Ok(Stream {
            reader: Box::new(r),
            writer: Box::new(w),
            child: Some(child),
        })
    }

    fn describe(&self) -> String {
        format!("remote {}", self.name)
    }
}

/// `vessel __api-stream` flags (internal).
#[derive(Args, Debug)]
pub struct StreamArgs {
    /// The client configuration directory (remotes, this user's certificate).
    #[arg(long = "client-dir")]
    client_dir: PathBuf,
    /// The remote's name (`vessel remote add`).
    name: String,
    #[command(subcommand)]
    what: StreamWhat,
}

/// What `vessel __api-stream` carries.
#[derive(Subcommand, Debug)]
pub enum StreamWhat {
    /// The receive of migration TOKEN, on stdin and stdout.
    Receive {
        /// The migration's token.
        token: String,
    },
    /// The page stream to the receive's page server PORT, on stdin and stdout.
    Pages {
        /// The migration's token.
        token: String,
        /// The page server's port on the remote's loopback.
        port: u16,
    },
    /// Prints the outcome of the receive TOKEN (`running NAME` or `absent`).
    Status {
        /// The migration's token.
        token: String,
    },
    /// Prints the remote's load as `vessel system load --json` does.
    Load,
}

/// Copies stdin to the upgraded stream and the stream to stdout (flushed as it comes:
/// the receive protocol is line by line) until the stream ends.
async fn pipe(up: hyper::upgrade::Upgraded) -> Result<()> {
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(up));
    let feed = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if wr.write_all(&buf[..n]).await.is_err() || wr.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).await.is_err() || out.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    feed.abort();
    Ok(())
}

/// `vessel __api-stream`: one stream or call of a migration over the API.
pub fn stream(a: &StreamArgs) -> Result<i32> {
    let r = ClientConfig::new(a.client_dir.clone()).remote(&a.name)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let res = rt.block_on(async {
        match &a.what {
            StreamWhat::Receive { token } => {
                let up = r
                    .upgrade(Method::POST, &format!("/1.0/migrations/{token}/receive"))
                    .await?;
                pipe(up).await
            }
            StreamWhat::Pages { token, port } => {
                let up = r
                    .upgrade(Method::POST, &format!("/1.0/migrations/{token}/pages/{port}"))
                    .await?;
                pipe(up).await
            }
            StreamWhat::Status { token } => {
                let m = r.v1(Method::GET, &format!("/1.0/migrations/{token}"), None).await?;
                match m["status"].as_str() {
                    Some(s) => println!("{s}"),
                    None => bail!("remote {}: no status in the answer for migration {token}", a.name),
                }
                Ok(())
            }
            StreamWhat::Load => {
                let m = r.v1(Method::GET, "/1.0/resources", None).await?;
                if m["balance"].is_null() {
                    bail!(
                        "remote {}: /1.0/resources has no load for balancing (an older vessel?)",
                        a.name
                    );
                }
                println!("{}", m["balance"]);
                Ok(())
            }
        }
    });
    // A read of stdin may still block in tokio's blocking pool: do not wait for it.
    rt.shutdown_background();
    res.map(|()| 0)
}
