//! `gigmcp server add --approve-range`: what an admin may open for one server. Only private
//! space (RFC 1918, CGNAT, benchmarking, ULA), at most a /8 (IPv4) or a /48 (IPv6, a site's
//! ULA prefix), written as the network itself, and never overlapping what no approval opens
//! (see [`super::addresses`]): the fixed classes, the sandbox pool, the gateway's listen
//! addresses and the host's own addresses, in any of their IPv6 forms. The refusal names the
//! overlap. The proxy applies the same order at every connection, so an approval stored before
//! a host address appeared still cannot reach it.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::address_class::{AddressClass, NEVER, PRIVATE};
use super::addresses::AddressGuard;
use super::host_addrs::HostAddrsError;

/// The widest IPv4 approval: a /8 (all of 10.0.0.0/8).
pub const MAX_V4_WIDTH: u8 = 8;
/// The widest IPv6 approval: a /48, one site's unique-local prefix.
pub const MAX_V6_WIDTH: u8 = 48;

/// Why an approval is refused; the message names the range and what it collides with.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("--approve-range {range}: host bits are set; did you mean {}?", range.trunc())]
    HostBits { range: IpNet },
    #[error(
        "--approve-range {range}: wider than a /{max}; approve only the network the server needs"
    )]
    TooWide { range: IpNet, max: u8 },
    #[error("--approve-range {range} overlaps {what} {overlap}: approvals never open it")]
    Overlaps {
        range: IpNet,
        what: &'static str,
        overlap: IpNet,
    },
    #[error(
        "--approve-range {range}: not private space (10/8, 172.16/12, 192.168/16, 100.64/10, 198.18/15, fc00::/7); public destinations need no approval"
    )]
    NotPrivate { range: IpNet },
    #[error("--approve-range {range}: {source}")]
    HostUnknown {
        range: IpNet,
        #[source]
        source: HostAddrsError,
    },
}

/// Checks one approval against this host, now.
pub fn check_approval(range: IpNet, guard: &AddressGuard) -> Result<(), ApprovalError> {
    if range != range.trunc() {
        return Err(ApprovalError::HostBits { range });
    }
    let max = match range {
        IpNet::V4(_) => MAX_V4_WIDTH,
        IpNet::V6(_) => MAX_V6_WIDTH,
    };
    if range.prefix_len() < max {
        return Err(ApprovalError::TooWide { range, max });
    }
    let host = guard
        .host_ranges()
        .map_err(|source| ApprovalError::HostUnknown { range, source })?;
    for (net, what) in never_opened(guard, &host) {
        for form in forms(net) {
            if overlap(&range, &form) {
                return Err(ApprovalError::Overlaps {
                    range,
                    what,
                    overlap: form,
                });
            }
        }
    }
    if !PRIVATE.iter().any(|p| p.contains(&range)) {
        return Err(ApprovalError::NotPrivate { range });
    }
    Ok(())
}

/// Everything of steps 2-5, named as the refusal names it.
fn never_opened(guard: &AddressGuard, host: &[IpNet]) -> Vec<(IpNet, &'static str)> {
    let fixed = NEVER.iter().map(|(n, c)| (*n, describe(*c)));
    let pool = std::iter::once((*guard.pool(), describe(AddressClass::SandboxPool)));
    let listen = guard
        .listen()
        .iter()
        .map(|a| (IpNet::from(*a), describe(AddressClass::GatewayListen)));
    let own = host.iter().map(|n| (*n, describe(AddressClass::HostOwn)));
    fixed.chain(pool).chain(listen).chain(own).collect()
}

fn describe(class: AddressClass) -> &'static str {
    match class {
        AddressClass::Metadata => "the cloud metadata address",
        AddressClass::Unspecified => "unspecified",
        AddressClass::Loopback => "loopback",
        AddressClass::LinkLocal => "link-local",
        AddressClass::Multicast => "multicast",
        AddressClass::Reserved => "reserved",
        AddressClass::SandboxPool => "the sandbox pool",
        AddressClass::GatewayListen => "the gateway's listen address",
        AddressClass::HostOwn => "the host's own address",
        AddressClass::HostUnknown => "the host's addresses",
        AddressClass::PrivateNotApproved => "private space",
    }
}

/// `net` and, for IPv4, the IPv6 forms that reach it: mapped (`::ffff:`), compatible (`::`)
/// and NAT64 (`64:ff9b::`).
fn forms(net: IpNet) -> Vec<IpNet> {
    let IpNet::V4(v4) = net else {
        return vec![net];
    };
    let embed = |prefix: [u16; 6]| {
        let [a, b, c, d] = v4.network().octets();
        let addr = std::net::Ipv6Addr::new(
            prefix[0],
            prefix[1],
            prefix[2],
            prefix[3],
            prefix[4],
            prefix[5],
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
        );
        IpNet::V6(Ipv6Net::new(addr, 96 + v4.prefix_len()).expect("96 + at most 32"))
    };
    vec![
        IpNet::V4(v4),
        embed([0, 0, 0, 0, 0, 0xffff]),
        embed([0; 6]),
        embed([0x64, 0xff9b, 0, 0, 0, 0]),
    ]
}

fn overlap(a: &IpNet, b: &IpNet) -> bool {
    match (a, b) {
        (IpNet::V4(a), IpNet::V4(b)) => overlap_v4(a, b),
        (IpNet::V6(a), IpNet::V6(b)) => a.contains(&b.network()) || b.contains(&a.network()),
        _ => false,
    }
}

fn overlap_v4(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::addresses::tests::Fixed;

    fn random_byte() -> u8 {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).unwrap();
        b[0]
    }

    fn guard(host: Vec<IpNet>) -> AddressGuard {
        AddressGuard::new(
            "10.231.0.0/16".parse().unwrap(),
            vec!["172.20.1.9".parse().unwrap()],
            Fixed(host),
        )
    }

    fn refusal(range: &str, g: &AddressGuard) -> String {
        match check_approval(range.parse().unwrap(), g) {
            Ok(()) => panic!("{range} was approved"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn an_approval_overlapping_what_is_never_opened_is_refused_naming_it() {
        // A private address on one of the host's links, chosen at random.
        let (x, y) = (random_byte(), random_byte());
        let own = format!("192.168.{x}.{y}");
        let g = guard(vec![format!("{own}/32").parse().unwrap()]);
        for (range, named) in [
            (
                "169.254.0.0/16",
                "the cloud metadata address 169.254.169.254/32",
            ),
            (
                "169.254.170.0/24",
                "the cloud metadata address 169.254.170.2/32",
            ),
            (
                "100.64.0.0/10",
                "the cloud metadata address 100.100.100.200/32",
            ),
            (
                "100.100.100.0/24",
                "the cloud metadata address 100.100.100.200/32",
            ),
            (
                "fd00:ec2::/48",
                "the cloud metadata address fd00:ec2::254/128",
            ),
            (
                "::ffff:169.254.0.0/112",
                "the cloud metadata address ::ffff:169.254.169.254/128",
            ),
            (
                "64:ff9b::a9fe:0/112",
                "the cloud metadata address 64:ff9b::a9fe:a9fe/128",
            ),
            ("127.0.0.0/8", "loopback 127.0.0.0/8"),
            ("169.254.1.0/24", "link-local 169.254.0.0/16"),
            ("10.0.0.0/8", "the sandbox pool 10.231.0.0/16"),
            ("10.231.9.0/30", "the sandbox pool 10.231.0.0/16"),
            ("::ffff:10.231.9.0/126", "reserved ::/8"),
            (
                "172.20.0.0/16",
                "the gateway's listen address 172.20.1.9/32",
            ),
            (
                "192.168.0.0/16",
                &format!("the host's own address {own}/32"),
            ),
            (
                &format!("192.168.{x}.0/24"),
                &format!("the host's own address {own}/32"),
            ),
            ("fe80::/48", "link-local fe80::/10"),
            ("ff02::/48", "multicast ff00::/8"),
        ] {
            let text = refusal(range, &g);
            assert!(
                text.contains(&format!("overlaps {named}")) && text.contains(range),
                "{range}: {text}"
            );
        }
    }

    #[test]
    fn an_approval_must_be_a_private_network_no_wider_than_a_slash_8() {
        let g = guard(vec![]);
        for (range, says) in [
            ("8.0.0.0/7", "wider than a /8"),
            ("fd12::/16", "wider than a /48"),
            ("0.0.0.0/0", "wider than a /8"),
            ("8.8.8.0/24", "not private space"),
            ("168.63.0.0/24", "not private space"),
            ("2606:4700::/48", "not private space"),
            ("192.168.7.1/24", "did you mean 192.168.7.0/24"),
        ] {
            let text = refusal(range, &g);
            assert!(text.contains(says), "{range}: {text}");
        }
        let z = random_byte();
        for ok in [
            format!("192.168.{z}.0/24"),
            "172.24.0.0/13".into(),
            "10.1.0.0/16".into(),
            "100.64.0.0/16".into(),
            "198.18.0.0/15".into(),
            format!("fd12:3456:{z:x}::/48"),
        ] {
            check_approval(ok.parse().unwrap(), &g).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
