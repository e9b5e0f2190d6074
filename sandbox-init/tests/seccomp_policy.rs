//! Runs the embedded seccomp programs (the exact bytes init installs) through a small classic-BPF
//! interpreter, syscall by syscall, with the numbers of the arch under test taken from libc
//! (not from seccompiler's tables): every syscall of DESIGN 3.3 is killed, ordinary ones are
//! allowed, and the argument rules, the arch check and the x32 guard do what they say.

use sandbox_init::bpf;
use sandbox_init::seccomp::{ENOSYS_PROGRAM, KILL_PROGRAM, policy, programs};
use seccompiler::sock_filter;

const ALLOW: u32 = 0x7fff_0000; // SECCOMP_RET_ALLOW
const KILL: u32 = bpf::RET_KILL_PROCESS;
const ENOSYS: u32 = 0x0005_0000 | 38; // SECCOMP_RET_ERRNO | ENOSYS

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = bpf::AUDIT_ARCH_X86_64;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = bpf::AUDIT_ARCH_AARCH64;

/// `struct seccomp_data` as the filter sees it.
struct Data {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl Data {
    fn call(nr: libc::c_long, args: &[u64]) -> Self {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        Data {
            nr: u32::try_from(nr).expect("syscall number"),
            arch: AUDIT_ARCH,
            args: a,
        }
    }

    /// The 32-bit word at byte offset `k` (little-endian layout).
    fn word(&self, k: u32) -> u32 {
        match k {
            0 => self.nr,
            4 => self.arch,
            16..=63 if k % 4 == 0 => {
                let arg = self.args[(k as usize - 16) / 8];
                if k % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from offset {k}"),
        }
    }
}

/// Executes a program the way the kernel does; panics on instructions seccompiler never emits.
fn run(prog: &[sock_filter], data: &Data) -> u32 {
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let i = prog
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the program at {pc}"));
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            0x20 => acc = data.word(i.k),   // ld w abs
            0x54 => acc &= i.k,             // alu and k
            0x05 => pc += i.k as usize,     // ja
            0x15 => pc += jump(acc == i.k), // jeq k
            0x25 => pc += jump(acc > i.k),  // jgt k
            0x35 => pc += jump(acc >= i.k), // jge k
            0x06 => return i.k,             // ret k
            code => panic!("unexpected BPF opcode {code:#x} at {}", pc - 1),
        }
    }
}

fn kill() -> Vec<sock_filter> {
    bpf::decode(KILL_PROGRAM).expect("kill program")
}

fn enosys() -> Vec<sock_filter> {
    bpf::decode(ENOSYS_PROGRAM).expect("enosys program")
}

/// What the kernel does with both filters stacked: the most severe verdict wins (for these
/// three values: kill < errno < allow).
fn verdict(data: &Data) -> u32 {
    let (k, e) = (run(&kill(), data), run(&enosys(), data));
    let rank = |v: u32| match v {
        KILL => 0,
        v if v & 0xffff_0000 == 0x0005_0000 => 1,
        ALLOW => 2,
        v => panic!("unexpected action {v:#x}"),
    };
    if rank(k) <= rank(e) { k } else { e }
}

#[test]
fn the_design_list_is_killed_whatever_the_arguments() {
    let always: &[(&str, libc::c_long)] = &[
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("acct", libc::SYS_acct),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("syslog", libc::SYS_syslog),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("vhangup", libc::SYS_vhangup),
        ("nfsservctl", libc::SYS_nfsservctl),
        #[cfg(target_arch = "x86_64")]
        ("iopl", libc::SYS_iopl),
        #[cfg(target_arch = "x86_64")]
        ("ioperm", libc::SYS_ioperm),
        #[cfg(target_arch = "x86_64")]
        ("uselib", libc::SYS_uselib),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("process_madvise", libc::SYS_process_madvise),
        ("kcmp", libc::SYS_kcmp),
    ];
    for &(name, nr) in always {
        assert!(
            policy::KILL_ALWAYS.contains(&name),
            "{name} not in the generated list"
        );
        for args in [&[][..], &[0, 0, 0, 0, 0, 0], &[u64::MAX; 6]] {
            assert_eq!(verdict(&Data::call(nr, args)), KILL, "{name}({args:?})");
        }
    }
    assert_eq!(
        policy::KILL_ALWAYS.len(),
        always.len(),
        "the list above is complete"
    );
}

#[test]
fn ordinary_syscalls_are_allowed() {
    for (name, nr, args) in [
        ("read", libc::SYS_read, &[0u64, 0, 0][..]),
        ("write", libc::SYS_write, &[1, 0, 0]),
        ("execve", libc::SYS_execve, &[0, 0, 0]),
        ("exit_group", libc::SYS_exit_group, &[0]),
        ("socket", libc::SYS_socket, &[2, 1, 0]),
        ("connect", libc::SYS_connect, &[3, 0, 16]),
        ("mmap", libc::SYS_mmap, &[0, 4096, 3, 0x22, u64::MAX, 0]),
        ("futex", libc::SYS_futex, &[0, 0, 0]),
        ("getpid", libc::SYS_getpid, &[]),
        ("pidfd_open", libc::SYS_pidfd_open, &[1, 0]),
    ] {
        assert_eq!(verdict(&Data::call(nr, args)), ALLOW, "{name}");
    }
}

#[test]
fn clone_is_killed_only_with_namespace_flags() {
    const SIGCHLD: u64 = 17;
    const THREAD: u64 = 0x003d_0f00; // what glibc's pthread_create passes
    for flags in [
        SIGCHLD,
        THREAD,
        0x0100_0000 | 0x0020_0000 | SIGCHLD, /* fork */
    ] {
        assert_eq!(
            verdict(&Data::call(libc::SYS_clone, &[flags])),
            ALLOW,
            "{flags:#x}"
        );
    }
    for flag in [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        0x80, // CLONE_NEWTIME
    ] {
        let flag = u64::try_from(flag).expect("flag");
        for flags in [
            flag | SIGCHLD,
            flag | THREAD,
            flag | libc::CLONE_NEWUSER as u64,
        ] {
            assert_eq!(
                verdict(&Data::call(libc::SYS_clone, &[flags])),
                KILL,
                "{flags:#x}"
            );
        }
        // Only the low 32 bits are flags (the kernel reads an int); high bits do not hide them.
        let high = 0xffff_ffff_0000_0000 | flag;
        assert_eq!(
            verdict(&Data::call(libc::SYS_clone, &[high])),
            KILL,
            "{high:#x}"
        );
    }
}

#[test]
fn clone3_gets_enosys() {
    for args in [&[0u64, 0][..], &[0x1000, 88]] {
        assert_eq!(verdict(&Data::call(libc::SYS_clone3, args)), ENOSYS);
    }
}

#[test]
fn personality_may_be_queried_or_reset_but_not_changed() {
    for persona in [0u64, 0xffff_ffff] {
        let v = verdict(&Data::call(libc::SYS_personality, &[persona]));
        assert_eq!(v, ALLOW, "{persona:#x}");
    }
    for persona in [
        0x8u64,
        0x0040_0000, /* ADDR_NO_RANDOMIZE */
        0xffff_fffe,
        1,
    ] {
        let v = verdict(&Data::call(libc::SYS_personality, &[persona]));
        assert_eq!(v, KILL, "{persona:#x}");
    }
}

#[test]
fn only_unix_ip_and_netlink_sockets_may_be_made() {
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
    ] {
        let v = verdict(&Data::call(libc::SYS_socket, &[family as u64, 1, 0]));
        assert_eq!(v, ALLOW, "family {family}");
    }
    for family in [
        libc::AF_VSOCK,
        libc::AF_PACKET,
        libc::AF_BLUETOOTH,
        libc::AF_CAN,
        255,
    ] {
        let v = verdict(&Data::call(libc::SYS_socket, &[family as u64, 1, 0]));
        assert_eq!(v, KILL, "family {family}");
    }
    assert_eq!(
        verdict(&Data::call(
            libc::SYS_socketpair,
            &[libc::AF_UNIX as u64, 1, 0]
        )),
        ALLOW
    );
    assert_eq!(
        verdict(&Data::call(
            libc::SYS_socketpair,
            &[libc::AF_VSOCK as u64, 1, 0]
        )),
        KILL
    );
}

#[test]
fn other_arches_are_killed() {
    for arch in [0x4000_0003 /* i386 */, 0x4000_0028 /* arm */, 0] {
        let data = Data {
            arch,
            ..Data::call(libc::SYS_getpid, &[])
        };
        assert_eq!(run(&kill(), &data), KILL, "{arch:#x}");
        assert_eq!(run(&enosys(), &data), KILL, "{arch:#x}");
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_syscall_numbers_are_killed() {
    let x32 = |nr: libc::c_long| bpf::X32_SYSCALL_BIT | u32::try_from(nr).expect("nr");
    // Also anything above the bit, syscall(-1) included.
    for nr in [
        x32(libc::SYS_getpid),
        x32(libc::SYS_read),
        x32(libc::SYS_clone3),
        u32::MAX,
    ] {
        let data = Data {
            nr,
            ..Data::call(0, &[])
        };
        assert_eq!(run(&kill(), &data), KILL, "{nr:#x}");
        assert_eq!(run(&enosys(), &data), KILL, "{nr:#x}");
    }
    // Just below the bit: an ordinary (if nonexistent) x86_64 number, left to the kernel.
    let below = Data {
        nr: bpf::X32_SYSCALL_BIT - 1,
        ..Data::call(0, &[])
    };
    assert_eq!(verdict(&below), ALLOW);
}

#[test]
fn programs_are_the_checked_ones_init_installs() {
    let [(k, kp), (e, ep)] = programs().expect("valid");
    assert_eq!((k, e), ("kill", "enosys"));
    assert_eq!(kp, kill());
    assert_eq!(ep, enosys());
}

/// `socket(family, kind, protocol)` as the filter sees it.
fn socket(family: i32, kind: i32, protocol: i32) -> Data {
    let arg = |v: i32| u64::from(v as u32);
    Data::call(libc::SYS_socket, &[arg(family), arg(kind), arg(protocol)])
}

#[test]
fn ip_sockets_are_tcp_or_udp_only() {
    const IPPROTO_MPTCP: i32 = 262;
    const IPPROTO_DCCP: i32 = 33;
    const SOCK_DCCP: i32 = 6;
    for family in [libc::AF_INET, libc::AF_INET6] {
        for (kind, protocol) in [
            (libc::SOCK_STREAM, 0),
            (libc::SOCK_STREAM, libc::IPPROTO_TCP),
            (libc::SOCK_DGRAM, 0),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            (
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            ),
        ] {
            let v = verdict(&socket(family, kind, protocol));
            assert_eq!(
                v, ALLOW,
                "family {family} type {kind:#x} protocol {protocol}"
            );
        }
        for (kind, protocol) in [
            (libc::SOCK_STREAM, IPPROTO_MPTCP),
            (libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            (libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP),
            (libc::SOCK_SEQPACKET, 0),
            (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0),
            (SOCK_DCCP, 0),
            (SOCK_DCCP, IPPROTO_DCCP),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDPLITE),
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
            (libc::SOCK_RAW, libc::IPPROTO_RAW),
            (libc::SOCK_STREAM, -1),
        ] {
            let v = verdict(&socket(family, kind, protocol));
            assert_eq!(
                v, KILL,
                "family {family} type {kind:#x} protocol {protocol}"
            );
        }
    }
}

#[test]
fn netlink_is_netlink_route_only() {
    let v = verdict(&socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW,
        libc::NETLINK_ROUTE,
    ));
    assert_eq!(v, ALLOW);
    for protocol in [
        libc::NETLINK_AUDIT,
        libc::NETLINK_KOBJECT_UEVENT,
        libc::NETLINK_NETFILTER,
        libc::NETLINK_CRYPTO,
        libc::NETLINK_GENERIC,
        libc::NETLINK_SOCK_DIAG,
    ] {
        let v = verdict(&socket(libc::AF_NETLINK, libc::SOCK_RAW, protocol));
        assert_eq!(v, KILL, "netlink protocol {protocol}");
    }
}

#[test]
fn tcp_fast_open_is_killed_on_every_send_path() {
    let fastopen = libc::MSG_FASTOPEN as u32 as u64;
    let other = (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u32 as u64;
    // (syscall, index of flags, number of arguments)
    for (name, nr, flags_at) in [
        ("sendto", libc::SYS_sendto, 3),
        ("sendmsg", libc::SYS_sendmsg, 2),
        ("sendmmsg", libc::SYS_sendmmsg, 3),
    ] {
        let call = |flags: u64| {
            let mut args = [3u64, 0x1000, 1, 0, 0, 0];
            args[flags_at] = flags;
            verdict(&Data::call(nr, &args))
        };
        assert_eq!(call(0), ALLOW, "{name}(0)");
        assert_eq!(call(other), ALLOW, "{name}({other:#x})");
        assert_eq!(call(fastopen), KILL, "{name}(MSG_FASTOPEN)");
        assert_eq!(call(fastopen | other), KILL, "{name}(MSG_FASTOPEN|…)");
        // The kernel reads an int: high bits do not hide the flag.
        assert_eq!(call(0xffff_ffff_0000_0000 | fastopen), KILL, "{name} high");
    }
    let setsockopt = |level: i32, name: i32| {
        let (level, name) = (u64::from(level as u32), u64::from(name as u32));
        verdict(&Data::call(
            libc::SYS_setsockopt,
            &[3, level, name, 0x1000, 4],
        ))
    };
    assert_eq!(
        setsockopt(libc::IPPROTO_TCP, libc::TCP_FASTOPEN_CONNECT),
        KILL
    );
    assert_eq!(setsockopt(libc::IPPROTO_TCP, libc::TCP_NODELAY), ALLOW);
    assert_eq!(
        setsockopt(libc::SOL_SOCKET, libc::TCP_FASTOPEN_CONNECT),
        ALLOW
    );
    assert_eq!(setsockopt(libc::SOL_SOCKET, libc::SO_REUSEADDR), ALLOW);
}
