//! `vessel-oci checkpoint` and `restore`: runc's flags (runc-checkpoint(8),
//! runc-restore(8)) over [`vessel_runtime::checkpoint`].

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use vessel_runtime::checkpoint::{self, CgroupMode, CheckpointOptions, RestoreOptions};
use vessel_runtime::container::Container;
use vessel_runtime::foreground::{self, Signals};
use vessel_runtime::{console, spec};

/// `checkpoint` flags (runc's).
#[derive(Args)]
pub struct CheckpointArgs {
    /// Directory for CRIU's images.
    #[arg(long = "image-path", default_value = "checkpoint")]
    image_path: PathBuf,
    /// Directory for CRIU's log (default: the image path).
    #[arg(long = "work-path")]
    work_path: Option<PathBuf>,
    /// Images of a previous pre-dump to take only the changed pages from.
    #[arg(long = "parent-path")]
    parent_path: Option<PathBuf>,
    /// Keep the container running after the checkpoint.
    #[arg(long = "leave-running")]
    leave_running: bool,
    /// Checkpoint established TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    ext_unix_sk: bool,
    /// The container is a shell job.
    #[arg(long = "shell-job")]
    shell_job: bool,
    /// Leave memory pages to a lazy-pages daemon (userfaultfd).
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
    /// An fd CRIU writes to when lazy pages are ready.
    #[arg(long = "status-fd")]
    status_fd: Option<i32>,
    /// Send pages to a CRIU page server at ADDRESS:PORT.
    #[arg(long = "page-server")]
    page_server: Option<String>,
    /// Checkpoint file locks.
    #[arg(long = "file-locks")]
    file_locks: bool,
    /// Dump only memory, tracking changes, and leave the container running.
    #[arg(long = "pre-dump")]
    pre_dump: bool,
    /// soft, full, strict or ignore.
    #[arg(long = "manage-cgroups-mode", default_value = "soft")]
    manage_cgroups_mode: String,
    /// Dump a namespace empty (e.g. network).
    #[arg(long = "empty-ns")]
    empty_ns: Vec<String>,
    /// Accepted for runc compatibility.
    #[arg(long = "auto-dedup")]
    auto_dedup: bool,
    /// Container id.
    id: String,
}

/// `restore` flags (runc's).
#[derive(Args)]
pub struct RestoreArgs {
    /// Directory of CRIU's images.
    #[arg(long = "image-path", default_value = "checkpoint")]
    image_path: PathBuf,
    /// Directory for CRIU's log (default: the image path).
    #[arg(long = "work-path")]
    work_path: Option<PathBuf>,
    /// Restore established TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    ext_unix_sk: bool,
    /// The container is a shell job.
    #[arg(long = "shell-job")]
    shell_job: bool,
    /// Restore file locks.
    #[arg(long = "file-locks")]
    file_locks: bool,
    /// soft, full, strict or ignore.
    #[arg(long = "manage-cgroups-mode", default_value = "soft")]
    manage_cgroups_mode: String,
    /// Bundle directory (holds config.json).
    #[arg(long, short = 'b', default_value = ".")]
    bundle: PathBuf,
    /// Return once restored instead of waiting for the container.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Write the restored init's pid to this file.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Accepted for runc compatibility.
    #[arg(long = "no-subreaper")]
    no_subreaper: bool,
    /// Accepted for runc compatibility (CRIU sets up the root).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Unix socket for the pty master (containers with a terminal: not supported yet).
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility (namespaces dumped empty are restored empty).
    #[arg(long = "empty-ns")]
    empty_ns: Vec<String>,
    /// Accepted for runc compatibility.
    #[arg(long = "auto-dedup")]
    auto_dedup: bool,
    /// Memory pages come from a lazy-pages daemon.
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
    /// Accepted for runc compatibility (no LSM here).
    #[arg(long = "lsm-profile")]
    lsm_profile: Option<String>,
    /// Accepted for runc compatibility (no LSM here).
    #[arg(long = "lsm-mount-context")]
    lsm_mount_context: Option<String>,
    /// Container id.
    id: String,
}

/// `checkpoint ID`.
pub fn checkpoint(root: &Path, a: &CheckpointArgs) -> Result<()> {
    let c = Container::load(root, &a.id)?;
    let spec = spec::load(&c.state.bundle)?;
    let opts = CheckpointOptions {
        image_path: a.image_path.clone(),
        work_path: a.work_path.clone(),
        leave_running: a.leave_running,
        tcp_established: a.tcp_established,
        ext_unix_sk: a.ext_unix_sk,
        shell_job: a.shell_job,
        file_locks: a.file_locks,
        pre_dump: a.pre_dump,
        parent_path: a.parent_path.clone(),
        page_server: a.page_server.clone(),
        manage_cgroups_mode: a.manage_cgroups_mode.parse::<CgroupMode>()?,
        empty_ns: a.empty_ns.clone(),
        status_fd: a.status_fd,
        lazy_pages: a.lazy_pages,
    };
    c.checkpoint(&spec, &opts)?;
    Ok(())
}

/// `restore ID`: in the foreground it waits for the container and exits with its exit
/// code, as `run` does; `--detach` returns once it runs.
pub fn restore(root: &Path, a: &RestoreArgs) -> Result<i32> {
    let bundle_spec = spec::load(&a.bundle)?;
    let console = a.console_socket.as_deref().map(console::connect).transpose()?;
    let signals = if a.detach { None } else { Some(Signals::block()?) };
    let c = checkpoint::restore(
        root,
        &a.id,
        &a.bundle,
        &bundle_spec,
        RestoreOptions {
            image_path: a.image_path.clone(),
            work_path: a.work_path.clone(),
            tcp_established: a.tcp_established,
            ext_unix_sk: a.ext_unix_sk,
            shell_job: a.shell_job,
            file_locks: a.file_locks,
            manage_cgroups_mode: a.manage_cgroups_mode.parse::<CgroupMode>()?,
            lazy_pages: a.lazy_pages,
            no_pivot: a.no_pivot,
            console,
        },
    )?;
    if let Err(e) = crate::write_pid_file(a.pid_file.as_deref(), c.state.pid) {
        let _ = c.delete(true);
        return Err(e);
    }
    if let Some(signals) = signals {
        let code = foreground::wait(c.state.pid, &signals, None)?;
        Container::load(root, &a.id)?.delete(true)?;
        return Ok(code);
    }
    Ok(0)
}
