//! Every way the MCP front refuses a request, as one type: each refusal knows its HTTP status,
//! its JSON-RPC error code (when the answer is JSON-RPC), the reason the client and the audit
//! trail see, and the facts worth auditing about it (never a token, never a secret).
//!
//! Refusals before routing are answered with their own status; refusals of a routed call
//! (a tool outside the endpoint's subset, a changed definition) are JSON-RPC errors in a 200,
//! so that clients see them as the call's answer.

use http::StatusCode;
use serde_json::{Value, json};

use super::jsonrpc::{self, code};

/// `WWW-Authenticate` for a request without a token.
const BEARER: &str = "Bearer realm=\"gigmcp\"";
/// `WWW-Authenticate` for a token that is not (or no longer) good.
const INVALID_TOKEN: &str = "Bearer realm=\"gigmcp\", error=\"invalid_token\"";

/// Why the front refused something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` (or `:authority`) not one of the configured names (DNS rebinding).
    HostNotAllowed {
        host: String,
    },
    OriginNotAllowed {
        origin: String,
    },
    MissingToken,
    MalformedToken,
    UnknownToken,
    RevokedToken {
        token: String,
    },
    ExpiredToken {
        token: String,
    },
    /// Answered like an unknown token: a token does not reveal other endpoints.
    TokenForAnotherEndpoint {
        token: String,
        endpoint: String,
    },
    TokenLookupFailed,
    /// A path other than `/mcp/<endpoint>`.
    NoSuchPath,
    MethodNotAllowed,
    NotJson,
    JsonNotAccepted,
    BodyTooLarge,
    /// The body did not arrive within the body deadline.
    BodyTimeout,
    MalformedJson,
    Batch,
    InvalidMessage,
    UnsupportedVersion {
        version: String,
    },
    /// 2026-07-28: `Mcp-Method`/`Mcp-Name` say something else than the body.
    HeadersMismatch,
    MissingSession,
    UnknownSession,
    /// `DELETE` of a session that is not the caller's (or not at all).
    NoSuchSession,
    VersionDiffersFromSession,
    TooManySessions,
    NoRandomness,
    StreamNotAccepted,
    NoStreamWithoutSession,
    StreamOpenAlready,
    /// A routed name that no server of the endpoint has.
    UnknownTool {
        name: String,
    },
    NotInSubset {
        name: String,
    },
    /// Its definition changed since it was approved.
    NotApproved {
        name: String,
    },
}

impl Refusal {
    /// What the client is told and the audit's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::HostNotAllowed { .. } => "Host not allowed",
            Self::OriginNotAllowed { .. } => "Origin not allowed",
            Self::MissingToken => "missing bearer token",
            Self::MalformedToken => "malformed bearer token",
            Self::UnknownToken => "unknown token",
            Self::RevokedToken { .. } => "revoked token",
            Self::ExpiredToken { .. } => "expired token",
            Self::TokenForAnotherEndpoint { .. } => "token for another endpoint",
            Self::TokenLookupFailed => "token lookup failed",
            Self::NoSuchPath => "not found",
            Self::MethodNotAllowed => "method not allowed",
            Self::NotJson => "Content-Type must be application/json",
            Self::JsonNotAccepted => "Accept must allow application/json",
            Self::BodyTooLarge => "request body too large",
            Self::BodyTimeout => "request body not received in time",
            Self::MalformedJson => "malformed JSON",
            Self::Batch => "JSON-RPC batches are not supported",
            Self::InvalidMessage => "invalid JSON-RPC message",
            Self::UnsupportedVersion { .. } => "unsupported protocol version",
            Self::HeadersMismatch => "Mcp-Method/Mcp-Name headers do not match the body",
            Self::MissingSession => "missing Mcp-Session-Id",
            Self::UnknownSession => "unknown or expired session",
            Self::NoSuchSession => "unknown session",
            Self::VersionDiffersFromSession => "MCP-Protocol-Version differs from the session's",
            Self::TooManySessions => "too many sessions",
            Self::NoRandomness => "no randomness",
            Self::StreamNotAccepted => "Accept must allow text/event-stream",
            Self::NoStreamWithoutSession => "no stream without a session",
            Self::StreamOpenAlready => "this session has a stream open already",
            Self::UnknownTool { .. } => "unknown tool",
            Self::NotInSubset { .. } => "tool not in the endpoint's subset",
            Self::NotApproved { .. } => "tool definition changed since approval",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::HostNotAllowed { .. } | Self::OriginNotAllowed { .. } => StatusCode::FORBIDDEN,
            Self::MissingToken
            | Self::MalformedToken
            | Self::UnknownToken
            | Self::RevokedToken { .. }
            | Self::ExpiredToken { .. }
            | Self::TokenForAnotherEndpoint { .. } => StatusCode::UNAUTHORIZED,
            Self::TokenLookupFailed | Self::NoRandomness => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MethodNotAllowed | Self::NoStreamWithoutSession => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::JsonNotAccepted | Self::StreamNotAccepted => StatusCode::NOT_ACCEPTABLE,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MalformedJson
            | Self::Batch
            | Self::InvalidMessage
            | Self::UnsupportedVersion { .. }
            | Self::HeadersMismatch
            | Self::MissingSession
            | Self::VersionDiffersFromSession => StatusCode::BAD_REQUEST,
            Self::UnknownSession | Self::NoSuchSession | Self::NoSuchPath => StatusCode::NOT_FOUND,
            Self::TooManySessions => StatusCode::SERVICE_UNAVAILABLE,
            Self::StreamOpenAlready => StatusCode::CONFLICT,
            Self::UnknownTool { .. } | Self::NotInSubset { .. } | Self::NotApproved { .. } => {
                StatusCode::OK
            }
        }
    }

    /// The JSON-RPC error code, for refusals answered as JSON-RPC errors; the others are
    /// answered `{"error": reason}`.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            Self::MalformedJson => Some(code::PARSE_ERROR),
            Self::BodyTooLarge
            | Self::Batch
            | Self::InvalidMessage
            | Self::UnsupportedVersion { .. }
            | Self::HeadersMismatch
            | Self::MissingSession
            | Self::UnknownSession
            | Self::VersionDiffersFromSession => Some(code::INVALID_REQUEST),
            Self::TooManySessions | Self::NoRandomness => Some(code::INTERNAL_ERROR),
            Self::UnknownTool { .. } | Self::NotInSubset { .. } | Self::NotApproved { .. } => {
                Some(code::INVALID_PARAMS)
            }
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        match self {
            Self::MissingToken => Some(BEARER),
            Self::MalformedToken
            | Self::UnknownToken
            | Self::RevokedToken { .. }
            | Self::ExpiredToken { .. }
            | Self::TokenForAnotherEndpoint { .. } => Some(INVALID_TOKEN),
            _ => None,
        }
    }

    /// What the audit records about this refusal besides its reason (`key=value` text); values
    /// that come from the client are cut short.
    pub fn detail(&self) -> String {
        fn cut(text: &str, n: usize) -> String {
            text.chars().take(n).collect()
        }
        match self {
            Self::HostNotAllowed { host } => format!("host=\"{}\"", cut(host, 100)),
            Self::OriginNotAllowed { origin } => format!("origin=\"{}\"", cut(origin, 100)),
            Self::RevokedToken { token } | Self::ExpiredToken { token } => format!("token={token}"),
            Self::TokenForAnotherEndpoint { token, endpoint } => {
                format!("token={token} token_endpoint={endpoint}")
            }
            Self::UnsupportedVersion { version } => format!("version=\"{}\"", cut(version, 40)),
            _ => String::new(),
        }
    }

    /// The body of a refusal answered before routing.
    pub fn body(&self) -> Value {
        match self.rpc_code() {
            Some(c) => jsonrpc::error(None, c, self.reason()),
            None => json!({"error": self.reason()}),
        }
    }

    /// The JSON-RPC answer to request `id` refused after routing: the message names what
    /// was asked for.
    pub fn answer(&self, id: &Value) -> Value {
        let message = match self {
            Self::UnknownTool { name } => format!("unknown tool: {name}"),
            Self::NotInSubset { name } | Self::NotApproved { name } => {
                format!("tool {name} is not available on this endpoint")
            }
            other => other.reason().to_owned(),
        };
        jsonrpc::error(
            Some(id),
            self.rpc_code().unwrap_or(code::INVALID_REQUEST),
            &message,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_token_is_a_401_with_a_bearer_challenge() {
        let r = Refusal::RevokedToken { token: "t1".into() };
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.www_authenticate(), Some(INVALID_TOKEN));
        assert_eq!(r.body(), json!({"error": "revoked token"}));
    }

    #[test]
    fn a_token_for_another_endpoint_looks_like_an_unknown_one_to_the_client() {
        let other = Refusal::TokenForAnotherEndpoint {
            token: "t1".into(),
            endpoint: "secret-endpoint".into(),
        };
        let unknown = Refusal::UnknownToken;
        assert_eq!(other.status(), unknown.status());
        assert_eq!(other.www_authenticate(), unknown.www_authenticate());
        assert!(!other.body().to_string().contains("secret-endpoint"));
        assert!(other.detail().contains("token_endpoint=secret-endpoint"));
    }

    #[test]
    fn protocol_refusals_are_json_rpc_errors_without_an_id() {
        let body = Refusal::MalformedJson.body();
        assert_eq!(body["error"]["code"], code::PARSE_ERROR);
        assert!(body["id"].is_null());
    }

    #[test]
    fn client_supplied_values_are_cut_short_in_the_audit_detail() {
        let r = Refusal::HostNotAllowed {
            host: "h".repeat(500),
        };
        assert_eq!(r.detail().len(), "host=\"\"".len() + 100);
    }

    #[test]
    fn a_refused_tool_call_is_answered_in_json_rpc_naming_the_tool() {
        let r = Refusal::NotInSubset {
            name: "files__rm".into(),
        };
        assert_eq!(r.status(), StatusCode::OK);
        let answer = r.answer(&json!(7));
        assert_eq!(answer["id"], 7);
        assert_eq!(answer["error"]["code"], code::INVALID_PARAMS);
        assert_eq!(
            answer["error"]["message"],
            "tool files__rm is not available on this endpoint"
        );
    }
}
