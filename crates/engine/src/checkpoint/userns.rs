//! A checkpoint of a container in its own user namespace, moved to another id range:
//! CRIU restores the user namespace with the maps it dumped (`userns-ID.img`, a
//! `userns_entry` of criu's images/userns.proto), so an import or migration whose new
//! container got another range of host ids rewrites them to that range. Everything
//! else in the images holds ids as the container sees them, which do not change.

use std::fs;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::options::{IdMap, IdMappings};

/// Appends `v` as a protobuf varint.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The protobuf encoding of a `userns_entry` holding `ids`: field 1 (uid_map) and 2
/// (gid_map), each a `uid_gid_extent` of first (1), lower_first (2) and count (3).
fn encode(ids: &IdMappings) -> Vec<u8> {
    let mut out = Vec::new();
    for (field, maps) in [(1u64, &ids.uid), (2u64, &ids.gid)] {
        for m in maps.iter() {
            let m: &IdMap = m;
            let mut e = Vec::new();
            for (f, v) in [(1u64, m.container), (2, m.host), (3, m.size)] {
                varint(&mut e, f << 3);
                varint(&mut e, u64::from(v));
            }
            varint(&mut out, field << 3 | 2);
            varint(&mut out, e.len() as u64);
            out.extend(e);
        }
    }
    out
}

/// Rewrites every `userns-*.img` in the image dir `images` to hold the maps `ids`
/// (written to a temp file, then renamed). Images without a user namespace are left
/// alone.
///
/// Errors: [`Error::BadInput`] for a user namespace image that is not one CRIU writes
/// (two magic words, one length-prefixed entry); [`Error::Io`] when it cannot be
/// read or written.
pub fn remap(images: &Path, ids: &IdMappings) -> Result<()> {
    for e in fs::read_dir(images).at("read", images)? {
        let e = e.at("read", images)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("userns-") && name.ends_with(".img")) {
            continue;
        }
        let path = e.path();
        let data = fs::read(&path).at("read", &path)?;
        // Two magic words, then (u32 length, entry): one entry per user namespace image.
        let len = data
            .get(8..12)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        if len.is_none_or(|l| data.len() != 12 + l) {
            return Err(Error::BadInput(format!(
                "{}: not a CRIU user namespace image with one entry; the checkpoint cannot be moved to another id range",
                path.display()
            )));
        }
        let entry = encode(ids);
        let mut out = data[..8].to_vec();
        out.extend((entry.len() as u32).to_le_bytes());
        out.extend(entry);
        let tmp = path.with_extension("img.tmp");
        fs::write(&tmp, out).at("write", &tmp)?;
        fs::rename(&tmp, &path).at("rename into", &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_criu_writes_it() {
        // What criu 4.2.1 wrote for maps 0 1500000000 65536 (uid and gid).
        let m = vec![IdMap {
            container: 0,
            host: 1_500_000_000,
            size: 65536,
        }];
        let ids = IdMappings {
            uid: m.clone(),
            gid: m,
            range: None,
        };
        let want = [
            0x0a, 0x0c, 0x08, 0x00, 0x10, 0x80, 0xde, 0xa0, 0xcb, 0x05, 0x18, 0x80, 0x80, 0x04, 0x12, 0x0c, 0x08, 0x00,
            0x10, 0x80, 0xde, 0xa0, 0xcb, 0x05, 0x18, 0x80, 0x80, 0x04,
        ];
        assert_eq!(encode(&ids), want);
    }
}
