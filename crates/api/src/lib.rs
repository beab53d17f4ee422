//! vessel-api: `vessel serve`, a second front end of the engine over HTTP on a unix
//! socket. It speaks the Docker Engine API v1.41 (moby's `api/swagger.yaml` at the
//! v20.10 tag) at `/v1.NN/...` and unversioned, enough for the docker CLI's everyday
//! commands ([`docker`]), and `GET /metrics` for Prometheus ([`metrics`]).
//!
//! The server holds no state of its own beyond its connections: every handler opens
//! the instance's records ([`vessel_engine::Engine`]) as the CLI does, in
//! `tokio::task::spawn_blocking`. It never forks: containers are launched by the
//! single-threaded per-container monitor, which the engine starts with fork+exec
//! (`std::process::Command`); the server reaps the monitors it started
//! ([`reaper`]).

#![recursion_limit = "256"]

pub mod client;
pub mod conn;
pub mod docker;
pub mod error;
pub mod hardening;
pub mod metrics;
pub mod reaper;
pub mod remote_listener;
pub mod server;
pub mod tls;
pub mod v1;

pub use error::ApiError;
pub use server::{serve, serve_with, ServeError, ServeOptions};
