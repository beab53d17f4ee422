//! vessel-oci: an OCI runtime with runc's command line (runc(8)), so containerd's runc
//! shim, podman and people who know runc can drive it unchanged.

mod checkpoint;
mod events;
mod log;
mod ps;
mod update;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use oci_spec::runtime::{Capability, Process};
use vessel_runtime::container::{Container, CreateOptions, ExecOptions};
use vessel_runtime::foreground::{self, Signals};
use vessel_runtime::state::Status;
use vessel_runtime::{console, sealed_exe, signal, spec};

#[derive(Parser)]
#[command(
    name = "vessel-oci",
    version,
    about = "OCI container runtime of vessel, with runc's command line"
)]
struct Cli {
    /// Directory for the state of containers (tmpfs recommended).
    #[arg(long, global = true, default_value = "/run/vessel-oci")]
    root: PathBuf,
    /// Write log lines to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: log::Format,
    /// More log output.
    #[arg(long, global = true)]
    debug: bool,
    /// Use systemd's cgroup driver (not available here: no systemd runs).
    #[arg(long = "systemd-cgroup", global = true)]
    systemd_cgroup: bool,
    /// Accepted for runc compatibility (rootless is detected).
    #[arg(long = "rootless", id = "global_rootless", num_args = 0..=1, default_missing_value = "auto")]
    rootless: Option<String>,
    /// The criu binary for checkpoint and restore (default: $VESSEL_CRIU, then
    /// /opt/vessel-criu/bin/criu, then criu on PATH).
    #[arg(long, global = true, hide = true)]
    criu: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct CreateArgs {
    /// Bundle directory (holds config.json).
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master (when process.terminal is true).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Write the init's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Move the root instead of pivot_root (for ramdisk roots).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Accepted for runc compatibility.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass N more fds (3 .. 3+N-1) to the container process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Container id.
    id: String,
}

#[derive(Subcommand)]
enum Command {
    /// Write a default config.json into the bundle.
    Spec {
        /// Bundle directory.
        #[arg(long, short = 'b', default_value = ".")]
        bundle: PathBuf,
        /// A config for rootless containers (user namespace mapping your ids).
        #[arg(long)]
        rootless: bool,
    },
    /// Create a container: its init waits for `start`.
    Create(CreateArgs),
    /// Start a created container.
    Start { id: String },
    /// Create and start a container; in the foreground, exit with its exit code.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return once started instead of waiting.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print the state of a container as JSON.
    State { id: String },
    /// Send a signal (default TERM) to a container's init.
    Kill {
        /// Send it to every process of the container.
        #[arg(long, short = 'a')]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container (created or stopped; running with --force).
    Delete {
        #[arg(long, short = 'f')]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        /// table or json.
        #[arg(long, short = 'f', default_value = "table")]
        format: String,
        /// Only ids.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Print the features this runtime supports (JSON).
    Features,
    /// Run a new process in a running container.
    Exec(ExecArgs),
    /// Freeze all processes of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change the resource limits of a running container.
    Update(update::UpdateArgs),
    /// List the processes of a container.
    Ps(ps::PsArgs),
    /// Print a container's stats and OOM events as JSON lines.
    Events(events::EventsArgs),
    /// Checkpoint a running container with CRIU.
    Checkpoint(checkpoint::CheckpointArgs),
    /// Restore a container from a CRIU checkpoint.
    Restore(checkpoint::RestoreArgs),
}

#[derive(Args)]
struct ExecArgs {
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Environment variables (K=V).
    #[arg(long, short = 'e')]
    env: Vec<String>,
    /// Allocate a pty.
    #[arg(long, short = 't')]
    tty: bool,
    /// UID[:GID].
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Additional gids.
    #[arg(long = "additional-gids", short = 'g')]
    additional_gids: Vec<u32>,
    /// process.json to run (instead of COMMAND and these flags).
    #[arg(long, short = 'p')]
    process: Option<PathBuf>,
    /// Return once the process started.
    #[arg(long, short = 'd')]
    detach: bool,
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// Accepted for runc compatibility.
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privs.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Add a capability (CAP_X).
    #[arg(long = "cap", short = 'c')]
    caps: Vec<String>,
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: u32,
    /// Allow exec in a paused container (the process runs once it is resumed).
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Run the process in a sub-cgroup of the container's cgroup: PATH, or
    /// CONTROLLER[,CONTROLLER...]:PATH per cgroup v1 controller (repeatable).
    #[arg(long = "cgroup", value_name = "[CONTROLLER:]PATH")]
    cgroup: Vec<String>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The logger of this invocation, for the runtime library's warnings.
static LOGGER: std::sync::OnceLock<log::Logger> = std::sync::OnceLock::new();

/// The command line with go-runc's single-dash long flags (containerd's shim passes
/// `-no-subreaper` to `restore`, which Go's flag parsers accept) in clap's form.
fn args() -> Vec<std::ffi::OsString> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.iter().any(|a| a == "exec") {
        return args;
    }
    args.into_iter()
        .map(|a| {
            if a == "-no-subreaper" {
                "--no-subreaper".into()
            } else {
                a
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(args());
    let logger = LOGGER.get_or_init(|| log::Logger::new(cli.log.as_deref(), cli.log_format, cli.debug));
    vessel_runtime::error::set_warning_sink(|msg| {
        if let Some(l) = LOGGER.get() {
            l.warning(msg);
        }
    });
    match run(cli) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            logger.error(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `--pid-file` as runc and crun do: the decimal pid without a newline, a
/// relative path taken from the caller's cwd, replaced atomically (a hidden temp file
/// in the same directory, then rename) so a reader never sees a partial pid.
fn write_pid_file(path: Option<&Path>, pid: i32) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let name = path
        .file_name()
        .with_context(|| format!("--pid-file {}: not a file name", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(pid.to_string().as_bytes())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("write pid file {}: {e} (does its directory exist?)", path.display())
    })
}

/// A console for a foreground run: the caller's socket, or our own socket pair
/// whose other end we read the pty master from.
fn console_for(
    socket: Option<&Path>,
    terminal: bool,
    detach: bool,
) -> Result<(Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>)> {
    if !terminal {
        if socket.is_some() {
            bail!("--console-socket is only for a process with terminal: true");
        }
        return Ok((None, None));
    }
    match socket {
        Some(p) => Ok((Some(console::connect(p)?), None)),
        None if detach => bail!("a detached container with terminal: true needs --console-socket"),
        None => {
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )?;
            Ok((Some(b), Some(a)))
        }
    }
}

fn create(root: &Path, a: &CreateArgs, detach: bool) -> Result<(Container, Option<std::os::fd::OwnedFd>)> {
    let bundle_spec = spec::load(&a.bundle)?;
    let terminal = bundle_spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    let (console, ours) = console_for(a.console_socket.as_deref(), terminal, detach)?;
    let c = Container::create(
        root,
        &a.id,
        &a.bundle,
        &bundle_spec,
        CreateOptions {
            console,
            no_pivot: a.no_pivot,
            preserve_fds: a.preserve_fds,
        },
    )?;
    let master = match ours {
        Some(sock) => Some(console::recv_fd(&sock)?),
        None => None,
    };
    // A pid file that cannot be written fails the create and leaves nothing, as with
    // runc and crun.
    if let Err(e) = write_pid_file(a.pid_file.as_deref(), c.state.pid) {
        let _ = c.delete(true);
        return Err(e);
    }
    Ok((c, master))
}

fn run(cli: Cli) -> Result<i32> {
    let root = cli.root.as_path();
    let enters = matches!(cli.command, Command::Create(_) | Command::Run { .. } | Command::Exec(_));
    if let Some(criu) = &cli.criu {
        // runc's global --criu PATH: the runtime library reads VESSEL_CRIU.
        std::env::set_var("VESSEL_CRIU", criu);
    }
    if enters {
        if cli.systemd_cgroup {
            bail!("--systemd-cgroup: no systemd runs on this host; drop the flag to use cgroupfs");
        }
        sealed_exe::ensure()?;
    }
    match &cli.command {
        Command::Spec { bundle, rootless } => {
            let path = bundle.join(spec::CONFIG_FILE);
            if path.exists() {
                bail!("file {} exists: remove it first", path.display());
            }
            let s = spec::default_spec(*rootless);
            let text = serde_json::to_string_pretty(&s)?;
            std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        }
        Command::Create(a) => {
            create(root, a, true)?;
        }
        Command::Start { id } => Container::load(root, id)?.start()?,
        Command::Run {
            create: a,
            detach,
            keep,
        } => {
            let signals = if *detach { None } else { Some(Signals::block()?) };
            let (mut c, master) = create(root, a, *detach)?;
            if let Err(e) = c.start() {
                let _ = c.delete(true);
                return Err(e.into());
            }
            if let Some(signals) = signals {
                let code = foreground::wait(c.state.pid, &signals, master)?;
                if !keep {
                    Container::load(root, &a.id)?.delete(true)?;
                }
                return Ok(code);
            }
        }
        Command::State { id } => {
            let c = Container::load(root, id)?;
            println!("{}", serde_json::to_string_pretty(&c.state.to_json())?);
        }
        Command::Kill { all, id, signal: sig } => {
            let sig = signal::parse(sig)?;
            Container::load(root, id)?.kill(sig, *all)?;
        }
        Command::Delete { force, id } => match Container::load(root, id) {
            Ok(c) => c.delete(*force)?,
            // runc: `delete --force` of a missing container succeeds, so podman's and
            // containerd's clean-up after a failed create is quiet.
            Err(vessel_runtime::Error::NotExist(_)) if *force => {}
            Err(e) => return Err(e.into()),
        },
        Command::List { format, quiet } => list(root, format, *quiet)?,
        Command::Features => println!(
            "{}",
            serde_json::to_string_pretty(&vessel_runtime::features::features())?
        ),
        Command::Exec(a) => return exec(root, a),
        Command::Pause { id } => Container::load(root, id)?.set_paused(true)?,
        Command::Resume { id } => Container::load(root, id)?.set_paused(false)?,
        Command::Update(a) => update::run(root, a)?,
        Command::Ps(a) => ps::run(root, a)?,
        Command::Events(a) => events::run(root, a)?,
        Command::Checkpoint(a) => checkpoint::checkpoint(root, a)?,
        Command::Restore(a) => return checkpoint::restore(root, a),
    }
    Ok(0)
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<()> {
    let all = Container::list(root)?;
    if quiet {
        for c in &all {
            println!("{}", c.state.id);
        }
        return Ok(());
    }
    match format {
        "json" => {
            let v: Vec<_> = all.iter().map(|c| c.state.to_json()).collect();
            println!("{}", serde_json::to_string(&v)?);
        }
        "table" => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<20} {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            )?;
            for c in &all {
                let s = &c.state;
                writeln!(
                    out,
                    "{:<20} {:<8} {:<10} {:<40} {:<31} {}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created,
                    s.owner
                )?;
            }
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(())
}

/// The process `exec` runs: `--process FILE`, or config.json's process with the
/// command line's args and overrides (runc's exec flags).
fn exec_process(bundle_spec: &oci_spec::runtime::Spec, a: &ExecArgs) -> Result<Process> {
    if let Some(p) = &a.process {
        return Ok(spec::load_process(p)?);
    }
    if a.command.is_empty() {
        bail!("exec needs a command, or --process FILE");
    }
    let mut p = bundle_spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    p.set_console_size(None);
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    let mut env = p.env().clone().unwrap_or_default();
    for kv in &a.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p.set_env(Some(env));
    if let Some(u) = &a.user {
        let (uid, gid) = u.split_once(':').unwrap_or((u, ""));
        p.user_mut().set_uid(
            uid.parse()
                .with_context(|| format!("--user {u:?}: uid must be a number"))?,
        );
        if !gid.is_empty() {
            p.user_mut().set_gid(
                gid.parse()
                    .with_context(|| format!("--user {u:?}: gid must be a number"))?,
            );
        }
    }
    if !a.additional_gids.is_empty() {
        p.user_mut().set_additional_gids(Some(a.additional_gids.clone()));
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if !a.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in &a.caps {
            let short = name.to_ascii_uppercase();
            let short = short.strip_prefix("CAP_").unwrap_or(&short);
            let cap: Capability = short
                .parse()
                .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))?;
            let add = |set: &Option<oci_spec::runtime::Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            caps.set_bounding(add(caps.bounding()));
            caps.set_effective(add(caps.effective()));
            caps.set_permitted(add(caps.permitted()));
        }
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

fn exec(root: &Path, a: &ExecArgs) -> Result<i32> {
    let c = Container::load(root, &a.id)?;
    if c.state.status == Status::Stopped {
        bail!("cannot exec in a stopped container \"{}\": container not running", a.id);
    }
    let bundle_spec = spec::load(&c.state.bundle)?;
    let process = exec_process(&bundle_spec, a)?;
    let terminal = process.terminal() == Some(true);
    let (console, ours) = console_for(a.console_socket.as_deref(), terminal, a.detach)?;
    let signals = if a.detach { None } else { Some(Signals::block()?) };
    let pid = vessel_runtime::exec::exec(
        &c.state,
        ExecOptions {
            process,
            console,
            preserve_fds: a.preserve_fds,
            spec: bundle_spec,
            seccomp_cache: Some(vessel_runtime::seccomp::cache_dir(root)),
            sub_cgroups: a.cgroup.clone(),
            ignore_paused: a.ignore_paused,
        },
    )?;
    let master = match ours {
        Some(sock) => Some(console::recv_fd(&sock)?),
        None => None,
    };
    write_pid_file(a.pid_file.as_deref(), pid)?;
    match signals {
        Some(s) => Ok(foreground::wait(pid, &s, master)?),
        None => Ok(0),
    }
}
