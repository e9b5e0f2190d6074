//! Attacks on what the server shares its sandbox with: bwrap, which stays as the sandbox's
//! pid 1 (its memory holds every argument the helper gave it), and the kernel keyrings.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;

use crate::errno::Errno;
use crate::report::{Outcome, escape_bytes};

/// The sandbox's pid 1, as the server sees it.
const PID1: &str = "/proc/1";

/// Reads all of `path` (these files are small).
fn read_all(path: &str) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut out))
        .map_err(|e| Errno::from_io(&e))?;
    Ok(out)
}

/// `/proc/1/cmdline`, NULs shown as `\x00`: what anyone in the sandbox can read of bwrap.
pub fn pid1_cmdline() -> Outcome {
    match read_all(&format!("{PID1}/cmdline")) {
        Ok(bytes) => Outcome::Result(escape_bytes(&bytes)),
        Err(e) => Outcome::Blocked(e),
    }
}

/// `/proc/1/environ`: a non-empty read is a leak.
pub fn pid1_environ() -> Outcome {
    match read_all(&format!("{PID1}/environ")) {
        Ok(bytes) if bytes.is_empty() => Outcome::Result("empty".into()),
        Ok(bytes) => Outcome::Succeeded(escape_bytes(&bytes)),
        Err(e) => Outcome::Blocked(e),
    }
}

/// Opens `/proc/1/mem` for writing: the way to rewrite bwrap's code or data.
pub fn pid1_mem() -> Outcome {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("{PID1}/mem"))
    {
        Ok(_) => Outcome::Succeeded("opened /proc/1/mem read-write".into()),
        Err(e) => Outcome::Blocked(Errno::from_io(&e)),
    }
}

/// Tries to reopen, and to read the target of, each of bwrap's fds 0-63 through `/proc/1/fd`.
/// (Listing the directory is allowed to the same uid and shows only numbers.)
pub fn pid1_fds() -> Outcome {
    let mut reached = Vec::new();
    let mut first_error = None;
    for fd in 0..64 {
        let path = format!("{PID1}/fd/{fd}");
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map(|_| format!("opened {fd}"));
        let link = fs::read_link(&path).map(|target| format!("{fd} -> {}", target.display()));
        for r in [opened, link] {
            match r {
                Ok(what) => reached.push(what),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    first_error.get_or_insert(Errno::from_io(&e));
                }
            }
        }
    }
    match (reached.is_empty(), first_error) {
        (true, Some(e)) => Outcome::Blocked(e),
        (true, None) => Outcome::Result("pid 1 has no fds".into()),
        (false, _) => Outcome::Succeeded(reached.join(", ")),
    }
}

/// `kill(1, signal)`. Note that a pid namespace's init ignores SIGKILL and SIGSTOP sent from
/// inside the namespace anyway, so a 0 return is reported as it is, not as a kill.
pub fn signal_pid1(signal: i32) -> Outcome {
    // SAFETY: kill takes integers only.
    match unsafe { libc::kill(1, signal) } {
        0 => Outcome::Succeeded(format!("kill(1, {signal}) returned 0")),
        _ => Outcome::Blocked(Errno::last()),
    }
}

/// `pidfd_open(1)`: a pidfd to the sandbox's pid 1 (allowed: it grants nothing by itself).
fn pidfd_of_pid1() -> Result<libc::c_int, Errno> {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, 1 as libc::pid_t, 0 as libc::c_uint) };
    libc::c_int::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(Errno::last)
}

/// `pidfd_send_signal(pidfd_open(1), signal)`.
pub fn pidfd_signal_pid1(signal: i32) -> Outcome {
    let fd = match pidfd_of_pid1() {
        Ok(fd) => fd,
        Err(e) => return Outcome::Blocked(e),
    };
    // SAFETY: a pidfd we own, a signal number, no siginfo (null), no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd,
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    match r {
        0 => Outcome::Succeeded(format!("pidfd_send_signal(1, {signal}) returned 0")),
        _ => Outcome::Blocked(Errno::last()),
    }
}

/// `pidfd_getfd(pidfd_open(1), 0)`: copies bwrap's fd 0 into this process (seccomp kills it).
pub fn pidfd_getfd_pid1() -> Outcome {
    let fd = match pidfd_of_pid1() {
        Ok(fd) => fd,
        Err(e) => return Outcome::Blocked(e),
    };
    // SAFETY: a pidfd we own, an fd number, no flags; returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, fd, 0, 0 as libc::c_uint) };
    match r {
        r if r >= 0 => Outcome::Succeeded(format!("got pid 1's fd 0 as {r}")),
        _ => Outcome::Blocked(Errno::last()),
    }
}

/// The keyrings this process can see in `/proc/keys`, as `serial=description` (keyctl itself
/// is killed): those it possesses through its session keyring, and its uid's own.
pub fn session_keyrings() -> Outcome {
    let text = match read_all("/proc/keys") {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return Outcome::Blocked(e),
    };
    // "<serial> <flags> <usage> <timeout> <perm> <uid> <gid> <type> <description>: <summary>"
    let keyrings: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let desc = f.get(8)?.trim_end_matches(':');
            (f.get(7) == Some(&"keyring")).then(|| format!("{}={desc}", f[0]))
        })
        .collect();
    Outcome::Result(keyrings.join(","))
}
