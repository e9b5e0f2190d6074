//! Step 4: close every file descriptor above 2, so nothing the helper or bwrap left open (a
//! D-Bus socket, a directory of the host) reaches the server.

use std::os::fd::RawFd;

use super::sys;

const FD_DIR: &str = "/proc/self/fd";

/// Closes fds 3 and up: `close_range` if the kernel has it (>= 5.9), else one by one from
/// `/proc/self/fd`. Then checks `/proc/self/fd`.
pub fn close_above_stderr() -> Result<(), String> {
    match sys::close_range_from(3) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EINVAL)) => {
            for fd in open_above_stderr()? {
                match sys::close(fd) {
                    // EBADF: the fd was the directory listing's own, closed since.
                    Err(e) if e.raw_os_error() != Some(libc::EBADF) => {
                        return Err(format!("close({fd}): {e}"));
                    }
                    _ => {}
                }
            }
        }
        Err(e) => return Err(format!("close_range: {e}")),
    }
    // The listing holds one fd itself; as the lowest free number it must be 3.
    let left = open_above_stderr()?;
    if left == [3] {
        Ok(())
    } else {
        Err(format!("still open after closing: {left:?}"))
    }
}

/// The fds above 2 in `/proc/self/fd`, including the one this listing uses.
fn open_above_stderr() -> Result<Vec<RawFd>, String> {
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(FD_DIR).map_err(|e| format!("{FD_DIR}: {e}"))? {
        let name = entry.map_err(|e| format!("{FD_DIR}: {e}"))?.file_name();
        let fd: RawFd = name
            .to_str()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{FD_DIR}: unexpected entry {name:?}"))?;
        if fd > 2 {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}
