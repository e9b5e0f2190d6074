//! Errno values and their symbolic names, as printed in `ATTACK <name> BLOCKED <ERRNO-NAME>`.

use std::fmt;

/// A raw `errno` value from a failed system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub fn last() -> Self {
        Self::from_io(&std::io::Error::last_os_error())
    }

    /// The errno carried by an I/O error; EIO if it carries none (not an OS error).
    pub fn from_io(err: &std::io::Error) -> Self {
        Self(err.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The symbolic name (`EPERM`), or `E<number>` when the table does not know it.
    pub fn name(self) -> String {
        name(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// errno value → name. Linux aliases (EWOULDBLOCK = EAGAIN, ENOTSUP = EOPNOTSUPP,
/// EDEADLOCK = EDEADLK) appear once, under the name listed here.
const TABLE: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::E2BIG, "E2BIG"),
    (libc::ENOEXEC, "ENOEXEC"),
    (libc::EBADF, "EBADF"),
    (libc::ECHILD, "ECHILD"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ENOTTY, "ENOTTY"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EPIPE, "EPIPE"),
    (libc::ERANGE, "ERANGE"),
    (libc::EDEADLK, "EDEADLK"),
    (libc::ENAMETOOLONG, "ENAMETOOLONG"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::ENOTEMPTY, "ENOTEMPTY"),
    (libc::ELOOP, "ELOOP"),
    (libc::ENODATA, "ENODATA"),
    (libc::ENOTSOCK, "ENOTSOCK"),
    (libc::EDESTADDRREQ, "EDESTADDRREQ"),
    (libc::EMSGSIZE, "EMSGSIZE"),
    (libc::EPROTOTYPE, "EPROTOTYPE"),
    (libc::ENOPROTOOPT, "ENOPROTOOPT"),
    (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
    (libc::ESOCKTNOSUPPORT, "ESOCKTNOSUPPORT"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
    (libc::EADDRINUSE, "EADDRINUSE"),
    (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
    (libc::ENETDOWN, "ENETDOWN"),
    (libc::ENETUNREACH, "ENETUNREACH"),
    (libc::ECONNABORTED, "ECONNABORTED"),
    (libc::ECONNRESET, "ECONNRESET"),
    (libc::ENOBUFS, "ENOBUFS"),
    (libc::EISCONN, "EISCONN"),
    (libc::ENOTCONN, "ENOTCONN"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ECONNREFUSED, "ECONNREFUSED"),
    (libc::EHOSTDOWN, "EHOSTDOWN"),
    (libc::EHOSTUNREACH, "EHOSTUNREACH"),
    (libc::EALREADY, "EALREADY"),
    (libc::EINPROGRESS, "EINPROGRESS"),
    (libc::ESTALE, "ESTALE"),
    (libc::EDQUOT, "EDQUOT"),
    (libc::ENOKEY, "ENOKEY"),
    (libc::EKEYREVOKED, "EKEYREVOKED"),
];

/// The symbolic name of an errno value, or `E<number>` when unknown.
pub fn name(errno: i32) -> String {
    TABLE
        .iter()
        .find(|(value, _)| *value == errno)
        .map_or_else(|| format!("E{errno}"), |(_, n)| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_errnos_the_tests_expect() {
        for (value, expected) in [
            (libc::EPERM, "EPERM"),
            (libc::ENOENT, "ENOENT"),
            (libc::EINTR, "EINTR"),
            (libc::EIO, "EIO"),
            (libc::EBADF, "EBADF"),
            (libc::EAGAIN, "EAGAIN"),
            (libc::ENOMEM, "ENOMEM"),
            (libc::EACCES, "EACCES"),
            (libc::EFAULT, "EFAULT"),
            (libc::EBUSY, "EBUSY"),
            (libc::EEXIST, "EEXIST"),
            (libc::EINVAL, "EINVAL"),
            (libc::ENFILE, "ENFILE"),
            (libc::EMFILE, "EMFILE"),
            (libc::ENOSPC, "ENOSPC"),
            (libc::EROFS, "EROFS"),
            (libc::ENOSYS, "ENOSYS"),
            (libc::EOPNOTSUPP, "EOPNOTSUPP"),
            (libc::EAFNOSUPPORT, "EAFNOSUPPORT"),
            (libc::EADDRINUSE, "EADDRINUSE"),
            (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
            (libc::ENETUNREACH, "ENETUNREACH"),
            (libc::ECONNREFUSED, "ECONNREFUSED"),
            (libc::ETIMEDOUT, "ETIMEDOUT"),
            (libc::EHOSTUNREACH, "EHOSTUNREACH"),
            (libc::ECONNRESET, "ECONNRESET"),
            (libc::ENOTCONN, "ENOTCONN"),
        ] {
            assert_eq!(name(value), expected);
            assert_eq!(Errno(value).to_string(), expected);
        }
    }

    #[test]
    fn aliases_resolve_to_one_name() {
        assert_eq!(name(libc::EWOULDBLOCK), "EAGAIN");
        assert_eq!(name(libc::ENOTSUP), "EOPNOTSUPP");
    }

    #[test]
    fn unknown_values_are_numbered() {
        assert_eq!(name(4095), "E4095");
        assert_eq!(name(0), "E0");
        assert_eq!(name(-1), "E-1");
    }

    #[test]
    fn table_has_no_duplicate_values_or_names() {
        for (i, (value, n)) in TABLE.iter().enumerate() {
            for (other_value, other_name) in &TABLE[i + 1..] {
                assert_ne!(value, other_value, "{n} and {other_name} share a value");
                assert_ne!(n, other_name);
            }
            assert!(n.starts_with('E') && n.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let err = std::io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(Errno::from_io(&err), Errno(libc::EROFS));
        let synthetic = std::io::Error::other("no errno");
        assert_eq!(Errno::from_io(&synthetic), Errno(libc::EIO));
    }
}
