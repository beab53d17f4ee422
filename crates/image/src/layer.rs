//! Ingesting one layer: the blob stream is hashed and written to the content store while it is
//! decompressed (gzip, zstd or none), hashed again (diff id) and unpacked into a pending
//! snapshot; blob and snapshot are published only when every check passed.

use std::io::{self, BufReader, Read};

use crate::digest::{Digest, HashingReader};
use crate::error::{ImageError, Result};
use crate::store::{BlobWriter, Store};
use crate::unpack::{unpack_tar, UnpackOptions, UnpackStats};

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (possibly several members).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From a layer media type (OCI `...tar`, `+gzip`, `+zstd`; Docker `...tar.gzip`).
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+gzip") || mt.ends_with(".gzip") || mt.ends_with("tar.gz") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("rootfs.diff.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// "gzip", "zstd", "uncompressed".
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// What to check a layer against.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// Blob digest (manifest).
    pub digest: Digest,
    /// Blob size, bytes (manifest).
    pub size: u64,
    /// Compression (from the media type).
    pub compression: Compression,
    /// Expected sha256 of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// Snapshot id to publish under.
    pub chain_id: Digest,
    /// The parent snapshot.
    pub parent: Option<Digest>,
}

enum Decoder<R: Read> {
    Plain(R),
    Gzip(flate2::read::MultiGzDecoder<R>),
    Zstd(Box<zstd::stream::read::Decoder<'static, BufReader<R>>>),
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: Read> Decoder<R> {
    fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish().into_inner(),
        }
    }
}

/// A reader of the uncompressed tar inside a layer blob read from `src`.
pub(crate) fn decompress<'a, R: Read + 'a>(src: R, compression: Compression) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(src),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(src)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(src)?),
    })
}

/// Reads `src` (the blob's bytes), optionally storing them as the blob, and unpacks the layer
/// into snapshot `spec.chain_id`. Nothing is published unless size, digest and diff id match.
///
/// # Errors
/// [`ImageError::SizeMismatch`], [`ImageError::DigestMismatch`], [`ImageError::DiffIdMismatch`],
/// [`ImageError::LayerStream`], [`ImageError::UnsafeEntry`], [`ImageError::Io`].
pub fn ingest_layer<R: Read>(
    store: &Store,
    src: R,
    spec: &LayerSpec,
    write_blob: bool,
    opts: &UnpackOptions,
) -> Result<UnpackStats> {
    let snaps = store.snapshots();
    let pending = snaps.begin()?;
    let writer: Option<BlobWriter> = if write_blob { Some(store.blob_writer()?) } else { None };
    let outer = HashingReader::new(src.take(spec.size.saturating_add(1)), writer);
    let layer = spec.digest.to_string();
    let decoder = match spec.compression {
        Compression::None => Decoder::Plain(outer),
        Compression::Gzip => Decoder::Gzip(flate2::read::MultiGzDecoder::new(outer)),
        Compression::Zstd => Decoder::Zstd(Box::new(zstd::stream::read::Decoder::new(outer).map_err(|source| {
            ImageError::LayerStream {
                layer: layer.clone(),
                compression: "zstd",
                source,
            }
        })?)),
    };
    let inner = HashingReader::<_, io::Sink>::new(decoder, None);
    let mut archive_src = Some(inner);
    // unpack_tar consumes the reader; get it back through a small adapter.
    struct Shared<'a, T>(&'a mut Option<T>);
    impl<T: Read> Read for Shared<'_, T> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.as_mut() {
                Some(r) => r.read(buf),
                None => Ok(0),
            }
        }
    }
    let unpacked = unpack_tar(
        Shared(&mut archive_src),
        &pending.fs_dir(),
        opts,
        &layer,
        spec.compression.name(),
    );
    let Some(mut inner) = archive_src.take() else {
        return Err(ImageError::io(
            "unpack",
            pending.fs_dir(),
            io::Error::other("layer reader lost"),
        ));
    };
    let stream_result = unpacked.and_then(|stats| {
        inner.drain().map_err(|source| ImageError::LayerStream {
            layer: layer.clone(),
            compression: spec.compression.name(),
            source,
        })?;
        Ok(stats)
    });
    let (diff_id, tar_size, decoder, _) = inner.finish();
    let mut outer = decoder.into_inner();
    // Whatever went wrong, a blob that is not what was promised is the clearest report.
    let drained = outer.drain();
    let (digest, size, _, writer) = outer.finish();
    if drained.is_ok() {
        if size != spec.size {
            return Err(ImageError::SizeMismatch {
                what: "layer blob".into(),
                digest: spec.digest.clone(),
                expected: spec.size,
                actual: size,
            });
        }
        if digest != spec.digest {
            return Err(ImageError::DigestMismatch {
                what: "layer blob".into(),
                expected: spec.digest.clone(),
                actual: digest,
            });
        }
    }
    let stats = stream_result?;
    drained.map_err(|source| ImageError::LayerStream {
        layer: layer.clone(),
        compression: spec.compression.name(),
        source,
    })?;
    if diff_id != spec.diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: spec.digest.clone(),
            expected: spec.diff_id.clone(),
            actual: diff_id,
        });
    }
    if let Some(w) = writer {
        w.commit("layer blob", &spec.digest, Some(spec.size))?;
    }
    pending.set_size(tar_size)?;
    snaps.commit_pending(pending, &spec.chain_id, spec.parent.as_ref())?;
    Ok(stats)
}
