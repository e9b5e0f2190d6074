//! What an image offers at the places the sandbox mounts over (its mount points, the CA bundle
//! paths, resolv.conf) and at the working directory the server starts in, examined without
//! following any link: a link there is refused by name.

use std::os::fd::OwnedFd;

use privhelper_api::HelperError;
use rustix::fs::{FileType, OFlags};

use super::validate::{MAX_ARG_LEN, MOUNT_POINTS, open_beneath};

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

/// The sandbox's working directory when the spec names none: its private, empty `/tmp`.
pub const DEFAULT_WORKDIR: &str = "/tmp";

/// The spec's working directory, or [`DEFAULT_WORKDIR`]: absolute and clean, and a directory
/// of the image reached without a link (as `image.rs` examines mount points). bwrap enters it
/// after switching to the sandbox's root, so even a link the gateway swapped in afterwards
/// would resolve inside the sandbox's own tree; the check is for the admin's clear refusal.
/// Nothing beneath a mount point (its contents are the sandbox's own file system there, not
/// the image's).
pub fn check_workdir(requested: &str, rootfs: &OwnedFd) -> Result<String, HelperError> {
    if requested.is_empty() {
        return Ok(DEFAULT_WORKDIR.to_owned());
    }
    let bad = |why: &str| HelperError::InvalidSpec(format!("workdir {requested:?}: {why}"));
    let Some(rel) = requested.strip_prefix('/') else {
        return Err(bad("must be an absolute path"));
    };
    if requested.len() > MAX_ARG_LEN {
        return Err(bad(&format!("is longer than {MAX_ARG_LEN} bytes")));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if rel.is_empty() {
        return Ok(requested.to_owned());
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad(
            "must be a clean path (no `.`, `..` or empty component)",
        ));
    }
    if parts.len() > 1 && MOUNT_POINTS.contains(&parts[0]) {
        return Err(bad(&format!(
            "lies beneath /{}, which the sandbox mounts over",
            parts[0]
        )));
    }
    match image_entry(rootfs, rel)? {
        Some(FileType::Directory) => Ok(requested.to_owned()),
        Some(_) => Err(HelperError::RootfsIncomplete(format!(
            "workdir {requested:?} is not a directory in the image"
        ))),
        None => Err(HelperError::RootfsIncomplete(format!(
            "workdir {requested:?} does not exist in the image"
        ))),
    }
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

    #[test]
    fn a_workdir_is_a_clean_absolute_directory_of_the_image_reached_without_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut b = [0u8; 4];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).unwrap();
        let app = format!("srv/a{:08x}", u32::from_ne_bytes(b));
        std::fs::create_dir_all(root.join(&app)).unwrap();
        std::fs::create_dir_all(root.join("tmp/x")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(&app, root.join("link")).unwrap();
        let fd = rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(check_workdir("", &fd).unwrap(), "/tmp");
        assert_eq!(
            check_workdir(&format!("/{app}"), &fd).unwrap(),
            format!("/{app}")
        );
        assert_eq!(check_workdir("/tmp", &fd).unwrap(), "/tmp");
        let refusal = |dir: &str| match check_workdir(dir, &fd) {
            Err(HelperError::InvalidSpec(m))
            | Err(HelperError::RootfsIncomplete(m))
            | Err(HelperError::RootfsSymlink(m)) => m,
            other => panic!("{dir}: {other:?}"),
        };
        assert!(refusal(&app).contains("absolute"));
        for dir in ["/srv/../etc", "/srv/./x", "/srv//x"] {
            assert!(refusal(dir).contains("clean path"), "{dir}");
        }
        assert!(refusal("/tmp/x").contains("mounts over"));
        assert!(refusal("/file").contains("not a directory"));
        assert!(refusal(&format!("/{app}/missing")).contains("does not exist"));
        assert!(refusal("/link/x").contains("is a symbolic link"));
    }
}
