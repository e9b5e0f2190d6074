//! Child processes for the attacks that need a victim or a crowd, and host-safety checks.

use crate::errno::Errno;

/// Forks a child that sleeps until it is killed, its parent dies, or `max_secs` pass
/// (`None`: forever). The child dies with its parent (PR_SET_PDEATHSIG), so a parent killed
/// by seccomp leaves no orphan behind.
pub fn spawn_idle(max_secs: Option<u32>) -> Result<libc::pid_t, Errno> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the process is single-threaded (no thread is ever spawned), and the child only
    // calls async-signal-safe functions before _exit, never returning into Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(Errno::last()),
        0 => idle_child(parent, max_secs),
        pid => Ok(pid),
    }
}

fn idle_child(parent: libc::pid_t, max_secs: Option<u32>) -> ! {
    // SAFETY: prctl, getppid, sleep, pause and _exit are async-signal-safe and take no
    // pointers; _exit never returns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        match max_secs {
            Some(secs) => {
                let mut left = secs;
                while left > 0 {
                    left = libc::sleep(left);
                }
            }
            None => loop {
                libc::pause();
            },
        }
        libc::_exit(0)
    }
}

/// Waits for `pid` to terminate (skipping ptrace stop reports); returns its wait status.
pub fn reap(pid: libc::pid_t) -> Option<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid, writable c_int.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r == -1 {
            if Errno::last().0 == libc::EINTR {
                continue;
            }
            return None;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Some(status);
        }
    }
}

/// SIGKILLs `pid` and reaps it.
pub fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: kill takes no pointers; pid is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// True when this process is the real host root: uid 0 in the initial user namespace.
/// Inside a sandbox (uid 65534 in a private user namespace) this is always false.
pub fn is_host_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields == ["0", "0", "4294967295"]
        }
        // Root without a readable /proc: assume the worst.
        Err(_) => true,
    }
}

/// True when this process shares its mount namespace with pid 1 (or it cannot tell).
pub fn in_pid1_mount_namespace() -> bool {
    match (
        std::fs::read_link("/proc/self/ns/mnt"),
        std::fs::read_link("/proc/1/ns/mnt"),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => true,
    }
}
