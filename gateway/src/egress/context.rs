//! What every connection of one sandbox shares (policy, pooled upstream client, connection
//! slots, credentials and the searches built from them, audit), and the plain-text answer to a
//! refused request. Below the listener, interception and forwarding, which all use it; it uses
//! none of them.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use super::EgressShared;
use super::addresses::{ServerAddresses, fold_mapped};
use super::audit::{Deny, EgressAudit};
use super::connector::{Admitted, CheckedConnector};
use super::needles::{HostNeedles, NeedleCache};
use super::policy::{Policy, Target};
use super::scrub::BoxError;
use super::secrets::SecretCache;
use super::slots::{Exhausted, Pool, SandboxSlots, Slot};
use crate::audit::Outcome;
use crate::vault::SecretValue;

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
    /// This sandbox's caps over the gateway-wide bound (shared with the upstream connector).
    pub slots: Arc<SandboxSlots>,
    pub secrets: SecretCache,
    /// The shared audit with this sandbox's own flood limit: one sandbox's storm of refusals
    /// cannot use up the audit budget of another.
    pub audit: EgressAudit,
    /// What this sandbox's traffic is searched for, per host, for the current values.
    pub needles: NeedleCache,
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

    /// Attribution and the connection caps, for a connection just accepted from `peer` on a
    /// listener drawing from `pool`. Never waits: a connection past a cap is refused at once.
    pub fn admit_peer(self: &Arc<Self>, peer: SocketAddr, pool: Pool) -> Result<Conn, Deny> {
        if fold_mapped(peer.ip()) != IpAddr::V4(self.expected_peer) {
            return Err(Deny::Unattributed);
        }
        let slot = self.slots.try_take(pool).map_err(|full| match full {
            Exhausted::Sandbox => Deny::TooManyConnections,
            Exhausted::Gateway => Deny::GatewayBusy,
        })?;
        Ok(Conn {
            _slot: Arc::new(slot),
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

    /// The real value of every credential of the policy, in its order (`None`: the vault
    /// cannot give it).
    pub async fn credential_values(&self) -> Vec<Option<SecretValue>> {
        let mut out = Vec::with_capacity(self.policy.credentials.len());
        for cred in &self.policy.credentials {
            out.push(self.secrets.get(&cred.name).await);
        }
        out
    }

    /// The searches for traffic with `host`, built from `values` once per set of values.
    pub fn needles_for(
        &self,
        host: &str,
        values: &[Option<SecretValue>],
    ) -> Result<Arc<HostNeedles>, Deny> {
        let exposed: Vec<Option<&[u8]>> = values
            .iter()
            .map(|v| v.as_ref().map(SecretValue::expose))
            .collect();
        self.needles
            .get(&self.policy.credentials, &exposed, host)
            .map_err(|e| {
                tracing::error!(sandbox = %self.id, error = %e, "egress: no scrubber");
                Deny::ScrubUnavailable
            })
    }

    pub fn audit_denied(&self, target: &str, deny: &Deny, extra: &str) {
        let flood = matches!(
            deny,
            Deny::Unattributed
                | Deny::TooManyConnections
                | Deny::GatewayBusy
                | Deny::NotTls
                | Deny::HandshakeFailed
        );
        self.audit.denied(&self.id, target, deny, extra, flood);
    }

    pub fn audit_ok(&self, action: &'static str, target: &str, detail: String) {
        self.audit.record(
            action,
            target,
            Outcome::Ok,
            format!("sandbox={} {detail}", self.id),
        );
    }
}

/// An admitted client connection: its slot under the caps and its end of life.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    /// Held, never read: the slot is free again when the last clone is dropped.
    pub _slot: Arc<Slot>,
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
