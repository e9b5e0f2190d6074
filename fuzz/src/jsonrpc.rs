//! JSON-RPC 2.0 classification (`mcp::jsonrpc::Message::parse`) against arbitrary JSON.
//!
//! Properties: a value is classified exactly as an independent reading of JSON-RPC 2.0 (as
//! this gateway bounds it) says, and refused otherwise; a classified message gives back the
//! very value it was made from (unknown fields kept) and survives a trip through its text;
//! raw bytes never panic the parse.

use arbitrary::{Result, Unstructured};
use gateway::mcp::jsonrpc::Message;
use serde_json::{Map, Value, json};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "jsonrpc",
    check,
    ci_cases: 20_000,
};

const KEYS: &[&str] = &[
    "jsonrpc", "id", "method", "params", "result", "error", "x-vendor", "_meta",
];

fn scalar(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(u.arbitrary::<u64>()?),
        // Floats that print and read back exactly (serde_json's default float parsing may be off
        // by one ulp for others, which is not what this target is about).
        4 => json!(f64::from(u.int_in_range(-1000..=1000i32)?) / 8.0),
        5 => json!("2.0"),
        6 => json!("a".repeat(u.int_in_range(250..=260)?)),
        7 => json!(*u.choose(&["tools/call", "ping", "notifications/initialized", ""])?),
        _ => {
            let n = u.int_in_range(0..=8)?;
            Value::String(pick::token(u, b"ab/\"\\\n\x7f", n)?)
        }
    })
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    if depth == 0 || u.ratio(2, 3)? {
        return scalar(u);
    }
    Ok(if u.arbitrary()? {
        let n = u.int_in_range(0..=3)?;
        Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
    } else {
        Value::Object(object(u, depth - 1)?)
    })
}

fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for _ in 0..u.int_in_range(0..=4)? {
        m.insert((*u.choose(KEYS)?).to_owned(), value(u, depth)?);
    }
    Ok(m)
}

/// A message-shaped object most of the time: `jsonrpc` and some of the members that decide
/// what it is, with right or wrong types.
fn message(u: &mut Unstructured<'_>) -> Result<Value> {
    if u.ratio(1, 8)? {
        return value(u, 3);
    }
    let mut m = object(u, 2)?;
    if u.ratio(7, 8)? {
        m.insert("jsonrpc".into(), json!("2.0"));
    }
    for key in ["id", "method", "params", "result", "error"] {
        if u.ratio(1, 2)? {
            m.insert(key.into(), value(u, 2)?);
        }
    }
    Ok(Value::Object(m))
}

#[derive(Debug, PartialEq)]
enum Kind {
    Request,
    Notification,
    Response,
}

/// JSON-RPC 2.0 as the gateway bounds it (ids: strings up to 256 bytes or integers; method
/// names up to 256 bytes), stated independently of `jsonrpc.rs`.
fn oracle(v: &Value) -> Option<Kind> {
    let m = v.as_object()?;
    if m.get("jsonrpc")? != "2.0" {
        return None;
    }
    let id_ok = |id: &Value| match id {
        Value::String(s) => s.len() <= 256,
        Value::Number(n) => n.as_i64().is_some() || n.as_u64().is_some(),
        _ => false,
    };
    let id = m.get("id");
    if id.is_some_and(|id| !id_ok(id)) {
        return None;
    }
    match m.get("method") {
        Some(Value::String(name)) if name.len() <= 256 => {
            if id.is_none() {
                return Some(Kind::Notification);
            }
            match m.get("params") {
                None | Some(Value::Object(_) | Value::Array(_)) => Some(Kind::Request),
                Some(_) => None,
            }
        }
        Some(_) => None,
        None => {
            let one_outcome = m.contains_key("result") != m.contains_key("error");
            (id.is_some() && one_outcome).then_some(Kind::Response)
        }
    }
}

fn kind(m: &Message) -> Kind {
    match m {
        Message::Request { .. } => Kind::Request,
        Message::Notification { .. } => Kind::Notification,
        Message::Response { .. } => Kind::Response,
    }
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    if u.ratio(1, 8)? {
        let raw = pick::bytes(u, 256)?;
        if let Ok(v) = serde_json::from_slice::<Value>(&raw) {
            let _ = Message::parse(v);
        }
        return Ok(());
    }
    let v = message(u)?;
    let parsed = Message::parse(v.clone());
    match (&parsed, oracle(&v)) {
        (Ok(m), Some(k)) => {
            assert_eq!(kind(m), k, "{v} classified as {m:?}");
            let text = serde_json::to_string(&v).expect("a Value serializes");
            let again: Value = serde_json::from_str(&text).expect("its own text parses");
            assert_eq!(Message::parse(again).as_ref(), Ok(m), "{text} after a trip");
            assert_eq!(
                m.clone().into_value(),
                v,
                "the message gives back its value"
            );
        }
        (Err(e), None) => assert!(!e.to_string().is_empty()),
        (got, want) => panic!("{v}: parse gave {got:?}, JSON-RPC says {want:?}"),
    }
    Ok(())
}
