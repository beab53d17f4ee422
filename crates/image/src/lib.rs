//! vessel-image: OCI images for vessel.
//!
//! - [`reference`]: `registry[:port]/repo[:tag][@digest]` with Docker's normalisation.
//! - [`store`]: the content store (`ROOT/content/blobs/sha256/<hex>`), verified on write,
//!   published by rename; image records in `ROOT/images.json`.
//! - [`pull`]: the registry client (OCI distribution spec, auth, multi-arch indexes);
//!   `registry_error` tells its failures in people's words.
//! - [`push`]: pushing a local image to a registry (blobs the registry has are skipped).
//! - [`layout`]: OCI layout and archive import/export, docker-archive import.
//! - [`unpack`] and [`layer`]: safe layer unpacking with overlay whiteouts.
//! - [`snapshot`]: copy-on-write snapshots by chain id, overlay mounts for containers.
//! - [`commit`]: new images from a base image and a container's changes.
//! - [`diff`]: layers from a container's writable upper dir, and its changes (`vessel diff`).
//! - [`records`]: look-up, removal and garbage collection.
//! - [`partials`]: what unfinished pulls, imports and prunes left, found and removed.
//! - [`lazy`]: lazy (eStargz) layers served through FUSE while they arrive.
//! - [`estargz`]: writing eStargz layers and images (`vessel image convert --estargz`, `optimize`).
//! - [`import`]: one-layer images from a flat file-system tar (docker's `import`).

#![warn(missing_docs)]

pub mod auth;
pub mod commit;
pub mod diff;
pub mod digest;
pub mod error;
pub mod estargz;
pub mod import;
pub mod layer;
pub mod layout;
pub mod lazy;
pub mod manifest;
pub mod partials;
pub mod pull;
pub mod push;
pub mod records;
pub mod reference;
pub mod registries;
mod registry_error;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use error::{ImageError, Result};
pub use manifest::Platform;
pub use records::{ImageRecord, LayerRecord};
pub use reference::Reference;
pub use snapshot::{ActiveSnapshot, Snapshotter};
pub use store::Store;
