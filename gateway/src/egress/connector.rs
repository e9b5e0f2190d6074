//! The upstream TCP connector of one sandbox's pooled client. It never resolves: it dials only
//! addresses that were checked when a tunnel to that host was admitted ([`Admitted`]), and
//! checks each again right before and right after dialling it: an address can become the
//! host's own between admission and connect (the after-check stops a connect that raced an
//! `ip addr add`; it sends nothing over such a connection).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::addresses::ServerAddresses;
use super::policy::Target;

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
    addresses: ServerAddresses,
    connect_timeout: Duration,
}

impl CheckedConnector {
    pub fn new(admitted: Admitted, addresses: ServerAddresses, connect_timeout: Duration) -> Self {
        Self {
            admitted,
            addresses,
            connect_timeout,
        }
    }
}

fn refused(a: SocketAddr, why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("{a}: {why}"))
}

/// Dials `a` if it is still allowed, and keeps the connection only if it did not end on this
/// host (the address became the host's own meanwhile: the local end then equals the remote).
async fn dial(
    a: SocketAddr,
    addresses: &ServerAddresses,
    limit: Duration,
) -> io::Result<TcpStream> {
    if let Err(f) = addresses.check(a.ip()) {
        return Err(refused(a, f.class.name()));
    }
    let s = tokio::time::timeout(limit, TcpStream::connect(a))
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
    if let Err(f) = addresses.check(a.ip()) {
        return Err(refused(a, f.class.name()));
    }
    if s.local_addr()?.ip() == s.peer_addr()?.ip() {
        return Err(refused(a, "connected to this host"));
    }
    s.set_nodelay(true)?;
    Ok(s)
}

impl tower_service::Service<http::Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
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
        let limit = self.connect_timeout;
        let addresses = self.addresses.clone();
        Box::pin(async move {
            let addrs = addrs.ok_or_else(|| {
                io::Error::new(io::ErrorKind::PermissionDenied, "destination not admitted")
            })?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match dial(a, &addresses, limit).await {
                    Ok(s) => return Ok(TokioIo::new(s)),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }
}
