//! The cgroup v2 device filter: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE,
//! generated from the device rules (as crun's ebpf.c and runc's devicefilter.go do) and
//! attached to the container's cgroup with BPF_CGROUP_DEVICE through bpf(2)
//! (Documentation/admin-guide/cgroup-v2.rst "Device controller", include/uapi/linux/bpf.h).
//!
//! The program reads `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`
//! (access_type = type in the low 16 bits, access in the high 16 bits), tries the rules
//! from the last to the first, and returns 1 (allow) or 0 (deny) for the first that
//! matches, else the default. An allow rule matches when the requested access is a
//! subset of the rule's; a deny rule when they overlap.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices::{access, Kind, Program};
use crate::error::{Context, Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u8,
    /// dst register in the low nibble, src register in the high one.
    pub regs: u8,
    /// Jump offset (instructions after the next one) or memory offset (bytes).
    pub off: i16,
    /// Immediate operand.
    pub imm: i32,
}

// Opcodes (include/uapi/linux/bpf_common.h, bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU32_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const ALU32_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const JMP_JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0xf),
        off,
        imm,
    }
}

/// Marker offset of a jump to the end of the current rule's block, fixed up when the
/// block is complete.
const TO_NEXT: i16 = i16::MIN;

/// The instructions of the filter for `p`.
///
/// Errors: [`Error::Invalid`] if the program would be too long for jump offsets.
pub fn generate(p: &Program) -> Result<Vec<Insn>> {
    // R2 = type, R3 = access, R4 = major, R5 = minor; R1 (the context) is free after.
    let mut out = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in p.rules.iter().rev() {
        let ty = match r.kind {
            Kind::Char => BPF_DEVCG_DEV_CHAR,
            Kind::Block => BPF_DEVCG_DEV_BLOCK,
            Kind::All => return Err(Error::Invalid("internal: type a rule left in a device program".into())),
        };
        let mut block = vec![insn(JMP_JNE_K, 2, 0, TO_NEXT, ty)];
        if r.access != access::ALL {
            block.push(insn(ALU32_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, i32::from(r.access)));
            if r.allow {
                // Requested access must be a subset of the rule's: (R3 & acc) == R3.
                block.push(insn(JMP_JNE_X, 1, 3, TO_NEXT, 0));
            } else {
                // Any requested bit the rule denies: (R3 & acc) != 0.
                block.push(insn(JMP_JEQ_K, 1, 0, TO_NEXT, 0));
            }
        }
        if let Some(m) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, TO_NEXT, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, TO_NEXT, m as i32));
        }
        block.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == TO_NEXT {
                ins.off = (len - i - 1) as i16;
            }
        }
        out.extend(block);
    }
    out.push(insn(ALU32_MOV_K, 0, 0, 0, i32::from(p.default_allow)));
    out.push(insn(JMP_EXIT, 0, 0, 0, 0));
    if out.len() > 4096 {
        return Err(Error::Invalid(format!(
            "linux.resources.devices: {} rules make a device filter too long",
            p.rules.len()
        )));
    }
    Ok(out)
}

/// `union bpf_attr` as BPF_PROG_LOAD reads it (the fields up to expected_attach_type),
/// zero-padded: the kernel requires unknown trailing bytes to be zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u32; 11],
}

/// `union bpf_attr` for BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: [u32; 9],
}

/// `union bpf_attr` for BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    _pad: [u32; 13],
}

/// bpf(2) with an attribute struct; the raw return value or the errno.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable #[repr(C)] bpf_attr layout of the size we pass;
    // every pointer inside it (instructions, license, buffers) points to memory the
    // caller keeps alive for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Loads the program into the kernel; on a verifier refusal the error carries its log.
///
/// Errors: [`Error::Sys`] from BPF_PROG_LOAD.
pub fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = CString::new("Apache").unwrap_or_default();
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..6].copy_from_slice(b"vessel");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            // Again with the verifier's log, for the message.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr).map(|fd| {
                // SAFETY: a new fd that nothing else owns; closed right away.
                drop(unsafe { OwnedFd::from_raw_fd(fd as i32) })
            });
            let text = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)])
                .trim()
                .to_string();
            Err(Error::sys(
                format!(
                    "load the device filter (bpf BPF_PROG_LOAD){}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(", verifier: {text}")
                    }
                ),
                e,
            ))
        }
    }
}

/// Ids of the device programs attached to the cgroup open as `dir_fd`.
fn query(dir_fd: &OwnedFd) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    loop {
        let mut attr = QueryAttr {
            target_fd: dir_fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && ids.len() < 1 << 16 => ids.resize(ids.len() * 4, 0),
            Err(e) => return Err(Error::sys("list the cgroup's device filters (bpf BPF_PROG_QUERY)", e)),
        }
    }
}

/// Attaches `prog` to the cgroup directory `dir` (BPF_F_ALLOW_MULTI), then detaches the
/// device programs that were there before, so that exactly the new rules hold (runc's
/// order: never a moment without a filter).
///
/// Errors: [`Error::Sys`] naming the cgroup.
pub fn attach(dir: &Path, prog: &OwnedFd) -> Result<()> {
    let dir_fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| format!("open cgroup {}", dir.display()))?;
    let old = query(&dir_fd)?;
    let mut attr = AttachAttr {
        target_fd: dir_fd.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr)
        .ctx(|| format!("attach the device filter to {} (bpf BPF_PROG_ATTACH)", dir.display()))?;
    for id in old {
        let mut get = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            // SAFETY: a new fd that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as i32) },
            // Gone meanwhile, or not ours to see (an LSM): it only adds restrictions.
            Err(_) => continue,
        };
        let mut attr = AttachAttr {
            target_fd: dir_fd.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut attr).ctx(|| {
            format!(
                "detach the old device filter {id} from {} (bpf BPF_PROG_DETACH)",
                dir.display()
            )
        })?;
    }
    Ok(())
}

/// Generates, loads and attaches the filter for `p` to cgroup `dir`.
pub fn apply(dir: &Path, p: &Program) -> Result<()> {
    let insns = generate(p)?;
    let prog = load(&insns)?;
    attach(dir, &prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::devices::{program, Rule};
    use oci_spec::runtime::LinuxDeviceCgroup;

    /// A tiny interpreter for the instructions `generate` emits, to check the logic
    /// without a kernel.
    fn run(prog: &[Insn], ty: i32, acc: u8, major: u32, minor: u32) -> u64 {
        let mut r = [0u64; 11];
        let ctx = [((acc as u32) << 16) | ty as u32, major, minor];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => r[dst] = (r[dst] as u32 & i.imm as u32) as u64,
                ALU32_RSH_K => r[dst] = ((r[dst] as u32) >> i.imm) as u64,
                ALU32_MOV_K => r[dst] = i.imm as u32 as u64,
                ALU32_MOV_X => r[dst] = r[src] as u32 as u64,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K | JMP_JNE_X | JMP_JEQ_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    const C: i32 = BPF_DEVCG_DEV_CHAR;
    const B: i32 = BPF_DEVCG_DEV_BLOCK;
    const R: u8 = access::READ;
    const W: u8 = access::WRITE;
    const M: u8 = access::MKNOD;

    #[test]
    fn deny_all_then_allow() {
        let p = program(&rules(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                {"allow":true,"type":"c","major":136,"access":"rw"},
                {"allow":true,"type":"b","access":"m"}]"#,
        ))
        .unwrap();
        let prog = generate(&p).unwrap();
        assert_eq!(run(&prog, C, R | W, 1, 3), 1);
        assert_eq!(run(&prog, C, M, 1, 3), 1);
        assert_eq!(run(&prog, C, R, 1, 5), 0);
        assert_eq!(run(&prog, C, R | W, 136, 7), 1);
        assert_eq!(run(&prog, C, M, 136, 7), 0, "mknod not in rw");
        assert_eq!(run(&prog, B, M, 8, 0), 1);
        assert_eq!(run(&prog, B, R, 8, 0), 0);
    }

    #[test]
    fn later_rule_wins_and_partial_deny() {
        let p = program(&rules(
            r#"[{"allow":true,"type":"c","major":1,"minor":5},
                {"allow":false,"type":"c","major":1,"minor":5,"access":"w"},
                {"allow":true,"type":"c","major":1,"minor":9},
                {"allow":false,"type":"c","major":1,"minor":9}]"#,
        ))
        .unwrap();
        let prog = generate(&p).unwrap();
        assert_eq!(run(&prog, C, R, 1, 5), 1);
        assert_eq!(run(&prog, C, W, 1, 5), 0);
        assert_eq!(run(&prog, C, R | W, 1, 5), 0, "a denied bit denies the open");
        assert_eq!(run(&prog, C, R, 1, 9), 0);
    }

    #[test]
    fn allow_all_default() {
        let p = program(&rules(
            r#"[{"allow":true},{"allow":false,"type":"c","major":10,"minor":229}]"#,
        ))
        .unwrap();
        let prog = generate(&p).unwrap();
        assert_eq!(run(&prog, C, R, 1, 3), 1);
        assert_eq!(run(&prog, B, R | W, 8, 1), 1);
        assert_eq!(run(&prog, C, R, 10, 229), 0);
        let empty = generate(&Program {
            default_allow: false,
            rules: vec![],
        })
        .unwrap();
        assert_eq!(empty.len(), 8);
        assert_eq!(run(&empty, C, R, 1, 3), 0);
    }

    #[test]
    fn jump_offsets_stay_inside() {
        let p = Program {
            default_allow: false,
            rules: vec![Rule::allow_char(1, Some(3)); 50],
        };
        let prog = generate(&p).unwrap();
        for (i, ins) in prog.iter().enumerate() {
            if matches!(ins.code, JMP_JNE_K | JMP_JNE_X | JMP_JEQ_K) {
                assert!(i + 1 + (ins.off as usize) < prog.len());
            }
        }
    }

    /// Loads a filter into the kernel and attaches it to a throwaway cgroup2 directory
    /// (/sys/fs/cgroup/unified on hybrid hosts, /sys/fs/cgroup on v2 hosts), then checks
    /// from a process inside it that /dev/null opens and /dev/zero does not.
    #[test]
    fn kernel_enforces_the_filter() {
        let base = match crate::cgroups::hierarchy() {
            crate::cgroups::Hierarchy::Unified => Path::new("/sys/fs/cgroup"),
            crate::cgroups::Hierarchy::Hybrid => Path::new("/sys/fs/cgroup/unified"),
            crate::cgroups::Hierarchy::Legacy => {
                eprintln!("note: no cgroup2 mount here; the kernel part of the eBPF test is skipped");
                return;
            }
        };
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("note: not root; the kernel part of the eBPF test is skipped");
            return;
        }
        let dir = base.join(format!("vessel-test-bpf-{}", std::process::id()));
        struct Gone<'a>(&'a Path);
        impl Drop for Gone<'_> {
            fn drop(&mut self) {
                for _ in 0..100 {
                    if std::fs::remove_dir(self.0).is_ok() || !self.0.exists() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        std::fs::create_dir(&dir).unwrap();
        let _gone = Gone(&dir);
        let p = program(&rules(
            r#"[{"allow":false},{"allow":true,"type":"c","major":1,"minor":3,"access":"rw"}]"#,
        ))
        .unwrap();
        apply(&dir, &p).unwrap();
        // Again: the first program is replaced, not stacked.
        apply(&dir, &p).unwrap();
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        assert_eq!(query(&fd).unwrap().len(), 1);
        let procs = dir.join("cgroup.procs");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {} || exit 9; cat /dev/null || exit 2; head -c1 /dev/zero >/dev/null 2>&1 && exit 3; exit 0",
                procs.display()
            ))
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(
            out.code(),
            Some(0),
            "inside the filtered cgroup: exit 2 = /dev/null refused, 3 = /dev/zero allowed"
        );
    }
}
