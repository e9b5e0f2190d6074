//! Minimal root filesystems for tests: the given binaries plus the shared libraries `ldd`
//! reports, and the empty directories bwrap mounts over. Nothing else from the host.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn build(root: &Path, binaries: &[(PathBuf, &str)]) {
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    for dir in ["proc", "dev", "tmp", "run", "data", "etc", "bin"] {
        mkdir(&root.join(dir));
    }
    std::fs::write(root.join("etc/hostname"), "sandbox\n").unwrap();
    // A regular file, as transparent mode needs (the helper binds its own over it).
    std::fs::write(root.join("etc/resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    for (src, dest) in binaries {
        copy(src, &root.join(dest));
        for lib in libraries_of(src) {
            let rel = lib.strip_prefix("/").unwrap();
            copy(&lib, &root.join(rel));
        }
    }
    set_mode_tree(root);
}

fn libraries_of(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

fn copy(src: &Path, dest: &Path) {
    mkdir(dest.parent().unwrap());
    std::fs::copy(src, dest).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}

/// Directories 0755, files 0755 (binaries) — readable by any sandbox uid, writable by none.
fn set_mode_tree(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            set_mode_tree(&e.path());
        }
    }
}
