//! Syscall-level attacks: the sandbox's seccomp filter should kill most of these with SIGSYS
//! (nothing is printed then); the rest must fail with an errno.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::child;
use crate::errno::Errno;
use crate::report::Outcome;

/// Converts a raw syscall return value: -1 means failure with errno.
fn check(r: libc::c_long) -> Result<libc::c_long, Errno> {
    if r == -1 { Err(Errno::last()) } else { Ok(r) }
}

/// Closes a file descriptor a successful attack returned.
fn close_fd(fd: libc::c_long) {
    if let Ok(fd) = libc::c_int::try_from(fd) {
        // SAFETY: fd was just returned to us by the kernel and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Reports a syscall that returns a new file descriptor on success.
fn fd_outcome(r: libc::c_long, what: &str) -> Outcome {
    match check(r) {
        Ok(fd) => {
            close_fd(fd);
            Outcome::Succeeded(format!("{what} returned fd {fd}"))
        }
        Err(e) => Outcome::Blocked(e),
    }
}

/// Reports a syscall that returns 0 on success.
fn zero_outcome(r: libc::c_long, what: &str) -> Outcome {
    match check(r) {
        Ok(_) => Outcome::Succeeded(what.to_owned()),
        Err(e) => Outcome::Blocked(e),
    }
}

pub fn unshare_user() -> Outcome {
    // SAFETY: unshare takes no pointers; it only affects this short-lived process.
    let r = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    zero_outcome(r.into(), "unshare(CLONE_NEWUSER)")
}

pub fn unshare_net() -> Outcome {
    // SAFETY: unshare takes no pointers; it only affects this short-lived process.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    zero_outcome(r.into(), "unshare(CLONE_NEWNET)")
}

pub fn setns(path: &str) -> Outcome {
    // If the namespace file cannot be opened, setns is still called (with fd -1, EBADF) so the
    // seccomp filter always sees the syscall.
    let file = std::fs::File::open(path);
    if let Err(e) = &file {
        eprintln!(
            "setns: open {path}: {}; calling setns(-1) instead",
            Errno::from_io(e)
        );
    }
    let fd = file.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    // SAFETY: setns takes no pointers; fd is either -1 or an open namespace file we own.
    let r = unsafe { libc::setns(fd, 0) };
    zero_outcome(r.into(), &format!("setns({path})"))
}

pub fn clone_newuser() -> Outcome {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: raw clone with a null stack behaves like fork: the child runs on a copy of our
    // stack. The process is single-threaded and the child only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    match check(r) {
        // SAFETY: _exit is async-signal-safe and never returns.
        Ok(0) => unsafe { libc::_exit(0) },
        Ok(pid) => {
            child::reap(pid as libc::pid_t);
            Outcome::Succeeded(format!("clone(CLONE_NEWUSER) created child {pid}"))
        }
        Err(e) => Outcome::Blocked(e),
    }
}

/// `struct clone_args` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Debug, Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

pub fn clone3() -> Outcome {
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: args is a valid clone_args of the size passed. With no stack given, clone3
    // behaves like fork; the process is single-threaded and the child only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match check(r) {
        // SAFETY: _exit is async-signal-safe and never returns.
        Ok(0) => unsafe { libc::_exit(0) },
        Ok(pid) => {
            child::reap(pid as libc::pid_t);
            Outcome::Succeeded(format!("clone3 created child {pid}"))
        }
        Err(e) => Outcome::Blocked(e),
    }
}

pub fn mount() -> Outcome {
    // SAFETY: all pointers are NUL-terminated string literals or null (data).
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/tmp".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    match check(r.into()) {
        Ok(_) => {
            // Undo it: the tmpfs we just stacked on /tmp is the topmost mount there.
            // SAFETY: the path is a NUL-terminated literal.
            let undone = unsafe { libc::umount2(c"/tmp".as_ptr(), 0) } == 0;
            Outcome::Succeeded(format!(
                "mounted tmpfs on /tmp ({})",
                if undone {
                    "unmounted again"
                } else {
                    "unmount FAILED"
                }
            ))
        }
        Err(e) => Outcome::Blocked(e),
    }
}

pub fn fsopen() -> Outcome {
    // SAFETY: the fs name is a NUL-terminated literal; flags 0.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0 as libc::c_uint) };
    fd_outcome(r, "fsopen(tmpfs)")
}

pub fn open_tree() -> Outcome {
    // SAFETY: the path is a NUL-terminated literal; flags 0 (no clone: an O_PATH-like fd).
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0 as libc::c_uint,
        )
    };
    fd_outcome(r, "open_tree(/)")
}

pub fn move_mount() -> Outcome {
    // SAFETY: the paths are NUL-terminated literals; the fds are invalid on purpose (dummy
    // arguments: the call cannot move anything even if it were allowed).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            -1 as libc::c_int,
            c"".as_ptr(),
            -1 as libc::c_int,
            c"".as_ptr(),
            0 as libc::c_uint,
        )
    };
    zero_outcome(r, "move_mount returned 0")
}

pub fn pivot_root() -> Outcome {
    // SAFETY: both paths are NUL-terminated literals.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c"/tmp".as_ptr(), c"/tmp".as_ptr()) };
    zero_outcome(r, "pivot_root(/tmp, /tmp)")
}

pub fn chroot() -> Outcome {
    // SAFETY: the path is a NUL-terminated literal; chroot only affects this process.
    let r = unsafe { libc::chroot(c"/tmp".as_ptr()) };
    zero_outcome(r.into(), "chroot(/tmp)")
}

pub fn ptrace_sibling() -> Outcome {
    let pid = match child::spawn_idle(None) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("ptrace-sibling: fork failed: {e}");
            return Outcome::Blocked(e);
        }
    };
    // SAFETY: PTRACE_ATTACH takes no pointers (addr and data are ignored).
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let outcome = zero_outcome(r, &format!("PTRACE_ATTACH to child {pid}"));
    child::kill_and_reap(pid);
    outcome
}

pub fn process_vm_readv() -> Outcome {
    let secret: u64 = std::hint::black_box(0x6769_676d_6370_2121);
    let remote_addr = std::hint::black_box(&raw const secret);
    let pid = match child::spawn_idle(None) {
        Ok(pid) => pid,
        Err(e) => {
            eprintln!("process-vm-readv: fork failed: {e}");
            return Outcome::Blocked(e);
        }
    };
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: remote_addr.cast_mut().cast(),
        iov_len: 8,
    };
    // SAFETY: local describes our own writable 8-byte buffer; remote is only dereferenced by
    // the kernel in the child's address space (a fork of ours, so the address is mapped there).
    let r = unsafe { libc::process_vm_readv(pid, &raw const local, 1, &raw const remote, 1, 0) };
    let outcome = match check(r as libc::c_long) {
        Ok(n) => {
            let value = u64::from_ne_bytes(buf);
            Outcome::Succeeded(format!(
                "read {n} bytes from child {pid}: {value:#018x}{}",
                if value == secret { " (matches)" } else { "" }
            ))
        }
        Err(e) => Outcome::Blocked(e),
    };
    child::kill_and_reap(pid);
    outcome
}

pub fn bpf() -> Outcome {
    const BPF_PROG_LOAD: libc::c_long = 5;
    let attr = [0u64; 16];
    // SAFETY: attr is a readable, zeroed buffer of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    fd_outcome(r, "bpf(BPF_PROG_LOAD)")
}

pub fn perf_event_open() -> Outcome {
    let attr = [0u64; 16];
    // SAFETY: attr is a readable, zeroed perf_event_attr (size 0 = first ABI version).
    let r = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            0 as libc::c_ulong,
        )
    };
    fd_outcome(r, "perf_event_open")
}

pub fn keyctl() -> Outcome {
    const KEYCTL_GET_KEYRING_ID: libc::c_int = 0;
    const KEY_SPEC_SESSION_KEYRING: libc::c_int = -3;
    // SAFETY: KEYCTL_GET_KEYRING_ID takes integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0 as libc::c_int,
        )
    };
    match check(r) {
        Ok(id) => Outcome::Succeeded(format!("session keyring id {id}")),
        Err(e) => Outcome::Blocked(e),
    }
}

pub fn io_uring_setup() -> Outcome {
    // struct io_uring_params is 120 bytes; the kernel writes results back into it.
    let mut params = [0u64; 15];
    // SAFETY: params is a writable, zeroed io_uring_params.
    let r = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            params.as_mut_ptr(),
        )
    };
    fd_outcome(r, "io_uring_setup(1)")
}

pub fn userfaultfd() -> Outcome {
    // SAFETY: flags only.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, 0 as libc::c_int) };
    fd_outcome(r, "userfaultfd(0)")
}

/// `struct file_handle` with 8 bytes of handle.
#[repr(C)]
#[derive(Debug)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: libc::c_int,
    f_handle: [u8; 8],
}

pub fn open_by_handle_at() -> Outcome {
    let mut handle = FileHandle {
        handle_bytes: 8,
        handle_type: 0,
        f_handle: [0; 8],
    };
    // SAFETY: handle is a valid file_handle whose handle_bytes matches its buffer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            libc::AT_FDCWD,
            &raw mut handle,
            libc::O_RDONLY,
        )
    };
    fd_outcome(r, "open_by_handle_at")
}

#[cfg(target_arch = "x86_64")]
pub fn x32_syscall() -> Outcome {
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid (x32 ABI number) takes no arguments.
    let r = unsafe { libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid) };
    match check(r) {
        Ok(pid) => Outcome::Succeeded(format!("x32 getpid returned {pid}")),
        Err(e) => Outcome::Blocked(e),
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn x32_syscall() -> Outcome {
    Outcome::Result("not applicable: not x86_64".into())
}

pub fn kexec_load() -> Outcome {
    // SAFETY: no segments, null segment pointer: nothing is read.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    zero_outcome(r, "kexec_load(0, 0, NULL, 0)")
}

pub fn init_module() -> Outcome {
    // SAFETY: a null image of length 0 and an empty NUL-terminated parameter string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<libc::c_void>(),
            0 as libc::c_ulong,
            c"".as_ptr(),
        )
    };
    zero_outcome(r, "init_module(NULL, 0, \"\")")
}

pub fn reboot() -> Outcome {
    // SAFETY: CAD_OFF takes no argument pointer (null).
    let r = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_CAD_OFF,
            std::ptr::null::<libc::c_void>(),
        )
    };
    zero_outcome(r, "reboot(LINUX_REBOOT_CMD_CAD_OFF)")
}

pub fn settimeofday() -> Outcome {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    // SAFETY: tv is writable; the timezone pointer may be null.
    if unsafe { libc::gettimeofday(&raw mut tv, std::ptr::null_mut()) } == -1 {
        return Outcome::Blocked(Errno::last());
    }
    // The raw syscall: glibc's settimeofday() wrapper issues clock_settime instead.
    // SAFETY: tv is a valid timeval (the current time); the timezone pointer may be null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_settimeofday,
            &raw const tv,
            std::ptr::null::<libc::timezone>(),
        )
    };
    zero_outcome(r, "settimeofday(now)")
}
