//! Remote hosts: `vessel trust add/add-cert/ls/rm` on a server (its trust store and
//! join tokens), `vessel remote add/ls/rm/switch` on a client (its remotes and its
//! client certificate), and `vessel --remote NAME <command>` for the commands that
//! work through the API: the container, image, network, volume and snapshot verbs
//! ([`verbs`]), the streams of run, start -a, attach and exec ([`interactive`]) and
//! `run`/`create` flags as the API's create body ([`create`]), `cp` as tar streams
//! ([`cp`]). The logic lives in
//! `vessel_api::{tls, client}`; this module parses and prints.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use vessel_api::client::config::{ClientConfig, RemoteEntry};
use vessel_api::client::Remote;
use vessel_api::tls::trust::{JoinToken, TrustStore};

use crate::containers::{self as c, Format};

mod cp;
mod create;
mod interactive;
mod verbs;

/// `vessel trust ...` (on the server).
#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Make a one-time join token for a new client and print it.
    Add(TrustAddArgs),
    /// Trust a client certificate file directly (PEM).
    AddCert {
        /// The certificate.
        file: PathBuf,
        /// The client's name.
        #[arg(long)]
        name: String,
    },
    /// List the trusted clients.
    #[command(alias = "list")]
    Ls {
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Stop trusting a client (name or fingerprint prefix).
    #[command(alias = "remove")]
    Rm {
        /// Name or fingerprint (12+ hex digits).
        client: String,
    },
}

/// `vessel trust add`.
#[derive(Args, Debug)]
pub struct TrustAddArgs {
    /// The client's name in the trust store [default: client-N].
    #[arg(long)]
    name: Option<String>,
    /// How long the token stays valid (`1h`, `30m`, `0s`: already expired).
    #[arg(long, default_value = "1h")]
    expiry: String,
    /// The server certificate `vessel serve --tls-cert` uses [default: ROOT/serve/server.crt,
    /// made now when missing].
    #[arg(long)]
    tls_cert: Option<PathBuf>,
}

/// `vessel remote ...` (on a client).
#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Add a remote: pin its certificate and, with a token, get this client trusted.
    Add {
        /// The remote's name.
        name: String,
        /// https://HOST:PORT.
        url: String,
        /// The join token `vessel trust add` printed on the server.
        #[arg(long)]
        token: Option<String>,
        /// Without a token: pin the certificate the server presents now (check the
        /// fingerprint printed against the server's).
        #[arg(long)]
        accept_certificate: bool,
    },
    /// List the remotes.
    #[command(alias = "list")]
    Ls {
        /// table or json.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Forget a remote.
    #[command(alias = "remove")]
    Rm {
        /// The remote's name.
        name: String,
    },
    /// Make a remote the default for commands (`local`: this host).
    Switch {
        /// The remote's name, or `local`.
        name: String,
    },
}

/// The client configuration directory: `ROOT/client` for root or with `--root`, else
/// `$XDG_CONFIG_HOME/vessel` (`~/.config/vessel`).
pub fn client_dir(root: &Path, root_given: bool) -> PathBuf {
    if root_given || nix::unistd::geteuid().is_root() {
        return root.join("client");
    }
    match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x).join("vessel"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/".into()))
            .join(".config")
            .join("vessel"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `vessel trust ...`.
pub fn trust(root: &Path, cmd: &TrustCommand) -> Result<i32> {
    let store = TrustStore::new(root);
    match cmd {
        TrustCommand::Add(a) => {
            let ttl: Duration = humantime::parse_duration(&a.expiry)
                .with_context(|| format!("--expiry {:?}: give a duration such as 1h or 30m", a.expiry))?;
            let identity = match &a.tls_cert {
                Some(cert) => vessel_api::tls::Identity {
                    cert_pem: std::fs::read_to_string(cert).with_context(|| format!("read {}", cert.display()))?,
                    key_pem: String::new(),
                },
                None => vessel_api::tls::server_identity(root, None, None)?,
            };
            let fp = identity.fingerprint()?;
            let name = match &a.name {
                Some(n) => n.clone(),
                None => {
                    let taken = store.clients()?.len() + store.pending()?.len();
                    format!("client-{taken}")
                }
            };
            let token = store.make_token(&name, ttl, &fp)?;
            eprintln!(
                "Join token for client {name} (expires {}); on the client: vessel remote add NAME https://HOST:PORT --token TOKEN",
                token.expires_at
            );
            println!("{}", token.encode());
        }
        TrustCommand::AddCert { file, name } => {
            let pem = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
            let c = store.add(name, &pem)?;
            println!("{}", c.fingerprint);
        }
        TrustCommand::Ls { format } => {
            let all = store.clients()?;
            if *format == Format::Json {
                let v: Vec<Value> = all
                    .iter()
                    .map(|c| json!({"name": c.name, "fingerprint": c.fingerprint, "added": c.added}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let mut t = table(&["NAME", "FINGERPRINT", "ADDED"]);
                for c in &all {
                    t.add_row([c.name.clone(), c.fingerprint[..12].to_string(), c.added.clone()]);
                }
                println!("{t}");
            }
        }
        TrustCommand::Rm { client } => {
            let c = store.remove(client)?;
            println!("{}", c.name);
        }
    }
    Ok(0)
}

fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header.to_vec());
    t
}

/// `vessel remote ...`.
pub fn remote(cfg: &ClientConfig, cmd: &RemoteCommand) -> Result<i32> {
    match cmd {
        RemoteCommand::Add {
            name,
            url,
            token,
            accept_certificate,
        } => add(cfg, name, url, token.as_deref(), *accept_certificate)?,
        RemoteCommand::Ls { format } => {
            let all = cfg.load()?;
            if *format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                let mut t = table(&["NAME", "URL", "FINGERPRINT", "DEFAULT"]);
                t.add_row(["local", "unix://", "", if all.default.is_none() { "*" } else { "" }]);
                for (n, e) in &all.remotes {
                    let d = if all.default.as_deref() == Some(n) { "*" } else { "" };
                    t.add_row([n.as_str(), e.url.as_str(), &e.fingerprint[..12], d]);
                }
                println!("{t}");
            }
        }
        RemoteCommand::Rm { name } => {
            let mut all = cfg.load()?;
            if all.remotes.remove(name).is_none() {
                bail!("no remote {name}: see `vessel remote ls`");
            }
            if all.default.as_deref() == Some(name) {
                all.default = None;
            }
            cfg.save(&all)?;
        }
        RemoteCommand::Switch { name } => {
            let mut all = cfg.load()?;
            if name == "local" {
                all.default = None;
            } else if all.remotes.contains_key(name) {
                all.default = Some(name.clone());
            } else {
                bail!("no remote {name}: add it with `vessel remote add`");
            }
            cfg.save(&all)?;
        }
    }
    Ok(0)
}

fn add(cfg: &ClientConfig, name: &str, url: &str, token: Option<&str>, accept: bool) -> Result<()> {
    if name == "local" || name.is_empty() || name.contains(['/', ' ']) {
        bail!("remote name {name:?}: `local` is this host; use a name without '/' or spaces");
    }
    let mut all = cfg.load()?;
    if all.remotes.contains_key(name) {
        bail!("remote {name} exists already: remove it first with `vessel remote rm {name}`");
    }
    vessel_api::client::parse_url(url)?;
    let identity = cfg.identity()?;
    let rt = runtime()?;
    let fingerprint = match token {
        Some(t) => {
            let t = JoinToken::decode(t)?;
            // The join: the token's fingerprint pinned, its secret proven in the
            // handshake and presented once with this client's certificate.
            let joining = Remote::joining(url, &t.fingerprint, &identity, &t.secret)?;
            rt.block_on(joining.join(&identity.cert_pem, &t.secret))
                .with_context(|| format!("join {url} with the token"))?;
            t.fingerprint
        }
        None => {
            let fp = rt.block_on(Remote::probe_fingerprint(url))?;
            eprintln!("Certificate fingerprint of {url}: {fp}");
            if !accept {
                bail!("not added: check the fingerprint against `vessel serve`'s on the server, then add with --accept-certificate (or use a --token from `vessel trust add`)");
            }
            fp
        }
    };
    all.remotes.insert(
        name.to_string(),
        RemoteEntry {
            url: url.to_string(),
            fingerprint: fingerprint.clone(),
        },
    );
    cfg.save(&all)?;
    // Tell whether the server trusts us now (with a token it must).
    let r = Remote::new(url, &fingerprint, &identity)?;
    match rt.block_on(r.info()) {
        Ok(v) => eprintln!(
            "Remote {name} added: {} {} ({})",
            v["environment"]["server"].as_str().unwrap_or("vessel"),
            v["environment"]["server_version"].as_str().unwrap_or(""),
            v["environment"]["server_name"].as_str().unwrap_or("")
        ),
        Err(e) => eprintln!(
            "Remote {name} added, but the server does not trust this client yet ({e}); client certificate: {}",
            cfg.dir().join("client.crt").display()
        ),
    }
    Ok(())
}

/// The commands `--remote` can send.
pub enum RemoteCall<'a> {
    /// `ps`.
    Ps(&'a c::PsArgs),
    /// `run`.
    Run(&'a c::RunArgs),
    /// `create`.
    Create(&'a c::CreateArgs),
    /// `start` (`-a`: attached).
    Start(&'a c::StartArgs),
    /// `stop`.
    Stop(&'a c::StopArgs),
    /// `restart`.
    Restart(&'a c::StopArgs),
    /// `kill`.
    Kill(&'a c::KillArgs),
    /// `rm`.
    Rm(&'a c::RmArgs),
    /// `logs`.
    Logs(&'a c::LogsArgs),
    /// `inspect`.
    Inspect(&'a c::InspectArgs),
    /// `wait`.
    Wait(&'a c::WaitArgs),
    /// `exec`.
    Exec(&'a c::ExecArgs),
    /// `attach`.
    Attach(&'a c::AttachArgs),
    /// `top`.
    Top(&'a c::TopArgs),
    /// `stats`.
    Stats(&'a c::StatsArgs),
    /// `update`.
    Update(&'a c::UpdateArgs),
    /// `pause` (true) or `unpause`.
    Pause(&'a c::Names, bool),
    /// `rename`.
    Rename(&'a c::RenameArgs),
    /// `port`.
    Port(&'a c::PortArgs),
    /// `images` (true: `--format json`).
    Images(bool),
    /// `pull`.
    Pull(&'a str),
    /// `rmi`.
    Rmi(&'a crate::images::RmiArgs),
    /// `tag`.
    Tag(&'a crate::commit::TagArgs),
    /// `push`.
    Push(&'a crate::commit::PushArgs),
    /// `network ...`.
    Network(&'a crate::network::NetworkCommand),
    /// `volume ...`.
    Volume(&'a crate::volume::VolumeCommand),
    /// `snapshot ...`.
    Snapshot(&'a crate::snapshots::SnapshotCommand),
    /// `checkpoint`.
    Checkpoint(&'a crate::checkpoint::CheckpointArgs),
    /// `restore`.
    Restore(&'a crate::checkpoint::RestoreArgs),
    /// `cp`.
    Cp(&'a crate::cp::CpArgs),
    /// `system load` (true: `--json`): the `balance` part of `GET /1.0/resources`.
    Load(bool),
}

/// Runs `call` against `remote`; the exit code.
pub fn call(remote: &Remote, call: RemoteCall<'_>) -> Result<i32> {
    let rt = runtime()?;
    let result = rt.block_on(dispatch(remote, call));
    // The stdin reader of an interactive session may still wait for input: it is a
    // thread of its own, not of the runtime, and ends with the process.
    rt.shutdown_background();
    result
}

async fn dispatch(remote: &Remote, call: RemoteCall<'_>) -> Result<i32> {
    match call {
        RemoteCall::Ps(a) => ps(remote, a).await,
        RemoteCall::Run(a) => run(remote, a).await,
        RemoteCall::Create(a) => verbs::create(remote, a).await,
        RemoteCall::Start(a) if a.attach || a.interactive => interactive::start_attached(remote, a).await,
        RemoteCall::Start(a) => verbs::start(remote, a).await,
        RemoteCall::Stop(a) => {
            for n in &a.containers {
                remote.stop(n, Some(a.time.min(u32::MAX as u64) as u32)).await?;
                println!("{n}");
            }
            Ok(0)
        }
        RemoteCall::Restart(a) => verbs::restart(remote, a).await,
        RemoteCall::Kill(a) => verbs::kill(remote, a).await,
        RemoteCall::Rm(a) => {
            for n in &a.containers {
                remote.remove(n, a.force).await?;
                println!("{n}");
            }
            Ok(0)
        }
        RemoteCall::Logs(a) => {
            let tty = remote.inspect(&a.container).await?["Config"]["Tty"]
                .as_bool()
                .unwrap_or(false);
            copy_logs(remote.logs(&a.container, a.follow, a.tail, a.timestamps).await?, tty).await?;
            Ok(0)
        }
        RemoteCall::Inspect(a) => {
            if a.format.as_deref().is_some_and(|f| f != "json") {
                bail!("--format templates are not applied to remotes yet: use --format json");
            }
            let mut all = Vec::new();
            for n in &a.containers {
                all.push(remote.inspect(n).await?);
            }
            println!("{}", serde_json::to_string_pretty(&all)?);
            Ok(0)
        }
        RemoteCall::Wait(a) => {
            for n in &a.containers {
                println!("{}", remote.wait(n).await?);
            }
            Ok(0)
        }
        RemoteCall::Exec(a) => interactive::exec(remote, a).await,
        RemoteCall::Attach(a) => interactive::attach(remote, a).await,
        RemoteCall::Top(a) => verbs::top(remote, a).await,
        RemoteCall::Stats(a) => verbs::stats(remote, a).await,
        RemoteCall::Update(a) => verbs::update(remote, a).await,
        RemoteCall::Pause(a, paused) => verbs::pause(remote, a, paused).await,
        RemoteCall::Rename(a) => verbs::rename(remote, a).await,
        RemoteCall::Port(a) => verbs::port(remote, a).await,
        RemoteCall::Images(json) => images(remote, json).await,
        RemoteCall::Rmi(a) => verbs::rmi(remote, a).await,
        RemoteCall::Tag(a) => verbs::tag(remote, a).await,
        RemoteCall::Push(a) => verbs::push(remote, a).await,
        RemoteCall::Network(n) => verbs::network(remote, n).await,
        RemoteCall::Volume(v) => verbs::volume(remote, v).await,
        RemoteCall::Snapshot(s) => verbs::snapshot(remote, s).await,
        RemoteCall::Checkpoint(a) => verbs::checkpoint(remote, a).await,
        RemoteCall::Restore(a) => verbs::restore(remote, a).await,
        RemoteCall::Cp(a) => cp::cp(remote, a).await,
        RemoteCall::Load(json) => {
            let m = remote.v1(hyper::Method::GET, "/1.0/resources", None).await?;
            let l: vessel_engine::balance::HostLoad = serde_json::from_value(m["balance"].clone())
                .context("/1.0/resources has no load for balancing (an older vessel on the remote?)")?;
            crate::balance::print_load(&l, json)
        }
        RemoteCall::Pull(reference) => {
            let lines = remote.pull(reference).await?;
            if let Some(s) = lines.iter().rev().find_map(|l| l["status"].as_str()) {
                eprintln!("{s}");
            }
            println!("{reference}");
            Ok(0)
        }
    }
}

async fn images(remote: &Remote, json: bool) -> Result<i32> {
    let all = remote.images().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let mut t = table(&["REPOSITORY", "TAG", "IMAGE ID", "SIZE"]);
    for i in &all {
        let id = i["Id"].as_str().unwrap_or_default().trim_start_matches("sha256:");
        let size = i["Size"].as_u64().unwrap_or(0);
        for tag in i["RepoTags"].as_array().into_iter().flatten() {
            let tag = tag.as_str().unwrap_or_default();
            let (repo, t2) = tag.rsplit_once(':').unwrap_or((tag, ""));
            t.add_row([
                repo.to_string(),
                t2.to_string(),
                id.chars().take(12).collect(),
                size.to_string(),
            ]);
        }
    }
    println!("{t}");
    Ok(0)
}

async fn ps(remote: &Remote, a: &c::PsArgs) -> Result<i32> {
    let all = remote.containers(a.all).await?;
    if a.quiet {
        for x in &all {
            println!(
                "{}",
                x["Id"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect::<String>()
            );
        }
        return Ok(0);
    }
    if a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let mut t = table(&["CONTAINER ID", "IMAGE", "COMMAND", "STATUS", "NAMES"]);
    for x in &all {
        let mut cmd = x["Command"].as_str().unwrap_or_default().to_string();
        if cmd.len() > 20 {
            cmd = format!("{}...", cmd.chars().take(17).collect::<String>());
        }
        let names: Vec<&str> = x["Names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.as_str())
            .map(|n| n.trim_start_matches('/'))
            .collect();
        t.add_row([
            x["Id"].as_str().unwrap_or_default().chars().take(12).collect(),
            x["Image"].as_str().unwrap_or_default().to_string(),
            format!("\"{cmd}\""),
            x["Status"].as_str().unwrap_or_default().to_string(),
            names.join(","),
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// `run`: `-d` creates and starts; in the foreground the client attaches (a hijacked
/// stream: stdin with `-i`, a terminal with `-t`) before the start, and the exit
/// code comes back. `--rm` is the remote's `AutoRemove`, so a detached session
/// (ctrl-p ctrl-q) leaves the container to run and be removed there.
async fn run(remote: &Remote, a: &c::RunArgs) -> Result<i32> {
    let body = create::body(&a.create, !a.detach)?;
    let id = remote.create(a.create.name.as_deref(), &body).await?;
    if a.detach {
        if let Err(e) = remote.start(&id).await {
            let _ = remote.remove(&id, true).await;
            return Err(e.into());
        }
        println!("{id}");
        return Ok(0);
    }
    let result = interactive::foreground(remote, &id, a.create.interactive, a.create.tty, true).await;
    if result.is_err() && a.create.rm {
        let _ = remote.remove(&id, true).await;
    }
    result
}

/// Copies a log stream to stdout/stderr: docker's 8-byte frames (stream, 0, 0, 0,
/// length big-endian) without a tty, raw bytes with one.
async fn copy_logs(resp: hyper::Response<hyper::body::Incoming>, tty: bool) -> Result<()> {
    let mut body = resp.into_body();
    let mut demux = interactive::Demux::default();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("read the log stream")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if tty {
            out.write_all(&data)?;
            out.flush()?;
        } else {
            demux.push(&data, &mut out, &mut err)?;
        }
    }
    Ok(())
}
