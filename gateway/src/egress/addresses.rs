//! Resolve once, check every answer, connect only to what was checked (DNS rebinding).
//!
//! A name is refused if ANY of its addresses is loopback, link-local (cloud metadata at
//! 169.254.169.254), private (RFC 1918, CGNAT, ULA), multicast, unspecified, broadcast,
//! documentation/benchmark space, or inside the sandbox pool, unless the admin approved a range
//! containing it for this server. IPv4-mapped IPv6 addresses are folded to IPv4 first.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::LazyLock;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::audit::Deny;

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

static V4_FORBIDDEN: LazyLock<Vec<Ipv4Net>> = LazyLock::new(|| {
    [
        "0.0.0.0/8",       // "this network", unspecified
        "10.0.0.0/8",      // RFC 1918
        "100.64.0.0/10",   // CGNAT
        "127.0.0.0/8",     // loopback
        "169.254.0.0/16",  // link-local, cloud metadata
        "172.16.0.0/12",   // RFC 1918
        "192.0.0.0/24",    // IETF protocol assignments
        "192.0.2.0/24",    // documentation
        "192.88.99.0/24",  // 6to4 relay anycast
        "192.168.0.0/16",  // RFC 1918
        "198.18.0.0/15",   // benchmarking
        "198.51.100.0/24", // documentation
        "203.0.113.0/24",  // documentation
        "224.0.0.0/4",     // multicast
        "240.0.0.0/4",     // reserved, incl. broadcast
    ]
    .iter()
    .map(|n| n.parse().expect("static range"))
    .collect()
});

static V6_FORBIDDEN: LazyLock<Vec<Ipv6Net>> = LazyLock::new(|| {
    [
        "::/128",         // unspecified
        "::1/128",        // loopback
        "::/96",          // IPv4-compatible (deprecated)
        "64:ff9b::/96",   // NAT64 embeds IPv4
        "64:ff9b:1::/48", // local NAT64
        "100::/64",       // discard
        "2001::/23",      // IETF protocol assignments (Teredo embeds IPv4)
        "2001:db8::/32",  // documentation
        "2002::/16",      // 6to4 embeds IPv4
        "fc00::/7",       // unique local
        "fe80::/10",      // link-local
        "fec0::/10",      // site-local (deprecated)
        "ff00::/8",       // multicast
    ]
    .iter()
    .map(|n| n.parse().expect("static range"))
    .collect()
});

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn fold_mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the proxy must not connect to `ip` for a server with `approved` ranges.
pub fn forbidden(ip: IpAddr, pool: &IpNet, approved: &[IpNet]) -> bool {
    let ip = fold_mapped(ip);
    if approved.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    if pool.contains(&ip) {
        return true;
    }
    match ip {
        IpAddr::V4(a) => v4_special(a),
        IpAddr::V6(a) => v6_special(a),
    }
}

fn v4_special(a: Ipv4Addr) -> bool {
    V4_FORBIDDEN.iter().any(|n| n.contains(&a))
}

fn v6_special(a: Ipv6Addr) -> bool {
    V6_FORBIDDEN.iter().any(|n| n.contains(&a))
}

/// Resolves `host` once and returns its addresses if every one of them is allowed.
pub async fn resolve_checked(
    resolver: &dyn Resolve,
    host: &str,
    port: u16,
    pool: &IpNet,
    approved: &[IpNet],
    limit: Duration,
) -> Result<Vec<SocketAddr>, Deny> {
    let addrs = match tokio::time::timeout(limit, resolver.resolve(host, port)).await {
        Ok(Ok(a)) => a,
        Ok(Err(_)) | Err(_) => return Err(Deny::ResolveFailed),
    };
    if addrs.is_empty() {
        return Err(Deny::ResolveFailed);
    }
    if addrs.iter().any(|a| forbidden(a.ip(), pool, approved)) {
        return Err(Deny::ForbiddenAddress);
    }
    // Connect to the folded form: a mapped address would go out over IPv4 anyway.
    Ok(addrs
        .into_iter()
        .map(|a| SocketAddr::new(fold_mapped(a.ip()), a.port()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let pool: IpNet = "10.231.0.0/16".parse().unwrap();
        for bad in [
            "127.0.0.1",
            "169.254.169.254",
            "10.231.7.2",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.231.0.2",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2002:7f00:1::1",
            "64:ff9b::7f00:1",
        ] {
            assert!(forbidden(bad.parse().unwrap(), &pool, &[]), "{bad}");
        }
        for ok in ["93.184.216.34", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(!forbidden(ok.parse().unwrap(), &pool, &[]), "{ok}");
        }
        let approved: Vec<IpNet> = vec!["192.168.1.0/24".parse().unwrap()];
        assert!(!forbidden("192.168.1.5".parse().unwrap(), &pool, &approved));
        assert!(!forbidden(
            "::ffff:192.168.1.5".parse().unwrap(),
            &pool,
            &approved
        ));
        assert!(forbidden("192.168.2.5".parse().unwrap(), &pool, &approved));
        // A pool outside the private ranges is still refused.
        let odd_pool: IpNet = "198.19.0.0/16".parse().unwrap();
        assert!(forbidden("198.19.3.2".parse().unwrap(), &odd_pool, &[]));
    }

    #[tokio::test]
    async fn any_bad_answer_refuses_the_name() {
        let pool: IpNet = "10.231.0.0/16".parse().unwrap();
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
            resolve_checked(&r, "mixed.example.com", 443, &pool, &[], t).await,
            Err(Deny::ForbiddenAddress)
        );
        assert_eq!(
            resolve_checked(&r, "nothing.example.com", 443, &pool, &[], t).await,
            Err(Deny::ResolveFailed)
        );
        let ok = resolve_checked(&r, "mapped.example.com", 443, &pool, &[], t)
            .await
            .unwrap();
        assert_eq!(ok, vec!["93.184.216.34:443".parse().unwrap()]);
    }
}
