//! A container's resource limits as they stand: from its config.json, which `update`
//! changes, else from the flags it was made with. What `vessel inspect` and the API's
//! inspect show.

use oci_spec::runtime::Spec;

use crate::containers::Engine;
use crate::db::Record;

/// Limits in docker's units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit, bytes (0: none).
    pub memory: i64,
    /// CPU time, billionths of a CPU (`--cpus 1.5` = 1_500_000_000; 0: none).
    pub nano_cpus: i64,
    /// Largest number of tasks (0: none).
    pub pids: i64,
}

impl Engine {
    /// The limits of `r`, read from `spec` (its config.json) when given.
    pub fn limits(&self, r: &Record, spec: Option<&Spec>) -> Limits {
        let o = &r.options;
        let res = spec
            .and_then(|s| s.linux().as_ref())
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        let memory = res.memory().and_then(|m| m.limit()).or(o.memory).unwrap_or(0);
        let nano_cpus = match res.cpu().as_ref().map(|c| (c.quota(), c.period())) {
            Some((Some(q), Some(p))) if q > 0 && p > 0 => q.saturating_mul(1_000_000_000) / p as i64,
            _ => o.cpus.map_or(0, |c| (c * 1e9) as i64),
        };
        let pids = res.pids().map_or(o.pids_limit.unwrap_or(0), |p| p.limit().max(0));
        Limits {
            memory,
            nano_cpus,
            pids,
        }
    }
}
