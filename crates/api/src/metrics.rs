//! `GET /metrics`: the containers' resource usage in the Prometheus exposition format
//! (OpenMetrics 1.0 text, `application/openmetrics-text; version=1.0.0`, written by the
//! prometheus-client crate), named as cAdvisor names it, so that dashboards and alerts
//! written for cAdvisor or kubelet's `/metrics/cadvisor` work unchanged.
//!
//! Every container that has a cgroup (created, running, paused) gets the labels
//! `id` (its cgroup path, as cAdvisor's `id`), `name` (its name) and `image` (the image
//! as the user named it). The numbers are read at each scrape
//! ([`vessel_engine::usage`]); nothing is kept between scrapes. Host totals are
//! `machine_memory_bytes`, `machine_cpu_cores` and vessel's own
//! `vessel_containers{state=...}` (every record, by state).
//!
//! The same router serves the API socket and the plain-HTTP `--metrics-listen`
//! endpoint ([`router`]), which serves nothing else.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use vessel_engine::db::State as RecordState;
use vessel_engine::usage::{Machine, Usage};
use vessel_engine::{Engine, Paths};

use crate::error::{ApiError, ApiResult};

/// The Content-Type of the answer (OpenMetrics text, which Prometheus 2.x and later
/// parse natively).
pub const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One container's labels and usage.
#[derive(Debug, Clone)]
pub struct ContainerMetrics {
    /// Its name (the `name` label).
    pub name: String,
    /// The image as the user named it (the `image` label).
    pub image: String,
    /// What was read.
    pub usage: Usage,
}

/// Everything one scrape answers.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The containers with a cgroup, oldest first.
    pub containers: Vec<ContainerMetrics>,
    /// Records by state: created, running, paused, exited.
    pub states: [(&'static str, u64); 4],
    /// Host totals.
    pub machine: Machine,
}

impl Default for Snapshot {
    fn default() -> Snapshot {
        Snapshot {
            containers: Vec::new(),
            states: [("created", 0), ("running", 0), ("paused", 0), ("exited", 0)],
            machine: Machine::default(),
        }
    }
}

/// Reads a [`Snapshot`] of the instance at `paths` (blocking: call it off the async
/// workers). A container that stops while it is read is left out.
///
/// Errors: the engine's, when the records or /proc cannot be read.
pub fn collect(paths: &Paths) -> vessel_engine::Result<Snapshot> {
    let engine = Engine::open(paths.clone())?;
    let oci = paths.oci_root();
    let mut snap = Snapshot {
        machine: vessel_engine::usage::machine()?,
        ..Snapshot::default()
    };
    for r in engine.list()? {
        let slot = match r.state {
            RecordState::Created => 0,
            RecordState::Running => 1,
            RecordState::Paused => 2,
            RecordState::Exited => 3,
        };
        snap.states[slot].1 += 1;
        if !r.state.is_live() {
            continue;
        }
        if let Ok(usage) = vessel_engine::usage::usage(&oci, &r.id) {
            snap.containers.push(ContainerMetrics {
                name: r.name.clone(),
                image: r.image.clone(),
                usage,
            });
        }
    }
    Ok(snap)
}

/// Writes `snap` as OpenMetrics text (ending in `# EOF`).
///
/// Errors: only a formatting failure of the encoder ([`std::fmt::Error`]).
pub fn encode(snap: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snap));
    let mut out = String::with_capacity(8192);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The handler of `GET /metrics`.
pub async fn metrics(State(paths): State<Paths>) -> ApiResult<Response> {
    let text = tokio::task::spawn_blocking(move || {
        let snap = collect(&paths).map_err(ApiError::from)?;
        encode(snap).map_err(|_| ApiError::internal("metrics: encoding the answer failed"))
    })
    .await
    .map_err(|e| ApiError::internal(format!("metrics task failed: {e}")))??;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], text).into_response())
}

/// A router with only `GET /metrics`, for the instance at `paths`.
pub fn router(paths: Paths) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(paths)
}

/// A label set: cAdvisor's `id`, `image`, `name`, then the metric's own.
type Labels = Vec<(&'static str, String)>;

/// Whether a family is a counter (named without its `_total`, which the encoder adds)
/// or a gauge.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes one metric family with its samples.
fn family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let metric_type = match kind {
        Kind::Counter => ConstCounter::new(0.0f64).metric_type(),
        Kind::Gauge => ConstGauge::new(0.0f64).metric_type(),
    };
    let mut m = enc.encode_descriptor(name, help, None, metric_type)?;
    let put = |e: MetricEncoder, v: f64| match kind {
        Kind::Counter => ConstCounter::new(v).encode(e),
        Kind::Gauge => ConstGauge::new(v).encode(e),
    };
    for (labels, v) in samples {
        if labels.is_empty() {
            // A family without labels has one sample, written bare (`machine_cpu_cores 2.0`).
            return put(m, v);
        }
        let labels: Labels = labels.into_iter().map(|(k, v)| (k, escape(&v))).collect();
        put(m.encode_family(&labels)?, v)?;
    }
    Ok(())
}

/// A label value as the exposition formats require it: `\\`, `"` and newline escaped
/// (prometheus-client writes values as given).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl ContainerMetrics {
    /// The labels of this container plus `extra`.
    fn labels(&self, extra: &[(&'static str, &str)]) -> Labels {
        let mut l = vec![
            ("id", self.usage.cgroup.to_string_lossy().into_owned()),
            ("image", self.image.clone()),
            ("name", self.name.clone()),
        ];
        l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        l
    }
}

const NS: f64 = 1e9;
const US: f64 = 1e6;

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let cs = &self.containers;
        let each = |f: &dyn Fn(&Usage) -> f64| -> Vec<(Labels, f64)> {
            cs.iter().map(|c| (c.labels(&[]), f(&c.usage))).collect()
        };
        use Kind::{Counter, Gauge};
        family(
            &mut enc,
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed in seconds.",
            Counter,
            cs.iter()
                .map(|c| (c.labels(&[("cpu", "total")]), c.usage.cpu_ns as f64 / NS)),
        )?;
        family(
            &mut enc,
            "container_cpu_user_seconds",
            "Cumulative user cpu time consumed in seconds.",
            Counter,
            each(&|u| u.cpu_user_ns as f64 / NS),
        )?;
        family(
            &mut enc,
            "container_cpu_system_seconds",
            "Cumulative system cpu time consumed in seconds.",
            Counter,
            each(&|u| u.cpu_system_ns as f64 / NS),
        )?;
        family(
            &mut enc,
            "container_memory_usage_bytes",
            "Current memory usage in bytes, including all memory regardless of when it was accessed.",
            Gauge,
            each(&|u| u.mem_usage as f64),
        )?;
        family(
            &mut enc,
            "container_memory_working_set_bytes",
            "Current working set in bytes.",
            Gauge,
            each(&|u| u.mem_working_set as f64),
        )?;
        family(
            &mut enc,
            "container_memory_rss",
            "Size of RSS in bytes.",
            Gauge,
            each(&|u| u.mem_rss as f64),
        )?;
        family(
            &mut enc,
            "container_memory_cache",
            "Number of bytes of page cache memory.",
            Gauge,
            each(&|u| u.mem_cache as f64),
        )?;
        family(
            &mut enc,
            "container_spec_memory_limit_bytes",
            "Memory limit for the container (0: none).",
            Gauge,
            each(&|u| u.mem_limit as f64),
        )?;
        family(
            &mut enc,
            "container_processes",
            "Number of processes running inside the container.",
            Gauge,
            each(&|u| u.processes as f64),
        )?;
        let per_device = |f: &dyn Fn(&vessel_engine::usage::DeviceIo) -> u64| -> Vec<(Labels, f64)> {
            cs.iter()
                .flat_map(|c| {
                    c.usage
                        .block
                        .iter()
                        .map(move |d| (c.labels(&[("device", &d.device)]), f(d) as f64))
                })
                .collect()
        };
        family(
            &mut enc,
            "container_fs_reads_bytes",
            "Cumulative count of bytes read.",
            Counter,
            per_device(&|d| d.read_bytes),
        )?;
        family(
            &mut enc,
            "container_fs_writes_bytes",
            "Cumulative count of bytes written.",
            Counter,
            per_device(&|d| d.write_bytes),
        )?;
        type NetField = fn(&vessel_engine::usage::Interface) -> u64;
        let net: [(&str, &str, NetField); 8] = [
            (
                "container_network_receive_bytes",
                "Cumulative count of bytes received.",
                |i| i.rx_bytes,
            ),
            (
                "container_network_receive_packets",
                "Cumulative count of packets received.",
                |i| i.rx_packets,
            ),
            (
                "container_network_receive_errors",
                "Cumulative count of errors encountered while receiving.",
                |i| i.rx_errors,
            ),
            (
                "container_network_receive_packets_dropped",
                "Cumulative count of packets dropped while receiving.",
                |i| i.rx_dropped,
            ),
            (
                "container_network_transmit_bytes",
                "Cumulative count of bytes transmitted.",
                |i| i.tx_bytes,
            ),
            (
                "container_network_transmit_packets",
                "Cumulative count of packets transmitted.",
                |i| i.tx_packets,
            ),
            (
                "container_network_transmit_errors",
                "Cumulative count of errors encountered while transmitting.",
                |i| i.tx_errors,
            ),
            (
                "container_network_transmit_packets_dropped",
                "Cumulative count of packets dropped while transmitting.",
                |i| i.tx_dropped,
            ),
        ];
        for (name, help, field) in net {
            let samples: Vec<(Labels, f64)> = cs
                .iter()
                .flat_map(|c| {
                    c.usage
                        .interfaces
                        .iter()
                        .map(move |i| (c.labels(&[("interface", &i.name)]), field(i) as f64))
                })
                .collect();
            family(&mut enc, name, help, Counter, samples)?;
        }
        type StallField = fn(&vessel_engine::usage::Pressure) -> u64;
        let psi: [(&str, &str, StallField); 6] = [
            (
                "container_pressure_cpu_waiting_seconds",
                "Total time duration tasks in the container have waited due to CPU congestion.",
                |p| p.cpu.some_us,
            ),
            (
                "container_pressure_cpu_stalled_seconds",
                "Total time duration no tasks in the container could make progress due to CPU congestion.",
                |p| p.cpu.full_us,
            ),
            (
                "container_pressure_memory_waiting_seconds",
                "Total time duration tasks in the container have waited due to memory congestion.",
                |p| p.memory.some_us,
            ),
            (
                "container_pressure_memory_stalled_seconds",
                "Total time duration no tasks in the container could make progress due to memory congestion.",
                |p| p.memory.full_us,
            ),
            (
                "container_pressure_io_waiting_seconds",
                "Total time duration tasks in the container have waited due to IO congestion.",
                |p| p.io.some_us,
            ),
            (
                "container_pressure_io_stalled_seconds",
                "Total time duration no tasks in the container could make progress due to IO congestion.",
                |p| p.io.full_us,
            ),
        ];
        for (name, help, field) in psi {
            let samples: Vec<(Labels, f64)> = cs
                .iter()
                .filter_map(|c| Some((c.labels(&[]), field(c.usage.pressure.as_ref()?) as f64 / US)))
                .collect();
            family(&mut enc, name, help, Counter, samples)?;
        }
        family(
            &mut enc,
            "machine_memory_bytes",
            "Amount of memory installed on the machine.",
            Gauge,
            [(Labels::new(), self.machine.memory_bytes as f64)],
        )?;
        family(
            &mut enc,
            "machine_cpu_cores",
            "Number of logical CPU cores.",
            Gauge,
            [(Labels::new(), f64::from(self.machine.cpu_cores))],
        )?;
        family(
            &mut enc,
            "vessel_containers",
            "Containers of this vessel instance by state.",
            Gauge,
            self.states
                .iter()
                .map(|(s, n)| (vec![("state", s.to_string())], *n as f64)),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use vessel_engine::usage::{DeviceIo, Interface, Pressure, Stall};

    fn snapshot() -> Snapshot {
        let usage = Usage {
            cgroup: PathBuf::from("/vessel/abc"),
            cpu_ns: 1_500_000_000,
            cpu_user_ns: 1_000_000_000,
            cpu_system_ns: 500_000_000,
            mem_usage: 10 << 20,
            mem_working_set: 6 << 20,
            mem_rss: 4 << 20,
            mem_cache: 5 << 20,
            mem_limit: 64 << 20,
            processes: 3,
            block: vec![DeviceIo {
                device: "/dev/vda".into(),
                read_bytes: 4096,
                write_bytes: 8192,
            }],
            interfaces: vec![Interface {
                name: "eth0".into(),
                rx_bytes: 100,
                rx_packets: 2,
                tx_bytes: 50,
                tx_packets: 1,
                ..Interface::default()
            }],
            pressure: Some(Pressure {
                cpu: Stall {
                    some_us: 2_500_000,
                    full_us: 0,
                },
                ..Pressure::default()
            }),
        };
        Snapshot {
            containers: vec![ContainerMetrics {
                name: "web \"1\"".into(),
                image: "busybox".into(),
                usage,
            }],
            states: [("created", 0), ("running", 1), ("paused", 0), ("exited", 2)],
            machine: Machine {
                memory_bytes: 8 << 30,
                cpu_cores: 2,
            },
        }
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find_map(|l| l.strip_prefix(prefix))
    }

    #[test]
    fn cadvisor_names_labels_and_units() {
        let t = encode(snapshot()).unwrap();
        let l = r#"id="/vessel/abc",image="busybox",name="web \"1\"""#;
        let want = [
            (
                format!("container_cpu_usage_seconds_total{{{l},cpu=\"total\"}} "),
                "1.5",
            ),
            (format!("container_cpu_user_seconds_total{{{l}}} "), "1.0"),
            (format!("container_cpu_system_seconds_total{{{l}}} "), "0.5"),
            (format!("container_memory_usage_bytes{{{l}}} "), "10485760.0"),
            (format!("container_memory_working_set_bytes{{{l}}} "), "6291456.0"),
            (format!("container_memory_rss{{{l}}} "), "4194304.0"),
            (format!("container_memory_cache{{{l}}} "), "5242880.0"),
            (format!("container_spec_memory_limit_bytes{{{l}}} "), "67108864.0"),
            (format!("container_processes{{{l}}} "), "3.0"),
            (
                format!("container_fs_reads_bytes_total{{{l},device=\"/dev/vda\"}} "),
                "4096.0",
            ),
            (
                format!("container_fs_writes_bytes_total{{{l},device=\"/dev/vda\"}} "),
                "8192.0",
            ),
            (
                format!("container_network_receive_bytes_total{{{l},interface=\"eth0\"}} "),
                "100.0",
            ),
            (
                format!("container_network_receive_packets_total{{{l},interface=\"eth0\"}} "),
                "2.0",
            ),
            (
                format!("container_network_transmit_bytes_total{{{l},interface=\"eth0\"}} "),
                "50.0",
            ),
            (
                format!("container_network_transmit_packets_total{{{l},interface=\"eth0\"}} "),
                "1.0",
            ),
            (format!("container_pressure_cpu_waiting_seconds_total{{{l}}} "), "2.5"),
            (format!("container_pressure_cpu_stalled_seconds_total{{{l}}} "), "0.0"),
            (format!("container_pressure_io_waiting_seconds_total{{{l}}} "), "0.0"),
            ("machine_memory_bytes ".to_string(), "8589934592.0"),
            ("machine_cpu_cores ".to_string(), "2.0"),
            ("vessel_containers{state=\"running\"} ".to_string(), "1.0"),
            ("vessel_containers{state=\"exited\"} ".to_string(), "2.0"),
            ("vessel_containers{state=\"paused\"} ".to_string(), "0.0"),
        ];
        for (prefix, value) in &want {
            assert_eq!(sample(&t, prefix), Some(*value), "{prefix} in:\n{t}");
        }
        assert!(t.contains("# TYPE container_cpu_usage_seconds counter\n"), "{t}");
        assert!(t.contains("# TYPE container_memory_usage_bytes gauge\n"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }

    #[test]
    fn no_pressure_no_psi_samples() {
        let mut s = snapshot();
        s.containers[0].usage.pressure = None;
        s.containers[0].usage.interfaces.clear();
        let t = encode(s).unwrap();
        assert!(!t.lines().any(|l| l.starts_with("container_pressure_")), "{t}");
        assert!(!t.lines().any(|l| l.starts_with("container_network_")), "{t}");
        // The families are still described, so a query finds no sample rather than an
        // unknown name.
        assert!(
            t.contains("# TYPE container_pressure_cpu_waiting_seconds counter"),
            "{t}"
        );
    }

    #[test]
    fn label_values_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("/vessel/x"), "/vessel/x");
    }

    #[test]
    fn empty_instance() {
        let t = encode(Snapshot::default()).unwrap();
        assert!(!t.lines().any(|l| l.starts_with("container_")), "{t}");
        assert!(t.contains("machine_cpu_cores 0.0\n"), "{t}");
    }
}
