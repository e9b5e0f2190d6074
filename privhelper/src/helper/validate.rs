//! Turns an untrusted [`SandboxSpec`] into what the launcher needs, or a named refusal.
//!
//! A compromised gateway must not be able to use the helper to reach host files or root, so:
//! - paths are resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//!   below directories fixed by the helper's configuration, and the resulting *file descriptors*
//!   (not paths) are handed to bwrap, so nothing can be swapped between check and use;
//! - every count and size is bounded;
//! - nothing in a spec names a host uid, a capability or a namespace flag.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

use crate::api::{DNS_PORT, HelperError, SandboxSpec, TLS_PORT};
use crate::config::Config;

pub const MAX_ARGS: usize = 256;
pub const MAX_ENV: usize = 256;
pub const MAX_ARG_LEN: usize = 4096;
pub const MAX_ENV_VALUE_LEN: usize = 8192;
/// Total bytes of argv plus environment.
pub const MAX_TOTAL: usize = 64 * 1024;
pub const MIN_MEMORY: u64 = 32 << 20;
pub const MIN_PIDS: u32 = 8;
const MAX_CA_BYTES: u64 = 1 << 20;

/// Directories bwrap mounts over; they must exist in a read-only rootfs.
const MOUNT_POINTS: [&str; 4] = ["proc", "dev", "tmp", "run"];
/// Where distributions look for the system CA bundle; the gateway CA is bound over the ones
/// that exist as regular files in the image.
const CA_PATHS: [&str; 3] = [
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/cert.pem",
];
pub const CA_IN_SANDBOX: &str = "/run/gigmcp/ca.pem";
/// Replaced in transparent mode by a file naming the link's host address as the nameserver.
/// It must be a regular file in the image: bwrap cannot create a mount point in a read-only
/// image, and a symbolic link is not followed.
pub const RESOLV_CONF: &str = "etc/resolv.conf";

/// A spec that passed every check, with its paths already opened.
#[derive(Debug)]
pub struct Checked {
    pub server: String,
    pub rootfs: OwnedFd,
    pub data: Option<OwnedFd>,
    /// One open CA file per destination path inside the sandbox.
    pub ca: Vec<(OwnedFd, String)>,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub proxy_port: u16,
    /// Transparent mode (the image has a regular `/etc/resolv.conf` then).
    pub transparent: bool,
    pub memory_max: u64,
    pub pids_max: u32,
    pub cpu_percent: u32,
    pub data_name: Option<String>,
}

fn invalid(msg: impl Into<String>) -> HelperError {
    HelperError::InvalidSpec(msg.into())
}

const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

fn open_beneath(dir: impl AsFd, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, Mode::empty(), BENEATH)
}

fn open_dir(path: &Path) -> Result<OwnedFd, HelperError> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| HelperError::Failed(format!("cannot open {}: {e}", path.display())))
}

/// A simple name: one path component of safe characters.
fn simple_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

pub fn check(spec: &SandboxSpec, config: &Config) -> Result<Checked, HelperError> {
    if !simple_name(&spec.server, 64) || spec.server.contains('.') {
        return Err(invalid("server must be 1-64 of a-z 0-9 - _"));
    }
    check_command(spec)?;
    let limits = &spec.limits;
    let ceil = &config.ceilings;
    if !(MIN_MEMORY..=ceil.memory_max_bytes).contains(&limits.memory_max_bytes) {
        return Err(invalid(format!(
            "memory_max_bytes must be between {MIN_MEMORY} and {}",
            ceil.memory_max_bytes
        )));
    }
    if !(MIN_PIDS..=ceil.pids_max).contains(&limits.pids_max) {
        return Err(invalid(format!(
            "pids_max must be between {MIN_PIDS} and {}",
            ceil.pids_max
        )));
    }
    if !(1..=ceil.cpu_percent).contains(&limits.cpu_percent) {
        return Err(invalid(format!(
            "cpu_percent must be between 1 and {}",
            ceil.cpu_percent
        )));
    }
    if spec.proxy_port == 0 {
        return Err(invalid("proxy_port must not be 0"));
    }
    if spec.transparent && [TLS_PORT, DNS_PORT].contains(&spec.proxy_port) {
        return Err(invalid(format!(
            "with transparent mode, proxy_port must not be {TLS_PORT} or {DNS_PORT} (the helper \
             binds those)"
        )));
    }
    let rootfs = open_rootfs(&spec.rootfs, config)?;
    for dir in MOUNT_POINTS {
        open_beneath(&rootfs, dir, OFlags::PATH | OFlags::DIRECTORY).map_err(|_| {
            HelperError::RootfsIncomplete(format!("the image has no /{dir} directory"))
        })?;
    }
    let (data, data_name) = if spec.data_dir.is_empty() {
        (None, None)
    } else {
        open_beneath(&rootfs, "data", OFlags::PATH | OFlags::DIRECTORY).map_err(|_| {
            HelperError::RootfsIncomplete("a data dir needs a /data directory in the image".into())
        })?;
        (
            Some(open_data_dir(&spec.data_dir, config)?),
            Some(spec.data_dir.clone()),
        )
    };
    if spec.transparent && !regular_file_in(&rootfs, RESOLV_CONF) {
        return Err(HelperError::RootfsIncomplete(format!(
            "transparent mode needs /{RESOLV_CONF} as a regular file (not a link) in the image, \
             for the helper to replace"
        )));
    }
    let ca = if spec.ca_bundle.is_empty() {
        Vec::new()
    } else {
        open_ca(&spec.ca_bundle, &rootfs, config)?
    };
    Ok(Checked {
        server: spec.server.clone(),
        rootfs,
        data,
        ca,
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        proxy_port: spec.proxy_port,
        transparent: spec.transparent,
        memory_max: limits.memory_max_bytes,
        pids_max: limits.pids_max,
        cpu_percent: limits.cpu_percent,
        data_name,
    })
}

fn check_command(spec: &SandboxSpec) -> Result<(), HelperError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(invalid("argv must name a program"));
    }
    if spec.argv.len() > MAX_ARGS {
        return Err(invalid(format!("argv has more than {MAX_ARGS} entries")));
    }
    if spec.env.len() > MAX_ENV {
        return Err(invalid(format!("env has more than {MAX_ENV} entries")));
    }
    let mut total = 0;
    for arg in &spec.argv {
        if arg.len() > MAX_ARG_LEN {
            return Err(invalid(format!(
                "an argument is longer than {MAX_ARG_LEN} bytes"
            )));
        }
        total += arg.len() + 1;
    }
    for (key, value) in &spec.env {
        let key_ok = (1..=128).contains(&key.len())
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_ok {
            return Err(invalid(
                "environment names must match [A-Za-z_][A-Za-z0-9_]{0,127}",
            ));
        }
        if key == "PWD" {
            return Err(invalid("PWD is set by the sandbox itself"));
        }
        if value.len() > MAX_ENV_VALUE_LEN {
            return Err(invalid(format!(
                "environment value of {key} is longer than {MAX_ENV_VALUE_LEN} bytes"
            )));
        }
        total += key.len() + value.len() + 2;
    }
    if total > MAX_TOTAL {
        return Err(invalid(format!(
            "argv and env exceed {MAX_TOTAL} bytes in all"
        )));
    }
    Ok(())
}

/// The rootfs, relative to the images dir, as an `O_PATH` directory fd.
fn open_rootfs(requested: &str, config: &Config) -> Result<OwnedFd, HelperError> {
    let outside =
        |why: &str| HelperError::RootfsOutsideImages(format!("rootfs {requested:?}: {why}"));
    let path = Path::new(requested);
    let rel = if path.is_absolute() {
        path.strip_prefix(&config.images_dir)
            .map_err(|_| outside("not inside the images directory"))?
    } else {
        path
    };
    if rel.as_os_str().is_empty() {
        return Err(outside("is the images directory itself"));
    }
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(outside(
            "must be a plain relative path (no `..`, `.` or `/`)",
        ));
    }
    let images = open_dir(&config.images_dir)?;
    let rel = rel.to_str().ok_or_else(|| outside("not UTF-8"))?;
    open_beneath(&images, rel, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| {
        outside(&match e {
            rustix::io::Errno::LOOP => "contains a symbolic link".to_owned(),
            rustix::io::Errno::XDEV => "escapes the images directory".to_owned(),
            other => format!("cannot be opened as a directory ({other})"),
        })
    })
}

/// The server's data dir, created (0700) below the data root if missing.
fn open_data_dir(name: &str, config: &Config) -> Result<OwnedFd, HelperError> {
    let outside =
        |why: String| HelperError::DataDirOutsideRoot(format!("data dir {name:?}: {why}"));
    if !simple_name(name, 64) || name.contains("..") {
        return Err(outside("must be one name of a-z 0-9 - _ .".into()));
    }
    std::fs::create_dir_all(&config.data_root)
        .map_err(|e| HelperError::Failed(format!("cannot create the data root: {e}")))?;
    let root = open_dir(&config.data_root)?;
    match rustix::fs::mkdirat(&root, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(HelperError::Failed(format!("cannot create data dir: {e}"))),
    }
    open_beneath(
        &root,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    )
    .map_err(|e| outside(format!("cannot be opened as a directory ({e})")))
}

/// The CA bundle, opened once per place it is bound in the sandbox.
fn open_ca(
    name: &str,
    rootfs: &OwnedFd,
    config: &Config,
) -> Result<Vec<(OwnedFd, String)>, HelperError> {
    let bad = |why: String| HelperError::InvalidCaBundle(format!("CA bundle {name:?}: {why}"));
    if !simple_name(name, 128) || name.contains("..") {
        return Err(bad("must be one file name".into()));
    }
    let dir = open_dir(&config.ca_dir)?;
    let open = || -> Result<OwnedFd, HelperError> {
        let fd = open_beneath(&dir, name, OFlags::RDONLY | OFlags::NOFOLLOW)
            .map_err(|e| bad(format!("cannot be opened ({e})")))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| bad(e.to_string()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(bad("is not a regular file".into()));
        }
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_CA_BYTES {
            return Err(bad(format!("is larger than {MAX_CA_BYTES} bytes")));
        }
        Ok(fd)
    };
    let mut out = vec![(open()?, CA_IN_SANDBOX.to_owned())];
    for path in CA_PATHS {
        if regular_file_in(rootfs, path) {
            out.push((open()?, format!("/{path}")));
        }
    }
    Ok(out)
}

/// Whether `path` is a regular file beneath `rootfs`, reached without any symbolic link.
fn regular_file_in(rootfs: &OwnedFd, path: &str) -> bool {
    open_beneath(rootfs, path, OFlags::PATH | OFlags::NOFOLLOW)
        .and_then(|fd| rustix::fs::fstat(&fd))
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
}

/// Gives a data dir and everything in it to the sandbox's uid, without following a link.
/// Runs only while no sandbox uses the dir, so nothing can race the walk.
pub fn chown_tree(dir: &OwnedFd, uid: u32, gid: u32) -> rustix::io::Result<()> {
    use rustix::fs::{AtFlags, Gid, Uid};
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    rustix::fs::fchown(dir, Some(uid), Some(gid))?;
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
        if entry.file_type() == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            chown_tree(&sub, uid.as_raw(), gid.as_raw())?;
        }
    }
    Ok(())
}
