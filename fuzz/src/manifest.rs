//! Manifest parsing and checks (`manifest::Manifest::from_json`) against hostile manifests.
//!
//! Properties: a manifest that parses and passes the checks breaks none of the rules a lint
//! states (exact lower-case DNS names only: no wildcard, no IP literal in any spelling, no
//! trailing dot; a valid port; a credential bound only to HTTPS egress hosts, with a usable
//! name and presentation; nothing listed twice), stated here independently; and the egress
//! proxy can enforce every manifest the checks accept (`Policy::new` takes it).

use std::collections::HashSet;
use std::net::IpAddr;

use arbitrary::{Result, Unstructured};
use gateway::egress::policy::Policy;
use gateway::manifest::{Inject, Manifest};
use serde_json::{Value, json};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "manifest",
    check,
    ci_cases: 20_000,
};

/// Ways to write a host that a lint must refuse, and some it must take.
fn hostile_host(u: &mut Unstructured<'_>, good: &str) -> Result<String> {
    let octet = |u: &mut Unstructured<'_>| u.int_in_range(0..=255u8);
    Ok(match u.int_in_range(0..=15)? {
        0 => format!("*.{good}"),
        1 => good.replacen('.', ".*.", 1),
        2 => format!("{}.{}.{}.{}", octet(u)?, octet(u)?, octet(u)?, octet(u)?),
        3 => format!("0x{:x}.0.0.{}", octet(u)?, octet(u)?),
        4 => u.int_in_range(0..=u32::MAX)?.to_string(),
        5 => "::1".into(),
        6 => format!("[fe80::{}]", octet(u)?),
        7 => format!("{good}."),
        8 => pick::recase(u, good)?,
        9 => format!("{good}:443"),
        10 => "localhost".into(),
        11 => format!("{}.{good}", "a".repeat(u.int_in_range(60..=70)?)),
        12 => format!("{}x.t0", "ab.".repeat(u.int_in_range(80..=90)?)),
        13 => {
            let n = u.int_in_range(0..=12)?;
            pick::token(u, b"ab.-_*:/ \t1\x00", n)?
        }
        _ => good.to_owned(),
    })
}

fn egress(u: &mut Unstructured<'_>, hosts: &[String]) -> Result<Value> {
    let host = if u.ratio(1, 2)? {
        u.choose(hosts)?.clone()
    } else {
        {
            let good = u.choose(hosts)?.clone();
            hostile_host(u, &good)?
        }
    };
    let mut e = json!({ "host": host });
    if u.ratio(1, 2)? {
        let ports: Vec<u16> = match u.int_in_range(0..=3)? {
            0 => vec![],
            1 => vec![0],
            _ => (0..u.int_in_range(1..=3)?)
                .map(|_| Ok(*u.choose(&[443, 8443, 80, 1, 65535])?))
                .collect::<Result<_>>()?,
        };
        e["ports"] = json!(ports);
    }
    if u.ratio(1, 3)? {
        e["http"] = json!(u.arbitrary::<bool>()?);
    }
    Ok(e)
}

fn inject(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=2)? {
        0 => json!({
            "type": "header",
            "name": *u.choose(&["Authorization", "X-Api-Key", "", "bad name", "x:y", "Auth\r\n", "é"])?,
            "format": *u.choose(&["Bearer {}", "{}", "Bearer", "{}{}", "token {} x", "a\n{}", "{"])?,
        }),
        1 => json!({ "type": "basic" }),
        _ => json!({ "type": "query", "param": *u.choose(&["api_key", "", "a&b", "k=v", "key"])? }),
    })
}

fn credential(u: &mut Unstructured<'_>, hosts: &[String]) -> Result<Value> {
    let name = *u.choose(&["TOKEN", "GITHUB_TOKEN", "", "a b", "1ST", "x.y-z", "PATH=1"])?;
    let bound: Vec<String> = (0..u.int_in_range(0..=2)?)
        .map(|_| {
            Ok(if u.ratio(3, 4)? {
                u.choose(hosts)?.clone()
            } else {
                {
                    let good = u.choose(hosts)?.clone();
                    hostile_host(u, &good)?
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok(json!({ "name": name, "hosts": bound, "inject": inject(u)? }))
}

fn manifest(u: &mut Unstructured<'_>) -> Result<Value> {
    let hosts = pick::hosts(u, 3)?;
    let command: Vec<&str> = match u.int_in_range(0..=5)? {
        0 => vec![],
        1 => vec![""],
        _ => vec!["/bin/server", "--stdio"],
    };
    let mut m = json!({ "name": "srv", "version": "1.0.0", "command": command });
    // Absent: the image's Entrypoint + Cmd supply it.
    if u.ratio(1, 6)? {
        m.as_object_mut().map(|o| o.remove("command"));
    }
    let n = u.int_in_range(0..=3)?;
    m["egress"] = Value::Array((0..n).map(|_| egress(u, &hosts)).collect::<Result<_>>()?);
    let n = u.int_in_range(0..=2)?;
    m["credentials"] = Value::Array(
        (0..n)
            .map(|_| credential(u, &hosts))
            .collect::<Result<_>>()?,
    );
    if u.ratio(1, 16)? {
        m["unknown"] = json!(1);
    }
    Ok(m)
}

/// An exact DNS name as a lint states it, independently of `manifest::valid_host`.
fn exact_dns_name(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    let ldh = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let numeric_tld = labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()));
    // Resolvers read 0x7f.1, 127.1 and 2130706433 as addresses: a numeric last label is one.
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(ldh)
        && !numeric_tld
        && host.parse::<IpAddr>().is_err()
}

fn valid_secret_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A header name a request can carry (an RFC 9110 token).
fn header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The lint's verdict: `Err(rule)` names the first rule `m` breaks.
fn lint(m: &Manifest) -> std::result::Result<(), &'static str> {
    // Absent, the image supplies it; present, it must name a program.
    if m.command
        .as_ref()
        .is_some_and(|c| c.first().is_none_or(String::is_empty))
    {
        return Err("no program to run");
    }
    let mut seen = HashSet::new();
    for e in &m.egress {
        if !exact_dns_name(&e.host) {
            return Err("egress host not an exact DNS name");
        }
        if !seen.insert(&e.host) {
            return Err("egress host listed twice");
        }
        if e.ports.is_empty() || e.ports.contains(&0) {
            return Err("no valid port");
        }
    }
    let mut names = HashSet::new();
    for c in &m.credentials {
        if !valid_secret_name(&c.name) || !names.insert(&c.name) {
            return Err("credential name unusable or listed twice");
        }
        if c.hosts.is_empty() {
            return Err("credential bound to no host");
        }
        for h in &c.hosts {
            match m.egress.iter().find(|e| &e.host == h) {
                None => return Err("credential bound to a host not in egress"),
                Some(e) if e.http => return Err("credential bound to a plain-HTTP host"),
                Some(_) => {}
            }
        }
        let usable = match &c.inject {
            Inject::Header { name, format } => {
                header_token(name) && format.matches("{}").count() == 1
            }
            Inject::Query { param } => !param.is_empty(),
            Inject::Basic => true,
        };
        if !usable {
            return Err("presentation unusable");
        }
    }
    Ok(())
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let text = serde_json::to_string(&manifest(u)?).expect("a Value serializes");
    let Ok(m) = Manifest::from_json(&text) else {
        return Ok(());
    };
    if let Err(rule) = lint(&m) {
        panic!("accepted a manifest a lint refuses ({rule}): {text}");
    }
    let placeholders: Vec<(String, String)> = m
        .credentials
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), format!("gmcp_ph_{i:032x}")))
        .collect();
    if let Err(e) = Policy::new(&m, &placeholders) {
        panic!("accepted a manifest the proxy cannot enforce ({e}): {text}");
    }
    Ok(())
}
