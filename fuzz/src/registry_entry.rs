//! Registry entries (`catalog::entry::Entry::from_target`, the signed index's targets) and the
//! MCP Registry's `server.json` (`catalog::mcp_registry::parse_server`) against hostile input.
//!
//! Properties: an accepted target breaks none of the entry's rules, stated here independently
//! (path `<server>/<version>`, 64 lower-case hex digits, a size in 1 byte to 4 MiB, a
//! description of at most 300 characters, an image manifest media type, a manifest naming the
//! path's server and version); it round-trips through its target parts and its manifest JSON;
//! lint never panics on it. An accepted server.json has a reverse-DNS name with one `/`.

use arbitrary::{Result, Unstructured};
use gateway::catalog::entry::Entry;
use gateway::catalog::lint::{LintPolicy, lint};
use gateway::catalog::mcp_registry::parse_server;
use gateway::manifest::Manifest;
use serde_json::{Value, json};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "registry_entry",
    check,
    ci_cases: 5_000,
};

const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const MEDIA: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "text/plain",
];

fn path(u: &mut Unstructured<'_>) -> Result<String> {
    if !u.ratio(1, 4)? {
        return Ok("srv/1.0.0".into());
    }
    Ok(match u.int_in_range(0..=6)? {
        0 => "srv".into(),
        1 => "srv/1.0.0/x".into(),
        2 => "Srv/1.0.0".into(),
        3 => "srv/../1".into(),
        4 => format!("srv/{}", pick::token(u, b"1.a+-_/ \n", 4)?),
        5 => format!("{}/1.0.0", pick::token(u, b"srv_-A", 3)?),
        _ => "srv/1.0.0".into(),
    })
}

fn custom(u: &mut Unstructured<'_>) -> Result<Value> {
    let hosts = pick::hosts(u, 2)?;
    let (name, version) = if u.ratio(1, 6)? {
        (*u.choose(&["srv", "other"])?, *u.choose(&["1.0.1", "x"])?)
    } else {
        ("srv", "1.0.0")
    };
    let mut manifest = json!({"name": name, "version": version,
                              "egress": [{"host": hosts[0]}], "tools": ["t"]});
    if u.ratio(1, 8)? {
        manifest["egress"][0]["host"] = json!(format!("*.{}", hosts[1]));
    }
    if u.ratio(1, 8)? {
        manifest["unknown"] = json!(1);
    }
    let repository = match u.int_in_range(0..=9)? {
        0 => "registry.example.com/servers/srv:latest".to_owned(),
        1 => "servers/srv".to_owned(),
        2 => "oci-layout:relative".to_owned(),
        3 => "oci-layout:/srv/layout".to_owned(),
        _ => format!("{}/servers/srv", hosts[1]),
    };
    let mut gigmcp = json!({"image": {"repository": repository, "mediaType": if u.ratio(1, 6)? { *u.choose(MEDIA)? } else { MEDIA[0] }},
                            "manifest": manifest});
    if u.ratio(1, 2)? {
        let n = *u.choose(&[0usize, 10, 300, 301])?;
        gigmcp["description"] = json!("é".repeat(n));
    }
    if u.ratio(1, 4)? {
        gigmcp["source"] = json!({"registry_name": "io.github.x/srv", "package": "npm:srv@1.0.0"});
    }
    if u.ratio(1, 10)? {
        gigmcp["image"]["tag"] = json!("x");
    }
    Ok(json!({ "gigmcp": gigmcp }))
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let path = path(u)?;
    let sha = match u.int_in_range(0..=15)? {
        0 => HEX.to_uppercase(),
        1 => HEX[1..].to_owned(),
        2 => format!("{}g", &HEX[1..]),
        _ => HEX.to_owned(),
    };
    let length = *u.choose(&[0u64, 1, 1234, 1234, 1234, 4 << 20, (4 << 20) + 1])?;
    let custom = custom(u)?;
    if let Ok(entry) = Entry::from_target(&path, length, &sha, &custom) {
        let (name, version) = path.split_once('/').expect("an accepted path has a '/'");
        assert!(!version.contains('/') && !version.contains(".."), "{path}");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
        );
        assert_eq!(
            (
                entry.manifest.name.as_str(),
                entry.manifest.version.as_str()
            ),
            (name, version)
        );
        assert!(
            sha.len() == 64
                && sha
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert!((1..=4 << 20).contains(&length));
        assert!(
            entry
                .description
                .as_ref()
                .is_none_or(|d| d.chars().count() <= 300)
        );
        assert!(MEDIA[..2].contains(&entry.image.media_type.as_str()));
        let (p, l, s, c) = entry.to_target_parts();
        assert_eq!(
            Entry::from_target(&p, l, &s, &c).expect("parts round-trip"),
            entry
        );
        let back = Manifest::from_json(&entry.manifest_json()).expect("manifest JSON parses");
        assert_eq!(back, entry.manifest);
        let _ = lint(&entry.manifest, &LintPolicy::default());
    }
    let name = pick::token(u, b"io.github/x-_ A", 12)?;
    let raw = json!({"name": name, "version": "1"}).to_string();
    if let Ok(s) = parse_server(raw.as_bytes()) {
        assert_eq!(s.name.matches('/').count(), 1, "{}", s.name);
    }
    Ok(())
}
