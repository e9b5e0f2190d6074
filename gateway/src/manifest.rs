//! A server's manifest: what it is entitled to (DESIGN 5). The egress proxy enforces `egress`
//! and `credentials`; the MCP front enforces `tools`; the helper gets `command`, `env`,
//! `limits` and `transparent` (transparent mode, on by default for servers with egress).
//!
//! Parsing is strict (unknown fields are errors) and [`Manifest::check`] refuses what the proxy
//! could not enforce exactly: wildcards, IP literals, plain HTTP with a credential, a
//! credential bound to a host the server may not reach, a private range without a reason or
//! one that is not private. Every part also serialises (a registry entry carries the manifest
//! as JSON, and what is written parses back to the same value).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::vault::SecretName;

/// The server's `PATH` when its manifest sets none (the sandbox's environment and the image
/// layout check both use it).
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// What the sandbox runs. Absent: the image's `Entrypoint` + `Cmd` (`image::run_plan`); a
    /// server with neither is refused at install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The server's working directory inside the sandbox (absolute). Absent: the image's
    /// `WorkingDir`, else the sandbox's private `/tmp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Egress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<Credential>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Transparent mode (DESIGN 3.5): the sandbox's DNS answers allowlisted names with its
    /// proxy's address and the proxy takes TLS on port 443 too, so clients that ignore
    /// `HTTPS_PROXY` (Node's `fetch`, Go's default dialer with a custom transport, ...) still
    /// reach their hosts, with credentials swapped. Absent: on when the manifest declares
    /// egress, off otherwise (see [`Manifest::transparent_mode`]). Needs a regular
    /// `/etc/resolv.conf` in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent: Option<bool>,
    /// What the server asks of the machine at most. The sandbox gets the lower of these and
    /// the gateway's `[sandbox]` limits (`sandbox::effective_limits`): a manifest can only
    /// lower what the admin configured, never raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Private ranges the server asks to reach (an internal API), each with why. Asking is
    /// not getting: the admin approves each range at install (`--approve-range`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub private_ranges: Vec<PrivateRange>,
}

/// Upper bounds a server declares for its sandbox; absent ones leave the gateway's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// CPU in percent of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
}

/// A private range the server asks for, and the reason shown to the admin who approves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateRange {
    pub cidr: IpNet,
    pub reason: String,
}

/// One host the server may reach through the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Egress {
    /// An exact DNS name, lower case.
    pub host: String,
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// Plain HTTP allowed to this host (never with a credential).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http: bool,
}

fn default_ports() -> Vec<u16> {
    vec![443]
}

/// A credential the server uses without ever seeing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// The vault secret's name; also the environment variable that holds the placeholder.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The only hosts the real value may be sent to.
    pub hosts: Vec<String>,
    pub inject: Inject,
}

/// Where in a request the placeholder is replaced by the real value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum Inject {
    /// A header whose value is `format` with `{}` standing for the secret,
    /// e.g. `Authorization: Bearer {}`.
    Header { name: String, format: String },
    /// HTTP Basic authentication; the placeholder is the password inside the base64.
    Basic,
    /// A query parameter.
    Query { param: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("manifest {server}: {problem}")]
pub struct ManifestError {
    pub server: String,
    pub problem: String,
}

/// A host name the proxy can match exactly: lower-case LDH labels, at least two, no wildcard,
/// not an IP literal.
/// Whether `name` can name a server (endpoints follow the same rule): 1-32 of `a-z 0-9 - _`,
/// starting with a letter or digit, without `__` and not ending in `_`. The last two make tool
/// names unambiguous: the first `__` of `<server>__<tool>` is then always the separator, whatever
/// the tool is called (`_x`, `a__b`), so no two servers' tools can be shown under one name.
pub fn valid_server_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.contains("__")
        && !name.ends_with('_')
}

pub fn valid_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && !labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
}

/// Why a working directory cannot be the sandbox's: the helper refuses the same (it resolves
/// it beneath the image's root without following links), but the admin learns it at install.
pub fn check_workdir(dir: &str) -> Result<(), &'static str> {
    if !dir.starts_with('/') {
        return Err("not an absolute path");
    }
    if dir.len() > 4096 || dir.contains('\0') {
        return Err("longer than 4096 bytes or holding a NUL");
    }
    if dir.split('/').any(|c| c == ".." || c == ".") {
        return Err("has a `.` or `..` component");
    }
    Ok(())
}

/// Why a requested private range cannot be asked for: only ranges the proxy refuses without
/// an approval need one (RFC 1918, CGNAT, ULA; loopback and link-local, which the admin's
/// approval refuses in turn but the manifest may still name); a public range needs no approval,
/// so asking for one is a mistake. Host bits would leave unclear what was approved.
fn check_private_range(r: &PrivateRange) -> Result<(), &'static str> {
    if r.reason.trim().is_empty() {
        return Err("has no reason (the admin approving it is shown why it is asked for)");
    }
    if r.cidr != r.cidr.trunc() {
        return Err("has host bits set");
    }
    let special: &[&str] = match r.cidr {
        IpNet::V4(_) => &[
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
        ],
        IpNet::V6(_) => &["fc00::/7", "fe80::/10", "::1/128"],
    };
    let inside = special
        .iter()
        .any(|s| s.parse::<IpNet>().is_ok_and(|s| s.contains(&r.cidr)));
    if !inside {
        return Err(
            "is not private, loopback, link-local or ULA (a public range needs no approval)",
        );
    }
    Ok(())
}

impl Manifest {
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        let m = Self::parse_json(text)?;
        m.check()?;
        Ok(m)
    }

    /// Strict parsing without [`Manifest::check`]: for the registry lint, which reports every
    /// problem of a manifest at once rather than the first.
    pub fn parse_json(text: &str) -> Result<Self, ManifestError> {
        serde_json::from_str(text).map_err(|e| ManifestError {
            server: "(unparsed)".into(),
            problem: e.to_string(),
        })
    }

    pub fn check(&self) -> Result<(), ManifestError> {
        let bad = |problem: String| ManifestError {
            server: self.name.clone(),
            problem,
        };
        // An empty program name is refused by the sandbox's init: refuse it here, at install.
        if self
            .command
            .as_ref()
            .is_some_and(|c| c.first().is_none_or(String::is_empty))
        {
            return Err(bad("command is empty".into()));
        }
        if let Some(dir) = &self.workdir {
            if let Err(problem) = check_workdir(dir) {
                return Err(bad(format!("workdir {dir:?}: {problem}")));
            }
        }
        for (i, e) in self.egress.iter().enumerate() {
            // Twice, the proxy would keep one rule and these checks read the other (say, a
            // credential bound to a host a second entry opens to plain HTTP).
            if self.egress[..i]
                .iter()
                .any(|earlier| earlier.host == e.host)
            {
                return Err(bad(format!("egress host {} is listed twice", e.host)));
            }
            if !valid_host(&e.host) {
                return Err(bad(format!(
                    "egress host {:?} is not an exact DNS name (no wildcards, no IP literals)",
                    e.host
                )));
            }
            if e.ports.is_empty() || e.ports.contains(&0) {
                return Err(bad(format!("egress host {} has no valid port", e.host)));
            }
        }
        for (i, c) in self.credentials.iter().enumerate() {
            // The name is a vault secret's and an environment variable's: the proxy refuses
            // to start with one it cannot look up, so refuse it here, at install.
            if let Err(e) = SecretName::parse(&c.name) {
                return Err(bad(format!("credential: {e}")));
            }
            if self.credentials[..i]
                .iter()
                .any(|earlier| earlier.name == c.name)
            {
                return Err(bad(format!("credential {} is listed twice", c.name)));
            }
            if c.hosts.is_empty() {
                return Err(bad(format!("credential {} is bound to no host", c.name)));
            }
            for h in &c.hosts {
                let Some(rule) = self.egress.iter().find(|e| &e.host == h) else {
                    return Err(bad(format!(
                        "credential {} is bound to {h}, which is not in egress",
                        c.name
                    )));
                };
                if rule.http {
                    return Err(bad(format!(
                        "credential {} is bound to {h}, which allows plain HTTP",
                        c.name
                    )));
                }
            }
            match &c.inject {
                Inject::Header { name, format } => {
                    if format.matches("{}").count() != 1 {
                        return Err(bad(format!(
                            "credential {}: header format must contain {{}} once",
                            c.name
                        )));
                    }
                    if http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).is_err() {
                        return Err(bad(format!(
                            "credential {}: {name:?} is not a header name",
                            c.name
                        )));
                    }
                }
                Inject::Query { param } if param.is_empty() => {
                    return Err(bad(format!(
                        "credential {}: empty query parameter name",
                        c.name
                    )));
                }
                Inject::Basic | Inject::Query { .. } => {}
            }
        }
        self.check_limits().map_err(|p| bad(p.into()))?;
        for r in &self.private_ranges {
            check_private_range(r).map_err(|p| bad(format!("private range {}: {p}", r.cidr)))?;
        }
        Ok(())
    }

    /// A zero limit would start a sandbox that cannot run at all: refused at install.
    fn check_limits(&self) -> Result<(), &'static str> {
        let Some(l) = self.limits else { return Ok(()) };
        if l.memory_mib == Some(0) || l.pids == Some(0) || l.cpu_percent == Some(0) {
            return Err("a limit of 0 leaves the server nothing to run with");
        }
        Ok(())
    }

    /// Whether the server's sandbox runs in transparent mode: as the manifest says, else
    /// whenever it declares egress (a server without egress has nothing to resolve or reach).
    pub fn transparent_mode(&self) -> bool {
        self.transparent.unwrap_or(!self.egress.is_empty())
    }

    /// The egress rule for `host`, if any.
    pub fn egress_for(&self, host: &str) -> Option<&Egress> {
        self.egress.iter().find(|e| e.host == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_that_would_make_tool_names_ambiguous_are_refused() {
        for bad in ["x_", "x__y", "_x", "", "X", "a+b", &"a".repeat(33)] {
            assert!(!valid_server_name(bad), "{bad:?}");
        }
        for good in ["x", "x_y", "x-y_z", "0a", &"a".repeat(32)] {
            assert!(valid_server_name(good), "{good:?}");
        }
    }

    const GOOD: &str = r#"{
        "name": "github", "version": "1.0.0", "command": ["/bin/server"],
        "egress": [{"host": "api.github.com"}, {"host": "uploads.github.com", "ports": [443, 8443]}],
        "credentials": [{"name": "GITHUB_TOKEN", "hosts": ["api.github.com"],
                         "inject": {"type": "header", "name": "Authorization", "format": "Bearer {}"}}],
        "tools": ["create_issue"]
    }"#;

    #[test]
    fn parses_and_defaults() {
        let m = Manifest::from_json(GOOD).unwrap();
        assert_eq!(m.egress_for("api.github.com").unwrap().ports, vec![443]);
        assert!(m.egress_for("github.com").is_none());
        assert_eq!(m.command, Some(vec!["/bin/server".to_owned()]));
        assert_eq!(m.workdir, None);
    }

    #[test]
    fn command_and_workdir_are_optional_for_the_image_to_supply() {
        let m = Manifest::from_json(r#"{"name": "t", "version": "1"}"#).unwrap();
        assert_eq!((m.command, m.workdir), (None, None));
        let m =
            Manifest::from_json(r#"{"name": "t", "version": "1", "workdir": "/srv/app"}"#).unwrap();
        assert_eq!(m.workdir.as_deref(), Some("/srv/app"));
    }

    #[test]
    fn hostile_manifests_are_refused() {
        for (from, to) in [
            ("\"api.github.com\"}", "\"*.github.com\"}"),
            ("\"api.github.com\"}", "\"140.82.112.6\"}"),
            (
                "\"hosts\": [\"api.github.com\"]",
                "\"hosts\": [\"evil.example\"]",
            ),
            ("\"hosts\": [\"api.github.com\"]", "\"hosts\": []"),
            ("\"Bearer {}\"", "\"Bearer\""),
            ("\"tools\"", "\"unknown_field\": 1, \"tools\""),
            // Found by the `manifest` fuzz target: what the proxy refuses when it starts.
            ("\"GITHUB_TOKEN\"", "\"GITHUB TOKEN\""),
            ("\"Authorization\"", "\"Author ization\""),
            // Found by the `manifest` fuzz target: no program, which init refuses at launch.
            ("[\"/bin/server\"]", "[\"\"]"),
            ("[\"/bin/server\"]", "[]"),
            // A working directory the sandbox could not enter as named.
            ("\"tools\"", "\"workdir\": \"srv\", \"tools\""),
            ("\"tools\"", "\"workdir\": \"/srv/../etc\", \"tools\""),
            ("\"tools\"", "\"workdir\": \"/srv/./x\", \"tools\""),
            // Found by the `manifest` fuzz target: the same host twice, once with plain HTTP.
            (
                "{\"host\": \"api.github.com\"}",
                "{\"host\": \"api.github.com\"}, {\"host\": \"api.github.com\", \"http\": true}",
            ),
        ] {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "{from}");
            assert!(Manifest::from_json(&text).is_err(), "accepted: {to}");
        }
        let http = GOOD.replacen(
            "{\"host\": \"api.github.com\"}",
            "{\"host\": \"api.github.com\", \"http\": true}",
            1,
        );
        assert!(
            Manifest::from_json(&http)
                .unwrap_err()
                .problem
                .contains("plain HTTP")
        );
    }

    #[test]
    fn transparent_mode_is_on_by_default_only_for_servers_that_declare_egress() {
        let with_egress = Manifest::from_json(GOOD).unwrap();
        assert_eq!(with_egress.transparent, None);
        assert!(with_egress.transparent_mode());
        let off = GOOD.replacen("\"tools\"", "\"transparent\": false, \"tools\"", 1);
        assert!(!Manifest::from_json(&off).unwrap().transparent_mode());
        let none = r#"{"name": "t", "version": "1", "command": ["/bin/t"]}"#;
        assert!(!Manifest::from_json(none).unwrap().transparent_mode());
        let on = r#"{"name": "t", "version": "1", "command": ["/bin/t"], "transparent": true}"#;
        assert!(Manifest::from_json(on).unwrap().transparent_mode());
        let wrong = r#"{"name": "t", "version": "1", "command": ["/bin/t"], "transparent": "yes"}"#;
        assert!(Manifest::from_json(wrong).is_err());
    }

    /// Every field set, the optional ones away from their defaults.
    const FULL: &str = r#"{
        "name": "wiki", "version": "2.1.0", "command": ["/bin/wiki", "--stdio"],
        "env": {"MODE": "ro"}, "workdir": "/srv", "transparent": false,
        "egress": [{"host": "api.example.com", "ports": [443, 8443]},
                   {"host": "mirror.example.com", "http": true}],
        "credentials": [{"name": "WIKI_TOKEN", "description": "read token",
                         "hosts": ["api.example.com"], "inject": {"type": "query", "param": "key"}},
                        {"name": "WIKI_BASIC", "hosts": ["api.example.com"], "inject": {"type": "basic"}}],
        "tools": ["search", "read"],
        "limits": {"memory_mib": 256, "pids": 64, "cpu_percent": 50},
        "private_ranges": [{"cidr": "10.20.0.0/16", "reason": "the wiki's database"}]
    }"#;

    #[test]
    fn a_manifest_serialises_to_json_that_parses_back_to_the_same_manifest() {
        for text in [GOOD, FULL, r#"{"name": "t", "version": "1"}"#] {
            let m = Manifest::from_json(text).unwrap();
            let back = Manifest::from_json(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m, "{text}");
        }
        let m = Manifest::from_json(FULL).unwrap();
        assert_eq!(m.limits.unwrap().pids, Some(64));
        assert_eq!(m.private_ranges[0].reason, "the wiki's database");
    }

    #[test]
    fn a_private_range_needs_a_reason_no_host_bits_and_a_range_that_needs_approval() {
        let with = |range: &str| {
            GOOD.replacen(
                "\"tools\"",
                &format!("\"private_ranges\": [{range}], \"tools\""),
                1,
            )
        };
        for ok in [
            r#"{"cidr": "192.168.1.0/24", "reason": "the NAS"}"#,
            r#"{"cidr": "fd12:3456::/32", "reason": "the lab"}"#,
            r#"{"cidr": "100.64.0.0/16", "reason": "tailnet"}"#,
        ] {
            assert!(Manifest::from_json(&with(ok)).is_ok(), "{ok}");
        }
        for (bad, why) in [
            (r#"{"cidr": "192.168.1.0/24", "reason": " "}"#, "no reason"),
            (r#"{"cidr": "192.168.1.7/24", "reason": "x"}"#, "host bits"),
            (r#"{"cidr": "8.8.8.0/24", "reason": "x"}"#, "not private"),
            (r#"{"cidr": "2001:db8::/32", "reason": "x"}"#, "not private"),
            (r#"{"cidr": "10.0.0.0/7", "reason": "x"}"#, "not private"),
            (r#"{"cidr": "10.0.0.0/8"}"#, "missing field"),
        ] {
            let e = Manifest::from_json(&with(bad)).unwrap_err();
            assert!(e.problem.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_zero_limit_is_refused_and_absent_limits_are_none() {
        for zero in [
            r#"{"memory_mib": 0}"#,
            r#"{"pids": 0}"#,
            r#"{"cpu_percent": 0}"#,
        ] {
            let text = GOOD.replacen("\"tools\"", &format!("\"limits\": {zero}, \"tools\""), 1);
            assert!(Manifest::from_json(&text).is_err(), "{zero}");
        }
        let text = GOOD.replacen("\"tools\"", "\"limits\": {\"swap\": 1}, \"tools\"", 1);
        assert!(Manifest::from_json(&text).is_err());
        assert_eq!(Manifest::from_json(GOOD).unwrap().limits, None);
    }

    #[test]
    fn host_names() {
        for ok in ["api.github.com", "a-b.example", "x1.io"] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "localhost",
            "*.x.com",
            "10.0.0.1",
            "API.github.com",
            "-a.com",
            "a..com",
            "a.com.",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }
}
