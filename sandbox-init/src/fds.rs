//! Step 4: close every file descriptor above 2, so nothing the helper or bwrap left open (a
//! D-Bus socket, a directory of the host) reaches the server.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;

use super::sys;

const FD_DIR: &str = "/proc/self/fd";

/// Why step 4 failed.
#[derive(Debug, thiserror::Error)]
pub enum FdsError {
    /// `close_range` failed other than by being unknown to the kernel.
    #[error("close_range: {0}")]
    CloseRange(#[source] io::Error),
    /// Closing one fd failed (kernels without `close_range`).
    #[error("close({fd}): {source}")]
    Close {
        /// The fd.
        fd: RawFd,
        /// Why.
        source: io::Error,
    },
    /// `/proc/self/fd` could not be listed, so what is open cannot be known.
    #[error("{FD_DIR}: {0}")]
    List(#[source] io::Error),
    /// `/proc/self/fd` holds a name that is not a number.
    #[error("{FD_DIR}: unexpected entry {0:?}")]
    UnexpectedEntry(OsString),
    /// More than the listing's own fd is open after closing: every fd above 2 it saw.
    #[error("still open after closing: {0:?}")]
    StillOpen(Vec<RawFd>),
}

/// Closes fds 3 and up: `close_range` if the kernel has it (>= 5.9), else one by one from
/// `/proc/self/fd`. Then checks `/proc/self/fd`.
pub fn close_above_stderr() -> Result<(), FdsError> {
    match sys::close_range_from(3) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
            for fd in open_above_stderr()? {
                match sys::close(fd) {
                    // EBADF: the fd was the directory listing's own, closed since.
                    Err(e) if e.raw_os_error() != Some(libc::EBADF) => {
                        return Err(FdsError::Close { fd, source: e });
                    }
                    _ => {}
                }
            }
        }
        Err(e) => return Err(FdsError::CloseRange(e)),
    }
    // The listing holds one fd itself; as the lowest free number it must be 3.
    let left = open_above_stderr()?;
    if left == [3] {
        Ok(())
    } else {
        Err(FdsError::StillOpen(left))
    }
}

/// The fds above 2 in `/proc/self/fd`, including the one this listing uses.
fn open_above_stderr() -> Result<Vec<RawFd>, FdsError> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(FD_DIR).map_err(FdsError::List)? {
        let name = entry.map_err(FdsError::List)?.file_name();
        let Some(fd) = name.to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            return Err(FdsError::UnexpectedEntry(name));
        };
        if fd > 2 {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}
