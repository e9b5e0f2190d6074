//! What an image offers at the places the sandbox mounts over (its mount points, the CA bundle
//! paths, resolv.conf), examined without following any link: a link there is refused by name.

use std::os::fd::OwnedFd;

use privhelper_api::HelperError;
use rustix::fs::{FileType, OFlags};

use super::validate::open_beneath;

/// What `path` is in the image, found one component at a time without following any link;
/// `None` if it, or a directory above it, is missing. Only called for places bwrap mounts
/// over: a symbolic link there, or in a directory above, is refused by name. bwrap would follow
/// it while it builds the mount tree (with the host's tree still reachable), so the mount would
/// land on whatever the image's author pointed it at, which the helper never checked; silently
/// skipping it (as a missing CA path) would leave the image's own CA bundle in force.
pub fn image_entry(rootfs: &OwnedFd, path: &str) -> Result<Option<FileType>, HelperError> {
    let mut kind = None;
    for (end, _) in path.match_indices('/').chain([(path.len(), "")]) {
        let prefix = &path[..end];
        // With O_PATH | O_NOFOLLOW, openat2 opens a trailing link itself instead of refusing.
        let stat = open_beneath(rootfs, prefix, OFlags::PATH | OFlags::NOFOLLOW)
            .and_then(|fd| rustix::fs::fstat(&fd));
        let st = match stat {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(e) => {
                return Err(HelperError::RootfsIncomplete(format!(
                    "the image's /{prefix} cannot be examined ({e})"
                )));
            }
        };
        let this = FileType::from_raw_mode(st.st_mode);
        if this == FileType::Symlink {
            return Err(HelperError::RootfsSymlink(format!(
                "the image's /{prefix} is a symbolic link: the sandbox mounts over /{path}, and \
                 a link on the way is refused, not followed"
            )));
        }
        kind = Some(this);
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use rustix::fs::Mode;

    use super::*;

    #[test]
    fn image_entries_are_found_without_following_links_and_a_link_is_refused_by_name() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::write(root.join("etc/ssl/certs/ca.crt"), "x").unwrap();
        symlink("certs/ca.crt", root.join("etc/ssl/cert.pem")).unwrap();
        symlink("/etc", root.join("etc/pki")).unwrap();
        symlink("/", root.join("tmp")).unwrap();
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let kind = |p: &str| image_entry(&fd, p).unwrap();
        assert_eq!(kind("etc/ssl/certs/ca.crt"), Some(FileType::RegularFile));
        assert_eq!(kind("etc/ssl"), Some(FileType::Directory));
        assert_eq!(kind("etc/missing/x"), None);
        assert_eq!(kind("etc/ssl/certs/ca.crt/x"), None);
        for (path, link) in [
            ("etc/ssl/cert.pem", "/etc/ssl/cert.pem"),
            ("etc/pki/tls/certs/ca-bundle.crt", "/etc/pki"),
            ("tmp", "/tmp"),
        ] {
            match image_entry(&fd, path) {
                Err(HelperError::RootfsSymlink(msg)) => assert!(
                    msg.starts_with(&format!("the image's {link} is a symbolic link")),
                    "{msg}"
                ),
                other => panic!("{path}: {other:?}"),
            }
        }
    }
}
