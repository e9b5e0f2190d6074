//! JSON-RPC 2.0 messages as MCP carries them, kept as `serde_json::Value` so that fields this
//! gateway does not know (newer protocol revisions, vendor extensions) pass through untouched.
//! Written by hand rather than with `rmcp`'s typed model: a relay must not drop or reshape what
//! it does not understand, and it must bound what it accepts before parsing deeper.

use serde_json::{Map, Value, json};

/// Standard and MCP-reserved error codes.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server errors (-32000 to -32099).
    pub const SERVER_UNAVAILABLE: i64 = -32001;
    pub const REFUSED: i64 = -32003;
    pub const REQUEST_CANCELLED: i64 = -32800;
}

/// A request or response id: a string or an integer (null is not an id).
pub type Id = Value;

/// One message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Id,
        method: String,
        msg: Map<String, Value>,
    },
    Notification {
        method: String,
        msg: Map<String, Value>,
    },
    /// A result or an error answering `id`.
    Response { id: Id, msg: Map<String, Value> },
}

/// Why a message is not valid JSON-RPC 2.0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JSON-RPC message: {0}")]
pub struct Invalid(pub &'static str);

fn valid_id(id: &Value) -> bool {
    match id {
        Value::String(s) => s.len() <= 256,
        Value::Number(n) => n.is_i64() || n.is_u64(),
        _ => false,
    }
}

impl Message {
    /// Classifies one JSON value.
    pub fn parse(v: Value) -> Result<Self, Invalid> {
        let Value::Object(msg) = v else {
            return Err(Invalid("not an object"));
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(Invalid("jsonrpc must be \"2.0\""));
        }
        let id = msg.get("id").cloned();
        if let Some(id) = &id
            && !valid_id(id)
        {
            return Err(Invalid("id must be a string or an integer"));
        }
        match (msg.get("method"), id) {
            (Some(Value::String(m)), Some(id)) => {
                if m.len() > 256 {
                    return Err(Invalid("method name too long"));
                }
                if msg
                    .get("params")
                    .is_some_and(|p| !p.is_object() && !p.is_array())
                {
                    return Err(Invalid("params must be an object or an array"));
                }
                Ok(Self::Request {
                    id,
                    method: m.clone(),
                    msg,
                })
            }
            (Some(Value::String(m)), None) => {
                if m.len() > 256 {
                    return Err(Invalid("method name too long"));
                }
                Ok(Self::Notification {
                    method: m.clone(),
                    msg,
                })
            }
            (Some(_), _) => Err(Invalid("method must be a string")),
            (None, Some(id)) => {
                if msg.contains_key("result") == msg.contains_key("error") {
                    return Err(Invalid("a response has exactly one of result and error"));
                }
                Ok(Self::Response { id, msg })
            }
            (None, None) => Err(Invalid("neither a request, a notification nor a response")),
        }
    }

    pub fn into_value(self) -> Value {
        match self {
            Self::Request { msg, .. }
            | Self::Notification { msg, .. }
            | Self::Response { msg, .. } => Value::Object(msg),
        }
    }

    /// `params` of a request or notification (an empty object if absent).
    pub fn params(&self) -> Option<&Map<String, Value>> {
        match self {
            Self::Request { msg, .. } | Self::Notification { msg, .. } => {
                msg.get("params").and_then(Value::as_object)
            }
            Self::Response { .. } => None,
        }
    }
}

/// A success response.
pub fn result(id: &Id, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response (`id` null when the request's id could not be read).
pub fn error(id: Option<&Id>, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null),
           "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_keeps_unknown_fields() {
        let m = Message::parse(
            json!({"jsonrpc":"2.0","id":7,"method":"tools/list","x-vendor":{"a":1}}),
        )
        .unwrap();
        assert!(matches!(&m, Message::Request { method, .. } if method == "tools/list"));
        assert_eq!(m.into_value()["x-vendor"]["a"], 1);
        assert!(matches!(
            Message::parse(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap(),
            Message::Notification { .. }
        ));
        assert!(matches!(
            Message::parse(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap(),
            Message::Response { .. }
        ));
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        for bad in [
            json!([]),
            json!("x"),
            json!({"id":1,"method":"m"}),
            json!({"jsonrpc":"1.0","id":1,"method":"m"}),
            json!({"jsonrpc":"2.0","id":null,"method":"m"}),
            json!({"jsonrpc":"2.0","id":1.5,"method":"m"}),
            json!({"jsonrpc":"2.0","id":{},"method":"m"}),
            json!({"jsonrpc":"2.0","id":1,"method":5}),
            json!({"jsonrpc":"2.0","id":1,"method":"m","params":3}),
            json!({"jsonrpc":"2.0","id":1}),
            json!({"jsonrpc":"2.0","id":1,"result":1,"error":{}}),
            json!({"jsonrpc":"2.0"}),
        ] {
            assert!(Message::parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
