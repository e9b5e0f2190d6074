//! The few raw syscalls sandbox init needs that no dependency wraps. The only `unsafe` in
//! `init`: each wrapper passes plain integers (no pointers into Rust memory) and turns -1/errno
//! into `io::Error`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)`.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    check(ret.into()).map(drop)
}

/// `prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1`.
pub fn no_new_privs() -> io::Result<bool> {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes integer arguments only and returns the flag.
    let ret = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0 as libc::c_ulong, 0, 0, 0) };
    check(ret.into()).map(|v| v == 1)
}

/// `close_range(first, ~0U, 0)`: closes every fd from `first` up (Linux >= 5.9; ENOSYS before).
pub fn close_range_from(first: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range takes integers only. Closing fds that Rust objects might own is the
    // point: init calls this before creating anything it still needs, and owns no fd >= 3 here.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        )
    };
    check(ret).map(drop)
}

/// `close(fd)`, for kernels without close_range.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: close takes an integer; as for close_range, no live Rust object owns `fd`.
    let ret = unsafe { libc::close(fd) };
    check(ret.into()).map(drop)
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's landlock
/// ABI version; EOPNOTSUPP if landlock is built in but disabled, ENOSYS if absent.
pub fn landlock_abi_version() -> io::Result<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
    // SAFETY: with the VERSION flag the kernel requires a NULL attr and size 0, reads no memory
    // and returns an integer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0 as libc::size_t,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    check(ret).and_then(|v| i32::try_from(v).map_err(io::Error::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landlock_version_is_reported_or_refused_with_the_documented_errors() {
        match landlock_abi_version() {
            Ok(v) => assert!(v >= 1),
            Err(e) => assert!(matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::ENOSYS)
            )),
        }
    }
}
