//! The helper is a child subreaper, and reaps the sandbox processes orphaned to it.
//!
//! bwrap's outer process exits as soon as it learns the server's exit status, a moment before
//! the namespace's init (the inner bwrap) is gone. Without a subreaper that inner process would
//! be reparented to PID 1 and linger as a zombie until PID 1 gets to it; as a subreaper the
//! helper inherits it and reaps it, so a destroyed sandbox leaves no process behind at all.
//!
//! Only zombies that are `bwrap`, children of ours, and not a tracked sandbox's outer process
//! are reaped here: every other child (tracked bwraps, `nft` runs) has its own waiter, which a
//! stray `waitpid` would rob of its exit status.

use std::collections::HashSet;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps orphaned sandbox zombies (named `bwrap_name`); returns how many are still alive.
/// The caller holds the tracking lock, so a bwrap just spawned is either tracked or not yet
/// born.
pub fn reap_orphans(tracked: &HashSet<u32>, bwrap_name: &str) -> usize {
    // The kernel keeps at most 15 bytes of a command name.
    let comm_of_bwrap: String = bwrap_name.chars().take(15).collect();
    let me = std::process::id();
    let mut alive = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((comm, state, ppid)) = stat_of(pid) else {
            continue;
        };
        if ppid != me || comm != comm_of_bwrap || tracked.contains(&pid) {
            continue;
        }
        if state == 'Z' {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        } else {
            alive += 1;
        }
    }
    alive
}

/// (comm, state, ppid) from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(String, char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let (comm, state, ppid) = stat_of(std::process::id()).unwrap();
        assert!(!comm.is_empty());
        assert!(matches!(state, 'R' | 'S'));
        assert!(ppid > 0);
    }
}
