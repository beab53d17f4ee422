//! Process credentials and limits (runtime-spec config.md "Process", "User",
//! "POSIX process"; config-linux.md "Sysctl"): rlimits (setrlimit(2)), oom_score_adj,
//! user and groups, capabilities (capabilities(7), all five sets), no_new_privs
//! (prctl(2) PR_SET_NO_NEW_PRIVS), hostname and domainname, sysctls, personality.

use std::collections::HashSet;
use std::fs;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities, LinuxPersonalityDomain, PosixRlimit, Process, Spec};

use crate::error::{Context, Error, Result};
use crate::procfs::ProcFs;

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Sets each of `process.rlimits` with setrlimit(2).
///
/// Errors: [`Error::Invalid`] naming the rlimit, the limits asked and the hint that
/// raising a hard limit needs CAP_SYS_RESOURCE.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let name = r.typ().to_string();
        let res = rlimit_resource(&name).ok_or_else(|| Error::Invalid(format!("unknown rlimit {name}")))?;
        let lim = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: `lim` is a valid rlimit that outlives the call.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(Error::Invalid(format!(
                "set rlimit {name} to soft {} hard {}: {err}{}",
                r.soft(),
                r.hard(),
                if err.raw_os_error() == Some(libc::EPERM) {
                    " (raising a hard limit needs CAP_SYS_RESOURCE; lower the limit in config.json)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

/// Writes `process.oomScoreAdj` to /proc/self/oom_score_adj (through the verified
/// procfs, [`ProcFs`]).
pub fn set_oom_score_adj(adj: Option<i32>) -> Result<()> {
    match adj {
        Some(v) => ProcFs::get()?
            .write_self("oom_score_adj", v.to_string().as_bytes())
            .map_err(|e| match e {
                Error::Sys { context, source } => Error::sys(
                    format!("set oom_score_adj to {v} (lowering it needs CAP_SYS_RESOURCE): {context}"),
                    source,
                ),
                e => e,
            }),
        None => Ok(()),
    }
}

/// Sets hostname and domainname (needs a new UTS namespace, as the spec requires).
pub fn set_names(spec: &Spec) -> Result<()> {
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).ctx(|| format!("sethostname {h:?}"))?;
    }
    if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
        // SAFETY: the pointer and length describe `d`'s bytes, valid during the call.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
            return Err(Error::sys(
                format!("setdomainname {d:?}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Writes `linux.sysctl` through /proc/sys (in the container's namespaces), by way of
/// the verified procfs ([`ProcFs`]): never into a file a symlink or a mount in the
/// rootfs's /proc leads to.
///
/// Errors: [`Error::Invalid`] for a key with path tricks, [`Error::Sys`] naming the key.
pub fn set_sysctls(spec: &Spec) -> Result<()> {
    let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (key, value) in sysctls {
        if key.is_empty() || key.contains("..") || key.starts_with(['.', '/']) {
            return Err(Error::Invalid(format!("bad sysctl name {key:?}")));
        }
        let rel = format!("sys/{}", key.replace('.', "/"));
        ProcFs::get()?.write(&rel, value.as_bytes()).map_err(|e| match e {
            Error::Sys { context, source } => Error::sys(format!("set sysctl {key}={value}: {context}"), source),
            e => e,
        })?;
    }
    Ok(())
}

fn to_caps(set: Option<&Capabilities>) -> CapsHashSet {
    set.into_iter()
        .flatten()
        .filter_map(|c| {
            let name = format!("CAP_{c}");
            match name.parse::<Cap>() {
                Ok(cap) if caps::all().contains(&cap) => Some(cap),
                _ => {
                    crate::error::warn(&format!("capability {name} is not known here; skipped"));
                    None
                }
            }
        })
        .collect()
}

/// The capability sets of a process, resolved to what this host knows.
pub struct CapSets {
    bounding: CapsHashSet,
    effective: CapsHashSet,
    permitted: CapsHashSet,
    inheritable: CapsHashSet,
    ambient: CapsHashSet,
}

impl CapSets {
    /// Resolves `process.capabilities`; absent sets are empty (the spec's default).
    pub fn new(c: Option<&LinuxCapabilities>) -> CapSets {
        let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| to_caps(c.and_then(|c| f(c).as_ref()));
        CapSets {
            bounding: get(LinuxCapabilities::bounding),
            effective: get(LinuxCapabilities::effective),
            permitted: get(LinuxCapabilities::permitted),
            inheritable: get(LinuxCapabilities::inheritable),
            ambient: get(LinuxCapabilities::ambient),
        }
    }

    /// Drops from the bounding set what is not in `bounding` (needs CAP_SETPCAP: do it
    /// before changing user).
    pub fn drop_bounding(&self) -> Result<()> {
        // Dropping a capability that is already out of the set is a no-op, so there is no
        // need to read the set first.
        let supported: HashSet<Cap> = caps::runtime::thread_all_supported();
        for cap in supported.difference(&self.bounding) {
            caps::drop(None, CapSet::Bounding, *cap)
                .map_err(|e| Error::Invalid(format!("drop {cap} from the bounding set: {e}")))?;
        }
        Ok(())
    }

    /// The final sets as kernel bit masks, checked now so that applying them after the
    /// seccomp filter cannot fail for a reason known in advance: only capabilities this
    /// kernel supports are kept, and effective must lie within permitted.
    ///
    /// Errors: [`Error::Invalid`] naming the effective capabilities missing from the
    /// permitted set.
    pub fn masks(&self) -> Result<CapMasks> {
        let supported: HashSet<Cap> = caps::runtime::thread_all_supported();
        let mask = |set: &CapsHashSet| -> u64 {
            set.iter()
                .filter(|c| supported.contains(c))
                .fold(0u64, |m, c| m | (1u64 << c.index()))
        };
        let not_permitted: Vec<String> = self
            .effective
            .difference(&self.permitted)
            .map(|c| c.to_string())
            .collect();
        if !not_permitted.is_empty() {
            return Err(Error::Invalid(format!(
                "process.capabilities.effective has {} outside the permitted set: add them to \
                 process.capabilities.permitted",
                not_permitted.join(", ")
            )));
        }
        let (permitted, inheritable) = (mask(&self.permitted), mask(&self.inheritable));
        // The kernel raises an ambient capability only if it is permitted and
        // inheritable; runc skips the others (with a warning in its log), and so do we.
        let ambient = self
            .ambient
            .iter()
            .filter(|c| supported.contains(c) && self.permitted.contains(c) && self.inheritable.contains(c))
            .map(|c| c.index())
            .collect();
        Ok(CapMasks {
            effective: mask(&self.effective),
            permitted,
            inheritable,
            ambient,
        })
    }
}

/// `_LINUX_CAPABILITY_VERSION_3` of linux/capability.h (two 32-bit words per set).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct` of linux/capability.h.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of linux/capability.h.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// A process's final capability sets, computed before the seccomp filter is loaded
/// (see [`CapSets::masks`]) and set after it with one capset(2) and one prctl(2) per
/// ambient capability: nothing else runs under the filter for them.
pub struct CapMasks {
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: Vec<u8>,
}

impl CapMasks {
    /// Sets permitted, inheritable and effective (capset(2)), then raises the ambient
    /// capabilities (prctl(2) PR_CAP_AMBIENT_RAISE). Run it after the user change, which
    /// kept the permitted set through PR_SET_KEEPCAPS; allocates nothing.
    ///
    /// Errors: [`Error::Sys`] with the kernel's answer.
    pub fn apply(&self) -> Result<()> {
        let mut header = CapHeader {
            version: CAPABILITY_VERSION_3,
            pid: 0,
        };
        let word = |m: u64, i: u32| (m >> (32 * i)) as u32;
        let data = [0u32, 1].map(|i| CapData {
            effective: word(self.effective, i),
            permitted: word(self.permitted, i),
            inheritable: word(self.inheritable, i),
        });
        // SAFETY: header and data are the kernel's v3 structs (one header, two data
        // words), valid for the duration of the call.
        let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) };
        if rc != 0 {
            return Err(Error::sys(
                "capset (set the process's capabilities)",
                std::io::Error::last_os_error(),
            ));
        }
        for cap in &self.ambient {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    *cap as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            if rc != 0 {
                return Err(Error::sys(
                    format!("raise ambient capability {cap}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }
}

/// Makes every permitted capability effective again (a uid change away from 0 clears
/// the effective set), and empties the ambient set: a filter loaded without
/// no_new_privs needs CAP_SYS_ADMIN, and [`CapMasks::apply`] sets the final sets after it.
///
/// Errors: [`Error::Invalid`] with what the caps crate reported.
pub fn raise_permitted() -> Result<()> {
    let err = |e: caps::errors::CapsError| Error::Invalid(format!("raise the permitted capabilities: {e}"));
    let permitted = caps::read(None, CapSet::Permitted).map_err(err)?;
    caps::set(None, CapSet::Effective, &permitted).map_err(err)?;
    caps::clear(None, CapSet::Ambient).map_err(err)
}

/// Switches to `process.user`: supplementary groups, gid, uid, umask, keeping the
/// permitted capabilities across the uid change (PR_SET_KEEPCAPS) so that
/// [`CapSets::apply`] can set them afterwards.
///
/// Errors: [`Error::Sys`] naming the id that could not be taken (in a user namespace
/// the id must be mapped).
pub fn set_user(process: &Process) -> Result<()> {
    let user = process.user();
    let (uid, gid) = (user.uid(), user.gid());
    // SAFETY: prctl with PR_SET_KEEPCAPS takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys("prctl PR_SET_KEEPCAPS", std::io::Error::last_os_error()));
    }
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // setgroups is refused in a user namespace whose setgroups file says "deny".
    let setgroups_denied = ProcFs::get()?.read_self("setgroups").is_ok_and(|s| s.trim() == "deny");
    if !setgroups_denied {
        // SAFETY: the pointer and length describe `groups`, valid during the call.
        if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
            return Err(Error::sys(
                format!("setgroups {groups:?}"),
                std::io::Error::last_os_error(),
            ));
        }
    }
    // SAFETY: setresgid/setresuid take plain ids; the raw syscalls act on this thread,
    // and this process has only one.
    if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } != 0 {
        return Err(Error::sys(
            format!("setgid {gid} (is it mapped in the user namespace?)"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } != 0 {
        return Err(Error::sys(
            format!("setuid {uid} (is it mapped in the user namespace?)"),
            std::io::Error::last_os_error(),
        ));
    }
    if let Some(mask) = user.umask() {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    Ok(())
}

/// Sets no_new_privs (prctl(2) PR_SET_NO_NEW_PRIVS) when the process asks for it.
pub fn set_no_new_privs(process: &Process) -> Result<()> {
    if process.no_new_privileges() == Some(true) {
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(Error::sys("prctl PR_SET_NO_NEW_PRIVS", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Sets `linux.personality` (config-linux.md "Personality", personality(2)): the
/// `LINUX32` domain makes `uname -m` answer i686 on x86_64, as with `setarch`. The
/// personality survives execve, so the program and its children keep it.
///
/// Errors: [`Error::Invalid`] for flags (the spec defines none), [`Error::Sys`] when
/// the kernel refuses the domain.
pub fn set_personality(spec: &Spec) -> Result<()> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(Error::Invalid(format!(
            "linux.personality.flags {flags:?}: the runtime-spec defines no flags; remove them"
        )));
    }
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,   // PER_LINUX
        LinuxPersonalityDomain::PerLinux32 => 0x0008, // PER_LINUX32
    };
    // SAFETY: personality takes one integer and changes only this process's execution
    // domain.
    if unsafe { libc::personality(domain) } == -1 {
        return Err(Error::sys(
            format!("set personality {}", p.domain()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Whether AppArmor is enabled on the host (/sys/module/apparmor/parameters/enabled).
pub fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// Whether SELinux is enabled on the host (selinuxfs mounted at /sys/fs/selinux).
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Sets `process.apparmorProfile` and `process.selinuxLabel` for the coming execve
/// (config.md "Linux Process"): AppArmor through /proc/self/attr/apparmor/exec
/// ("exec PROFILE"), SELinux through /proc/self/attr/exec. A host without that LSM
/// ignores the field, as runc does (its apparmor and selinux packages do nothing when
/// the LSM is disabled).
///
/// Errors: [`Error::Sys`] when the LSM is enabled and refuses the profile or label.
pub fn set_lsm_labels(process: &Process) -> Result<()> {
    if let Some(profile) = process.apparmor_profile().as_deref().filter(|p| !p.is_empty()) {
        if apparmor_enabled() {
            let proc = ProcFs::get()?;
            let attr = if proc.self_exists("attr/apparmor/exec") {
                "attr/apparmor/exec"
            } else {
                "attr/exec"
            };
            proc.write_self(attr, format!("exec {profile}").as_bytes())
                .map_err(|e| Error::Invalid(format!("set AppArmor profile {profile:?} (is it loaded?): {e}")))?;
        }
    }
    if let Some(label) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
        if selinux_enabled() {
            ProcFs::get()?
                .write_self("attr/exec", label.as_bytes())
                .map_err(|e| Error::Invalid(format!("set SELinux label {label:?}: {e}")))?;
        }
    }
    Ok(())
}
