//! Streamable HTTP for agents at `/mcp/<endpoint>` (hyper).
//!
//! A request goes path → [`admission`] (Host, Origin, token, then for a `POST` content type,
//! size, JSON, revision) → [`sessions`] (or the stateless revision's headers) → [`dispatch`]
//! (one method each, tool calls tracked in [`inflight`] for cancellation) → a JSON answer, or
//! server-sent events ([`sse`]) for `GET` streams and calls with progress. Every refusal is one
//! [`Refusal`], answered with its own status and audited as `mcp.denied`. Revisions 2025-06-18
//! and 2025-11-25 use `initialize` and `Mcp-Session-Id`; 2026-07-28 is stateless. Connections
//! and TLS are [`serve`]'s.

mod admission;
mod conns;
mod dispatch;
mod inflight;
mod serve;
mod sessions;
mod sse;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use super::approval::ToolGate;
use super::redact::Redactor;
use super::refusal::Refusal;
use super::router::{Router, Sessions};
use super::view::{ViewError, Views};
use crate::audit::{AuditQueue, Outcome, Throttle};
use crate::store::Store;

pub use admission::{SESSION_REVISIONS, STATELESS_REVISION};
pub use serve::{ConnLimits, TlsError, tls_acceptor};

#[derive(Debug, Clone)]
pub struct FrontLimits {
    pub max_body_bytes: usize,
    /// Time for a request's whole body to arrive once its head has: a body that trickles in is
    /// refused (408) when it runs out.
    pub body_read: Duration,
    /// Refusals of requests that are not authenticated are audited at most this often per
    /// second; the rest are counted and summarised (`audit.suppressed`).
    pub unauthenticated_audit_per_second: u32,
    pub connections: ConnLimits,
    pub max_sessions: usize,
    /// A session unused this long is forgotten.
    pub session_idle: Duration,
    pub call_timeout: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            body_read: Duration::from_secs(30),
            unauthenticated_audit_per_second: 20,
            connections: ConnLimits::default(),
            max_sessions: 10_000,
            session_idle: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(120),
        }
    }
}

/// The front: shared by every connection.
pub struct Front<S> {
    store: Arc<dyn Store>,
    /// Request-path events, persisted in batches.
    audit: AuditQueue,
    servers: Arc<S>,
    limits: FrontLimits,
    origins: admission::Origins,
    sessions: sessions::ClientSessions,
    inflight: inflight::Inflight,
    /// Sessions with their `GET` stream open.
    streams: sse::OpenStreams,
    /// What each endpoint offers, cached until the store changes.
    views: Views,
    /// Scans tool arguments and results for the vault's secret values.
    redactor: Option<Arc<Redactor>>,
    gate: Arc<ToolGate>,
    /// Connections open, capped in total and per peer.
    slots: conns::Slots,
    /// The audit budget of refusals anyone can cause without a token.
    unauthenticated: Arc<Throttle>,
}

impl<S> std::fmt::Debug for Front<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("allowed_hosts", &self.origins.hosts)
            .finish_non_exhaustive()
    }
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

fn json_response(status: StatusCode, body: &Value) -> Resp {
    let mut r = Response::new(
        Full::new(Bytes::from(
            serde_json::to_vec(body).expect("a Value serializes"),
        ))
        .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Who is calling, once the token checked out.
#[derive(Debug, Clone)]
struct Caller {
    endpoint: String,
    token_id: String,
}

/// `<endpoint>` of `/mcp/<endpoint>`: one non-empty path segment of at most 64 bytes.
fn endpoint_of(path: &str) -> Option<&str> {
    path.strip_prefix("/mcp/")
        .filter(|e| !e.is_empty() && e.len() <= 64 && !e.contains('/'))
}

impl<S: Sessions + 'static> Front<S> {
    pub fn new(
        store: Arc<dyn Store>,
        audit: impl Into<AuditQueue>,
        servers: Arc<S>,
        limits: FrontLimits,
        allowed_hosts: Vec<String>,
        allowed_origins: Vec<String>,
        redactor: Option<Arc<Redactor>>,
    ) -> Arc<Self> {
        let audit: AuditQueue = audit.into();
        let unauthenticated = audit.throttle("mcp.denied", limits.unauthenticated_audit_per_second);
        let slots = conns::Slots::new(
            limits.connections.max_connections,
            limits.connections.max_connections_per_peer,
        );
        Arc::new(Self {
            gate: Arc::new(ToolGate::new(store.clone(), audit.auditor().clone())),
            views: Views::new(store.clone()),
            store,
            audit,
            servers,
            origins: admission::Origins {
                hosts: allowed_hosts,
                origins: allowed_origins,
            },
            sessions: sessions::ClientSessions::new(limits.max_sessions, limits.session_idle),
            limits,
            inflight: inflight::Inflight::default(),
            streams: sse::OpenStreams::default(),
            redactor,
            slots,
            unauthenticated,
        })
    }

    fn record(&self, action: &'static str, target: &str, outcome: Outcome, detail: &str) {
        self.audit
            .record(action, target, outcome, detail.to_owned());
    }

    /// Waits until every audit event recorded so far is in the store.
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.slots.open()
    }

    /// A connection refused or closed before any request of it was authenticated: audited
    /// within the unauthenticated budget.
    fn refuse_connection(&self, peer: std::net::SocketAddr, reason: &'static str) {
        self.audit.record_throttled(
            &self.unauthenticated,
            reason,
            "connection",
            Outcome::Denied,
            format!("reason=\"{reason}\" peer={}", peer.ip()),
        );
    }

    /// The listener could not accept (descriptors or memory exhausted): audited within the
    /// unauthenticated budget, since a flood is what causes it.
    fn accept_failed(&self, e: &std::io::Error) {
        self.audit.record_throttled(
            &self.unauthenticated,
            "accept failed",
            "listener",
            Outcome::Failed,
            format!("reason=\"accept failed\" error=\"{e}\""),
        );
    }

    /// Answers a refusal with its status and body, and audits it: in full for a caller whose
    /// token checked out, within the unauthenticated budget for anyone else (a flood of bad
    /// tokens costs the trail a few rows a second and one summary, never a row per request).
    fn refuse(&self, endpoint: &str, caller: Option<&Caller>, r: Refusal) -> Resp {
        let who = caller.map(|c| format!("token={}", c.token_id));
        let what = r.detail();
        let detail: Vec<&str> = who
            .iter()
            .map(String::as_str)
            .chain([what.as_str()])
            .filter(|d| !d.is_empty())
            .collect();
        let detail = format!("reason=\"{}\" {}", r.reason(), detail.join(" "));
        match caller {
            Some(_) => self.record("mcp.denied", endpoint, Outcome::Denied, &detail),
            None => self.audit.record_throttled(
                &self.unauthenticated,
                r.reason(),
                endpoint,
                Outcome::Denied,
                detail,
            ),
        }
        let mut resp = json_response(r.status(), &r.body());
        if let Some(w) = r.www_authenticate() {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static(w));
        }
        resp
    }

    /// One HTTP request, from any connection.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(endpoint) = endpoint_of(req.uri().path()).map(str::to_owned) else {
            return self.refuse("", None, Refusal::NoSuchPath);
        };
        let admitted = self
            .origins
            .check(req.headers(), req.uri())
            .and_then(|()| admission::authenticate(&*self.store, &endpoint, req.headers()));
        let caller = match admitted {
            Ok(c) => c,
            Err(r) => return self.refuse(&endpoint, None, r),
        };
        let answered = match *req.method() {
            Method::POST => self.post(&caller, req).await,
            Method::DELETE => self.end_session(&caller, req.headers()),
            Method::GET => self.stream(&caller, req.headers()),
            _ => Err(Refusal::MethodNotAllowed),
        };
        answered.unwrap_or_else(|r| self.refuse(&endpoint, Some(&caller), r))
    }

    /// `POST`: one JSON-RPC message, admitted, then dispatched.
    async fn post<B>(self: &Arc<Self>, caller: &Caller, req: Request<B>) -> Result<Resp, Refusal>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let h = &parts.headers;
        admission::check_post_headers(h, self.limits.max_body_bytes)?;
        let msg = admission::read_message(body, self.limits.max_body_bytes, self.limits.body_read)
            .await?;
        if let admission::Revision::Sessions { named } = admission::revision(h, &msg)? {
            let is_init = matches!(&msg, super::jsonrpc::Message::Request { method, .. }
                if method == "initialize");
            if !is_init {
                self.sessions
                    .touch(caller, admission::session_id(h), named)?;
            }
        }
        Ok(self.dispatch(caller, msg, admission::accepts_sse(h)).await)
    }

    /// `DELETE`: the client ends its session.
    fn end_session(&self, caller: &Caller, h: &http::HeaderMap) -> Result<Resp, Refusal> {
        let id = admission::session_id(h).unwrap_or("");
        self.sessions.end(caller, id)?;
        self.record(
            "mcp.session.end",
            &caller.endpoint,
            Outcome::Ok,
            &format!("token={}", caller.token_id),
        );
        Ok(json_response(StatusCode::OK, &json!({})))
    }

    /// The endpoint's router: its view (servers with their subsets, endpoint ∩ manifest).
    fn router(&self, endpoint: &str) -> Result<Router, ViewError> {
        Ok(Router {
            view: self.views.get(endpoint)?,
            call_timeout: self.limits.call_timeout,
            redactor: self.redactor.clone(),
            gate: Some(self.gate.clone()),
        })
    }
}
