//! What an idle monitor keeps in memory: after set-up (and after each request that ran
//! the runtime or SQLite), it gives back the pages that the wait loop no longer needs,
//! so that each running container costs as few private pages as possible
//! (bench/run measures them as USS from /proc/PID/smaps_rollup).
//!
//! Three kinds of pages go: the file pages that set-up touched (code of the binary and
//! its libraries, read-only and unmodified: they stay in the page cache), the free
//! memory that the allocator keeps (malloc_trim(3)), and the part of the main thread's
//! stack below the current frame that deeper calls dirtied during set-up.

/// Makes every thread allocate from the main arena (mallopt(3) M_ARENA_MAX = 1): the
/// short-lived helper threads of set-up (vessel-net switches namespaces in one) would
/// otherwise leave an arena of their own whose free top [`release`] cannot return.
/// Call first, before any thread runs.
pub fn one_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes a tunable of the allocator; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Gives back the pages the monitor's wait loop does not need (see the module doc).
/// Best effort: a step that fails is skipped.
#[inline(never)]
pub fn release() {
    release_file_pages();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory of the allocator to the kernel; it
    // touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
    release_stack();
}

/// Drops from our page tables the file pages that setting up touched (the code of
/// the whole binary and its libraries that create ran through), so that an idle
/// monitor holds only what its wait loop uses: madvise(2) MADV_DONTNEED on every
/// read-only file mapping that has no private (copied-on-write) page. The pages stay
/// in the page cache; the loop faults back in the few it needs.
fn release_file_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize, bool)> = None;
    let drop_range = |r: Option<(usize, usize, bool)>| {
        if let Some((start, end, true)) = r {
            // SAFETY: [start, end) is a whole mapping of ours, read-only and backed by a
            // file with no private pages, so discarding its pages loses nothing: the
            // next access reads them from the file again.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-').filter(|(a, _)| !a.contains(':')) {
            drop_range(current.take());
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
                continue;
            };
            current = Some((start, end, path.starts_with('/') && !perms.contains('w')));
        } else if first == "Anonymous:" && f.next() != Some("0") {
            if let Some(c) = current.as_mut() {
                c.2 = false;
            }
        }
    }
    drop_range(current);
}

/// What is kept below the current stack pointer: the frames of this function's
/// callees (reading /proc/self/maps, madvise itself) with room to spare.
const STACK_KEEP: usize = 16 * 1024;

/// Discards the pages of the main thread's stack (`[stack]` in /proc/self/maps) that
/// lie more than [`STACK_KEEP`] below the current frame: set-up (the runtime's create,
/// JSON, SQLite) ran deeper than the wait loop ever will, and those pages stay dirty
/// otherwise. The stack grows down, so everything below the live frames is dead; the
/// kernel hands out zeroed pages again if it is ever reached.
#[inline(never)]
fn release_stack() {
    let here = 0u8;
    let sp = std::ptr::addr_of!(here) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    let Some(range) = maps.lines().find(|l| l.ends_with("[stack]")) else {
        return;
    };
    let Some((a, b)) = range.split_whitespace().next().and_then(|r| r.split_once('-')) else {
        return;
    };
    let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
        return;
    };
    if !(start..end).contains(&sp) {
        return;
    }
    // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let top = (sp.saturating_sub(STACK_KEEP)) & !(page - 1);
    if top <= start {
        return;
    }
    // SAFETY: [start, top) is the part of our own stack mapping more than STACK_KEEP
    // below this function's frame: no live frame or value is there (only callees of
    // this function run below it, and they use far less than STACK_KEEP), and no signal
    // handler runs on it (the monitor reads its signals from a signalfd; std's stack
    // overflow handler runs on an alternate stack). MADV_DONTNEED on
    // private anonymous memory makes it read back as zeroes.
    unsafe { libc::madvise(start as *mut libc::c_void, top - start, libc::MADV_DONTNEED) };
}
