//! The credential rewriter (`egress::request`: `needle_place` over the host's
//! `egress::needles::HostNeedles`, then `wants`, `inject`), run in the order the proxy runs them, on requests whose placeholders stand anywhere: in the
//! declared place in the declared format or not, in other headers, in the path, in other query
//! parameters, inside Basic credentials, percent-encoded.
//!
//! Properties: a request to a host passes only if it carries the placeholder of no credential
//! unbound there, in any of those forms; after the swap, a real value appears only in its
//! declared place (the named header in its format, the Basic header, the named query
//! parameter) of a request to a host it is bound to, never elsewhere and never to another
//! host; where the declared place asked for it, it holds exactly the value.

use arbitrary::{Result, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use gateway::egress::needles::HostNeedles;
use gateway::egress::policy::{CredentialRule, Presentation};
use gateway::egress::request::{inject, needle_place, wants};
use gateway::vault::SecretName;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderName, HeaderValue};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::{Target, pick};

pub const TARGET: Target = Target {
    name: "rewriter",
    check,
    ci_cases: 20_000,
};

struct Cred {
    rule: CredentialRule,
    value: Vec<u8>,
}

fn presentation(u: &mut Unstructured<'_>) -> Result<Presentation> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Presentation::Header {
            name: HeaderName::from_static(u.choose(&["authorization", "x-api-key", "x-token"])?),
            prefix: (*u.choose(&["Bearer ", "", "token="])?).to_owned(),
            suffix: (*u.choose(&["", ";v=1"])?).to_owned(),
        },
        1 => Presentation::Basic,
        _ => Presentation::Query {
            param: (*u.choose(&["api_key", "key", "k y"])?).to_owned(),
        },
    })
}

fn cred(u: &mut Unstructured<'_>, i: usize, hosts: &[String]) -> Result<Cred> {
    let placeholder = format!("gmcp_ph_{}", pick::token(u, b"0123456789abcdef", 32)?);
    let bound: Vec<String> = hosts
        .iter()
        .filter(|_| u.ratio(1, 2).unwrap_or(false))
        .cloned()
        .collect();
    // A marker no request contains by chance, among bytes that need care in each place.
    let mut value = format!("real{i}x{}", pick::token(u, b"0123456789", 12)?).into_bytes();
    for _ in 0..u.int_in_range(0..=4)? {
        value.push(*u.choose(b":&=%+ /?#\"\xff\xc3\xa9~")?);
    }
    Ok(Cred {
        rule: CredentialRule {
            name: SecretName::parse(&format!("CRED{i}")).expect("a valid name"),
            placeholder,
            hosts: bound,
            inject: presentation(u)?,
        },
        value,
    })
}

/// The placeholder as it might be written in some place.
fn spelled(u: &mut Unstructured<'_>, ph: &str) -> Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => ph.to_owned(),
        2 => format!("%67{}", &ph[1..]),
        _ => utf8_percent_encode(ph, NON_ALPHANUMERIC).to_string(),
    })
}

fn request(u: &mut Unstructured<'_>, creds: &[Cred]) -> Result<Parts> {
    let mut path = String::from("/v1");
    let mut query: Vec<String> = vec!["a=1".into()];
    let mut headers: Vec<(HeaderName, String)> = Vec::new();
    for c in creds {
        let ph = &c.rule.placeholder;
        for _ in 0..u.int_in_range(0..=2)? {
            match u.int_in_range(0..=6)? {
                0 => match &c.rule.inject {
                    Presentation::Header {
                        name,
                        prefix,
                        suffix,
                    } => {
                        headers.push((name.clone(), format!("{prefix}{ph}{suffix}")));
                    }
                    Presentation::Basic => {
                        let user = *u.choose(&["alice", "", "gmcp"])?;
                        headers.push((
                            AUTHORIZATION,
                            format!("Basic {}", B64.encode(format!("{user}:{ph}"))),
                        ));
                    }
                    Presentation::Query { param } => {
                        let key = utf8_percent_encode(param, NON_ALPHANUMERIC).to_string();
                        query.push(format!("{key}={}", spelled(u, ph)?));
                    }
                },
                1 => headers.push((HeaderName::from_static("x-other"), format!("pre {ph} post"))),
                2 => headers.push((
                    AUTHORIZATION,
                    format!("Basic {}", B64.encode(format!("{ph}:pw"))),
                )),
                3 => path.push_str(&format!("/{}", spelled(u, ph)?)),
                4 => query.push(format!("other={}", spelled(u, ph)?)),
                5 => headers.push((AUTHORIZATION, format!("Bearer {ph} extra"))),
                _ => query.push(format!("{}=x", spelled(u, ph)?)),
            }
        }
    }
    let uri = format!("{path}?{}", query.join("&"));
    let mut b = http::Request::get(uri);
    for (n, v) in headers {
        b = b.header(n, v);
    }
    Ok(b.body(()).expect("a valid request").into_parts().0)
}

fn has(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn basic_decoded(v: &HeaderValue) -> Option<Vec<u8>> {
    let text = v.to_str().ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| B64.decode(rest.trim()).ok())?
}

fn decoded(s: &str) -> Vec<u8> {
    percent_decode_str(s).collect()
}

/// Every place `needle` occurs in `parts`, in any of the forms the proxy looks at.
fn places(parts: &Parts, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in &parts.headers {
        let basic = basic_decoded(value).is_some_and(|d| has(&d, needle));
        if has(value.as_bytes(), needle) || basic {
            out.push(format!("header {name}"));
        }
    }
    let path = parts.uri.path();
    if has(path.as_bytes(), needle) || has(&decoded(path), needle) {
        out.push("path".into());
    }
    for kv in parts.uri.query().unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if has(kv.as_bytes(), needle) || has(&decoded(&kv.replace('+', " ")), needle) {
            out.push(format!(
                "query {}={}",
                String::from_utf8_lossy(&decoded(k)),
                v.len()
            ));
        }
    }
    out
}

/// Whether `place` (from [`places`]) is `c`'s declared place.
fn declared(c: &CredentialRule, place: &str) -> bool {
    match &c.inject {
        Presentation::Header { name, .. } => place == format!("header {name}"),
        Presentation::Basic => place == "header authorization",
        Presentation::Query { param } => place.starts_with(&format!("query {param}=")),
    }
}

/// The declared place holds exactly `value` (as the request will carry it).
fn holds(parts: &Parts, c: &Cred) -> bool {
    match &c.rule.inject {
        Presentation::Header {
            name,
            prefix,
            suffix,
        } => {
            let mut want = prefix.as_bytes().to_vec();
            want.extend_from_slice(&c.value);
            want.extend_from_slice(suffix.as_bytes());
            parts
                .headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == want)
        }
        Presentation::Basic => parts
            .headers
            .get_all(AUTHORIZATION)
            .iter()
            .any(|v| basic_decoded(v).is_some_and(|d| has(&d, &c.value))),
        Presentation::Query { param } => parts.uri.query().unwrap_or("").split('&').any(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            decoded(k) == param.as_bytes() && decoded(v) == c.value
        }),
    }
}

fn check(u: &mut Unstructured<'_>) -> Result<()> {
    let hosts = pick::hosts(u, 2)?;
    let creds: Vec<Cred> = (0..u.int_in_range(1..=3)?)
        .map(|i| cred(u, i, &hosts))
        .collect::<Result<_>>()?;
    let rules: Vec<CredentialRule> = creds.iter().map(|c| c.rule.clone()).collect();
    let host = u.choose(&hosts)?.clone();
    let mut parts = request(u, &creds)?;

    let leaks: Vec<(&str, Vec<String>)> = creds
        .iter()
        .filter(|c| !c.rule.bound_to(&host))
        .map(|c| {
            (
                c.rule.name.as_str(),
                places(&parts, c.rule.placeholder.as_bytes()),
            )
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    // As `forward::head_leak` does it: every needle of the host (the placeholders of the
    // credentials unbound there, every form of every real value), searched in the head.
    let values: Vec<Option<&[u8]>> = creds.iter().map(|c| Some(c.value.as_slice())).collect();
    let needles = HostNeedles::build(&rules, &values, &host).expect("a handful of needles");
    let verdict = match needles.scan.as_ref().and_then(|s| needle_place(&parts, s)) {
        Some(hit) => Err(hit),
        None => Ok(()),
    };
    assert_eq!(
        verdict.is_err(),
        !leaks.is_empty(),
        "unbound placeholders at {leaks:?}, verdict {verdict:?}, request {parts:?}"
    );
    if verdict.is_err() {
        return Ok(());
    }
    // The swap, as `forward::swap_credentials` does it for an HTTPS request to `host`.
    let mut asked = Vec::new();
    for c in creds.iter().filter(|c| c.rule.bound_to(&host)) {
        if wants(&parts, &c.rule) {
            asked.push(c.rule.name.as_str());
            if inject(&mut parts, &c.rule, &c.value).is_err() {
                return Ok(()); // refused: nothing is sent
            }
            assert!(
                holds(&parts, c),
                "{}: the declared place does not hold the (test) value {:?}: {parts:?}",
                c.rule.name,
                String::from_utf8_lossy(&c.value)
            );
        }
    }
    for c in &creds {
        let at = places(&parts, &c.value);
        let name = c.rule.name.as_str();
        if !asked.contains(&name) {
            assert!(at.is_empty(), "{name} (not asked for) appears at {at:?}");
        }
        for place in at {
            assert!(
                c.rule.bound_to(&host),
                "{name} sent to {host}, not bound there"
            );
            assert!(
                declared(&c.rule, &place),
                "{name} appears at {place}, not its declared place"
            );
        }
    }
    Ok(())
}
