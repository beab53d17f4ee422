//! The local copy of a lazy layer's blob: a sparse file `ROOT/snapshots/lazy/<chain>/blob`
//! at the blob's own offsets, with the byte ranges present listed in `ranges.json`
//! (replaced by rename). Every chunk read from it is checked against its `chunkDigest`
//! before it is served, so a damaged copy is fetched again, never served; the whole blob,
//! once complete, is checked against the layer digest before it becomes a snapshot.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{IoContext, Result};
use crate::store::tmp_name;

/// Byte ranges `[start, end)`, merged, by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(BTreeMap<u64, u64>);

impl Ranges {
    /// Adds `[start, end)`, merging with neighbours.
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .filter(|(_, e)| **e >= start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        let hit: Vec<(u64, u64)> = self
            .0
            .range(..end)
            .filter(|(_, e)| **e > start)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in hit {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, start);
            }
            if e > end {
                self.0.insert(end, e);
            }
        }
    }

    /// Whether all of `[start, end)` is present.
    pub fn contains(&self, start: u64, end: u64) -> bool {
        self.0.range(..=start).next_back().is_some_and(|(_, e)| *e >= end)
    }

    /// Bytes present.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// The missing pieces of `[start, end)`.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut cur = start;
        for (s, e) in &self.0 {
            if *e <= cur {
                continue;
            }
            if *s >= end {
                break;
            }
            if *s > cur {
                out.push((cur, *s));
            }
            cur = cur.max(*e);
        }
        if cur < end {
            out.push((cur, end));
        }
        out
    }
}

/// The blob copy of one lazy layer, shared by the server's threads.
pub struct BlobCache {
    dir: PathBuf,
    file: File,
    ranges: Mutex<Ranges>,
}

/// The bytes present in the copy under `dir` (0 when there is none): for `vessel images`.
pub fn present_bytes(dir: &Path) -> u64 {
    read_ranges(dir).total()
}

fn read_ranges(dir: &Path) -> Ranges {
    let mut r = Ranges::default();
    if let Ok(text) = std::fs::read(dir.join("ranges.json")) {
        if let Ok(v) = serde_json::from_slice::<Vec<(u64, u64)>>(&text) {
            for (s, e) in v {
                r.insert(s, e);
            }
        }
    }
    r
}

impl BlobCache {
    /// Opens (or creates) the copy in `dir`, `size` bytes long.
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when the file cannot be opened or sized.
    pub fn open(dir: &Path, size: u64) -> Result<BlobCache> {
        let path = dir.join("blob");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx("open", &path)?;
        file.set_len(size).ctx("size", &path)?;
        Ok(BlobCache {
            dir: dir.to_path_buf(),
            file,
            ranges: Mutex::new(read_ranges(dir)),
        })
    }

    /// The present ranges now.
    pub fn ranges(&self) -> Ranges {
        self.ranges.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// `[start, end)` when all of it is present.
    pub fn get(&self, start: u64, end: u64) -> Option<Vec<u8>> {
        if !self.ranges.lock().ok()?.contains(start, end) {
            return None;
        }
        let mut buf = vec![0u8; (end - start) as usize];
        self.file.read_exact_at(&mut buf, start).ok()?;
        Some(buf)
    }

    /// Writes `data` at `start` and records it as present.
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when the file or the range list cannot be written.
    pub fn put(&self, start: u64, data: &[u8]) -> Result<()> {
        let path = self.dir.join("blob");
        self.file.write_all_at(data, start).ctx("write", &path)?;
        let snapshot = {
            let Ok(mut r) = self.ranges.lock() else { return Ok(()) };
            r.insert(start, start + data.len() as u64);
            r.clone()
        };
        self.save(&snapshot)
    }

    /// Forgets `[start, end)` (its bytes failed their check).
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when the range list cannot be written.
    pub fn forget(&self, start: u64, end: u64) -> Result<()> {
        let snapshot = {
            let Ok(mut r) = self.ranges.lock() else { return Ok(()) };
            r.remove(start, end);
            r.clone()
        };
        self.save(&snapshot)
    }

    fn save(&self, r: &Ranges) -> Result<()> {
        let list: Vec<(u64, u64)> = r.0.iter().map(|(s, e)| (*s, *e)).collect();
        let tmp = self.dir.join(format!(".ranges.{}", tmp_name()));
        let dest = self.dir.join("ranges.json");
        let text = serde_json::to_vec(&list).unwrap_or_default();
        std::fs::write(&tmp, text).ctx("write", &tmp)?;
        std::fs::rename(&tmp, &dest).ctx("rename", &dest)
    }

    /// A reader over the whole copy from its start.
    ///
    /// # Errors
    /// [`crate::ImageError::Io`] when the file cannot be opened again.
    pub fn reader(&self) -> Result<impl Read> {
        let path = self.dir.join("blob");
        File::open(&path).ctx("open", &path)
    }
}

#[cfg(test)]
mod tests {
    use super::Ranges;

    #[test]
    fn ranges_merge_and_gaps() {
        let mut r = Ranges::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert!(r.contains(10, 40));
        assert_eq!(r.total(), 30);
        assert_eq!(r.gaps(0, 50), vec![(0, 10), (40, 50)]);
        r.remove(15, 25);
        assert!(!r.contains(10, 40));
        assert_eq!(r.gaps(10, 40), vec![(15, 25)]);
        assert_eq!(r.total(), 20);
    }
}
