//! `GET /metrics` of `vessel serve` end to end: a real container with a memory limit
//! read back from the API socket and from the plain-HTTP `--metrics-listen` endpoint,
//! and through a real Prometheus server (Debian's binary, unpacked by scripts/setup to
//! /opt/vessel-prometheus, never installed) that scrapes it on 127.0.0.1 and answers
//! its query API.

mod instance;
mod run_vessel;
mod served;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use instance::{have, Instance};
use served::{curl, free_port, Server, DOCKER};

const PROMETHEUS: &str = "/opt/vessel-prometheus/bin/prometheus";

fn tools() -> bool {
    if !Path::new(DOCKER).exists() {
        eprintln!("\n!!!!! SKIPPED: no {DOCKER} (scripts/setup unpacks it) !!!!!\n");
        return false;
    }
    have(&["umoci", "busybox", "curl"])
}

/// On a host whose block I/O is in v1's blkio controller, kernel 6.x counts a
/// cgroup's I/O to a disk only while the cgroup has a blkio.throttle rule for that disk
/// (v2's io.stat always counts). Gives the container's cgroup rules of 1 TiB/s (no
/// limit) for the disk under `root`; false when that is not possible (not a whole disk,
/// no blkio hierarchy: then block I/O is not checked). O_DIRECT, because v1 charges
/// buffered writeback to no container.
fn v1_count_block_io(cgroup: &str, root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dir = Path::new("/sys/fs/cgroup/blkio").join(cgroup.trim_start_matches('/'));
    if !dir.is_dir() {
        return Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    }
    let dev = std::fs::metadata(root).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let ok = ["blkio.throttle.write_bps_device", "blkio.throttle.read_bps_device"]
        .iter()
        .all(|f| std::fs::write(dir.join(f), format!("{major}:{minor} 1099511627776")).is_ok());
    if !ok {
        eprintln!("block I/O not checked: no throttle rule possible for {major}:{minor}");
    }
    ok
}

/// The value of the first sample line that starts with `name{` and has every label of
/// `labels` (`key="value"` strings).
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, v) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|want| set.contains(want))
            .then(|| v.trim().parse().ok())?
    })
}

/// The container's cgroup2 directory, where PSI files would be (unified or hybrid host).
fn cgroup2_dir(cgroup: &str) -> Option<PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    [PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/sys/fs/cgroup")]
        .into_iter()
        .map(|d| d.join(rel))
        .find(|d| d.join("cpu.pressure").exists())
}

#[test]
fn metrics_of_a_container_with_a_memory_limit() {
    if !tools() {
        return;
    }

    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start_with_metrics(&i);
    // dd waits for /go, so that the test can first give the container's v1 blkio
    // cgroup a throttle rule on the disk (see v1_count_block_io).
    let id = s.docker_ok(&[
        "run",
        "-d",
        "--name",
        "m1",
        "--memory",
        "64m",
        img,
        "sh",
        "-c",
        "while [ ! -e /go ]; do sleep 0.1; done; \
         dd if=/dev/zero of=/f bs=1M count=8 oflag=direct 2>/dev/null; \
         dd if=/f of=/dev/null bs=1M iflag=direct 2>/dev/null; touch /done; sleep 100",
    ]);
    let id = id.trim().to_string();
    let cgroup = {
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(i.root().join("containers").join(&id).join("config.json")).unwrap())
                .unwrap();
        cfg["linux"]["cgroupsPath"].as_str().unwrap().to_string()
    };
    let block_io_counted = v1_count_block_io(&cgroup, &i.root());
    i.ok(&["exec", "m1", "touch", "/go"]);
    instance::wait_for("dd in the container", || {
        i.v(&["exec", "m1", "sh", "-c", "test -e /done"]).status.success()
    });
    let name = r#"name="m1""#;
    let id_label = format!("id=\"{cgroup}\"");
    let labels = [name, &id_label, r#"image="localhost/bb:1""#];

    // The socket and the TCP endpoint give the same families.
    let (code, text) = s.curl(&["http://d/metrics"]);
    assert_eq!(code, 200);
    let addr = s.metrics.clone().unwrap();
    let (code, tcp) = curl(&[&format!("http://{addr}/metrics")]);
    assert_eq!(code, 200);
    for t in [&text, &tcp] {
        assert_eq!(
            value(t, "container_spec_memory_limit_bytes", &labels),
            Some(67108864.0),
            "{t}"
        );
    }
    let mut text = text;
    let start = Instant::now();
    while value(&text, "container_processes", &labels) != Some(2.0)
        && value(&text, "container_processes", &labels) != Some(1.0)
        && start.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(200));
        text = s.curl(&["http://d/metrics"]).1;
    }
    let procs = value(&text, "container_processes", &labels).unwrap();
    assert!((1.0..=2.0).contains(&procs), "sh (and sleep): {procs}");
    let cpu = value(&text, "container_cpu_usage_seconds_total", &[name, r#"cpu="total""#]).unwrap();
    let user = value(&text, "container_cpu_user_seconds_total", &labels).unwrap();
    let system = value(&text, "container_cpu_system_seconds_total", &labels).unwrap();
    assert!(
        cpu > 0.0 && user + system > 0.0,
        "cpu {cpu} user {user} system {system}"
    );
    let usage = value(&text, "container_memory_usage_bytes", &labels).unwrap();
    let ws = value(&text, "container_memory_working_set_bytes", &labels).unwrap();
    assert!(
        usage > 0.0 && ws <= usage && usage <= 67108864.0,
        "usage {usage} working set {ws}"
    );
    assert!(value(&text, "container_memory_rss", &labels).is_some(), "{text}");
    assert!(value(&text, "container_memory_cache", &labels).is_some(), "{text}");
    let sum = |family: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(name) && l.contains("device=\""))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    let (written, read) = (
        sum("container_fs_writes_bytes_total"),
        sum("container_fs_reads_bytes_total"),
    );
    if block_io_counted {
        assert!(written >= 8.0 * 1048576.0, "dd wrote 8 MiB with O_DIRECT: {written}");
        assert!(read >= 8.0 * 1048576.0, "dd read 8 MiB with O_DIRECT: {read}");
    }
    // --network none: only lo, which is not reported (as cAdvisor leaves it out).
    assert!(!text.contains("container_network_receive_bytes_total{"), "{text}");
    if let Some(dir) = cgroup2_dir(&cgroup) {
        eprintln!("PSI files in {}", dir.display());
        assert!(value(&text, "container_pressure_cpu_waiting_seconds_total", &labels).is_some());
        assert!(value(&text, "container_pressure_memory_stalled_seconds_total", &labels).is_some());
        assert!(value(&text, "container_pressure_io_waiting_seconds_total", &labels).is_some());
    } else {
        assert!(
            !text.contains("container_pressure_cpu_waiting_seconds_total{"),
            "{text}"
        );
    }
    let cores = std::thread::available_parallelism().unwrap().get() as f64;
    assert!(
        text.lines().any(|l| l == format!("machine_cpu_cores {cores:.1}")),
        "{text}"
    );
    assert!(
        value(&text, "vessel_containers", &[r#"state="running""#]) == Some(1.0),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("machine_memory_bytes ")), "{text}");

    // The TCP endpoint serves the metrics and nothing else.
    for path in ["/containers/json", "/_ping", "/v1.41/containers/json", "/version"] {
        let (code, body) = curl(&[&format!("http://{addr}{path}")]);
        assert_eq!(code, 404, "{path}: {body}");
    }
    let (code, _) = curl(&["-X", "POST", &format!("http://{addr}/containers/create")]);
    assert!(code == 404 || code == 405, "{code}");

    // Stopped: its samples go; it is counted as exited.
    s.docker_ok(&["stop", "-t", "0", "m1"]);
    let (_, text) = s.curl(&["http://d/metrics"]);
    assert!(!text.contains(name), "{text}");
    assert!(
        value(&text, "vessel_containers", &[r#"state="exited""#]) == Some(1.0),
        "{text}"
    );
}

/// A prometheus server of the test on 127.0.0.1, its config and storage in a temp dir;
/// killed by pid and reaped on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("vessel-prom-").tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: vessel\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, port, _dir: dir }
    }

    /// `GET /api/v1/query?query=Q`: the body.
    fn query(&self, q: &str) -> String {
        curl(&[
            "-G",
            "--data-urlencode",
            &format!("query={q}"),
            &format!("http://127.0.0.1:{}/api/v1/query", self.port),
        ])
        .1
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_memory_limit() {
    if !tools() {
        return;
    }
    if !Path::new(PROMETHEUS).exists() {
        eprintln!("\n!!!!! SKIPPED: no {PROMETHEUS} (scripts/setup unpacks it) !!!!!\n");
        return;
    }
    let i = Instance::new();
    let img = i.busybox();
    let s = Server::start_with_metrics(&i);
    s.docker_ok(&["run", "-d", "--name", "scraped", "--memory", "48m", img, "sleep", "100"]);
    let p = Prometheus::start(s.metrics.as_deref().unwrap());
    // Prometheus starts, scrapes every second; the sample is there after a scrape.
    let start = Instant::now();
    let found = loop {
        let body = p.query(r#"container_spec_memory_limit_bytes{name="scraped"}"#);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if let Some(r) = v["data"]["result"].as_array().and_then(|a| a.first()) {
            break Some(r.clone());
        }
        if start.elapsed() > Duration::from_secs(60) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let r = found.unwrap_or_else(|| panic!("no sample after 60 s; prometheus said:\n{}", p.log()));
    assert_eq!(r["value"][1], "50331648", "{r}");
    assert_eq!(r["metric"]["job"], "vessel", "{r}");
    assert_eq!(r["metric"]["image"], "localhost/bb:1", "{r}");
    // The scrape target is healthy (up == 1).
    let up: serde_json::Value = serde_json::from_str(&p.query(r#"up{job="vessel"}"#)).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}
