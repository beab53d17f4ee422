//! `vessel-monitor`: the per-container monitor (podman's conmon) as a binary of its
//! own, built with `vessel` and installed beside it. The process that stays beside
//! every running container then maps only the monitor's code (no command-line parser,
//! async runtime or registry client) and keeps fewer private pages (see build.rs).
//! The logic is the engine's ([`vessel_engine::monitor`]); this file only reads its
//! arguments.
//!
//! Usage (by the engine, never by people):
//! `vessel-monitor --root ROOT --runroot RUNROOT __monitor ID [--restore DIR]`, the same
//! arguments `vessel __monitor` takes, so both spell a monitor the same way in `ps`
//! (`--restore`: restore the container from that dir of CRIU images instead of creating it).

use std::ffi::OsString;
use std::path::PathBuf;

/// What the monitor is started with: root, runroot, container id, CRIU images to restore.
type Args = (PathBuf, PathBuf, String, Option<PathBuf>);

/// The arguments, or a message saying what is wrong with them.
fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let mut root = None;
    let mut runroot = None;
    let mut id = None;
    let mut restore = None;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--root") => root = args.next().map(PathBuf::from),
            Some("--runroot") => runroot = args.next().map(PathBuf::from),
            Some("--restore") => restore = args.next().map(PathBuf::from),
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
        (Some(r), Some(rr), Some(id)) => Ok((r, rr, id, restore)),
        _ => Err(
            "usage: vessel-monitor --root ROOT --runroot RUNROOT __monitor ID [--restore DIR] \
                  (started by vessel run/create/start, not by hand)"
                .into(),
        ),
    }
}

fn main() {
    match parse(std::env::args_os().skip(1)) {
        Ok((root, runroot, id, restore)) => {
            vessel_engine::monitor::main(&vessel_engine::Paths::new(root, runroot), &id, restore.as_deref())
        }
        Err(msg) => {
            eprintln!("vessel-monitor: {msg}");
            std::process::exit(125);
        }
    }
}
