//! Step 1: the landlock domain. Paths are as the sandbox sees them (bwrap has already built the
//! mount tree; landlock would forbid mounting afterwards).
//!
//! - `/`: read and execute (the image is read-only anyway; this also denies writing to
//!   `/proc/self/*`, `/dev/shm` and any rw bind the helper might add by mistake);
//! - `/tmp`, and `/data` with `--data`: every filesystem right;
//! - `/dev/null`, `/dev/zero`, `/dev/full`: read and write; `/dev/urandom`, `/dev/random`: read;
//! - TCP: connect to the proxy port only (with `--transparent` also to 443 and 53, the ports of
//!   transparent mode), bind nothing (UDP is left to nftables);
//! - scopes: no abstract unix sockets and no signals across the domain's boundary.
//!
//! The filesystem rights are those of the best ABI both the kernel and the landlock crate know,
//! so new kernels get new rights (e.g. ABI 9 also confines connecting to named unix sockets).
//! TCP (ABI 4) and scopes (ABI 6) are always requested: on an older kernel the crate reports
//! the ruleset as partially enforced and init warns.

use ::landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, LandlockStatus, NetPort, PathBeneath, PathFd,
    PathFdError, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope,
};

use super::exit::{DEGRADED_PREFIX, WARNING_PREFIX};
use super::sys;
use crate::args::{DNS_PORT, TLS_PORT};

/// Read and execute everywhere.
pub const ROOT: &str = "/";
/// Always writable (a private tmpfs).
pub const TMP: &str = "/tmp";
/// Writable with `--data` (the server's persistent directory).
pub const DATA: &str = "/data";
/// Device nodes the server may write (and read).
pub const DEV_WRITABLE: [&str; 3] = ["/dev/null", "/dev/zero", "/dev/full"];
/// Device nodes the server may read.
pub const DEV_READABLE: [&str; 2] = ["/dev/urandom", "/dev/random"];

/// Why step 1 refused to go on; each names the part of the ruleset that failed.
#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    /// The ruleset could not handle the filesystem rights of the ABI asked for.
    #[error("handle filesystem access: {0}")]
    HandleFs(#[source] RulesetError),
    /// The ruleset could not handle TCP bind and connect.
    #[error("handle TCP access: {0}")]
    HandleTcp(#[source] RulesetError),
    /// The ruleset could not scope abstract unix sockets and signals.
    #[error("scope: {0}")]
    Scope(#[source] RulesetError),
    /// `landlock_create_ruleset` failed.
    #[error("create ruleset: {0}")]
    Create(#[source] RulesetError),
    /// A rule's path could not be opened (e.g. `/data` with `--data` but no mount there).
    #[error("{path}: {source}")]
    OpenPath {
        /// The path, as the sandbox sees it.
        path: &'static str,
        /// Why it could not be opened.
        source: PathFdError,
    },
    /// The rule for a path could not be added.
    #[error("{path}: {source}")]
    PathRule {
        /// The path, as the sandbox sees it.
        path: &'static str,
        /// Why the kernel or the crate refused the rule.
        source: RulesetError,
    },
    /// The rule for a TCP port could not be added.
    #[error("TCP port {port} rule: {source}")]
    PortRule {
        /// The port `connect` was to be allowed to.
        port: u16,
        /// Why the kernel or the crate refused the rule.
        source: RulesetError,
    },
    /// `landlock_restrict_self` failed.
    #[error("restrict_self: {0}")]
    RestrictSelf(#[source] RulesetError),
    /// The kernel enforces nothing and `--allow-degraded-landlock` was not given.
    #[error(
        "not enforced: {why}; refusing to start the server (--allow-degraded-landlock would run \
         it unconfined)"
    )]
    NotEnforced {
        /// Why, in a few words (see [`Enforcement::NotEnforced`]).
        why: &'static str,
    },
}

/// What to allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The proxy port: `connect` may always reach it.
    pub proxy_port: u16,
    /// Transparent mode: also TCP connect to [`TLS_PORT`] and [`DNS_PORT`].
    pub transparent: bool,
    /// Whether `/data` is writable (it must exist then).
    pub data: bool,
}

impl Policy {
    /// The TCP ports `connect` may reach (addresses are nftables' job).
    pub fn connect_ports(&self) -> Vec<u16> {
        let mut ports = vec![self.proxy_port];
        if self.transparent {
            ports.extend([TLS_PORT, DNS_PORT]);
        }
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

/// How much of the policy the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enforcement {
    /// Everything requested is enforced.
    Full {
        /// The effective landlock ABI.
        abi: ABI,
    },
    /// The kernel is too old for some of the requested rights (see the module docs).
    Partial {
        /// The effective landlock ABI.
        abi: ABI,
    },
    /// Nothing is enforced.
    NotEnforced {
        /// Why, in a few words.
        why: &'static str,
    },
}

impl Enforcement {
    /// Classifies the landlock crate's report.
    pub fn from_status(ruleset: &RulesetStatus, landlock: &LandlockStatus) -> Self {
        match (landlock, ruleset) {
            (LandlockStatus::NotEnabled, _) => Enforcement::NotEnforced {
                why: "landlock is built into the kernel but not enabled (see the lsm= boot option)",
            },
            (LandlockStatus::NotImplemented, _) => Enforcement::NotEnforced {
                why: "the kernel has no landlock support",
            },
            (LandlockStatus::Available { .. }, RulesetStatus::NotEnforced) => {
                Enforcement::NotEnforced {
                    why: "the kernel enforced none of the ruleset",
                }
            }
            (LandlockStatus::Available { effective_abi, .. }, RulesetStatus::PartiallyEnforced) => {
                Enforcement::Partial {
                    abi: *effective_abi,
                }
            }
            (LandlockStatus::Available { effective_abi, .. }, RulesetStatus::FullyEnforced) => {
                Enforcement::Full {
                    abi: *effective_abi,
                }
            }
        }
    }

    /// What init does about it: `Ok(None)` go on silently, `Ok(Some(line))` print the line and
    /// go on, `Err(_)` refuse to start the server.
    pub fn verdict(&self, allow_degraded: bool) -> Result<Option<String>, LandlockError> {
        match self {
            Enforcement::Full { .. } => Ok(None),
            Enforcement::Partial { abi } => Ok(Some(format!(
                "{WARNING_PREFIX}landlock only partially enforced: the kernel's landlock ABI is \
                 {abi}; network rules need 4, scopes need 6"
            ))),
            Enforcement::NotEnforced { why } if allow_degraded => Ok(Some(format!(
                "{DEGRADED_PREFIX}landlock not enforced ({why}); running the server without \
                 filesystem and network confinement because --allow-degraded-landlock was given"
            ))),
            Enforcement::NotEnforced { why } => Err(LandlockError::NotEnforced { why }),
        }
    }
}

/// Builds the ruleset for `policy` and restricts the calling thread (init is single-threaded,
/// and the domain is inherited across `execve`). Also sets no_new_privs, as landlock requires.
pub fn restrict(policy: &Policy) -> Result<Enforcement, LandlockError> {
    let status = ruleset(policy)?
        .restrict_self()
        .map_err(LandlockError::RestrictSelf)?;
    let RestrictionStatus {
        ruleset, landlock, ..
    } = status;
    Ok(Enforcement::from_status(&ruleset, &landlock))
}

/// The filesystem ABI to ask for: the kernel's, as far as the crate knows it; V1 if the kernel
/// has no landlock (the crate then reports it as not enforced).
fn fs_abi() -> ABI {
    match sys::landlock_abi_version() {
        Ok(v) if v >= 1 => ABI::from(v),
        _ => ABI::V1,
    }
}

fn ruleset(policy: &Policy) -> Result<RulesetCreated, LandlockError> {
    let abi = fs_abi();
    let all = AccessFs::from_all(abi);
    let mut created = Ruleset::default()
        .handle_access(all)
        .map_err(LandlockError::HandleFs)?
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .map_err(LandlockError::HandleTcp)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(LandlockError::Scope)?
        .create()
        .map_err(LandlockError::Create)?;

    let mut paths: Vec<(&str, BitFlags<AccessFs>)> =
        vec![(ROOT, AccessFs::from_read(abi)), (TMP, all)];
    if policy.data {
        paths.push((DATA, all));
    }
    paths.extend(DEV_WRITABLE.map(|p| (p, AccessFs::ReadFile | AccessFs::WriteFile)));
    paths.extend(DEV_READABLE.map(|p| (p, BitFlags::from(AccessFs::ReadFile))));
    for (path, access) in paths {
        let fd = PathFd::new(path).map_err(|source| LandlockError::OpenPath { path, source })?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|source| LandlockError::PathRule { path, source })?;
    }
    for port in policy.connect_ports() {
        created = created
            .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
            .map_err(|source| LandlockError::PortRule { port, source })?;
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn available(abi: ABI) -> LandlockStatus {
        LandlockStatus::Available {
            effective_abi: abi,
            kernel_abi: None,
        }
    }

    #[test]
    fn connect_ports() {
        let mut policy = Policy {
            proxy_port: 3128,
            transparent: false,
            data: false,
        };
        assert_eq!(policy.connect_ports(), [3128]);
        policy.transparent = true;
        assert_eq!(policy.connect_ports(), [53, 443, 3128]);
        policy.proxy_port = 443;
        assert_eq!(policy.connect_ports(), [53, 443]);
    }

    #[test]
    fn classification() {
        use Enforcement::*;
        let from = Enforcement::from_status;
        assert_eq!(
            from(&RulesetStatus::FullyEnforced, &available(ABI::V7)),
            Full { abi: ABI::V7 }
        );
        assert_eq!(
            from(&RulesetStatus::PartiallyEnforced, &available(ABI::V3)),
            Partial { abi: ABI::V3 }
        );
        assert!(matches!(
            from(&RulesetStatus::NotEnforced, &available(ABI::V1)),
            NotEnforced { .. }
        ));
        assert!(matches!(
            from(&RulesetStatus::NotEnforced, &LandlockStatus::NotEnabled),
            NotEnforced { why } if why.contains("not enabled")
        ));
        assert!(matches!(
            from(&RulesetStatus::NotEnforced, &LandlockStatus::NotImplemented),
            NotEnforced { why } if why.contains("no landlock")
        ));
    }

    #[test]
    fn verdicts() {
        let full = Enforcement::Full { abi: ABI::V6 };
        assert!(matches!(full.verdict(false), Ok(None)));
        assert!(matches!(full.verdict(true), Ok(None)));

        let partial = Enforcement::Partial { abi: ABI::V3 };
        for allow in [false, true] {
            let line = partial.verdict(allow).expect("runs").expect("warns");
            assert!(line.starts_with(WARNING_PREFIX), "{line}");
            assert!(line.contains("ABI is 3"), "{line}");
        }

        let none = Enforcement::NotEnforced {
            why: "the kernel has no landlock support",
        };
        let refusal = none.verdict(false).expect_err("refuses");
        assert!(
            matches!(refusal, LandlockError::NotEnforced { why } if why.contains("no landlock")),
            "{refusal:?}"
        );
        assert_eq!(
            refusal.to_string(),
            "not enforced: the kernel has no landlock support; refusing to start the server \
             (--allow-degraded-landlock would run it unconfined)"
        );
        let line = none.verdict(true).expect("runs").expect("warns");
        assert!(line.starts_with(DEGRADED_PREFIX), "{line}");
        assert!(!line.contains('\n'));
    }
}
