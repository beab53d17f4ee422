//! `vessel image optimize`: which files an image's command reads in its first seconds, as
//! `ctr-remote image optimize` finds them, so that the eStargz image puts them first (before
//! the prefetch landmark). The container runs as `vessel run` would run it (the network is
//! the caller's choice: `none` for optimize); its rootfs's overlay file system is watched with
//! fanotify (`FAN_MARK_FILESYSTEM`, `FAN_OPEN | FAN_OPEN_EXEC`, fanotify(7)): every open of a
//! regular file by any process of the container is an event, whatever mount namespace it
//! opens through. Root only (fanotify needs CAP_SYS_ADMIN).

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vessel_image::{ImageRecord, Store};

use crate::containers::Engine;
use crate::error::{Error, Result};
use crate::options::RunOptions;

/// Watches one file system for opens of regular files.
struct Watch {
    fd: OwnedFd,
    /// The rootfs mount point as the host sees it (stripped from event paths).
    rootfs: PathBuf,
}

impl Watch {
    fn new(rootfs: &Path) -> Result<Watch> {
        let err = |e: std::io::Error| Error::io("watch (fanotify, needs root)", rootfs, e);
        // SAFETY: plain flags; the result is checked before it is used as a descriptor.
        let fd = unsafe {
            libc::fanotify_init(
                libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK,
                (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by fanotify_init and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let path = CString::new(rootfs.as_os_str().as_bytes())
            .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: fd is a live fanotify descriptor and path a NUL-terminated string.
        let r = unsafe {
            libc::fanotify_mark(
                fd.as_raw_fd(),
                libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM,
                libc::FAN_OPEN | libc::FAN_OPEN_EXEC,
                libc::AT_FDCWD,
                path.as_ptr(),
            )
        };
        if r < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(Watch {
            fd,
            rootfs: rootfs.to_path_buf(),
        })
    }

    /// Waits up to `wait` for events and adds the paths (inside the rootfs, `/etc/x`) of
    /// regular files opened to `out` (first open first, each once).
    fn drain(&self, wait: Duration, seen: &mut HashSet<PathBuf>, out: &mut Vec<String>) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut pfd, 1, wait.as_millis().min(i32::MAX as u128) as i32) };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is writable for its length; the descriptor is ours.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let n = n as usize;
            let size = std::mem::size_of::<libc::fanotify_event_metadata>();
            let mut off = 0;
            while off + size <= n {
                // SAFETY: at least `size` bytes from off are in buf; read_unaligned copes with
                // any alignment.
                let m: libc::fanotify_event_metadata = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                if m.event_len < size as u32 {
                    return;
                }
                if m.fd >= 0 {
                    // SAFETY: the kernel opened this descriptor for us; we own and close it.
                    let fd = unsafe { OwnedFd::from_raw_fd(m.fd) };
                    let file = std::fs::File::from(fd);
                    let is_file = file.metadata().map(|md| md.is_file()).unwrap_or(false);
                    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
                    if let (true, Ok(p)) = (is_file, link) {
                        let inside = p
                            .strip_prefix(&self.rootfs)
                            .map(|r| Path::new("/").join(r))
                            .unwrap_or(p);
                        if seen.insert(inside.clone()) {
                            out.push(inside.to_string_lossy().into_owned());
                        }
                    }
                }
                off += m.event_len as usize;
            }
        }
    }
}

impl Engine {
    /// Runs a container of `opts.image` for `period` (or until it ends) and returns the
    /// paths (`/usr/bin/x`) of the regular files its processes opened, first open first.
    /// The container is removed afterwards, whatever happened.
    ///
    /// # Errors
    /// [`Error::Io`] when the rootfs cannot be watched (fanotify needs root), and the
    /// errors of create and start.
    pub fn record_opens(
        &self,
        opts: RunOptions,
        period: Duration,
        pull: &mut dyn FnMut(&Store, &str) -> vessel_image::Result<ImageRecord>,
    ) -> Result<Vec<String>> {
        let rec = self.create(opts, pull)?;
        struct Remove<'a>(&'a Engine, String);
        impl Drop for Remove<'_> {
            fn drop(&mut self) {
                if let Ok(r) = self.0.find(&self.1) {
                    let _ = self.0.remove(&r, true);
                }
            }
        }
        let _remove = Remove(self, rec.id.clone());
        let rootfs = self.paths.bundle(&rec.id).join("rootfs");
        let watch = Watch::new(&rootfs)?;
        self.start(&rec)?;
        let (mut seen, mut out) = (HashSet::new(), Vec::new());
        let end = Instant::now() + period;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            watch.drain((end - now).min(Duration::from_millis(200)), &mut seen, &mut out);
            let running = self.find(&rec.id).map(|r| r.state.is_live()).unwrap_or(false);
            if !running {
                watch.drain(Duration::ZERO, &mut seen, &mut out);
                break;
            }
        }
        Ok(out)
    }
}
