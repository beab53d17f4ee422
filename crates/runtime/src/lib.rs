//! vessel-runtime: the OCI runtime library of vessel.
//!
//! Takes an OCI bundle (config.json + rootfs, runtime-spec v1.2) and turns it into an
//! isolated process, following the lifecycle of the spec's "Runtime and Lifecycle"
//! chapter: `create` prepares the container and leaves its init process blocked on an
//! exec fifo, `start` releases it, `kill`, `state` and `delete` manage it afterwards.
//! One module per kernel concern, as crun and youki lay theirs out; the CLI crates hold
//! no logic beyond parsing and printing.
//!
//! This library is synchronous and never starts threads: every fork happens from a
//! single-threaded process.

pub mod cgroups;
pub mod checkpoint;
pub mod console;
pub mod container;
pub mod error;
pub mod exec;
pub mod features;
pub mod foreground;
pub mod hooks;
pub mod launch;
pub mod namespaces;
pub mod process;
pub mod procfs;
pub mod rootfs;
pub mod rootless;
pub mod sealed_exe;
pub mod seccomp;
pub mod security;
pub mod signal;
pub mod spec;
pub mod state;
pub mod sync;

pub use container::{Container, CreateOptions, ExecOptions};
pub use error::{Error, Result};
pub use state::{State, Status};

/// The runtime-spec version this runtime implements, written into state.json and
/// into the configs that `spec::default_spec` generates.
pub const OCI_VERSION: &str = "1.2.0";
