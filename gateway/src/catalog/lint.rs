//! The registry's manifest lint (DESIGN 5): what an entry's manifest may not ask for, checked
//! before an author signs it and again before the gateway installs it. Every finding names the
//! field (`egress[1].host`), the rule and why, and all findings are reported at once.
//!
//! The rules are stricter than [`Manifest::check`], which refuses what the proxy could not
//! enforce; lint refuses what a reviewer should not have to read twice: plain HTTP, ports
//! outside the allowed set, a server that exposes every tool, hosts on the exfiltration list.
//! A manifest with no finding also passes `check` (its refusal becomes a finding otherwise).
//!
//! It knows nothing of where the manifest comes from (a file, an entry, an import).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::manifest::{Manifest, valid_host};

use super::exfil::ExfilList;

/// One problem: the field it is in, a stable rule name, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub field: String,
    pub rule: &'static str,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct LintPolicy {
    pub allowed_ports: BTreeSet<u16>,
    pub exfil: ExfilList,
}

impl Default for LintPolicy {
    /// Ports 443 and 8443, and the list kept in `registry/lint/exfil-hosts.toml`.
    fn default() -> Self {
        Self {
            allowed_ports: BTreeSet::from([443, 8443]),
            exfil: ExfilList::embedded(),
        }
    }
}

/// Every finding for `manifest`, in field order.
pub fn lint(manifest: &Manifest, policy: &LintPolicy) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut found = |field: String, rule: &'static str, message: String| {
        findings.push(Finding {
            field,
            rule,
            message,
        })
    };
    for (i, e) in manifest.egress.iter().enumerate() {
        let field = format!("egress[{i}].host");
        if let Some((rule, why)) = host_problem(&e.host, policy) {
            found(field.clone(), rule, format!("{:?} {why}", e.host));
        }
        if manifest.egress[..i]
            .iter()
            .any(|earlier| earlier.host == e.host)
        {
            found(
                field,
                "duplicate-host",
                format!("{} is listed twice (one rule would hide the other)", e.host),
            );
        }
        if e.http {
            found(
                format!("egress[{i}].http"),
                "plain-http",
                format!(
                    "plain HTTP to {} can be read and changed on the way",
                    e.host
                ),
            );
        }
        for (j, port) in e.ports.iter().enumerate() {
            if !policy.allowed_ports.contains(port) {
                found(
                    format!("egress[{i}].ports[{j}]"),
                    "port",
                    format!("port {port} is not one of {:?}", policy.allowed_ports),
                );
            }
        }
    }
    for (i, c) in manifest.credentials.iter().enumerate() {
        if c.hosts.is_empty() {
            found(
                format!("credentials[{i}].hosts"),
                "credential-no-host",
                format!("{} is bound to no host: it could not be used", c.name),
            );
        }
        for (j, h) in c.hosts.iter().enumerate() {
            if manifest.egress_for(h).is_none() {
                found(
                    format!("credentials[{i}].hosts[{j}]"),
                    "credential-host",
                    format!("{} is bound to {h:?}, which is not in egress", c.name),
                );
            } else if c.hosts[..j].contains(h) {
                found(
                    format!("credentials[{i}].hosts[{j}]"),
                    "duplicate-host",
                    format!("{h} is listed twice for {}", c.name),
                );
            }
        }
    }
    if manifest.tools.is_empty() {
        found(
            "tools".into(),
            "tools-empty",
            "an empty list exposes every tool: a registry entry names the tools it offers".into(),
        );
    }
    for (i, r) in manifest.private_ranges.iter().enumerate() {
        if r.reason.trim().is_empty() {
            found(
                format!("private_ranges[{i}].reason"),
                "private-range-reason",
                format!("{} is asked for without a reason for the admin", r.cidr),
            );
        }
    }
    if findings.is_empty() {
        if let Err(e) = manifest.check() {
            findings.push(Finding {
                field: String::new(),
                rule: "manifest",
                message: e.problem,
            });
        }
    }
    findings
}

/// What is wrong with an egress host, if anything: the first rule it breaks.
fn host_problem(host: &str, policy: &LintPolicy) -> Option<(&'static str, String)> {
    if host.contains('*') {
        return Some(("wildcard", "is a wildcard: name each host".into()));
    }
    if is_ip_literal(host) {
        return Some((
            "ip-literal",
            "is an IP address (in some notation): name the host".into(),
        ));
    }
    if !valid_host(host) {
        return Some(("host", "is not an exact lower-case DNS name".into()));
    }
    policy.exfil.matches(host).map(|m| {
        let how = if m.look_alike { "looks like" } else { "is" };
        (
            "exfiltration",
            format!(
                "{how} {} ({}, {})",
                m.entry.domain, m.entry.category, m.entry.source
            ),
        )
    })
}

/// Whether `host` is an address in any notation a resolver or `inet_aton` accepts: dotted
/// IPv4, IPv6 (bracketed or not, with a zone), and the integer forms (`2130706433`,
/// `0x7f000001`, `0177.1`, `0x7f.1`, `127.1`), each part decimal, hexadecimal or octal.
fn is_ip_literal(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let unzoned = bare.split('%').next().unwrap_or(bare);
    if unzoned.parse::<IpAddr>().is_ok() {
        return true;
    }
    let parts: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    (1..=4).contains(&parts.len()) && parts.iter().all(|p| is_inet_aton_number(p))
}

fn is_inet_aton_number(part: &str) -> bool {
    let lower = part.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        return hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    !lower.is_empty() && lower.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_label() -> String {
        let mut bytes = [0u8; 5];
        getrandom::fill(&mut bytes).unwrap();
        format!("h{}", hex::encode(bytes))
    }

    fn random_port() -> u16 {
        let mut bytes = [0u8; 2];
        getrandom::fill(&mut bytes).unwrap();
        // Never 0 (the manifest refuses it), 443 or 8443 (allowed).
        match u16::from_be_bytes(bytes) {
            0 | 443 | 8443 => 8080,
            p => p,
        }
    }

    /// A clean manifest for a server named after a random host.
    fn clean(host: &str) -> serde_json::Value {
        serde_json::json!({
            "name": "srv", "version": "1.0.0",
            "egress": [{"host": host}, {"host": format!("uploads.{host}"), "ports": [443, 8443]}],
            "credentials": [{"name": "API_TOKEN", "hosts": [host],
                             "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
            "tools": ["search"],
            "private_ranges": [{"cidr": "10.1.0.0/16", "reason": "the team's wiki"}],
        })
    }

    fn findings(m: serde_json::Value) -> Vec<Finding> {
        let m = Manifest::parse_json(&m.to_string()).unwrap();
        lint(&m, &LintPolicy::default())
    }

    /// The one finding of `m`, which must be `rule` at `field`.
    fn only(m: serde_json::Value, field: &str, rule: &str) -> Finding {
        let f = findings(m);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].field.as_str(), f[0].rule), (field, rule), "{f:?}");
        f.into_iter().next().unwrap()
    }

    fn example() -> String {
        format!("{}.example.com", random_label())
    }

    #[test]
    fn a_clean_manifest_gives_no_finding_and_passes_the_manifest_check() {
        let m = clean(&example());
        assert_eq!(findings(m.clone()), vec![]);
        assert!(Manifest::from_json(&m.to_string()).is_ok());
    }

    #[test]
    fn a_wildcard_host_is_a_finding() {
        let mut m = clean(&example());
        m["egress"][1]["host"] = format!("*.{}", example()).into();
        let f = only(m, "egress[1].host", "wildcard");
        assert!(f.message.contains("wildcard"), "{}", f.message);
    }

    #[test]
    fn an_ip_literal_in_any_notation_is_a_finding() {
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).unwrap();
        let n = u32::from_be_bytes(bytes);
        let [a, b, c, d] = bytes;
        for literal in [
            format!("{a}.{b}.{c}.{d}"),
            format!("{n}"),
            format!("0x{n:x}"),
            format!("0{a:o}.{b}.{c}.{d}"),
            format!("0x{a:x}.{}", u32::from_be_bytes([0, b, c, d])),
            "127.1".to_owned(),
            "0x7f.1".to_owned(),
            "2130706433".to_owned(),
            "::1".to_owned(),
            "[fe80::1%eth0]".to_owned(),
            format!("[2001:db8::{a:x}]"),
        ] {
            let mut m = clean(&example());
            m["egress"][1]["host"] = literal.clone().into();
            only(m, "egress[1].host", "ip-literal");
        }
    }

    #[test]
    fn plain_http_is_a_finding() {
        let mut m = clean(&example());
        m["egress"][1]["http"] = true.into();
        only(m, "egress[1].http", "plain-http");
    }

    #[test]
    fn a_port_outside_the_allowed_set_is_a_finding_naming_the_port() {
        let port = random_port();
        let mut m = clean(&example());
        m["egress"][1]["ports"] = serde_json::json!([443, port]);
        let f = only(m, "egress[1].ports[1]", "port");
        assert!(f.message.contains(&port.to_string()), "{}", f.message);
    }

    #[test]
    fn a_credential_bound_to_a_host_outside_egress_is_a_finding() {
        let elsewhere = example();
        let mut m = clean(&example());
        m["credentials"][0]["hosts"] = serde_json::json!([m["egress"][0]["host"], elsewhere]);
        let f = only(m, "credentials[0].hosts[1]", "credential-host");
        assert!(f.message.contains(&elsewhere), "{}", f.message);
    }

    #[test]
    fn a_credential_with_no_host_is_a_finding() {
        let mut m = clean(&example());
        m["credentials"][0]["hosts"] = serde_json::json!([]);
        only(m, "credentials[0].hosts", "credential-no-host");
    }

    #[test]
    fn an_empty_tool_list_is_a_finding() {
        let mut m = clean(&example());
        m["tools"] = serde_json::json!([]);
        only(m, "tools", "tools-empty");
    }

    #[test]
    fn a_private_range_without_a_reason_is_a_finding() {
        let mut m = clean(&example());
        m["private_ranges"][0]["reason"] = "  ".into();
        only(m, "private_ranges[0].reason", "private-range-reason");
    }

    #[test]
    fn an_exfiltration_host_or_its_subdomain_or_look_alike_is_a_finding() {
        for host in [
            format!("{}.ngrok-free.app", random_label()),
            "pastebin.com".to_owned(),
            idna::domain_to_ascii(&format!("{}.tr\u{443}cloudflare.com", random_label())).unwrap(),
        ] {
            let mut m = clean(&example());
            m["egress"][1]["host"] = host.clone().into();
            let f = only(m, "egress[1].host", "exfiltration");
            assert!(f.message.contains('('), "{host}: {}", f.message);
        }
    }

    #[test]
    fn a_duplicate_host_is_a_finding() {
        let host = example();
        let mut m = clean(&host);
        m["egress"][1]["host"] = host.clone().into();
        only(m, "egress[1].host", "duplicate-host");
        let mut m = clean(&host);
        m["credentials"][0]["hosts"] = serde_json::json!([host, host]);
        only(m, "credentials[0].hosts[1]", "duplicate-host");
    }

    #[test]
    fn every_problem_is_reported_at_once_in_field_order() {
        let mut m = clean(&example());
        m["egress"][0]["http"] = true.into();
        m["egress"][1]["host"] = "10.0.0.1".into();
        m["tools"] = serde_json::json!([]);
        let rules: Vec<_> = findings(m).into_iter().map(|f| f.rule).collect();
        assert_eq!(rules, ["plain-http", "ip-literal", "tools-empty"]);
    }

    #[test]
    fn what_only_the_manifest_check_refuses_is_still_a_finding() {
        let mut m = clean(&example());
        m["credentials"][0]["inject"]["format"] = "Bearer".into();
        let f = only(m, "", "manifest");
        assert!(f.message.contains("{}"), "{}", f.message);
    }
}
