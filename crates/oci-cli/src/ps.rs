//! `vessel-oci ps`: the container's processes. `--format json` prints the host pids of
//! its cgroup as a JSON array; `table` runs `ps` (default options `-ef`) and keeps the
//! header and the lines whose PID column is one of them, as runc does.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use vessel_runtime::cgroups;
use vessel_runtime::container::Container;
use vessel_runtime::state::Status;

/// `ps` flags (runc's).
#[derive(Args)]
pub struct PsArgs {
    /// table or json.
    #[arg(long, short = 'f', default_value = "table")]
    format: String,
    /// Container id.
    id: String,
    /// Options for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

/// Keeps the header of `ps` output and the lines whose PID column is in `pids`.
///
/// Errors: when the header has no PID column.
pub fn filter_table(out: &str, pids: &HashSet<i32>) -> Result<String> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column: pass options that print one")?;
    let mut kept = vec![header.to_string()];
    for l in lines {
        if l.split_whitespace()
            .nth(col)
            .and_then(|p| p.parse().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            kept.push(l.to_string());
        }
    }
    Ok(kept.join("\n") + "\n")
}

/// Runs `ps`.
pub fn run(root: &Path, a: &PsArgs) -> Result<()> {
    let c = Container::load(root, &a.id)?;
    if c.state.status == Status::Stopped {
        bail!("container \"{}\" is not running", a.id);
    }
    let pids = cgroups::manager(&c.state.cgroup_path).pids()?;
    match a.format.as_str() {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let args = if a.ps_args.is_empty() {
                vec!["-ef".to_string()]
            } else {
                a.ps_args.clone()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("run ps")?;
            if !out.status.success() {
                bail!("ps {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
            let set: HashSet<i32> = pids.into_iter().collect();
            print!("{}", filter_table(&String::from_utf8_lossy(&out.stdout), &set)?);
        }
        other => bail!("unknown --format {other:?}: use table or json"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_filter() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:00 ? 00:00:00 sleep 1000\n";
        let t = filter_table(out, &HashSet::from([42])).unwrap();
        assert_eq!(t.lines().count(), 2);
        assert!(t.contains("sleep 1000") && !t.contains("init"));
        assert!(filter_table("USER CMD\n", &HashSet::new()).is_err());
    }
}
