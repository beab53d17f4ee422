//! `vessel-lazy`: the server of one lazy (eStargz) layer, started by the engine (never by
//! people) when a container or a `vessel pull --lazy` needs the layer and no server is
//! live: it mounts the layer's FUSE file system, prints `ready` on stdout once the mount is
//! up, fetches the rest of the layer in the background and exits once the layer is a plain
//! snapshot and no container uses the mount ([`vessel_image::lazy::serve`]).
//!
//! Usage: `vessel-lazy --root ROOT CHAIN_ID_HEX`. Its log is `ROOT/snapshots/lazy/<chain>/serve.log`.

use std::io::Write;
use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (root, chain) = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(root), Some(chain)) if flag == "--root" => (PathBuf::from(root), chain),
        _ => {
            eprintln!("usage: vessel-lazy --root ROOT CHAIN_ID_HEX");
            std::process::exit(2);
        }
    };
    let chain = match chain.to_str().map(vessel_image::Digest::from_hex) {
        Some(Ok(d)) => d,
        _ => {
            eprintln!("vessel-lazy: {chain:?} is not a chain id (64 hex digits)");
            std::process::exit(2);
        }
    };
    // Detach from the process that started us (the CLI, a monitor or the API server): it
    // reaps this first process at once, and the server itself, reparented to init, is
    // never left a zombie of a long-lived parent.
    // SAFETY: no thread has been started yet (this is the first thing main does beyond
    // reading its arguments), so the child is a whole copy of this process.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            eprintln!("vessel-lazy: fork: {e}");
            std::process::exit(1);
        }
    }
    let ready = || {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        // The engine reads one line; later output goes nowhere (the log is stderr).
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    };
    if let Err(e) = vessel_image::lazy::serve::serve(&root, &chain, ready) {
        eprintln!("vessel-lazy: {e}");
        std::process::exit(1);
    }
}
