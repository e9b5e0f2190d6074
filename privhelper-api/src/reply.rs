//! What `CreateSandbox` and `ListSandboxes` answer: the sandbox, its fds and, in transparent
//! mode, the sockets the helper bound for it.

use serde::{Deserialize, Serialize};
use zbus::OwnedFd;
use zbus::zvariant::Type;

/// A live sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SandboxInfo {
    pub id: String,
    pub server: String,
    /// Index of the sandbox's /30 in the pool.
    pub slot: u32,
    /// Address of the host end of the link: where the proxy listens.
    pub host_addr: String,
    /// Address of the sandbox end of the link.
    pub sandbox_addr: String,
    /// Host pid of the sandbox's outermost process (bwrap).
    pub pid: u32,
}

/// What `CreateSandbox` returns: the sandbox, the server's stdin (write end), stdout and
/// stderr (read ends), a pidfd of the sandbox's outermost process, and the transparent-mode
/// sockets: `[tls, dns_udp, dns_tcp]` when the spec asked for transparent mode, else empty
/// (see [`TransparentSockets`]).
pub type Created = (
    SandboxInfo,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    OwnedFd,
    Vec<OwnedFd>,
);

/// The TCP port a transparent-mode sandbox connects to for TLS (its DNS answers point there).
pub const TLS_PORT: u16 = 443;
/// The port, UDP and TCP, of a transparent-mode sandbox's nameserver.
pub const DNS_PORT: u16 = 53;

/// The sockets the helper made for a transparent-mode sandbox, all in the host network
/// namespace, bound to the link's host address (`SandboxInfo::host_addr`) *and* to the link
/// itself (`SO_BINDTODEVICE`): packets arriving on any other interface never reach them. The
/// host's own processes can still connect (local delivery), but never from the sandbox's
/// address, so the server must accept a peer only if it is `SandboxInfo::sandbox_addr` (on the
/// link, nftables drops every other source). Blocking mode, as the helper made them: set
/// `O_NONBLOCK` before handing them to a reactor.
#[derive(Debug)]
pub struct TransparentSockets {
    /// A listening TCP socket on `host_addr:443`.
    pub tls: std::os::fd::OwnedFd,
    /// A UDP socket bound to `host_addr:53`.
    pub dns_udp: std::os::fd::OwnedFd,
    /// A listening TCP socket on `host_addr:53`.
    pub dns_tcp: std::os::fd::OwnedFd,
}

impl TransparentSockets {
    /// The order of the sockets in [`Created`]'s last field.
    pub fn into_vec(self) -> Vec<OwnedFd> {
        vec![self.tls.into(), self.dns_udp.into(), self.dns_tcp.into()]
    }

    /// Splits [`Created`]'s last field: `None` when it is empty (not transparent mode), an
    /// error when it has any other number of fds.
    pub fn from_reply(fds: Vec<OwnedFd>) -> Result<Option<Self>, FdCountError> {
        let n = fds.len();
        let mut fds = fds.into_iter().map(std::os::fd::OwnedFd::from);
        match (fds.next(), fds.next(), fds.next(), fds.next()) {
            (None, ..) => Ok(None),
            (Some(tls), Some(dns_udp), Some(dns_tcp), None) => Ok(Some(Self {
                tls,
                dns_udp,
                dns_tcp,
            })),
            _ => Err(FdCountError(n)),
        }
    }
}

/// A `CreateSandbox` reply whose transparent-mode fd list is neither empty nor three long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 0 or 3 transparent-mode fds, got {0}")]
pub struct FdCountError(pub usize);
