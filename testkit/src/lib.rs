//! The test kit shared by every crate's integration tests and benchmarks: one root check, a
//! private D-Bus owned by a guard, child processes that cannot outlive the test, a fresh network
//! namespace per privileged test, generated names, the helper harness, rootfs builders and (with
//! the `gateway` feature) the fake HTTPS upstream, the egress proxy fixture, the gateway's state
//! directory and CLI runner, the MCP front on real servers, and a hostile TUF metadata server.
//!
//! Privileged tests share nothing host-wide: each runs in its own network namespace (links,
//! addresses, nftables tables and ports are private to it) and names what is host-wide (named
//! network namespaces under `/run/netns`, cgroup directories, sandbox uids) after its own process
//! and a counter, so two test runs on one machine never meet and need no lock.

pub mod bins;
pub mod bus;
pub mod cgroups;
pub mod init;
pub mod names;
pub mod netns;
pub mod process;
pub mod root;
pub mod rootfs;

#[cfg(feature = "helper")]
pub mod helper;
#[cfg(feature = "helper")]
pub mod transparent;

#[cfg(feature = "gateway")]
pub mod canary;
#[cfg(feature = "gateway")]
pub mod egress;
#[cfg(feature = "gateway")]
pub mod env;
#[cfg(feature = "layers")]
pub mod layers;
#[cfg(feature = "gateway")]
pub mod mcp;
#[cfg(feature = "gateway")]
pub mod metadata;
#[cfg(feature = "gateway")]
pub mod neighbours;
#[cfg(feature = "gateway")]
pub mod oci;
#[cfg(feature = "gateway")]
pub mod reflect;
#[cfg(feature = "registry")]
pub mod registry;
#[cfg(feature = "gateway")]
pub mod sandbox_egress;
#[cfg(feature = "gateway")]
pub mod signed_registry;
#[cfg(feature = "tuf")]
pub mod tuf;
#[cfg(feature = "gateway")]
pub mod upstream;

pub use netns::privileged;
pub use root::require_root;

/// A free TCP port on 127.0.0.1 (bound and released: the caller's server binds it next).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The address this machine resolves `host` to (`getent hosts`, so `/etc/hosts` and the
/// resolver agree with what a build or pull sees): the `--registry-address` opt-in for the
/// package mirror, as CI passes it.
pub fn resolved_address(host: &str) -> std::net::IpAddr {
    let out = std::process::Command::new("getent")
        .args(["hosts", host])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("getent hosts {host}: nothing"))
        .parse()
        .unwrap()
}
