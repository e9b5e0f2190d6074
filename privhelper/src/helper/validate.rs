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

use super::image::{check_workdir, image_entry};
use crate::config::Config;
use privhelper_api::{HelperError, PROXY_ADDR_TOKEN, SandboxSpec};

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
pub(super) const MOUNT_POINTS: [&str; 4] = ["proc", "dev", "tmp", "run"];
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
    /// The server's working directory inside the sandbox (checked: a directory of the image).
    pub workdir: String,
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

pub(super) const BENEATH: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

pub(super) fn open_beneath(
    dir: impl AsFd,
    rel: &str,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(dir, rel, flags | OFlags::CLOEXEC, Mode::empty(), BENEATH)
}

/// The directories every request resolves beneath, opened once at start-up without following
/// any symlink. Requests use these fds, never the configured paths again: the gateway owns
/// parts of `/var/lib/gigmcp`, and a path re-opened per request could be swapped under us.
#[derive(Debug)]
pub struct Roots {
    images: OwnedFd,
    pub(super) data: OwnedFd,
    ca: OwnedFd,
    /// The uid allowed to call the helper: the CA bundle must be its file.
    gateway_uid: u32,
}

/// Why the configured directories could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("cannot open {} without following links: {source}", path.display())]
    Open {
        path: std::path::PathBuf,
        source: rustix::io::Errno,
    },
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("data_root {}: {source}", path.display())]
    Stat {
        path: std::path::PathBuf,
        source: rustix::io::Errno,
    },
    #[error("data_root {} must be owned by root and writable by nobody else", path.display())]
    DataRootWritable { path: std::path::PathBuf },
}

impl Roots {
    pub fn open(config: &Config) -> Result<Self, RootsError> {
        let open = |path: &Path| -> Result<OwnedFd, RootsError> {
            rustix::fs::openat2(
                rustix::fs::CWD,
                path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|source| RootsError::Open {
                path: path.to_owned(),
                source,
            })
        };
        let path = || config.data_root.clone();
        // The data root is walked and re-owned as root, so nobody but root may write in it.
        std::fs::create_dir_all(&config.data_root).map_err(|source| RootsError::Create {
            path: path(),
            source,
        })?;
        let data = open(&config.data_root)?;
        let st = rustix::fs::fstat(&data).map_err(|source| RootsError::Stat {
            path: path(),
            source,
        })?;
        if st.st_uid != 0 || st.st_mode & 0o022 != 0 {
            return Err(RootsError::DataRootWritable { path: path() });
        }
        Ok(Self {
            images: open(&config.images_dir)?,
            data,
            ca: open(&config.ca_dir)?,
            gateway_uid: config.caller_uid(),
        })
    }
}

/// A simple name: one path component of safe characters.
pub(super) fn simple_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

pub fn check(spec: &SandboxSpec, config: &Config, roots: &Roots) -> Result<Checked, HelperError> {
    if !simple_name(&spec.server, 64) || spec.server.contains('.') {
        return Err(invalid("server must be 1-64 of a-z 0-9 - _"));
    }
    check_command(spec)?;
    let (limits, ceil) = (&spec.limits, &config.ceilings);
    within(
        "memory_max_bytes",
        limits.memory_max_bytes,
        MIN_MEMORY,
        ceil.memory_max_bytes,
    )?;
    within("pids_max", limits.pids_max, MIN_PIDS, ceil.pids_max)?;
    within("cpu_percent", limits.cpu_percent, 1, ceil.cpu_percent)?;
    check_proxy_port(spec.proxy_port, config)?;
    let rootfs = open_rootfs(&spec.rootfs, config, roots)?;
    let workdir = check_workdir(&spec.workdir, &rootfs)?;
    for dir in MOUNT_POINTS {
        if image_entry(&rootfs, dir)? != Some(FileType::Directory) {
            return Err(HelperError::RootfsIncomplete(format!(
                "the image has no /{dir} directory"
            )));
        }
    }
    let (data, data_name) = if spec.data_dir.is_empty() {
        (None, None)
    } else {
        if image_entry(&rootfs, "data")? != Some(FileType::Directory) {
            return Err(HelperError::RootfsIncomplete(
                "a data dir needs a /data directory in the image".into(),
            ));
        }
        (
            Some(super::data_dir::open_data_dir(&spec.data_dir, roots)?),
            Some(spec.data_dir.clone()),
        )
    };
    if spec.transparent && image_entry(&rootfs, RESOLV_CONF)? != Some(FileType::RegularFile) {
        return Err(HelperError::RootfsIncomplete(format!(
            "transparent mode needs /{RESOLV_CONF} as a regular file in the image, for the \
             helper to replace"
        )));
    }
    let ca = open_ca(&spec.ca_bundle, &rootfs, roots)?;
    Ok(Checked {
        server: spec.server.clone(),
        rootfs,
        data,
        ca,
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        workdir,
        proxy_port: spec.proxy_port,
        transparent: spec.transparent,
        memory_max: limits.memory_max_bytes,
        pids_max: limits.pids_max,
        cpu_percent: limits.cpu_percent,
        data_name,
    })
}

/// The lowest proxy port a spec may ask for: the helper binds it as root, so a lower one would
/// let the gateway take a privileged port (transparent mode's 443 and 53 among them) it could
/// not bind itself.
pub const MIN_PROXY_PORT: u16 = 1024;

/// Refuses a proxy port below [`MIN_PROXY_PORT`] or among the configured host service ports:
/// the sandbox may connect to its proxy port on its link's host address, and the helper binds
/// it there as root, so it must be nobody else's.
fn check_proxy_port(port: u16, config: &Config) -> Result<(), HelperError> {
    if port < MIN_PROXY_PORT {
        return Err(invalid(format!(
            "proxy_port {port} is below {MIN_PROXY_PORT}: privileged ports are the host's"
        )));
    }
    if config.host_service_ports.contains(&port) {
        return Err(invalid(format!(
            "proxy_port {port} is one of the host's service ports (host_service_ports in the \
             helper's configuration)"
        )));
    }
    Ok(())
}

/// Refuses `v` for `key` unless `lo <= v <= hi`.
fn within<T: PartialOrd + Copy + std::fmt::Display>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), HelperError> {
    match (lo..=hi).contains(&v) {
        true => Ok(()),
        false => Err(invalid(format!("{key} must be between {lo} and {hi}"))),
    }
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
fn open_rootfs(requested: &str, config: &Config, roots: &Roots) -> Result<OwnedFd, HelperError> {
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
    let rel = rel.to_str().ok_or_else(|| outside("not UTF-8"))?;
    let open = |prefix: &str| {
        open_beneath(&roots.images, prefix, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| {
            outside(&match e {
                rustix::io::Errno::LOOP => "contains a symbolic link".to_owned(),
                rustix::io::Errno::XDEV => "escapes the images directory".to_owned(),
                other => format!("cannot be opened as a directory ({other})"),
            })
        })
    };
    // The images directory, and each directory down to the root (`roots/<hex>/rootfs` for an
    // installed image, `dirs/<name>` for a copied one), written by the gateway and nobody else.
    let owner_only = |what: &str, fd: &OwnedFd| -> Result<(), HelperError> {
        let st = rustix::fs::fstat(fd)
            .map_err(|e| HelperError::Failed(format!("examining {what}: {e}")))?;
        let writable = |why: String| HelperError::RootfsWritable(format!("{what} {why}"));
        if st.st_uid != 0 && st.st_uid != roots.gateway_uid {
            return Err(writable(format!(
                "belongs to uid {}, neither root nor the gateway",
                st.st_uid
            )));
        }
        if st.st_mode & 0o022 != 0 {
            return Err(writable(format!(
                "is writable by its group or others (mode {:04o})",
                st.st_mode & 0o7777
            )));
        }
        Ok(())
    };
    owner_only("the images directory", &roots.images)?;
    for (end, _) in rel.match_indices('/').chain([(rel.len(), "")]) {
        let prefix = &rel[..end];
        owner_only(
            &format!("{prefix:?} in the images directory"),
            &open(prefix)?,
        )?;
    }
    open(rel)
}

/// The CA bundle (if the spec names one), opened once per place it is bound in the sandbox.
fn open_ca(
    name: &str,
    rootfs: &OwnedFd,
    roots: &Roots,
) -> Result<Vec<(OwnedFd, String)>, HelperError> {
    if name.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |why: String| HelperError::InvalidCaBundle(format!("CA bundle {name:?}: {why}"));
    if !simple_name(name, 128) || name.contains("..") {
        return Err(bad("must be one file name".into()));
    }
    let open = || -> Result<OwnedFd, HelperError> {
        // Non-blocking: a FIFO or device must be refused, not waited on.
        let fd = open_beneath(
            &roots.ca,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
        )
        .map_err(|e| bad(format!("cannot be opened ({e})")))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| bad(e.to_string()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(bad("is not a regular file".into()));
        }
        // The gateway's own file, with no other name: a hard link to a file of root's (say a
        // private key) would be owned by root.
        if st.st_uid != roots.gateway_uid || st.st_nlink != 1 {
            return Err(bad(
                "must be a file of the gateway's own, with one link".into()
            ));
        }
        if u64::try_from(st.st_size).unwrap_or(u64::MAX) > MAX_CA_BYTES {
            return Err(bad(format!("is larger than {MAX_CA_BYTES} bytes")));
        }
        Ok(fd)
    };
    let mut out = vec![(open()?, CA_IN_SANDBOX.to_owned())];
    for path in CA_PATHS {
        if image_entry(rootfs, path)? == Some(FileType::RegularFile) {
            out.push((open()?, format!("/{path}")));
        }
    }
    Ok(out)
}

/// The environment the server gets: `env` with every [`PROXY_ADDR_TOKEN`] in a *value* replaced
/// by the link's host address, and nothing else changed (names, other `@...@` or `$...` forms,
/// partial tokens stay as they are). The result is never longer than the checked input.
pub fn expand_env(env: &[(String, String)], host: std::net::Ipv4Addr) -> Vec<(String, String)> {
    let host = host.to_string();
    env.iter()
        .map(|(k, v)| (k.clone(), v.replace(PROXY_ADDR_TOKEN, &host)))
        .collect()
}

/// Whether `path` is an ELF executable with no program interpreter (statically linked).
/// `gigmcp-sandbox-init` must be: a dynamic one would run the *image's* loader, with the
/// image's code, before landlock and seccomp are in place.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    const PT_INTERP: usize = 3;
    let bytes = std::fs::read(path)?;
    let bad = || std::io::Error::other("not a 64-bit little-endian ELF file");
    // The little-endian unsigned integer of `n` bytes at offset `o`.
    let at = |o: usize, n: usize| -> std::io::Result<usize> {
        let b = bytes
            .get(o..o.checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let v = b.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x));
        usize::try_from(v).map_err(|_| bad())
    };
    // ELF magic, 64-bit class, little-endian data.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        return Err(bad());
    }
    let (phoff, phentsize, phnum) = (at(0x20, 8)?, at(0x36, 2)?, at(0x38, 2)?);
    for i in 0..phnum {
        if at(phoff + i * phentsize, 4)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_env_substitutes_only_the_proxy_token_in_values() {
        let host = std::net::Ipv4Addr::new(10, 232, 0, 1);
        let env: Vec<(String, String)> = [
            ("HTTPS_PROXY", "http://@GIGMCP_PROXY_ADDR@:3128"),
            ("TWICE", "@GIGMCP_PROXY_ADDR@,@GIGMCP_PROXY_ADDR@"),
            ("GIGMCP_PROXY_ADDR", "kept"),
            ("PARTIAL", "@GIGMCP_PROXY_ADDR @GIGMCP_PROXY_ADDR"),
            ("CASE", "@gigmcp_proxy_addr@"),
            (
                "SHELL_FORMS",
                "$GIGMCP_PROXY_ADDR ${HOME} $(id) `id` %PATH% @HOME@ ~",
            ),
            ("NESTED", "@GIGMCP_@GIGMCP_PROXY_ADDR@PROXY_ADDR@"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = expand_env(&env, host);
        let got: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("HTTPS_PROXY", "http://10.232.0.1:3128"),
                ("TWICE", "10.232.0.1,10.232.0.1"),
                ("GIGMCP_PROXY_ADDR", "kept"),
                ("PARTIAL", "@GIGMCP_PROXY_ADDR @GIGMCP_PROXY_ADDR"),
                ("CASE", "@gigmcp_proxy_addr@"),
                (
                    "SHELL_FORMS",
                    "$GIGMCP_PROXY_ADDR ${HOME} $(id) `id` %PATH% @HOME@ ~"
                ),
                // One pass: the replacement is never scanned again.
                ("NESTED", "@GIGMCP_10.232.0.1PROXY_ADDR@"),
            ]
        );
        // Never longer than the input (so the checked bounds still hold).
        let widest = std::net::Ipv4Addr::new(255, 255, 255, 255);
        for ((_, a), (_, b)) in env.iter().zip(expand_env(&env, widest)) {
            assert!(b.len() <= a.len());
        }
    }
}

#[cfg(test)]
mod elf_tests {
    use super::*;

    #[test]
    fn dynamic_binaries_are_recognised() {
        // This test binary is dynamically linked; /bin/sh too.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me).unwrap());
        assert!(!is_static_elf(Path::new("/bin/sh")).unwrap());
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
        // The static init, where `scripts/test` has built it.
        let init = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/static-init/x86_64-unknown-linux-gnu/debug/gigmcp-sandbox-init");
        if init.exists() {
            assert!(is_static_elf(&init).unwrap(), "{}", init.display());
        }
    }
}

#[cfg(test)]
mod proxy_port_tests {
    use super::*;

    /// A random number below `n` (kernel randomness: each run tries other ports).
    fn below(n: u32) -> u32 {
        let mut b = [0u8; 4];
        rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()).unwrap();
        u32::from_ne_bytes(b) % n
    }

    fn refusal(port: u16, config: &Config) -> String {
        match check_proxy_port(port, config) {
            Err(HelperError::InvalidSpec(m)) => m,
            other => panic!("port {port} not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn proxy_ports_below_1024_are_refused() {
        let config = Config::default();
        let mut ports = vec![0, 22, 53, 443, 1023];
        ports.extend((0..32).map(|_| below(1024) as u16));
        for port in ports {
            assert!(refusal(port, &config).contains("below 1024"), "{port}");
        }
        assert!(check_proxy_port(MIN_PROXY_PORT, &config).is_ok());
    }

    #[test]
    fn the_hosts_configured_service_ports_are_refused_as_proxy_ports() {
        let mut config = Config::default();
        for port in config.host_service_ports.clone() {
            assert!(
                refusal(port, &config).contains("host_service_ports"),
                "{port}"
            );
        }
        // A port the admin names, chosen at random: refused once named, accepted before.
        let port = 1024 + below(64_000) as u16;
        config.host_service_ports.retain(|p| *p != port);
        assert!(check_proxy_port(port, &config).is_ok(), "{port}");
        config.host_service_ports.push(port);
        assert!(refusal(port, &config).contains("service ports"), "{port}");
    }
}
