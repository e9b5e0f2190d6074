//! The upstream TCP connector of one sandbox's pooled client. It never resolves: it dials only
//! addresses that were checked when a tunnel to that host was admitted ([`Admitted`]), and
//! checks each again right before and right after dialling it: an address can become the
//! host's own between admission and connect (the after-check stops a connect that raced an
//! `ip addr add`; it sends nothing over such a connection).

//! Each connection it makes holds an upstream slot of the sandbox ([`super::slots`]) for as
//! long as it is open, so a sandbox multiplexing thousands of requests cannot make the daemon
//! open thousands of upstream sockets.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::address_class::{AddressClass, Forbidden};
use super::addresses::ServerAddresses;
use super::audit::{Deny, EgressAudit};
use super::policy::Target;
use super::slots::{Exhausted, Pool, SandboxSlots, Slot};

type Table = HashMap<Target, (Vec<SocketAddr>, Instant)>;

/// Checked addresses per destination, with when they were checked.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    table: Arc<Mutex<Table>>,
}

impl Admitted {
    pub fn insert(&self, target: Target, addrs: Vec<SocketAddr>) {
        self.lock().insert(target, (addrs, Instant::now()));
    }

    /// The checked addresses, if checked less than `ttl` ago.
    pub fn fresh(&self, target: &Target, ttl: Duration) -> Option<Vec<SocketAddr>> {
        self.lock()
            .get(target)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(a, _)| a.clone())
    }

    fn get(&self, target: &Target) -> Option<Vec<SocketAddr>> {
        self.lock().get(target).map(|(a, _)| a.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `tower_service::Service<Uri>` for hyper-util's legacy client.
#[derive(Debug, Clone)]
pub struct CheckedConnector {
    admitted: Admitted,
    dialer: Dialer,
    slots: Arc<SandboxSlots>,
}

/// What a dial needs besides the address: the checks, the limit, and where a refusal goes.
#[derive(Debug, Clone)]
pub struct Dialer {
    pub addresses: ServerAddresses,
    pub connect_timeout: Duration,
    pub audit: EgressAudit,
    pub sandbox: String,
}

impl CheckedConnector {
    pub fn new(admitted: Admitted, dialer: Dialer, slots: Arc<SandboxSlots>) -> Self {
        Self {
            admitted,
            dialer,
            slots,
        }
    }
}

#[derive(Debug)]
enum DialError {
    Forbidden(Forbidden),
    Io(io::Error),
}

impl From<io::Error> for DialError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Dials `a` if it is still allowed, and keeps the connection only if it did not end on this
/// host (the address became the host's own meanwhile: the local end then equals the remote).
async fn dial(
    a: SocketAddr,
    addresses: &ServerAddresses,
    limit: Duration,
) -> Result<TcpStream, DialError> {
    addresses.check(a.ip()).map_err(DialError::Forbidden)?;
    let s = tokio::time::timeout(limit, TcpStream::connect(a))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    addresses.check(a.ip()).map_err(DialError::Forbidden)?;
    if s.local_addr()?.ip() == s.peer_addr()?.ip() {
        return Err(DialError::Forbidden(Forbidden {
            address: a.ip(),
            class: AddressClass::HostOwn,
        }));
    }
    s.set_nodelay(true)?;
    Ok(s)
}

impl Dialer {
    /// The first checked address that connects; each refusal audited with its class.
    async fn first(&self, target: &Target, addrs: Vec<SocketAddr>) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match dial(a, &self.addresses, self.connect_timeout).await {
                Ok(s) => return Ok(s),
                Err(DialError::Io(e)) => last = e,
                Err(DialError::Forbidden(f)) => {
                    let deny = Deny::ForbiddenAddress(f);
                    let target = target.to_string();
                    self.audit
                        .denied(&self.sandbox, &target, &deny, "kind=dial", false);
                    last = io::Error::new(io::ErrorKind::PermissionDenied, deny.detail());
                }
            }
        }
        Err(last)
    }
}

impl tower_service::Service<http::Uri> for CheckedConnector {
    type Response = TokioIo<Counted>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let default_port = if uri.scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let target = Target {
            host: uri.host().unwrap_or_default().to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(default_port),
        };
        let addrs = self.admitted.get(&target);
        let dialer = self.dialer.clone();
        let slots = self.slots.clone();
        Box::pin(async move {
            let addrs = addrs.ok_or_else(|| {
                io::Error::new(io::ErrorKind::PermissionDenied, "destination not admitted")
            })?;
            let slot = slots
                .take_within(Pool::Upstream, dialer.connect_timeout)
                .await
                .map_err(|full| {
                    let which = match full {
                        Exhausted::Sandbox => "the sandbox's upstream connection cap",
                        Exhausted::Gateway => "the gateway's egress connection bound",
                    };
                    io::Error::new(io::ErrorKind::WouldBlock, format!("{which} is reached"))
                })?;
            let tcp = dialer.first(&target, addrs).await?;
            Ok(TokioIo::new(Counted { tcp, _slot: slot }))
        })
    }
}

/// An upstream connection and the slot it holds until it is closed.
#[derive(Debug)]
pub struct Counted {
    tcp: TcpStream,
    _slot: Slot,
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.tcp.connected()
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::addresses::AddressGuard;
    use crate::egress::addresses::tests::Fixed;
    use std::sync::Arc;

    fn guard(own: Vec<ipnet::IpNet>) -> ServerAddresses {
        let guard = AddressGuard::new("10.231.0.0/16".parse().unwrap(), vec![], Fixed(own));
        ServerAddresses::new(Arc::new(guard), vec!["0.0.0.0/0".parse().unwrap()])
    }

    /// In a namespace of its own, where a random public address sits on `lo` with a listener:
    /// the dial refuses it before connecting when the host's set knows it, and after
    /// connecting (nothing sent) when the set had not caught up yet.
    #[test]
    fn an_address_that_became_the_hosts_is_not_dialled() {
        testkit::privileged(
            "an_address_that_became_the_hosts_is_not_dialled",
            1,
            || async {
                let mut b = [0u8; 3];
                getrandom::fill(&mut b).unwrap();
                let own: std::net::IpAddr =
                    std::net::Ipv4Addr::new(45, b[0], b[1], 1 + b[2] % 250).into();
                testkit::netns::ip_ok(&["addr", "add", &format!("{own}/32"), "dev", "lo"]);
                let listener = tokio::net::TcpListener::bind((own, 0)).await.unwrap();
                let to = listener.local_addr().unwrap();
                let limit = Duration::from_secs(5);

                let known = guard(vec![ipnet::IpNet::from(own)]);
                match dial(to, &known, limit).await {
                    Err(DialError::Forbidden(f)) => assert_eq!(f.class, AddressClass::HostOwn),
                    other => panic!("{other:?}"),
                }
                let none =
                    tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
                assert!(none.is_err(), "the refused address was connected to");

                let not_yet_known = guard(vec![]);
                match dial(to, &not_yet_known, limit).await {
                    Err(DialError::Forbidden(f)) => assert_eq!(f.class, AddressClass::HostOwn),
                    other => panic!("{other:?}"),
                }
            },
        );
    }
}
