//! Resolve once, check every answer, connect only to what was checked (DNS rebinding).
//!
//! A name is refused if ANY of its addresses is refused. Each address is checked in this order,
//! and the first match decides:
//!
//! 1. folded: IPv4-mapped `::ffff:a.b.c.d` and NAT64 `64:ff9b::a.b.c.d` are checked as the IPv4
//!    address they reach (a NAT64 translator dials the embedded address);
//! 2. never, whatever was approved: cloud metadata and host agents (169.254.169.254,
//!    169.254.170.2, 100.100.100.200, 168.63.129.16, fd00:ec2::254, fd20:ce::254,
//!    fd00:c1::a9fe:a9fe), unspecified, loopback, link-local, multicast, reserved and
//!    documentation space, IPv6 forms that tunnel to an IPv4 address we cannot see
//!    (IPv4-compatible `::a.b.c.d`, 6to4, Teredo, local-use NAT64);
//! 3. never: the sandbox pool (any sandbox's N.1 or N.2);
//! 4. never: the gateway's own listen addresses;
//! 5. never: any address of the host's own interfaces, or in a local route, as of this
//!    moment ([`HostAddrs`], kept current from netlink; unreadable means refused);
//! 6. allowed if inside a range the admin approved for this server;
//! 7. refused if private (RFC 1918, CGNAT, benchmarking, ULA): those need an approval;
//! 8. allowed.
//!
//! Approvals are checked when they are made, too ([`check_approval`]): one that overlaps
//! anything of 2-5, or is wider than a /8 (IPv4) or a /48 (IPv6), or is not private, is refused
//! with what it overlaps. The runtime order above still holds for approvals stored earlier.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use super::address_class::fold_mapped;
use super::address_class::{AddressClass, Forbidden, PRIVATE, effective, never_class};
use super::audit::Deny;
use super::host_addrs::{HostAddrs, HostAddrsError};

pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Name resolution, injectable so tests can map names without touching `/etc/hosts`.
pub trait Resolve: Send + Sync + fmt::Debug {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (getaddrinfo on tokio's blocking pool; honours `/etc/hosts`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed map from names to addresses (tests, or pinned internal names).
#[derive(Debug, Default, Clone)]
pub struct StaticResolver {
    map: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, host: &str, addrs: Vec<IpAddr>) -> &mut Self {
        self.map.insert(host.to_ascii_lowercase(), addrs);
        self
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        let found = self.map.get(host).map(|ips| {
            ips.iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect::<Vec<_>>()
        });
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not in the map"))
        })
    }
}

/// Configured names first (`[egress.hosts]`: internal APIs without DNS), the system for the rest.
#[derive(Debug, Default)]
pub struct HostsThenSystem {
    pub hosts: StaticResolver,
}

impl Resolve for HostsThenSystem {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        if self.hosts.map.contains_key(host) {
            self.hosts.resolve(host, port)
        } else {
            SystemResolver.resolve(host, port)
        }
    }
}

/// What is never a destination on this host: the fixed classes, the sandbox pool, the
/// gateway's own listen addresses and the host's own addresses. One per gateway.
#[derive(Debug)]
pub struct AddressGuard {
    pool: IpNet,
    listen: Vec<IpAddr>,
    host: Box<dyn OwnAddresses>,
}

/// The host's own addresses: [`HostAddrs`] in production; a fixed list in unit tests, which
/// must not depend on the machine they run on.
pub trait OwnAddresses: Send + Sync + fmt::Debug {
    fn contains(&self, ip: IpAddr) -> Result<bool, HostAddrsError>;
    fn ranges(&self) -> Result<Vec<IpNet>, HostAddrsError>;
}

impl OwnAddresses for HostAddrs {
    fn contains(&self, ip: IpAddr) -> Result<bool, HostAddrsError> {
        HostAddrs::contains(self, ip)
    }

    fn ranges(&self) -> Result<Vec<IpNet>, HostAddrsError> {
        HostAddrs::ranges(self)
    }
}

impl AddressGuard {
    pub fn new(pool: IpNet, listen: Vec<IpAddr>, host: impl OwnAddresses + 'static) -> Self {
        let host = Box::new(host);
        let listen = listen.into_iter().map(effective).collect();
        Self { pool, listen, host }
    }

    pub fn pool(&self) -> &IpNet {
        &self.pool
    }

    pub fn listen(&self) -> &[IpAddr] {
        &self.listen
    }

    /// The host's own addresses and local ranges, as of now.
    pub fn host_ranges(&self) -> Result<Vec<IpNet>, HostAddrsError> {
        self.host.ranges()
    }

    /// Steps 1-5: refuses what no approval may open.
    pub fn check_never(&self, ip: IpAddr) -> Result<IpAddr, Forbidden> {
        if let Some(class) = never_class(effective(ip)) {
            return Err(Forbidden { address: ip, class });
        }
        self.check_local(ip)
    }

    /// Steps 1 and 3-5: the pool, the gateway's listen addresses and the host's own.
    fn check_local(&self, ip: IpAddr) -> Result<IpAddr, Forbidden> {
        let eff = effective(ip);
        let refuse = |class| Err(Forbidden { address: ip, class });
        if self.pool.contains(&eff) {
            return refuse(AddressClass::SandboxPool);
        }
        if self.listen.contains(&eff) {
            return refuse(AddressClass::GatewayListen);
        }
        // Both forms: the host may own the NAT64 address itself, or the IPv4 one it reaches.
        let own = |a| self.host.contains(a);
        match own(eff).and_then(|e| Ok(e || (eff != ip && own(ip)?))) {
            Ok(false) => Ok(eff),
            Ok(true) => refuse(AddressClass::HostOwn),
            Err(e) => {
                tracing::error!(error = %e, "egress: refusing every destination");
                refuse(AddressClass::HostUnknown)
            }
        }
    }
}

/// One server's view: the guard, the ranges its admin approved and the reserved addresses
/// the operator opted in to.
#[derive(Debug, Clone)]
pub struct ServerAddresses {
    guard: Arc<AddressGuard>,
    approved: Vec<IpNet>,
    reserved_opt_in: Vec<IpAddr>,
}

/// Why a reserved-address opt-in is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{address} cannot be opted in: it is {} space, and only reserved or documentation \
     addresses can be (never loopback, link-local, metadata, private, the sandbox pool, the \
     gateway's or the host's own)",
    class.map_or("public", AddressClass::name)
)]
pub struct OptInError {
    pub address: IpAddr,
    pub class: Option<AddressClass>,
}

impl ServerAddresses {
    pub fn new(guard: Arc<AddressGuard>, approved: Vec<IpNet>) -> Self {
        Self {
            guard,
            approved,
            reserved_opt_in: Vec::new(),
        }
    }

    /// Also allows these exact addresses of the reserved class (step 2's "reserved,
    /// documentation"), for a sandbox whose only egress is a package registry that resolves
    /// there (an operator's mirror on a documentation address: `gigmcp image build
    /// --registry-address`). Each is refused unless it is reserved and passes steps 3-5: the
    /// opt-in opens that one class, nothing else.
    pub fn with_reserved_opt_in(mut self, addresses: &[IpAddr]) -> Result<Self, OptInError> {
        for &address in addresses {
            let eff = effective(address);
            let class = never_class(eff);
            if class != Some(AddressClass::Reserved) {
                return Err(OptInError { address, class });
            }
            self.guard.check_local(address).map_err(|f| OptInError {
                address,
                class: Some(f.class),
            })?;
            self.reserved_opt_in.push(eff);
        }
        Ok(self)
    }

    /// The whole order (steps 1-8) for one address.
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let eff = match self.guard.check_never(ip) {
            Err(f)
                if f.class == AddressClass::Reserved
                    && self.reserved_opt_in.contains(&effective(ip)) =>
            {
                self.guard.check_local(ip)?
            }
            other => other?,
        };
        if self.approved.iter().any(|n| n.contains(&eff)) {
            return Ok(());
        }
        if PRIVATE.iter().any(|n| n.contains(&eff)) {
            return Err(Forbidden {
                address: ip,
                class: AddressClass::PrivateNotApproved,
            });
        }
        Ok(())
    }

    /// Resolves `host` once and returns its addresses if every one of them is allowed.
    pub async fn resolve_checked(
        &self,
        resolver: &dyn Resolve,
        host: &str,
        port: u16,
        limit: Duration,
    ) -> Result<Vec<SocketAddr>, Deny> {
        let addrs = match tokio::time::timeout(limit, resolver.resolve(host, port)).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) | Err(_) => return Err(Deny::ResolveFailed),
        };
        if addrs.is_empty() {
            return Err(Deny::ResolveFailed);
        }
        self.check_all(&addrs)?;
        // Dial the folded form: a mapped address would go out over IPv4 anyway.
        Ok(addrs
            .into_iter()
            .map(|a| SocketAddr::new(fold_mapped(a.ip()), a.port()))
            .collect())
    }

    /// Every address allowed (a name with one bad answer is refused whole).
    pub fn check_all(&self, addrs: &[SocketAddr]) -> Result<(), Deny> {
        addrs
            .iter()
            .try_for_each(|a| self.check(a.ip()))
            .map_err(Deny::ForbiddenAddress)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The host's addresses as a fixed list (unit tests must not depend on the machine).
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Fixed(pub Vec<IpNet>);

    impl OwnAddresses for Fixed {
        fn contains(&self, ip: IpAddr) -> Result<bool, HostAddrsError> {
            Ok(self.0.iter().any(|n| n.contains(&ip)))
        }
        fn ranges(&self) -> Result<Vec<IpNet>, HostAddrsError> {
            Ok(self.0.clone())
        }
    }

    /// A host whose addresses cannot be read.
    #[derive(Debug)]
    struct Unreadable;

    impl OwnAddresses for Unreadable {
        fn contains(&self, _: IpAddr) -> Result<bool, HostAddrsError> {
            Err(HostAddrsError::for_test())
        }
        fn ranges(&self) -> Result<Vec<IpNet>, HostAddrsError> {
            Err(HostAddrsError::for_test())
        }
    }

    fn guard(host: impl OwnAddresses + 'static) -> Arc<AddressGuard> {
        Arc::new(AddressGuard::new(
            "10.231.0.0/16".parse().unwrap(),
            vec!["192.168.77.5".parse().unwrap()],
            host,
        ))
    }

    fn class(s: &ServerAddresses, ip: &str) -> Option<AddressClass> {
        s.check(ip.parse().unwrap()).err().map(|f| f.class)
    }

    #[test]
    fn a_reserved_opt_in_opens_that_address_alone_and_nothing_but_reserved_can_be_opted_in() {
        let g = guard(Fixed(vec!["203.0.113.9/32".parse().unwrap()]));
        let ip: IpAddr = "203.0.113.80".parse().unwrap();
        let plain = ServerAddresses::new(g.clone(), vec![]);
        assert_eq!(class(&plain, "203.0.113.80"), Some(AddressClass::Reserved));
        let s = ServerAddresses::new(g.clone(), vec![])
            .with_reserved_opt_in(&[ip])
            .unwrap();
        assert_eq!(class(&s, "203.0.113.80"), None);
        assert_eq!(class(&s, "::ffff:203.0.113.80"), None);
        assert_eq!(class(&s, "203.0.113.81"), Some(AddressClass::Reserved));
        assert_eq!(class(&s, "127.0.0.1"), Some(AddressClass::Loopback));
        for (bad, want) in [
            ("127.0.0.1", Some(AddressClass::Loopback)),
            ("169.254.169.254", Some(AddressClass::Metadata)),
            ("169.254.1.1", Some(AddressClass::LinkLocal)),
            // Not reserved: refused before steps 3-5 are asked.
            ("10.231.0.2", None),
            ("192.168.77.5", None),
            // Reserved, but the host's own: steps 3-5 still hold.
            ("203.0.113.9", Some(AddressClass::HostOwn)),
            ("192.168.1.1", None),
            ("93.184.216.34", None),
        ] {
            let err = ServerAddresses::new(g.clone(), vec![])
                .with_reserved_opt_in(&[bad.parse().unwrap()])
                .unwrap_err();
            assert_eq!(err.class, want, "{bad}");
        }
    }

    #[test]
    fn every_class_is_refused_without_approvals() {
        let s = ServerAddresses::new(
            guard(Fixed(vec!["203.0.114.9/32".parse().unwrap()])),
            vec![],
        );
        use AddressClass::*;
        for (ip, want) in [
            ("127.0.0.1", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("64:ff9b::7f00:1", Loopback),
            ("169.254.169.254", Metadata),
            ("::ffff:169.254.169.254", Metadata),
            ("64:ff9b::a9fe:a9fe", Metadata),
            ("::a9fe:a9fe", Reserved), // IPv4-compatible
            ("169.254.170.2", Metadata),
            ("100.100.100.200", Metadata),
            ("168.63.129.16", Metadata),
            ("::ffff:168.63.129.16", Metadata),
            ("fd00:ec2::254", Metadata),
            ("fd20:ce::254", Metadata),
            ("fd00:c1::a9fe:a9fe", Metadata),
            ("169.254.3.4", LinkLocal),
            ("fe80::1", LinkLocal),
            ("0.0.0.0", Unspecified),
            ("::", Unspecified),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Reserved),
            ("2002:7f00:1::1", Reserved),
            ("2001:0:4136:e378::1", Reserved),
            ("64:ff9b:1::7f00:1", Reserved),
            ("10.231.7.2", SandboxPool),
            ("10.231.7.1", SandboxPool),
            ("::ffff:10.231.0.2", SandboxPool),
            ("64:ff9b::ae7:702", SandboxPool),
            ("192.168.77.5", GatewayListen),
            ("203.0.114.9", HostOwn),
            ("::ffff:203.0.114.9", HostOwn),
            ("64:ff9b::cb00:7209", HostOwn),
            ("192.168.1.1", PrivateNotApproved),
            ("172.16.0.1", PrivateNotApproved),
            ("100.64.0.1", PrivateNotApproved),
            ("fd12::1", PrivateNotApproved),
            ("64:ff9b::a00:1", PrivateNotApproved),
        ] {
            assert_eq!(class(&s, ip), Some(want), "{ip}");
        }
        for ok in [
            "93.184.216.34",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
        ] {
            assert_eq!(class(&s, ok), None, "{ok}");
        }
    }

    #[test]
    fn approvals_never_open_what_is_checked_before_them() {
        let approved: Vec<IpNet> = [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "169.254.0.0/16",
            "127.0.0.0/8",
            "100.64.0.0/10",
            "168.63.0.0/16",
            "192.168.0.0/16",
            "fd00::/8",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
        let host = Fixed(vec!["10.9.8.7/32".parse().unwrap()]);
        let s = ServerAddresses::new(guard(host), approved);
        for never in [
            "127.0.0.1",
            "169.254.169.254",
            "100.100.100.200",
            "168.63.129.16",
            "fd00:ec2::254",
            "fd20:ce::254",
            "fd00:c1::a9fe:a9fe",
            "10.231.3.1",
            "10.231.3.2",
            "192.168.77.5",
            "10.9.8.7",
            "::ffff:10.9.8.7",
            "169.254.1.1",
            "::1",
            "ff02::1",
            "::a09:807",
        ] {
            assert!(class(&s, never).is_some(), "{never} opened by an approval");
        }
        for opened in [
            "10.9.8.6",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
            "64:ff9b::a09:806",
        ] {
            assert_eq!(class(&s, opened), None, "{opened}");
        }
    }

    #[test]
    fn unreadable_host_addresses_refuse_everything() {
        let s = ServerAddresses::new(guard(Unreadable), vec!["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(class(&s, "93.184.216.34"), Some(AddressClass::HostUnknown));
        assert_eq!(class(&s, "10.1.2.3"), Some(AddressClass::HostUnknown));
    }

    #[tokio::test]
    async fn any_bad_answer_refuses_the_name() {
        let s = ServerAddresses::new(guard(Fixed::default()), vec![]);
        let mut r = StaticResolver::new();
        r.insert(
            "mixed.example.com",
            vec![
                "93.184.216.34".parse().unwrap(),
                "127.0.0.1".parse().unwrap(),
            ],
        );
        r.insert(
            "mapped.example.com",
            vec!["::ffff:93.184.216.34".parse().unwrap()],
        );
        let t = Duration::from_secs(1);
        assert_eq!(
            s.resolve_checked(&r, "mixed.example.com", 443, t).await,
            Err(Deny::ForbiddenAddress(Forbidden {
                address: "127.0.0.1".parse().unwrap(),
                class: AddressClass::Loopback
            }))
        );
        assert_eq!(
            s.resolve_checked(&r, "nothing.example.com", 443, t).await,
            Err(Deny::ResolveFailed)
        );
        let ok = s
            .resolve_checked(&r, "mapped.example.com", 443, t)
            .await
            .unwrap();
        assert_eq!(ok, vec!["93.184.216.34:443".parse().unwrap()]);
    }
}
