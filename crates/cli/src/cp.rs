//! `vessel cp`: docker's `cp CONTAINER:SRC DEST` and `cp SRC CONTAINER:DEST`.

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use vessel_engine::Engine;

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Keep owners (uid and gid) as they are in the source (default: root inside the
    /// container, the caller outside).
    #[arg(short, long)]
    pub archive: bool,
    /// CONTAINER:SRC_PATH, a host path, or `-`: a tar stream on stdin, unpacked into the
    /// container directory DEST_PATH.
    pub source: String,
    /// CONTAINER:DEST_PATH, a host path, or `-`: a tar of SRC_PATH on stdout.
    pub destination: String,
}

/// `CONTAINER:PATH` split, when `arg` is one: a colon before any slash, with a non-empty
/// name (docker's rule; a host path with a colon is written `./a:b`).
pub(crate) fn container_path(arg: &str) -> Option<(&str, &str)> {
    let (name, path) = arg.split_once(':')?;
    (!name.is_empty() && !name.contains('/') && !name.starts_with('.')).then_some((name, path))
}

/// `vessel cp`.
pub fn cp(e: &Engine, a: &CpArgs) -> Result<i32> {
    match (container_path(&a.source), container_path(&a.destination)) {
        (Some((name, src)), None) if a.destination == "-" => {
            let r = e.find(name)?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            e.copy_out_tar(&r, if src.is_empty() { "/" } else { src }, &mut out)?;
            std::io::Write::flush(&mut out)?;
        }
        (None, Some((name, dest))) if a.source == "-" => {
            let r = e.find(name)?;
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            e.copy_in_tar(&r, &mut input, if dest.is_empty() { "/" } else { dest }, a.archive)?;
        }
        (Some((name, src)), None) => {
            let r = e.find(name)?;
            e.copy_out(
                &r,
                if src.is_empty() { "/" } else { src },
                Path::new(&a.destination),
                a.archive,
            )?;
        }
        (None, Some((name, dest))) => {
            let r = e.find(name)?;
            e.copy_in(
                &r,
                Path::new(&a.source),
                if dest.is_empty() { "/" } else { dest },
                a.archive,
            )?;
        }
        (Some(_), Some(_)) => bail!("copying between containers is not supported: copy to the host first"),
        (None, None) => bail!("one of source and destination must be CONTAINER:PATH"),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::container_path;

    #[test]
    fn which_side_is_the_container() {
        assert_eq!(container_path("web:/etc/motd"), Some(("web", "/etc/motd")));
        assert_eq!(container_path("/tmp/a:b"), None);
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("plain"), None);
    }
}
