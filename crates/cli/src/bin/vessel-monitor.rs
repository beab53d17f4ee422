//! `vessel-monitor`: the per-container monitor (podman's conmon) as a binary of its
//! own, built with `vessel` and installed beside it. The process that stays beside
//! every running container then maps only the monitor's code (no command-line parser,
//! async runtime or registry client) and keeps fewer private pages (see build.rs).
//! The logic is the engine's ([`vessel_engine::monitor`]); this file only reads its
//! arguments.
//!
//! Usage (by the engine, never by people):
//! `vessel-monitor --root ROOT --runroot RUNROOT __monitor ID`, the same arguments
//! `vessel __monitor` takes, so both spell a monitor the same way in `ps`.

use std::ffi::OsString;
use std::path::PathBuf;

/// The arguments, or a message saying what is wrong with them.
fn parse(mut args: impl Iterator<Item = OsString>) -> Result<(PathBuf, PathBuf, String), String> {
    let mut root = None;
    let mut runroot = None;
    let mut id = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--root") => root = args.next().map(PathBuf::from),
            Some("--runroot") => runroot = args.next().map(PathBuf::from),
            Some("__monitor") => {
                id = args
                    .next()
                    .map(|s| s.into_string().map_err(|s| format!("container id {s:?} is not UTF-8")))
                    .transpose()?
            }
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    match (root, runroot, id) {
        (Some(r), Some(rr), Some(id)) => Ok((r, rr, id)),
        _ => Err("usage: vessel-monitor --root ROOT --runroot RUNROOT __monitor ID \
                  (started by vessel run/create/start, not by hand)"
            .into()),
    }
}

fn main() {
    match parse(std::env::args_os().skip(1)) {
        Ok((root, runroot, id)) => vessel_engine::monitor::main(&vessel_engine::Paths::new(root, runroot), &id),
        Err(msg) => {
            eprintln!("vessel-monitor: {msg}");
            std::process::exit(125);
        }
    }
}
