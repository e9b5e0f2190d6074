//! [`MetadataServer`]: a registry's TUF metadata directory served over loopback HTTP(S), with
//! hooks that make it hostile per file: a body that never ends, one that trickles, a
//! `Content-Length` that lies, a redirect, another status, other bytes. It counts requests
//! and the bytes it managed to send, so a test can say what the client asked for and how
//! much it took in.
//!
//! Written on raw TCP (HTTP/1.1, one request per connection, `Connection: close`) rather than
//! hyper's server, which would refuse to send a body that disagrees with its own header. Runs
//! on its own runtime thread, so synchronous tests (the CLI, `tuf::Fetch`) can use it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(feature = "tuf")]
pub mod world;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How one file is served instead of its bytes on disk.
#[derive(Debug, Clone)]
pub enum Hook {
    /// 200, no `Content-Length`, filler bytes until the client goes away.
    Endless,
    /// The file's bytes, one every interval.
    Trickle(Duration),
    /// `Content-Length: claimed`, then `actual` filler bytes, then close.
    Lie { claimed: u64, actual: u64 },
    /// 302 to this `Location`.
    Redirect(String),
    /// This status, empty body.
    Status(u16),
    /// These bytes instead of the file's (a replayed or altered file).
    Body(Vec<u8>),
}

#[derive(Debug, Default)]
struct State {
    hooks: HashMap<String, Hook>,
    requests: HashMap<String, usize>,
}

/// A metadata directory served on 127.0.0.1. Files are looked up by the request path's last
/// segment, so `/any/prefix/root.json` serves `DIR/root.json`.
#[derive(Debug)]
pub struct MetadataServer {
    pub addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    sent: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetadataServer {
    /// Serves `dir` over plain HTTP.
    pub fn start(dir: &Path) -> Self {
        Self::spawn(dir.to_owned(), None)
    }

    /// Serves `dir` over HTTPS with this certificate and key (PEM), e.g. from
    /// `upstream::TestCa::issue(&["127.0.0.1"], false)`.
    pub fn start_tls(dir: &Path, cert_pem: &str, key_pem: &str) -> Self {
        Self::spawn(dir.to_owned(), Some(acceptor(cert_pem, key_pem)))
    }

    /// The base URL of the directory (`http[s]://127.0.0.1:PORT/metadata/`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/metadata/", self.addr)
    }

    /// Serves `file` by `hook` from now on.
    pub fn set_hook(&self, file: &str, hook: Hook) {
        self.state
            .lock()
            .unwrap()
            .hooks
            .insert(file.to_owned(), hook);
    }

    pub fn clear_hooks(&self) {
        self.state.lock().unwrap().hooks.clear();
    }

    /// Requests for `file` so far.
    pub fn requests(&self, file: &str) -> usize {
        let state = self.state.lock().unwrap();
        state.requests.get(file).copied().unwrap_or(0)
    }

    /// Requests for any file so far.
    pub fn total_requests(&self) -> usize {
        self.state.lock().unwrap().requests.values().sum()
    }

    /// Body bytes written to clients so far (what the kernel accepted, not what was read).
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn spawn(dir: PathBuf, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let ctx = Arc::new(Ctx {
            dir,
            state: state.clone(),
            sent: sent.clone(),
        });
        let https = tls.is_some();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = accept_loop(listener, tls, ctx) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime cancels every connection still streaming.
        });
        Self {
            addr,
            https,
            state,
            sent,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug)]
struct Ctx {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    sent: Arc<AtomicU64>,
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    ctx: Arc<Ctx>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (tls, ctx) = (tls.clone(), ctx.clone());
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        serve(stream, &ctx).await;
                    }
                }
                None => serve(tcp, &ctx).await,
            }
        });
    }
}

/// The path of the request line, once the head has arrived.
async fn read_path<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 << 10 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_owned();
    line.split(' ').nth(1).map(str::to_owned)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, ctx: &Ctx) {
    let Some(path) = read_path(&mut stream).await else {
        return;
    };
    let file = path.rsplit('/').next().unwrap_or("").to_owned();
    let hook = {
        let mut state = ctx.state.lock().unwrap();
        *state.requests.entry(file.clone()).or_default() += 1;
        state.hooks.get(&file).cloned()
    };
    let on_disk = || {
        (!file.is_empty() && !file.starts_with('.'))
            .then(|| std::fs::read(ctx.dir.join(&file)).ok())
            .flatten()
    };
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    let filler = vec![b'x'; 64 << 10];
    match hook {
        None | Some(Hook::Body(_)) => {
            let body = match hook {
                Some(Hook::Body(b)) => Some(b),
                _ => on_disk(),
            };
            match body {
                Some(b) => {
                    let h = head("200 OK", &format!("Content-Length: {}\r\n", b.len()));
                    send(&mut stream, &h, &[&b], ctx).await;
                }
                None => {
                    let h = head("404 Not Found", "Content-Length: 0\r\n");
                    send(&mut stream, &h, &[], ctx).await;
                }
            }
        }
        Some(Hook::Status(code)) => {
            let h = head(&format!("{code} Scripted"), "Content-Length: 0\r\n");
            send(&mut stream, &h, &[], ctx).await;
        }
        Some(Hook::Redirect(location)) => {
            let h = head(
                "302 Found",
                &format!("Location: {location}\r\nContent-Length: 0\r\n"),
            );
            send(&mut stream, &h, &[], ctx).await;
        }
        Some(Hook::Endless) => {
            if stream.write_all(&head("200 OK", "")).await.is_err() {
                return;
            }
            while stream.write_all(&filler).await.is_ok() {
                ctx.sent.fetch_add(filler.len() as u64, Ordering::Relaxed);
            }
        }
        Some(Hook::Lie { claimed, actual }) => {
            let h = head("200 OK", &format!("Content-Length: {claimed}\r\n"));
            let mut chunks = Vec::new();
            let mut left = actual;
            while left > 0 {
                let n = left.min(filler.len() as u64) as usize;
                chunks.push(&filler[..n]);
                left -= n as u64;
            }
            send(&mut stream, &h, &chunks, ctx).await;
        }
        Some(Hook::Trickle(interval)) => {
            let body = on_disk().unwrap_or_default();
            let h = head("200 OK", &format!("Content-Length: {}\r\n", body.len()));
            if stream.write_all(&h).await.is_err() {
                return;
            }
            for byte in body {
                tokio::time::sleep(interval).await;
                if stream.write_all(&[byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                ctx.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let _ = stream.shutdown().await;
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, head: &[u8], body: &[&[u8]], ctx: &Ctx) {
    if stream.write_all(head).await.is_err() {
        return;
    }
    for chunk in body {
        if stream.write_all(chunk).await.is_err() {
            return;
        }
        ctx.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let _ = stream.flush().await;
}

/// A TLS acceptor (ring) serving `cert_pem` with `key_pem` (the registry fixtures use it too).
pub(crate) fn acceptor(cert_pem: &str, key_pem: &str) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}
