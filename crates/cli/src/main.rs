//! `vessel`: the user's command line, in podman/docker conventions. One module per command
//! group (`images`: pull, images, image ..., rmi, login, logout; `containers`: run, create,
//! start, stop, ps, logs, exec, ...; `commit`: commit, diff, push, tag; `cp`); the logic lives in the library crates.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod backup;
mod balance;
mod checkpoint;
mod commit;
mod containers;
mod cp;
mod estargz;
mod images;
mod migrate;
mod migrate_api;
mod network;
mod remote;
mod snapshots;
mod system;
mod template;
mod volume;

/// vessel: OS-level virtualization (containers and images).
#[derive(Parser, Debug)]
#[command(name = "vessel", version, about)]
struct Cli {
    /// Root directory of vessel's state (images, snapshots, containers, records)
    /// [default: /var/lib/vessel].
    #[arg(long, global = true, env = "VESSEL_ROOT")]
    root: Option<PathBuf>,
    /// Directory of run-time state (monitor sockets, runtime state)
    /// [default: /run/vessel, or ROOT/run when --root is given].
    #[arg(long, global = true, env = "VESSEL_RUNROOT")]
    runroot: Option<PathBuf>,
    /// Send the command to this remote host (`vessel remote add`) through its API;
    /// `local`: this host [default: the one `vessel remote switch` chose].
    #[arg(long, global = true, env = "VESSEL_REMOTE")]
    remote: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a command in a new container.
    Run(containers::RunArgs),
    /// Create a container without starting it.
    Create(containers::CreateArgs),
    /// Start containers.
    Start(containers::StartArgs),
    /// Stop containers (their stop signal, then SIGKILL).
    Stop(containers::StopArgs),
    /// Stop and start containers.
    Restart(containers::StopArgs),
    /// Send a signal to containers.
    Kill(containers::KillArgs),
    /// Remove containers.
    Rm(containers::RmArgs),
    /// List containers.
    Ps(containers::PsArgs),
    /// Print a container's output.
    Logs(containers::LogsArgs),
    /// Run a command in a running container.
    Exec(containers::ExecArgs),
    /// Attach this terminal (or stdio) to a running container.
    Attach(containers::AttachArgs),
    /// Show containers' details (JSON).
    Inspect(containers::InspectArgs),
    /// Wait for containers to exit and print their exit codes.
    Wait(containers::WaitArgs),
    /// Show a container's processes.
    Top(containers::TopArgs),
    /// Show containers' resource usage.
    Stats(containers::StatsArgs),
    /// Change containers' limits while they run.
    Update(containers::UpdateArgs),
    /// Freeze containers' processes.
    Pause(containers::Names),
    /// Thaw containers' processes.
    Unpause(containers::Names),
    /// Rename a container.
    Rename(containers::RenameArgs),
    /// List a container's published ports.
    Port(containers::PortArgs),
    /// Manage container networks.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Manage named volumes.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Check and clean vessel's state.
    #[command(subcommand)]
    System(system::SystemCommand),
    /// Pull an image from a registry.
    Pull(images::PullArgs),
    /// List local images.
    Images(images::ListArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Remove images (the name given; by id: the image and all its names).
    Rmi(images::RmiArgs),
    /// Log in to a registry (credentials saved in ROOT/auth.json).
    Login(images::LoginArgs),
    /// Remove saved credentials of a registry.
    Logout(images::LogoutArgs),
    /// Checkpoint a running container with CRIU (its memory and processes).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Restore a checkpointed container.
    Restore(checkpoint::RestoreArgs),
    /// Move a running container to another vessel host (CRIU; a `vessel remote add` name, ssh:// or local://).
    Migrate(migrate::MigrateArgs),
    /// The target's side of `vessel migrate` (internal: started through the transport).
    #[command(name = "migrate-receive", hide = true)]
    MigrateReceive(migrate::ReceiveArgs),
    /// Finishes or undoes a migration whose command died (internal).
    #[command(name = "__migrate-guard", hide = true)]
    MigrateGuard(migrate::GuardArgs),
    /// One stream of a migration over the API (internal: the transport's carrier).
    #[command(name = "__api-stream", hide = true)]
    ApiStream(migrate_api::StreamArgs),
    /// Move containers from the busiest host to the least busy until their container
    /// memory is within a threshold (reads `vessel system load` on each).
    Balance(balance::BalanceArgs),
    /// Serve the Docker Engine API (v1.41) on a unix socket, for the docker CLI and
    /// other Docker API clients (`DOCKER_HOST=unix://SOCKET`).
    Serve {
        /// The socket [default: RUNROOT/vessel.sock]: mode 0660 with group `vessel`
        /// when that group exists, else 0600 (root only).
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
        /// Also serve HTTPS with mutual TLS on ADDR:PORT (remote hosts): only clients
        /// in the trust store (`vessel trust`) or signed by --client-ca get through
        /// the handshake.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The server certificate (PEM) [default: ROOT/serve/server.crt, made on first use].
        #[arg(long, requires = "listen", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The server key (PEM) [default: ROOT/serve/server.key].
        #[arg(long, requires = "listen", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Trust client certificates signed by these CA certificates (PEM) too.
        #[arg(long, requires = "listen")]
        client_ca: Option<PathBuf>,
        /// Also serve `GET /metrics` (Prometheus format, cAdvisor's names) over plain
        /// HTTP on this TCP address, e.g. 127.0.0.1:9323; nothing else is served there.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Manage the clients this host's `vessel serve --listen` trusts (join tokens).
    #[command(subcommand)]
    Trust(remote::TrustCommand),
    /// Manage remote hosts this client talks to (`vessel --remote NAME ...`).
    #[command(subcommand)]
    Remote(remote::RemoteCommand),
    /// The per-container monitor (internal: started by run, create and start).
    #[command(name = "__monitor", hide = true)]
    Monitor {
        id: String,
        /// Restore the container from this dir of CRIU images instead of creating it.
        #[arg(long)]
        restore: Option<std::path::PathBuf>,
    },
    /// Make an image of a container's changes.
    Commit(commit::CommitArgs),
    /// List a container's changed files (A: added, C: changed, D: deleted).
    Diff(commit::DiffArgs),
    /// Push an image to a registry.
    Push(commit::PushArgs),
    /// Copy files between a container and the host.
    Cp(cp::CpArgs),
    /// Give an image more names.
    Tag(commit::TagArgs),
    /// Manage containers' snapshots (their files as they were at a time).
    #[command(subcommand)]
    Snapshot(snapshots::SnapshotCommand),
    /// Back up and restore containers (files, records, snapshots, image).
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// Write a container's root file system as a tar (stdout or -o FILE).
    Export(backup::ExportArgs),
    /// Make a one-layer image from a root file system tar (`-`: stdin).
    Import(backup::ImportArgs),
}

/// Where this instance keeps its state: `--root`/`--runroot`, else root's defaults, or
/// for a user who is not root the rootless ones
/// ([`vessel_engine::rootless::default_paths`]). A user who is not root then enters
/// the rootless session (its own user and mount namespaces), except for the monitor,
/// which its session starts.
fn state_paths(cli: &Cli) -> anyhow::Result<vessel_engine::Paths> {
    // SAFETY: geteuid cannot fail and touches no memory.
    let user = unsafe { libc::geteuid() } != 0;
    // Inside a session already (a re-exec of vessel there, e.g. `exec`'s sealed copy of
    // itself): the same rootless paths, no second session.
    let rootless = (user || vessel_engine::rootless::is_rootless()) && !matches!(cli.command, Command::Monitor { .. });
    if !rootless {
        return Ok(vessel_engine::Paths::new(
            cli.root.clone().unwrap_or_else(|| "/var/lib/vessel".into()),
            cli.runroot.clone().unwrap_or_else(|| match &cli.root {
                Some(r) => r.join("run"),
                None => "/run/vessel".into(),
            }),
        ));
    }
    let mut paths = vessel_engine::rootless::default_paths(cli.root.as_deref())?;
    match (&cli.runroot, &cli.root) {
        (Some(rr), _) => paths.runroot = rr.clone(),
        (None, Some(r)) => paths.runroot = r.join("run"),
        (None, None) => {}
    }
    for dir in [&paths.root, &paths.runroot] {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
        // /tmp/vessel-UID may have been made by someone else first.
        let meta = std::fs::symlink_metadata(dir).map_err(|e| anyhow::anyhow!("stat {}: {e}", dir.display()))?;
        // SAFETY: getuid cannot fail and touches no memory.
        let uid = unsafe { libc::getuid() };
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != uid {
            anyhow::bail!(
                "{} is not a directory of user {uid}: remove it or give another place with --root/--runroot",
                dir.display()
            );
        }
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| anyhow::anyhow!("chmod 0700 {}: {e}", dir.display()))?;
    }
    if user {
        vessel_engine::rootless::enter_session(&paths.runroot)?;
    }
    Ok(paths)
}

fn main() {
    // The lazy-layer server beside this binary, named for the processes we start (the
    // monitor runs from a sealed copy of itself and cannot find its siblings). Set while
    // this process has one thread.
    if std::env::var_os("VESSEL_LAZY_SERVER").is_none() {
        if let Ok(p) = vessel_image::lazy::program() {
            std::env::set_var("VESSEL_LAZY_SERVER", p);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            // docker's code for every error of its own, flag parsing included.
            let _ = e.print();
            std::process::exit(125);
        }
    };
    let paths = match state_paths(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vessel: {e:#}");
            std::process::exit(125);
        }
    };
    let root = paths.root.clone();
    let client = vessel_api::client::config::ClientConfig::new(remote::client_dir(&root, cli.root.is_some()));
    if let Some(code) = remote_call(&client, cli.remote.as_deref(), &cli.command) {
        match code {
            Ok(code) => std::process::exit(code),
            Err(e) => {
                eprintln!("vessel: {e:#}");
                std::process::exit(containers::exit_code(&e));
            }
        }
    }
    let with_engine = |f: &dyn Fn(&vessel_engine::Engine) -> anyhow::Result<i32>| -> anyhow::Result<i32> {
        let engine = vessel_engine::Engine::open(paths.clone())?;
        f(&engine)
    };
    use containers as c;
    let result = match cli.command {
        Command::Monitor { id, restore } => vessel_engine::monitor::main(&paths, &id, restore.as_deref()),
        Command::Serve {
            socket,
            listen,
            tls_cert,
            tls_key,
            client_ca,
            metrics_listen,
        } => serve(
            paths.clone(),
            socket,
            vessel_api::ServeOptions {
                metrics_listen,
                tls: listen.map(|listen| vessel_api::remote_listener::TlsOptions {
                    listen,
                    cert: tls_cert,
                    key: tls_key,
                    client_ca,
                }),
            },
        ),
        Command::Trust(t) => remote::trust(&root, &t),
        Command::Remote(r) => remote::remote(&client, &r),
        Command::Run(a) => with_engine(&|e| c::run(e, &a)),
        Command::Create(a) => with_engine(&|e| c::create(e, &a)),
        Command::Start(a) => with_engine(&|e| c::start(e, &a)),
        Command::Stop(a) => with_engine(&|e| c::stop(e, &a, false)),
        Command::Restart(a) => with_engine(&|e| c::stop(e, &a, true)),
        Command::Kill(a) => with_engine(&|e| c::kill(e, &a)),
        Command::Rm(a) => with_engine(&|e| c::rm(e, &a)),
        Command::Ps(a) => with_engine(&|e| c::ps(e, &a)),
        Command::Logs(a) => with_engine(&|e| c::logs(e, &a)),
        Command::Exec(a) => vessel_runtime::sealed_exe::ensure()
            .map_err(anyhow::Error::from)
            .and_then(|()| with_engine(&|e| c::exec(e, &a))),
        Command::Attach(a) => with_engine(&|e| c::attach_running(e, &a)),
        Command::Inspect(a) => with_engine(&|e| c::inspect(e, &a)),
        Command::Wait(a) => with_engine(&|e| c::wait(e, &a)),
        Command::Top(a) => with_engine(&|e| c::top(e, &a)),
        Command::Stats(a) => with_engine(&|e| c::stats(e, &a)),
        Command::Update(a) => with_engine(&|e| c::update(e, &a)),
        Command::Pause(a) => with_engine(&|e| c::pause(e, &a, true)),
        Command::Unpause(a) => with_engine(&|e| c::pause(e, &a, false)),
        Command::Rename(a) => with_engine(&|e| c::rename(e, &a)),
        Command::Port(a) => with_engine(&|e| c::port(e, &a)),
        Command::Network(n) => with_engine(&|e| network::network(e, &n)),
        Command::Volume(v) => with_engine(&|e| volume::volume(e, &v)),
        Command::System(s) => with_engine(&|e| system::system(e, &s)),
        Command::Pull(a) => images::pull(&root, a).map(|()| 0),
        Command::Images(a) => images::list(&root, a).map(|()| 0),
        Command::Image(images::ImageCommand::Optimize(a)) => with_engine(&|e| estargz::optimize(e, &a)),
        Command::Image(i) => images::image(&root, i).map(|()| 0),
        Command::Rmi(a) => images::rmi(&root, a).map(|()| 0),
        Command::Login(a) => images::login(&root, a).map(|()| 0),
        Command::Logout(a) => images::logout(&root, a).map(|()| 0),
        Command::Commit(a) => with_engine(&|e| commit::commit(e, &a)),
        Command::Diff(a) => with_engine(&|e| commit::diff(e, &a)),
        Command::Push(a) => commit::push(&root, &a),
        Command::Cp(a) => with_engine(&|e| cp::cp(e, &a)),
        Command::Tag(a) => commit::tag(&root, &a),
        Command::Checkpoint(a) => with_engine(&|e| checkpoint::checkpoint(e, &a)),
        Command::Restore(a) => with_engine(&|e| checkpoint::restore(e, &a)),
        Command::Migrate(a) => with_engine(&|e| migrate::migrate(e, &a)),
        Command::MigrateReceive(a) => with_engine(&|e| migrate::receive(e, &a)),
        Command::MigrateGuard(a) => with_engine(&|e| migrate::guard(e, &a)),
        Command::ApiStream(a) => migrate_api::stream(&a),
        Command::Balance(a) => balance::balance(&remote::client_dir(&root, cli.root.is_some()), &a),
        Command::Snapshot(s) => with_engine(&|e| snapshots::snapshot(e, &s)),
        Command::Backup(b) => with_engine(&|e| backup::backup(e, &b)),
        Command::Export(a) => with_engine(&|e| backup::export(e, &a)),
        Command::Import(a) => backup::import(&root, &a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("vessel: {e:#}");
            std::process::exit(containers::exit_code(&e));
        }
    }
}

/// `vessel --remote NAME <command>` (or a default remote chosen with `vessel remote
/// switch`): the command's result from the remote, or None when the command runs here.
fn remote_call(
    client: &vessel_api::client::config::ClientConfig,
    flag: Option<&str>,
    command: &Command,
) -> Option<anyhow::Result<i32>> {
    use remote::RemoteCall as R;
    // The host's own business: never sent anywhere, and no configuration read for it.
    if matches!(
        command,
        Command::Monitor { .. }
            | Command::Serve { .. }
            | Command::Trust(_)
            | Command::Remote(_)
            | Command::MigrateReceive(_)
            | Command::MigrateGuard(_)
            | Command::ApiStream(_)
    ) {
        return None;
    }
    let name = match flag {
        Some("local") => return None,
        Some(n) => n.to_string(),
        None => match client.load() {
            Ok(all) => all.default?,
            Err(e) => return Some(Err(e.into())),
        },
    };
    let call = match command {
        Command::Ps(a) => R::Ps(a),
        Command::Run(a) => R::Run(a),
        Command::Create(a) => R::Create(a),
        Command::Start(a) => R::Start(a),
        Command::Stop(a) => R::Stop(a),
        Command::Restart(a) => R::Restart(a),
        Command::Kill(a) => R::Kill(a),
        Command::Rm(a) => R::Rm(a),
        Command::Logs(a) => R::Logs(a),
        Command::Inspect(a) => R::Inspect(a),
        Command::Wait(a) => R::Wait(a),
        Command::Exec(a) => R::Exec(a),
        Command::Attach(a) => R::Attach(a),
        Command::Top(a) => R::Top(a),
        Command::Stats(a) => R::Stats(a),
        Command::Update(a) => R::Update(a),
        Command::Pause(a) => R::Pause(a, true),
        Command::Unpause(a) => R::Pause(a, false),
        Command::Rename(a) => R::Rename(a),
        Command::Port(a) => R::Port(a),
        Command::Network(n) => R::Network(n),
        Command::Volume(v) => R::Volume(v),
        Command::Snapshot(s) => R::Snapshot(s),
        Command::Checkpoint(a) => R::Checkpoint(a),
        Command::Restore(a) => R::Restore(a),
        Command::Images(a) => R::Images(a.format == images::Format::Json),
        Command::Pull(a) => R::Pull(&a.reference),
        Command::Rmi(a) => R::Rmi(a),
        Command::Tag(a) => R::Tag(a),
        Command::Push(a) => R::Push(a),
        Command::Cp(a) => R::Cp(a),
        Command::Image(images::ImageCommand::Pull(a)) => R::Pull(&a.reference),
        Command::Image(images::ImageCommand::Ls(a)) => R::Images(a.format == images::Format::Json),
        Command::Image(images::ImageCommand::Rm(a)) => R::Rmi(a),
        Command::Image(images::ImageCommand::Tag(a)) => R::Tag(a),
        Command::Image(images::ImageCommand::Push(a)) => R::Push(a),
        Command::System(system::SystemCommand::Load { json }) => R::Load(*json),
        _ => {
            return Some(Err(anyhow::anyhow!(
                "this command runs only on this host, not on remote {name}: give --remote local (or `vessel remote switch local`)"
            )))
        }
    };
    Some(
        client
            .remote(&name)
            .map_err(anyhow::Error::from)
            .and_then(|r| remote::call(&r, call)),
    )
}

/// `vessel serve`: the API server until SIGTERM or SIGINT.
fn serve(
    paths: vessel_engine::Paths,
    socket: Option<std::path::PathBuf>,
    opts: vessel_api::ServeOptions,
) -> anyhow::Result<i32> {
    let socket = socket.unwrap_or_else(|| paths.runroot.join("vessel.sock"));
    // Two workers: the engine's calls run in the blocking pool, the workers only
    // move bytes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(vessel_api::serve_with(paths, &socket, opts))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
