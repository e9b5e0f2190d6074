//! Connections: accepted from a TCP listener within the caps of [`super::conns`], optionally
//! wrapped in TLS (rustls, ALPN h2 or http/1.1) within a deadline, each served by hyper with
//! every request handed to [`Front::handle`]. A connection with no request in flight must
//! complete a request head within [`ConnLimits::header_read`] or it is closed: this one watch
//! covers what hyper leaves open (its protocol detection waits for bytes without a deadline,
//! HTTP/2 has no header timeout at all) besides hyper's own HTTP/1 header timeout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

use super::Front;
use crate::mcp::router::Sessions;

/// Time for a client to finish the TLS handshake, by default.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the front's TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{file}: {reason}")]
    Certificate { file: String, reason: String },
    #[error("{file}: no certificate")]
    NoCertificate { file: String },
    #[error("{file}: no usable private key ({reason})")]
    Key { file: String, reason: String },
    #[error("certificate and key: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS acceptor for the front, from PEM files: a certificate chain and its private key.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certificate {
            file: cert_file.display().to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: cert_file.display().to_string(),
        });
    }
    // The key is read into memory once; rustls keeps it for the process's life.
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        file: key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::egress::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// How the front treats connections before and between requests: deadlines and HTTP/2 limits.
/// hyper enforces none of these by itself (its HTTP/1 header timeout needs a timer, and its
/// protocol detection waits for bytes forever), so every one is set here.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time for a client to finish the TLS handshake.
    pub tls_handshake: Duration,
    /// Time for a request head to arrive completely: from the connection's start (after TLS),
    /// and from the end of the previous request. A connection that sends nothing, or its head a
    /// byte at a time, is closed when it runs out.
    pub header_read: Duration,
    /// After the deadline, how long a closing connection may take to finish what it writes.
    pub close_grace: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_header_list_bytes: u32,
    /// Streams a client may reset before the server accepted them (rapid reset).
    pub h2_max_pending_accept_reset_streams: usize,
    /// Streams the server may have to reset for a client's errors before it closes.
    pub h2_max_local_error_reset_streams: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            tls_handshake: TLS_HANDSHAKE,
            header_read: Duration::from_secs(10),
            close_grace: Duration::from_secs(1),
            max_connections: 1024,
            max_connections_per_peer: 64,
            h2_max_concurrent_streams: 32,
            h2_max_header_list_bytes: 64 << 10,
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 64,
        }
    }
}

/// The hyper connection builder with every limit of `l` in force.
fn http_builder(l: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read)
        .max_buf_size(64 << 10);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.h2_max_concurrent_streams)
        // Bounds a HEADERS + CONTINUATION sequence too: h2 refuses one that outgrows it.
        .max_header_list_size(l.h2_max_header_list_bytes)
        .max_pending_accept_reset_streams(l.h2_max_pending_accept_reset_streams)
        .max_local_error_reset_streams(l.h2_max_local_error_reset_streams)
        .keep_alive_interval(l.header_read)
        .keep_alive_timeout(l.header_read);
    b
}

/// Whether a connection has a request in flight, and since when it has had none.
#[derive(Debug)]
struct Activity {
    state: std::sync::Mutex<(usize, Instant)>,
    changed: Notify,
    /// Whether any request reached the front: an idle keep-alive closing is no refusal.
    served: std::sync::atomic::AtomicBool,
}

/// A request in flight on a connection; dropped with the response's body (so a long stream
/// counts as activity until it ends).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: std::sync::Mutex::new((0, Instant::now())),
            changed: Notify::new(),
            served: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 += 1;
        self.served
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let (in_flight, since) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
            if in_flight > 0 {
                self.changed.notified().await;
                continue;
            }
            let deadline = since + limit;
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {
                    let (n, s) = *self.state.lock().unwrap_or_else(|e| e.into_inner());
                    if n == 0 && s == since {
                        return;
                    }
                }
                () = self.changed.notified() => {}
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        if s.0 == 0 {
            s.1 = Instant::now();
        }
        drop(s);
        self.0.changed.notify_one();
    }
}

/// A response body that holds its request's [`InFlight`] until hyper drops it (a stream is
/// activity until it ends). Size and end are passed on, so a sized answer keeps its
/// `Content-Length` (`map_frame` would lose it and turn every answer chunked).
struct Tracked {
    body: BoxBody<Bytes, Infallible>,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl<S: Sessions + 'static> Front<S> {
    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.serve_with(listener, None).await;
    }

    /// Serves connections from `listener`, over TLS when `tls` is given (rustls, HTTP/2 or
    /// HTTP/1.1 by ALPN).
    pub async fn serve_with(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        let http = Arc::new(http_builder(&self.limits.connections));
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: audited, and a pause instead of a busy
                    // loop.
                    self.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match self.slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(no) => {
                    // Closed at once: a refused connection holds no descriptor.
                    drop(tcp);
                    self.refuse_connection(peer, no.reason());
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let front = self.clone();
            let tls = tls.clone();
            let http = http.clone();
            tokio::spawn(async move {
                front.connection(tcp, peer, tls, &http).await;
                drop(slot);
            });
        }
    }

    /// One connection: TLS within its deadline, then HTTP until the client closes or lets the
    /// header deadline pass with no request in flight.
    async fn connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        http: &auto::Builder<TokioExecutor>,
    ) {
        let limits = self.limits.connections.clone();
        match tls {
            None => self.http(TokioIo::new(tcp), peer, http, &limits).await,
            Some(acceptor) => {
                match tokio::time::timeout(limits.tls_handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => self.http(TokioIo::new(stream), peer, http, &limits).await,
                    Ok(Err(_)) => self.refuse_connection(peer, "TLS handshake failed"),
                    Err(_) => self.refuse_connection(peer, "TLS handshake not finished in time"),
                }
            }
        }
    }

    async fn http<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        http: &auto::Builder<TokioExecutor>,
        limits: &ConnLimits,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let front = self.clone();
        let on_conn = activity.clone();
        let svc = service_fn(move |req| {
            let front = front.clone();
            let in_flight = on_conn.begin();
            async move {
                let resp = front.handle(req).await;
                Ok::<_, Infallible>(resp.map(|body| {
                    Tracked {
                        body,
                        _in_flight: in_flight,
                    }
                    .boxed()
                }))
            }
        });
        let conn = http.serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            () = activity.idle_for(limits.header_read) => {}
        }
        // No request within the deadline (nothing sent, a head trickling in, an idle
        // keep-alive): closed, with a moment to finish a response being written.
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(limits.close_grace, conn).await;
        if !activity.served.load(std::sync::atomic::Ordering::Relaxed) {
            self.refuse_connection(peer, "no request within the header timeout");
        }
    }
}
