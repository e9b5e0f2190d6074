//! What every connection of one sandbox shares (policy, pooled upstream client, connection
//! semaphore, credentials, audit), and the plain-text answer to a refused request. Below the
//! listener, interception and forwarding, which all use it; it uses none of them.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use super::EgressShared;
use super::addresses::{ServerAddresses, fold_mapped};
use super::audit::Deny;
use super::connector::{Admitted, CheckedConnector};
use super::policy::{Policy, Target};
use super::scrub::BoxError;
use super::secrets::SecretCache;
use crate::audit::Outcome;

pub(crate) type UpBody = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type UpClient = Client<HttpsConnector<CheckedConnector>, UpBody>;

/// Everything a connection of this sandbox needs.
#[derive(Debug)]
pub(crate) struct SandboxCtx {
    pub id: String,
    pub expected_peer: Ipv4Addr,
    pub policy: Policy,
    /// The address checks with this server's approvals (the connector holds the same).
    pub addresses: ServerAddresses,
    pub shared: Arc<EgressShared>,
    pub client: UpClient,
    pub admitted: Admitted,
    pub conns: Arc<Semaphore>,
    pub secrets: SecretCache,
    /// Changes when the proxy stops (see [`Self::spawn`]).
    pub stop: watch::Receiver<()>,
}

impl SandboxCtx {
    /// Runs `fut` until it ends or the proxy is stopped.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = fut => {}
            }
        });
    }

    /// Attribution and the connection limit, for a connection just accepted from `peer`.
    pub fn admit_peer(self: &Arc<Self>, peer: SocketAddr) -> Result<Conn, Deny> {
        if fold_mapped(peer.ip()) != IpAddr::V4(self.expected_peer) {
            return Err(Deny::Unattributed);
        }
        let permit = self
            .conns
            .clone()
            .try_acquire_owned()
            .map_err(|_| Deny::TooManyConnections)?;
        Ok(Conn {
            _permit: Arc::new(permit),
            deadline: Instant::now() + self.shared.limits.max_connection_lifetime,
        })
    }

    /// Resolves `t` once (or reuses a fresh resolution) and records the checked addresses for
    /// the connector. A reused resolution is checked again: an address may have become the
    /// host's own since.
    pub async fn admit_target(&self, t: &Target) -> Result<(), Deny> {
        let limits = &self.shared.limits;
        if let Some(addrs) = self.admitted.fresh(t, limits.resolve_ttl) {
            return self.addresses.check_all(&addrs);
        }
        let addrs = self
            .addresses
            .resolve_checked(
                &*self.shared.resolver,
                &t.host,
                t.port,
                limits.resolve_timeout,
            )
            .await?;
        self.admitted.insert(t.clone(), addrs);
        Ok(())
    }

    pub fn audit_denied(&self, target: &str, deny: &Deny, extra: &str) {
        let flood = matches!(
            deny,
            Deny::Unattributed | Deny::TooManyConnections | Deny::NotTls | Deny::HandshakeFailed
        );
        self.shared
            .audit
            .denied(&self.id, target, deny, extra, flood);
    }

    pub fn audit_ok(&self, action: &'static str, target: &str, detail: String) {
        self.shared.audit.record(
            action,
            target,
            Outcome::Ok,
            format!("sandbox={} {detail}", self.id),
        );
    }
}

/// An admitted client connection: its slot under the limit and its end of life.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    /// Held, never read: the slot is free again when the last clone is dropped.
    pub _permit: Arc<OwnedSemaphorePermit>,
    pub deadline: Instant,
}

/// The answer to a refused request: the reason as text, with the refusal's status.
pub(crate) fn refusal(deny: &Deny) -> Response<UpBody> {
    let text = format!("gigmcp egress: {}\n", deny.reason());
    let mut r = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = deny.status();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}
