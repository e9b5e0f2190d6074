//! Connections: accepted from a TCP listener, optionally wrapped in TLS (rustls, ALPN h2 or
//! http/1.1), each served by hyper with every request handed to [`Front::handle`].

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::Front;
use crate::mcp::router::Sessions;

/// Time for a client to finish the TLS handshake.
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

impl<S: Sessions + 'static> Front<S> {
    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.serve_with(listener, None).await;
    }

    /// Serves connections from `listener`, over TLS when `tls` is given (rustls, HTTP/2 or
    /// HTTP/1.1 by ALPN).
    pub async fn serve_with(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors, most likely: a pause instead of a busy loop.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let front = self.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let front = front.clone();
                    async move { Ok::<_, Infallible>(front.handle(req).await) }
                });
                let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(TLS_HANDSHAKE, acceptor.accept(tcp));
                        if let Ok(Ok(stream)) = handshake.await {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                }
            });
        }
    }
}
