//! `vessel`: the user's command line, in podman/docker conventions. One module per command
//! group (`images`: pull, images, image ..., rmi, login, logout; `containers`: run, create,
//! start, stop, ps, logs, exec, ...; `commit`: commit, diff, push, tag; `cp`); the logic lives in the library crates.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod backup;
mod checkpoint;
mod commit;
mod containers;
mod cp;
mod images;
mod network;
mod snapshots;
mod system;
mod template;

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
    /// Serve the Docker Engine API (v1.41) on a unix socket, for the docker CLI and
    /// other Docker API clients (`DOCKER_HOST=unix://SOCKET`).
    Serve {
        /// The socket [default: RUNROOT/vessel.sock]: mode 0660 with group `vessel`
        /// when that group exists, else 0600 (root only).
        #[arg(long)]
        socket: Option<std::path::PathBuf>,
    },
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
        vessel_engine::rootless::enter_session()?;
    }
    Ok(paths)
}

fn main() {
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
    let with_engine = |f: &dyn Fn(&vessel_engine::Engine) -> anyhow::Result<i32>| -> anyhow::Result<i32> {
        let engine = vessel_engine::Engine::open(paths.clone())?;
        f(&engine)
    };
    use containers as c;
    let result = match cli.command {
        Command::Monitor { id, restore } => vessel_engine::monitor::main(&paths, &id, restore.as_deref()),
        Command::Serve { socket } => serve(paths.clone(), socket),
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
        Command::System(s) => with_engine(&|e| system::system(e, &s)),
        Command::Pull(a) => images::pull(&root, a).map(|()| 0),
        Command::Images(a) => images::list(&root, a).map(|()| 0),
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

/// `vessel serve`: the API server until SIGTERM or SIGINT.
fn serve(paths: vessel_engine::Paths, socket: Option<std::path::PathBuf>) -> anyhow::Result<i32> {
    let socket = socket.unwrap_or_else(|| paths.runroot.join("vessel.sock"));
    // Two workers: the engine's calls run in the blocking pool, the workers only
    // move bytes.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(vessel_api::serve(paths, &socket))?;
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
