//! The host side of an attack test, in the test's own network namespace: a canary service (TCP
//! listeners on the wildcard addresses `0.0.0.0:port` and `[::]:port`, recording every
//! connection they accept) and a [`HostLink`] carrying the host's "own" addresses. An attack
//! test points the egress proxy at the host's own addresses and asserts the canary saw
//! nothing; [`Canary::probe`] first proves that each address would have reached it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// One accepted connection: the address it was made to and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Visit {
    pub to: SocketAddr,
    pub from: SocketAddr,
}

#[derive(Debug)]
pub struct Canary {
    pub port: u16,
    seen: Arc<Mutex<Vec<Visit>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Canary {
    /// Listens on both wildcards at `port`, in the caller's network namespace. Must be called
    /// within a tokio runtime.
    pub fn bind(port: u16) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tasks = [
            wildcard(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            wildcard(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
        .into_iter()
        .map(|listener| tokio::spawn(record(listener, seen.clone())))
        .collect();
        Self { port, seen, tasks }
    }

    /// Every connection accepted so far.
    pub fn visits(&self) -> Vec<Visit> {
        self.seen.lock().unwrap().clone()
    }

    /// Connects to `ip` at the canary's port from the test's namespace and waits until the
    /// canary recorded it: the address reaches the host. Panics if it does not.
    pub async fn probe(&self, ip: IpAddr) {
        let to = SocketAddr::new(ip, self.port);
        let before = self.visits().len();
        let s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(to))
            .await
            .unwrap_or_else(|_| panic!("canary probe {to}: timeout"))
            .unwrap_or_else(|e| panic!("canary probe {to}: {e}"));
        drop(s);
        for _ in 0..500 {
            if self.visits().len() > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("canary probe {to}: connected, but the canary recorded nothing");
    }

    /// Forgets what was recorded (after the probes).
    pub fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A listener on one wildcard; the IPv6 one is IPv6-only so both can hold the port.
fn wildcard(ip: IpAddr, port: u16) -> tokio::net::TcpListener {
    let addr = SocketAddr::new(ip, port);
    let domain = if ip.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, None).expect("canary socket");
    if ip.is_ipv6() {
        s.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&addr.into())
        .unwrap_or_else(|e| panic!("canary bind {addr}: {e}"));
    s.listen(128).expect("canary listen");
    s.set_nonblocking(true).expect("nonblocking");
    tokio::net::TcpListener::from_std(s.into()).expect("tokio listener")
}

async fn record(listener: tokio::net::TcpListener, seen: Arc<Mutex<Vec<Visit>>>) {
    while let Ok((s, from)) = listener.accept().await {
        let to = s.local_addr().expect("local address");
        seen.lock().unwrap().push(Visit { to, from });
    }
}

/// A link in the caller's namespace: the host's "own" interface. A veth pair with both ends
/// here (kernels without the dummy driver have veth); addresses go on the first end. Removed
/// with the test's namespace.
#[derive(Debug)]
pub struct HostLink(pub String);

impl Default for HostLink {
    fn default() -> Self {
        Self::new()
    }
}

impl HostLink {
    pub fn new() -> Self {
        let name = format!("gd{}", crate::env::random_hex(5));
        let peer = format!("{name}p");
        crate::netns::ip_ok(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        crate::netns::ip_ok(&["link", "set", &name, "up"]);
        crate::netns::ip_ok(&["link", "set", &peer, "up"]);
        Self(name)
    }

    /// Adds `ip` as a host address (/32 or /128; IPv6 without duplicate detection).
    pub fn add(&self, ip: IpAddr) {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let cidr = format!("{ip}/{prefix}");
        if ip.is_ipv6() {
            crate::netns::ip_ok(&["addr", "add", &cidr, "dev", &self.0, "nodad"]);
        } else {
            crate::netns::ip_ok(&["addr", "add", &cidr, "dev", &self.0]);
        }
    }

    pub fn del(&self, ip: IpAddr) {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        crate::netns::ip_ok(&["addr", "del", &format!("{ip}/{prefix}"), "dev", &self.0]);
    }
}
