//! Isolation-level attacks on the filesystem, processes, credentials and resource limits.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;

use crate::child;
use crate::errno::Errno;
use crate::report::{Outcome, escape_bytes};

pub fn read_file(path: &str) -> Outcome {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Outcome::Blocked(Errno::from_io(&e)),
    };
    let mut buf = [0u8; 32];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Outcome::Blocked(Errno::from_io(&e)),
        }
    }
    Outcome::Succeeded(format!("read {len} bytes: {}", escape_bytes(&buf[..len])))
}

pub fn write_rootfs(path: &str) -> Outcome {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
    {
        Ok(mut file) => {
            let wrote = file.write_all(b"gigmcp-attack\n").is_ok();
            drop(file);
            let removed = fs::remove_file(path).is_ok();
            Outcome::Succeeded(format!(
                "created {path}{} ({})",
                if wrote { " and wrote to it" } else { "" },
                if removed {
                    "removed again"
                } else {
                    "NOT removed"
                }
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // It exists: can we open it for writing? (Nothing is written to it.)
            match OpenOptions::new().append(true).open(path) {
                Ok(_) => {
                    Outcome::Succeeded(format!("opened existing {path} for writing (not modified)"))
                }
                Err(e) => Outcome::Blocked(Errno::from_io(&e)),
            }
        }
        Err(e) => Outcome::Blocked(Errno::from_io(&e)),
    }
}

pub fn list_processes() -> Outcome {
    let entries = match fs::read_dir("/proc") {
        Ok(e) => e,
        Err(e) => return Outcome::Blocked(Errno::from_io(&e)),
    };
    let mut pids: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let listed: Vec<String> = pids
        .iter()
        .map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| sanitize_comm(c.trim_end_matches('\n')))
                .unwrap_or_else(|_| "?".to_owned());
            format!("{pid}:{comm}")
        })
        .collect();
    Outcome::Result(listed.join(" "))
}

/// A comm with whitespace replaced by `_`, so the space-separated list stays parseable.
fn sanitize_comm(comm: &str) -> String {
    comm.chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect()
}

pub fn list_interfaces() -> Outcome {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: head is a valid out-pointer; on success it is freed with freeifaddrs below.
    if unsafe { libc::getifaddrs(&raw mut head) } == -1 {
        return Outcome::Blocked(Errno::last());
    }
    let mut interfaces: Vec<(String, Vec<String>)> = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a non-null node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let index = match interfaces.iter().position(|(n, _)| *n == name) {
            Some(i) => i,
            None => {
                interfaces.push((name, Vec::new()));
                interfaces.len() - 1
            }
        };
        if let Some(addr) = ipv4_of(ifa.ifa_addr) {
            let prefix = ipv4_of(ifa.ifa_netmask).map_or(32, |m| u32::from(m).count_ones());
            interfaces[index].1.push(format!("{addr}/{prefix}"));
        }
    }
    // SAFETY: head came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    let listed: Vec<String> = interfaces
        .iter()
        .map(|(name, addrs)| format!("{name}={}", addrs.join(",")))
        .collect();
    Outcome::Result(listed.join(" "))
}

/// The IPv4 address in `sa`, if it is a non-null AF_INET sockaddr.
fn ipv4_of(sa: *const libc::sockaddr) -> Option<Ipv4Addr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: sa is non-null and points at a sockaddr from getifaddrs.
    if libc::c_int::from(unsafe { (*sa).sa_family }) != libc::AF_INET {
        return None;
    }
    // SAFETY: an AF_INET sockaddr from getifaddrs is a full sockaddr_in; read_unaligned
    // makes no alignment assumption.
    let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

pub fn env() -> Outcome {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    Outcome::Result(vars.join(";"))
}

pub fn cwd() -> Outcome {
    match std::env::current_dir() {
        Ok(dir) => Outcome::Result(dir.display().to_string()),
        Err(e) => Outcome::Result(format!("no working directory: {e}")),
    }
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
#[derive(Debug)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// capget + capset raising CAP_SYS_ADMIN in the effective and permitted sets.
fn raise_sys_admin() -> Result<(), Errno> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, writable v3 capability structures (2 data elements).
    if unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) } == -1 {
        return Err(Errno::last());
    }
    data[0].effective |= 1 << CAP_SYS_ADMIN;
    data[0].permitted |= 1 << CAP_SYS_ADMIN;
    // SAFETY: as above; capset only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) } == -1 {
        return Err(Errno::last());
    }
    Ok(())
}

pub fn gain_capability() -> Outcome {
    let mut worked = Vec::new();
    let mut first_errno = None;
    let mut note = |what: &str, r: Result<(), Errno>| match r {
        Ok(()) => worked.push(what.to_owned()),
        Err(e) => {
            eprintln!("gain-capability: {what}: {e}");
            first_errno.get_or_insert(e);
        }
    };
    note("capset(CAP_SYS_ADMIN)", raise_sys_admin());
    // SAFETY: prctl with integer arguments only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE,
            CAP_NET_ADMIN as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    note(
        "ambient(CAP_NET_ADMIN)",
        if r == -1 { Err(Errno::last()) } else { Ok(()) },
    );
    // SAFETY: setuid takes an integer; the process is single-threaded.
    let r = unsafe { libc::setuid(0) };
    note(
        "setuid(0)",
        if r == -1 { Err(Errno::last()) } else { Ok(()) },
    );
    match first_errno {
        Some(e) if worked.is_empty() => Outcome::Blocked(e),
        _ => Outcome::Succeeded(worked.join(",")),
    }
}

pub fn fork_bomb(n: u32) -> Outcome {
    let mut children = Vec::with_capacity(n.min(65_536) as usize);
    let mut failure = None;
    for _ in 0..n {
        match child::spawn_idle(Some(30)) {
            Ok(pid) => children.push(pid),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let forked = children.len();
    for &pid in &children {
        // SAFETY: kill takes no pointers; pid is our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in &children {
        child::reap(pid);
    }
    Outcome::Result(match failure {
        Some(e) => format!("forked {forked} of {n}, then {e}"),
        None => format!("forked {forked} of {n}"),
    })
}

/// The fd limit as the server sees it: soft and hard `RLIMIT_NOFILE`, whether both can be raised
/// to `n` (raising a hard limit needs `CAP_SYS_RESOURCE` in the initial user namespace), and how
/// many files open before the limit refuses one (at most `n`).
pub fn fd_limit(n: u64) -> Outcome {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a stack value.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Outcome::Blocked(Errno::last());
    }
    let wanted = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads a stack value.
    let raise = match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } {
        0 => "ok".to_owned(),
        _ => Errno::last().to_string(),
    };
    let mut held = Vec::new();
    let end = loop {
        if held.len() as u64 >= n {
            break "stopped at n".to_owned();
        }
        match fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => break Errno::from_io(&e).to_string(),
        }
    };
    Outcome::Result(format!(
        "soft={} hard={} raise={raise} opened={} then {end}",
        now.rlim_cur,
        now.rlim_max,
        held.len()
    ))
}

pub fn memory_hog(mib: u64) -> Outcome {
    const STEP_MIB: u64 = 16;
    const MIB: usize = 1 << 20;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut touched = 0u64;
    while touched < mib {
        let step = STEP_MIB.min(mib - touched);
        let Ok(len) = usize::try_from(step).map(|s| s * MIB) else {
            break;
        };
        let mut chunk = Vec::new();
        if let Err(e) = chunk.try_reserve_exact(len) {
            eprintln!("memory-hog: allocating {step} MiB more failed: {e}");
            return Outcome::Result(format!("touched {touched} MiB, then ENOMEM"));
        }
        // Writes every byte, so every page is really faulted in.
        chunk.resize(len, 0xa5);
        held.push(std::hint::black_box(chunk));
        touched += step;
    }
    std::hint::black_box(&held);
    Outcome::Result(format!("touched {touched} MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_whitespace_is_replaced() {
        assert_eq!(sanitize_comm("tmux: server"), "tmux:_server");
        assert_eq!(sanitize_comm("kworker/0:1"), "kworker/0:1");
    }
}
