//! The upstream TCP connector of one sandbox's pooled client. It never resolves: it dials only
//! addresses that were checked when a tunnel to that host was admitted ([`Admitted`]). Each
//! connection it makes holds an upstream slot of the sandbox ([`super::slots`]) for as long as
//! it is open, so a sandbox multiplexing thousands of requests cannot make the daemon open
//! thousands of upstream sockets.

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
    connect_timeout: Duration,
    slots: Arc<SandboxSlots>,
}

impl CheckedConnector {
    pub fn new(admitted: Admitted, connect_timeout: Duration, slots: Arc<SandboxSlots>) -> Self {
        Self {
            admitted,
            connect_timeout,
            slots,
        }
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
        let limit = self.connect_timeout;
        let slots = self.slots.clone();
        Box::pin(async move {
            let addrs = addrs.ok_or_else(|| {
                io::Error::new(io::ErrorKind::PermissionDenied, "destination not admitted")
            })?;
            let slot = slots
                .take_within(Pool::Upstream, limit)
                .await
                .map_err(|full| {
                    let which = match full {
                        Exhausted::Sandbox => "the sandbox's upstream connection cap",
                        Exhausted::Gateway => "the gateway's egress connection bound",
                    };
                    io::Error::new(io::ErrorKind::WouldBlock, format!("{which} is reached"))
                })?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for a in addrs {
                match tokio::time::timeout(limit, TcpStream::connect(a)).await {
                    Ok(Ok(s)) => {
                        s.set_nodelay(true)?;
                        return Ok(TokioIo::new(Counted {
                            tcp: s,
                            _slot: slot,
                        }));
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = io::ErrorKind::TimedOut.into(),
                }
            }
            Err(last)
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
