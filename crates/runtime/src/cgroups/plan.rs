//! A resource update as a list of cgroup file writes, checked completely before the
//! first write and undone (best effort, in reverse) when the kernel refuses one, so
//! that a failed `set` leaves the cgroup as it was.

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
        });
    }

    /// Adds a write with an explicit undo.
    pub fn write_with(&mut self, field: &str, path: PathBuf, value: impl Into<String>, restore: Restore) {
        self.writes.push(Write {
            path,
            value: value.into(),
            field: field.into(),
            restore,
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
                for (w, old) in done.iter().rev() {
                    if let Some(old) = old {
                        for line in restore_lines(&w.path, old) {
                            let _ = fs::write(&w.path, line);
                        }
                    }
                }
                let hint = match e.raw_os_error() {
                    Some(libc::EBUSY) => " (the kernel refused it: for a memory limit, usage is above the new value)",
                    Some(libc::EINVAL) => {
                        " (the kernel refused the value: out of range or in conflict with a related limit)"
                    }
                    _ => "",
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
        }
        Ok(())
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
}
