//! The four roles' files read into typed values, strictly: `{"signed": {...}, "signatures":
//! [...]}` with `_type`, `spec_version` (1.x), `version` (≥ 1) and `expires` (RFC 3339, "Z"),
//! and each role's own fields.
//!
//! A document keeps the canonical bytes of `signed` exactly as parsed, unknown fields included,
//! since that is what its signatures cover: nothing here re-serialises a typed value to check a
//! signature. Knows nothing of which keys are trusted or of other roles' files (`verify.rs`,
//! `update.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::cjson::{self, CjsonError};
use super::keys::PublicKey;
use super::{Role, Target, TufError};

/// One signature entry.
#[derive(Debug, Clone)]
pub(super) struct Sig {
    pub key_id: String,
    pub sig: String,
}

/// What every role has.
#[derive(Debug, Clone)]
pub(super) struct Common {
    pub version: u64,
    pub expires: SystemTime,
}

/// A parsed file: its raw bytes, the canonical form of `signed`, its signatures and the typed
/// role.
#[derive(Debug, Clone)]
pub(super) struct Doc<T> {
    pub raw: Vec<u8>,
    pub canonical: Vec<u8>,
    pub signatures: Vec<Sig>,
    pub common: Common,
    pub body: T,
}

#[derive(Debug, Clone)]
pub(super) struct RoleKeys {
    pub key_ids: Vec<String>,
    pub threshold: u32,
}

#[derive(Debug, Clone)]
pub(super) struct RootBody {
    pub consistent_snapshot: bool,
    pub keys: BTreeMap<String, PublicKey>,
    pub roles: BTreeMap<Role, RoleKeys>,
}

/// A `meta` entry: the version another file must have, and optionally its length and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MetaFile {
    pub version: u64,
    pub length: Option<u64>,
    pub hashes: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub(super) struct TimestampBody {
    pub snapshot: MetaFile,
}

#[derive(Debug, Clone)]
pub(super) struct SnapshotBody {
    pub targets: MetaFile,
}

#[derive(Debug, Clone)]
pub(super) struct TargetsBody {
    pub entries: BTreeMap<String, Target>,
}

/// A role's typed body, read from `signed`.
pub(super) trait Body: Sized {
    const ROLE: Role;
    fn read(signed: &Map<String, Value>) -> Result<Self, String>;
}

/// Parses one file of `T`'s role, refusing files over `max`.
pub(super) fn parse<T: Body>(raw: &[u8], max: u64) -> Result<Doc<T>, TufError> {
    let role = T::ROLE;
    if raw.len() as u64 > max {
        return Err(TufError::TooLarge { role, max });
    }
    let bad = |detail: String| TufError::Parse { role, detail };
    within_budget(role, raw, max)?;
    let v = cjson::parse(raw).map_err(|e| cjson_refusal(role, e))?;
    let signed = v
        .get("signed")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"signed\" object".into()))?;
    let found = signed.get("_type").and_then(Value::as_str).unwrap_or("");
    if found != role.as_str() {
        return Err(TufError::WrongType {
            role,
            expected: role.as_str(),
            found: found.to_string(),
        });
    }
    let spec = str_field(signed, "spec_version").map_err(bad)?;
    // As python-tuf reads it: MAJOR.MINOR or MAJOR.MINOR.PATCH, digits only.
    let parts: Vec<&str> = spec.split('.').collect();
    let numeric = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(bad(format!(
            "spec_version {spec:?} is not MAJOR.MINOR[.PATCH]"
        )));
    }
    if parts[0] != "1" {
        return Err(TufError::Unsupported {
            role,
            detail: format!("spec_version {spec:?} (only 1.x is supported)"),
        });
    }
    let common = Common {
        version: positive(signed, "version").map_err(bad)?,
        expires: parse_expires(str_field(signed, "expires").map_err(bad)?).map_err(bad)?,
    };
    let signatures = read_signatures(v.get("signatures")).map_err(bad)?;
    let body = T::read(signed).map_err(|detail| match detail.strip_prefix(UNSUPPORTED) {
        Some(rest) => TufError::Unsupported {
            role,
            detail: rest.to_string(),
        },
        None => bad(detail),
    })?;
    Ok(Doc {
        raw: raw.to_vec(),
        canonical: cjson::to_canonical(&v["signed"]),
        signatures,
        common,
        body,
    })
}

/// The most objects and arrays a file capped at `max` bytes may hold before a `Value` is
/// built of it: one per 256 bytes of the cap, at least 4,096. A `Value` costs hundreds of bytes
/// per container whatever its text (`{"":0}` is 6 bytes), so tiny objects would amplify a file
/// about 40 times; this bounds them at about twice the cap (32 MiB of targets: 131,072).
/// Real files stay far below: the targets of 1,000 servers are about 1.43 MB holding about
/// 15 k objects (one per 95 bytes), a root or timestamp holds a few dozen; the floor keeps
/// the small caps (timestamp 16 KiB) from refusing an honest file with many keys.
pub(super) fn container_budget(max: u64) -> usize {
    usize::try_from(max / 256).unwrap_or(usize::MAX).max(4_096)
}

/// Refuses a file holding more containers than `container_budget(max)`, without allocating.
fn within_budget(role: Role, raw: &[u8], max: u64) -> Result<(), TufError> {
    let containers = cjson::containers(raw);
    let budget = container_budget(max);
    if containers > budget {
        return Err(TufError::TooManyContainers {
            role,
            containers,
            budget,
        });
    }
    Ok(())
}

fn cjson_refusal(role: Role, e: CjsonError) -> TufError {
    match e {
        CjsonError::DuplicateKey { key } => TufError::DuplicateKey { role, key },
        other => TufError::Parse {
            role,
            detail: other.to_string(),
        },
    }
}

/// The canonical bytes of `signed` and the signatures of a file of `role`, read by streaming
/// (`cjson::canonical_members`), so a file over the container budget can still have its
/// signatures checked, and a forged one be refused as forged, at a cost near its size.
pub(super) fn envelope(role: Role, raw: &[u8], max: u64) -> Result<(Vec<u8>, Vec<Sig>), TufError> {
    let bad = |detail: &str| TufError::Parse {
        role,
        detail: detail.to_string(),
    };
    if raw.len() as u64 > max {
        return Err(TufError::TooLarge { role, max });
    }
    let members = cjson::canonical_members(raw).map_err(|e| cjson_refusal(role, e))?;
    let member = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let canonical = member("signed")
        .filter(|c| c.first() == Some(&b'{'))
        .ok_or_else(|| bad("no \"signed\" object"))?;
    let list = member("signatures").ok_or_else(|| bad("no \"signatures\" list"))?;
    within_budget(role, list, max)?;
    let list = cjson::parse(list).map_err(|e| cjson_refusal(role, e))?;
    let signatures = read_signatures(Some(&list)).map_err(|d| bad(&d))?;
    Ok((canonical.clone(), signatures))
}

/// Marks a body error as "valid TUF this client does not do" rather than malformed.
const UNSUPPORTED: &str = "unsupported: ";

fn read_signatures(list: Option<&Value>) -> Result<Vec<Sig>, String> {
    let list = list
        .and_then(Value::as_array)
        .ok_or("no \"signatures\" list")?;
    list.iter()
        .map(|s| {
            let s = s.as_object().ok_or("a signature is not an object")?;
            Ok(Sig {
                key_id: str_field(s, "keyid")?.to_string(),
                sig: str_field(s, "sig")?.to_string(),
            })
        })
        .collect()
}

fn str_field<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    obj.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} is missing or not a string"))
}

fn object<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a Map<String, Value>, String> {
    obj.get(name)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{name} is missing or not an object"))
}

fn uint(obj: &Map<String, Value>, name: &str) -> Result<u64, String> {
    obj.get(name)
        .and_then(Value::as_u64)
        .ok_or_else(|| format!("{name} is missing or not a non-negative integer"))
}

fn positive(obj: &Map<String, Value>, name: &str) -> Result<u64, String> {
    match uint(obj, name)? {
        0 => Err(format!("{name} must be at least 1")),
        n => Ok(n),
    }
}

impl Body for RootBody {
    const ROLE: Role = Role::Root;

    fn read(signed: &Map<String, Value>) -> Result<Self, String> {
        let consistent_snapshot = match signed.get("consistent_snapshot") {
            None => false,
            Some(v) => v.as_bool().ok_or("consistent_snapshot is not a boolean")?,
        };
        let mut keys = BTreeMap::new();
        for (id, key) in object(signed, "keys")? {
            let key =
                PublicKey::from_json(key).map_err(|e| format!("{UNSUPPORTED}key {id}: {e}"))?;
            keys.insert(id.clone(), key);
        }
        let roles_obj = object(signed, "roles")?;
        let names: BTreeSet<&str> = roles_obj.keys().map(String::as_str).collect();
        let wanted: BTreeSet<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        if names != wanted {
            return Err(format!(
                "roles must be exactly root, timestamp, snapshot and targets, not {names:?}"
            ));
        }
        let mut roles = BTreeMap::new();
        for role in Role::ALL {
            let r = roles_obj[role.as_str()]
                .as_object()
                .ok_or_else(|| format!("roles.{role} is not an object"))?;
            roles.insert(role, read_role_keys(role, r, &keys)?);
        }
        Ok(RootBody {
            consistent_snapshot,
            keys,
            roles,
        })
    }
}

fn read_role_keys(
    role: Role,
    r: &Map<String, Value>,
    keys: &BTreeMap<String, PublicKey>,
) -> Result<RoleKeys, String> {
    let threshold = u32::try_from(positive(r, "threshold")?)
        .map_err(|_| format!("roles.{role}.threshold is too large"))?;
    let list = r
        .get("keyids")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("roles.{role}.keyids is not a list"))?;
    let mut key_ids = Vec::new();
    for id in list {
        let id = id.as_str().ok_or("a key id is not a string")?;
        if !keys.contains_key(id) {
            return Err(format!(
                "roles.{role} names key {id}, which keys does not hold"
            ));
        }
        if key_ids.iter().any(|k| k == id) {
            return Err(format!("roles.{role} lists key {id} twice"));
        }
        key_ids.push(id.to_string());
    }
    Ok(RoleKeys { key_ids, threshold })
}

fn read_meta_file(v: &Value, name: &str) -> Result<MetaFile, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("meta {name} is not an object"))?;
    let length = match obj.get("length") {
        None => None,
        Some(_) => Some(uint(obj, "length")?),
    };
    let hashes = match obj.get("hashes") {
        None => BTreeMap::new(),
        Some(_) => read_hashes(object(obj, "hashes")?)?,
    };
    Ok(MetaFile {
        version: positive(obj, "version")?,
        length,
        hashes,
    })
}

fn read_hashes(obj: &Map<String, Value>) -> Result<BTreeMap<String, String>, String> {
    if obj.is_empty() {
        return Err("hashes is empty".into());
    }
    obj.iter()
        .map(|(alg, h)| {
            let h = h.as_str().ok_or("a hash is not a string")?;
            Ok((alg.clone(), h.to_string()))
        })
        .collect()
}

impl Body for TimestampBody {
    const ROLE: Role = Role::Timestamp;

    fn read(signed: &Map<String, Value>) -> Result<Self, String> {
        let meta = object(signed, "meta")?;
        let snapshot = meta
            .get("snapshot.json")
            .ok_or("meta has no snapshot.json")?;
        Ok(TimestampBody {
            snapshot: read_meta_file(snapshot, "snapshot.json")?,
        })
    }
}

impl Body for SnapshotBody {
    const ROLE: Role = Role::Snapshot;

    fn read(signed: &Map<String, Value>) -> Result<Self, String> {
        let meta = object(signed, "meta")?;
        if let Some(other) = meta.keys().find(|k| *k != "targets.json") {
            return Err(format!("{UNSUPPORTED}meta names {other} (delegated roles)"));
        }
        let targets = meta.get("targets.json").ok_or("meta has no targets.json")?;
        Ok(SnapshotBody {
            targets: read_meta_file(targets, "targets.json")?,
        })
    }
}

impl Body for TargetsBody {
    const ROLE: Role = Role::Targets;

    fn read(signed: &Map<String, Value>) -> Result<Self, String> {
        if signed.get("delegations").is_some_and(|d| !d.is_null()) {
            return Err(format!("{UNSUPPORTED}delegations"));
        }
        let mut entries = BTreeMap::new();
        for (path, t) in object(signed, "targets")? {
            entries.insert(path.clone(), read_target(path, t)?);
        }
        Ok(TargetsBody { entries })
    }
}

fn read_target(path: &str, v: &Value) -> Result<Target, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("target {path:?} is not an object"))?;
    let hashes = read_hashes(object(obj, "hashes")?)?;
    let sha256 = hashes
        .get("sha256")
        .ok_or_else(|| format!("target {path:?} has no sha256 hash"))?;
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "target {path:?}: sha256 is not 64 lower-case hex digits"
        ));
    }
    Ok(Target {
        path: path.to_string(),
        length: uint(obj, "length")?,
        sha256: sha256.clone(),
        custom: obj.get("custom").cloned().unwrap_or(Value::Null),
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly, as python-tuf writes and reads it.
pub(super) fn parse_expires(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("expires {text:?} is not YYYY-MM-DDTHH:MM:SSZ");
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| -> Result<u32, String> {
        let s = &text[range];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let month = time::Month::try_from(num(5..7)? as u8).map_err(|_| bad())?;
    let date = time::Date::from_calendar_date(num(0..4)? as i32, month, num(8..10)? as u8)
        .map_err(|_| bad())?;
    let clock = time::Time::from_hms(num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8)
        .map_err(|_| bad())?;
    let secs = time::PrimitiveDateTime::new(date, clock)
        .assume_utc()
        .unix_timestamp();
    let secs = u64::try_from(secs).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + Duration::from_secs(secs))
}

/// The inverse of `parse_expires` (whole seconds; times before 1970 written as 1970).
pub(super) fn format_expires(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dt = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_round_trips_through_its_text() {
        let t = parse_expires("2031-02-28T23:59:07Z").unwrap();
        assert_eq!(format_expires(t), "2031-02-28T23:59:07Z");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_930_089_547
        );
    }

    #[test]
    fn expiry_in_other_spellings_is_refused() {
        for text in [
            "2031-02-28T23:59:07.5Z",
            "2031-02-28T23:59:07+00:00",
            "2031-02-30T00:00:00Z",
            "2031-2-28T23:59:07Z",
            "2031-02-28 23:59:07Z",
            "+031-02-28T23:59:07Z",
        ] {
            assert!(parse_expires(text).is_err(), "{text}");
        }
    }

    fn file(signed: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"signed": signed, "signatures": []})).unwrap()
    }

    fn timestamp(extra: Value) -> Value {
        let mut v = serde_json::json!({
            "_type": "timestamp", "spec_version": "1.0.31", "version": 3,
            "expires": "2030-01-01T00:00:00Z",
            "meta": {"snapshot.json": {"version": 2}}
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn unknown_fields_stay_in_the_canonical_bytes_signatures_cover() {
        let doc = parse::<TimestampBody>(
            &file(timestamp(serde_json::json!({"x-note": "é"}))),
            1 << 20,
        )
        .unwrap();
        assert!(
            String::from_utf8(doc.canonical)
                .unwrap()
                .contains(r#""x-note":"é""#)
        );
        assert_eq!(doc.body.snapshot.version, 2);
    }

    #[test]
    fn a_wrong_type_names_what_was_found() {
        let raw = file(timestamp(serde_json::json!({"_type": "snapshot"})));
        assert!(matches!(
            parse::<TimestampBody>(&raw, 1 << 20),
            Err(TufError::WrongType { found, .. }) if found == "snapshot"
        ));
    }

    #[test]
    fn a_spec_version_2_is_unsupported_and_version_0_malformed() {
        let raw = file(timestamp(serde_json::json!({"spec_version": "2.0.0"})));
        assert!(matches!(
            parse::<TimestampBody>(&raw, 1 << 20),
            Err(TufError::Unsupported { .. })
        ));
        let raw = file(timestamp(serde_json::json!({"version": 0})));
        assert!(matches!(
            parse::<TimestampBody>(&raw, 1 << 20),
            Err(TufError::Parse { .. })
        ));
    }

    #[test]
    fn a_spec_version_that_is_not_major_minor_patch_is_refused() {
        // python-tuf refuses these (2 or 3 dot-separated numbers); a reader that accepts
        // them sees documents python-tuf's tooling never signs.
        for spec in ["1", "1.", "1.x.y", "1.0.0.0", "1.0.31-rc1", "1 .0"] {
            let raw = file(timestamp(serde_json::json!({"spec_version": spec})));
            assert!(
                parse::<TimestampBody>(&raw, 1 << 20).is_err(),
                "spec_version {spec:?} was accepted"
            );
        }
        for spec in ["1.0", "1.0.31", "1.2.3"] {
            let raw = file(timestamp(serde_json::json!({"spec_version": spec})));
            assert!(parse::<TimestampBody>(&raw, 1 << 20).is_ok(), "{spec}");
        }
    }
}
