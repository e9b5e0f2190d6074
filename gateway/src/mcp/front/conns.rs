//! Connection slots: a cap on the front's connections in total and per peer, so that one
//! address (or one IPv6 /64, what a single host usually holds) cannot take every descriptor the
//! daemon has. A slot is taken when a connection is accepted and given back when it closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a connection was not given a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoSlot {
    Total,
    Peer,
}

impl NoSlot {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Total => "too many connections",
            Self::Peer => "too many connections from this address",
        }
    }
}

/// The peer a cap counts: an IPv4 address, or the /64 an IPv6 address is in (an IPv4-mapped
/// IPv6 address counts as its IPv4 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Peer(IpAddr);

impl Peer {
    pub(super) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => Self(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<Peer, usize>,
}

/// The slots of one front.
#[derive(Debug, Clone)]
pub(super) struct Slots {
    max_total: usize,
    max_per_peer: usize,
    counts: Arc<Mutex<Counts>>,
}

/// A connection's slot, given back on drop.
#[derive(Debug)]
pub(super) struct Slot {
    peer: Peer,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                // The map holds only peers with a connection open: it cannot grow with the
                // number of addresses ever seen.
                c.per_peer.remove(&self.peer);
            }
        }
    }
}

impl Slots {
    pub(super) fn new(max_total: usize, max_per_peer: usize) -> Self {
        Self {
            max_total,
            max_per_peer,
            counts: Arc::default(),
        }
    }

    pub(super) fn take(&self, ip: IpAddr) -> Result<Slot, NoSlot> {
        let peer = Peer::of(ip);
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err(NoSlot::Total);
        }
        let n = c.per_peer.entry(peer).or_default();
        if *n >= self.max_per_peer {
            return Err(NoSlot::Peer);
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            peer,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub(super) fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_peer_cannot_take_more_than_its_share() {
        let s = Slots::new(10, 2);
        let _a = s.take(ip("10.0.0.1")).unwrap();
        let _b = s.take(ip("10.0.0.1")).unwrap();
        assert_eq!(s.take(ip("10.0.0.1")).unwrap_err(), NoSlot::Peer);
        assert!(s.take(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn the_total_is_capped_across_peers() {
        let s = Slots::new(2, 2);
        let _a = s.take(ip("10.0.0.1")).unwrap();
        let _b = s.take(ip("10.0.0.2")).unwrap();
        assert_eq!(s.take(ip("10.0.0.3")).unwrap_err(), NoSlot::Total);
    }

    #[test]
    fn a_closed_connection_gives_its_slot_back_and_forgets_its_peer() {
        let s = Slots::new(1, 1);
        drop(s.take(ip("10.0.0.1")).unwrap());
        assert_eq!(s.open(), 0);
        assert!(s.counts.lock().unwrap().per_peer.is_empty());
        assert!(s.take(ip("10.0.0.2")).is_ok());
    }

    #[test]
    fn addresses_of_one_ipv6_64_are_one_peer() {
        let s = Slots::new(10, 1);
        let _a = s.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            s.take(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            NoSlot::Peer
        );
        assert!(s.take(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_peer() {
        let s = Slots::new(10, 1);
        let _a = s.take(ip("192.0.2.7")).unwrap();
        assert_eq!(s.take(ip("::ffff:192.0.2.7")).unwrap_err(), NoSlot::Peer);
    }
}
