//! Load of a vessel host and balancing by migration (`vessel system load`,
//! `vessel balance`). A host's load for balancing is the memory its running
//! containers use (the `stats` figure: usage without inactive file cache, from their
//! memory cgroups), beside which the host's memory in use and PSI pressure (cpu and
//! memory `some avg10`, /proc/pressure, where the kernel has it) are reported. The
//! plan moves containers from the busiest host to the least busy one until the spread
//! is under a threshold or no move narrows it.

use serde::{Deserialize, Serialize};

use crate::db::State;
use crate::error::Result;
use crate::Engine;

/// One running container's share of its host's load.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerLoad {
    /// Its name.
    pub name: String,
    /// Memory in use, bytes (as `vessel stats`).
    pub memory: u64,
}

/// What `vessel system load --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostLoad {
    /// Memory the running containers use, bytes: the balancing figure.
    pub containers_memory: u64,
    /// The host's memory in use (MemTotal - MemAvailable of /proc/meminfo), bytes.
    pub host_memory_used: u64,
    /// The host's memory, bytes.
    pub host_memory_total: u64,
    /// `some avg10` of /proc/pressure/cpu (percent), where PSI exists.
    pub psi_cpu: Option<f64>,
    /// `some avg10` of /proc/pressure/memory (percent), where PSI exists.
    pub psi_memory: Option<f64>,
    /// Running containers.
    pub count: usize,
    /// Each running container, the biggest first.
    pub containers: Vec<ContainerLoad>,
}

/// The `some avg10` value of a /proc/pressure file.
fn psi(file: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10=")?.parse().ok())
}

fn meminfo(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(0)
        * 1024
}

/// This host's load (see [`HostLoad`]).
///
/// Errors: the records database's.
pub fn load(engine: &Engine) -> Result<HostLoad> {
    let oci = engine.paths.oci_root();
    let mut containers: Vec<ContainerLoad> = engine
        .list()?
        .into_iter()
        .filter(|r| r.state == State::Running)
        .map(|r| ContainerLoad {
            memory: crate::stats::sample(&oci, &r.id).map(|s| s.mem_usage).unwrap_or(0),
            name: r.name,
        })
        .collect();
    containers.sort_by(|a, b| b.memory.cmp(&a.memory).then(a.name.cmp(&b.name)));
    let mi = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo(&mi, "MemTotal:");
    Ok(HostLoad {
        containers_memory: containers.iter().map(|c| c.memory).sum(),
        host_memory_used: total.saturating_sub(meminfo(&mi, "MemAvailable:")),
        host_memory_total: total,
        psi_cpu: psi("/proc/pressure/cpu"),
        psi_memory: psi("/proc/pressure/memory"),
        count: containers.len(),
        containers,
    })
}

/// One planned migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    /// The container's name.
    pub name: String,
    /// Its memory, bytes.
    pub memory: u64,
    /// Index of the source host in the list given to [`plan`].
    pub from: usize,
    /// Index of the target host.
    pub to: usize,
}

/// The spread of loads: (max - min) as a percentage of max (0 when all are 0).
pub fn spread(loads: &[u64]) -> f64 {
    let max = loads.iter().copied().max().unwrap_or(0);
    let min = loads.iter().copied().min().unwrap_or(0);
    if max == 0 {
        0.0
    } else {
        (max - min) as f64 * 100.0 / max as f64
    }
}

/// Plans moves from the busiest host to the least busy one, each time the container
/// whose memory is closest to half their difference among those smaller than the
/// difference (a move that narrows the gap), until [`spread`] is below `threshold`
/// percent or no move narrows it (at most 100 moves).
pub fn plan(hosts: &[HostLoad], threshold: f64) -> Vec<Move> {
    let mut loads: Vec<u64> = hosts.iter().map(|h| h.containers_memory).collect();
    let mut on: Vec<Vec<ContainerLoad>> = hosts.iter().map(|h| h.containers.clone()).collect();
    let mut moves = Vec::new();
    while moves.len() < 100 && loads.len() > 1 && spread(&loads) >= threshold {
        let busiest = (0..loads.len())
            .max_by_key(|&i| (loads[i], usize::MAX - i))
            .unwrap_or(0);
        let idlest = (0..loads.len()).min_by_key(|&i| (loads[i], i)).unwrap_or(0);
        let gap = loads[busiest] - loads[idlest];
        let half = gap / 2;
        let pick = on[busiest]
            .iter()
            .enumerate()
            .filter(|(_, c)| c.memory > 0 && c.memory < gap)
            .min_by_key(|(_, c)| (c.memory.abs_diff(half), c.name.clone()))
            .map(|(k, _)| k);
        let Some(k) = pick else { break };
        let c = on[busiest].remove(k);
        loads[busiest] -= c.memory;
        loads[idlest] += c.memory;
        moves.push(Move {
            name: c.name.clone(),
            memory: c.memory,
            from: busiest,
            to: idlest,
        });
        on[idlest].push(c);
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(cs: &[(&str, u64)]) -> HostLoad {
        HostLoad {
            containers_memory: cs.iter().map(|c| c.1).sum(),
            host_memory_used: 0,
            host_memory_total: 0,
            psi_cpu: None,
            psi_memory: None,
            count: cs.len(),
            containers: cs
                .iter()
                .map(|(n, m)| ContainerLoad {
                    name: n.to_string(),
                    memory: *m,
                })
                .collect(),
        }
    }

    #[test]
    fn plan_moves_until_the_spread_is_under_the_threshold() {
        let a = host(&[("big", 48), ("mid", 24), ("small", 12)]);
        let b = host(&[]);
        let p = plan(&[a, b], 30.0);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].name.as_str(), p[0].from, p[0].to), ("big", 0, 1));
        // Already balanced: nothing.
        assert!(plan(&[host(&[("x", 10)]), host(&[("y", 10)])], 10.0).is_empty());
        // No move narrows the gap: nothing.
        assert!(plan(&[host(&[("x", 10)]), host(&[])], 10.0).is_empty());
        // Three hosts.
        let p = plan(&[host(&[("a", 30), ("b", 30), ("c", 30)]), host(&[]), host(&[])], 5.0);
        assert_eq!(p.len(), 2);
        assert_ne!(p[0].to, p[1].to);
        assert_eq!(spread(&[30, 30, 30]), 0.0);
    }
}
