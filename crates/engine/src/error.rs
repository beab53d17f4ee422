//! Errors of the engine: what failed, on which container, image or path, and what to do.
//! Exit codes follow docker's conventions ([`Error::exit_code`]).

use std::path::PathBuf;

/// Result of every fallible engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error of the engine library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container has this name, id or id prefix.
    #[error("no container with name or id \"{0}\": see `vessel ps -a`")]
    NoSuchContainer(String),
    /// An id prefix that matches more than one container.
    #[error("id prefix \"{0}\" matches several containers: give more of the id")]
    Ambiguous(String),
    /// `--name` (or `rename`) with a name another container has.
    #[error("the container name \"{0}\" is already in use: remove that container or pick another name")]
    NameInUse(String),
    /// A flag value or option that cannot be used (`--memory 12q`, a relative volume path).
    #[error("{0}")]
    BadInput(String),
    /// An operation the container's state does not allow (`start` of a running container).
    #[error("{0}")]
    WrongState(String),
    /// The container's command was not found in the image (exit code 127, as docker).
    #[error("{0}")]
    CommandNotFound(String),
    /// The container's command could not be executed (exit code 126, as docker).
    #[error("{0}")]
    CommandNotExecutable(String),
    /// From the image store: unknown image, registry errors, snapshot errors.
    #[error(transparent)]
    Image(#[from] vessel_image::ImageError),
    /// From the runtime library.
    #[error(transparent)]
    Runtime(#[from] vessel_runtime::Error),
    /// From container networking: unknown network, CNI plugin failures, netns errors.
    #[error(transparent)]
    Network(#[from] vessel_net::NetError),
    /// The records database.
    #[error("records database {path}: {source}: run `vessel system check`")]
    Db { path: PathBuf, source: rusqlite::Error },
    /// A file operation, with the path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `rmi` of an image that containers use (without force).
    #[error("{}", in_use(image, containers))]
    ImageInUse {
        /// The image as named.
        image: String,
        /// `NAME (ID12)` of each container using it.
        containers: Vec<String>,
    },
    /// The per-container monitor failed or could not be reached.
    #[error("monitor of container {id}: {msg}")]
    Monitor { id: String, msg: String },
    /// No snapshot of this name (`vessel snapshot show|rm|restore`).
    #[error("container {container} has no snapshot \"{name}\": see `vessel snapshot ls {container}`")]
    NoSuchSnapshot { container: String, name: String },
    /// The file system ran out of space while a snapshot was made or restored; what was
    /// made is removed, what existed is untouched.
    #[error("no space left on the file system of {path} while {what}: nothing was changed; free space there (e.g. `vessel snapshot rm` of old snapshots) and retry")]
    NoSpace { what: String, path: PathBuf },
    /// A migration step that failed (`vessel migrate`), with what was done about it.
    #[error("migrate: {0}")]
    Migrate(String),
    /// A backup archive that cannot be written or is not whole (`vessel backup`).
    #[error("backup {file}: {reason}")]
    Backup { file: String, reason: String },
    /// Something vessel does not do (the Docker API answers 501): the message says what
    /// to do instead.
    #[error("{0}")]
    Unsupported(String),
    /// No named volume of this name (`vessel volume inspect|rm`).
    #[error("no such volume: {0}: see `vessel volume ls`")]
    NoSuchVolume(String),
    /// `volume create` of a name another volume has (with other options).
    #[error("volume \"{0}\" already exists: pick another name or remove it with `vessel volume rm {0}`")]
    VolumeExists(String),
    /// `volume rm` of a volume that containers use (without force).
    #[error("volume {volume} is in use by container(s) {}: remove them first (`vessel rm`)", .containers.join(", "))]
    VolumeInUse {
        /// The volume.
        volume: String,
        /// `NAME (ID12)` of each container that names it.
        containers: Vec<String>,
    },
    /// No host id range can be given to a container (`--userns=auto`): the subordinate id
    /// file `path` has no (or no free) entry for the `vessel` user.
    #[error("user namespace ids from {path}: {reason}")]
    IdRange { path: PathBuf, reason: String },
    /// The id range picked for a new container was taken by another one meanwhile (the
    /// records' `idmaps` table refused it); picking again finds another.
    #[error("host id range at uid {0} is taken by another container: retry")]
    RangeTaken(u32),

    /// `-v SRC:DST:idmap` on a file system that cannot be idmapped (mount_setattr(2) EINVAL).
    #[error("idmapped volume {}: its file system ({fs}) does not support idmapped mounts: drop the :idmap option, or use a volume on ext4, xfs, btrfs or tmpfs", path.display())]
    IdmapUnsupported { path: PathBuf, fs: String },
}

fn in_use(image: &str, containers: &[String]) -> String {
    let many = containers.len() > 1;
    format!(
        "image {image} is in use by container{} {}: remove {} first (`vessel rm`), or force with `vessel rmi -f`",
        if many { "s" } else { "" },
        containers.join(", "),
        if many { "them" } else { "it" }
    )
}

impl Error {
    /// An I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// docker's exit codes for a failed `run`/`create`/`start`: 127 when the command is
    /// not found, 126 when it cannot be executed, 125 for every other error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CommandNotFound(_) => 127,
            Error::CommandNotExecutable(_) => 126,
            _ => 125,
        }
    }
}

/// The exit code docker gives a failed set-up whose report reads `text`: 127 when the
/// container's command was not found, 126 when it could not be executed, None for
/// every other failure (a volume target that cannot be made, a cgroup error: 125).
/// Only the runtime's messages about the program itself count: `exec: "CMD": ...`
/// from the PATH lookup and `exec "PATH": ...` from execve(2).
pub fn command_exit_code(text: &str) -> Option<i32> {
    let program = text.contains("exec: \"") || text.contains("exec \"");
    if !program {
        None
    } else if text.contains("executable file not found") || text.contains("No such file or directory") {
        Some(127)
    } else if text.contains("Permission denied") {
        Some(126)
    } else {
        None
    }
}

/// Turns a runtime error into docker's 127 (command not found) and 126 (not
/// executable) errors where the init or exec process reported a failed lookup of its
/// program ([`command_exit_code`]); every other error stays a runtime error (125).
pub fn classify(e: vessel_runtime::Error) -> Error {
    let text = e.to_string();
    match command_exit_code(&text) {
        Some(127) => Error::CommandNotFound(text),
        Some(126) => Error::CommandNotExecutable(text),
        _ => Error::Runtime(e),
    }
}

/// Adds a path and operation to io results: `fs::read(p).at("read", p)?`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e.into()))
    }
}
