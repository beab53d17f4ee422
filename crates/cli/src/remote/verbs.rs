//! `vessel --remote NAME` for the verbs that are one API call or a few and print what
//! the local command prints: container lifecycle (create, start, restart, kill, pause,
//! unpause, rename), top, stats --no-stream, update, port, images (rmi, tag, push),
//! networks and volumes (the Docker API), snapshots and checkpoint/restore (`/1.0`).

use anyhow::{bail, Context, Result};
use hyper::Method;
use serde_json::{json, Value};
use vessel_api::client::{query_escape, Remote};

use super::table;
use crate::containers::{self as c, Format};
use crate::{checkpoint as ck, network::NetworkCommand, snapshots::SnapshotCommand, volume::VolumeCommand};

fn path(what: &str, name: &str, tail: &str) -> String {
    format!("/v1.41/{what}/{}{tail}", query_escape(name))
}

/// POSTs `tail` for each container and prints its name, as the local command does.
async fn each(remote: &Remote, names: &[String], tail: &str) -> Result<i32> {
    for n in names {
        remote
            .docker::<Value>(Method::POST, &path("containers", n, tail), None)
            .await?;
        println!("{n}");
    }
    Ok(0)
}

/// `create`: the new container's id.
pub(super) async fn create(remote: &Remote, a: &c::CreateArgs) -> Result<i32> {
    let body = super::create::body(a, false)?;
    println!("{}", remote.create(a.name.as_deref(), &body).await?);
    Ok(0)
}

/// `start` (without `-a`).
pub(super) async fn start(remote: &Remote, a: &c::StartArgs) -> Result<i32> {
    each(remote, &a.containers, "/start").await
}

/// `restart -t N`.
pub(super) async fn restart(remote: &Remote, a: &c::StopArgs) -> Result<i32> {
    each(remote, &a.containers, &format!("/restart?t={}", a.time)).await
}

/// `kill -s SIGNAL`.
pub(super) async fn kill(remote: &Remote, a: &c::KillArgs) -> Result<i32> {
    each(
        remote,
        &a.containers,
        &format!("/kill?signal={}", query_escape(&a.signal)),
    )
    .await
}

/// `pause` / `unpause`.
pub(super) async fn pause(remote: &Remote, a: &c::Names, paused: bool) -> Result<i32> {
    each(remote, &a.containers, if paused { "/pause" } else { "/unpause" }).await
}

/// `rename OLD NEW`.
pub(super) async fn rename(remote: &Remote, a: &c::RenameArgs) -> Result<i32> {
    let tail = format!("/rename?name={}", query_escape(&a.name));
    remote
        .docker::<Value>(Method::POST, &path("containers", &a.container, &tail), None)
        .await?;
    Ok(0)
}

/// `top NAME [PS-ARGS]`.
pub(super) async fn top(remote: &Remote, a: &c::TopArgs) -> Result<i32> {
    let mut tail = "/top".to_string();
    if !a.ps_args.is_empty() {
        tail.push_str(&format!("?ps_args={}", query_escape(&a.ps_args.join(" "))));
    }
    let v: Value = remote
        .docker(Method::GET, &path("containers", &a.container, &tail), None)
        .await?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let titles = strings(&v["Titles"]);
    let mut t = table(&titles.iter().map(String::as_str).collect::<Vec<_>>());
    for row in v["Processes"].as_array().into_iter().flatten() {
        t.add_row(strings(row));
    }
    println!("{t}");
    Ok(0)
}

/// CPU percent between the two samples of docker's stats object, as the docker CLI
/// computes it.
fn cpu_percent(s: &Value) -> f64 {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let cpu = f(&s["cpu_stats"]["cpu_usage"]["total_usage"]) - f(&s["precpu_stats"]["cpu_usage"]["total_usage"]);
    let sys = f(&s["cpu_stats"]["system_cpu_usage"]) - f(&s["precpu_stats"]["system_cpu_usage"]);
    let cpus = f(&s["cpu_stats"]["online_cpus"]).max(1.0);
    if cpu > 0.0 && sys > 0.0 {
        cpu / sys * cpus * 100.0
    } else {
        0.0
    }
}

/// `stats --no-stream [NAME...]` (every running container when none is named).
pub(super) async fn stats(remote: &Remote, a: &c::StatsArgs) -> Result<i32> {
    if !a.no_stream {
        bail!("stats of a remote is one sample: give --no-stream");
    }
    let names: Vec<String> = if a.containers.is_empty() {
        remote
            .containers(false)
            .await?
            .iter()
            .filter_map(|x| x["Id"].as_str().map(String::from))
            .collect()
    } else {
        a.containers.clone()
    };
    let mut all = Vec::new();
    for n in &names {
        all.push(
            remote
                .docker::<Value>(Method::GET, &path("containers", n, "/stats?stream=0"), None)
                .await?,
        );
    }
    if a.format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    let mut t = table(&["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"]);
    for s in &all {
        let human = |v: &Value| vessel_engine::stats::format_bytes(v.as_u64().unwrap_or(0));
        t.add_row([
            s["id"].as_str().unwrap_or_default().chars().take(12).collect(),
            s["name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            format!("{:.2}%", cpu_percent(s)),
            format!(
                "{} / {}",
                human(&s["memory_stats"]["usage"]),
                human(&s["memory_stats"]["limit"])
            ),
            s["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    println!("{t}");
    Ok(0)
}

/// `update --memory --cpus --pids-limit NAME...`.
pub(super) async fn update(remote: &Remote, a: &c::UpdateArgs) -> Result<i32> {
    if !a.storage_opt.is_empty() || a.snapshot_schedule.is_some() || a.snapshot_expiry.is_some() {
        bail!("update of a remote takes --memory, --cpus and --pids-limit; --storage-opt and the snapshot settings run only on the host itself");
    }
    let l = &a.limits;
    let mut body = json!({});
    if let Some(m) = l.memory {
        body["Memory"] = json!(m);
    }
    if let Some(c) = l.cpus {
        body["NanoCpus"] = json!((c * 1e9).round() as i64);
    }
    if let Some(p) = l.pids_limit {
        body["PidsLimit"] = json!(if p <= 0 { -1 } else { p });
    }
    if body.as_object().is_some_and(|o| o.is_empty()) {
        bail!("vessel update: give --memory, --cpus or --pids-limit");
    }
    for n in &a.containers {
        remote
            .docker::<Value>(Method::POST, &path("containers", n, "/update"), Some(&body))
            .await?;
        println!("{n}");
    }
    Ok(0)
}

/// `port NAME`: `80/tcp -> 0.0.0.0:8080` lines from inspect's `NetworkSettings.Ports`.
pub(super) async fn port(remote: &Remote, a: &c::PortArgs) -> Result<i32> {
    let info = remote.inspect(&a.container).await?;
    for (ctr, bindings) in info["NetworkSettings"]["Ports"].as_object().into_iter().flatten() {
        for b in bindings.as_array().into_iter().flatten() {
            println!(
                "{ctr} -> {}:{}",
                b["HostIp"].as_str().unwrap_or("0.0.0.0"),
                b["HostPort"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(0)
}

/// `rmi [-f] IMAGE...`: docker's `Untagged:`/`Deleted:` lines.
pub(super) async fn rmi(remote: &Remote, a: &crate::images::RmiArgs) -> Result<i32> {
    for i in &a.images {
        let tail = format!("?force={}", u8::from(a.force));
        let v: Value = remote.docker(Method::DELETE, &path("images", i, &tail), None).await?;
        for e in v.as_array().into_iter().flatten() {
            for (k, x) in e.as_object().into_iter().flatten() {
                println!("{k}: {}", x.as_str().unwrap_or_default());
            }
        }
    }
    Ok(0)
}

/// `REPO[:TAG]` apart (a `:` after the last `/` starts the tag).
fn repo_tag(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    }
}

/// `tag IMAGE NAME...`.
pub(super) async fn tag(remote: &Remote, a: &crate::commit::TagArgs) -> Result<i32> {
    for n in &a.names {
        let (repo, tag) = repo_tag(n);
        let mut tail = format!("/tag?repo={}", query_escape(repo));
        if let Some(t) = tag {
            tail.push_str(&format!("&tag={}", query_escape(t)));
        }
        remote
            .docker::<Value>(Method::POST, &path("images", &a.image, &tail), None)
            .await?;
    }
    Ok(0)
}

/// `push IMAGE`: the remote pushes with its own credentials (`vessel login` there).
pub(super) async fn push(remote: &Remote, a: &crate::commit::PushArgs) -> Result<i32> {
    if a.destination.is_some() || a.creds.is_some() || a.tls_verify.is_some() {
        bail!("push of a remote takes the image only: tag it there first (`vessel --remote R tag`), and log in there (`vessel login` on that host)");
    }
    let (repo, tag) = repo_tag(&a.image);
    let tail = format!("/push?tag={}", query_escape(tag.unwrap_or("latest")));
    let (status, bytes) = remote.request(Method::POST, &path("images", repo, &tail), None).await?;
    let lines: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    let failed = lines.iter().find_map(|l| l["error"].as_str().or(l["message"].as_str()));
    if status.as_u16() >= 400 || lines.iter().any(|l| l["error"].is_string()) {
        bail!("push {} on the remote: {}", a.image, failed.unwrap_or("failed"));
    }
    if !a.quiet {
        if let Some(d) = lines.iter().rev().find_map(|l| l["aux"]["Digest"].as_str()) {
            eprintln!("Pushed {} ({d})", a.image);
        }
    }
    Ok(0)
}

/// `network create|ls|inspect|connect|disconnect|rm`.
pub(super) async fn network(remote: &Remote, n: &NetworkCommand) -> Result<i32> {
    match n {
        NetworkCommand::Create {
            subnet,
            gateway,
            internal,
            warm,
            name,
        } => {
            if *warm != vessel_net::DEFAULT_WARM {
                bail!("--warm is not sent to remotes: leave it out with --remote");
            }
            let mut body = json!({"Name": name, "Driver": "bridge", "Internal": internal});
            if subnet.is_some() || gateway.is_some() {
                body["IPAM"] = json!({"Config": [{"Subnet": subnet, "Gateway": gateway}]});
            }
            remote
                .docker::<Value>(Method::POST, "/v1.41/networks/create", Some(&body))
                .await?;
            println!("{name}");
        }
        NetworkCommand::Ls { format } => {
            let all: Vec<Value> = remote.docker(Method::GET, "/v1.41/networks", None).await?;
            if *format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(0);
            }
            let mut t = table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "GATEWAY", "INTERNAL"]);
            for n in &all {
                let ipam = &n["IPAM"]["Config"][0];
                t.add_row([
                    n["Id"].as_str().unwrap_or_default().chars().take(12).collect(),
                    n["Name"].as_str().unwrap_or_default().to_string(),
                    n["Driver"].as_str().unwrap_or_default().to_string(),
                    ipam["Subnet"].as_str().unwrap_or_default().to_string(),
                    ipam["Gateway"].as_str().unwrap_or_default().to_string(),
                    n["Internal"].as_bool().unwrap_or(false).to_string(),
                ]);
            }
            println!("{t}");
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(
                    remote
                        .docker::<Value>(Method::GET, &path("networks", n, ""), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Connect { network, container } | NetworkCommand::Disconnect { network, container } => {
            let tail = if matches!(n, NetworkCommand::Connect { .. }) {
                "/connect"
            } else {
                "/disconnect"
            };
            remote
                .docker::<Value>(
                    Method::POST,
                    &path("networks", network, tail),
                    Some(&json!({ "Container": container })),
                )
                .await?;
        }
        NetworkCommand::Rm { names } => {
            for n in names {
                remote
                    .docker::<Value>(Method::DELETE, &path("networks", n, ""), None)
                    .await?;
                println!("{n}");
            }
        }
    }
    Ok(0)
}

/// `volume create|ls|inspect|rm|prune`.
pub(super) async fn volume(remote: &Remote, v: &VolumeCommand) -> Result<i32> {
    match v {
        VolumeCommand::Create { labels, name } => {
            let labels: serde_json::Map<String, Value> = labels
                .iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), json!(v)),
                    None => (l.clone(), json!("")),
                })
                .collect();
            let v: Value = remote
                .docker(
                    Method::POST,
                    "/v1.41/volumes/create",
                    Some(&json!({"Name": name, "Labels": labels})),
                )
                .await?;
            println!("{}", v["Name"].as_str().unwrap_or(name));
        }
        VolumeCommand::Ls { format, quiet } => {
            let v: Value = remote.docker(Method::GET, "/v1.41/volumes", None).await?;
            let all = v["Volumes"].as_array().cloned().unwrap_or_default();
            if *format == Format::Json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if *quiet {
                for v in &all {
                    println!("{}", v["Name"].as_str().unwrap_or_default());
                }
            } else {
                let mut t = table(&["DRIVER", "VOLUME NAME"]);
                for v in &all {
                    t.add_row([
                        v["Driver"].as_str().unwrap_or_default(),
                        v["Name"].as_str().unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(
                    remote
                        .docker::<Value>(Method::GET, &path("volumes", n, ""), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { force, names } => {
            for n in names {
                let tail = format!("?force={}", u8::from(*force));
                remote
                    .docker::<Value>(Method::DELETE, &path("volumes", n, &tail), None)
                    .await?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune { force: _ } => {
            let v: Value = remote.docker(Method::POST, "/v1.41/volumes/prune", None).await?;
            let gone = v["VolumesDeleted"].as_array().cloned().unwrap_or_default();
            if !gone.is_empty() {
                println!("Deleted Volumes:");
                for n in &gone {
                    println!("{}", n.as_str().unwrap_or_default());
                }
                println!();
            }
            let bytes = v["SpaceReclaimed"].as_u64().unwrap_or(0);
            println!("Total reclaimed space: {}", crate::images::human(bytes));
        }
    }
    Ok(0)
}

fn v1_path(name: &str, tail: &str) -> String {
    format!("/1.0/instances/{}{tail}", query_escape(name))
}

/// `snapshot create|ls|show|rm|restore` through `/1.0` (operations waited for).
pub(super) async fn snapshot(remote: &Remote, s: &SnapshotCommand) -> Result<i32> {
    match s {
        SnapshotCommand::Create {
            container,
            snapshot,
            stateful,
            expiry,
        } => {
            let body = json!({"name": snapshot, "stateful": stateful, "expiry": expiry});
            let v = remote
                .v1(Method::POST, &v1_path(container, "/snapshots"), Some(&body))
                .await?;
            println!("{}", v["name"].as_str().or(snapshot.as_deref()).unwrap_or_default());
        }
        SnapshotCommand::Ls { container, format } => {
            let v = remote
                .v1(Method::GET, &v1_path(container, "/snapshots?recursion=1"), None)
                .await?;
            let all: Vec<vessel_engine::snapshots::SnapshotInfo> =
                serde_json::from_value(v).context("the remote's snapshot list")?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => crate::snapshots::print_table(&all),
            }
        }
        SnapshotCommand::Show { container, snapshot } => {
            let tail = format!("/snapshots/{}", query_escape(snapshot));
            let v = remote.v1(Method::GET, &v1_path(container, &tail), None).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        SnapshotCommand::Rm { container, snapshot } => {
            let tail = format!("/snapshots/{}", query_escape(snapshot));
            remote.v1(Method::DELETE, &v1_path(container, &tail), None).await?;
            println!("{snapshot}");
        }
        SnapshotCommand::Restore {
            container,
            snapshot,
            stateful,
        } => {
            let body = json!({"restore": snapshot, "stateful": stateful});
            remote.v1(Method::PUT, &v1_path(container, ""), Some(&body)).await?;
            println!("{snapshot}");
        }
        SnapshotCommand::RunDue { .. } => {
            bail!("snapshot run-due runs only on this host: run it on the remote host itself")
        }
    }
    Ok(0)
}

/// `checkpoint NAME` through `/1.0` (the images stay on the remote).
pub(super) async fn checkpoint(remote: &Remote, a: &ck::CheckpointArgs) -> Result<i32> {
    if a.export.is_some() {
        bail!("checkpoint --export writes a file on this host: not with --remote (use `vessel migrate` to move a container)");
    }
    let body = json!({"leave_running": a.leave_running, "tcp_established": a.tcp_established});
    remote
        .v1(Method::POST, &v1_path(&a.container, "/checkpoint"), Some(&body))
        .await?;
    println!("{}", a.container);
    Ok(0)
}

/// `restore NAME` through `/1.0`.
pub(super) async fn restore(remote: &Remote, a: &ck::RestoreArgs) -> Result<i32> {
    let Some(name) = a.container.as_deref().filter(|_| a.import.is_none()) else {
        bail!("restore --import reads a file on this host: not with --remote");
    };
    remote.v1(Method::POST, &v1_path(name, "/restore"), None).await?;
    println!("{name}");
    Ok(0)
}
