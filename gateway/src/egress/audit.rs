//! Egress decisions as audit events (DESIGN 3.9): `egress.connect` (a tunnel admitted),
//! `egress.request` (one request forwarded, with status, bytes and credential names),
//! `egress.denied` (any refusal, with its reason). Targets are `host:port`; details are
//! `key=value` text that never carries a secret value or a query value.
//!
//! Entries go through the batching [`AuditQueue`], so the request path never waits on SQLite.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::audit::{AuditQueue, Outcome};

/// Why the proxy refused something. Shown to the client and in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    Unattributed,
    TooManyConnections,
    /// The gateway-wide socket bound is reached (every sandbox together).
    GatewayBusy,
    BadAuthority,
    IpLiteral,
    NotAllowlisted,
    PortNotAllowed,
    PlainHttpNotAllowed,
    /// An answer for the host is an address no connection may reach (which, and why).
    ForbiddenAddress(super::address_class::Forbidden),
    ResolveFailed,
    NotTls,
    NoSni,
    SniMismatch,
    HandshakeFailed,
    ConnectInTunnel,
    NotOriginForm,
    HostMismatch,
    BadHeader,
    NotProxyRequest,
    /// A placeholder was sent to a host its credential is not bound to.
    Exfiltration {
        credential: String,
        place: &'static str,
    },
    /// A credential's real value (in some encoded form) in a request from the sandbox, which
    /// never holds one legitimately: it leaked, and is on its way out.
    ValueExfiltration {
        credential: String,
        place: &'static str,
    },
    CredentialUnavailable {
        credential: String,
    },
    /// TRACE/TRACK: the upstream would echo the request, credential and all.
    TraceMethod,
    EncodedResponse,
    /// A partial response from a host a credential is bound to (its Range was stripped).
    RangedResponse,
    /// The search for real values could not be built: nothing is forwarded unscrubbed.
    ScrubUnavailable,
    UpstreamFailed,
    UpstreamTimeout,
}

impl Deny {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unattributed => "connection not from the sandbox's address",
            Self::TooManyConnections => "too many connections from this sandbox",
            Self::GatewayBusy => "the gateway's egress connection bound is reached",
            Self::BadAuthority => "malformed destination",
            Self::IpLiteral => "IP-literal destination",
            Self::NotAllowlisted => "host not on the egress allowlist",
            Self::PortNotAllowed => "port not allowed for this host",
            Self::PlainHttpNotAllowed => "plain HTTP not allowed for this host",
            Self::ForbiddenAddress(_) => "host resolves to a forbidden address",
            Self::ResolveFailed => "host does not resolve",
            Self::NotTls => "not a TLS connection",
            Self::NoSni => "TLS without SNI",
            Self::SniMismatch => "SNI differs from the requested host",
            Self::HandshakeFailed => "TLS handshake failed",
            Self::ConnectInTunnel => "CONNECT inside a tunnel",
            Self::NotOriginForm => "request target is not origin-form",
            Self::HostMismatch => "Host/:authority differs from the tunnel's host",
            Self::BadHeader => "malformed header",
            Self::NotProxyRequest => "not a proxy request",
            Self::Exfiltration { .. } => {
                "placeholder sent to a host its credential is not bound to"
            }
            Self::ValueExfiltration { .. } => "exfiltration: a real credential value in a request",
            Self::CredentialUnavailable { .. } => "credential unavailable",
            Self::TraceMethod => "TRACE/TRACK not allowed",
            Self::EncodedResponse => "encoded response where a credential must be scrubbed",
            Self::RangedResponse => "partial response where a credential must be scrubbed",
            Self::ScrubUnavailable => "credential scrubber unavailable",
            Self::UpstreamFailed => "upstream connection failed",
            Self::UpstreamTimeout => "upstream timed out",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooManyConnections | Self::GatewayBusy => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadAuthority | Self::BadHeader | Self::NotProxyRequest => StatusCode::BAD_REQUEST,
            Self::TraceMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::ResolveFailed
            | Self::CredentialUnavailable { .. }
            | Self::EncodedResponse
            | Self::RangedResponse
            | Self::ScrubUnavailable
            | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// `reason=…` plus the credential name where there is one.
    pub fn detail(&self) -> String {
        match self {
            Self::Exfiltration { credential, place }
            | Self::ValueExfiltration { credential, place } => format!(
                "reason=\"{}\" credential={credential} place={place}",
                self.reason()
            ),
            Self::CredentialUnavailable { credential } => {
                format!("reason=\"{}\" credential={credential}", self.reason())
            }
            Self::ForbiddenAddress(f) => format!(
                "reason=\"{}\" class={} address={}",
                self.reason(),
                f.class.name(),
                f.address
            ),
            _ => format!("reason=\"{}\"", self.reason()),
        }
    }
}

/// `path?key1=&key2=`: the path with query values removed, bounded and printable.
pub fn redact_path(path_and_query: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut out: String = path.chars().take(256).collect();
    if let Some(q) = query {
        out.push('?');
        let keys: Vec<&str> = q
            .split('&')
            .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
            .collect();
        out.push_str(&keys.join("=&"));
        out.push('=');
    }
    out.chars()
        .take(512)
        .map(|c| if c.is_control() || c == '"' { '?' } else { c })
        .collect()
}

/// Records egress events through the audit queue, with a flood limit.
#[derive(Debug, Clone)]
pub struct EgressAudit {
    queue: AuditQueue,
    limiter: Arc<Mutex<Limiter>>,
}

#[derive(Debug)]
struct Limiter {
    window: Instant,
    count: u32,
    suppressed: u64,
}

impl Limiter {
    fn new() -> Self {
        Self {
            window: Instant::now(),
            count: 0,
            suppressed: 0,
        }
    }
}

/// Refusals that a sandbox can cause at will (floods) are audited at most this often per second
/// per sandbox; the rest are counted and the count is reported with the next one recorded (or
/// when the sandbox's proxy stops, [`EgressAudit::report_suppressed`]).
pub const FLOOD_PER_SECOND: u32 = 50;

impl EgressAudit {
    pub fn new(queue: AuditQueue) -> Self {
        Self {
            queue,
            limiter: Arc::new(Mutex::new(Limiter::new())),
        }
    }

    /// The same queue with a flood limit of its own, for one sandbox: a storm of refusals from
    /// one sandbox must not silence the audit of another's.
    pub fn for_sandbox(&self) -> Self {
        Self::new(self.queue.clone())
    }

    /// Records how many flood refusals were counted but not recorded since the last one that was
    /// (`egress.denied`, detail `suppressed=N`): no refusal goes uncounted when a storm ends.
    pub fn report_suppressed(&self, sandbox: &str) {
        let suppressed = std::mem::take(&mut self.limiter().suppressed);
        if suppressed > 0 {
            self.record(
                "egress.denied",
                "(flood)",
                Outcome::Denied,
                format!("sandbox={sandbox} reason=\"refusals not recorded one by one\" suppressed={suppressed}"),
            );
        }
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn record(&self, action: &'static str, target: &str, outcome: Outcome, detail: String) {
        self.queue.record(action, target, outcome, detail);
    }

    /// A refusal. `flood` marks refusals a sandbox can repeat cheaply (rate-limited).
    pub fn denied(&self, sandbox: &str, target: &str, deny: &Deny, extra: &str, flood: bool) {
        let mut detail = format!("sandbox={sandbox} {}", deny.detail());
        if !extra.is_empty() {
            detail.push(' ');
            detail.push_str(extra);
        }
        if flood {
            let mut l = self.limiter();
            if l.window.elapsed() >= Duration::from_secs(1) {
                l.window = Instant::now();
                l.count = 0;
            }
            l.count += 1;
            if l.count > FLOOD_PER_SECOND {
                l.suppressed += 1;
                return;
            }
            if l.suppressed > 0 {
                detail.push_str(&format!(" suppressed_before={}", l.suppressed));
                l.suppressed = 0;
            }
        }
        self.record("egress.denied", target, Outcome::Denied, detail);
    }

    /// Waits until everything recorded so far is written.
    pub async fn flush(&self) {
        self.queue.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_not_kept() {
        assert_eq!(
            redact_path("/v1/x?key=abc&token=gmcp&flag"),
            "/v1/x?key=&token=&flag="
        );
        assert_eq!(redact_path("/plain"), "/plain");
        assert_eq!(redact_path("/a\nb"), "/a?b");
    }
}
