//! What a request must show before anything is routed, checked in this order, each failure its
//! own [`Refusal`]: `Host` (DNS rebinding) → `Origin` → bearer token (hash lookup, revoked,
//! expired, endpoint) → for a `POST`: content type, `Accept`, size → JSON → no batch → a
//! JSON-RPC message → a protocol revision we speak (2026-07-28: `Mcp-Method`/`Mcp-Name` equal
//! to the body). Pure functions of the request, but for the token's lookup in the store.

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use http::{HeaderMap, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::Caller;
use crate::mcp::jsonrpc::Message;
use crate::mcp::refusal::Refusal;
use crate::store::{Store, now_ms};
use crate::tokens;

/// Revisions with `initialize` and sessions, newest last.
pub const SESSION_REVISIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
/// The stateless revision.
pub const STATELESS_REVISION: &str = "2026-07-28";

pub(super) const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";

fn text(h: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's `Mcp-Session-Id`.
pub(super) fn session_id(h: &HeaderMap) -> Option<&str> {
    text(h, SESSION_HEADER)
}

/// The request's `MCP-Protocol-Version`.
pub(super) fn version(h: &HeaderMap) -> Option<&str> {
    text(h, VERSION_HEADER)
}

/// Whether the client takes server-sent events.
pub(super) fn accepts_sse(h: &HeaderMap) -> bool {
    text(h, ACCEPT).is_some_and(|a| a.contains("text/event-stream"))
}

/// Who may reach the front: `Host` values (`host:port`, compared case-insensitively) and
/// `Origin` values (a request without `Origin` is not a browser and is fine).
#[derive(Debug)]
pub(super) struct Origins {
    pub(super) hosts: Vec<String>,
    pub(super) origins: Vec<String>,
}

impl Origins {
    pub(super) fn check(&self, h: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
        // HTTP/1.1 says Host; HTTP/2 says :authority (the request URI's authority).
        let host = text(h, HOST)
            .or(uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !self.hosts.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return Err(Refusal::HostNotAllowed { host: host.into() });
        }
        if let Some(origin) = h.get(ORIGIN) {
            let o = origin.to_str().unwrap_or("");
            if !self.origins.iter().any(|a| a == o) {
                return Err(Refusal::OriginNotAllowed { origin: o.into() });
            }
        }
        Ok(())
    }
}

/// The caller behind the bearer token, if the token is live and for `endpoint`.
pub(super) fn authenticate(
    store: &dyn Store,
    endpoint: &str,
    h: &HeaderMap,
) -> Result<Caller, Refusal> {
    let value = h.get(AUTHORIZATION).ok_or(Refusal::MissingToken)?;
    let presented = tokens::from_header(value.as_bytes()).ok_or(Refusal::MalformedToken)?;
    let hash = tokens::hash(presented);
    let found = store.token_by_hash(&hash).map_err(|e| {
        tracing::error!(error = %e, "token lookup failed");
        Refusal::TokenLookupFailed
    })?;
    let t = found
        .filter(|t| tokens::same(&t.hash, &hash))
        .ok_or(Refusal::UnknownToken)?;
    if t.revoked_ms.is_some() {
        return Err(Refusal::RevokedToken { token: t.id });
    }
    if t.expires_ms.is_some_and(|e| e <= now_ms()) {
        return Err(Refusal::ExpiredToken { token: t.id });
    }
    if t.endpoint != endpoint {
        return Err(Refusal::TokenForAnotherEndpoint {
            token: t.id,
            endpoint: t.endpoint,
        });
    }
    Ok(Caller {
        endpoint: t.endpoint,
        token_id: t.id,
    })
}

/// A `POST`'s headers: JSON in, JSON accepted back, a declared length within `max_body`.
pub(super) fn check_post_headers(h: &HeaderMap, max_body: usize) -> Result<(), Refusal> {
    let ctype = text(h, CONTENT_TYPE).unwrap_or("");
    if !ctype
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    {
        return Err(Refusal::NotJson);
    }
    if let Some(accept) = text(h, ACCEPT)
        && !["application/json", "*/*", "application/*"]
            .iter()
            .any(|t| accept.contains(t))
    {
        return Err(Refusal::JsonNotAccepted);
    }
    let declared = text(h, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(())
}

/// The body, read up to `max_body` bytes within `deadline`, as one JSON-RPC message.
pub(super) async fn read_message<B>(
    body: B,
    max_body: usize,
    deadline: std::time::Duration,
) -> Result<Message, Refusal>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // One deadline for the whole body, not per read: a byte a second would satisfy any idle
    // timeout and hold the connection and its buffer for as long as the client likes.
    let bytes = tokio::time::timeout(deadline, Limited::new(body, max_body).collect())
        .await
        .map_err(|_| Refusal::BodyTimeout)?
        .map_err(|_| Refusal::BodyTooLarge)?
        .to_bytes();
    parse_message(&bytes)
}

fn parse_message(bytes: &[u8]) -> Result<Message, Refusal> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| Refusal::MalformedJson)?;
    if value.is_array() {
        // Batches were removed from MCP in 2025-06-18; none of our revisions has them.
        return Err(Refusal::Batch);
    }
    Message::parse(value).map_err(|_| Refusal::InvalidMessage)
}

/// How a message is to be taken, by the revision the request names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Revision<'a> {
    /// 2026-07-28: no session, headers already checked against the body.
    Stateless,
    /// A session revision (or none named): `initialize`, or a request in a session.
    Sessions { named: Option<&'a str> },
}

pub(super) fn revision<'a>(h: &'a HeaderMap, msg: &Message) -> Result<Revision<'a>, Refusal> {
    match version(h) {
        Some(STATELESS_REVISION) => {
            check_stateless_headers(h, msg)?;
            Ok(Revision::Stateless)
        }
        Some(v) if !SESSION_REVISIONS.contains(&v) => {
            Err(Refusal::UnsupportedVersion { version: v.into() })
        }
        named => Ok(Revision::Sessions { named }),
    }
}

/// 2026-07-28: `Mcp-Method` must equal the body's method, and for calls naming something
/// (`tools/call`, `prompts/get`, `resources/read`) `Mcp-Name` must equal that name, so that
/// anything routing or filtering on headers sees what the server will act on.
fn check_stateless_headers(h: &HeaderMap, msg: &Message) -> Result<(), Refusal> {
    let method = match msg {
        Message::Request { method, .. } | Message::Notification { method, .. } => method.as_str(),
        Message::Response { .. } => return Ok(()),
    };
    if text(h, METHOD_HEADER) != Some(method) {
        return Err(Refusal::HeadersMismatch);
    }
    let params = msg.params();
    let named = match method {
        "tools/call" | "prompts/get" => params.and_then(|p| p.get("name")),
        "resources/read" => params.and_then(|p| p.get("uri")),
        _ => None,
    };
    if let Some(name) = named
        && text(h, NAME_HEADER) != name.as_str()
    {
        return Err(Refusal::HeadersMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
