//! The host's own addresses, kept current: what the kernel would deliver to this machine
//! instead of sending it out. An approval of a private range must never reach the gateway's
//! host (a canary on 0.0.0.0 would answer), and the host's addresses change while the daemon
//! runs (DHCP, a VPN coming up, an admin's `ip addr add`).
//!
//! One NETLINK_ROUTE socket subscribed to address and route changes (RTM_NEWADDR/RTM_DELADDR,
//! RTM_NEWROUTE/RTM_DELROUTE), filled by one dump when opened. Every lookup first drains the
//! events the kernel has queued on the socket (one non-blocking `recv` when nothing changed),
//! so a change made before the lookup is always seen by it: there is no window in which an
//! event waits for a background task. A lost event (ENOBUFS) forces a fresh dump; while the
//! set cannot be read, every lookup fails, and the caller refuses (fail closed).
//!
//! Besides the interfaces' addresses, routes of type local and broadcast count (any table):
//! `ip route add local 198.51.100.0/24 dev lo` delivers a whole range to the host without
//! assigning an address. The netlink messages are built and parsed by `netlink-packet-route`,
//! the crate the helper already uses; the socket is `netlink-sys`'s, used synchronously.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::libc;

/// How long a dump may take before the set is declared unreadable.
const DUMP_LIMIT: Duration = Duration::from_secs(2);

/// Dumps tried before the set is declared unreadable.
const DUMP_ATTEMPTS: usize = 3;

/// Netlink datagrams are at most a page or two; dumps come in chunks of up to 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// The socket's receive queue: large enough that a burst of changes is not lost (a loss only
/// costs a fresh dump).
const RCVBUF: usize = 1 << 20;

/// Why the host's addresses are not known.
#[derive(Debug, thiserror::Error)]
#[error("the host's addresses cannot be read: {0}")]
pub struct HostAddrsError(String);

impl HostAddrsError {
    fn io(step: &str, e: io::Error) -> Self {
        Self(format!("{step}: {e}"))
    }

    #[cfg(test)]
    pub(crate) fn for_test() -> Self {
        Self("unreadable in this test".into())
    }
}

/// The host's addresses and locally delivered ranges, current at every lookup.
#[derive(Debug)]
pub struct HostAddrs {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    sock: Socket,
    seq: u32,
    /// `None` until a dump completed (and again after a failed one): lookups fail closed.
    known: Option<Known>,
}

/// What the kernel told us. Keys include the interface or table, so that one address on two
/// links stays in the set until both are gone.
#[derive(Debug, Default)]
struct Known {
    addrs: HashSet<(u32, IpAddr)>,
    local_routes: HashSet<(u32, IpNet)>,
}

impl Known {
    fn contains(&self, ip: IpAddr) -> bool {
        self.addrs.iter().any(|(_, a)| *a == ip)
            || self.local_routes.iter().any(|(_, n)| n.contains(&ip))
    }

    fn ranges(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self
            .addrs
            .iter()
            .map(|(_, a)| IpNet::from(*a))
            .chain(self.local_routes.iter().map(|(_, n)| *n))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn apply(&mut self, msg: RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewAddress(a) => {
                for key in address_keys(&a) {
                    self.addrs.insert(key);
                }
            }
            RouteNetlinkMessage::DelAddress(a) => {
                for key in address_keys(&a) {
                    self.addrs.remove(&key);
                }
            }
            RouteNetlinkMessage::NewRoute(r) => {
                if let Some(key) = local_route_key(&r) {
                    self.local_routes.insert(key);
                }
            }
            RouteNetlinkMessage::DelRoute(r) => {
                if let Some(key) = local_route_key(&r) {
                    self.local_routes.remove(&key);
                }
            }
            _ => {}
        }
    }
}

/// Both the local and the peer address of an interface address: on a point-to-point link
/// `IFA_ADDRESS` is the peer, elsewhere the two are the same. Refusing a peer costs nothing.
fn address_keys(a: &AddressMessage) -> Vec<(u32, IpAddr)> {
    a.attributes
        .iter()
        .filter_map(|attr| match attr {
            AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => {
                Some((a.header.index, *ip))
            }
            _ => None,
        })
        .collect()
}

/// A route the kernel answers itself: local (the host's own) and broadcast.
fn local_route_key(r: &RouteMessage) -> Option<(u32, IpNet)> {
    if !matches!(r.header.kind, RouteType::Local | RouteType::Broadcast) {
        return None;
    }
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let net = IpNet::new(dst, r.header.destination_prefix_length).ok()?;
    Some((table, net.trunc()))
}

impl HostAddrs {
    /// Subscribes to changes, then reads the current set (in that order, so nothing that
    /// changes during the dump is missed).
    pub fn open() -> Result<Self, HostAddrsError> {
        let mut sock =
            Socket::new(NETLINK_ROUTE).map_err(|e| HostAddrsError::io("netlink socket", e))?;
        sock.bind(&SocketAddr::new(0, 0))
            .map_err(|e| HostAddrsError::io("netlink bind", e))?;
        for group in [
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
            libc::RTNLGRP_IPV4_ROUTE,
            libc::RTNLGRP_IPV6_ROUTE,
        ] {
            sock.add_membership(group)
                .map_err(|e| HostAddrsError::io("netlink subscription", e))?;
        }
        // Best effort: the default queue is enough for most hosts, and an overrun only costs a
        // fresh dump.
        let _ = sock.set_rx_buf_sz(RCVBUF);
        let mut inner = Inner {
            sock,
            seq: 0,
            known: None,
        };
        inner.resync()?;
        Ok(Self {
            inner: Mutex::new(inner),
        })
    }

    /// Whether `ip` is delivered to this host (one of its addresses, or in a local route).
    pub fn contains(&self, ip: IpAddr) -> Result<bool, HostAddrsError> {
        let mut inner = self.lock();
        inner.current()?;
        Ok(inner.known.as_ref().is_some_and(|k| k.contains(ip)))
    }

    /// Every address and locally delivered range, as of now (sorted).
    pub fn ranges(&self) -> Result<Vec<IpNet>, HostAddrsError> {
        let mut inner = self.lock();
        inner.current()?;
        Ok(inner.known.as_ref().map(Known::ranges).unwrap_or_default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Applies every queued change; a fresh dump if events were lost or none succeeded yet.
    fn current(&mut self) -> Result<(), HostAddrsError> {
        if self.known.is_none() {
            return self.resync();
        }
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        loop {
            buf.clear();
            match self.sock.recv(&mut buf, libc::MSG_DONTWAIT) {
                // A change we could not read is a change we lost: read everything again.
                Ok(_) => {
                    if self.apply_datagram(&buf, None).is_err() {
                        return self.resync();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return self.resync(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.known = None;
                    return Err(HostAddrsError::io("netlink receive", e));
                }
            }
        }
    }

    /// Forgets everything and dumps addresses, then routes. Events queued meanwhile are applied
    /// in the order the kernel queued them; inserts and removals are idempotent, so the set
    /// converges on the kernel's.
    /// A dump interrupted by a change (NLM_F_DUMP_INTR) is tried again, a few times.
    fn resync(&mut self) -> Result<(), HostAddrsError> {
        let mut last = None;
        for _ in 0..DUMP_ATTEMPTS {
            self.known = Some(Known::default());
            let dumped = self
                .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
                .and_then(|()| self.dump(RouteNetlinkMessage::GetRoute(RouteMessage::default())));
            match dumped {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        self.known = None;
        Err(last.unwrap_or_else(|| HostAddrsError("no dump attempted".into())))
    }

    fn dump(&mut self, request: RouteNetlinkMessage) -> Result<(), HostAddrsError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        msg.finalize();
        let mut bytes = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut bytes);
        self.sock
            .send(&bytes, 0)
            .map_err(|e| HostAddrsError::io("netlink dump request", e))?;
        let deadline = Instant::now() + DUMP_LIMIT;
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        loop {
            buf.clear();
            match self.sock.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) => {
                    if self.apply_datagram(&buf, Some(self.seq))? {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait(deadline)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HostAddrsError::io("netlink dump", e)),
            }
        }
    }

    fn wait(&self, deadline: Instant) -> Result<(), HostAddrsError> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HostAddrsError("netlink dump timed out".into()));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(e) => Err(HostAddrsError::io("netlink poll", e.into())),
        }
    }

    /// Applies every message of one datagram. With `dump_seq`, returns whether that dump ended
    /// in it.
    fn apply_datagram(
        &mut self,
        buf: &[u8],
        dump_seq: Option<u32>,
    ) -> Result<bool, HostAddrsError> {
        let mut done = false;
        let mut at = 0;
        while at < buf.len() {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..])
                .map_err(|e| HostAddrsError(format!("netlink message: {e}")))?;
            let len = msg.header.length as usize;
            if len == 0 {
                break;
            }
            at += (len + 3) & !3;
            let ours = dump_seq == Some(msg.header.sequence_number);
            if ours && msg.header.flags & NLM_F_DUMP_INTR != 0 {
                // The kernel's tables changed during the dump: it may be inconsistent.
                return Err(HostAddrsError(
                    "netlink dump interrupted by a change".into(),
                ));
            }
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => {
                    if let Some(known) = self.known.as_mut() {
                        known.apply(m);
                    }
                }
                NetlinkPayload::Done(_) if ours => done = true,
                NetlinkPayload::Error(e) if ours => {
                    return Err(HostAddrsError(format!("netlink dump refused: {e}")));
                }
                _ => {}
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_always_the_hosts_own() {
        let host = HostAddrs::open().unwrap();
        // 127.0.0.0/8 is a local route in every namespace whose lo is up; this test process's
        // namespace has lo up (cargo's test harness needs no network, but every Linux host has).
        assert!(host.contains("127.0.0.1".parse().unwrap()).unwrap());
        assert!(host.contains("127.3.2.1".parse().unwrap()).unwrap());
        assert!(!host.contains("192.0.2.77".parse().unwrap()).unwrap());
        assert!(
            host.ranges()
                .unwrap()
                .iter()
                .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()))
        );
    }
}
