//! `vessel system load` and `vessel balance`: parsing and printing over
//! [`vessel_engine::balance`]; the hosts are reached through the migration transport
//! ([`vessel_engine::migrate::remote`], or the API's: [`crate::migrate_api`]).

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use vessel_engine::balance::{self, HostLoad};

use crate::migrate_api::transport;
use vessel_engine::Engine;

/// `vessel balance` flags.
#[derive(Args, Debug)]
pub struct BalanceArgs {
    /// Print the plan only.
    #[arg(long)]
    dry_run: bool,
    /// Stop when the spread of the hosts' container memory ((max - min) / max) is
    /// under this many percent.
    #[arg(long, default_value_t = 20.0)]
    threshold: f64,
    /// The vessel binary on the hosts [default: `vessel` on their PATH].
    #[arg(long = "remote-vessel")]
    remote_vessel: Option<String>,
    /// The hosts (two or more): remotes added with `vessel remote add` (their load
    /// read through the API), ssh://[user@]HOST[:PORT][/ROOT] or local:///ROOT, each
    /// as every other host reaches it. A move runs `vessel migrate` on its source
    /// host, so a source named by an API remote cannot start one (use its ssh:// or
    /// local:/// form).
    #[arg(required = true, num_args = 2..)]
    hosts: Vec<String>,
}

/// `vessel system load [--json]`.
pub fn load(engine: &Engine, json: bool) -> Result<i32> {
    print_load(&balance::load(engine)?, json)
}

/// Prints a host's load as `vessel system load [--json]` does (here or from a remote).
pub fn print_load(l: &HostLoad, json: bool) -> Result<i32> {
    if json {
        println!("{}", serde_json::to_string(&l)?);
        return Ok(0);
    }
    let pct = |v: Option<f64>| v.map(|v| format!("{v:.2}%")).unwrap_or_else(|| "-".into());
    println!("containers running:  {}", l.count);
    println!(
        "containers' memory:  {}",
        vessel_engine::stats::format_bytes(l.containers_memory)
    );
    println!(
        "host memory in use:  {} of {}",
        vessel_engine::stats::format_bytes(l.host_memory_used),
        vessel_engine::stats::format_bytes(l.host_memory_total)
    );
    println!("PSI cpu some avg10:  {}", pct(l.psi_cpu));
    println!("PSI mem some avg10:  {}", pct(l.psi_memory));
    Ok(0)
}

/// `vessel system load --json` on `url`.
fn remote_load(dir: &Path, url: &str, vessel: Option<&str>) -> Result<HostLoad> {
    let r = transport(dir, url, vessel)?;
    let mut child = r.vessel(&["system".into(), "load".into(), "--json".into()])?;
    drop(child.stdin.take());
    let out = child
        .wait_with_output()
        .with_context(|| format!("{url}: vessel system load"))?;
    if !out.status.success() {
        bail!("{url}: vessel system load --json failed ({})", out.status);
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{url}: read the output of vessel system load --json"))
}

/// `vessel balance HOST... [--dry-run] [--threshold P]`.
pub fn balance(dir: &Path, a: &BalanceArgs) -> Result<i32> {
    let v = a.remote_vessel.as_deref();
    let loads: Vec<HostLoad> = a.hosts.iter().map(|h| remote_load(dir, h, v)).collect::<Result<_>>()?;
    for (h, l) in a.hosts.iter().zip(&loads) {
        println!(
            "{h}: {} containers, {} of container memory, PSI cpu {}, memory {}",
            l.count,
            vessel_engine::stats::format_bytes(l.containers_memory),
            l.psi_cpu.map(|p| format!("{p:.2}%")).unwrap_or_else(|| "-".into()),
            l.psi_memory.map(|p| format!("{p:.2}%")).unwrap_or_else(|| "-".into()),
        );
    }
    let memory: Vec<u64> = loads.iter().map(|l| l.containers_memory).collect();
    let plan = balance::plan(&loads, a.threshold);
    println!(
        "spread {:.1}% (threshold {:.1}%): {} move(s)",
        balance::spread(&memory),
        a.threshold,
        plan.len()
    );
    for m in &plan {
        println!(
            "move {} ({}) from {} to {}",
            m.name,
            vessel_engine::stats::format_bytes(m.memory),
            a.hosts[m.from],
            a.hosts[m.to]
        );
    }
    if a.dry_run {
        return Ok(0);
    }
    for m in &plan {
        let src = transport(dir, &a.hosts[m.from], v)?;
        let mut args = vec!["migrate".to_string()];
        if let Some(v) = v {
            args.extend(["--remote-vessel".into(), v.into()]);
        }
        args.extend([m.name.clone(), a.hosts[m.to].clone()]);
        let mut child = src.vessel(&args)?;
        drop(child.stdin.take());
        let out = child.wait_with_output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "move of {} from {} failed ({}): balancing stopped",
                m.name,
                a.hosts[m.from],
                out.status
            );
        }
    }
    Ok(0)
}
