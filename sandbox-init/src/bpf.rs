//! Classic-BPF plumbing for the seccomp programs, shared by `build.rs` (which compiles
//! `seccomp/policy.json` and splices in the x32 guard) and the library (which decodes and checks
//! the embedded programs before installing them).
//!
//! Why the splice: seccompiler checks `seccomp_data.arch` but not the x32 bit. An x32 syscall
//! arrives with `AUDIT_ARCH_X86_64` and `nr | 0x4000_0000`, so it would pass the arch check and
//! then miss every rule, which name x86_64 numbers. We kill any `nr >= 0x4000_0000` right after
//! the arch check (this also kills `syscall(-1)`, which nothing in a sandbox has a reason to call).
//!
//! The splice is only sound for the exact prologue seccompiler 0.5 emits; [`splice_x32_guard`]
//! refuses anything else, so a seccompiler upgrade that changes the layout breaks the build.

use seccompiler::sock_filter;

/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
pub const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub const JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
pub const JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K`.
pub const RET_K: u16 = 0x06;
/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offset of `nr` in `struct seccomp_data`.
pub const DATA_NR: u32 = 0;
/// Offset of `arch` in `struct seccomp_data`.
pub const DATA_ARCH: u32 = 4;
/// `AUDIT_ARCH_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `AUDIT_ARCH_AARCH64`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// `__X32_SYSCALL_BIT`.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// The kernel's limit on a program's length (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// Bytes per encoded instruction (`struct sock_filter`).
pub const INSN_BYTES: usize = 8;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The three instructions seccompiler 0.5 starts every program with:
/// `ld arch; jeq <audit_arch> ? skip 1 : next; ret KILL_PROCESS`.
pub const fn arch_prologue(audit_arch: u32) -> [sock_filter; 3] {
    [
        insn(LD_W_ABS, 0, 0, DATA_ARCH),
        insn(JEQ_K, 1, 0, audit_arch),
        insn(RET_K, 0, 0, RET_KILL_PROCESS),
    ]
}

/// `ld nr; jge 0x4000_0000 ? next : skip 1; ret KILL_PROCESS`.
pub const X32_GUARD: [sock_filter; 3] = [
    insn(LD_W_ABS, 0, 0, DATA_NR),
    insn(JGE_K, 0, 1, X32_SYSCALL_BIT),
    insn(RET_K, 0, 0, RET_KILL_PROCESS),
];

/// Why [`splice_x32_guard`] refused a program (at build time: the build fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpliceError {
    /// The program does not start with the arch check of [`arch_prologue`] for x86_64.
    #[error("unexpected seccompiler prologue {found:?}; expected {expected:?}")]
    UnexpectedPrologue {
        /// Up to the first three instructions.
        found: Vec<sock_filter>,
        /// What seccompiler 0.5 emits.
        expected: [sock_filter; 3],
    },
    /// The arch check is not followed by the syscall-number load the guard must precede.
    #[error("unexpected instruction after seccompiler's arch check: {0:?}")]
    UnexpectedLoad(sock_filter),
    /// With the guard, the program passes [`MAX_INSNS`].
    #[error("program too long: {0} instructions")]
    TooLong(usize),
}

/// Why [`decode`] refused the bytes of a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Empty, or not a multiple of [`INSN_BYTES`].
    #[error("{0} bytes is not a whole, non-empty number of instructions")]
    Ragged(usize),
    /// More than [`MAX_INSNS`] instructions: the kernel would refuse the program.
    #[error("{0} instructions is over the kernel's limit")]
    TooLong(usize),
}

/// Inserts [`X32_GUARD`] right after seccompiler's x86_64 arch check.
///
/// Sound because classic BPF only jumps forward and the only jump that crosses index 3 is the
/// arch check's "matched" branch (`jt = 1` from index 1), which must land on the guard. Refuses
/// any program that does not start with exactly that prologue followed by the syscall-number
/// load seccompiler emits for a non-empty filter.
pub fn splice_x32_guard(prog: &mut Vec<sock_filter>) -> Result<(), SpliceError> {
    let prologue = arch_prologue(AUDIT_ARCH_X86_64);
    if prog.len() < 4 || prog[..3] != prologue {
        return Err(SpliceError::UnexpectedPrologue {
            found: prog[..prog.len().min(3)].to_vec(),
            expected: prologue,
        });
    }
    if prog[3] != insn(LD_W_ABS, 0, 0, DATA_NR) {
        return Err(SpliceError::UnexpectedLoad(prog[3].clone()));
    }
    prog.splice(3..3, X32_GUARD);
    if prog.len() > MAX_INSNS {
        return Err(SpliceError::TooLong(prog.len()));
    }
    Ok(())
}

/// Whether `prog` starts with the x86_64 arch check followed by [`X32_GUARD`].
pub fn has_x32_guard(prog: &[sock_filter]) -> bool {
    prog.len() > 6 && prog[..3] == arch_prologue(AUDIT_ARCH_X86_64) && prog[3..6] == X32_GUARD
}

/// A program as raw `struct sock_filter[]` bytes, little-endian (native on x86_64 and aarch64):
/// the format `bwrap --add-seccomp-fd` also reads.
pub fn encode(prog: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(prog.len() * INSN_BYTES);
    for i in prog {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    out
}

/// The inverse of [`encode`]; refuses empty, ragged or over-long input.
pub fn decode(bytes: &[u8]) -> Result<Vec<sock_filter>, DecodeError> {
    if bytes.is_empty() || bytes.len() % INSN_BYTES != 0 {
        return Err(DecodeError::Ragged(bytes.len()));
    }
    if bytes.len() / INSN_BYTES > MAX_INSNS {
        return Err(DecodeError::TooLong(bytes.len() / INSN_BYTES));
    }
    Ok(bytes
        .chunks_exact(INSN_BYTES)
        .map(|c| sock_filter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    use std::collections::BTreeMap;

    fn compiled(arch: TargetArch) -> BpfProgram {
        let rules = BTreeMap::from([(libc::SYS_ptrace, vec![])]);
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::KillProcess,
            arch,
        )
        .and_then(BpfProgram::try_from)
        .expect("compile")
    }

    #[test]
    fn constants_match_the_kernel_headers() {
        assert_eq!(
            LD_W_ABS,
            (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16
        );
        assert_eq!(JEQ_K, (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16);
        assert_eq!(JGE_K, (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16);
        assert_eq!(RET_K, (libc::BPF_RET | libc::BPF_K) as u16);
        assert_eq!(RET_KILL_PROCESS, libc::SECCOMP_RET_KILL_PROCESS);
        // AUDIT_ARCH_* = ELF machine | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.
        let audit = |machine: u16| u32::from(machine) | 0x8000_0000 | 0x4000_0000;
        assert_eq!(AUDIT_ARCH_X86_64, audit(libc::EM_X86_64));
        assert_eq!(AUDIT_ARCH_AARCH64, audit(libc::EM_AARCH64));
        assert_eq!(INSN_BYTES, std::mem::size_of::<libc::sock_filter>());
    }

    #[test]
    fn seccompiler_emits_the_prologue_the_splice_expects() {
        assert_eq!(
            compiled(TargetArch::x86_64)[..3],
            arch_prologue(AUDIT_ARCH_X86_64)
        );
        assert_eq!(
            compiled(TargetArch::aarch64)[..3],
            arch_prologue(AUDIT_ARCH_AARCH64)
        );
    }

    #[test]
    fn splice_puts_the_guard_between_arch_check_and_rules() {
        let original = compiled(TargetArch::x86_64);
        let mut prog = original.clone();
        splice_x32_guard(&mut prog).expect("splice");
        assert_eq!(prog.len(), original.len() + 3);
        assert_eq!(prog[..3], original[..3]);
        assert_eq!(prog[3..6], X32_GUARD);
        assert_eq!(prog[6..], original[3..]);
        assert!(has_x32_guard(&prog));
        assert!(!has_x32_guard(&original));
        // The arch check's "matched" branch lands on the guard's load.
        assert_eq!(1 + 1 + usize::from(prog[1].jt), 3);
        // The guard's "no x32 bit" branch lands on seccompiler's own syscall-number load.
        assert_eq!(4 + 1 + usize::from(prog[4].jf), 6);
        assert_eq!(prog[6], insn(LD_W_ABS, 0, 0, DATA_NR));
    }

    #[test]
    fn splice_refuses_an_unexpected_layout() {
        let mut aarch64 = compiled(TargetArch::aarch64);
        assert!(matches!(
            splice_x32_guard(&mut aarch64),
            Err(SpliceError::UnexpectedPrologue { .. })
        ));

        let mut shifted = compiled(TargetArch::x86_64);
        shifted.insert(0, insn(LD_W_ABS, 0, 0, DATA_NR));
        assert!(splice_x32_guard(&mut shifted).is_err());

        let mut other_jump = compiled(TargetArch::x86_64);
        other_jump[1].jt = 2;
        assert!(splice_x32_guard(&mut other_jump).is_err());

        let mut no_rules = compiled(TargetArch::x86_64);
        no_rules.truncate(3);
        no_rules.push(insn(RET_K, 0, 0, 0x7fff_0000));
        assert_eq!(
            splice_x32_guard(&mut no_rules),
            Err(SpliceError::UnexpectedLoad(insn(RET_K, 0, 0, 0x7fff_0000)))
        );

        let mut empty = Vec::new();
        assert!(splice_x32_guard(&mut empty).is_err());
    }

    #[test]
    fn encode_decode_round_trip_and_reject_bad_input() {
        let prog = compiled(TargetArch::x86_64);
        let bytes = encode(&prog);
        assert_eq!(bytes.len(), prog.len() * INSN_BYTES);
        assert_eq!(decode(&bytes).expect("decode"), prog);
        assert_eq!(&bytes[..8], &[0x20, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(decode(&[]), Err(DecodeError::Ragged(0)));
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Ragged(bytes.len() - 1))
        );
        assert_eq!(
            decode(&vec![0u8; (MAX_INSNS + 1) * INSN_BYTES]),
            Err(DecodeError::TooLong(MAX_INSNS + 1))
        );
    }
}
