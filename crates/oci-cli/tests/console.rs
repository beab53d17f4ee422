//! Console: `terminal: true` with `--console-socket`; the pty master arrives over
//! SCM_RIGHTS and carries the container's terminal.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Listens on `path`; a thread accepts one connection and receives one fd over
/// SCM_RIGHTS (as runc's recvtty does).
fn console_listener(path: &Path) -> mpsc::Receiver<Result<OwnedFd, String>> {
    let listener = UnixListener::bind(path).expect("bind console socket");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let (conn, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
            recv_fd(conn.as_raw_fd())
        })();
        let _ = tx.send(r);
    });
    rx
}

fn recv_fd(sock: i32) -> Result<OwnedFd, String> {
    let mut name = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    // Room for one fd's control message, aligned as cmsghdr needs.
    let mut cbuf = [0u64; 8];
    // SAFETY: msghdr is plain data; zeroed is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as _;
    // SAFETY: sock is a connected unix socket; msg points at live buffers.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: msg was filled by recvmsg; CMSG_* walk the control buffer it describes.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(format!("no SCM_RIGHTS in message ({n} bytes)"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const i32);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads the pty master until the container side closes (EIO) or `timeout` passes.
fn read_master(master: &OwnedFd, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut f = File::from(master.try_clone().unwrap());
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
        if r <= 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break, // EIO: every slave fd is closed
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

#[test]
fn create_with_console_socket() {
    let mut c = TestContainer::new("console");
    c.spec["process"]["terminal"] = serde_json::json!(true);
    c.sh("tty; test -t 0 && echo stdin-is-tty; test -t 1 && echo stdout-is-tty; echo hi");
    let sock = c.dir.join("console.sock");
    let rx = console_listener(&sock);
    c.create_with(&["--console-socket", sock.to_str().unwrap()])
        .assert_ok("create");
    let master = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("console fd sent")
        .expect("console fd received");
    c.start().assert_ok("start");
    let out = read_master(&master, Duration::from_secs(20));
    let tty = out.lines().next().unwrap_or_default();
    assert!(
        tty == "/dev/console" || tty.starts_with("/dev/pts/"),
        "tty names the console: {out:?}"
    );
    assert!(out.contains("stdin-is-tty"), "{out:?}");
    assert!(out.contains("stdout-is-tty"), "{out:?}");
    assert!(out.lines().any(|l| l == "hi"), "{out:?}");
    c.wait_status("stopped", Duration::from_secs(10));
}

#[test]
fn exec_tty_with_console_socket() {
    let c = {
        let mut c = TestContainer::new("console-exec");
        c.start_sleeper();
        c
    };
    let sock = c.dir.join("exec.sock");
    let rx = console_listener(&sock);
    // runc accepts --console-socket only together with --detach.
    let pid_file = c.dir.join("exec.pid");
    let mut cmd = c.cmd();
    cmd.args(["exec", "-t", "--detach", "--console-socket", sock.to_str().unwrap()])
        .args(["--pid-file", pid_file.to_str().unwrap(), &c.id])
        .args(["sh", "-c", "tty; test -t 0 && echo exec-tty; exit 5"]);
    let mut child = ChildGuard(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn exec"),
    );
    let master = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("console fd sent")
        .expect("console fd received");
    let st = wait_timeout(&mut child.0, Duration::from_secs(20)).expect("exec returns");
    assert_eq!(exit_code(st), 0, "exec --detach returns once started");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        if let Ok(pid) = pid.trim().parse() {
            c.record_pid(pid);
        }
    }
    let out = read_master(&master, Duration::from_secs(20));
    let tty = out.lines().next().unwrap_or_default();
    assert!(tty.starts_with("/dev/pts/"), "exec tty is a pts: {out:?}");
    assert!(out.contains("exec-tty"), "{out:?}");
}
