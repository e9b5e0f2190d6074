//! TLS interception. The ClientHello is read first (`LazyConfigAcceptor`) and its SNI checked,
//! against the CONNECT host or, in transparent mode, against the allowlist, before any
//! certificate is minted or a ServerHello sent. Then HTTP/1.1 or HTTP/2 (by ALPN) is served,
//! every request going through [`super::forward::tunneled`].

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;

use super::audit::Deny;
use super::context::{Conn, SandboxCtx};
use super::forward;
use super::policy::{Target, parse_authority};

#[derive(Debug)]
pub(crate) enum Expect {
    /// The tunnel was opened with CONNECT to this host: the SNI must name it.
    Host(Target),
    /// Transparent mode: the SNI names the host, which must be allowlisted on port 443.
    FromSni,
}

pub(crate) async fn tunnel<IO>(ctx: Arc<SandboxCtx>, io: IO, expect: Expect, conn: Conn)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &ctx.shared.limits;
    let deadline = tokio::time::Instant::now() + limits.handshake_timeout;
    let kind = match &expect {
        Expect::Host(_) => "kind=connect",
        Expect::FromSni => "kind=transparent",
    };
    let shown = match &expect {
        Expect::Host(t) => t.to_string(),
        Expect::FromSni => "(sni)".to_owned(),
    };
    let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout_at(deadline, acceptor).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return ctx.audit_denied(&shown, &Deny::NotTls, kind),
        Err(_) => return ctx.audit_denied(&shown, &Deny::HandshakeFailed, kind),
    };
    let sni = start
        .client_hello()
        .server_name()
        .map(|s| s.trim_end_matches('.').to_ascii_lowercase());
    let Some(sni) = sni else {
        return ctx.audit_denied(&shown, &Deny::NoSni, kind);
    };
    let target = match expect {
        Expect::Host(t) => {
            if sni != t.host {
                let extra = format!("{kind} sni={}", sni.chars().take(253).collect::<String>());
                return ctx.audit_denied(&t.to_string(), &Deny::SniMismatch, &extra);
            }
            t
        }
        Expect::FromSni => {
            let shown: String = sni.chars().take(253).collect();
            let checked = parse_authority(&sni, 443).and_then(|t| {
                ctx.policy.check_tunnel(&t)?;
                Ok(t)
            });
            let t = match checked {
                Ok(t) => t,
                Err(deny) => return ctx.audit_denied(&shown, &deny, kind),
            };
            if let Err(deny) = ctx.admit_target(&t).await {
                return ctx.audit_denied(&t.to_string(), &deny, kind);
            }
            ctx.audit_ok("egress.connect", &t.to_string(), kind.into());
            t
        }
    };
    let accept = start.into_stream(ctx.shared.server_tls.clone());
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(tls)) => tls,
        _ => return ctx.audit_denied(&target.to_string(), &Deny::HandshakeFailed, kind),
    };
    serve_tunneled(ctx.clone(), target, tls).await;
    drop(conn);
}

/// The requests inside an intercepted connection to `target`, over HTTP/2 or HTTP/1.1 as
/// negotiated, each forwarded on its own.
async fn serve_tunneled<IO>(
    ctx: Arc<SandboxCtx>,
    target: Target,
    tls: tokio_rustls::server::TlsStream<IO>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &ctx.shared.limits;
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| forward::tunneled(svc_ctx.clone(), target.clone(), req));
    let io = TokioIo::new(tls);
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(100);
        let _ = builder.serve_connection(io, svc).await;
    } else {
        // `max_header_size` is checked on complete heads too (`max_buf_size` only bounds
        // partial ones), so an oversized head always gets 431.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_header_size(limits.max_header_bytes)
            .keep_alive(true);
        let _ = builder.serve_connection(io, svc).await;
    }
}
