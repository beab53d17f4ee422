//! What the `host` image keeps from its containers: the host's secrets in /etc. The
//! container's /etc is an overlay over the host's; before it is mounted, its upper dir
//! gets a copy of `shadow` and `gshadow` with every password locked (the users and
//! groups stay, so `id`, `su -` to a passwordless shell or file owners work as on the
//! host) and an overlay whiteout (a 0/0 character device, overlayfs.rst "whiteouts")
//! over each file of [`HIDDEN`]. An entry the container has already written in its
//! upper dir is left as it is.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Files of /etc holding password hashes, rewritten with every password locked.
pub const LOCKED: &[&str] = &["shadow", "gshadow"];

/// Files of /etc (glob patterns on the last component, `*` matching any run of
/// characters) that containers of the host image do not see: backups of the password
/// files, old password hashes, ssh host private keys, TLS private keys, sudo rules,
/// Kerberos keys.
pub const HIDDEN: &[&str] = &[
    "shadow-",
    "gshadow-",
    "security/opasswd",
    "ssh/ssh_host_*_key",
    "ssl/private/*",
    "sudoers.d/*",
    "krb5.keytab",
];

/// A password field as locked: `*` and fields already starting with `!` stay, every
/// other one (a hash, or empty: no password) becomes `!*`.
fn lock(field: &str) -> &str {
    if field == "*" || field.starts_with('!') {
        field
    } else {
        "!*"
    }
}

/// `text` (shadow(5) or gshadow(5) lines) with the second field of every line locked.
fn locked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        match line.split_once(':') {
            Some((name, rest)) => {
                let (pw, tail) = rest.split_once(':').map_or((rest, None), |(p, t)| (p, Some(t)));
                out.push_str(name);
                out.push(':');
                out.push_str(lock(pw));
                if let Some(t) = tail {
                    out.push(':');
                    out.push_str(t);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn matches(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((pre, post)) => name.len() >= pre.len() + post.len() && name.starts_with(pre) && name.ends_with(post),
    }
}

/// Makes `upper/rel`'s parent dirs with the owner and mode of the host's (an overlay's
/// merged dir takes them from the upper).
fn make_parents(upper: &Path, etc: &Path, rel: &Path) -> Result<()> {
    let mut cur = std::path::PathBuf::new();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        cur.push(c);
        let dir = upper.join(&cur);
        if dir.is_dir() {
            continue;
        }
        let meta = fs::metadata(etc.join(&cur)).at("stat", etc.join(&cur))?;
        fs::create_dir(&dir).at("create", &dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(meta.mode() & 0o7777)).at("chmod", &dir)?;
        chown_as_host(&dir, &meta)?;
    }
    Ok(())
}

/// Gives `p` the owner of the host file `meta`. In a rootless session the host's
/// owners are not mapped (they show as nobody): `p` stays the session's root's, which
/// is the container's root.
fn chown_as_host(p: &Path, meta: &fs::Metadata) -> Result<()> {
    if crate::rootless::is_rootless() {
        return Ok(());
    }
    std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid())).at("chown", p)
}

/// Whether the upper dir has an entry (a file, a whiteout, a dangling symlink) at `p`.
fn present(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

/// Fills the upper dir `upper` of a container's /etc overlay over the host's `etc`:
/// locked copies of [`LOCKED`], whiteouts over [`HIDDEN`]. Entries already in the
/// upper dir are kept.
///
/// Errors: [`Error::Io`] naming the file that could not be read or made.
pub fn hide(upper: &Path, etc: &Path) -> Result<()> {
    for name in LOCKED {
        let (src, dst) = (etc.join(name), upper.join(name));
        if present(&dst) {
            continue;
        }
        let Ok(meta) = fs::metadata(&src) else { continue };
        let text = match fs::read_to_string(&src) {
            Ok(text) => locked(&text),
            // A rootless user cannot read them: every account of passwd(5) or group(5), locked.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && crate::rootless::is_rootless() => {
                let (from, fields) = if *name == "shadow" {
                    ("passwd", ":!*:::::::")
                } else {
                    ("group", ":!*::")
                };
                let names = fs::read_to_string(etc.join(from)).at("read", etc.join(from))?;
                names
                    .lines()
                    .filter_map(|l| l.split(':').next().filter(|n| !n.is_empty()))
                    .map(|n| format!("{n}{fields}\n"))
                    .collect()
            }
            Err(e) => return Err(Error::io("read", &src, e)),
        };
        let tmp = upper.join(format!(".{name}.vessel-tmp"));
        fs::write(&tmp, text).at("write", &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(meta.mode() & 0o7777)).at("chmod", &tmp)?;
        chown_as_host(&tmp, &meta)?;
        fs::rename(&tmp, &dst).at("rename into place", &dst)?;
    }
    for pattern in HIDDEN {
        let rel = Path::new(pattern);
        let (Some(dir), Some(last)) = (rel.parent(), rel.file_name().and_then(|n| n.to_str())) else {
            continue;
        };
        let Ok(entries) = fs::read_dir(etc.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if !matches(last, n) {
                continue;
            }
            let rel = dir.join(n);
            let dst = upper.join(&rel);
            if present(&dst) {
                continue;
            }
            make_parents(upper, etc, &rel)?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &dst,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::empty(),
                0,
            )
            .map_err(|e| Error::io("make an overlay whiteout at", &dst, e.into()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    #[test]
    fn passwords_are_locked_and_secrets_whited_out() {
        let t = tempfile::Builder::new().prefix("vessel-secrets-").tempdir().unwrap();
        let (etc, upper) = (t.path().join("etc"), t.path().join("upper"));
        for d in ["ssh", "ssl/private", "sudoers.d", "security"] {
            fs::create_dir_all(etc.join(d)).unwrap();
        }
        fs::create_dir(&upper).unwrap();
        let w = |p: &str, s: &str| fs::write(etc.join(p), s).unwrap();
        w(
            "shadow",
            "root:$6$salt$hash:19000:0:99999:7:::\nbin:*:19000::::::\nold:!$6$x$y:1::::::\nnone::1::::::\n",
        );
        w("gshadow", "root:$6$g$h::\nadm:*::\n");
        for f in [
            "shadow-",
            "ssh/ssh_host_ed25519_key",
            "ssl/private/k.key",
            "sudoers.d/x",
            "security/opasswd",
        ] {
            w(f, "secret");
        }
        w("ssh/ssh_host_ed25519_key.pub", "public");
        w("ssh/sshd_config", "config");
        fs::set_permissions(etc.join("ssl/private"), fs::Permissions::from_mode(0o710)).unwrap();
        hide(&upper, &etc).unwrap();
        let shadow = fs::read_to_string(upper.join("shadow")).unwrap();
        assert_eq!(
            shadow,
            "root:!*:19000:0:99999:7:::\nbin:*:19000::::::\nold:!$6$x$y:1::::::\nnone:!*:1::::::\n"
        );
        assert_eq!(
            fs::read_to_string(upper.join("gshadow")).unwrap(),
            "root:!*::\nadm:*::\n"
        );
        for f in [
            "shadow-",
            "ssh/ssh_host_ed25519_key",
            "ssl/private/k.key",
            "sudoers.d/x",
            "security/opasswd",
        ] {
            let m = fs::symlink_metadata(upper.join(f)).unwrap();
            assert!(m.file_type().is_char_device() && m.rdev() == 0, "{f}");
        }
        for f in ["ssh/ssh_host_ed25519_key.pub", "ssh/sshd_config"] {
            assert!(!upper.join(f).exists(), "{f}");
        }
        let m = fs::metadata(upper.join("ssl/private")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o710);
        // What the container wrote itself stays.
        fs::write(upper.join("shadow"), "mine\n").unwrap();
        hide(&upper, &etc).unwrap();
        assert_eq!(fs::read_to_string(upper.join("shadow")).unwrap(), "mine\n");
    }
}
