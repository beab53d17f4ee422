//! vessel-engine: what a user manages. Container records (SQLite), the lifecycle
//! (run, create, start, stop, rm, ...), the per-container monitor that stays as the
//! container's parent, image-to-bundle (config.json from the image config and the
//! user's flags), and the built-in `host` image.
//!
//! Data flows one way: the CLI parses into [`options::RunOptions`], the engine
//! prepares a root file system ([`rootfs`]) and a config.json ([`config`]), and the
//! monitor hands both to vessel-runtime.

pub mod backup;
pub mod balance;
pub mod checkpoint;
pub mod commit;
pub mod config;
pub mod containers;
pub mod cp;
pub mod criu_cache;
pub mod db;
pub mod error;
pub mod events;
pub mod exec;
pub mod export;
pub mod health;
pub mod idmap;
pub mod images;
pub mod limits;
pub mod logs;
pub mod migrate;
pub mod monitor;
pub mod names;
pub mod network;
pub mod network_more;
pub mod networks;
pub mod optimize;
pub mod options;
pub mod paths;
pub mod quota;
pub mod rootfs;
pub mod rootless;
pub mod seccomp_profile;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod system;
pub mod timing;
pub mod units;
pub mod usage;
pub mod users;
pub mod volumes;
pub mod wire;

pub use containers::Engine;
pub use error::{Error, Result};
pub use options::RunOptions;
pub use paths::Paths;
