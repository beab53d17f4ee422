//! A resource update as a list of cgroup file writes, checked completely before the
//! first write and undone (best effort, in reverse) when the kernel refuses one, so
//! that a failed `set` leaves the cgroup as it was. A write can also be read back, for
//! files that some kernels accept and then ignore.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to undo one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Restore {
    /// Write back what the file held before.
    Read,
    /// Write back this value.
    Value(String),
    /// Not undoable (device rules, controller enabling); harmless or only at create.
    No,
}

/// One cgroup file write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    /// The file.
    pub path: PathBuf,
    /// What to write.
    pub value: String,
    /// The config field it comes from, for messages (`linux.resources.memory.limit`).
    pub field: String,
    /// How to undo it.
    pub restore: Restore,
    /// When set, the file is read back after the write and must hold the value (a byte
    /// limit, compared at page granularity); otherwise the write counts as refused and
    /// this text says why the kernel ignores it.
    pub verify: Option<String>,
}

/// The writes of one `set`, in order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The writes.
    pub writes: Vec<Write>,
}

impl Plan {
    /// Adds a write that is undone by writing back the file's old content.
    pub fn write(&mut self, field: &str, path: PathBuf, value: impl Into<String>) {
        self.writes.push(Write {
            path,
            value: value.into(),
            field: field.into(),
            restore: Restore::Read,
            verify: None,
        });
    }

    /// Adds a byte-limit write that is read back afterwards: when the file does not hold
    /// the value then (a kernel that accepts the write and ignores it), `set` fails with
    /// `why` and every write is undone.
    pub fn write_verified(&mut self, field: &str, path: PathBuf, value: impl Into<String>, why: impl Into<String>) {
        self.writes.push(Write {
            path,
            value: value.into(),
            field: field.into(),
            restore: Restore::Read,
            verify: Some(why.into()),
        });
    }

    /// Adds a write with an explicit undo.
    pub fn write_with(&mut self, field: &str, path: PathBuf, value: impl Into<String>, restore: Restore) {
        self.writes.push(Write {
            path,
            value: value.into(),
            field: field.into(),
            restore,
            verify: None,
        });
    }

    /// Performs the writes in order. When one fails, the ones before it are undone in
    /// reverse order and the error names the field, file and value.
    ///
    /// Errors: [`Error::Sys`] from the refused write.
    pub fn apply(self) -> Result<()> {
        let mut done: Vec<(&Write, Option<String>)> = Vec::new();
        for w in &self.writes {
            let old = match &w.restore {
                Restore::Read => fs::read_to_string(&w.path).ok().map(|s| s.trim_end().to_string()),
                Restore::Value(v) => Some(v.clone()),
                Restore::No => None,
            };
            if let Err(e) = fs::write(&w.path, &w.value) {
                undo(&done);
                let hint = match (e.raw_os_error(), &w.verify) {
                    // A kernel that refuses outright what others accept and ignore.
                    (Some(libc::EOPNOTSUPP), Some(why)) => format!(" ({why})"),
                    (Some(libc::EBUSY), _) => {
                        " (the kernel refused it: for a memory limit, usage is above the new value)".to_string()
                    }
                    (Some(libc::EINVAL), _) => {
                        " (the kernel refused the value: out of range or in conflict with a related limit)".to_string()
                    }
                    _ => String::new(),
                };
                return Err(Error::sys(
                    format!(
                        "{}: write {:?} to {}{hint}; nothing was changed",
                        w.field,
                        w.value,
                        w.path.display()
                    ),
                    e,
                ));
            }
            done.push((w, old));
            if let Some(why) = &w.verify {
                let now = read(&w.path).unwrap_or_default();
                if !same_limit(&now, &w.value) {
                    undo(&done);
                    return Err(Error::Invalid(format!(
                        "linux.resources.{}: the kernel accepted {:?} for {} but it still reads {now:?}: {why}; nothing was changed",
                        w.field,
                        w.value,
                        w.path.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Undoes `done` in reverse order, best effort.
fn undo(done: &[(&Write, Option<String>)]) {
    for (w, old) in done.iter().rev() {
        if let Some(old) = old {
            for line in restore_lines(&w.path, old) {
                let _ = fs::write(&w.path, line);
            }
        }
    }
}

/// Whether a byte limit read back from a cgroup file (`now`) is the one written
/// (`want`): the kernel rounds limits down to whole pages and shows "no limit" (-1) as
/// the largest page multiple (v1) or `max` (v2).
fn same_limit(now: &str, want: &str) -> bool {
    const PAGE: i64 = 4096;
    let parse = |s: &str| -> Option<Option<i64>> {
        match s.trim() {
            "max" | "-1" => Some(None),
            t => t.parse::<i64>().ok().map(|n| (n < (1 << 62)).then_some(n)),
        }
    };
    match (parse(now), parse(want)) {
        (Some(None), Some(None)) => true,
        (Some(Some(a)), Some(Some(b))) => a / PAGE == b / PAGE,
        _ => now.trim() == want.trim(),
    }
}

/// The writes that restore `old` into `path`: multi-entry files (one line per device)
/// take their lines one by one; cpuset lists and single values are written whole.
fn restore_lines(path: &Path, old: &str) -> Vec<String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let per_line =
        name.ends_with("_device") || name == "io.max" || name.contains("weight_device") || name == "rdma.max";
    if per_line {
        old.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("default"))
            .map(str::to_string)
            .collect()
    } else {
        vec![old.to_string()]
    }
}

/// Reads a cgroup file, trimmed; None when it does not exist.
pub(crate) fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, "1\n").unwrap();
        let mut p = Plan::default();
        p.write("f.a", a.clone(), "2");
        p.write("f.b", dir.path().join("missing/b"), "3");
        let e = p.apply().unwrap_err().to_string();
        assert!(e.contains("f.b") && e.contains("nothing was changed"), "{e}");
        assert_eq!(fs::read_to_string(&a).unwrap(), "1");
    }

    #[test]
    fn verified_write_that_does_not_stick_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "1\n").unwrap();
        fs::write(&b, "9223372036854771712\n").unwrap();
        // A plain file holds what is written: a verified write to it succeeds.
        let mut p = Plan::default();
        p.write_verified("f.b", b.clone(), "67108864", "ignored");
        p.apply().unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "67108864");
        // /dev/null takes every write and reads back empty, as a kernel file that
        // ignores the value reads back the old one: the earlier write is undone.
        let mut p = Plan::default();
        p.write("f.a", a.clone(), "2");
        p.write_verified("f.k", PathBuf::from("/dev/null"), "67108864", "the kernel ignores it");
        let e = p.apply().unwrap_err().to_string();
        assert!(
            e.contains("linux.resources.f.k")
                && e.contains("the kernel ignores it")
                && e.contains("nothing was changed"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&a).unwrap(), "1");
    }

    #[test]
    fn limits_compare_at_page_granularity() {
        assert!(same_limit("67104768", "67108000"), "rounded down to a page");
        assert!(same_limit("9223372036854771712", "-1"));
        assert!(same_limit("max", "-1"));
        assert!(!same_limit("9223372036854771712", "67108864"));
        assert!(!same_limit("0", "4096"));
        assert!(!same_limit("", "4096"));
    }
}
