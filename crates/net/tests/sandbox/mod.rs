//! The test sandbox: each test re-executes the test binary for itself under
//! `unshare --net --mount` (with an environment marker naming the test). The child's
//! network namespace plays the host (bridges, iptables rules and sysctls land there and
//! vanish with it); its private mount namespace holds a tmpfs for ROOT and the
//! containers' namespace files and the host-wide network state (`VESSEL_NET_STATE`). Helpers run commands and servers in those namespaces.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vessel_net::{netns, setup_loopback};

const STEP_ENV: &str = "VESSEL_NETTEST_STEP";
const DIR_ENV: &str = "VESSEL_NETTEST_DIR";

/// The inside of a test: a scratch directory (tmpfs) and ROOT within it.
pub struct Sandbox {
    /// The scratch directory (a tmpfs of the test's mount namespace).
    pub dir: PathBuf,
    /// ROOT of the library under test.
    pub root: PathBuf,
}

impl Sandbox {
    /// A network namespace file for a "container", with lo up.
    pub fn container(&self, name: &str) -> PathBuf {
        let p = self.dir.join("ns").join(name);
        netns::create(&p).expect("netns create");
        setup_loopback(&p).expect("loopback");
        p
    }
}

/// In the outer test process: runs this test again inside new network and mount
/// namespaces and returns None after it passed. In that child: returns the sandbox.
pub fn sandbox(name: &str) -> Option<Sandbox> {
    sandbox_with_env(name, &[])
}

/// [`sandbox`] with extra environment variables for the child.
pub fn sandbox_with_env(name: &str, env: &[(&str, &str)]) -> Option<Sandbox> {
    if std::env::var(STEP_ENV).as_deref() == Ok(name) {
        let dir = PathBuf::from(std::env::var(DIR_ENV).expect("sandbox dir"));
        sh(&format!("mount -t tmpfs -o mode=0700 vessel-nettest {}", dir.display()));
        // sysfs of this network namespace, so nothing reads the host's interfaces.
        sh("mount -t sysfs vessel-nettest-sys /sys");
        setup_loopback(Path::new("/proc/self/ns/net")).expect("host-side loopback");
        let root = dir.join("root");
        return Some(Sandbox { dir, root });
    }
    if !rustix::process::geteuid().is_root() {
        eprintln!("{name}: skipped, needs root (network namespaces, CNI plugins)");
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("vessel-nettest-")
        .tempdir()
        .expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new("unshare");
    cmd.args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(STEP_ENV, name)
        .env(DIR_ENV, tmp.path())
        // The host-wide network state inside the sandbox's tmpfs, never /run's.
        .env(vessel_net::host::STATE_ENV, tmp.path().join("net-state"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn unshare");
    let deadline = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name}: timed out");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{name} failed inside its namespaces: {status}");
    None
}

/// Runs a shell command, asserting success; its stdout.
pub fn sh(cmd: &str) -> String {
    let (ok, out, err) = try_sh(cmd);
    assert!(ok, "`{cmd}` failed: {err}{out}");
    out
}

pub fn try_sh(cmd: &str) -> (bool, String, String) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A command inside a container's network namespace.
pub fn in_ns(ns: &Path, cmd: &str) -> (bool, String, String) {
    try_sh(&format!("nsenter --net={} sh -c '{cmd}'", ns.display()))
}

/// A background process, killed (by its pid) and reaped on drop.
pub struct Server(Child);

impl Server {
    pub fn start(ns: &Path, args: &[&str]) -> Server {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.display()))
            .args(args)
            .stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the closure touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc_prctl_pdeathsig();
                Ok(())
            });
        }
        Server(cmd.spawn().expect("spawn server"))
    }
}

fn libc_prctl_pdeathsig() {
    // The server dies with the test process even if the test is killed.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An HTTP GET of / at `addr`, retried while the server starts; the whole response.
pub fn http_get(addr: &str) -> String {
    let sa: std::net::SocketAddr = addr.parse().expect("address");
    let mut last = String::new();
    for _ in 0..60 {
        let got = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: vessel\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })();
        match got {
            Ok(t) if !t.is_empty() => return t,
            Ok(_) => last = "empty answer".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("GET http://{addr}/: {last}");
}

/// The addresses host-local holds for `network` (under any bridge) in the sandbox's
/// host-wide state ([`vessel_net::HostState`]); `_root` is the library's root.
pub fn ipam_files(_root: &Path, network: &str) -> Vec<String> {
    let ipam = vessel_net::HostState::open().dir().join("ipam");
    let mut v: Vec<String> = std::fs::read_dir(ipam)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|bridge| {
            std::fs::read_dir(bridge.path().join(network))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// A TCP connection from inside the namespace `ns` (a thread that enters it).
pub fn connect_from(ns: &Path, addr: &str) -> std::io::Result<()> {
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    netns::run_in(ns, || {
        Ok(TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map(drop))
    })
    .expect("enter the namespace")
}

pub fn local_unreachable(addr: &str) -> bool {
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&sa, Duration::from_secs(1)).is_err()
}
