//! Container commands in docker's and podman's conventions: run, create, start, stop,
//! kill, restart, rm, ps, logs, exec, inspect, wait, top, stats, update, pause,
//! unpause, rename and port. Parsing and printing only; the engine does the work.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};
use vessel_engine::db::{Record, State};
use vessel_engine::options::{RunOptions, Seccomp};
use vessel_engine::{units, Engine};
use vessel_image::{ImageRecord, Reference, Store};

/// The flags of `vessel run` and `vessel create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Set environment variables (K=V, or K to take the value from here).
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    /// Read environment variables from a file (K=V lines).
    #[arg(long = "env-file")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Bind mount a host path (HOST:CONTAINER[:ro][,idmap]) or a named volume (NAME:CONTAINER[:ro], made on first use).
    /// (Parsed when the container is made, on the host that makes it: with `--remote`
    /// the host paths are the remote's, as with `docker -H`.)
    #[arg(short = 'v', long = "volume")]
    pub(crate) volume: Vec<String>,
    /// A bind mount or named volume as type=bind|volume,source=SRC,target=DST[,readonly][,idmap].
    #[arg(long = "mount", value_parser = parse_mount)]
    pub(crate) mount: Vec<vessel_engine::options::Volume>,
    /// Mount a tmpfs: PATH[:OPTIONS].
    #[arg(long)]
    pub(crate) tmpfs: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub(crate) workdir: Option<String>,
    /// User to run as: USER[:GROUP], names or numbers.
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub(crate) hostname: Option<String>,
    /// Override the image's entrypoint ("" clears it).
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Mount the root file system read-only.
    #[arg(long)]
    pub(crate) read_only: bool,
    #[command(flatten)]
    pub(crate) limits: Limits,
    /// Add a capability (NET_ADMIN, ALL).
    #[arg(long)]
    pub(crate) cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    pub(crate) cap_drop: Vec<String>,
    /// Security options: seccomp=unconfined or seccomp=FILE.
    #[arg(long)]
    pub(crate) security_opt: Vec<String>,
    /// Every capability and device, no seccomp filter, no masked paths; the host's ids (--userns=host).
    #[arg(long)]
    pub(crate) privileged: bool,
    /// User namespace: auto (a private range of 65536 host ids, the default), host (the host's ids) or keep-id.
    #[arg(long, env = "VESSEL_USERNS")]
    pub(crate) userns: Option<String>,
    /// Uid map line CONTAINER:HOST:SIZE (repeatable): a user namespace with these maps.
    #[arg(long, value_parser = parse_idmap)]
    pub(crate) uidmap: Vec<vessel_engine::options::IdMap>,
    /// Gid map line CONTAINER:HOST:SIZE (repeatable; the uid maps when not given).
    #[arg(long, value_parser = parse_idmap)]
    pub(crate) gidmap: Vec<vessel_engine::options::IdMap>,
    /// Run an init (catatonit) as pid 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub(crate) init: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub(crate) rm: bool,
    /// Network: bridge (default: the network `vessel`), none, host, container:NAME, or a network's name.
    #[arg(long, alias = "net", env = "VESSEL_NETWORK")]
    pub(crate) network: Option<String>,
    /// Publish a port: [IP:][HOSTPORT:]CTRPORT[/tcp|udp].
    /// (Parsed on the host that makes the container: a free host port is the remote's.)
    #[arg(short = 'p', long = "publish")]
    pub(crate) publish: Vec<String>,
    /// Publish every port the image exposes on a free host port.
    #[arg(short = 'P', long)]
    pub(crate) publish_all: bool,
    /// Nameserver for the container's /etc/resolv.conf.
    #[arg(long)]
    pub(crate) dns: Vec<String>,
    /// Extra /etc/hosts line: NAME:IP.
    #[arg(long, value_parser = parse_add_host)]
    pub(crate) add_host: Vec<String>,
    /// The container's address on a user network.
    #[arg(long)]
    pub(crate) ip: Option<String>,
    /// The container's MAC address.
    #[arg(long = "mac-address")]
    pub(crate) mac_address: Option<String>,
    /// Storage options: size=SIZE, a disk quota for the container's writes (k, m, g: base 1024).
    #[arg(long, value_parser = parse_storage_opt)]
    pub(crate) storage_opt: Vec<String>,
    /// Cgroup under which the container's cgroup is made [default: /vessel].
    #[arg(long, env = "VESSEL_CGROUP_PARENT")]
    pub(crate) cgroup_parent: Option<String>,
    /// Require https for a pull (see `vessel pull --tls-verify`).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub(crate) tls_verify: Option<bool>,
    /// Set metadata: KEY=VALUE.
    #[arg(short = 'l', long = "label")]
    pub(crate) label: Vec<String>,
    /// Another name its peers on the network find it by.
    #[arg(long = "network-alias")]
    pub(crate) network_alias: Vec<String>,
    #[command(flatten)]
    pub(crate) health: HealthArgs,
    /// Pull a missing eStargz image lazily (see `vessel pull --lazy`); `--lazy=false`: whole.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true, action = clap::ArgAction::Set, default_value_t = false)]
    pub(crate) lazy: bool,
    /// The image (`host` for the built-in sparse root).
    pub(crate) image: String,
    /// The command and its arguments (replaces the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

/// The resource limits of `run`, `create` and `update`.
#[derive(Args, Debug)]
pub struct Limits {
    /// Memory limit (512m, 1g).
    #[arg(short = 'm', long, value_parser = parse_memory)]
    pub(crate) memory: Option<i64>,
    /// Number of CPUs (1.5).
    #[arg(long, value_parser = parse_cpus)]
    pub(crate) cpus: Option<f64>,
    /// Limit on the number of processes (-1 or 0: none).
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) pids_limit: Option<i64>,
}

/// The healthcheck flags of `run` and `create` (docker's).
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Command to run to check health (through /bin/sh -c in the container).
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between checks (ms, s, m, h) [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    health_interval: Option<std::time::Duration>,
    /// Consecutive failures needed to report unhealthy [default: 3].
    #[arg(long)]
    health_retries: Option<u32>,
    /// Maximum time one check may run (ms, s, m, h) [default: 30s].
    #[arg(long, value_parser = parse_duration)]
    health_timeout: Option<std::time::Duration>,
    /// Start period during which failures do not count (ms, s, m, h) [default: 0s].
    #[arg(long, value_parser = parse_duration)]
    health_start_period: Option<std::time::Duration>,
    /// Disable any container-specified healthcheck.
    #[arg(long)]
    no_healthcheck: bool,
}

impl HealthArgs {
    pub(crate) fn healthcheck(&self) -> Result<Option<vessel_engine::health::Healthcheck>> {
        if self.no_healthcheck {
            if self.health_cmd.is_some() {
                bail!("--no-healthcheck conflicts with --health-cmd: give one of them");
            }
            return Ok(Some(vessel_engine::health::Healthcheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }));
        }
        let Some(cmd) = &self.health_cmd else {
            if self.health_interval.is_some() || self.health_retries.is_some() || self.health_timeout.is_some() {
                bail!("--health-interval, --health-retries and --health-timeout need --health-cmd");
            }
            return Ok(None);
        };
        Ok(Some(vessel_engine::health::Healthcheck {
            test: vec!["CMD-SHELL".into(), cmd.clone()],
            interval: self.health_interval.unwrap_or_default(),
            timeout: self.health_timeout.unwrap_or_default(),
            retries: self.health_retries.unwrap_or_default(),
            start_period: self.health_start_period.unwrap_or_default(),
        }))
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e} (use 500ms, 10s, 2m)"))?;
    if d < std::time::Duration::from_millis(1) && !d.is_zero() {
        return Err(format!("invalid duration {s:?}: at least 1ms"));
    }
    Ok(d)
}

/// A healthcheck as docker's `Config.Healthcheck` (durations in nanoseconds).
pub(crate) fn healthcheck_json(h: &vessel_engine::health::Healthcheck) -> serde_json::Value {
    serde_json::json!({"Test": h.test, "Interval": h.interval.as_nanos() as u64,
        "Timeout": h.timeout.as_nanos() as u64, "Retries": h.retries,
        "StartPeriod": h.start_period.as_nanos() as u64})
}

/// `vessel run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    #[command(flatten)]
    pub(crate) create: CreateArgs,
}

fn parse_memory(s: &str) -> Result<i64, String> {
    units::parse_bytes("--memory", s).map_err(|e| e.to_string())
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    units::parse_cpus(s).map_err(|e| e.to_string())
}

fn parse_add_host(s: &str) -> Result<String, String> {
    vessel_engine::network::check_add_host(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_storage_opt(s: &str) -> Result<String, String> {
    vessel_engine::quota::parse_storage_opts(&[s.to_string()])
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

fn parse_idmap(s: &str) -> Result<vessel_engine::options::IdMap, String> {
    vessel_engine::idmap::parse_map(s).map_err(|e| e.to_string())
}

fn parse_mount(s: &str) -> Result<vessel_engine::options::Volume, String> {
    units::parse_mount(s).map_err(|e| e.to_string())
}

impl CreateArgs {
    fn options(&self) -> Result<RunOptions> {
        let mut seccomp = Seccomp::Default;
        for o in &self.security_opt {
            match o.split_once(['=', ':']) {
                Some(("seccomp", "unconfined")) => seccomp = Seccomp::Unconfined,
                Some(("seccomp", f)) => seccomp = Seccomp::File(f.into()),
                Some(("label" | "apparmor", _)) | Some(("no-new-privileges", _)) => {}
                _ => bail!("invalid --security-opt {o:?}: use seccomp=unconfined or seccomp=FILE"),
            }
        }
        Ok(RunOptions {
            name: self.name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            entrypoint: self.entrypoint.clone(),
            env: self.env.clone(),
            env_files: self.env_file.clone(),
            volumes: self
                .volume
                .iter()
                .map(|v| units::parse_volume(v))
                .collect::<vessel_engine::Result<Vec<_>>>()?
                .into_iter()
                .chain(self.mount.iter().cloned())
                .collect(),
            tmpfs: self.tmpfs.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            read_only: self.read_only,
            memory: self.limits.memory,
            cpus: self.limits.cpus,
            pids_limit: self.limits.pids_limit,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            seccomp,
            privileged: self.privileged,
            userns: self.userns.clone().filter(|u| !u.is_empty()),
            uidmap: self.uidmap.clone(),
            gidmap: self.gidmap.clone(),
            init: self.init,
            tty: self.tty,
            interactive: self.interactive,
            rm: self.rm,
            cgroup_parent: self.cgroup_parent.clone(),
            network: self.network.clone(),
            publish: self
                .publish
                .iter()
                .map(|p| vessel_net::parse_publish(p))
                .collect::<std::result::Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect(),
            publish_all: self.publish_all,
            dns: self.dns.clone(),
            add_hosts: self.add_host.clone(),
            ip: self.ip.clone(),
            mac: self.mac_address.clone(),
            storage_opt: vessel_engine::quota::parse_storage_opts(&self.storage_opt)?,
            healthcheck: self.health.healthcheck()?,
            network_aliases: self.network_alias.clone(),
            labels: self
                .label
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (l.clone(), String::new()),
                })
                .collect(),
            ..RunOptions::default()
        })
    }
}

/// Pulls a missing image for `run`/`create`, with podman's messages on stderr.
pub(crate) fn puller(tls_verify: Option<bool>) -> impl FnMut(&Store, &str) -> vessel_image::Result<ImageRecord> {
    lazy_puller(tls_verify, false)
}

/// [`puller`], lazily for eStargz images when `lazy` ([`crate::images::pull_lazy`]).
pub(crate) fn lazy_puller(
    tls_verify: Option<bool>,
    lazy: bool,
) -> impl FnMut(&Store, &str) -> vessel_image::Result<ImageRecord> {
    move |store, name| {
        let reference = Reference::parse(name)?;
        eprintln!("Trying to pull {reference}...");
        let opts = vessel_image::pull::PullOptions {
            tls_verify,
            ..Default::default()
        };
        if lazy {
            if let Some(rec) = crate::images::pull_lazy(store, &reference, &opts)? {
                return Ok(rec);
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| vessel_image::ImageError::io("start the async runtime", "", e))?;
        let rec = rt.block_on(vessel_image::pull::pull(
            store,
            &reference,
            &opts,
            std::sync::Arc::new(vessel_image::pull::NoProgress),
        ));
        rt.shutdown_background();
        rec
    }
}

/// The exit status of a failed command: docker's 125/126/127.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    e.downcast_ref::<vessel_engine::Error>().map_or(125, |e| e.exit_code())
}

/// `vessel create`: prints the new container's id.
pub fn create(engine: &Engine, a: &CreateArgs) -> Result<i32> {
    let rec = engine.create(a.options()?, &mut lazy_puller(a.tls_verify, a.lazy))?;
    println!("{}", rec.id);
    Ok(0)
}

/// `vessel run`.
pub fn run(engine: &Engine, a: &RunArgs) -> Result<i32> {
    let c = &a.create;
    let rec = engine.create(c.options()?, &mut lazy_puller(c.tls_verify, c.lazy))?;
    if a.detach {
        if let Err(e) = engine.start(&rec) {
            let _ = engine.remove(&rec, true);
            return Err(e.into());
        }
        println!("{}", rec.id);
        return Ok(0);
    }
    match attach(engine, &rec, c.interactive, c.tty, true) {
        Ok(code) => Ok(code),
        Err(e) => {
            if let Ok(r) = engine.find(&rec.id) {
                let _ = engine.remove(&r, true);
            }
            Err(e)
        }
    }
}

/// Attaches our stdio to the container (starting it with `start`), forwards signals
/// (without a tty: to the container, as docker's sig-proxy; SIGWINCH: the window
/// size), and returns its exit code.
fn attach(engine: &Engine, rec: &Record, stdin: bool, tty: bool, start: bool) -> Result<i32> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
    ] {
        set.add(s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("block signals")?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC).context("signalfd")?;
    let _raw = (tty && stdin && std::io::stdin().is_terminal()).then(vessel_runtime::foreground::RawMode::enter);
    let att = engine.attach(rec, stdin, start)?;
    loop {
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(att.socket().as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("poll: {e}"),
        }
        let sig_ready = fds[0].revents().is_some_and(|r| !r.is_empty());
        let sock_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        if sig_ready {
            if let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGWINCH {
                    att.resize();
                } else if att.pid > 0 {
                    // SAFETY: kill takes plain integers; the pid is the container's init,
                    // held as a child by its monitor, so it cannot be reused meanwhile.
                    unsafe { libc::kill(att.pid, sig) };
                }
            }
        }
        if sock_ready {
            if let Some(code) = att.poll_exit() {
                return Ok(if code < 0 { 125 } else { code });
            }
        }
    }
}

/// Runs `f` on each named container, printing each name as docker does.
fn each(engine: &Engine, names: &[String], f: impl Fn(&Record) -> vessel_engine::Result<()>) -> Result<i32> {
    for c in names {
        f(&engine.find(c)?)?;
        println!("{c}");
    }
    Ok(0)
}

/// `vessel start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach stdout and stderr and wait for the exit.
    #[arg(short = 'a', long)]
    pub(crate) attach: bool,
    /// Attach stdin too.
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn start(engine: &Engine, a: &StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        let [one] = a.containers.as_slice() else {
            bail!("start --attach takes one container");
        };
        let r = engine.find(one)?;
        return attach(engine, &r, a.interactive, r.options.tty, true);
    }
    each(engine, &a.containers, |r| engine.start(r))
}

/// `vessel attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin (output only).
    #[arg(long)]
    pub(crate) no_stdin: bool,
    /// The running container.
    pub(crate) container: String,
}

/// `vessel attach`: our stdio to a running container's (its stdin when it was made
/// with `-i`), until it exits; its exit code.
pub fn attach_running(engine: &Engine, a: &AttachArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    if !matches!(r.state, State::Running | State::Paused) {
        bail!("container {} is not running: start it with `vessel start -a`", r.name);
    }
    attach(engine, &r, r.options.interactive && !a.no_stdin, r.options.tty, false)
}

/// `vessel stop` / `vessel restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short = 't', long, default_value_t = 10)]
    pub(crate) time: u64,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn stop(engine: &Engine, a: &StopArgs, restart: bool) -> Result<i32> {
    each(engine, &a.containers, |r| {
        engine.stop(r, Duration::from_secs(a.time))?;
        if restart {
            engine.start(&engine.find(&r.id)?)?;
        }
        Ok(())
    })
}

/// `vessel kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send (name or number).
    #[arg(short = 's', long, default_value = "KILL")]
    pub(crate) signal: String,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn kill(engine: &Engine, a: &KillArgs) -> Result<i32> {
    let sig = vessel_runtime::signal::parse(&a.signal)?;
    each(engine, &a.containers, |r| engine.kill(r, sig))
}

/// `vessel rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Stop running containers first (SIGKILL).
    #[arg(short = 'f', long)]
    pub(crate) force: bool,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn rm(engine: &Engine, a: &RmArgs) -> Result<i32> {
    each(engine, &a.containers, |r| engine.remove(r, a.force))
}

/// Output format of listings.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// `vessel ps`.
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show every container (default: running ones).
    #[arg(short = 'a', long)]
    pub(crate) all: bool,
    /// Print ids only.
    #[arg(short = 'q', long)]
    pub(crate) quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
}

fn protocol(p: &vessel_net::PortMapping) -> &'static str {
    match p.protocol {
        vessel_net::Protocol::Tcp => "tcp",
        vessel_net::Protocol::Udp => "udp",
    }
}

/// The PORTS column of `ps`, docker's form: `0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp`.
fn ports_text(ports: &[vessel_net::PortMapping]) -> String {
    ports
        .iter()
        .map(|p| {
            format!(
                "{}:{}->{}/{}",
                p.host_ip.as_deref().unwrap_or("0.0.0.0"),
                p.host_port,
                p.container_port,
                protocol(p)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `Ports` of `ps --format json`, podman's shape.
fn ps_ports(ports: &[vessel_net::PortMapping]) -> Vec<serde_json::Value> {
    ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "host_ip": p.host_ip.as_deref().unwrap_or(""), "container_port": p.container_port,
                "host_port": p.host_port, "range": 1, "protocol": protocol(p),
            })
        })
        .collect()
}

pub fn ps(engine: &Engine, a: &PsArgs) -> Result<i32> {
    let recs: Vec<Record> = engine
        .list()?
        .into_iter()
        .filter(|r| a.all || matches!(r.state, State::Running | State::Paused))
        .collect();
    if a.quiet {
        for r in &recs {
            println!("{}", &r.id[..12]);
        }
        return Ok(0);
    }
    if a.format == Format::Json {
        let out: Vec<serde_json::Value> = recs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "Id": r.id, "Names": [r.name], "Image": r.image, "ImageID": r.image_id,
                    "Command": r.command, "Created": r.created_at, "State": r.state.as_str(),
                    "Status": engine.status_text(r), "Pid": r.pid.unwrap_or(0), "ExitCode": r.exit_code.unwrap_or(0),
                    "StartedAt": r.started_at, "ExitedAt": r.finished_at, "Ports": ps_ports(&r.options.publish),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]);
    for r in &recs {
        let mut cmd = r.command.join(" ");
        if cmd.len() > 20 {
            cmd = format!("{}...", cmd.chars().take(17).collect::<String>());
        }
        t.add_row([
            r.id[..12].to_string(),
            r.image.clone(),
            format!("\"{cmd}\""),
            format!(
                "{} ago",
                vessel_engine::status::human(vessel_engine::status::since(&r.created_at))
            ),
            engine.status_text(r),
            ports_text(&r.options.publish),
            r.name.clone(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// `vessel logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Keep printing new output until the container exits.
    #[arg(short = 'f', long)]
    pub(crate) follow: bool,
    /// Only the last N lines.
    #[arg(long, short = 'n')]
    pub(crate) tail: Option<usize>,
    /// Print each line's time.
    #[arg(short = 't', long)]
    pub(crate) timestamps: bool,
    /// The container.
    pub(crate) container: String,
}

pub fn logs(engine: &Engine, a: &LogsArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    let opts = vessel_engine::logs::ReadOptions {
        tail: a.tail,
        timestamps: a.timestamps,
    };
    // Follow while the container can still write: it is live and its monitor (the
    // log's only writer) runs.
    let mut running = || {
        engine
            .db
            .get(&r.id)
            .ok()
            .flatten()
            .is_some_and(|r| r.state.is_live() && engine.health(&r) == vessel_engine::containers::Health::Ok)
    };
    vessel_engine::logs::read(
        &engine.paths.log(&r.id),
        &opts,
        a.follow,
        &mut running,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(0)
}

/// `vessel exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Run in the background.
    #[arg(short = 'd', long)]
    pub(crate) detach: bool,
    /// Set environment variables.
    #[arg(short = 'e', long = "env")]
    pub(crate) env: Vec<String>,
    /// User: USER[:GROUP].
    #[arg(short = 'u', long)]
    pub(crate) user: Option<String>,
    /// Working directory.
    #[arg(short = 'w', long)]
    pub(crate) workdir: Option<String>,
    /// Every capability.
    #[arg(long)]
    pub(crate) privileged: bool,
    /// The container.
    pub(crate) container: String,
    /// The command.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) command: Vec<String>,
}

pub fn exec(engine: &Engine, a: &ExecArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    let state = engine.runtime_state(&r)?;
    let spec = engine.spec(&r)?;
    let process = vessel_engine::exec::process(
        &engine.paths,
        &r,
        &spec,
        &vessel_engine::exec::ExecRequest {
            command: a.command.clone(),
            env: a.env.clone(),
            user: a.user.clone(),
            workdir: a.workdir.clone(),
            tty: a.tty,
            privileged: a.privileged,
            // The size of the terminal we run on (the user's, or `vessel serve`'s pty
            // sized by the client): set before the process starts.
            console_size: rustix::termios::tcgetwinsize(std::io::stdin())
                .ok()
                .map(|ws| (ws.ws_row, ws.ws_col)),
        },
    )?;
    if vessel_engine::network::grants_net_admin(process.capabilities().as_ref()) {
        // It may change the container's network namespace: never hand that to another.
        vessel_engine::network::taint(&engine.paths, &r.id)?;
    }
    if !a.interactive && !a.tty {
        let null = std::fs::File::open("/dev/null").context("open /dev/null")?;
        rustix::stdio::dup2_stdin(&null).context("stdin from /dev/null")?;
    }
    let signals = (!a.detach)
        .then(vessel_runtime::foreground::Signals::block)
        .transpose()?;
    let (console, ours) = if a.tty {
        let (x, y) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )?;
        (Some(y), Some(x))
    } else {
        (None, None)
    };
    let pid = vessel_runtime::exec::exec(
        &state,
        vessel_runtime::ExecOptions {
            process,
            console,
            preserve_fds: 0,
            spec,
            seccomp_cache: Some(vessel_runtime::seccomp::cache_dir(&engine.paths.oci_root())),
            sub_cgroups: Vec::new(),
            ignore_paused: false,
        },
    )
    .map_err(vessel_engine::error::classify)?;
    let master = match ours {
        Some(s) => Some(vessel_runtime::console::recv_fd(&s)?),
        None => None,
    };
    match signals {
        Some(s) => Ok(vessel_runtime::foreground::wait(pid, &s, master)?),
        None => Ok(0),
    }
}

/// `vessel inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print each container through a Go template (docker's subset: `{{.State.Pid}}`,
    /// `{{json .Config}}`, `{{range .Config.Env}}{{.}} {{end}}`, `{{if}}`), or `json`.
    #[arg(short = 'f', long)]
    pub(crate) format: Option<String>,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn inspect(engine: &Engine, a: &InspectArgs) -> Result<i32> {
    let template = match a.format.as_deref() {
        None | Some("json") => None,
        Some(t) => Some(crate::template::Template::parse(t)?),
    };
    let mut out = Vec::new();
    for c in &a.containers {
        let r = engine.find(c)?;
        let spec = engine.spec(&r).ok();
        let o = &r.options;
        let vessel_engine::limits::Limits {
            memory,
            nano_cpus,
            pids: pids_limit,
        } = engine.limits(&r, spec.as_ref());
        let attachment = vessel_engine::network::attachment(&engine.paths, &r.id);
        let disk = engine.disk_usage(&r)?;
        let (snapshot_count, snapshot_size) = vessel_engine::snapshots::usage(engine, &r);
        let next_snapshot = vessel_engine::snapshots::next_due(&r)
            .ok()
            .flatten()
            .map(vessel_engine::snapshots::format_time);
        out.push(serde_json::json!({
            "Id": r.id,
            "Name": r.name,
            "Created": r.created_at,
            "Path": r.command.first(),
            "Args": r.command.get(1..).unwrap_or(&[]),
            "State": {
                "Status": r.state.as_str(),
                "Running": matches!(r.state, State::Running | State::Paused),
                "Paused": r.state == State::Paused,
                "OOMKilled": r.oom_killed,
                "Pid": r.pid.unwrap_or(0),
                "ExitCode": r.exit_code.unwrap_or(0),
                "StartedAt": r.started_at,
                "FinishedAt": r.finished_at,
                "MonitorPid": r.monitor_pid.unwrap_or(0),
                "Monitor": format!("{:?}", engine.health(&r)),
                // docker's State.Health: only for a container with a healthcheck.
                "Health": vessel_engine::health::read(&engine.paths, &r.id)
                    .filter(|_| o.healthcheck.as_ref().is_some_and(|h| h.command().ok().flatten().is_some())),
            },
            "Image": r.image_id,
            "ImageName": r.image,
            "NetworkSettings": {
                "Mode": o.network.clone().unwrap_or_else(|| "bridge".into()),
                "IPAddress": attachment.as_ref().map_or("", |a| a.ip.as_str()),
                "IPPrefixLen": attachment.as_ref().map_or(0, |a| a.prefix),
                "Gateway": attachment.as_ref().and_then(|a| a.gateway.as_deref()).unwrap_or(""),
                "MacAddress": attachment.as_ref().map_or("", |a| a.mac.as_str()),
                "Attachment": attachment,
                "Networks": vessel_engine::network::attachments(&engine.paths, &r.id)
                    .into_iter()
                    .map(|a| (a.network.clone(), serde_json::json!({
                        "IPAddress": a.ip, "IPPrefixLen": a.prefix, "Gateway": a.gateway,
                        "MacAddress": a.mac, "Interface": a.interface,
                    })))
                    .collect::<serde_json::Map<_, _>>(),
                "Ports": o.publish,
            },
            "Snapshots": {
                "Schedule": o.snapshot_schedule, "Expiry": o.snapshot_expiry, "NextDue": next_snapshot,
                "Count": snapshot_count, "Size": snapshot_size,
            },
            "LogPath": engine.paths.log(&r.id),
            "BundlePath": engine.paths.bundle(&r.id),
            "Config": {
                "Hostname": spec.as_ref().and_then(|s| s.hostname().clone()),
                "Env": spec.as_ref().and_then(|s| s.process().as_ref().and_then(|p| p.env().clone())),
                "Cmd": o.command, "Entrypoint": o.entrypoint, "WorkingDir": o.workdir, "User": o.user,
                "Tty": o.tty, "OpenStdin": o.interactive, "StopSignal": r.stop_signal,
                "Labels": o.labels, "Healthcheck": o.healthcheck.as_ref().map(healthcheck_json),
            },
            "HostConfig": {
                "Memory": memory, "NanoCpus": nano_cpus, "PidsLimit": pids_limit, "Privileged": o.privileged, "ReadonlyRootfs": o.read_only,
                "CapAdd": o.cap_add, "CapDrop": o.cap_drop, "AutoRemove": o.rm, "Init": o.init,
                "Binds": o.volumes.iter().map(|v| format!("{}:{}{}", v.host.display(), v.container.display(), match (v.read_only, v.idmap) { (true, true) => ":ro,idmap", (true, false) => ":ro", (false, true) => ":idmap", _ => "" })).collect::<Vec<_>>(),
                "Tmpfs": o.tmpfs,
                "StorageOpt": (!o.storage_opt.is_empty()).then_some(&o.storage_opt),
                "UsernsMode": vessel_engine::idmap::mode_name(o),
                "IDMappings": o.id_mappings.as_ref().map(|m| {
                    let text = |v: &[vessel_engine::options::IdMap]| {
                        v.iter().map(|l| format!("{}:{}:{}", l.container, l.host, l.size)).collect::<Vec<_>>()
                    };
                    serde_json::json!({ "UidMap": text(&m.uid), "GidMap": text(&m.gid) })
                }),
                "IdRange": o.id_mappings.as_ref().and_then(|m| m.range).map(|r| serde_json::json!({
                    "UidStart": r.uid_start, "GidStart": r.gid_start, "Size": r.size,
                })),
            },
            "DiskQuota": disk.map(|d| serde_json::json!({
                "Limit": d.limit, "Used": d.used, "Available": d.available,
            })),
        }));
    }
    match template {
        Some(t) => {
            for v in &out {
                println!("{}", t.render(v)?);
            }
        }
        None => println!("{}", serde_json::to_string_pretty(&out)?),
    }
    Ok(0)
}

/// `vessel wait`.
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn wait(engine: &Engine, a: &WaitArgs) -> Result<i32> {
    let mut last = 0;
    for c in &a.containers {
        let r = engine.find(c)?;
        engine.wait_exit(&r.id, None)?;
        last = engine.db.get(&r.id)?.and_then(|r| r.exit_code).unwrap_or(-1);
        println!("{last}");
    }
    let _ = last;
    Ok(0)
}

/// `vessel top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// The container.
    pub(crate) container: String,
    /// ps(1) options (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) ps_args: Vec<String>,
}

pub fn top(engine: &Engine, a: &TopArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    engine.runtime_state(&r)?;
    let (mut header, mut rows) = vessel_engine::stats::top(&engine.paths.oci_root(), &r.id, &a.ps_args)?;
    vessel_engine::stats::with_uids(&mut header, &mut rows);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header(header);
    for row in rows {
        t.add_row(row);
    }
    println!("{t}");
    Ok(0)
}

/// `vessel stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Print one sample and exit.
    #[arg(long)]
    pub(crate) no_stream: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Containers (default: every running one).
    pub(crate) containers: Vec<String>,
}

pub fn stats(engine: &Engine, a: &StatsArgs) -> Result<i32> {
    use vessel_engine::stats::{cpu_percent, format_bytes, sample};
    let recs: Vec<Record> = if a.containers.is_empty() {
        engine
            .list()?
            .into_iter()
            .filter(|r| matches!(r.state, State::Running | State::Paused))
            .collect()
    } else {
        a.containers.iter().map(|c| engine.find(c)).collect::<Result<_, _>>()?
    };
    let oci = engine.paths.oci_root();
    let mut prev: Vec<Option<vessel_engine::stats::Sample>> = recs.iter().map(|r| sample(&oci, &r.id).ok()).collect();
    loop {
        std::thread::sleep(Duration::from_millis(if a.no_stream { 500 } else { 1000 }));
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header([
            "CONTAINER ID",
            "NAME",
            "CPU %",
            "MEM USAGE / LIMIT",
            "MEM %",
            "NET IO",
            "BLOCK IO",
            "PIDS",
            "DISK USAGE / LIMIT",
        ]);
        let mut json = Vec::new();
        for (r, p) in recs.iter().zip(prev.iter_mut()) {
            let cur = sample(&oci, &r.id).ok();
            if let Some(c) = &cur {
                let disk = engine.disk_usage(r).ok().flatten();
                let disk_text = match disk {
                    Some(d) => format!(
                        "{} / {}",
                        d.used.map_or_else(|| "--".to_string(), format_bytes),
                        format_bytes(d.limit)
                    ),
                    None => "-- / --".to_string(),
                };
                let cpu = p.as_ref().map_or(0.0, |p| cpu_percent(p, c));
                let mem_pct = if c.mem_limit > 0 {
                    c.mem_usage as f64 * 100.0 / c.mem_limit as f64
                } else {
                    0.0
                };
                t.add_row([
                    r.id[..12].to_string(),
                    r.name.clone(),
                    format!("{cpu:.2}%"),
                    format!("{} / {}", format_bytes(c.mem_usage), format_bytes(c.mem_limit)),
                    format!("{mem_pct:.2}%"),
                    format!("{} / {}", format_bytes(c.net_rx), format_bytes(c.net_tx)),
                    format!("{} / {}", format_bytes(c.blk_read), format_bytes(c.blk_write)),
                    c.pids.to_string(),
                    disk_text,
                ]);
                json.push(serde_json::json!({
                    "id": r.id, "name": r.name, "cpu_percent": cpu, "mem_usage": c.mem_usage,
                    "mem_limit": c.mem_limit, "mem_percent": mem_pct, "net_rx": c.net_rx, "net_tx": c.net_tx,
                    "block_read": c.blk_read, "block_write": c.blk_write, "pids": c.pids,
                    "disk_usage": disk.and_then(|d| d.used), "disk_limit": disk.map(|d| d.limit),
                }));
            }
            *p = cur;
        }
        if a.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            println!("{t}");
        }
        if a.no_stream {
            return Ok(0);
        }
    }
}

/// `vessel update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub(crate) limits: Limits,
    /// Storage options: size=SIZE grows the disk quota of a container made with one
    /// (running or stopped; shrinking is refused).
    #[arg(long, value_parser = parse_storage_opt)]
    pub(crate) storage_opt: Vec<String>,
    /// When `vessel snapshot run-due` takes a snapshot: @hourly, @daily, @weekly, @monthly
    /// or 5 cron fields (local time); "" removes the schedule.
    #[arg(long)]
    pub(crate) snapshot_schedule: Option<String>,
    /// How long snapshots are kept (14d, 12h): scheduled ones and those taken without
    /// --expiry; "" keeps them until removed.
    #[arg(long)]
    pub(crate) snapshot_expiry: Option<String>,
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn update(engine: &Engine, a: &UpdateArgs) -> Result<i32> {
    let l = &a.limits;
    let snapshot_settings = a.snapshot_schedule.is_some() || a.snapshot_expiry.is_some();
    if snapshot_settings {
        for c in &a.containers {
            let r = engine.find(c)?;
            vessel_engine::snapshots::set_schedule(
                engine,
                &r,
                a.snapshot_schedule.as_deref(),
                a.snapshot_expiry.as_deref(),
            )?;
        }
    }
    let no_limits = l.memory.is_none() && l.cpus.is_none() && l.pids_limit.is_none();
    if !a.storage_opt.is_empty() {
        let opts = vessel_engine::quota::parse_storage_opts(&a.storage_opt)?;
        if no_limits {
            return each(engine, &a.containers, |r| engine.update_storage(r, &opts));
        }
        for c in &a.containers {
            engine.update_storage(&engine.find(c)?, &opts)?;
        }
    }
    if no_limits {
        if snapshot_settings {
            for c in &a.containers {
                println!("{c}");
            }
            return Ok(0);
        }
        bail!(
            "vessel update: give --memory, --cpus, --pids-limit, --storage-opt size=SIZE, --snapshot-schedule or \
             --snapshot-expiry"
        );
    }
    let mut res = LinuxResourcesBuilder::default();
    if let Some(m) = l.memory {
        res = res.memory(LinuxMemoryBuilder::default().limit(m).build()?);
    }
    if let Some(c) = l.cpus {
        res = res.cpu(
            LinuxCpuBuilder::default()
                .quota((c * 100_000.0) as i64)
                .period(100_000u64)
                .build()?,
        );
    }
    if let Some(p) = l.pids_limit {
        res = res.pids(LinuxPidsBuilder::default().limit(if p <= 0 { -1 } else { p }).build()?);
    }
    let res = res.build()?;
    each(engine, &a.containers, |r| engine.update(r, &res))
}

/// Commands that take a list of containers only.
#[derive(Args, Debug)]
pub struct Names {
    /// Containers.
    #[arg(required = true)]
    pub(crate) containers: Vec<String>,
}

pub fn pause(engine: &Engine, a: &Names, paused: bool) -> Result<i32> {
    each(engine, &a.containers, |r| engine.pause(r, paused))
}

/// `vessel rename`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// The container.
    pub(crate) container: String,
    /// Its new name.
    pub(crate) name: String,
}

pub fn rename(engine: &Engine, a: &RenameArgs) -> Result<i32> {
    engine.rename(&engine.find(&a.container)?, &a.name)?;
    Ok(0)
}

/// `vessel port`.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// The container.
    pub(crate) container: String,
}

pub fn port(engine: &Engine, a: &PortArgs) -> Result<i32> {
    let r = engine.find(&a.container)?;
    for p in &r.options.publish {
        let proto = protocol(p);
        println!(
            "{}/{proto} -> {}:{}",
            p.container_port,
            p.host_ip.as_deref().unwrap_or("0.0.0.0"),
            p.host_port
        );
    }
    Ok(0)
}
