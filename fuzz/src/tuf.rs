//! TUF metadata: canonical JSON (`tuf::cjson`) and the client workflow (`tuf::update`) against
//! hostile bytes.
//!
//! Properties, each against an oracle written here:
//! - `cjson`: a value written as JSON parses back to itself; its canonical bytes equal a plain
//!   recursive writer's (sorted keys, only `"` and `\` escaped); canonicalising is idempotent;
//!   a key repeated in any object is refused by name.
//! - `tuf_metadata`: the files of a real signed repository, mutated byte by byte (flips,
//!   insertions, deletions, a key repeated, a file swapped for another), are either refused or
//!   yield exactly the honest repository's versions and targets: no edit that changes meaning
//!   gets through.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use arbitrary::{Result, Unstructured};
use gateway::tuf::{self, Fetch, FetchError, Limits, Stored, Target, Versions, cjson};
use serde_json::{Map, Value};

use crate::{Target as FuzzTarget, pick};

pub const CJSON: FuzzTarget = FuzzTarget {
    name: "cjson",
    check: check_cjson,
    ci_cases: 20_000,
};

pub const METADATA: FuzzTarget = FuzzTarget {
    name: "tuf_metadata",
    check: check_metadata,
    ci_cases: 2_000,
};

fn string(u: &mut Unstructured<'_>) -> Result<String> {
    let n = u.int_in_range(0..=6)?;
    let mut s = String::new();
    for _ in 0..n {
        s.push(*u.choose(&[
            'a', 'b', 'Z', '"', '\\', '/', 'é', '中', '😀', '\u{7f}', ' ', '0',
        ])?);
    }
    Ok(s)
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let pick = if depth > 4 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => {
            if u.arbitrary()? {
                Value::from(u.arbitrary::<i64>()?)
            } else {
                Value::from(u.arbitrary::<u64>()?)
            }
        }
        3 => Value::String(string(u)?),
        4 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array((0..n).map(|_| value(u, depth + 1)).collect::<Result<_>>()?)
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(string(u)?, value(u, depth + 1)?);
            }
            Value::Object(m)
        }
    })
}

/// The oracle: canonical JSON as its definition reads, written as plainly as possible.
fn oracle(v: &Value) -> String {
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            let parts: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{}", quote(k), oracle(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(oracle).collect::<Vec<_>>().join(",")),
        Value::String(s) => quote(s),
        other => other.to_string(),
    }
}

fn check_cjson(u: &mut Unstructured<'_>) -> Result<()> {
    let v = value(u, 0)?;
    let text = serde_json::to_vec(&v).expect("a Value serializes");
    assert_eq!(cjson::parse(&text).expect("valid JSON parses"), v);
    let canonical = cjson::to_canonical(&v);
    assert_eq!(String::from_utf8(canonical.clone()).unwrap(), oracle(&v));
    // No control characters in our strings, so the canonical form is JSON too.
    assert_eq!(
        cjson::to_canonical(&cjson::parse(&canonical).unwrap()),
        canonical
    );
    // A key repeated in an object wrapped around the value.
    let key = string(u)?;
    let k = serde_json::to_string(&key).unwrap();
    let dup = format!("{{{k}:1,\"x\":{},{k}:2}}", String::from_utf8(text).unwrap());
    if key != "x" {
        assert_eq!(
            cjson::parse(dup.as_bytes()),
            Err(cjson::CjsonError::DuplicateKey { key })
        );
    }
    Ok(())
}

/// A signed repository, its files, and what an honest update yields.
struct Honest {
    files: BTreeMap<String, Vec<u8>>,
    pinned: Stored,
    versions: Versions,
    targets: BTreeMap<String, Target>,
}

fn honest() -> &'static Honest {
    static HONEST: OnceLock<Honest> = OnceLock::new();
    HONEST.get_or_init(|| {
        let now = SystemTime::now();
        let mut reg = testkit::tuf::Registry::new(now);
        for i in 0..3 {
            let custom = serde_json::json!({"gigmcp": {"n": i, "d": "é\"\\"}});
            reg.add(&format!("s{i}/1.0.0"), custom);
        }
        reg.publish(now);
        let up = tuf::update(&reg.pinned(), &mut reg.fetch(), &Limits::default(), now).unwrap();
        Honest {
            files: reg.save().into_iter().collect(),
            pinned: reg.pinned(),
            versions: up.versions,
            targets: up.targets.entries,
        }
    })
}

struct MapFetch(BTreeMap<String, Vec<u8>>);

impl Fetch for MapFetch {
    fn fetch(&mut self, file: &str, max: u64) -> std::result::Result<Vec<u8>, FetchError> {
        let raw = self
            .0
            .get(file)
            .ok_or_else(|| FetchError::NotFound { file: file.into() })?;
        tuf::read_capped(&raw[..], file, max)
    }
}

fn mutate(u: &mut Unstructured<'_>, raw: &mut Vec<u8>) -> Result<()> {
    for _ in 0..u.int_in_range(1..=3)? {
        if raw.is_empty() {
            return Ok(());
        }
        let at = u.int_in_range(0..=raw.len() - 1)?;
        match u.int_in_range(0..=4)? {
            0 => raw[at] ^= 1 << u.int_in_range(0..=7)?,
            1 => raw.insert(at, *u.choose(b" ,:{}[]\"\\0a")?),
            2 => {
                raw.remove(at);
            }
            3 => {
                let junk = pick::bytes(u, 16)?;
                raw.splice(at..at, junk);
            }
            _ => {
                // A key of the document repeated right after the first brace of `signed`.
                let text = String::from_utf8_lossy(raw).into_owned();
                let key = *u.choose(&["version", "expires", "_type", "meta", "targets", "keys"])?;
                let dup = format!("\"signed\":{{\"{key}\":1,");
                *raw = text.replacen("\"signed\":{", &dup, 1).into_bytes();
            }
        }
    }
    Ok(())
}

fn check_metadata(u: &mut Unstructured<'_>) -> Result<()> {
    let honest = honest();
    let mut files = honest.files.clone();
    let names: Vec<String> = files.keys().cloned().collect();
    let name = u.choose(&names)?.clone();
    if u.ratio(1, 8)? {
        let other = u.choose(&names)?.clone();
        let bytes = files[&other].clone();
        files.insert(name.clone(), bytes);
    } else {
        mutate(u, files.get_mut(&name).unwrap())?;
    }
    let mut fetch = MapFetch(files);
    let now = SystemTime::now();
    if let Ok(up) = tuf::update(&honest.pinned, &mut fetch, &Limits::default(), now) {
        assert_eq!(
            up.versions, honest.versions,
            "an edit of {name} changed versions"
        );
        assert_eq!(
            up.targets.entries, honest.targets,
            "an edit of {name} changed targets"
        );
    }
    Ok(())
}
