//! One sandbox's proxy: the handle the daemon holds, which builds the sandbox's context
//! ([`super::context`]) and starts its listeners. Dropping the handle stops every task. The top
//! of the egress stack: nothing below imports it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::addresses::ServerAddresses;
use super::connector::{Admitted, CheckedConnector, Dialer};
use super::context::SandboxCtx;
use super::needles::NeedleCache;
use super::policy::Policy;
use super::secrets::SecretCache;
use super::slots::{Caps, SandboxSlots};
use super::{EgressError, EgressShared, SandboxEgress, dns, listener};

/// A running per-sandbox proxy. Dropping it (or [`EgressProxy::stop`]) ends every listener and
/// connection of the sandbox.
#[derive(Debug)]
pub struct EgressProxy {
    ctx: Arc<SandboxCtx>,
    local_addr: SocketAddr,
    stop: watch::Sender<()>,
}

impl EgressProxy {
    /// Binds `sb.listen` and serves the proxy port.
    pub async fn spawn(sb: SandboxEgress, shared: Arc<EgressShared>) -> Result<Self, EgressError> {
        let listener = TcpListener::bind(sb.listen)
            .await
            .map_err(|e| EgressError::Io(format!("bind {}: {e}", sb.listen)))?;
        Self::start(sb, shared, listener)
    }

    /// Serves the proxy port on a listener bound elsewhere (e.g. handed over by the helper).
    /// `sb.listen` is ignored. Must be called within a tokio runtime.
    pub fn from_listener(
        sb: SandboxEgress,
        shared: Arc<EgressShared>,
        listener: std::net::TcpListener,
    ) -> Result<Self, EgressError> {
        let listener = to_tokio(listener)?;
        Self::start(sb, shared, listener)
    }

    fn start(
        sb: SandboxEgress,
        shared: Arc<EgressShared>,
        listener: TcpListener,
    ) -> Result<Self, EgressError> {
        let policy = Policy::new(&sb.manifest, &sb.placeholders)?;
        let limits = shared.limits.clone();
        let admitted = Admitted::default();
        let caps = Caps {
            clients: limits.max_connections,
            dns: limits.max_dns_connections,
            upstream: limits.max_upstream_connections,
        };
        let slots = Arc::new(SandboxSlots::new(caps, shared.slots.clone()));
        let addresses = ServerAddresses::new(shared.guard.clone(), sb.approved_ranges)
            .with_reserved_opt_in(&sb.reserved_opt_in)
            .map_err(EgressError::OptIn)?;
        let audit = shared.audit.for_sandbox();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*shared.client_tls).clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(CheckedConnector::new(
                admitted.clone(),
                Dialer {
                    addresses: addresses.clone(),
                    connect_timeout: limits.connect_timeout,
                    audit: audit.clone(),
                    sandbox: sb.sandbox_id.clone(),
                },
                slots.clone(),
            ));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(https);
        let (stop, stop_rx) = watch::channel(());
        let local_addr = listener
            .local_addr()
            .map_err(|e| EgressError::Io(e.to_string()))?;
        let ctx = Arc::new(SandboxCtx {
            id: sb.sandbox_id,
            expected_peer: sb.expected_peer,
            policy,
            addresses,
            secrets: SecretCache::new(shared.vault.clone(), limits.secret_ttl),
            audit,
            needles: NeedleCache::default(),
            shared,
            client,
            admitted,
            slots,
            stop: stop_rx,
        });
        ctx.spawn(listener::accept_loop(
            ctx.clone(),
            listener,
            listener::Kind::Proxy,
        ));
        Ok(Self {
            ctx,
            local_addr,
            stop,
        })
    }

    /// The proxy port's address (`HTTPS_PROXY=http://<this>`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn sandbox_id(&self) -> &str {
        &self.ctx.id
    }

    /// Transparent mode: serves one connection accepted on N.1:443 (TLS; host from SNI).
    pub fn serve_transparent(&self, stream: TcpStream, peer: SocketAddr) {
        // One connection handed over: no loop whose pace a refusal budget could set.
        let _served = listener::accepted(&self.ctx, stream, peer, &listener::Kind::Transparent);
    }

    /// Transparent mode: serves every connection on a listener bound to N.1:443.
    pub fn adopt_transparent_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> Result<(), EgressError> {
        let listener = to_tokio(listener)?;
        self.ctx.spawn(listener::accept_loop(
            self.ctx.clone(),
            listener,
            listener::Kind::Transparent,
        ));
        Ok(())
    }

    /// Transparent mode: answers DNS on sockets bound to N.1:53 (UDP and/or TCP). Allowlisted
    /// names resolve to `answer_ip` (N.1); nothing is ever forwarded.
    pub fn adopt_dns(
        &self,
        udp: Option<std::net::UdpSocket>,
        tcp: Option<std::net::TcpListener>,
        answer_ip: Ipv4Addr,
    ) -> Result<(), EgressError> {
        let served = Arc::new(dns::Served {
            names: self.ctx.policy.dns_names(),
            answer_ip,
            expected_peer: IpAddr::V4(self.ctx.expected_peer),
            sandbox_id: self.ctx.id.clone(),
            audit: Some(self.ctx.audit.clone()),
        });
        if let Some(udp) = udp {
            udp.set_nonblocking(true)
                .map_err(|e| EgressError::Io(e.to_string()))?;
            let udp =
                tokio::net::UdpSocket::from_std(udp).map_err(|e| EgressError::Io(e.to_string()))?;
            self.ctx.spawn(dns::serve_udp(udp, served.clone()));
        }
        if let Some(tcp) = tcp {
            let tcp = to_tokio(tcp)?;
            self.ctx.spawn(listener::accept_loop(
                self.ctx.clone(),
                tcp,
                listener::Kind::Dns(served),
            ));
        }
        Ok(())
    }

    /// Stops every listener and connection of this sandbox.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        self.ctx.audit.report_suppressed(&self.ctx.id);
    }
}

fn to_tokio(listener: std::net::TcpListener) -> Result<TcpListener, EgressError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| EgressError::Io(e.to_string()))?;
    TcpListener::from_std(listener).map_err(|e| EgressError::Io(e.to_string()))
}
