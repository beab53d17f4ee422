//! Device access rules of a container's cgroup (runtime-spec config-linux.md "Allowed
//! Device Cgroup", the kernel's Documentation/admin-guide/cgroup-v1/devices.rst): the rule
//! model, the default allow list every runtime adds (runc's `AllowedDevices`), the
//! resources a container is created with, and the v1 `devices.deny`/`devices.allow`
//! writes. On v2 the same rules become an eBPF program (see [`super::bpf`]).
//!
//! Semantics: everything is denied first, then the rules apply in order and a later rule
//! wins over an earlier one (as on v1). A rule of type `a` with wildcard numbers and
//! `rwm` access switches the default (allow-all or deny-all) and drops earlier rules.

use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, Spec};

use crate::error::{Error, Result};

/// Access bits, in the encoding of the kernel's `BPF_DEVCG_ACC_*` (include/uapi/linux/bpf.h).
pub mod access {
    /// `m`: mknod(2).
    pub const MKNOD: u8 = 1;
    /// `r`: open for reading.
    pub const READ: u8 = 2;
    /// `w`: open for writing.
    pub const WRITE: u8 = 4;
    /// `rwm`.
    pub const ALL: u8 = MKNOD | READ | WRITE;
}

/// Which device nodes a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `a`: character and block devices.
    All,
    /// `c`: character devices.
    Char,
    /// `b`: block devices.
    Block,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::All => 'a',
            Kind::Char => 'c',
            Kind::Block => 'b',
        }
    }
}

/// One device cgroup rule: allow or deny `access` to devices `kind major:minor`
/// (`None` = wildcard `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// Device type.
    pub kind: Kind,
    /// Major number; `None` for every major.
    pub major: Option<u32>,
    /// Minor number; `None` for every minor.
    pub minor: Option<u32>,
    /// [`access`] bits.
    pub access: u8,
}

impl Rule {
    /// An allow rule for a character device (`minor` None = every minor), access `rwm`.
    pub const fn allow_char(major: u32, minor: Option<u32>) -> Rule {
        Rule {
            allow: true,
            kind: Kind::Char,
            major: Some(major),
            minor,
            access: access::ALL,
        }
    }

    /// Converts `linux.resources.devices[index]`: unset type means `a`, unset or -1
    /// numbers mean `*`, unset or empty access means `rwm`.
    ///
    /// Errors: [`Error::Invalid`] for types other than a/b/c, negative or too large
    /// numbers, access letters other than r/w/m.
    pub fn from_spec(d: &LinuxDeviceCgroup, index: usize) -> Result<Rule> {
        let bad = |why: String| Error::Invalid(format!("linux.resources.devices[{index}] ({d}): {why}"));
        let kind = match d.typ() {
            None | Some(LinuxDeviceType::A) => Kind::All,
            Some(LinuxDeviceType::C) => Kind::Char,
            Some(LinuxDeviceType::B) => Kind::Block,
            Some(t) => {
                return Err(bad(format!(
                    "type {:?} is not a device cgroup type: use a, b or c",
                    t.as_str()
                )))
            }
        };
        let num = |v: Option<i64>, what: &str| -> Result<Option<u32>> {
            match v {
                None | Some(-1) => Ok(None),
                // The eBPF filter compares with 32-bit signed immediates.
                Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(Some(n as u32)),
                Some(n) => Err(bad(format!(
                    "{what} number {n} is out of range (0..2^31, or -1 for all)"
                ))),
            }
        };
        let mut bits = 0;
        for c in d.access().as_deref().unwrap_or("").chars() {
            bits |= match c {
                'r' => access::READ,
                'w' => access::WRITE,
                'm' => access::MKNOD,
                other => return Err(bad(format!("access letter {other:?} is not one of r, w, m"))),
            };
        }
        if bits == 0 {
            bits = access::ALL;
        }
        Ok(Rule {
            allow: d.allow(),
            kind,
            major: num(d.major(), "major")?,
            minor: num(d.minor(), "minor")?,
            access: bits,
        })
    }

    /// Whether this rule switches the default for every device (`a *:* rwm`).
    pub fn is_everything(&self) -> bool {
        self.kind == Kind::All && self.major.is_none() && self.minor.is_none() && self.access == access::ALL
    }

    /// The line the v1 devices controller takes: `c 1:3 rwm`, `a *:* rwm`.
    pub fn v1_line(&self) -> String {
        let n = |v: Option<u32>| v.map_or("*".to_string(), |n| n.to_string());
        let mut acc = String::new();
        for (bit, c) in [(access::READ, 'r'), (access::WRITE, 'w'), (access::MKNOD, 'm')] {
            if self.access & bit != 0 {
                acc.push(c);
            }
        }
        format!("{} {}:{} {acc}", self.kind.letter(), n(self.major), n(self.minor))
    }

    /// Back to the spec's form (for [`effective_resources`]).
    pub fn to_spec(&self) -> LinuxDeviceCgroup {
        let mut d = LinuxDeviceCgroup::default();
        d.set_allow(self.allow);
        d.set_typ(Some(match self.kind {
            Kind::All => LinuxDeviceType::A,
            Kind::Char => LinuxDeviceType::C,
            Kind::Block => LinuxDeviceType::B,
        }));
        d.set_major(self.major.map(i64::from));
        d.set_minor(self.minor.map(i64::from));
        let line = self.v1_line();
        d.set_access(line.rsplit(' ').next().map(str::to_string));
        d
    }
}

/// A device every container may use, whatever config.json says (runc's
/// `specconv.AllowedDevices`, appended after the config's own rules).
#[derive(Debug, Clone, Copy)]
pub struct DefaultDevice {
    /// The node runtimes create for it, if any (mode 0666, owned by root).
    pub path: Option<&'static str>,
    /// The rule that allows it.
    pub rule: Rule,
}

/// The default allow list: mknod of any character or block device, /dev/null, random,
/// full, tty, zero, urandom, every pty (/dev/pts/*, major 136), /dev/ptmx (5:2) and
/// /dev/net/tun (10:200), as runc 1.1-1.3 allow them. /dev/console (5:1) and /dev/fuse
/// (10:229) are not in it (runc dropped them in 1.0): the console is a bind of a pty,
/// and a container that wants fuse names it in `linux.devices`.
pub const ALLOWED_DEVICES: &[DefaultDevice] = &[
    DefaultDevice {
        path: None,
        rule: Rule {
            allow: true,
            kind: Kind::Char,
            major: None,
            minor: None,
            access: access::MKNOD,
        },
    },
    DefaultDevice {
        path: None,
        rule: Rule {
            allow: true,
            kind: Kind::Block,
            major: None,
            minor: None,
            access: access::MKNOD,
        },
    },
    DefaultDevice {
        path: Some("/dev/null"),
        rule: Rule::allow_char(1, Some(3)),
    },
    DefaultDevice {
        path: Some("/dev/random"),
        rule: Rule::allow_char(1, Some(8)),
    },
    DefaultDevice {
        path: Some("/dev/full"),
        rule: Rule::allow_char(1, Some(7)),
    },
    DefaultDevice {
        path: Some("/dev/tty"),
        rule: Rule::allow_char(5, Some(0)),
    },
    DefaultDevice {
        path: Some("/dev/zero"),
        rule: Rule::allow_char(1, Some(5)),
    },
    DefaultDevice {
        path: Some("/dev/urandom"),
        rule: Rule::allow_char(1, Some(9)),
    },
    DefaultDevice {
        path: None,
        rule: Rule::allow_char(136, None),
    },
    DefaultDevice {
        path: Some("/dev/ptmx"),
        rule: Rule::allow_char(5, Some(2)),
    },
    DefaultDevice {
        path: Some("/dev/net/tun"),
        rule: Rule::allow_char(10, Some(200)),
    },
];

/// The resources a container is created with: `linux.resources` (or none), whose device
/// rules are followed, as runc does, by [`ALLOWED_DEVICES`] and an allow rule for each
/// `linux.devices` entry (the nodes the runtime creates must be usable).
pub fn effective_resources(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().as_ref();
    let mut r = linux.and_then(|l| l.resources().clone()).unwrap_or_default();
    let mut rules = r.devices().clone().unwrap_or_default();
    rules.extend(ALLOWED_DEVICES.iter().map(|d| d.rule.to_spec()));
    for d in linux.and_then(|l| l.devices().as_ref()).into_iter().flatten() {
        let mut rule = LinuxDeviceCgroup::from(d);
        match d.typ() {
            // "u" (unbuffered character) is a node type, not a device cgroup type.
            LinuxDeviceType::U => {
                rule.set_typ(Some(LinuxDeviceType::C));
            }
            LinuxDeviceType::C | LinuxDeviceType::B => {}
            _ => continue,
        }
        rules.push(rule);
    }
    r.set_devices(Some(rules));
    r
}

/// Rules reduced to what a filter needs: the default (`true` = allow) and the rules
/// after the last `a *:* rwm`, with partial `a` rules split into `c` and `b` rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// What happens to a device no rule matches.
    pub default_allow: bool,
    /// Rules in config order (later ones win); none of kind [`Kind::All`].
    pub rules: Vec<Rule>,
}

/// Parses and reduces `linux.resources.devices`, starting from deny-all.
///
/// Errors: [`Error::Invalid`] naming the first bad rule.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Result<Program> {
    let mut p = Program {
        default_allow: false,
        rules: Vec::new(),
    };
    for (i, d) in rules.iter().enumerate() {
        let r = Rule::from_spec(d, i)?;
        if r.is_everything() {
            p.default_allow = r.allow;
            p.rules.clear();
        } else if r.kind == Kind::All {
            p.rules.push(Rule { kind: Kind::Char, ..r });
            p.rules.push(Rule { kind: Kind::Block, ..r });
        } else {
            p.rules.push(r);
        }
    }
    Ok(p)
}

/// The v1 writes for a program: `a` to devices.deny (or devices.allow for an allow-all
/// default), then each rule to devices.allow or devices.deny, in order (runc's way).
pub(crate) fn v1_writes(dir: &Path, p: &Program) -> Vec<(std::path::PathBuf, String)> {
    let file = |allow: bool| dir.join(if allow { "devices.allow" } else { "devices.deny" });
    let mut w = vec![(file(p.default_allow), "a".to_string())];
    w.extend(p.rules.iter().map(|r| (file(r.allow), r.v1_line())));
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> LinuxDeviceCgroup {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parse_and_print() {
        let r = Rule::from_spec(
            &rule(r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}"#),
            0,
        )
        .unwrap();
        assert_eq!(r.v1_line(), "c 1:3 rw");
        let r = Rule::from_spec(&rule(r#"{"allow":false}"#), 0).unwrap();
        assert!(r.is_everything() && !r.allow);
        assert_eq!(r.v1_line(), "a *:* rwm");
        let r = Rule::from_spec(
            &rule(r#"{"allow":true,"type":"b","major":-1,"minor":-1,"access":"m"}"#),
            0,
        )
        .unwrap();
        assert_eq!(r.v1_line(), "b *:* m");
        assert_eq!(Rule::from_spec(&r.to_spec(), 0).unwrap(), r);
    }

    #[test]
    fn bad_rules() {
        for bad in [
            r#"{"allow":true,"type":"p"}"#,
            r#"{"allow":true,"type":"c","major":-2}"#,
            r#"{"allow":true,"type":"c","minor":4294967296}"#,
            r#"{"allow":true,"type":"c","access":"rx"}"#,
        ] {
            let e = Rule::from_spec(&rule(bad), 3).unwrap_err().to_string();
            assert!(e.contains("linux.resources.devices[3]"), "{bad}: {e}");
        }
    }

    #[test]
    fn reduce() {
        let rules = [
            rule(r#"{"allow":true,"type":"c","major":1,"minor":3}"#),
            rule(r#"{"allow":false,"access":"rwm"}"#),
            rule(r#"{"allow":true,"type":"c","major":1,"minor":5,"access":"r"}"#),
            rule(r#"{"allow":false,"major":7,"access":"w"}"#),
        ];
        let p = program(&rules).unwrap();
        assert!(!p.default_allow);
        assert_eq!(p.rules.len(), 3, "{p:?}");
        assert_eq!(p.rules[1].kind, Kind::Char);
        assert_eq!(p.rules[2].kind, Kind::Block);
        let w = v1_writes(Path::new("/x"), &p);
        assert_eq!(w[0], (Path::new("/x/devices.deny").to_path_buf(), "a".into()));
        assert_eq!(w[1].1, "c 1:5 r");
        assert_eq!(w[2], (Path::new("/x/devices.deny").to_path_buf(), "c 7:* w".into()));
        let p = program(&[rule(r#"{"allow":true}"#)]).unwrap();
        assert!(p.default_allow && p.rules.is_empty());
    }

    #[test]
    fn effective_adds_defaults_and_linux_devices() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.2.0","root":{"path":"r"},"linux":{
                "devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229}],
                "resources":{"devices":[{"allow":false,"access":"rwm"}],"pids":{"limit":5}}}}"#,
        )
        .unwrap();
        let r = effective_resources(&spec);
        assert_eq!(r.pids().unwrap().limit(), 5);
        let p = program(r.devices().as_ref().unwrap()).unwrap();
        assert!(!p.default_allow);
        assert_eq!(p.rules.len(), ALLOWED_DEVICES.len() + 1);
        assert!(p.rules.contains(&Rule::allow_char(10, Some(229))));
        assert!(p.rules.contains(&Rule::allow_char(136, None)));
    }
}
