//! Parsing of `vessel run` flag values with units and shapes: byte sizes (`--memory 512m`),
//! CPU counts (`--cpus 1.5`) and bind volumes (`-v /host:/ctr:ro`), with docker's rules
//! (docker run reference, "Runtime constraints on resources" and "Volumes").
//!
//! Every error is [`Error::BadInput`] with one line that names the flag, the value and
//! the shape expected.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::options::Volume;

/// Parses a size in bytes as docker does (`RAMInBytes`): a non-negative number, with an
/// optional fraction, an optional space, then an optional unit `b`, `k`, `m`, `g`, `t`
/// or `p` (any case; binary multiples, k = 1024), which may be followed by `i` and/or
/// `b` (`64k`, `512m`, `1.5g`, `1024`, `2GiB`, `10 mb`). A fraction is truncated to
/// whole bytes. `flag` names the flag in the error (`"--memory"`).
///
/// Errors: [`Error::BadInput`], e.g. `invalid --memory "12q": use a number with an
/// optional unit b, k, m or g (512m)`; also for sizes beyond `i64::MAX` bytes.
pub fn parse_bytes(flag: &str, s: &str) -> Result<i64> {
    let bad = || {
        Error::BadInput(format!(
            "invalid {flag} {s:?}: use a number with an optional unit b, k, m or g (512m)"
        ))
    };
    let text = s.trim();
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    // Docker's shape: digits, then optionally "." and more digits.
    let mut parts = number.split('.');
    let whole = parts.next().unwrap_or("");
    let frac = parts.next();
    if whole.is_empty() || parts.next().is_some() || frac.is_some_and(|f| f.is_empty()) {
        return Err(bad());
    }
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "ki" | "kib" => 10,
        "m" | "mb" | "mi" | "mib" => 20,
        "g" | "gb" | "gi" | "gib" => 30,
        "t" | "tb" | "ti" | "tib" => 40,
        "p" | "pb" | "pi" | "pib" => 50,
        _ => return Err(bad()),
    };
    let too_big = || {
        Error::BadInput(format!(
            "invalid {flag} {s:?}: the size is too large (at most 8 exabytes)"
        ))
    };
    let whole: i64 = whole.parse().map_err(|_| too_big())?;
    let mut bytes = whole.checked_mul(1i64 << shift).ok_or_else(too_big)?;
    if let Some(frac) = frac {
        // Exact integer arithmetic on at most 18 fraction digits (more cannot matter
        // below 2^50), truncated to whole bytes.
        let digits = &frac[..frac.len().min(18)];
        let num: i128 = digits.parse().map_err(|_| bad())?;
        let den = 10i128.pow(digits.len() as u32);
        let part = (num << shift) / den;
        bytes = bytes.checked_add(part as i64).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// The number of CPUs this process may run on (sched_getaffinity(2)), as docker counts
/// them for `--cpus`; at least 1.
fn host_cpus() -> usize {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count()
            .max(1),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

/// Parses `--cpus`: a decimal number of CPUs' worth of time, from 0.01 up to the number
/// of CPUs available to this process (docker run reference, "CPU"; docker refuses more
/// than the host has). Becomes CFS quota = cpus × 100000 per period 100000.
///
/// Errors: [`Error::BadInput`] for text that is not a number, a value below 0.01, a
/// value with more than 9 decimals (docker counts nano-CPUs) or above the host's CPUs.
pub fn parse_cpus(s: &str) -> Result<f64> {
    let text = s.trim();
    let ok_shape = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.matches('.').count() <= 1
        && text != ".";
    let value: f64 = match text.parse() {
        Ok(v) if ok_shape => v,
        _ => {
            return Err(Error::BadInput(format!(
                "invalid --cpus {s:?}: use a positive decimal number of CPUs (1.5)"
            )))
        }
    };
    if text.split_once('.').is_some_and(|(_, f)| f.len() > 9) {
        return Err(Error::BadInput(format!(
            "invalid --cpus {s:?}: too precise, use at most 9 decimals"
        )));
    }
    let n = host_cpus();
    if !(0.01..=n as f64).contains(&value) {
        return Err(Error::BadInput(format!(
            "invalid --cpus {s:?}: the range is 0.01 to {n}.00, as this host has {n} CPU{}",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(value)
}

/// Lexically cleans an absolute path: drops `.` components and repeated or trailing
/// slashes. `None` when it is relative or has `..`.
fn clean_absolute(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Parses `-v HOST:CTR[:OPTIONS]`, a bind mount of a host path, or `-v NAME:CTR[:OPTIONS]`,
/// a named volume (docker run reference, "Volumes"; [`crate::volumes`] makes it when the
/// container is made, if missing). Both paths must be absolute and free of `..`; the
/// container path must not be `/`; the host path must exist (docker would create it; we
/// refuse, so a typo does not leave an empty directory behind). OPTIONS is a
/// comma-separated list of `ro` and `rw` (the last one wins; `rw` is the default) and
/// `idmap` (podman's: [`crate::rootfs::idmapped_volumes`]).
///
/// Errors: [`Error::BadInput`] naming the value and the part that is wrong (a relative
/// path that is not a volume name, `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, among them).
pub fn parse_volume(s: &str) -> Result<Volume> {
    let bad = |why: String| Error::BadInput(format!("invalid -v {s:?}: {why}"));
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, opts) = match parts.as_slice() {
        [h, c] => (*h, *c, None),
        [h, c, o] => (*h, *c, Some(*o)),
        _ => return Err(bad("use HOST-PATH:CONTAINER-PATH[:ro|rw]".into())),
    };
    if host.is_empty() || ctr.is_empty() {
        return Err(bad("use HOST-PATH:CONTAINER-PATH[:ro|rw]".into()));
    }
    let named = !host.starts_with('/');
    if named {
        crate::volumes::check_name(host).map_err(|why| {
            bad(format!(
                "{host:?} is neither an absolute host path nor a volume name: {why}"
            ))
        })?;
    }
    let host_path = if named {
        PathBuf::new()
    } else {
        clean_absolute(host).ok_or_else(|| bad(format!("the host path {host:?} must not contain \"..\"")))?
    };
    let container = clean_absolute(ctr).ok_or_else(|| {
        bad(format!(
            "the container path {ctr:?} must be absolute and must not contain \"..\""
        ))
    })?;
    if container == Path::new("/") {
        return Err(bad("the container path cannot be \"/\"".into()));
    }
    let (mut read_only, mut idmap) = (false, false);
    for o in opts.into_iter().flat_map(|o| o.split(',')) {
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            "idmap" => idmap = true,
            other => return Err(bad(format!("unknown volume option {other:?}: use ro, rw or idmap"))),
        }
    }
    match std::fs::metadata(&host_path) {
        _ if named => {}
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad(format!(
                "the host path {} does not exist: create it first",
                host_path.display()
            )))
        }
        Err(e) => return Err(bad(format!("the host path {}: {e}", host_path.display()))),
    }
    Ok(Volume {
        host: host_path,
        container,
        read_only,
        idmap,
        name: named.then(|| host.to_string()),
    })
}

/// Parses `--mount type=bind,source=SRC,target=DST[,readonly][,idmap]` (docker's and
/// podman's `--mount`; `type=volume` with `source=NAME` for a named volume; `src`, `dst`,
/// `destination` and `ro` are accepted as in docker): the same volume as
/// `-v SRC:DST[:ro][,idmap]` ([`parse_volume`]). Only `bind` and `volume` mounts are
/// taken (`--tmpfs` makes tmpfs mounts).
///
/// Errors: [`Error::BadInput`] naming the value and the key that is wrong or missing.
pub fn parse_mount(s: &str) -> Result<Volume> {
    let bad = |why: String| Error::BadInput(format!("invalid --mount {s:?}: {why}"));
    let (mut typ, mut src, mut dst) = ("volume", None, None);
    let mut opts = Vec::new();
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').map_or((kv, None), |(k, v)| (k, Some(v)));
        match (k, v) {
            ("type", Some(t)) => typ = t,
            ("source" | "src", Some(v)) => src = Some(v),
            ("target" | "destination" | "dst", Some(v)) => dst = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => opts.push("ro"),
            ("readonly" | "ro", Some("false" | "0")) => {}
            ("idmap", None) => opts.push("idmap"),
            _ => {
                return Err(bad(format!(
                    "unknown key {kv:?}: use type, source, target, readonly, idmap"
                )))
            }
        }
    }
    if typ != "bind" && typ != "volume" {
        return Err(bad(format!(
            "type={typ} is not supported: use bind or volume (or --tmpfs)"
        )));
    }
    let (Some(src), Some(dst)) = (src, dst) else {
        return Err(bad("give source= and target=".into()));
    };
    if src.contains(':') || dst.contains(':') {
        return Err(bad("paths with \":\" are not supported".into()));
    }
    if typ == "bind" && !src.starts_with('/') {
        return Err(bad(format!(
            "a bind mount's source must be an absolute path, not {src:?}"
        )));
    }
    let v = if opts.is_empty() {
        format!("{src}:{dst}")
    } else {
        format!("{src}:{dst}:{}", opts.join(","))
    };
    parse_volume(&v).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flag() {
        let host = std::env::temp_dir();
        let h = host.display();
        let v = parse_mount(&format!("type=bind,source={h},target=/d,readonly,idmap")).unwrap();
        assert!(v.read_only && v.idmap && v.name.is_none());
        assert_eq!(v.container, std::path::Path::new("/d"));
        let v = parse_mount("type=volume,src=data,dst=/d").unwrap();
        assert_eq!(v.name.as_deref(), Some("data"));
        assert!(!v.idmap && !v.read_only);
        assert!(parse_volume(&format!("{h}:/d:idmap")).unwrap().idmap);
        for bad in [
            "type=tmpfs,target=/t",
            "type=bind,source=rel,target=/d",
            "type=bind,target=/d",
            "type=bind,source=/,target=/d,x=1",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_good() {
        for (s, want) in [
            ("1024", 1024),
            ("0", 0),
            ("64k", 64 << 10),
            ("64K", 64 << 10),
            ("512m", 512 << 20),
            ("512MB", 512 << 20),
            ("512 mib", 512 << 20),
            ("1g", 1 << 30),
            ("1.5g", 3 << 29),
            ("2GiB", 2 << 30),
            ("10b", 10),
            ("1t", 1 << 40),
            ("0.5k", 512),
            ("1.0001k", 1024),
        ] {
            assert_eq!(parse_bytes("--memory", s).unwrap(), want, "{s}");
        }
    }

    #[test]
    fn bytes_bad() {
        for s in [
            "",
            "12q",
            "-1",
            "m",
            "1.2.3",
            "1.",
            ".5",
            "1 2",
            "1  m",
            "1gg",
            "1e3",
            "99999999999999999999",
            "9000000p",
        ] {
            let e = parse_bytes("--memory", s).unwrap_err();
            assert!(matches!(e, Error::BadInput(_)), "{s}");
            let msg = e.to_string();
            assert!(msg.contains("--memory") && msg.contains(&format!("{s:?}")), "{msg}");
        }
        assert_eq!(
            parse_bytes("--memory", "12q").unwrap_err().to_string(),
            "invalid --memory \"12q\": use a number with an optional unit b, k, m or g (512m)"
        );
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1").unwrap(), 1.0);
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert_eq!(parse_cpus("0.01").unwrap(), 0.01);
        let n = host_cpus();
        assert_eq!(parse_cpus(&n.to_string()).unwrap(), n as f64);
        for s in [
            "",
            "0",
            "0.001",
            "-1",
            "abc",
            "1,5",
            "1e0",
            "NaN",
            "inf",
            ".",
            "0.0000000001",
        ] {
            let e = parse_cpus(s).unwrap_err().to_string();
            assert!(e.starts_with("invalid --cpus"), "{s}: {e}");
        }
        let e = parse_cpus(&(n + 1).to_string()).unwrap_err().to_string();
        assert!(e.contains(&format!("0.01 to {n}.00")), "{e}");
    }

    #[test]
    fn volumes() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().display().to_string();
        let v = parse_volume(&format!("{host}:/data")).unwrap();
        assert_eq!(v.host, dir.path());
        assert_eq!(v.container, Path::new("/data"));
        assert!(!v.read_only);
        let v = parse_volume(&format!("{host}/:/data/./x/:ro")).unwrap();
        assert_eq!(v.host, dir.path());
        assert_eq!(v.container, Path::new("/data/x"));
        assert!(v.read_only);
        assert!(!parse_volume(&format!("{host}:/d:ro,rw")).unwrap().read_only);
        let v = parse_volume("data_1.x:/d:ro").unwrap();
        assert_eq!(v.name.as_deref(), Some("data_1.x"));
        assert!(v.read_only && v.host.as_os_str().is_empty());
        for (s, part) in [
            (host.clone(), "HOST-PATH:CONTAINER-PATH"),
            (format!("{host}:/a:ro:x"), "HOST-PATH:CONTAINER-PATH"),
            (format!("{host}:"), "HOST-PATH:CONTAINER-PATH"),
            ("-data:/x".to_string(), "volume name"),
            ("a:/x".to_string(), "volume name"),
            (format!("{host}:rel"), "must be absolute"),
            (format!("{host}:/a/../b"), "must be absolute"),
            (format!("{host}:/"), "cannot be \"/\""),
            (format!("{host}:/a:z"), "unknown volume option"),
            (format!("{host}/missing:/a"), "does not exist"),
        ] {
            let e = parse_volume(&s).unwrap_err();
            assert!(matches!(e, Error::BadInput(_)));
            let msg = e.to_string();
            assert!(msg.starts_with("invalid -v") && msg.contains(part), "{s}: {msg}");
        }
    }
}
