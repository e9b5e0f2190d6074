//! The classes of addresses the egress proxy refuses, as fixed tables, and the address a
//! connection really reaches (IPv4-mapped and NAT64 forms folded to IPv4). Pure; below the
//! audit (a refusal names its class) and [`super::addresses`], which applies them in order.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv6Net};

/// Why an address is refused: the class it fell in (the audit names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A cloud metadata service or host agent.
    Metadata,
    Unspecified,
    Loopback,
    LinkLocal,
    Multicast,
    /// Reserved, documentation, or an IPv6 form tunnelling to an IPv4 address.
    Reserved,
    /// Inside the sandbox pool: some sandbox's N.1 or N.2.
    SandboxPool,
    /// One of the gateway's own listen addresses.
    GatewayListen,
    /// An address of the host's own interfaces (or in a local route).
    HostOwn,
    /// The host's addresses could not be read, so nothing can be ruled out.
    HostUnknown,
    /// Private space that this server has no approval for.
    PrivateNotApproved,
}

impl AddressClass {
    /// The name in audit details (`class=…`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Metadata => "cloud-metadata",
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Multicast => "multicast",
            Self::Reserved => "reserved",
            Self::SandboxPool => "sandbox-pool",
            Self::GatewayListen => "gateway-listen",
            Self::HostOwn => "host-address",
            Self::HostUnknown => "host-addresses-unknown",
            Self::PrivateNotApproved => "private-not-approved",
        }
    }
}

/// A refused address and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden {
    pub address: IpAddr,
    pub class: AddressClass,
}

fn nets(table: &[(&str, AddressClass)]) -> Vec<(IpNet, AddressClass)> {
    table
        .iter()
        .map(|(n, c)| (n.parse().expect("static range"), *c))
        .collect()
}

/// Step 2 of the order: never reachable, approvals or not. Metadata first, so that its class
/// (not merely link-local or private) is what the audit says.
pub static NEVER: LazyLock<Vec<(IpNet, AddressClass)>> = LazyLock::new(|| {
    use AddressClass::*;
    nets(&[
        ("169.254.169.254/32", Metadata), // AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        ("169.254.170.2/32", Metadata),   // AWS ECS task credentials
        ("100.100.100.200/32", Metadata), // Alibaba Cloud
        ("168.63.129.16/32", Metadata),   // Azure WireServer (public space!)
        ("fd00:ec2::254/128", Metadata),  // AWS IPv6 metadata
        ("fd20:ce::254/128", Metadata),   // GCP IPv6 metadata
        ("fd00:c1::a9fe:a9fe/128", Metadata), // Oracle Cloud IPv6 metadata
        ("0.0.0.0/8", Unspecified),       // "this network"
        ("127.0.0.0/8", Loopback),
        ("169.254.0.0/16", LinkLocal),
        ("224.0.0.0/4", Multicast),
        ("240.0.0.0/4", Reserved),     // incl. 255.255.255.255
        ("192.0.0.0/24", Reserved),    // IETF protocol assignments
        ("192.0.2.0/24", Reserved),    // documentation
        ("192.88.99.0/24", Reserved),  // 6to4 relay anycast
        ("198.51.100.0/24", Reserved), // documentation
        ("203.0.113.0/24", Reserved),  // documentation
        ("::/128", Unspecified),
        ("::1/128", Loopback),
        ("::/8", Reserved), // IPv4-compatible ::a.b.c.d, SIIT; mapped ones are folded first
        ("64:ff9b:1::/48", Reserved), // local-use NAT64: where the IPv4 sits is not fixed
        ("100::/64", Reserved), // discard
        ("2001::/23", Reserved), // IETF protocol assignments, Teredo embeds IPv4
        ("2001:db8::/32", Reserved), // documentation
        ("2002::/16", Reserved), // 6to4 embeds IPv4
        ("fe80::/10", LinkLocal),
        ("fec0::/10", Reserved), // site-local (deprecated)
        ("ff00::/8", Multicast),
    ])
});

/// Step 7: private space, reachable only inside an approved range.
pub static PRIVATE: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "198.18.0.0/15",
        "fc00::/7",
    ]
    .iter()
    .map(|n| n.parse().expect("static range"))
    .collect()
});

/// The well-known NAT64 prefix (RFC 6052): the last 32 bits are the IPv4 address dialled.
static NAT64: LazyLock<Ipv6Net> = LazyLock::new(|| "64:ff9b::/96".parse().expect("static range"));

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn fold_mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address a connection to `ip` really reaches: IPv4-mapped and NAT64 addresses fold to
/// the IPv4 address inside.
pub fn effective(ip: IpAddr) -> IpAddr {
    match fold_mapped(ip) {
        IpAddr::V6(v6) if NAT64.contains(&v6) => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        other => other,
    }
}

/// Step 2 of [`super::addresses`]' order: the fixed class `ip` (already folded) is in.
pub fn never_class(ip: IpAddr) -> Option<AddressClass> {
    NEVER.iter().find(|(n, _)| n.contains(&ip)).map(|(_, c)| *c)
}
