//! vessel-net: container networks through the standard CNI plugins.
//!
//! - [`Networks`]: network definitions under ROOT/networks (subnet, gateway, bridge,
//!   internal), with the default network [`DEFAULT_NETWORK`] made on first use.
//! - [`attach()`] / [`detach`]: CNI ADD and DEL of a network's configuration list
//!   (bridge + host-local, portmap, firewall, tuning) into a container's network
//!   namespace, by executing the plugin binaries as libcni does (CNI spec 1.0.0), with
//!   libcni's cache under ROOT/cni/cache so DEL works after a crash.
//! - [`host`]: what every vessel root of one network namespace shares (host-local's
//!   address reservations per bridge, the registry of roots and their CNI caches), so
//!   that several roots on `vessel0` never hand out one address twice and the
//!   attachments of a deleted root can still be released.
//! - [`netns`]: persistent network namespace files, as `ip netns add`.
//! - [`warm`]: attachments kept, still attached, after their container ended, for the
//!   next container on the network to take without a CNI ADD (and DEL).
//! - [`setup_loopback`], [`resolv_conf`], [`hosts`]: what every container needs.
//! - [`parse_publish`], [`free_port`]: docker's `-p`.
//!
//! Everything the plugins change lives in the network namespace of the calling
//! process (the bridge, iptables rules, sysctls) and in the container's namespace;
//! their state files live under ROOT/cni (the CNI cache, tuning's `tuning/`), where ROOT
//! is the `root` argument (the engine passes the root's directory in [`host`]), and
//! host-local's reservations under [`HostState::ipam_dir`].
//! The plugins come from Debian's containernetworking-plugins (/usr/lib/cni), or the
//! directories of `$VESSEL_CNI_PATH`.
//!
//! A container's network life, from a single-threaded caller (the monitor):
//! 1. [`netns::create`] a namespace file (`/run/vessel/netns/<id>`), then
//!    [`setup_loopback`] in it (that alone is `--network none`);
//! 2. [`attach()`] it to each of its networks (`eth0`, `eth1`, ...), with its published
//!    ports ([`parse_publish`]) on the first;
//! 3. run the container with that path as its OCI `network` namespace, with
//!    [`resolv_conf`] and [`hosts`] written into its root file system;
//! 4. when it ends: [`detach`] from each network, then [`netns::remove`]. After a crash,
//!    [`detach`] without the namespace still releases addresses and ports, and
//!    [`attached`] lists what the cache still holds.
//!
//! Or, through a [`Pool`] of warm attachments: steps 1 and 2 become [`Pool::take`] (then
//! [`publish`] for ports), step 4 [`unpublish`] then [`Pool::give`], and the namespace
//! and its attachment go on to the next container ([`warm`]).

#![warn(missing_docs)]

pub mod attach;
pub mod cni;
pub mod dns;
pub mod error;
pub mod host;
mod iptables;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod pasta;
pub mod ports;
pub mod routes;
pub mod slirp;
mod util;
pub mod warm;

pub use attach::{
    attach, attached, attachment, detach, publish, release_all, setup_loopback, unpublish, AttachRequest, Attachment,
};
pub use cni::{CNI_PATH, CNI_PATH_ENV, CNI_VERSION};
pub use dns::{hosts, resolv_conf};
pub use error::{NetError, PluginFailure, Result};
pub use host::{HostState, RootEntry};
pub use network::{Network, Networks, DEFAULT_NETWORK, DEFAULT_WARM};
pub use ports::{free_port, parse_publish, PortMapping, Protocol};
pub use warm::{Pool, Warm};
