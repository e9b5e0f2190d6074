//! Finding and removing the cgroup directories a helper instance made. The helper keeps its
//! `<own cgroup>/<instance>` parents between its own restarts (a real installation reuses
//! them); a test instance is never reused, so its teardown removes them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hierarchies the helper may use on a v2 or hybrid host.
const ROOTS: &[&str] = &[
    "/sys/fs/cgroup",
    "/sys/fs/cgroup/unified",
    "/sys/fs/cgroup/pids",
    "/sys/fs/cgroup/cpu",
    "/sys/fs/cgroup/memory",
];

/// Every cgroup directory (a few levels deep) whose name satisfies `wanted`.
pub fn instance_dirs(wanted: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in ROOTS {
        walk(Path::new(root), &wanted, 0, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn walk(dir: &Path, wanted: &impl Fn(&str) -> bool, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 4 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !p.is_dir() || p.is_symlink() {
            continue;
        }
        if wanted(&e.file_name().to_string_lossy()) {
            out.push(p);
        } else {
            walk(&p, wanted, depth + 1, out);
        }
    }
}

/// The sandbox cgroups under an instance directory (its `supervisor` leaf is the helper's).
pub fn sandboxes(instance_dir: &Path) -> usize {
    std::fs::read_dir(instance_dir)
        .map(|d| {
            d.flatten()
                .filter(|c| c.path().is_dir() && c.file_name() != "supervisor")
                .count()
        })
        .unwrap_or(0)
}

/// Kills whatever still runs in `dir` and below, then removes the directories, deepest first.
pub fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    kill_all(dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse().ok()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
