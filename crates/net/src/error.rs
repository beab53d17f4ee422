//! Errors of the network library: what failed, on which network, container or path,
//! and what to do about it.

use std::path::PathBuf;

/// Result of every fallible operation of this crate.
pub type Result<T, E = NetError> = std::result::Result<T, E>;

/// Every error of vessel-net.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// No network definition has this name.
    #[error("unknown network \"{0}\": see `vessel network ls`")]
    UnknownNetwork(String),
    /// `network create` with a name another network has.
    #[error("network \"{0}\" already exists: pick another name or remove it with `vessel network rm {0}`")]
    NetworkExists(String),
    /// A network, container or interface name that the CNI protocol (or a file name) cannot carry.
    #[error("invalid {what} \"{name}\": {reason}")]
    BadName {
        /// "network name", "container id", "interface name".
        what: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A subnet that is not a usable CIDR.
    #[error("invalid subnet \"{subnet}\": {reason}")]
    BadSubnet {
        /// The subnet as given.
        subnet: String,
        /// What is wrong and the expected form.
        reason: String,
    },
    /// A gateway (or requested address) that is not a usable address of the subnet.
    #[error("invalid {what} \"{address}\" for subnet {subnet}: {reason}")]
    BadAddress {
        /// "gateway" or "IP address" or "MAC address".
        what: &'static str,
        /// The address as given.
        address: String,
        /// The network's subnet.
        subnet: String,
        /// What is wrong.
        reason: String,
    },
    /// The subnet overlaps another network's subnet or a route of the host.
    #[error("subnet {subnet} overlaps {other}: choose another one with --subnet")]
    SubnetOverlap {
        /// The subnet asked for.
        subnet: String,
        /// `network "x" (10.89.0.0/24)` or `the host's route 10.0.0.0/8 dev eth0`.
        other: String,
    },
    /// Every default subnet 10.89.N.0/24 is taken.
    #[error("no free subnet left in 10.89.0.0/16: give one with --subnet")]
    NoFreeSubnet,
    /// `network rm` of a network that containers are attached to.
    #[error("network \"{network}\" is in use by container(s) {}: remove them or disconnect them first", .users.join(", "))]
    NetworkInUse {
        /// The network.
        network: String,
        /// Names of the containers attached.
        users: Vec<String>,
    },
    /// `network rm` of the default network.
    #[error("the default network \"{0}\" cannot be removed")]
    DefaultNetwork(String),
    /// A `-p`/`--publish` value that cannot be parsed.
    #[error("invalid port publication \"{spec}\": {reason} (expected [IP:][HOSTPORT:]CONTAINERPORT[/tcp|udp], ranges as 8000-8002:80-82)")]
    BadPublish {
        /// The value as given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A request that the network cannot serve (ports on an internal network, ...).
    #[error("{0}")]
    BadRequest(String),
    /// A CNI plugin binary is missing.
    #[error("CNI plugin {plugin} not found in {path}: apt-get install containernetworking-plugins")]
    PluginNotFound {
        /// The plugin's type (`bridge`).
        plugin: String,
        /// The searched directories, `:`-separated.
        path: String,
    },
    /// A CNI plugin reported an error (CNI spec, "Error": `code`, `msg`, `details`).
    #[error("{0}")]
    Plugin(Box<PluginFailure>),
    /// An ADD failed and undoing the plugins already run failed too.
    #[error("{add}; undoing the attachment also failed: {del}: run `vessel system check`")]
    Rollback {
        /// The ADD error.
        add: Box<NetError>,
        /// The DEL error.
        del: Box<NetError>,
    },
    /// A helper program (a CNI plugin, iptables) could not be started or waited for.
    #[error("run {program}: {source}")]
    Exec {
        /// The program's path.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A helper program failed (iptables during the clean-up of a detached container).
    #[error("{program} {args}: {msg}")]
    Command {
        /// The program.
        program: String,
        /// Its arguments, space-separated.
        args: String,
        /// Its stderr or exit status.
        msg: String,
    },
    /// A file operation, with the path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was done (`read`, `create`, `rename`).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON document that cannot be parsed (a network definition, a cache entry, a plugin result).
    #[error("{what} {path}: {source}: remove or repair the file")]
    Json {
        /// What the document is.
        what: &'static str,
        /// Where it is (the plugin's path for its output).
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A network namespace operation.
    #[error("network namespace {path}: {op}: {source}")]
    Netns {
        /// What was done (`unshare`, `bind mount`, `setns`).
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A netlink request.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// The request (`RTM_GETLINK`, `delete link vessel1`).
        op: String,
        /// The kernel's answer.
        source: std::io::Error,
    },
}

/// What a failed CNI plugin run reported, and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    /// The plugin's type (`bridge`).
    pub plugin: String,
    /// ADD or DEL.
    pub command: &'static str,
    /// The network.
    pub network: String,
    /// The container id.
    pub container: String,
    /// The CNI error code, when the plugin printed one.
    pub code: Option<u64>,
    /// The plugin's message (or its stderr when it printed no error object).
    pub msg: String,
    /// The plugin's details.
    pub details: String,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CNI plugin {} {} of container {} on network \"{}\" failed",
            self.plugin, self.command, self.container, self.network
        )?;
        if let Some(c) = self.code {
            write!(f, " (code {c})")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl NetError {
    /// An I/O error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        NetError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// A namespace error with the operation and path.
    pub(crate) fn netns(op: &'static str, path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Self {
        NetError::Netns {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}

/// Adds a path and operation to io results: `fs::read(p).at("read", p)?`.
pub(crate) trait IoContext<T> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn at(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| NetError::io(op, path, e.into()))
    }
}
