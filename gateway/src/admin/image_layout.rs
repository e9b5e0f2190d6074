//! What a server's root filesystem must contain to run (docs/SANDBOX.md, "What an image must
//! contain"), checked when the image is installed, so that the admin learns at `server add`
//! what would otherwise be a refusal from the helper at the server's first call.
//!
//! - `/proc`, `/dev`, `/tmp`, `/run` and `/etc` are directories, not symbolic links: bwrap
//!   mounts over the first four in a read-only image (it cannot create a mount point there),
//!   and the helper binds the CA bundle and, in transparent mode, `resolv.conf` under `/etc`;
//!   the helper refuses to follow a link for any of them.
//! - The command (the manifest's, else the image's: `image::plan`) resolves inside the image as it will in the sandbox: an absolute
//!   path from the image's root, a bare name through the server's `PATH`; symbolic links are
//!   followed inside the image (an absolute target is the image's, not the host's, and `..`
//!   stops at the image's root), and what it names is a regular file with an execute bit.
//!   A relative path with a slash (`bin/server`) is refused: exec resolves it from the
//!   working directory, the sandbox's empty private `/tmp`, where it never exists.
//! - The working directory, when the manifest or the image names one, is a directory in the
//!   image reached without any symbolic link (the helper resolves it the same way and refuses
//!   a link), and not beneath a place the sandbox mounts over (`/proc`, `/dev`, `/tmp`, `/run`:
//!   what the image has there is hidden).
//! - A script's `#!` interpreter resolves the same way, except that it must be absolute: the
//!   kernel looks it up in no `PATH`, so a bare name is relative to `/tmp` too (and for
//!   `#!/usr/bin/env NAME`, NAME is looked up through the `PATH`, as env does).
//!
//! The image is read as data: nothing in it is run, and no link leads outside it.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::image::plan::RunPlan;

/// Directories the sandbox mounts over or binds into.
pub const MOUNT_POINTS: [&str; 5] = ["proc", "dev", "tmp", "run", "etc"];

/// Symbolic links followed while resolving one name (the kernel's own limit).
const MAX_LINKS: u32 = 40;
/// The most of a script's first line read for its `#!`.
const SHEBANG_MAX: usize = 256;

/// Why an image cannot run its server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the image has no /{0} directory (bwrap mounts over it)")]
    MissingMountPoint(&'static str),
    #[error("/{dir} in the image is {found}, not a directory (the helper follows no link)")]
    MountPointNotADirectory {
        dir: &'static str,
        found: &'static str,
    },
    #[error("the command {command:?} is not in the image (searched {searched})")]
    CommandNotFound { command: String, searched: String },
    #[error("the command {command:?} resolves to {resolved}, which is {found}, not a regular file")]
    CommandNotAFile {
        command: String,
        resolved: String,
        found: &'static str,
    },
    #[error("the command {command:?} ({resolved}) has no execute permission")]
    CommandNotExecutable { command: String, resolved: String },
    #[error("resolving {0:?} in the image meets more than {MAX_LINKS} symbolic links")]
    TooManyLinks(String),
    #[error(
        "{0:?} is a relative path: exec would look it up from the sandbox's working directory \
         (by default an empty /tmp); name it from the image's root (/{0})"
    )]
    RelativePath(String),
    #[error("the command is empty")]
    EmptyCommand,
    #[error("the working directory {dir:?} is not a directory in the image: {why}")]
    Workdir { dir: String, why: String },
    #[error("reading the image at {path}: {message}")]
    Io { path: String, message: String },
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a special file"
    }
}

/// Mount points the sandbox puts its own file systems on: whatever the image has beneath them
/// is hidden, so a working directory there would not be the image's.
const MOUNTED_OVER: [&str; 4] = ["proc", "dev", "tmp", "run"];

/// Checks `rootfs` against the module's rules for running `plan` (its command, `PATH` and
/// working directory).
pub fn check(rootfs: &Path, plan: &RunPlan) -> Result<(), LayoutError> {
    check_mount_points(rootfs)?;
    if let Some(dir) = &plan.workdir {
        check_workdir(rootfs, dir)?;
    }
    let command = plan.argv.first().ok_or(LayoutError::EmptyCommand)?;
    let path = plan.path();
    let program = find_executable(rootfs, command, path)?;
    if let Some(interpreter) = shebang(rootfs, &program)? {
        let (first, rest) = interpreter;
        if !first.starts_with('/') {
            return Err(LayoutError::RelativePath(first));
        }
        let found = find_executable(rootfs, &first, path)?;
        // `#!/usr/bin/env python3`: the program env will look up.
        if found.file_name().is_some_and(|n| n == "env") {
            if let Some(name) = rest.filter(|n| !n.starts_with('-')) {
                find_executable(rootfs, &name, path)?;
            }
        }
    }
    Ok(())
}

/// `dir` (absolute, clean: `manifest::check_workdir`) as the helper will enter it: each
/// component a directory, none a link.
fn check_workdir(rootfs: &Path, dir: &str) -> Result<(), LayoutError> {
    let why = |why: String| LayoutError::Workdir {
        dir: dir.to_owned(),
        why,
    };
    let parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
    if parts.len() > 1 && MOUNTED_OVER.contains(&parts[0]) {
        return Err(why(format!(
            "the sandbox mounts its own /{} there, hiding the image's",
            parts[0]
        )));
    }
    let mut at = rootfs.to_path_buf();
    for part in parts {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let inside = at.strip_prefix(rootfs).unwrap_or(&at).display().to_string();
                return Err(why(format!("/{inside} is {}", kind(&m))));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let inside = at.strip_prefix(rootfs).unwrap_or(&at).display().to_string();
                return Err(why(format!("/{inside} does not exist")));
            }
            Err(e) => return Err(io_error(&at, &e)),
        }
    }
    Ok(())
}

fn check_mount_points(rootfs: &Path) -> Result<(), LayoutError> {
    for dir in MOUNT_POINTS {
        match std::fs::symlink_metadata(rootfs.join(dir)) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                return Err(LayoutError::MountPointNotADirectory {
                    dir,
                    found: kind(&m),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LayoutError::MissingMountPoint(dir));
            }
            Err(e) => return Err(io_error(&rootfs.join(dir), &e)),
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: &std::io::Error) -> LayoutError {
    LayoutError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// `command` as the sandbox's exec would find it: a path (from the image's root) or a bare
/// name through `path`; the image-relative path of a regular, executable file.
fn find_executable(rootfs: &Path, command: &str, path: &str) -> Result<PathBuf, LayoutError> {
    let candidates: Vec<PathBuf> = if command.starts_with('/') {
        vec![PathBuf::from(command)]
    } else if command.contains('/') {
        return Err(LayoutError::RelativePath(command.to_owned()));
    } else {
        path.split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| Path::new(d).join(command))
            .collect()
    };
    for candidate in &candidates {
        let Some(resolved) = resolve(rootfs, candidate, command)? else {
            continue;
        };
        let host = rootfs.join(resolved.strip_prefix("/").unwrap_or(&resolved));
        let meta = std::fs::symlink_metadata(&host).map_err(|e| io_error(&host, &e))?;
        if !meta.is_file() {
            return Err(LayoutError::CommandNotAFile {
                command: command.to_owned(),
                resolved: resolved.display().to_string(),
                found: kind(&meta),
            });
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(LayoutError::CommandNotExecutable {
                command: command.to_owned(),
                resolved: resolved.display().to_string(),
            });
        }
        return Ok(resolved);
    }
    Err(LayoutError::CommandNotFound {
        command: command.to_owned(),
        searched: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// `inside` (absolute, in the image) with every symbolic link resolved in the image; `None`
/// if some component does not exist.
fn resolve(rootfs: &Path, inside: &Path, command: &str) -> Result<Option<PathBuf>, LayoutError> {
    let mut at = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = parts(inside);
    todo.reverse();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            at.pop(); // stops at "/": the image's root is the sandbox's
            continue;
        }
        let next = at.join(&name);
        let host = rootfs.join(next.strip_prefix("/").unwrap_or(&next));
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // A component on the way is a file: the name does not exist in the image.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => return Err(io_error(&host, &e)),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(LayoutError::TooManyLinks(command.to_owned()));
            }
            let target = std::fs::read_link(&host).map_err(|e| io_error(&host, &e))?;
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            let mut more = parts(&target);
            more.reverse();
            todo.extend(more);
            continue;
        }
        at = next;
    }
    Ok(Some(at))
}

fn parts(path: &Path) -> Vec<std::ffi::OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// A script's interpreter and its first argument, if the file starts with `#!`.
fn shebang(rootfs: &Path, program: &Path) -> Result<Option<(String, Option<String>)>, LayoutError> {
    let host = rootfs.join(program.strip_prefix("/").unwrap_or(program));
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    std::fs::File::open(&host)
        .and_then(|f| f.take(SHEBANG_MAX as u64).read_to_end(&mut head))
        .map_err(|e| io_error(&host, &e))?;
    let Some(line) = head.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::ffi::OsStr::from_bytes(line).to_string_lossy();
    let mut words = line.split_whitespace().map(str::to_owned);
    Ok(words.next().map(|first| (first, words.next())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_name() -> String {
        let mut b = [0u8; 5];
        getrandom::fill(&mut b).unwrap();
        format!("s{}", hex::encode(b))
    }

    /// The plan of a plain directory's server running `command` with `path` as its PATH.
    fn manifest(command: &str, path: Option<&str>) -> RunPlan {
        let mut m = serde_json::json!({"name": "x", "version": "1", "command": [command]});
        if let Some(p) = path {
            m["env"] = serde_json::json!({ "PATH": p });
        }
        let m = crate::manifest::Manifest::from_json(&m.to_string()).unwrap();
        crate::image::plan::plan("x", None, &m, &[]).unwrap()
    }

    /// An image with the mount points and `dir/name` as an executable with `body`.
    fn image(dir: &str, name: &str, body: &[u8]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for d in MOUNT_POINTS {
            std::fs::create_dir(root.path().join(d)).unwrap();
        }
        let bin = root.path().join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join(name), body).unwrap();
        std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        root
    }

    #[test]
    fn a_complete_image_passes_by_path_and_by_name() {
        let (name, dir) = (random_name(), format!("/opt/{}", random_name()));
        let root = image(&dir, &name, b"\x7fELF");
        let by_path = format!("{dir}/{name}");
        assert_eq!(check(root.path(), &manifest(&by_path, None)), Ok(()));
        let path = format!("/usr/bin:{dir}");
        assert_eq!(check(root.path(), &manifest(&name, Some(&path))), Ok(()));
        // Not on the default PATH.
        assert!(matches!(
            check(root.path(), &manifest(&name, None)),
            Err(LayoutError::CommandNotFound { .. })
        ));
    }

    #[test]
    fn a_missing_or_linked_mount_point_is_refused_by_name() {
        for dir in MOUNT_POINTS {
            let name = random_name();
            let root = image("/bin", &name, b"x");
            std::fs::remove_dir(root.path().join(dir)).unwrap();
            let m = manifest(&format!("/bin/{name}"), None);
            assert_eq!(
                check(root.path(), &m),
                Err(LayoutError::MissingMountPoint(dir))
            );
            std::os::unix::fs::symlink("/var/tmp", root.path().join(dir)).unwrap();
            assert_eq!(
                check(root.path(), &m),
                Err(LayoutError::MountPointNotADirectory {
                    dir,
                    found: "a symbolic link"
                })
            );
        }
    }

    #[test]
    fn links_resolve_inside_the_image_never_to_the_host() {
        let name = random_name();
        let root = image("/usr/lib/real", &name, b"x");
        let link = root.path().join("bin");
        std::fs::create_dir(&link).unwrap();
        // Relative, climbing past the image's root: stays in the image.
        std::os::unix::fs::symlink(format!("../../../../usr/lib/real/{name}"), link.join("a"))
            .unwrap();
        assert_eq!(check(root.path(), &manifest("/bin/a", None)), Ok(()));
        // Absolute: the image's /usr/lib/real, not the host's.
        std::os::unix::fs::symlink(format!("/usr/lib/real/{name}"), link.join("b")).unwrap();
        assert_eq!(check(root.path(), &manifest("/bin/b", None)), Ok(()));
        // To a host program the image lacks: not found, although the host has it.
        std::os::unix::fs::symlink("/bin/sh", link.join("c")).unwrap();
        assert!(Path::new("/bin/sh").exists());
        assert!(matches!(
            check(root.path(), &manifest("/bin/c", None)),
            Err(LayoutError::CommandNotFound { .. })
        ));
        // A loop.
        std::os::unix::fs::symlink("/bin/e", link.join("d")).unwrap();
        std::os::unix::fs::symlink("/bin/d", link.join("e")).unwrap();
        assert_eq!(
            check(root.path(), &manifest("/bin/d", None)),
            Err(LayoutError::TooManyLinks("/bin/d".into()))
        );
    }

    #[test]
    fn a_command_that_is_a_directory_or_not_executable_is_refused() {
        let name = random_name();
        let root = image("/bin", &name, b"x");
        std::fs::create_dir(root.path().join("bin/dir")).unwrap();
        assert!(matches!(
            check(root.path(), &manifest("/bin/dir", None)),
            Err(LayoutError::CommandNotAFile {
                found: "a directory",
                ..
            })
        ));
        let file = root.path().join("bin").join(&name);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            check(root.path(), &manifest(&format!("/bin/{name}"), None)),
            Err(LayoutError::CommandNotExecutable { .. })
        ));
        assert_eq!(
            check(
                root.path(),
                &RunPlan {
                    argv: vec![],
                    ..manifest("/x", None)
                }
            ),
            Err(LayoutError::EmptyCommand)
        );
    }

    #[test]
    fn a_workdir_must_be_a_directory_of_the_image_reached_without_links() {
        let name = random_name();
        let root = image("/bin", &name, b"\x7fELF");
        let app = format!("/srv/{}", random_name());
        std::fs::create_dir_all(root.path().join(app.trim_start_matches('/'))).unwrap();
        let with = |dir: &str| RunPlan {
            workdir: Some(dir.to_owned()),
            ..manifest(&format!("/bin/{name}"), None)
        };
        assert_eq!(check(root.path(), &with(&app)), Ok(()));
        assert_eq!(check(root.path(), &with("/tmp")), Ok(()));
        let refused = |dir: &str| match check(root.path(), &with(dir)) {
            Err(LayoutError::Workdir { dir: d, why }) if d == dir => why,
            other => panic!("{dir}: {other:?}"),
        };
        assert!(refused(&format!("{app}/missing")).ends_with("does not exist"));
        assert!(refused(&format!("/bin/{name}")).ends_with("is a regular file"));
        std::os::unix::fs::symlink(&app, root.path().join("link")).unwrap();
        assert!(refused("/link").ends_with("is a symbolic link"));
        std::fs::create_dir(root.path().join("tmp/app")).unwrap();
        assert!(refused("/tmp/app").contains("mounts its own /tmp"));
    }

    #[test]
    fn a_relative_command_or_interpreter_is_refused_although_the_image_has_it() {
        // Exec resolves both from the sandbox's working directory, an empty /tmp.
        let name = random_name();
        let root = image("/bin", &name, b"\x7fELF");
        let relative = format!("bin/{name}");
        assert_eq!(
            check(root.path(), &manifest(&relative, None)),
            Err(LayoutError::RelativePath(relative))
        );
        let interp = random_name();
        let usr_bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&usr_bin).unwrap();
        std::fs::write(usr_bin.join(&interp), b"\x7fELF").unwrap();
        std::fs::set_permissions(
            usr_bin.join(&interp),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let m = manifest(&format!("/bin/{name}"), None);
        for line in [interp.clone(), format!("usr/bin/{interp}")] {
            std::fs::write(root.path().join("bin").join(&name), format!("#!{line}\n")).unwrap();
            assert_eq!(check(root.path(), &m), Err(LayoutError::RelativePath(line)));
        }
        std::fs::write(
            root.path().join("bin").join(&name),
            format!("#!/usr/bin/{interp}\n"),
        )
        .unwrap();
        assert_eq!(check(root.path(), &m), Ok(()));
    }

    #[test]
    fn a_scripts_interpreter_must_be_in_the_image_too() {
        let (name, interp) = (random_name(), random_name());
        let root = image(
            "/bin",
            &name,
            format!("#!/usr/bin/{interp} -u\n").as_bytes(),
        );
        let m = manifest(&format!("/bin/{name}"), None);
        assert!(
            matches!(check(root.path(), &m), Err(LayoutError::CommandNotFound { ref command, .. }) if *command == format!("/usr/bin/{interp}"))
        );
        let usr_bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&usr_bin).unwrap();
        std::fs::write(usr_bin.join(&interp), b"\x7fELF").unwrap();
        std::fs::set_permissions(
            usr_bin.join(&interp),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(check(root.path(), &m), Ok(()));
        // `#!/usr/bin/env NAME`: env, then NAME through the PATH.
        let script = root.path().join("bin").join(&name);
        std::fs::write(&script, format!("#!/usr/bin/env {}\n", random_name())).unwrap();
        assert!(matches!(
            check(root.path(), &m),
            Err(LayoutError::CommandNotFound { .. })
        ));
        std::fs::write(usr_bin.join("env"), b"\x7fELF").unwrap();
        std::fs::set_permissions(usr_bin.join("env"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert!(matches!(
            check(root.path(), &m),
            Err(LayoutError::CommandNotFound { .. })
        ));
        std::fs::write(&script, format!("#!/usr/bin/env {interp}\n")).unwrap();
        assert_eq!(check(root.path(), &m), Ok(()));
    }
}
