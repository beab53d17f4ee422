//! Mount options of config.json (runtime-spec config.md "Mounts", `options`): the
//! fstab-style names runc accepts, turned into mount(2) flags, propagation changes,
//! recursive attributes for mount_setattr(2) and the data string for the filesystem.

use libc::c_ulong;

/// Mount options of one config.json mount, split the way the kernel wants them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags for mount(2) (`MS_*`), propagation excluded.
    pub flags: c_ulong,
    /// Propagation changes applied after the mount, in order (`MS_SHARED`, `MS_REC`...).
    pub propagation: Vec<c_ulong>,
    /// `MOUNT_ATTR_*` to set recursively ("rro", "rnosuid"...).
    pub attr_set: u64,
    /// `MOUNT_ATTR_*` to clear recursively ("rrw", "rsuid"...).
    pub attr_clr: u64,
    /// Everything else, passed to the filesystem as data ("size=65536k", "mode=755").
    pub data: Vec<String>,
    /// "tmpcopyup": fill a fresh tmpfs with what the destination held before.
    pub tmpcopyup: bool,
    /// "idmap"/"ridmap": id-mapped mounts, which this runtime does not do yet.
    pub idmap: bool,
}

impl MountOptions {
    /// Whether the mount is a bind (option "bind" or "rbind").
    pub fn is_bind(&self) -> bool {
        self.flags & libc::MS_BIND != 0
    }

    /// The data string for mount(2), `None` when empty.
    pub fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// (name, clears the flag, flag): runc's table of mount(2) flag names.
const FLAGS: &[(&str, bool, c_ulong)] = &[
    ("acl", false, libc::MS_POSIXACL),
    ("async", true, libc::MS_SYNCHRONOUS),
    ("atime", true, libc::MS_NOATIME),
    ("bind", false, libc::MS_BIND),
    ("defaults", false, 0),
    ("dev", true, libc::MS_NODEV),
    ("diratime", true, libc::MS_NODIRATIME),
    ("dirsync", false, libc::MS_DIRSYNC),
    ("exec", true, libc::MS_NOEXEC),
    ("iversion", false, libc::MS_I_VERSION),
    ("lazytime", false, libc::MS_LAZYTIME),
    ("loud", true, libc::MS_SILENT),
    ("mand", false, libc::MS_MANDLOCK),
    ("noacl", true, libc::MS_POSIXACL),
    ("noatime", false, libc::MS_NOATIME),
    ("nodev", false, libc::MS_NODEV),
    ("nodiratime", false, libc::MS_NODIRATIME),
    ("noexec", false, libc::MS_NOEXEC),
    ("noiversion", true, libc::MS_I_VERSION),
    ("nolazytime", true, libc::MS_LAZYTIME),
    ("nomand", true, libc::MS_MANDLOCK),
    ("norelatime", true, libc::MS_RELATIME),
    ("nostrictatime", true, libc::MS_STRICTATIME),
    ("nosuid", false, libc::MS_NOSUID),
    ("nosymfollow", false, libc::MS_NOSYMFOLLOW),
    ("rbind", false, libc::MS_BIND | libc::MS_REC),
    ("relatime", false, libc::MS_RELATIME),
    ("remount", false, libc::MS_REMOUNT),
    ("ro", false, libc::MS_RDONLY),
    ("rw", true, libc::MS_RDONLY),
    ("silent", false, libc::MS_SILENT),
    ("strictatime", false, libc::MS_STRICTATIME),
    ("suid", true, libc::MS_NOSUID),
    ("symfollow", true, libc::MS_NOSYMFOLLOW),
    ("sync", false, libc::MS_SYNCHRONOUS),
];

/// Propagation names (config.md "Mounts" options and config-linux.md
/// "rootfsPropagation").
pub(crate) fn propagation(name: &str) -> Option<c_ulong> {
    Some(match name {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => return None,
    })
}

/// (name, clears the attribute, attribute): recursive options for mount_setattr(2).
const ATTRS: &[(&str, bool, u64)] = &[
    ("rro", false, libc::MOUNT_ATTR_RDONLY),
    ("rrw", true, libc::MOUNT_ATTR_RDONLY),
    ("rnosuid", false, libc::MOUNT_ATTR_NOSUID),
    ("rsuid", true, libc::MOUNT_ATTR_NOSUID),
    ("rnodev", false, libc::MOUNT_ATTR_NODEV),
    ("rdev", true, libc::MOUNT_ATTR_NODEV),
    ("rnoexec", false, libc::MOUNT_ATTR_NOEXEC),
    ("rexec", true, libc::MOUNT_ATTR_NOEXEC),
    ("rnodiratime", false, libc::MOUNT_ATTR_NODIRATIME),
    ("rdiratime", true, libc::MOUNT_ATTR_NODIRATIME),
    ("rnosymfollow", false, libc::MOUNT_ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, libc::MOUNT_ATTR_NOSYMFOLLOW),
];

/// Recursive access-time options: each picks one value of the `MOUNT_ATTR__ATIME`
/// field, which mount_setattr(2) changes only with the whole field in `attr_clr`.
/// The clearing forms go back to the kernel's default, relatime.
const ATIME_ATTRS: &[(&str, u64)] = &[
    ("rnoatime", libc::MOUNT_ATTR_NOATIME),
    ("rstrictatime", libc::MOUNT_ATTR_STRICTATIME),
    ("rrelatime", libc::MOUNT_ATTR_RELATIME),
    ("ratime", libc::MOUNT_ATTR_RELATIME),
    ("rnorelatime", libc::MOUNT_ATTR_RELATIME),
    ("rnostrictatime", libc::MOUNT_ATTR_RELATIME),
];

/// Parses the `options` of one mount. Later options win over earlier ones ("ro,rw" is rw).
pub(crate) fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
    let mut o = MountOptions::default();
    for opt in options.iter().map(AsRef::as_ref) {
        if let Some(&(_, clear, flag)) = FLAGS.iter().find(|(n, _, _)| *n == opt) {
            if clear {
                o.flags &= !flag;
            } else {
                o.flags |= flag;
            }
        } else if let Some(p) = propagation(opt) {
            o.propagation.push(p);
        } else if let Some(&(_, clear, attr)) = ATTRS.iter().find(|(n, _, _)| *n == opt) {
            if clear {
                o.attr_set &= !attr;
                o.attr_clr |= attr;
            } else {
                o.attr_clr &= !attr;
                o.attr_set |= attr;
            }
        } else if let Some(&(_, attr)) = ATIME_ATTRS.iter().find(|(n, _)| *n == opt) {
            o.attr_clr |= libc::MOUNT_ATTR__ATIME;
            o.attr_set = (o.attr_set & !libc::MOUNT_ATTR__ATIME) | attr;
        } else {
            match opt {
                "tmpcopyup" => o.tmpcopyup = true,
                "idmap" | "ridmap" => o.idmap = true,
                "" => {}
                _ => o.data.push(opt.to_string()),
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_runc_table() {
        let o = parse(&[
            "rbind",
            "ro",
            "nosuid",
            "nodev",
            "rslave",
            "size=65536k",
            "mode=755",
            "rro",
            "tmpcopyup",
        ]);
        assert_eq!(
            o.flags,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV
        );
        assert_eq!(o.propagation, vec![libc::MS_SLAVE | libc::MS_REC]);
        assert_eq!(o.attr_set, libc::MOUNT_ATTR_RDONLY);
        assert_eq!(o.data(), Some("size=65536k,mode=755".to_string()));
        assert!(o.is_bind() && o.tmpcopyup && !o.idmap);

        let o = parse(&[
            "ro",
            "rw",
            "noexec",
            "exec",
            "newinstance",
            "ptmxmode=0666",
            "gid=5",
            "defaults",
        ]);
        assert_eq!(o.flags, 0);
        assert_eq!(o.data(), Some("newinstance,ptmxmode=0666,gid=5".to_string()));
        assert!(!o.is_bind());
        assert_eq!(parse::<&str>(&[]).data(), None);
        assert_eq!(propagation("runbindable"), Some(libc::MS_UNBINDABLE | libc::MS_REC));

        let o = parse(&["rbind", "rstrictatime", "rnoatime", "rnosuid"]);
        assert_eq!(o.attr_set, libc::MOUNT_ATTR_NOATIME | libc::MOUNT_ATTR_NOSUID);
        assert_eq!(o.attr_clr, libc::MOUNT_ATTR__ATIME);
        assert_eq!(o.data(), None);
        assert_eq!(propagation("bogus"), None);
    }
}
