//! eStargz writing (containerd/stargz-snapshotter docs/estargz.md): the format the lazy
//! layers ([`crate::lazy`]) read, and whose TOC types ([`crate::lazy::toc`]) both share.
//!
//! - [`writer`]: one layer tar to one eStargz blob (per-file gzip members, chunks, TOC,
//!   footer, prefetch landmark).
//! - [`convert`]: a local image to an eStargz image (`vessel image convert --estargz`,
//!   `vessel image optimize`).

pub mod convert;
pub mod writer;

pub use convert::{convert, ConvertedLayer};
pub use writer::{write_layer, EstargzLayer, WriteOptions, DEFAULT_CHUNK_SIZE};
