//! The helper's own errors: [`StepError`], one variant per step of building a sandbox,
//! [`TeardownError`], one per step of destroying one (collected in [`TeardownErrors`]), and
//! [`StartError`], what can stop the helper from starting.
//!
//! A refused or failed `CreateSandbox` must say *which* step failed, so each variant's message
//! starts with the step's name (`veth: ...`). They reach the gateway as the D-Bus errors of
//! `privhelper_api::HelperError` (whose names are part of the interface and do not change):
//! a data dir that cannot be handed over is the spec's fault (`InvalidSpec`), everything else
//! is the host's (`Failed`, with the step in the message).

use privhelper_api::HelperError;

use super::cgroup::CgroupError;
use super::data_dir::DataDirError;
use super::firewall::FirewallError;
use super::network::NetworkError;
use super::transparent::SocketError;

/// A step of [`super::lifecycle::build`] that failed, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// `SIGTERM` arrived: live sandboxes are being destroyed, no new ones are made.
    #[error("the helper is shutting down")]
    ShuttingDown,
    /// The slot's sandbox uid is a real user's: its files and processes would be in reach.
    #[error("uid: sandbox uid {uid} belongs to user {user}: move uid_base to a free range")]
    UidTaken { uid: u32, user: String },
    #[error("netns: {0}")]
    Netns(NetworkError),
    #[error("veth: {0}")]
    Veth(NetworkError),
    #[error("addresses: {0}")]
    Addresses(NetworkError),
    /// The proxy listener or a transparent-mode socket could not be bound (a port held by
    /// someone else ends here: the sandbox is not started).
    #[error("listener: {0}")]
    Listener(SocketError),
    #[error("firewall: {0}")]
    Firewall(FirewallError),
    #[error("cgroup: {0}")]
    Cgroup(CgroupError),
    #[error("data dir cannot be given to the sandbox: {0}")]
    DataDir(DataDirError),
    #[error("resolv.conf: {0}")]
    ResolvConf(std::io::Error),
    /// Duplicating an fd to hand to bwrap (the rootfs, data dir, CA bundle or netns).
    #[error("dup: {0}")]
    Dup(std::io::Error),
    /// Writing bwrap's arguments into the file it reads them from (`--args`).
    #[error("bwrap arguments: {0}")]
    BwrapArgs(std::io::Error),
    #[error("start bwrap: {0}")]
    Spawn(std::io::Error),
}

impl From<StepError> for HelperError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::DataDir(_) => HelperError::InvalidSpec(e.to_string()),
            _ => HelperError::Failed(e.to_string()),
        }
    }
}

/// A step of tearing a sandbox down (or of unwinding a half-built one) that failed; teardown
/// carries on with the others.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("kill: {0}")]
    Kill(std::io::Error),
    #[error("firewall: {0}")]
    Firewall(FirewallError),
    /// A blocking wait (for bwrap, or for the cgroups to empty) that did not come back.
    #[error("reaping: {0}")]
    Join(tokio::task::JoinError),
    #[error("cgroup: {0}")]
    Cgroup(CgroupError),
    #[error("network: {0}")]
    Link(NetworkError),
    #[error("network: {0}")]
    Netns(NetworkError),
}

/// Every step of a teardown that failed, in order (as netavark's `NetavarkErrorList`): one
/// failure never hides another.
#[derive(Debug, Default, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct TeardownErrors(pub Vec<TeardownError>);

impl TeardownErrors {
    /// Keeps the error of one step, if it failed.
    pub fn note<T>(&mut self, result: Result<T, TeardownError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<TeardownErrors> for HelperError {
    fn from(e: TeardownErrors) -> Self {
        HelperError::Failed(e.to_string())
    }
}

/// Why the helper could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("netlink: {0}")]
    Netlink(NetworkError),
    #[error("becoming a child subreaper: {0}")]
    Subreaper(nix::Error),
    #[error(transparent)]
    Cgroups(CgroupError),
    #[error("{0}")]
    Roots(super::validate::RootsError),
    #[error("SIGCHLD handler: {0}")]
    Signal(std::io::Error),
    #[error("sweep: {0}")]
    Sweep(NetworkError),
    #[error("sweep: {0}")]
    Firewall(FirewallError),
    /// A host link that is not a sandbox's starts with `link_prefix`: the firewall matches
    /// sandbox links by that prefix (`iifname "gm*"`), so it would drop that link's traffic
    /// as a sandbox's, and the sweep would delete it as a leftover.
    #[error(
        "link_prefix {prefix:?} matches the host's link {link}, which is not a sandbox link \
         ({prefix} + 8 hex digits): the firewall would drop its traffic as a sandbox's; choose \
         another link_prefix"
    )]
    LinkPrefixTaken { prefix: String, link: String },
}
