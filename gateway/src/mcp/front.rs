//! Streamable HTTP for agents at `/mcp/<endpoint>` (hyper).
//!
//! Order of checks on every request, each answered with its own status and audited:
//! path → `Host` (DNS rebinding) → `Origin` → bearer token (hash lookup, endpoint, revoked,
//! expired) → method → content type and size → JSON → batch → protocol revision and session.
//! Only then is a message routed. Revisions 2025-06-18 and 2025-11-25 use `initialize` and
//! `Mcp-Session-Id`; 2026-07-28 is stateless and its `Mcp-Method`/`Mcp-Name` headers must match
//! the body. Responses are plain JSON (the spec lets a server answer a POST that way).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::approval::ToolGate;
use super::jsonrpc::{self, Message, code};
use super::redact::Redactor;
use super::router::{self, CallHooks, Exposed, Handled, Refusal, Router, Sessions, Subset};
use super::stdio::ServerSession;
use crate::audit::{AuditQueue, Outcome};
use crate::manifest::Manifest;
use crate::store::{Store, now_ms};
use crate::tokens as token;

/// Messages queued for one streamed response.
const STREAM_QUEUE: usize = 256;
/// Sessions one token may hold; past it, its least recently used session is ended.
const SESSIONS_PER_TOKEN: usize = 64;

/// A comment on idle `GET` streams this often.
const KEEPALIVE: Duration = Duration::from_secs(25);

/// A `GET` stream's state; when the client goes, the body is dropped and so is the session's
/// mark as having a stream.
struct StreamState {
    changes: tokio::sync::broadcast::Receiver<(String, String)>,
    tick: tokio::time::Interval,
    servers: std::collections::HashSet<String>,
    sid: String,
    streams: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.sid);
    }
}

/// Time for a client to finish the TLS handshake.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// The TLS acceptor for the front, from PEM files: a certificate chain and its private key.
pub fn tls_acceptor(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("{}: {e}", cert_file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert_file.display()));
    }
    // The key is read into memory once; rustls keeps it for the process's life.
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: no usable private key ({e})", key_file.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(crate::egress::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Revisions with `initialize` and sessions, newest last.
pub const SESSION_REVISIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
/// The stateless revision.
pub const STATELESS_REVISION: &str = "2026-07-28";

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

#[derive(Debug, Clone)]
pub struct FrontLimits {
    pub max_body_bytes: usize,
    pub max_sessions: usize,
    /// A session unused this long is forgotten.
    pub session_idle: Duration,
    pub call_timeout: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_sessions: 10_000,
            session_idle: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug)]
struct ClientSession {
    endpoint: String,
    token_id: String,
    revision: &'static str,
    last_used: Instant,
}

/// The front: shared by every connection.
pub struct Front<S> {
    store: Arc<dyn Store>,
    /// Request-path events, persisted in batches.
    audit: AuditQueue,
    servers: Arc<S>,
    limits: FrontLimits,
    /// `Host` values accepted (`host:port`), compared case-insensitively.
    allowed_hosts: Vec<String>,
    /// `Origin` values accepted; a request without `Origin` (not a browser) is fine.
    allowed_origins: Vec<String>,
    sessions: Mutex<HashMap<String, ClientSession>>,
    /// Tool calls in flight, by (token id, the client's request id): where to relay a
    /// `notifications/cancelled` from that client.
    inflight: Arc<Mutex<Inflight>>,
    /// Sessions with their `GET` stream open.
    streams: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Scans tool arguments and results for the vault's secret values.
    redactor: Option<Arc<Redactor>>,
    gate: Arc<ToolGate>,
}

impl<S> std::fmt::Debug for Front<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

type Resp = Response<BoxBody<Bytes, Infallible>>;

/// (token id, the client's request id) → where the call stands.
type Inflight = HashMap<(String, String), Flight>;

/// A client's tool call, for relaying its cancellation.
enum Flight {
    /// Accepted, not sent to the server yet.
    Reserved,
    /// Sent: the server's session and the gateway's id for it.
    Sent(Arc<ServerSession>, u64),
    /// The client cancelled it before it was sent: cancel as soon as it is.
    CancelledEarly,
}

/// A refusal before routing: status, text, and what the audit says.
struct Refused {
    status: StatusCode,
    body: Value,
    reason: &'static str,
    www_authenticate: Option<&'static str>,
}

fn refused(status: StatusCode, reason: &'static str) -> Refused {
    Refused {
        status,
        body: json!({"error": reason}),
        reason,
        www_authenticate: None,
    }
}

fn rpc_refused(status: StatusCode, rpc_code: i64, reason: &'static str) -> Refused {
    Refused {
        status,
        body: jsonrpc::error(None, rpc_code, reason),
        reason,
        www_authenticate: None,
    }
}

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
struct Caller {
    endpoint: String,
    token_id: String,
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
        Arc::new(Self {
            gate: Arc::new(ToolGate::new(store.clone(), audit.auditor().clone())),
            store,
            audit,
            servers,
            limits,
            allowed_hosts,
            allowed_origins,
            sessions: Mutex::new(HashMap::new()),
            inflight: Arc::default(),
            streams: Arc::default(),
            redactor,
        })
    }

    /// Serves connections from `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        self.serve_with(listener, None).await;
    }

    /// Serves connections from `listener`, over TLS when `tls` is given (rustls, HTTP/2 or
    /// HTTP/1.1 by ALPN).
    pub async fn serve_with(self: Arc<Self>, listener: TcpListener, tls: Option<TlsAcceptor>) {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
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

    fn record(&self, action: &'static str, target: &str, outcome: Outcome, detail: &str) {
        self.audit
            .record(action, target, outcome, detail.to_owned());
    }

    /// Waits until every audit event recorded so far is in the store.
    pub async fn flush_audit(&self) {
        self.audit.flush().await;
    }

    fn refuse(&self, endpoint: &str, r: Refused, detail: &str) -> Resp {
        self.record(
            "mcp.denied",
            endpoint,
            Outcome::Denied,
            &format!("reason=\"{}\" {detail}", r.reason),
        );
        let mut resp = json_response(r.status, &r.body);
        if let Some(w) = r.www_authenticate {
            resp.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static(w));
        }
        resp
    }

    pub async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Resp {
        let path = req.uri().path().to_owned();
        let Some(endpoint) = path
            .strip_prefix("/mcp/")
            .filter(|e| !e.is_empty() && e.len() <= 64 && !e.contains('/'))
            .map(str::to_owned)
        else {
            return json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}));
        };
        match self.checked(&endpoint, req).await {
            Ok(resp) => resp,
            Err((r, detail)) => self.refuse(&endpoint, r, &detail),
        }
    }

    async fn checked(
        self: &Arc<Self>,
        endpoint: &str,
        req: Request<Incoming>,
    ) -> Result<Resp, (Refused, String)> {
        let h = req.headers();
        // HTTP/1.1 says Host; HTTP/2 says :authority (the request URI's authority).
        let authority = req.uri().authority().map(|a| a.as_str().to_owned());
        let host = h
            .get(HOST)
            .and_then(|v| v.to_str().ok())
            .or(authority.as_deref())
            .unwrap_or("");
        if !self
            .allowed_hosts
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host))
        {
            return Err((
                refused(StatusCode::FORBIDDEN, "Host not allowed"),
                format!("host=\"{}\"", host.chars().take(100).collect::<String>()),
            ));
        }
        if let Some(origin) = h.get(ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            if !self.allowed_origins.iter().any(|a| a == o) {
                return Err((
                    refused(StatusCode::FORBIDDEN, "Origin not allowed"),
                    format!("origin=\"{}\"", o.chars().take(100).collect::<String>()),
                ));
            }
        }
        let caller = self.authenticate(endpoint, h)?;
        let detail = format!("token={}", caller.token_id);
        match *req.method() {
            Method::POST => self.post(caller, req).await,
            Method::DELETE => {
                let id = req
                    .headers()
                    .get(SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
                match sessions.get(id) {
                    Some(s) if s.token_id == caller.token_id => {
                        sessions.remove(id);
                        drop(sessions);
                        self.record("mcp.session.end", endpoint, Outcome::Ok, &detail);
                        Ok(json_response(StatusCode::OK, &json!({})))
                    }
                    _ => Err((refused(StatusCode::NOT_FOUND, "unknown session"), detail)),
                }
            }
            Method::GET => self.stream(caller, req.headers()).map_err(|r| (r, detail)),
            _ => Err((
                refused(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
                detail,
            )),
        }
    }

    fn authenticate(
        &self,
        endpoint: &str,
        h: &http::HeaderMap,
    ) -> Result<Caller, (Refused, String)> {
        let unauthorized = |reason: &'static str, w: &'static str| Refused {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"error": reason}),
            reason,
            www_authenticate: Some(w),
        };
        let Some(value) = h.get(AUTHORIZATION) else {
            return Err((
                unauthorized("missing bearer token", "Bearer realm=\"gigmcp\""),
                String::new(),
            ));
        };
        let invalid = "Bearer realm=\"gigmcp\", error=\"invalid_token\"";
        let Some(presented) = token::from_header(value.as_bytes()) else {
            return Err((
                unauthorized("malformed bearer token", invalid),
                String::new(),
            ));
        };
        let hash = token::hash(presented);
        let found = self.store.token_by_hash(&hash).map_err(|e| {
            tracing::error!(error = %e, "token lookup failed");
            (
                refused(StatusCode::INTERNAL_SERVER_ERROR, "token lookup failed"),
                String::new(),
            )
        })?;
        let Some(t) = found.filter(|t| token::same(&t.hash, &hash)) else {
            return Err((unauthorized("unknown token", invalid), String::new()));
        };
        let detail = format!("token={}", t.id);
        if t.revoked_ms.is_some() {
            return Err((unauthorized("revoked token", invalid), detail));
        }
        if t.expires_ms.is_some_and(|e| e <= now_ms()) {
            return Err((unauthorized("expired token", invalid), detail));
        }
        // Same answer as an unknown token: a token does not reveal other endpoints.
        if t.endpoint != endpoint {
            return Err((
                unauthorized("token for another endpoint", invalid),
                format!("{detail} token_endpoint={}", t.endpoint),
            ));
        }
        Ok(Caller {
            endpoint: t.endpoint,
            token_id: t.id,
        })
    }

    async fn post(
        self: &Arc<Self>,
        caller: Caller,
        req: Request<Incoming>,
    ) -> Result<Resp, (Refused, String)> {
        let detail = format!("token={}", caller.token_id);
        let (parts, body) = req.into_parts();
        let h = &parts.headers;
        let ctype = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ctype
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        {
            return Err((
                refused(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Content-Type must be application/json",
                ),
                detail,
            ));
        }
        if let Some(accept) = h.get(ACCEPT).and_then(|v| v.to_str().ok())
            && !["application/json", "*/*", "application/*"]
                .iter()
                .any(|t| accept.contains(t))
        {
            return Err((
                refused(
                    StatusCode::NOT_ACCEPTABLE,
                    "Accept must allow application/json",
                ),
                detail,
            ));
        }
        let too_big = rpc_refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            code::INVALID_REQUEST,
            "request body too large",
        );
        let declared = h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limits.max_body_bytes as u64) {
            return Err((too_big, detail));
        }
        let bytes = match Limited::new(body, self.limits.max_body_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => return Err((too_big, detail)),
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            (
                rpc_refused(StatusCode::BAD_REQUEST, code::PARSE_ERROR, "malformed JSON"),
                detail.clone(),
            )
        })?;
        if value.is_array() {
            // Batches were removed from MCP in 2025-06-18; none of our revisions has them.
            return Err((
                rpc_refused(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "JSON-RPC batches are not supported",
                ),
                detail,
            ));
        }
        let msg = Message::parse(value).map_err(|_| {
            (
                rpc_refused(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "invalid JSON-RPC message",
                ),
                detail.clone(),
            )
        })?;
        let version = h.get(VERSION_HEADER).and_then(|v| v.to_str().ok());
        if version == Some(STATELESS_REVISION) {
            check_stateless_headers(h, &msg).map_err(|r| (r, detail.clone()))?;
        } else if let Some(v) = version
            && !SESSION_REVISIONS.contains(&v)
        {
            return Err((
                rpc_refused(
                    StatusCode::BAD_REQUEST,
                    code::INVALID_REQUEST,
                    "unsupported protocol version",
                ),
                format!(
                    "{detail} version=\"{}\"",
                    v.chars().take(40).collect::<String>()
                ),
            ));
        } else {
            let is_init = matches!(&msg, Message::Request { method, .. } if method == "initialize");
            if !is_init {
                self.check_session(&caller, h, version)
                    .map_err(|r| (r, detail.clone()))?;
            }
        }
        let sse = h
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        Ok(self.route(&caller, msg, sse).await)
    }

    fn check_session(
        &self,
        caller: &Caller,
        h: &http::HeaderMap,
        version: Option<&str>,
    ) -> Result<(), Refused> {
        let Some(id) = h.get(SESSION_HEADER).and_then(|v| v.to_str().ok()) else {
            return Err(rpc_refused(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "missing Mcp-Session-Id",
            ));
        };
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get_mut(id) {
            Some(s)
                if s.token_id == caller.token_id
                    && s.endpoint == caller.endpoint
                    && s.last_used.elapsed() < self.limits.session_idle =>
            {
                if version.is_some_and(|v| v != s.revision) {
                    return Err(rpc_refused(
                        StatusCode::BAD_REQUEST,
                        code::INVALID_REQUEST,
                        "MCP-Protocol-Version differs from the session's",
                    ));
                }
                s.last_used = Instant::now();
                Ok(())
            }
            _ => Err(rpc_refused(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "unknown or expired session",
            )),
        }
    }

    fn new_session(&self, caller: &Caller, revision: &'static str) -> Result<String, Refused> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.limits.session_idle;
        if sessions.len() >= self.limits.max_sessions {
            sessions.retain(|_, s| s.last_used.elapsed() < idle);
        }
        // One token cannot take every slot: its least recently used session goes first.
        let mine: Vec<(String, Instant)> = sessions
            .iter()
            .filter(|(_, s)| s.token_id == caller.token_id)
            .map(|(k, s)| (k.clone(), s.last_used))
            .collect();
        if mine.len() >= SESSIONS_PER_TOKEN
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, t)| *t)
        {
            sessions.remove(oldest);
        }
        if sessions.len() >= self.limits.max_sessions {
            return Err(rpc_refused(
                StatusCode::SERVICE_UNAVAILABLE,
                code::INTERNAL_ERROR,
                "too many sessions",
            ));
        }
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|_| {
            rpc_refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                code::INTERNAL_ERROR,
                "no randomness",
            )
        })?;
        let id = hex::encode(raw);
        sessions.insert(
            id.clone(),
            ClientSession {
                endpoint: caller.endpoint.clone(),
                token_id: caller.token_id.clone(),
                revision,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The endpoint's router: its servers with their subsets (endpoint ∩ manifest).
    fn router(&self, endpoint: &str) -> Result<Router, String> {
        let e = self
            .store
            .endpoint_get(endpoint)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no such endpoint".to_owned())?;
        let overrides = self
            .store
            .endpoint_descriptions(endpoint)
            .map_err(|e| e.to_string())?;
        let mut servers = Vec::new();
        for (server, tools) in e.servers {
            let rec = self
                .store
                .server_get(&server)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("server {server} is not installed"))?;
            let manifest = Manifest::from_json(&rec.manifest).map_err(|e| e.to_string())?;
            let descriptions = overrides
                .iter()
                .filter(|(s, ..)| *s == server)
                .map(|(_, t, d)| (t.clone(), d.clone()))
                .collect();
            servers.push(Exposed {
                server,
                endpoint_tools: Subset::for_endpoint(&tools),
                manifest_tools: Subset::for_manifest(&manifest.tools),
                descriptions,
            });
        }
        Ok(Router {
            servers,
            call_timeout: self.limits.call_timeout,
            redactor: self.redactor.clone(),
            gate: Some(self.gate.clone()),
        })
    }

    /// `GET`: the session's stream of server-initiated messages (server-sent events): the list
    /// changes of the endpoint's servers (clients then list again, through the filters), and a
    /// comment every [`KEEPALIVE`] so dead clients are noticed. One per session.
    fn stream(self: &Arc<Self>, caller: Caller, h: &http::HeaderMap) -> Result<Resp, Refused> {
        let accepts = h
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        if !accepts {
            return Err(refused(
                StatusCode::NOT_ACCEPTABLE,
                "Accept must allow text/event-stream",
            ));
        }
        let version = h.get(VERSION_HEADER).and_then(|v| v.to_str().ok());
        if version == Some(STATELESS_REVISION) {
            return Err(refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "no stream without a session",
            ));
        }
        self.check_session(&caller, h, version)?;
        let sid = h
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sid.clone())
        {
            return Err(refused(
                StatusCode::CONFLICT,
                "this session has a stream open already",
            ));
        }
        let servers: std::collections::HashSet<String> = self
            .store
            .endpoint_get(&caller.endpoint)
            .ok()
            .flatten()
            .map(|e| e.servers.into_iter().map(|(s, _)| s).collect())
            .unwrap_or_default();
        let state = StreamState {
            changes: self.servers.list_changes(),
            tick: tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE),
            servers,
            sid,
            streams: self.streams.clone(),
        };
        let events = futures_util::stream::unfold(state, |mut st| async move {
            loop {
                tokio::select! {
                    change = st.changes.recv() => match change {
                        Ok((server, method)) if st.servers.contains(&server) => {
                            let msg = json!({"jsonrpc": "2.0", "method": method});
                            let frame = hyper::body::Frame::data(Bytes::from(format!(
                                "event: message\ndata: {msg}\n\n"
                            )));
                            return Some((Ok::<_, Infallible>(frame), st));
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return None,
                    },
                    _ = st.tick.tick() => {
                        let frame = hyper::body::Frame::data(Bytes::from_static(b": keepalive\n\n"));
                        return Some((Ok(frame), st));
                    }
                }
            }
        });
        let mut r = Response::new(StreamBody::new(events).boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        Ok(r)
    }

    /// Hooks for a tool call: progress relayed to `progress`, and the call registered for
    /// cancellation by this caller.
    /// `None` if this caller already has a call with this id in flight (ids must be unique
    /// among a client's requests in flight, or a cancellation could reach the wrong one).
    fn hooks_for(
        &self,
        caller: &Caller,
        id: &Value,
        progress: Option<tokio::sync::mpsc::Sender<Value>>,
    ) -> Option<CallHooks> {
        let key = (caller.token_id.clone(), id.to_string());
        {
            let mut flights = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if flights.contains_key(&key) {
                return None;
            }
            flights.insert(key.clone(), Flight::Reserved);
        }
        let inflight = self.inflight.clone();
        Some(CallHooks {
            progress,
            started: Some(Box::new(move |session, gid| {
                let mut flights = inflight.lock().unwrap_or_else(|e| e.into_inner());
                if matches!(flights.get(&key), Some(Flight::CancelledEarly)) {
                    flights.remove(&key);
                    tokio::spawn(async move { session.cancel(gid, None).await });
                } else {
                    flights.insert(key, Flight::Sent(session, gid));
                }
            })),
        })
    }

    fn forget_inflight(&self, caller: &Caller, id: &Value) {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(caller.token_id.clone(), id.to_string()));
    }

    /// A tool call answered as a stream of server-sent events: the server's progress
    /// notifications as they come, then the response.
    fn call_streamed(
        self: &Arc<Self>,
        caller: &Caller,
        router: Router,
        id: Value,
        params: Option<serde_json::Map<String, Value>>,
        method: String,
    ) -> Option<Resp> {
        // Bounded: progress beyond it is dropped for a client that does not read.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(STREAM_QUEUE);
        let front = self.clone();
        let caller = Caller {
            endpoint: caller.endpoint.clone(),
            token_id: caller.token_id.clone(),
        };
        let hooks = self.hooks_for(&caller, &id, Some(tx.clone()))?;
        tokio::spawn(async move {
            let handled = router
                .call_tool(&*front.servers, &id, params.as_ref(), hooks)
                .await;
            front.forget_inflight(&caller, &id);
            front.audit_handled(&caller, &method, params.as_ref(), &handled);
            let _ = tx.send(handled.response).await;
        });
        let events = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|m| {
                m.map(|v| {
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(format!(
                        "event: message\ndata: {v}\n\n"
                    ))))
                })
            })
        });
        let mut r = Response::new(StreamBody::new(events).boxed());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        Some(r)
    }

    fn audit_handled(
        &self,
        caller: &Caller,
        method: &str,
        params: Option<&serde_json::Map<String, Value>>,
        handled: &Handled,
    ) {
        let detail = format!("token={}", caller.token_id);
        let tool = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(|n| format!(" tool={}", n.chars().take(128).collect::<String>()))
            .unwrap_or_default();
        let method_shown: String = method.chars().take(64).collect();
        match &handled.refused {
            Some(r) => {
                let reason = match r {
                    Refusal::NotApproved(_) => "tool definition changed since approval",
                    Refusal::NotInSubset(_) => "tool not in the endpoint's subset",
                    Refusal::UnknownTool(_) => "unknown tool",
                };
                self.record(
                    "mcp.denied",
                    &caller.endpoint,
                    Outcome::Denied,
                    &format!("{detail} method={method_shown}{tool} reason=\"{reason}\""),
                )
            }
            None => {
                let outcome = if handled.response.get("error").is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                };
                self.record(
                    "mcp.call",
                    &caller.endpoint,
                    outcome,
                    &format!("{detail} method={method_shown}{tool}"),
                );
            }
        }
        if !handled.redacted.is_empty() {
            self.record(
                "mcp.redacted",
                &caller.endpoint,
                Outcome::Denied,
                &format!(
                    "{detail} method={method_shown}{tool} secrets={}",
                    handled.redacted.join(",")
                ),
            );
        }
    }

    async fn route(self: &Arc<Self>, caller: &Caller, msg: Message, sse: bool) -> Resp {
        let detail = format!("token={}", caller.token_id);
        let (id, method) = match &msg {
            Message::Request { id, method, .. } => (id.clone(), method.clone()),
            Message::Notification { method, .. } if method == "notifications/cancelled" => {
                // Relayed to the server that runs the call, under the gateway's id for it.
                let asked = msg.params().and_then(|p| p.get("requestId")).cloned();
                let reason = msg
                    .params()
                    .and_then(|p| p.get("reason"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(rid) = asked {
                    let key = (caller.token_id.clone(), rid.to_string());
                    let found = {
                        let mut flights = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
                        match flights.remove(&key) {
                            Some(Flight::Sent(session, gid)) => Some((session, gid)),
                            Some(Flight::Reserved | Flight::CancelledEarly) => {
                                flights.insert(key.clone(), Flight::CancelledEarly);
                                None
                            }
                            None => None,
                        }
                    };
                    if let Some((session, gid)) = found {
                        session.cancel(gid, reason.as_deref()).await;
                        self.record(
                            "mcp.cancel",
                            &caller.endpoint,
                            Outcome::Ok,
                            &format!(
                                "{detail} request={}",
                                key.1.chars().take(64).collect::<String>()
                            ),
                        );
                    }
                }
                return accepted();
            }
            // Other notifications and responses from the client: accepted, nothing to answer.
            _ => return accepted(),
        };
        let router = match self.router(&caller.endpoint) {
            Ok(r) => r,
            Err(e) => {
                self.record(
                    "mcp.call",
                    &caller.endpoint,
                    Outcome::Failed,
                    &format!("{detail} error=\"{e}\""),
                );
                return json_response(
                    StatusCode::OK,
                    &jsonrpc::error(Some(&id), code::INTERNAL_ERROR, "endpoint unavailable"),
                );
            }
        };
        let params = msg.params();
        let mut extra_headers = None;
        let handled = match method.as_str() {
            "initialize" => {
                let asked = params
                    .and_then(|p| p.get("protocolVersion"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let revision = SESSION_REVISIONS
                    .iter()
                    .copied()
                    .find(|r| *r == asked)
                    .unwrap_or(SESSION_REVISIONS[SESSION_REVISIONS.len() - 1]);
                match self.new_session(caller, revision) {
                    Ok(sid) => extra_headers = Some(sid),
                    Err(r) => return self.refuse(&caller.endpoint, r, &detail),
                }
                Handled::ok(jsonrpc::result(
                    &id,
                    json!({
                        "protocolVersion": revision,
                        "capabilities": {
                            "tools": {"listChanged": true},
                            "prompts": {"listChanged": true},
                            "resources": {"listChanged": true, "subscribe": false},
                        },
                        "serverInfo": {"name": "gigmcp", "version": env!("CARGO_PKG_VERSION")},
                    }),
                ))
            }
            "ping" => Handled::ok(jsonrpc::result(&id, json!({}))),
            "tools/list" => router.list_tools(&*self.servers, &id, params).await,
            "tools/call" => {
                let wants_progress = params
                    .and_then(|p| p.get("_meta"))
                    .and_then(|m| m.get("progressToken"))
                    .is_some();
                let duplicate = || {
                    json_response(
                        StatusCode::OK,
                        &jsonrpc::error(
                            Some(&id),
                            code::INVALID_REQUEST,
                            "a request with this id is already in flight",
                        ),
                    )
                };
                if sse && wants_progress {
                    return self
                        .call_streamed(caller, router, id.clone(), params.cloned(), method)
                        .unwrap_or_else(duplicate);
                }
                // In its own task: a client that goes away mid-call does not cancel the
                // bookkeeping (audit, in-flight table) of a call the server already runs.
                let Some(hooks) = self.hooks_for(caller, &id, None) else {
                    return duplicate();
                };
                let front = self.clone();
                let who = Caller {
                    endpoint: caller.endpoint.clone(),
                    token_id: caller.token_id.clone(),
                };
                let (call_id, owned) = (id.clone(), params.cloned());
                let task = tokio::spawn(async move {
                    let handled = router
                        .call_tool(&*front.servers, &call_id, owned.as_ref(), hooks)
                        .await;
                    front.forget_inflight(&who, &call_id);
                    front.audit_handled(&who, "tools/call", owned.as_ref(), &handled);
                    handled.response
                });
                let response = task.await.unwrap_or_else(|_| {
                    jsonrpc::error(Some(&id), code::INTERNAL_ERROR, "internal error")
                });
                return json_response(StatusCode::OK, &response);
            }
            "prompts/list" => {
                router
                    .list_passthrough(&*self.servers, &id, params, router::PROMPTS)
                    .await
            }
            "resources/list" => {
                router
                    .list_passthrough(&*self.servers, &id, params, router::RESOURCES)
                    .await
            }
            "resources/templates/list" => {
                router
                    .list_passthrough(&*self.servers, &id, params, router::TEMPLATES)
                    .await
            }
            "prompts/get" | "resources/read" => {
                router
                    .get_passthrough(&*self.servers, &id, params, &method)
                    .await
            }
            _ => Handled::ok(jsonrpc::error(
                Some(&id),
                code::METHOD_NOT_FOUND,
                "method not found",
            )),
        };
        self.audit_handled(caller, &method, params, &handled);
        let mut resp = json_response(StatusCode::OK, &handled.response);
        if let Some(sid) = extra_headers
            && let Ok(v) = HeaderValue::from_str(&sid)
        {
            resp.headers_mut().insert(SESSION_HEADER, v);
        }
        resp
    }
}

fn accepted() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::ACCEPTED;
    r
}

/// 2026-07-28: `Mcp-Method` must equal the body's method, and for calls naming something
/// (`tools/call`, `prompts/get`, `resources/read`) `Mcp-Name` must equal that name, so that
/// anything routing or filtering on headers sees what the server will act on.
fn check_stateless_headers(h: &http::HeaderMap, msg: &Message) -> Result<(), Refused> {
    let (method, params) = match msg {
        Message::Request { method, .. } | Message::Notification { method, .. } => {
            (method.as_str(), msg.params())
        }
        Message::Response { .. } => return Ok(()),
    };
    let mismatch = || {
        rpc_refused(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "Mcp-Method/Mcp-Name headers do not match the body",
        )
    };
    if h.get(METHOD_HEADER).and_then(|v| v.to_str().ok()) != Some(method) {
        return Err(mismatch());
    }
    let named = match method {
        "tools/call" | "prompts/get" => params.and_then(|p| p.get("name")),
        "resources/read" => params.and_then(|p| p.get("uri")),
        _ => None,
    };
    if let Some(name) = named
        && h.get(NAME_HEADER).and_then(|v| v.to_str().ok()) != name.as_str()
    {
        return Err(mismatch());
    }
    Ok(())
}
