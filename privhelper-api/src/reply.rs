//! What `CreateSandbox` and `ListSandboxes` answer: the sandbox, its fds and the listening
//! sockets the helper bound for it (the proxy's always, transparent mode's three besides).

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
/// stderr (read ends), a pidfd of the sandbox's outermost process, and the sockets the helper
/// bound for the sandbox before its server started: `[proxy]`, or `[proxy, tls, dns_udp,
/// dns_tcp]` when the spec asked for transparent mode (split by [`Listeners::from_reply`]).
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
    /// Their order in [`Created`]'s last field, after the proxy's.
    fn into_vec(self) -> Vec<OwnedFd> {
        vec![self.tls.into(), self.dns_udp.into(), self.dns_tcp.into()]
    }
}

/// Every socket the helper bound for a sandbox, all before its server started: whatever the
/// server connects to first is listening already (a gateway binding after `CreateSandbox`
/// returned would race the server's first connection, and lose now and then).
#[derive(Debug)]
pub struct Listeners {
    /// A listening TCP socket on `host_addr:proxy_port`, bound like the transparent sockets
    /// (to the link's host address and to the link itself; blocking mode).
    pub proxy: std::os::fd::OwnedFd,
    /// Transparent mode's sockets, when the spec asked for it.
    pub transparent: Option<TransparentSockets>,
}

impl Listeners {
    /// The order of the sockets in [`Created`]'s last field.
    pub fn into_vec(self) -> Vec<OwnedFd> {
        let mut fds = vec![self.proxy.into()];
        fds.extend(
            self.transparent
                .map(TransparentSockets::into_vec)
                .unwrap_or_default(),
        );
        fds
    }

    /// Splits [`Created`]'s last field: one fd (the proxy's) or four (the proxy's, then
    /// transparent mode's); any other number is an error.
    pub fn from_reply(fds: Vec<OwnedFd>) -> Result<Self, FdCountError> {
        let n = fds.len();
        let mut fds = fds.into_iter().map(std::os::fd::OwnedFd::from);
        let proxy = fds.next().ok_or(FdCountError(n))?;
        let transparent = match (fds.next(), fds.next(), fds.next(), fds.next()) {
            (None, ..) => None,
            (Some(tls), Some(dns_udp), Some(dns_tcp), None) => Some(TransparentSockets {
                tls,
                dns_udp,
                dns_tcp,
            }),
            _ => return Err(FdCountError(n)),
        };
        Ok(Self { proxy, transparent })
    }
}

/// A `CreateSandbox` reply whose listener fd list is neither one nor four long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected 1 or 4 listener fds (the proxy's, then transparent mode's), got {0}")]
pub struct FdCountError(pub usize);

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(n: usize) -> Vec<OwnedFd> {
        (0..n)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .map(|f| OwnedFd::from(std::os::fd::OwnedFd::from(f)))
            .collect()
    }

    #[test]
    fn a_reply_holds_the_proxy_listener_and_optionally_the_three_transparent_sockets() {
        assert!(Listeners::from_reply(fds(1)).unwrap().transparent.is_none());
        let four = Listeners::from_reply(fds(4)).unwrap();
        assert!(four.transparent.is_some());
        assert_eq!(four.into_vec().len(), 4);
        for n in [0, 2, 3, 5] {
            assert_eq!(Listeners::from_reply(fds(n)).unwrap_err(), FdCountError(n));
        }
    }
}
