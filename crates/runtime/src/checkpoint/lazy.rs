//! What a lazy-pages (post-copy) dump needs of this host beyond CRIU's `uffd-noncoop`
//! check: pipes as large as CRIU's page pipes. `criu dump --lazy-pages` tees the pages
//! it serves into a pipe it grows with `F_SETPIPE_SZ` to `PIPE_MAX_SIZE` pages
//! (criu/page-pipe.c, `pipe_read_dest_init`); the kernel rounds that to 4 MiB and
//! refuses it (EPERM) above `fs.pipe-max-size` unless the caller has CAP_SYS_RESOURCE
//! (pipe(7)). The pipe then stays at 64 KiB, the first `tee` moves less than asked and
//! the transfer fails (`page-pipe: tee: 65536: Operation not permitted`) after the
//! container has been frozen. This check says so before anything is touched.

use std::fs;

use crate::error::{Error, Result};

/// The pipe size CRIU 4.x asks for its lazy-pages tee pipe, as the kernel rounds it
/// (a power of two of pages): 4 MiB.
pub const LAZY_PIPE_BYTES: u64 = 4 << 20;

/// Where the kernel's limit for unprivileged pipe sizes is (pipe(7)).
const PIPE_MAX_SIZE: &str = "/proc/sys/fs/pipe-max-size";

/// Bit of CAP_SYS_RESOURCE in the `CapEff` mask of /proc/self/status (capability.h).
const CAP_SYS_RESOURCE_BIT: u32 = 24;

/// Whether this process's effective set holds CAP_SYS_RESOURCE (read from
/// /proc/self/status; false when it cannot be read).
fn has_sys_resource() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << CAP_SYS_RESOURCE_BIT) != 0)
}

/// `Ok(())` when a lazy-pages dump can grow its pipes: this process (and the criu it
/// starts) has CAP_SYS_RESOURCE, or `fs.pipe-max-size` is at least
/// [`LAZY_PIPE_BYTES`]. `what` names the flag or mode that needs it.
///
/// Errors: [`Error::Criu`] (action `check`) naming the limit, its value and the two
/// ways out.
pub fn require_lazy_dump(what: &str) -> Result<()> {
    if has_sys_resource() {
        return Ok(());
    }
    let max: u64 = fs::read_to_string(PIPE_MAX_SIZE)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if max >= LAZY_PIPE_BYTES {
        return Ok(());
    }
    Err(Error::Criu {
        action: "check".into(),
        log: None,
        detail: format!(
            "{what} needs pipes of {LAZY_PIPE_BYTES} bytes for CRIU's lazy-pages transfer, but {PIPE_MAX_SIZE} is {max} and this process lacks CAP_SYS_RESOURCE (criu would fail with \"page-pipe: tee: ... Operation not permitted\" after freezing the container); run as a root that holds CAP_SYS_RESOURCE or raise fs.pipe-max-size to {LAZY_PIPE_BYTES}"
        ),
    })
}
