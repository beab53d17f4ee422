//! `vessel migrate` between two "hosts" on this machine: two vessel roots, the target
//! reached through the test's own sshd (`/usr/sbin/sshd -D -f TEMPCONF` on a free port
//! of 127.0.0.1, a temp host key, a temp client key in a temp authorized_keys; killed
//! by pid with its session processes at the end) or, for the faults of the target's
//! vessel, `local:///ROOT`. Workloads, in their own user namespace: a counter (no number
//! lost or repeated), a shell holding 100 MB it checks (same digest after), a terminal
//! (its output goes on into the target's log) and an established TCP connection (the
//! talk goes on on the target). Faults: the migrate command killed (-9) at each step, the target's vessel killed before and after its
//! restore, the transport (sshd) killed during the transfer, a name taken on the
//! target: afterwards exactly one side runs the container.

mod instance;
mod run_vessel;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use instance::{have, stderr, stdout, wait_for, Instance};

/// Appends 1, 2, 3... to /count.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i >> /count; sleep 0.05; done";

/// The test's sshd: the "remote host" of an `ssh://` migration.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    pid: u32,
    child: Child,
}

impl Sshd {
    fn start() -> Sshd {
        let dir = tempfile::Builder::new().prefix("vessel-sshd-").tempdir().unwrap();
        let d = dir.path();
        // sshd's privilege separation dir (the openssh-server package's own, made at its
        // service start, which never runs here).
        let _ = fs::create_dir_all("/run/sshd");
        run_vessel::sh(
            "ssh-keygen -q -t ed25519 -N '' -f host_key && ssh-keygen -q -t ed25519 -N '' -f client_key \
             && cp client_key.pub authorized_keys && chmod 600 authorized_keys",
            d,
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = d.join("sshd_config");
        fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile none\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowTcpForwarding local\n\
                 SetEnv VESSEL_NETWORK=none VESSEL_SUBUID={d}/subid VESSEL_SUBGID={d}/subid VESSEL_CRIU={criu}\n",
                d = d.display(),
                criu = vessel_runtime_criu(),
            ),
        )
        .unwrap();
        // The target's id ranges: another block than the source's (run_vessel's), so a
        // container in its own user namespace moves to other host ids.
        fs::write(d.join("subid"), "vessel:1200000000:100000000\n").unwrap();
        let host_pub = fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut kh = host_pub.split_whitespace();
        fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {} {}\n", kh.next().unwrap(), kh.next().unwrap()),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Sshd {
            dir,
            port,
            pid: child.id(),
            child,
        };
        wait_for("sshd to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        s
    }

    /// `VESSEL_SSH_COMMAND` for this sshd: its client key and known host only.
    fn ssh_command(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "ssh -F /dev/null -i {d}/client_key -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=yes -o LogLevel=ERROR"
        )
    }

    /// `ssh://root@127.0.0.1:PORT/ROOT` for the target instance.
    fn url(&self, target: &Instance) -> String {
        format!("ssh://root@127.0.0.1:{}{}", self.port, target.root().display())
    }

    /// Every process of this sshd: the listener and its session processes (and theirs).
    fn tree(&self) -> Vec<u32> {
        let mut all = vec![self.pid];
        let mut k = 0;
        while k < all.len() {
            let p = all[k];
            for t in fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
                let kids = fs::read_to_string(t.path().join("children")).unwrap_or_default();
                all.extend(kids.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
            k += 1;
        }
        all
    }

    /// Kills the sshd processes (listener and sessions), not what they started.
    fn kill_sshd_processes(&self) {
        for p in self.tree() {
            let exe = fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default();
            if exe == Path::new("/usr/sbin/sshd") {
                let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
            }
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill_sshd_processes();
        let _ = self.child.wait();
    }
}

/// `vessel migrate NAME URL` from `src` (with the ssh command and the target's vessel).
fn migrate_cmd(src: &Instance, sshd: Option<&Sshd>, name: &str, url: &str) -> Command {
    let mut c = src.cmd();
    c.args(["migrate", "--remote-vessel", env!("CARGO_BIN_EXE_vessel"), name, url]);
    if let Some(s) = sshd {
        c.env("VESSEL_SSH_COMMAND", s.ssh_command());
    }
    c
}

fn id_of(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.Id}}", name]).trim().to_string()
}

fn names(i: &Instance) -> String {
    i.ok(&["ps", "-a"])
}

fn state(i: &Instance, name: &str) -> String {
    i.ok(&["inspect", "-f", "{{.State.Status}}", name]).trim().to_string()
}

/// The counter's numbers in `i`'s container `name`, checked to be 1..=N.
fn count(i: &Instance, name: &str) -> u64 {
    let id = id_of(i, name);
    let text = fs::read_to_string(i.root().join("snapshots/active").join(id).join("upper/count")).unwrap_or_default();
    let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (k, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            k as u64 + 1,
            "count file: {n} at line {}: a number lost or repeated",
            k + 1
        );
    }
    nums.len() as u64
}

fn counter(i: &Instance, name: &str) {
    let img = i.busybox();
    i.ok(&["run", "-d", "--name", name, img, "sh", "-c", COUNTER]);
    wait_for("the counter to count", || count(i, name) >= 3);
}

/// Two roots with the image, the target's migrate dir checked empty at the end.
fn two_hosts() -> (Instance, Instance) {
    let src = host_ids();
    let dst = host_ids();
    dst.busybox();
    (src, dst)
}

/// Nothing of a migration left in either root: no staging dir or archive, and no
/// mount in a root that has no container.
#[track_caller]
fn nothing_left(src: &Instance, dst: &Instance) {
    for i in [src, dst] {
        assert_eq!(i.left("migrate"), 0, "migrate dir of {}", i.root().display());
        if i.ok(&["ps", "-aq"]).trim().is_empty() {
            assert!(i.mounts_under_root().is_empty(), "{:?}", i.mounts_under_root());
        }
    }
}

/// Whether a lazy-pages dump cannot grow its pipes here: no CAP_SYS_RESOURCE and
/// fs.pipe-max-size under 4 MiB (as on the development machines).
fn lazy_pipes_refused() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or(0);
    let max: u64 = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    cap_eff & (1 << 24) == 0 && max < 4 << 20
}

#[test]
fn migrate_over_ssh_continues_the_count() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let sshd = Sshd::start();
    let (src, dst) = two_hosts();
    counter(&src, "vessel-mig-count");
    let o = migrate_cmd(&src, Some(&sshd), "vessel-mig-count", &sshd.url(&dst))
        .output()
        .unwrap();
    eprintln!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("mode: stop-and-copy"), "{out}");
    assert!(out.contains("mem_dirty_track"), "says why: {out}");
    if lazy_pipes_refused() {
        assert!(out.contains("pipe-max-size"), "says why post-copy is out here: {out}");
    }
    assert!(out.contains("round 1"), "{out}");
    assert!(out.contains("frozen") && out.contains(" ms"), "{out}");
    assert_eq!(src.ok(&["ps", "-aq"]).trim(), "", "removed on the source");
    assert_eq!(state(&dst, "vessel-mig-count"), "running");
    let n = count(&dst, "vessel-mig-count");
    wait_for("the count to continue on the target", || {
        count(&dst, "vessel-mig-count") >= n + 5
    });
    dst.ok(&["rm", "-f", "vessel-mig-count"]);
    nothing_left(&src, &dst);
}

#[test]
fn migrate_keeps_100_mb_of_memory() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let sshd = Sshd::start();
    let (src, dst) = two_hosts();
    let img = src.busybox();
    // 100 MB of random bytes in the shell's memory (base64: 133 MB), its digest
    // written before, and again when /go appears.
    let script = "x=$(busybox head -c 100000000 /dev/urandom | busybox base64); \
                  echo \"$x\" | busybox sha256sum > /before; \
                  while [ ! -e /go ]; do sleep 0.1; done; echo \"$x\" | busybox sha256sum > /after; sleep 1000";
    src.ok(&["run", "-d", "--name", "vessel-mig-mem", img, "sh", "-c", script]);
    let upper = |i: &Instance, f: &str| {
        let id = id_of(i, "vessel-mig-mem");
        fs::read_to_string(i.root().join("snapshots/active").join(id).join("upper").join(f)).unwrap_or_default()
    };
    let start = Instant::now();
    while upper(&src, "before").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "the digest before");
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = upper(&src, "before");
    let o = migrate_cmd(&src, Some(&sshd), "vessel-mig-mem", &sshd.url(&dst))
        .output()
        .unwrap();
    eprintln!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    let pages: u64 = stdout(&o)
        .lines()
        .find_map(|l| {
            l.strip_prefix("round 1 (final dump, frozen): ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap();
    assert!(
        pages * 4096 >= 100_000_000,
        "at least 100 MB through the page stream: {pages} pages"
    );
    dst.ok(&["exec", "vessel-mig-mem", "touch", "/go"]);
    let start = Instant::now();
    while upper(&dst, "after").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "the digest after");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(upper(&dst, "after"), before, "same 100 MB after the migration");
    dst.ok(&["rm", "-f", "vessel-mig-mem"]);
    nothing_left(&src, &dst);
}

/// `vessel migrate` that must fail, leaving the source running and the target empty;
/// its output (stdout, then stderr).
#[track_caller]
fn refused(src: &Instance, dst: &Instance, sshd: &Sshd, name: &str, extra: &[&str]) -> String {
    let mut c = migrate_cmd(src, Some(sshd), name, &sshd.url(dst));
    let o = c.args(extra).output().unwrap();
    eprintln!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(state(src, name), "running", "the source runs on");
    format!("{}{}", stdout(&o), stderr(&o))
}

#[test]
fn migrate_into_a_taken_name_is_refused_and_the_source_runs_on() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let sshd = Sshd::start();
    let (src, dst) = two_hosts();
    counter(&src, "vessel-mig-taken");
    dst.ok(&["create", "--name", "vessel-mig-taken", "localhost/bb:1", "true"]);
    let err = refused(&src, &dst, &sshd, "vessel-mig-taken", &[]);
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("thawed"), "{err}");
    // Refused while the target made the container, before any freeze or dump here.
    assert!(!err.contains("frozen vessel-mig-taken"), "never frozen: {err}");
    let n = count(&src, "vessel-mig-taken");
    wait_for("the count to go on at the source", || {
        count(&src, "vessel-mig-taken") > n + 3
    });
    assert_eq!(
        dst.ok(&["ps", "-aq"]).lines().count(),
        1,
        "only the target's own container"
    );
    nothing_left(&src, &dst);
}

/// The numbers a `-t` ticker printed to its terminal, as `vessel logs` shows them.
fn ticks(i: &Instance, name: &str) -> Vec<u64> {
    i.ok(&["logs", name])
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
        .collect()
}

#[test]
fn terminal_and_established_tcp_containers_migrate() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst) = two_hosts();
    let img = src.busybox();
    let url = format!("local://{}", dst.root().display());
    // A terminal: the target's monitor gets the new pty's master and logs what the
    // shell goes on printing to it.
    let ticker = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done";
    src.ok(&["run", "-d", "-t", "--name", "vessel-mig-tty", img, "sh", "-c", ticker]);
    wait_for("the ticker to print", || ticks(&src, "vessel-mig-tty").len() >= 3);
    let o = migrate_cmd(&src, None, "vessel-mig-tty", &url).output().unwrap();
    eprintln!("terminal: {}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(state(&dst, "vessel-mig-tty"), "running");
    wait_for("the ticker to go on on the target", || {
        ticks(&dst, "vessel-mig-tty").len() >= 5
    });
    let t = ticks(&dst, "vessel-mig-tty");
    assert!(t[0] > 3, "it went on from where it was, not from 1: {t:?}");
    for w in t.windows(2) {
        assert_eq!(w[1], w[0] + 1, "ticks go on by one: {t:?}");
    }
    dst.ok(&["rm", "-f", "vessel-mig-tty"]);
    // An echo server with a client that keeps talking to it over one connection (inside
    // the container's own network namespace, which CRIU moves with it, address and all).
    let echo = "busybox nc -ll -p 7007 -e cat & sleep 0.5; \
                (i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done) | busybox nc 127.0.0.1 7007 > /echoed";
    src.ok(&["run", "-d", "--name", "vessel-mig-tcp", img, "sh", "-c", echo]);
    let echoed = |i: &Instance| -> u64 {
        let id = id_of(i, "vessel-mig-tcp");
        let text =
            fs::read_to_string(i.root().join("snapshots/active").join(id).join("upper/echoed")).unwrap_or_default();
        let nums: Vec<u64> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        for (k, n) in nums.iter().enumerate() {
            assert_eq!(*n, k as u64 + 1, "echoed: a number lost or repeated");
        }
        nums.len() as u64
    };
    wait_for("the echo to flow", || echoed(&src) >= 5);
    let o = migrate_cmd(&src, None, "vessel-mig-tcp", &url)
        .arg("--tcp-established")
        .output()
        .unwrap();
    eprintln!("tcp: {}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{}", stderr(&o));
    let n = echoed(&dst);
    wait_for("the echo to go on on the target", || echoed(&dst) > n + 5);
    dst.ok(&["rm", "-f", "vessel-mig-tcp"]);
    nothing_left(&src, &dst);
}

/// Starts a migration that pauses at `point` (on the source or, with local://, the
/// target) and returns it once it said so.
fn paused_at(src: &Instance, mut c: Command, point: &str, resume: Option<&Path>) -> Child {
    c.env("VESSEL_TEST_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(r) = resume {
        c.env("VESSEL_TEST_RESUME_FILE", r);
    }
    let _ = src;
    let mut child = c.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "migrate ended before {point}");
        eprint!("{line}");
        if line.contains(&format!("test pause at {point}")) {
            break;
        }
    }
    // Keep draining its stderr so that it never blocks on it.
    std::thread::spawn(move || {
        let mut s = String::new();
        while err.read_line(&mut s).unwrap_or(0) > 0 {
            eprint!("{s}");
            s.clear();
        }
    });
    child
}

/// Whether a process runs whose command line holds every one of `words`.
fn running(words: &[&str]) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        words.iter().all(|w| cmd.contains(w))
    })
}

/// After a fault: the one side that should run the container runs it, the other has
/// none (waiting for the guard), and its count goes on; then the guard and the
/// target's vessel have ended (so that nothing touches the roots after the test).
#[track_caller]
fn exactly_one_runs(src: &Instance, dst: &Instance, name: &str, on_target: bool) {
    let (s, d) = (src.root().display().to_string(), dst.root().display().to_string());
    wait_for("the guard and the target's vessel to end", || {
        !running(&["__migrate-guard", &s]) && !running(&["migrate-receive", &d])
    });
    let (runs, empty) = if on_target { (dst, src) } else { (src, dst) };
    wait_for("the outcome", || {
        empty.ok(&["ps", "-aq"]).trim().is_empty() && names(runs).contains(name) && state(runs, name) == "running"
    });
    let n = count(runs, name);
    wait_for("the count to go on", || count(runs, name) > n + 3);
}

#[test]
fn killed_migrate_command_leaves_exactly_one_running() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let sshd = Sshd::start();
    for (point, on_target) in [
        ("migrate-before-freeze", false),
        ("migrate-after-dump", false),
        ("migrate-transfer", false),
        ("migrate-after-restore", true),
    ] {
        eprintln!("--- kill -9 at {point}");
        let (src, dst) = two_hosts();
        counter(&src, "vessel-mig-kill");
        let c = migrate_cmd(&src, Some(&sshd), "vessel-mig-kill", &sshd.url(&dst));
        let mut child = paused_at(&src, c, point, None);
        child.kill().unwrap();
        child.wait().unwrap();
        exactly_one_runs(&src, &dst, "vessel-mig-kill", on_target);
        wait_for("the target's staging dir to go", || dst.left("migrate") == 0);
        nothing_left(&src, &dst);
    }
}

/// The target's `vessel migrate-receive` process of the root `dst`.
fn receiver_pid(dst: &Instance) -> u32 {
    let root = dst.root().to_string_lossy().into_owned();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains("migrate-receive --token") && cmd.contains(&root) {
            return pid;
        }
    }
    panic!("no migrate-receive for {root}");
}

#[test]
fn killed_target_vessel_leaves_exactly_one_running() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    // local:// passes the pause point on to the target's vessel.
    for (point, on_target) in [("receive-archived", false), ("receive-restored", true)] {
        eprintln!("--- kill -9 of the target's vessel at {point}");
        let (src, dst) = two_hosts();
        counter(&src, "vessel-mig-recv");
        let url = format!("local://{}", dst.root().display());
        let c = migrate_cmd(&src, None, "vessel-mig-recv", &url);
        let child = paused_at(&src, c, point, None);
        let pid = receiver_pid(&dst);
        Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(125), "the migration reports the failure");
        exactly_one_runs(&src, &dst, "vessel-mig-recv", on_target);
        nothing_left(&src, &dst);
    }
}

#[test]
fn killed_transport_during_the_transfer_thaws_the_source() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let sshd = Sshd::start();
    let (src, dst) = two_hosts();
    counter(&src, "vessel-mig-ssh");
    let resume: PathBuf = src.dir.path().join("resume");
    let c = migrate_cmd(&src, Some(&sshd), "vessel-mig-ssh", &sshd.url(&dst));
    let child = paused_at(&src, c, "migrate-transfer", Some(&resume));
    sshd.kill_sshd_processes();
    fs::write(&resume, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(125));
    exactly_one_runs(&src, &dst, "vessel-mig-ssh", false);
    wait_for("the target's receiver to clean up", || dst.left("migrate") == 0);
    nothing_left(&src, &dst);
}

/// `vessel system load --json` of `i`.
fn load(i: &Instance) -> serde_json::Value {
    serde_json::from_str(&i.ok(&["system", "load", "--json"])).unwrap()
}

#[test]
fn balance_plans_and_moves_the_container_that_evens_the_memory_out() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst) = two_hosts();
    let img = src.busybox();
    // 48, 24 and 12 MB in /dev/shm (tmpfs: charged to the container's memory cgroup).
    for (name, mb) in [("vessel-bal-big", 48), ("vessel-bal-mid", 24), ("vessel-bal-small", 12)] {
        let script = format!(
            "busybox head -c {}000000 /dev/zero > /dev/shm/x; touch /filled; sleep 1000",
            mb
        );
        src.ok(&["run", "-d", "--name", name, img, "sh", "-c", &script]);
    }
    wait_for("the memory to be filled", || {
        load(&src)["containers_memory"].as_u64().unwrap() >= 84_000_000
    });
    let l = load(&src);
    assert_eq!(l["count"], 3);
    assert_eq!(l["containers"][0]["name"], "vessel-bal-big", "biggest first: {l}");
    assert_eq!(load(&dst)["count"], 0);
    let a = format!("local://{}", src.root().display());
    let b = format!("local://{}", dst.root().display());
    let balance = |extra: &[&str]| {
        let mut c = src.cmd();
        c.args([
            "balance",
            "--remote-vessel",
            env!("CARGO_BIN_EXE_vessel"),
            "--threshold",
            "30",
        ])
        .args(extra)
        .args([&a, &b]);
        let o = c.output().unwrap();
        eprintln!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // 84 MB against 0: moving the 48 MB one leaves 36 against 48 (spread 25% < 30%).
    let plan = balance(&["--dry-run"]);
    let moves: Vec<&str> = plan.lines().filter(|l| l.starts_with("move ")).collect();
    assert_eq!(moves.len(), 1, "{plan}");
    assert!(
        moves[0].starts_with("move vessel-bal-big ") && moves[0].ends_with(&format!("to {b}")),
        "{plan}"
    );
    assert_eq!(load(&src)["count"], 3, "--dry-run moves nothing");
    balance(&[]);
    assert_eq!(state(&dst, "vessel-bal-big"), "running");
    assert!(!src.ok(&["ps", "-a"]).contains("vessel-bal-big"));
    assert_eq!(load(&src)["count"], 2);
    // Now within the threshold: no move.
    let again = balance(&["--dry-run"]);
    assert!(again.contains(": 0 move(s)"), "{again}");
    nothing_left(&src, &dst);
}

#[test]
fn migrate_command_killed_while_criu_holds_the_container_frozen() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst) = two_hosts();
    counter(&src, "vessel-mig-dump");
    // criu through a wrapper whose dump runs an action script that sleeps in
    // `post-dump` (the container is still frozen by criu then).
    let d = src.dir.path();
    let marker = d.join("in-post-dump");
    fs::write(
        d.join("action.sh"),
        format!(
            "#!/bin/sh\nif [ \"$CRTOOLS_SCRIPT_ACTION\" = post-dump ]; then touch {}; sleep 3; fi\nexit 0\n",
            marker.display()
        ),
    )
    .unwrap();
    let criu = vessel_runtime_criu();
    fs::write(
        d.join("criu"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = dump ]; then shift; exec {criu} dump --action-script {} \"$@\"; fi\nexec {criu} \"$@\"\n",
            d.join("action.sh").display()
        ),
    )
    .unwrap();
    run_vessel::sh("chmod +x criu action.sh", d);
    let url = format!("local://{}", dst.root().display());
    let mut child = migrate_cmd(&src, None, "vessel-mig-dump", &url)
        .env("VESSEL_CRIU", d.join("criu"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("criu's post-dump", || marker.exists());
    child.kill().unwrap();
    child.wait().unwrap();
    // The guard waits for that dump to end before it thaws the source.
    exactly_one_runs(&src, &dst, "vessel-mig-dump", false);
    nothing_left(&src, &dst);
}

#[test]
fn criu_probes_are_asked_once_and_the_target_prepares_before_the_freeze() {
    if !have(&["umoci", "busybox"]) {
        return;
    }
    let (src, dst) = two_hosts();
    let img = src.busybox();
    let names = ["vessel-mig-one", "vessel-mig-two"];
    for n in names {
        src.ok(&[
            "run",
            "-d",
            "--name",
            n,
            img,
            "sh",
            "-c",
            "while true; do sleep 1; done",
        ]);
    }
    // criu through a wrapper that notes each call's action and first arguments.
    let d = src.dir.path();
    let calls = d.join("criu-calls");
    fs::write(
        d.join("criu"),
        format!(
            "#!/bin/sh\necho \"$1 $2 $3\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            vessel_runtime_criu()
        ),
    )
    .unwrap();
    run_vessel::sh("chmod +x criu", d);
    let url = format!("local://{}", dst.root().display());
    for n in names {
        let o = migrate_cmd(&src, None, n, &url)
            .env("VESSEL_CRIU", d.join("criu"))
            .env("VESSEL_LOG", "debug")
            .output()
            .unwrap();
        eprintln!("{}{}", stdout(&o), stderr(&o));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("mem_dirty_track"),
            "the mode and why: {}",
            stdout(&o)
        );
        // The step lines (VESSEL_LOG=debug): the target made the container before the
        // source froze it (the receiver writes its line before it answers READY).
        let err = stderr(&o);
        let made = err.find("receive: container made (before the freeze)");
        let freeze = err.find("migrate: freeze");
        assert!(
            made.is_some() && freeze.is_some() && made < freeze,
            "made on the target, then frozen here: {err}"
        );
        assert_eq!(state(&dst, n), "running");
    }
    let text = fs::read_to_string(&calls).unwrap();
    let checks: Vec<&str> = text.lines().filter(|l| l.starts_with("check ")).collect();
    assert_eq!(
        checks.len(),
        2,
        "mem_dirty_track and uffd-noncoop asked once for both migrations: {text}"
    );
    for n in names {
        dst.ok(&["rm", "-f", n]);
    }
    nothing_left(&src, &dst);
}

/// The criu the tests use (as the runtime picks it when VESSEL_CRIU is unset).
fn vessel_runtime_criu() -> String {
    std::env::var("VESSEL_CRIU")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| {
            if Path::new("/opt/vessel-criu/bin/criu").exists() {
                "/opt/vessel-criu/bin/criu".into()
            } else {
                "criu".into()
            }
        })
}

/// A "host": an instance whose containers run in their own user namespace (the default).
fn host_ids() -> Instance {
    Instance::new()
}
