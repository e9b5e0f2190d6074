//! TUF's canonical JSON (the OLPC dialect securesystemslib's `encode_canonical` writes): the
//! bytes every signature covers, and a parser that refuses what would make two readers see two
//! documents.
//!
//! `parse` reads ordinary JSON but refuses a key repeated in any object at any depth (serde_json
//! silently keeps the last one, another parser may keep the first: a signature over one reading
//! would then vouch for the other) and non-integer numbers (canonical JSON has none).
//! `to_canonical` writes sorted keys, no whitespace, strings with only `\` and `"` escaped and
//! everything else as raw UTF-8. Knows nothing of TUF roles or signatures.
//!
//! A parsed `Value` costs far more than its text (an object `{"":0}` of 6 bytes becomes a map
//! node of hundreds), so two tools let a caller bound that before building one: `containers`
//! counts objects and arrays without allocating, and `canonical_members` writes the canonical
//! bytes of a document's top-level members by streaming, at a cost near the text's own size.

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

/// How many objects and arrays `raw` opens, strings skipped (an O(n) pass that allocates
/// nothing). Meaningful for valid JSON; for anything else it is a bound `parse` then refuses.
pub fn containers(raw: &[u8]) -> usize {
    let mut count = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// The canonical bytes of each member of the top-level object of `raw`, with `parse`'s
/// refusals (duplicate keys at any depth, non-integer numbers), without building a `Value`:
/// arrays are written as they are read, and each object's members are buffered once in one
/// scratch buffer and sorted by range, so the cost stays within a few times the text.
pub fn canonical_members(raw: &[u8]) -> Result<Vec<(String, Vec<u8>)>, CjsonError> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    let members = Members::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(members.0)
}

/// The top-level object's members, each value written canonically into its own buffer.
struct Members(Vec<(String, Vec<u8>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MembersVisitor).map(Members)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(String, Vec<u8>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("{DUP_MARK}{key}")));
            }
            let mut buf = Vec::new();
            map.next_value_seed(Canon(&mut buf))?;
            out.push((key, buf));
        }
        Ok(out)
    }
}

/// Writes the canonical form of one value onto the end of its buffer.
struct Canon<'a>(&'a mut Vec<u8>);

impl<'de> de::DeserializeSeed<'de> for Canon<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.extend_from_slice(v.to_string().as_bytes());
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        Err(E::custom(format!("{FLOAT_MARK}{v}")))
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_string(v, self.0);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.push(b'[');
        let mut first = true;
        loop {
            let mark = self.0.len();
            if !first {
                self.0.push(b',');
            }
            if seq.next_element_seed(Canon(self.0))?.is_none() {
                self.0.truncate(mark);
                break;
            }
            first = false;
        }
        self.0.push(b']');
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Keys (decoded, raw UTF-8) and values (canonical) side by side in one buffer; the
        // entries are ranges into it, sorted by key bytes (Python's code-point order).
        let mut scratch = Vec::new();
        let mut entries: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let k = scratch.len()..scratch.len() + key.len();
            scratch.extend_from_slice(key.as_bytes());
            let start = scratch.len();
            map.next_value_seed(Canon(&mut scratch))?;
            entries.push((k, start..scratch.len()));
        }
        entries.sort_unstable_by(|a, b| scratch[a.0.clone()].cmp(&scratch[b.0.clone()]));
        if let Some(w) = entries
            .windows(2)
            .find(|w| scratch[w[0].0.clone()] == scratch[w[1].0.clone()])
        {
            let key = String::from_utf8_lossy(&scratch[w[0].0.clone()]);
            return Err(de::Error::custom(format!("{DUP_MARK}{key}")));
        }
        self.0.push(b'{');
        for (i, (k, v)) in entries.into_iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            let key = std::str::from_utf8(&scratch[k]).expect("a key was a str");
            write_string(key, self.0);
            self.0.push(b':');
            self.0.extend_from_slice(&scratch[v]);
        }
        self.0.push(b'}');
        Ok(())
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

    #[test]
    fn containers_are_counted_outside_strings_only() {
        assert_eq!(containers(br#"{"a":[{},[]],"b":"{[\\\"["}"#), 4);
        assert_eq!(containers(b"1"), 0);
    }

    #[test]
    fn streamed_members_are_the_canonical_bytes_of_the_parsed_value() {
        let text = r#"{"signed": {"z": [1, {"b": null, "a": "\u00e9\"q"}], "é": -2, "A": true},
            "signatures": [], "x": {"": {}}}"#;
        let v = parse(text.as_bytes()).unwrap();
        let members = canonical_members(text.as_bytes()).unwrap();
        assert_eq!(members.len(), 3);
        for (key, bytes) in members {
            assert_eq!(bytes, to_canonical(&v[&key]), "{key}");
        }
    }

    #[test]
    fn streamed_members_keep_the_refusals_of_parse() {
        let dup = canonical_members(br#"{"s": [{"k": 1, "j": 0, "k": 2}]}"#).unwrap_err();
        assert_eq!(dup, CjsonError::DuplicateKey { key: "k".into() });
        let top = canonical_members(br#"{"s": 1, "s": 1}"#).unwrap_err();
        assert_eq!(top, CjsonError::DuplicateKey { key: "s".into() });
        assert!(matches!(
            canonical_members(br#"{"s": [1.5]}"#),
            Err(CjsonError::NotInteger { .. })
        ));
        assert!(matches!(
            canonical_members(b"[1]"),
            Err(CjsonError::Syntax { .. })
        ));
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        for open in ["[", "{\"a\":"] {
            let text = open.repeat(200_000);
            assert!(matches!(
                parse(text.as_bytes()),
                Err(CjsonError::Syntax { .. })
            ));
        }
        let ok = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(ok.as_bytes()).is_ok());
    }

    #[test]
    fn big_integers_and_negative_zero_are_refused_not_rounded() {
        for text in ["18446744073709551616", "-9223372036854775809", "-0", "1E2"] {
            assert!(parse(text.as_bytes()).is_err(), "{text}");
        }
        assert!(parse(b"-9223372036854775808").is_ok());
    }
}
