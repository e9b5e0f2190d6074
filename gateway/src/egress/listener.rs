//! Accepting client connections on every listener of a sandbox (the proxy port, transparent
//! 443, DNS over TCP): attribution (the peer must be the sandbox's own address), the
//! per-sandbox and gateway-wide connection caps ([`super::slots`]), and the outer HTTP/1.1 proxy
//! protocol (CONNECT, or an absolute-form request to a host allowed over plain HTTP).
//!
//! A connection past a cap is closed at once, never held: holding it (to read a request and
//! answer it) would keep the very fd the cap is there to bound, and a storm of them would still
//! use up the daemon's fds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use super::audit::Deny;
use super::context::{Conn, SandboxCtx, UpBody, refusal};
use super::dns::{self, Served};
use super::idle::IdleIo;
use super::policy::parse_authority;
use super::slots::Pool;
use super::{forward, intercept};

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// The proxy port: HTTP CONNECT (and plain HTTP for allowed hosts).
    Proxy,
    /// N.1:443 in transparent mode: TLS, host from SNI.
    Transparent,
    /// N.1:53 over TCP in transparent mode.
    Dns(Arc<Served>),
}

impl Kind {
    /// The pool of the sandbox's slots this listener's connections take from: the proxy port
    /// and 443 share one (both carry upstream traffic), DNS has its own small one.
    fn pool(&self) -> Pool {
        match self {
            Self::Proxy | Self::Transparent => Pool::Clients,
            Self::Dns(_) => Pool::Dns,
        }
    }

    fn audit_name(&self) -> &'static str {
        match self {
            Self::Proxy => "listener=proxy",
            Self::Transparent => "listener=tls",
            Self::Dns(_) => "listener=dns",
        }
    }
}

/// Refusals one listener makes per [`TICK`] before it pauses for the rest of the tick (5000 a
/// second: far more than a client that backs off ever causes).
const REFUSALS_PER_TICK: u32 = 500;
const TICK: Duration = Duration::from_millis(100);

/// How much refusing one listener may do: a sandbox reconnecting in a loop must not turn the
/// daemon's CPU into its own. Past the budget the loop stops accepting until the tick ends:
/// the storm waits in that listener's own kernel queue (no fd of the daemon, and no other
/// sandbox's listener), and what overflows it the kernel drops.
struct RefusalBudget {
    tick: tokio::time::Instant,
    used: u32,
}

impl RefusalBudget {
    fn new() -> Self {
        Self {
            tick: tokio::time::Instant::now(),
            used: 0,
        }
    }

    /// Counts one refusal; waits for the next tick once this one's budget is spent.
    async fn spend(&mut self) {
        if self.tick.elapsed() >= TICK {
            *self = Self::new();
        }
        self.used += 1;
        if self.used >= REFUSALS_PER_TICK {
            tokio::time::sleep_until(self.tick + TICK).await;
            *self = Self::new();
        }
    }
}

pub(crate) async fn accept_loop(ctx: Arc<SandboxCtx>, listener: TcpListener, kind: Kind) {
    let mut budget = RefusalBudget::new();
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                if !accepted(&ctx, tcp, peer, &kind) {
                    budget.spend().await;
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning. The gateway-wide bound keeps
                // egress below the fd limit, so this means something else holds the fds.
                tracing::warn!(sandbox = %ctx.id, error = %e, "egress: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection just accepted on one of the sandbox's listeners: served, or (false) refused.
pub(crate) fn accepted(
    ctx: &Arc<SandboxCtx>,
    tcp: TcpStream,
    peer: SocketAddr,
    kind: &Kind,
) -> bool {
    let conn = match ctx.admit_peer(peer, kind.pool()) {
        Ok(c) => c,
        Err(deny) => {
            let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
            ctx.audit_denied(&local, &deny, &format!("peer={peer} {}", kind.audit_name()));
            refuse_at_once(tcp, kind, &deny);
            return false;
        }
    };
    let _ = tcp.set_nodelay(true);
    if let Kind::Dns(served) = kind {
        let served = served.clone();
        ctx.spawn(async move {
            dns::serve_tcp_connection(tcp, served).await;
            drop(conn);
        });
        return true;
    }
    let task_ctx = ctx.clone();
    let io = IdleIo::new(tcp, ctx.shared.limits.idle_timeout);
    let deadline = conn.deadline;
    let kind = kind.clone();
    ctx.spawn(async move {
        let serve = async {
            match kind {
                Kind::Proxy => serve_proxy(task_ctx, io, conn).await,
                Kind::Transparent => {
                    intercept::tunnel(task_ctx, io, intercept::Expect::FromSni, conn).await
                }
                Kind::Dns(_) => unreachable!("served above"),
            }
        };
        let _ = tokio::time::timeout_at(deadline, serve).await;
    });
    true
}

/// Closes a refused connection now, without waiting for anything. On the proxy port the
/// client gets a 503 first if the socket takes it without blocking (it always does on a fresh
/// connection): what it already sent is read and discarded, so the close is a FIN after the
/// answer rather than a reset that could destroy it. TLS and DNS clients just see the close.
fn refuse_at_once(tcp: TcpStream, kind: &Kind, deny: &Deny) {
    if matches!(kind, Kind::Proxy) && deny.status() == StatusCode::SERVICE_UNAVAILABLE {
        let mut buf = [0u8; 4096];
        while matches!(tcp.try_read(&mut buf), Ok(n) if n > 0) {}
        let msg = format!("gigmcp egress: {}\n", deny.reason());
        let head = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        );
        let _ = tcp.try_write(head.as_bytes());
    }
    if let Ok(std) = tcp.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
}

async fn serve_proxy(ctx: Arc<SandboxCtx>, io: IdleIo<TcpStream>, conn: Conn) {
    let limits = &ctx.shared.limits;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let svc_ctx = ctx.clone();
    let svc = service_fn(move |req| outer(svc_ctx.clone(), conn.clone(), req));
    let _ = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades()
        .await;
}

async fn outer(
    ctx: Arc<SandboxCtx>,
    conn: Conn,
    mut req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    if req.method() != Method::CONNECT {
        return Ok(forward::plain(ctx, req).await);
    }
    let shown = req
        .uri()
        .authority()
        .map(|a| a.as_str().chars().take(300).collect::<String>())
        .unwrap_or_default();
    let target = match req
        .uri()
        .authority()
        .ok_or(Deny::BadAuthority)
        .and_then(|a| parse_authority(a.as_str(), 443))
    {
        Ok(t) => t,
        Err(deny) => {
            ctx.audit_denied(&shown, &deny, "kind=connect");
            return Ok(refusal(&deny));
        }
    };
    let admitted = match ctx.policy.check_tunnel(&target) {
        Ok(()) => ctx.admit_target(&target).await,
        Err(d) => Err(d),
    };
    if let Err(deny) = admitted {
        ctx.audit_denied(&target.to_string(), &deny, "kind=connect");
        return Ok(refusal(&deny));
    }
    ctx.audit_ok("egress.connect", &target.to_string(), "kind=connect".into());
    let upgrade = hyper::upgrade::on(&mut req);
    let task_ctx = ctx.clone();
    ctx.spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let deadline = conn.deadline;
        let tunnel = intercept::tunnel(
            task_ctx,
            TokioIo::new(upgraded),
            intercept::Expect::Host(target),
            conn,
        );
        let _ = tokio::time::timeout_at(deadline, tunnel).await;
    });
    let mut ok = Response::new(UpBody::default());
    *ok.status_mut() = StatusCode::OK;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_its_refusal_budget_a_listener_waits_for_the_next_tick() {
        let mut budget = RefusalBudget::new();
        let start = tokio::time::Instant::now();
        for _ in 1..REFUSALS_PER_TICK {
            budget.spend().await;
        }
        assert!(start.elapsed() < TICK / 2, "within the budget: no wait");
        budget.spend().await;
        assert!(
            start.elapsed() >= TICK,
            "the last one of the tick waits it out"
        );
        budget.spend().await;
        assert!(
            start.elapsed() < TICK * 3 / 2,
            "and the next tick starts afresh"
        );
    }
}
