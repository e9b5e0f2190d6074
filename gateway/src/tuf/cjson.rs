//! TUF's canonical JSON (the OLPC dialect securesystemslib's `encode_canonical` writes): the
//! bytes every signature covers, and a parser that refuses what would make two readers see two
//! documents.
//!
//! `parse` reads ordinary JSON but refuses a key repeated in any object at any depth (serde_json
//! silently keeps the last one, another parser may keep the first: a signature over one reading
//! would then vouch for the other) and non-integer numbers (canonical JSON has none).
//! `to_canonical` writes sorted keys, no whitespace, strings with only `\` and `"` escaped and
//! everything else as raw UTF-8. Knows nothing of TUF roles or signatures.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why bytes are not JSON this module accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CjsonError {
    #[error("duplicate key {key:?}")]
    DuplicateKey { key: String },
    #[error("{number} is not an integer (canonical JSON has no fractions or exponents)")]
    NotInteger { number: String },
    #[error("not JSON: {detail}")]
    Syntax { detail: String },
}

/// Parses `raw` as JSON, refusing duplicate keys anywhere and non-integer numbers.
pub fn parse(raw: &[u8]) -> Result<Value, CjsonError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let strict = Strict::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(strict.0)
}

/// serde_json folds our custom errors into its own; the marker prefixes bring them back typed.
fn classify(e: serde_json::Error) -> CjsonError {
    let text = e.to_string();
    if let Some(rest) = text.strip_prefix(DUP_MARK) {
        let key = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
        return CjsonError::DuplicateKey {
            key: key.to_string(),
        };
    }
    if let Some(rest) = text.strip_prefix(FLOAT_MARK) {
        let number = rest.rsplit_once(" at line ").map_or(rest, |(k, _)| k);
        return CjsonError::NotInteger {
            number: number.to_string(),
        };
    }
    CjsonError::Syntax { detail: text }
}

const DUP_MARK: &str = "\u{1}dup:";
const FLOAT_MARK: &str = "\u{1}float:";

/// A `Value` built by a visitor that sees every key, so a repeated one is caught where
/// serde_json's own `Value` would overwrite it.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Err(E::custom(format!("{FLOAT_MARK}{v}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUP_MARK}{key}")));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// The canonical bytes of `v`. `parse` never yields a float; one built by hand is written the
/// way serde_json writes it, which no canonical-JSON reader accepts (`is_canonical` says so
/// before anything is signed).
pub fn to_canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(v, &mut out);
    out
}

/// Whether `v` can be written as canonical JSON (no floats anywhere).
pub fn is_canonical(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_i64() || n.is_u64(),
        Value::Array(items) => items.iter().all(is_canonical),
        Value::Object(map) => map.values().all(is_canonical),
        _ => true,
    }
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sorted by code point, as Python sorts str keys: UTF-8 byte order is the same.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write(&map[key], out);
            }
            out.push(b'}');
        }
    }
}

fn write_number(n: &Number, out: &mut Vec<u8>) {
    out.extend_from_slice(n.to_string().as_bytes());
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: &Value) -> String {
        String::from_utf8(to_canonical(v)).unwrap()
    }

    #[test]
    fn keys_are_sorted_by_code_point_and_nothing_is_spaced() {
        let v = json!({"b": 1, "a": [true, null, "x"], "é": {}, "Z": -3});
        assert_eq!(canon(&v), r#"{"Z":-3,"a":[true,null,"x"],"b":1,"é":{}}"#);
    }

    #[test]
    fn only_backslash_and_quote_are_escaped() {
        let v = json!("a\"b\\c\nd\u{1}é😀");
        assert_eq!(canon(&v), "\"a\\\"b\\\\c\nd\u{1}é😀\"");
    }

    #[test]
    fn a_key_repeated_at_the_top_is_refused_by_name() {
        let e = parse(br#"{"a": 1, "b": 2, "a": 3}"#).unwrap_err();
        assert_eq!(e, CjsonError::DuplicateKey { key: "a".into() });
    }

    #[test]
    fn a_key_repeated_deep_inside_an_array_is_refused() {
        let e = parse(br#"{"x": [1, {"y": {"k": 1, "k": 1}}]}"#).unwrap_err();
        assert_eq!(e, CjsonError::DuplicateKey { key: "k".into() });
    }

    #[test]
    fn an_escaped_spelling_of_the_same_key_is_the_same_key() {
        let e = parse(br#"{"ab": 1, "\u0061b": 2}"#).unwrap_err();
        assert_eq!(e, CjsonError::DuplicateKey { key: "ab".into() });
    }

    #[test]
    fn fractions_and_exponents_are_refused() {
        for text in ["1.5", "[1e3]", r#"{"a": -0.0}"#] {
            assert!(matches!(
                parse(text.as_bytes()),
                Err(CjsonError::NotInteger { .. })
            ));
        }
    }

    #[test]
    fn trailing_bytes_and_broken_json_are_syntax_errors() {
        for text in ["{} x", "{", "", "[1,]"] {
            assert!(matches!(
                parse(text.as_bytes()),
                Err(CjsonError::Syntax { .. })
            ));
        }
    }

    #[test]
    fn parsing_then_writing_is_the_identity_on_canonical_bytes() {
        let text = r#"{"a":[1,-2,18446744073709551615],"b":{"":"\"\\"},"c":false}"#;
        assert_eq!(canon(&parse(text.as_bytes()).unwrap()), text);
    }

    #[test]
    fn a_float_built_by_hand_is_not_canonical() {
        assert!(!is_canonical(&json!({"a": [1.5]})));
        assert!(is_canonical(&json!({"a": [1, "1.5"]})));
    }
}
