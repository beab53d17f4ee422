//! The seccomp profile of a container (`linux.seccomp`, runtime-spec config-linux.md
//! "Seccomp"): the default profile docker and podman apply, and profiles given with
//! `--security-opt seccomp=FILE` in docker's JSON format or as an OCI `linux.seccomp`
//! object.
//!
//! The default profile is an allow list: every syscall fails with EPERM unless listed;
//! some are allowed only when a capability is in the bounding set (the kernel checks the
//! capability too, the filter just keeps the attack surface away from containers that do
//! not hold it); `clone` may not create namespaces without CAP_SYS_ADMIN, and `clone3`
//! (whose flags live in memory a filter cannot read) then fails with ENOSYS so that
//! glibc falls back to `clone`; `personality` takes only the harmless personas.
//!
//! Syscall names the host's libseccomp does not know (syscalls newer than it) are left
//! out of every profile this module returns, as runc skips them: a newer list never makes
//! a container fail to start on an older host.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::OnceLock;

use libseccomp::ScmpSyscall;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Syscalls every container may make. Syscalls of other architectures than the host's
/// (`chown32`, `socketcall`, `_llseek`) are listed for the 32-bit compatibility
/// architectures the profile also covers.
const ALLOWED: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "file_getattr",
    "file_setattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Allowed on kernels 4.8 and later, where seccomp filters can no longer be bypassed by
/// a tracer (docker's `minKernel` rule); the kernel still limits whom a process may trace.
const ALLOWED_SINCE_4_8: &[&str] = &["process_vm_readv", "process_vm_writev", "ptrace"];

/// Allowed on x86 (64-bit, 32-bit and x32) hosts.
#[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
const ALLOWED_ARCH: &[&str] = &["arch_prctl", "modify_ldt"];
/// Allowed on arm (64-bit and 32-bit) hosts.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const ALLOWED_ARCH: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "breakpoint",
    "cacheflush",
    "set_tls",
    "sync_file_range2",
];
/// No architecture-specific syscalls elsewhere.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm"
)))]
const ALLOWED_ARCH: &[&str] = &[];

/// Syscalls allowed when a capability is in the bounding set.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "open_tree_attr",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "finit_module", "init_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "migrate_pages",
            "move_pages",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `clone` flags that create namespaces (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
/// CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET): refused without
/// CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The `personality(2)` arguments allowed: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26|PER_LINUX32, and 0xffffffff (query the current persona).
const PERSONAS: &[u64] = &[0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// The seccomp architectures of this host: the native one and the 32-bit ones its
/// kernel also runs.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "x86") {
        vec![Arch::ScmpArchX86]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else if cfg!(target_arch = "arm") {
        vec![Arch::ScmpArchArm]
    } else if cfg!(target_arch = "riscv64") {
        vec![Arch::ScmpArchRiscv64]
    } else if cfg!(target_arch = "s390x") {
        vec![Arch::ScmpArchS390x, Arch::ScmpArchS390]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// The native seccomp architecture (for docker's `archMap`).
fn native_arch() -> Arch {
    architectures().first().copied().unwrap_or(Arch::ScmpArchNative)
}

/// The names docker profiles use for this host's architecture in `includes.arches`
/// (Go's GOARCH, plus the kernel's name).
fn arch_names() -> &'static [&'static str] {
    if cfg!(target_arch = "x86_64") {
        &["amd64", "x86_64"]
    } else if cfg!(target_arch = "x86") {
        &["386", "x86"]
    } else if cfg!(target_arch = "aarch64") {
        &["arm64", "aarch64"]
    } else if cfg!(target_arch = "arm") {
        &["arm"]
    } else if cfg!(target_arch = "riscv64") {
        &["riscv64"]
    } else if cfg!(target_arch = "s390x") {
        &["s390x"]
    } else if cfg!(target_arch = "powerpc64") {
        &["ppc64le", "ppc64"]
    } else if cfg!(target_arch = "loongarch64") {
        &["loong64", "loongarch64"]
    } else {
        &[]
    }
}

/// The running kernel's (major, minor) version, from uname(2); (0, 0) if unreadable.
fn kernel_version() -> (u32, u32) {
    let uts = rustix::system::uname();
    let release = uts.release().to_string_lossy();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
}

/// Whether the running kernel is at least `want` ("4.8", "5.10").
fn kernel_at_least(want: &str) -> bool {
    let mut w = want.split('.').map(|n| n.trim().parse::<u32>().unwrap_or(0));
    let want = (w.next().unwrap_or(0), w.next().unwrap_or(0));
    kernel_version() >= want
}

/// Whether the host's libseccomp can resolve the name (what the runtime does when it
/// compiles the filter).
fn libseccomp_knows(name: &str) -> bool {
    ScmpSyscall::from_name(name).is_ok()
}

/// The names of this module's own lists that the host's libseccomp knows, resolved
/// once per process.
fn known_static_names() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        ALLOWED
            .iter()
            .chain(ALLOWED_SINCE_4_8)
            .chain(ALLOWED_ARCH)
            .chain(BY_CAPABILITY.iter().flat_map(|(_, n)| n.iter()))
            .chain(["clone", "clone3", "personality"].iter())
            .copied()
            .filter(|n| libseccomp_knows(n))
            .collect()
    })
}

/// `CAP_SYS_ADMIN` from "sys_admin", "CAP_SYS_ADMIN", "Sys_Admin".
fn normalize_cap(c: &str) -> String {
    let upper = c.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

fn rule(names: Vec<String>, action: LinuxSeccompAction) -> LinuxSyscall {
    let mut r = LinuxSyscall::default();
    r.set_names(names);
    r.set_action(action);
    r
}

/// One argument condition; `None` only if oci-spec's builder refuses it (it takes every
/// value), in which case the caller leaves its rule out (denied, never widened).
fn arg(index: usize, value: u64, value_two: Option<u64>, op: LinuxSeccompOperator) -> Option<LinuxSeccompArg> {
    let b = LinuxSeccompArgBuilder::default().index(index).value(value).op(op);
    match value_two {
        Some(v) => b.value_two(v),
        None => b,
    }
    .build()
    .ok()
}

/// The default seccomp profile, the one docker and podman apply, for a container whose
/// bounding set is `capabilities` (names with or without `CAP_`, any case).
///
/// Shape: `defaultAction` SCMP_ACT_ERRNO with `defaultErrnoRet` 1 (EPERM); the host's
/// architectures (x86_64, x86 and x32 on x86_64 hosts; aarch64 and arm on arm64 hosts);
/// one SCMP_ACT_ALLOW rule with the allowed syscalls (those of every container, the
/// host architecture's, ptrace and process_vm_* on kernels from 4.8, and those of each
/// capability held: CAP_SYS_ADMIN mount, umount2, unshare, setns, clone3, bpf...;
/// CAP_SYS_PTRACE ptrace, kcmp, pidfd_getfd...; CAP_SYS_TIME settimeofday,
/// clock_settime...; CAP_SYS_MODULE, CAP_SYS_BOOT, CAP_SYS_RAWIO, CAP_SYS_NICE,
/// CAP_SYS_PACCT, CAP_SYS_CHROOT, CAP_SYS_TTY_CONFIG, CAP_SYSLOG, CAP_DAC_READ_SEARCH,
/// CAP_BPF, CAP_PERFMON); `personality` allowed for the harmless personas only;
/// without CAP_SYS_ADMIN, `clone` allowed only without namespace flags and `clone3`
/// failing with ENOSYS (so glibc falls back to `clone`).
///
/// Names the host's libseccomp does not know are left out.
pub fn default_profile(capabilities: &[String]) -> LinuxSeccomp {
    let caps: HashSet<String> = capabilities.iter().map(|c| normalize_cap(c)).collect();
    let known = known_static_names();
    let mut allowed: BTreeSet<&str> = ALLOWED.iter().chain(ALLOWED_ARCH).copied().collect();
    if kernel_at_least("4.8") {
        allowed.extend(ALLOWED_SINCE_4_8);
    }
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(*cap) {
            allowed.extend(names.iter());
        }
    }
    allowed.retain(|n| known.contains(n));

    let mut syscalls = vec![rule(
        allowed.iter().map(|s| s.to_string()).collect(),
        LinuxSeccompAction::ScmpActAllow,
    )];
    if known.contains("personality") {
        for &p in PERSONAS {
            if let Some(a) = arg(0, p, None, LinuxSeccompOperator::ScmpCmpEq) {
                let mut r = rule(vec!["personality".into()], LinuxSeccompAction::ScmpActAllow);
                r.set_args(Some(vec![a]));
                syscalls.push(r);
            }
        }
    }
    if !caps.contains("CAP_SYS_ADMIN") {
        // (flags & CLONE_NAMESPACE_FLAGS) == 0: the runtime takes `value` as the mask and
        // `valueTwo` as the datum, as libseccomp and runc do. s390 passes flags second.
        let flags_index = if cfg!(target_arch = "s390x") { 1 } else { 0 };
        let cond = arg(
            flags_index,
            CLONE_NAMESPACE_FLAGS,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        );
        if let (true, Some(cond)) = (known.contains("clone"), cond) {
            let mut r = rule(vec!["clone".into()], LinuxSeccompAction::ScmpActAllow);
            r.set_args(Some(vec![cond]));
            syscalls.push(r);
        }
        if known.contains("clone3") {
            let mut r = rule(vec!["clone3".into()], LinuxSeccompAction::ScmpActErrno);
            r.set_errno_ret(Some(libc::ENOSYS as u32));
            syscalls.push(r);
        }
    }

    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_default_errno_ret(Some(libc::EPERM as u32));
    s.set_architectures(Some(architectures()));
    s.set_syscalls(Some(syscalls));
    s
}

/// docker's `includes`/`excludes` of a syscall rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// One syscall rule of docker's format (`name` or `names`) or of the OCI one (`names`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileSyscall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

/// docker's `archMap` entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

/// A profile file: docker's format (a superset of the OCI object but for `name`,
/// `archMap`, `includes` and `excludes`) or the OCI `linux.seccomp` object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileProfile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<std::path::PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<FileSyscall>>,
}

/// Whether a docker rule applies to a container with `caps` on this host: every
/// included capability held, this architecture included, the kernel new enough, and no
/// excluded capability or architecture.
fn applies(s: &FileSyscall, caps: &HashSet<String>) -> bool {
    let arch_in = |arches: &[String]| arches.iter().any(|a| arch_names().contains(&a.as_str()));
    if let Some(inc) = &s.includes {
        if let Some(c) = &inc.caps {
            if !c.iter().all(|c| caps.contains(&normalize_cap(c))) {
                return false;
            }
        }
        if let Some(a) = inc.arches.as_deref().filter(|a| !a.is_empty()) {
            if !arch_in(a) {
                return false;
            }
        }
        if let Some(k) = inc.min_kernel.as_deref().filter(|k| !k.is_empty()) {
            if !kernel_at_least(k) {
                return false;
            }
        }
    }
    if let Some(exc) = &s.excludes {
        if exc.caps.iter().flatten().any(|c| caps.contains(&normalize_cap(c))) {
            return false;
        }
        if exc.arches.as_deref().is_some_and(arch_in) {
            return false;
        }
        if let Some(k) = exc.min_kernel.as_deref().filter(|k| !k.is_empty()) {
            if kernel_at_least(k) {
                return false;
            }
        }
    }
    true
}

/// Reads `--security-opt seccomp=FILE` for a container with docker's default
/// capabilities ([`crate::config::DEFAULT_CAPABILITIES`]); see [`load_file_for`], which
/// [`crate::config::build`] calls with the container's own bounding set.
///
/// Errors: as [`load_file_for`].
pub fn load_file(path: &Path) -> Result<LinuxSeccomp> {
    let caps: Vec<String> = crate::config::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| c.to_string())
        .collect();
    load_file_for(path, &caps)
}

/// Reads a seccomp profile file: docker's JSON format (`defaultAction`,
/// `defaultErrnoRet`, `architectures` or `archMap`, `syscalls` with `name` or `names`,
/// `action`, `errnoRet`, `args`, `includes` and `excludes` by `caps`, `arches` and
/// `minKernel`) or an OCI `linux.seccomp` object (runtime-spec config-linux.md
/// "Seccomp"). docker's conditional rules are evaluated for a container whose bounding
/// set is `capabilities` on this host; of `archMap`, the entry of this host's
/// architecture gives the architectures. Syscall names the host's libseccomp does not
/// know are dropped (as runc does), and the result is checked by compiling it with
/// libseccomp (not loaded).
///
/// Errors: [`Error::BadInput`] naming the file: unreadable, not JSON or not a profile
/// (with serde's line and column), `name` and `names` both given, `architectures` and
/// `archMap` both given, or a rule libseccomp refuses.
pub fn load_file_for(path: &Path, capabilities: &[String]) -> Result<LinuxSeccomp> {
    let bad = |why: String| Error::BadInput(format!("seccomp profile {}: {why}", path.display()));
    let data = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let file: FileProfile = serde_json::from_slice(&data).map_err(|e| bad(format!("not a valid profile: {e}")))?;
    let caps: HashSet<String> = capabilities.iter().map(|c| normalize_cap(c)).collect();

    let architectures = match (file.architectures, file.arch_map) {
        (Some(a), Some(m)) if !a.is_empty() && !m.is_empty() => {
            return Err(bad("give either \"architectures\" or \"archMap\", not both".into()))
        }
        (_, Some(m)) if !m.is_empty() => {
            let native = native_arch();
            let mut out = Vec::new();
            for entry in m.into_iter().filter(|e| e.architecture == native) {
                out.push(entry.architecture);
                out.extend(entry.sub_architectures.unwrap_or_default());
            }
            Some(out)
        }
        (a, _) => a,
    };

    let mut syscalls = Vec::new();
    for (i, s) in file.syscalls.unwrap_or_default().into_iter().enumerate() {
        let names = match (&s.name, &s.names) {
            (Some(_), Some(n)) if !n.is_empty() => {
                return Err(bad(format!("syscalls[{i}] gives both \"name\" and \"names\": use one")))
            }
            (Some(n), _) => vec![n.clone()],
            (None, Some(n)) => n.clone(),
            (None, None) => Vec::new(),
        };
        if !applies(&s, &caps) {
            continue;
        }
        let names: Vec<String> = names.into_iter().filter(|n| libseccomp_knows(n)).collect();
        if names.is_empty() {
            continue;
        }
        let mut r = rule(names, s.action);
        r.set_errno_ret(s.errno_ret);
        r.set_args(s.args.filter(|a| !a.is_empty()));
        syscalls.push(r);
    }

    let mut out = LinuxSeccomp::default();
    out.set_default_action(file.default_action);
    out.set_default_errno_ret(file.default_errno_ret);
    out.set_architectures(architectures.filter(|a| !a.is_empty()));
    out.set_flags(file.flags.filter(|f| !f.is_empty()));
    out.set_listener_path(file.listener_path);
    out.set_listener_metadata(file.listener_metadata);
    out.set_syscalls(Some(syscalls));
    vessel_runtime::seccomp::Filter::new(&out, None).map_err(|e| bad(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vessel_runtime::seccomp::Filter;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn allowed(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow && r.args().is_none())
            .flat_map(|r| r.names().clone())
            .collect()
    }

    fn rules_for<'a>(p: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|r| r.names().iter().any(|n| n == name))
            .collect()
    }

    const DEFAULT_CAPS: &[&str] = crate::config::DEFAULT_CAPABILITIES;

    #[test]
    fn lists_are_sorted_and_unique() {
        assert!(ALLOWED.windows(2).all(|w| w[0] < w[1]), "ALLOWED must stay sorted");
        for (cap, names) in BY_CAPABILITY {
            assert!(cap.starts_with("CAP_"));
            assert!(names.windows(2).all(|w| w[0] < w[1]), "{cap}");
            for n in *names {
                assert!(!ALLOWED.contains(n), "{n} is both always allowed and gated by {cap}");
            }
        }
    }

    #[test]
    fn default_shape() {
        let p = default_profile(&strings(DEFAULT_CAPS));
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let a = allowed(&p);
        for n in [
            "read", "write", "execve", "openat", "futex", "chroot", "socket", "ptrace",
        ] {
            assert!(a.iter().any(|x| x == n), "{n} should be allowed");
        }
        for n in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "reboot",
            "init_module",
            "keyctl",
            "add_key",
            "userfaultfd",
            "kexec_load",
            "open_by_handle_at",
            "settimeofday",
            "acct",
            "bpf",
            "personality",
            "io_uring_setup",
        ] {
            assert!(!a.iter().any(|x| x == n), "{n} should not be allowed outright");
        }
        // Names are unique across the allow rule.
        let set: HashSet<_> = a.iter().collect();
        assert_eq!(set.len(), a.len());

        let clone = rules_for(&p, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().as_ref().unwrap();
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(
            (args[0].index(), args[0].value(), args[0].value_two()),
            (0, 0x7E02_0000, Some(0))
        );
        let clone3 = rules_for(&p, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(libc::ENOSYS as u32));
        let persona = rules_for(&p, "personality");
        assert_eq!(persona.len(), PERSONAS.len());
        assert!(persona.iter().all(|r| r.args().as_ref().is_some_and(|a| a.len() == 1)));
    }

    #[test]
    fn capabilities_open_their_syscalls() {
        let mut caps = strings(DEFAULT_CAPS);
        caps.extend(strings(&["sys_admin", "CAP_SYS_TIME", "Sys_Module", "CAP_SYS_PTRACE"]));
        let p = default_profile(&caps);
        let a = allowed(&p);
        for n in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "settimeofday",
            "init_module",
            "kcmp",
        ] {
            assert!(a.iter().any(|x| x == n), "{n} should be allowed");
        }
        // With CAP_SYS_ADMIN there is no conditional clone rule nor the ENOSYS clone3.
        assert_eq!(rules_for(&p, "clone").len(), 1);
        assert_eq!(rules_for(&p, "clone3").len(), 1);
        assert!(!a.iter().any(|x| x == "reboot"));
        // No capability at all: still a working profile, without chroot.
        let p = default_profile(&[]);
        assert!(!allowed(&p).iter().any(|x| x == "chroot"));
    }

    #[test]
    fn default_profile_compiles_with_libseccomp() {
        let all: Vec<String> = BY_CAPABILITY.iter().map(|(c, _)| c.to_string()).collect();
        for caps in [strings(DEFAULT_CAPS), all, Vec::new()] {
            let p = default_profile(&caps);
            Filter::new(&p, None).unwrap_or_else(|e| panic!("caps {caps:?}: {e}"));
            // And it survives a trip through config.json.
            let json = serde_json::to_string(&p).unwrap();
            let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
        }
    }

    #[test]
    fn unknown_names_are_left_out() {
        assert!(libseccomp_knows("read"));
        assert!(!libseccomp_knows("no_such_syscall_at_all"));
        let p = default_profile(&strings(DEFAULT_CAPS));
        for r in p.syscalls().iter().flatten() {
            for n in r.names() {
                assert!(libseccomp_knows(n), "{n}");
            }
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "docker.json",
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 1,
              "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
              ],
              "syscalls": [
                {"names": ["read", "write", "exit_group", "no_such_syscall_at_all"], "action": "SCMP_ACT_ALLOW", "args": [], "comment": "x"},
                {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32", "x86"]}},
                {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["kexec_load"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
                {"names": ["only_empty"], "action": "SCMP_ACT_ALLOW", "excludes": {}}
              ]
            }"#,
        );
        let s = load_file(&p).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        let names: Vec<String> = s.syscalls().iter().flatten().flat_map(|r| r.names().clone()).collect();
        assert!(names.contains(&"read".to_string()) && names.contains(&"getpid".to_string()));
        assert!(!names.iter().any(|n| n == "no_such_syscall_at_all" || n == "only_empty"));
        assert!(!names.iter().any(|n| n == "mount" || n == "kexec_load"));
        assert!(names.iter().any(|n| n == "clone") && names.iter().any(|n| n == "clone3"));
        assert!(names.iter().any(|n| n == "ptrace"));
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                s.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
            assert!(names.iter().any(|n| n == "arch_prctl"));
            assert!(!names.iter().any(|n| n == "set_tls"));
        }
        let clone3 = s
            .syscalls()
            .iter()
            .flatten()
            .find(|r| r.names() == &["clone3"])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));

        // With CAP_SYS_ADMIN the conditional rules flip.
        let mut caps = strings(DEFAULT_CAPS);
        caps.push("SYS_ADMIN".into());
        let s = load_file_for(&p, &caps).unwrap();
        let names: Vec<String> = s.syscalls().iter().flatten().flat_map(|r| r.names().clone()).collect();
        assert!(names.iter().any(|n| n == "mount"));
        assert!(!names.iter().any(|n| n == "clone" || n == "clone3"));
    }

    #[test]
    fn oci_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "oci.json",
            r#"{"defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "flags": ["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                             {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
                              "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#,
        );
        let s = load_file(&p).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            s.flags().as_deref(),
            Some(&[LinuxSeccompFilterFlag::SeccompFilterFlagLog][..])
        );
        let rules = s.syscalls().as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].errno_ret(), Some(13));
        assert_eq!(rules[1].args().as_ref().unwrap()[0].value(), 8);
    }

    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("missing.json", None, "cannot read it"),
            ("empty.json", Some(""), "not a valid profile"),
            ("garbage.json", Some("{nope"), "not a valid profile"),
            ("noaction.json", Some(r#"{"syscalls": []}"#), "defaultAction"),
            (
                "badaction.json",
                Some(r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#),
                "not a valid profile",
            ),
            (
                "both.json",
                Some(
                    r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"read","names":["write"],"action":"SCMP_ACT_ERRNO"}]}"#,
                ),
                "both \"name\" and \"names\"",
            ),
            (
                "arches.json",
                Some(
                    r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
                ),
                "archMap",
            ),
            (
                "refused.json",
                Some(
                    r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":9,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
                ),
                "rule for read",
            ),
        ];
        for (name, text, want) in cases {
            let p = dir.path().join(name);
            if let Some(t) = text {
                std::fs::write(&p, t).unwrap();
            }
            match load_file(&p) {
                Err(Error::BadInput(m)) => {
                    assert!(m.starts_with(&format!("seccomp profile {}", p.display())), "{m}");
                    assert!(m.contains(want), "{name}: {m}");
                }
                Err(e) => panic!("{name}: wrong error kind {e}"),
                Ok(s) => panic!("{name}: accepted {s:?}"),
            }
        }
    }
}
