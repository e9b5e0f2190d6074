//! What one sandbox may reach, derived from its server's manifest: allowlisted hosts and ports,
//! plain-HTTP hosts, and each credential with its placeholder, bound hosts and presentation.
//! Pure: no I/O, no secrets (placeholders are not secret).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use http::HeaderName;

use crate::manifest::{Inject, Manifest, valid_host};
use crate::vault::SecretName;

use super::EgressError;
use super::audit::Deny;

/// Prefix of every placeholder; the rest is lower-case hex.
pub const PLACEHOLDER_PREFIX: &str = "gmcp_ph_";

/// A fresh random placeholder (`gmcp_ph_` + 32 hex digits). Make one per credential per sandbox.
pub fn make_placeholder() -> Result<String, EgressError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| EgressError::Random)?;
    Ok(format!("{PLACEHOLDER_PREFIX}{}", hex::encode(bytes)))
}

/// A placeholder must survive headers, URLs and base64 unchanged and be long enough never to
/// occur by chance.
pub fn valid_placeholder(p: &str) -> bool {
    p.len() >= PLACEHOLDER_PREFIX.len() + 16
        && p.len() <= 128
        && p.starts_with(PLACEHOLDER_PREFIX)
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A destination: an exact lower-case DNS name and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Parses an authority (`host[:port]`) as a client sent it: lower-cased, one trailing dot
/// dropped, `default_port` when none is given. IP literals, user info and anything that is not
/// an exact DNS name are refused.
pub fn parse_authority(text: &str, default_port: u16) -> Result<Target, Deny> {
    if text.contains('@') {
        return Err(Deny::BadAuthority);
    }
    if text.starts_with('[') {
        return Err(Deny::IpLiteral);
    }
    let authority: http::uri::Authority = text.parse().map_err(|_| Deny::BadAuthority)?;
    let host = authority.host().to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host);
    if host.parse::<IpAddr>().is_ok() {
        return Err(Deny::IpLiteral);
    }
    if !valid_host(host) {
        return Err(if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            Deny::IpLiteral // e.g. 127.1 or 2130706433, which resolvers read as addresses
        } else {
            Deny::BadAuthority
        });
    }
    let port = match authority.as_str().split_once(':') {
        // Digits only (RFC 3986 `port = *DIGIT`): `u16::from_str` would also take `+443`,
        // which a server behind the proxy may read otherwise.
        Some((_, p)) if !p.bytes().all(|b| b.is_ascii_digit()) => return Err(Deny::BadAuthority),
        Some((_, p)) => p.parse::<u16>().map_err(|_| Deny::BadAuthority)?,
        None => default_port,
    };
    if port == 0 {
        return Err(Deny::BadAuthority);
    }
    Ok(Target {
        host: host.to_owned(),
        port,
    })
}

#[derive(Debug, Clone)]
struct HostRule {
    ports: Vec<u16>,
    http: bool,
}

/// A credential as the proxy uses it. The value itself is fetched from the vault when needed.
#[derive(Debug, Clone)]
pub struct CredentialRule {
    pub name: SecretName,
    pub placeholder: String,
    pub hosts: Vec<String>,
    pub inject: Presentation,
}

/// [`Inject`], checked.
#[derive(Debug, Clone)]
pub enum Presentation {
    Header {
        name: HeaderName,
        prefix: String,
        suffix: String,
    },
    Basic,
    Query {
        param: String,
    },
}

impl CredentialRule {
    pub fn bound_to(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h == host)
    }
}

/// The sandbox's entitlements.
#[derive(Debug, Clone)]
pub struct Policy {
    hosts: HashMap<String, HostRule>,
    pub credentials: Vec<CredentialRule>,
}

impl Policy {
    /// `placeholders`: (credential name, placeholder) for every credential in the manifest.
    pub fn new(
        manifest: &Manifest,
        placeholders: &[(String, String)],
    ) -> Result<Self, EgressError> {
        manifest
            .check()
            .map_err(|e| EgressError::Config(e.to_string()))?;
        let hosts = manifest
            .egress
            .iter()
            .map(|e| {
                (
                    e.host.clone(),
                    HostRule {
                        ports: e.ports.clone(),
                        http: e.http,
                    },
                )
            })
            .collect();
        let mut seen = HashSet::new();
        let mut credentials = Vec::new();
        for c in &manifest.credentials {
            let bad = |what: &str| EgressError::Config(format!("credential {}: {what}", c.name));
            let name =
                SecretName::parse(&c.name).map_err(|e| EgressError::Config(e.to_string()))?;
            let placeholder = placeholders
                .iter()
                .find(|(n, _)| n == &c.name)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| bad("no placeholder given"))?;
            if !valid_placeholder(&placeholder) {
                return Err(bad(
                    "placeholder is not gmcp_ph_ followed by 16+ characters",
                ));
            }
            if !seen.insert(placeholder.clone()) {
                return Err(bad("placeholder is not unique"));
            }
            let inject = match &c.inject {
                Inject::Header { name, format } => {
                    let header = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                        .map_err(|_| bad("invalid header name"))?;
                    let (prefix, suffix) = format.split_once("{}").ok_or_else(|| bad("format"))?;
                    Presentation::Header {
                        name: header,
                        prefix: prefix.to_owned(),
                        suffix: suffix.to_owned(),
                    }
                }
                Inject::Basic => Presentation::Basic,
                Inject::Query { param } if !param.is_empty() => Presentation::Query {
                    param: param.clone(),
                },
                Inject::Query { .. } => return Err(bad("empty query parameter name")),
            };
            credentials.push(CredentialRule {
                name,
                placeholder,
                hosts: c.hosts.clone(),
                inject,
            });
        }
        Ok(Self { hosts, credentials })
    }

    /// May the sandbox open a tunnel (CONNECT or transparent TLS) to `t`?
    pub fn check_tunnel(&self, t: &Target) -> Result<(), Deny> {
        let rule = self.hosts.get(&t.host).ok_or(Deny::NotAllowlisted)?;
        if rule.ports.contains(&t.port) {
            Ok(())
        } else {
            Err(Deny::PortNotAllowed)
        }
    }

    /// May the sandbox send a plain-HTTP request to `t`?
    pub fn check_plain_http(&self, t: &Target) -> Result<(), Deny> {
        let rule = self.hosts.get(&t.host).ok_or(Deny::NotAllowlisted)?;
        if !rule.http {
            return Err(Deny::PlainHttpNotAllowed);
        }
        self.check_tunnel(t)
    }

    /// The names the DNS answerer of transparent mode resolves (those reachable on port 443).
    pub fn dns_names(&self) -> HashSet<String> {
        self.hosts
            .iter()
            .filter(|(_, r)| r.ports.contains(&443))
            .map(|(h, _)| h.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        let t = parse_authority("API.Example.com.:8443", 443).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("api.example.com", 8443));
        assert_eq!(parse_authority("api.example.com", 443).unwrap().port, 443);
        for (bad, why) in [
            ("1.2.3.4:443", Deny::IpLiteral),
            ("[::1]:443", Deny::IpLiteral),
            ("127.1", Deny::IpLiteral),
            ("2130706433:443", Deny::IpLiteral),
            ("user@api.example.com", Deny::BadAuthority),
            ("localhost:443", Deny::BadAuthority),
            ("api.example.com:0", Deny::BadAuthority),
            ("api.example.com:", Deny::BadAuthority),
            ("api.example.com:99999", Deny::BadAuthority),
            // Found by the `http_checks` fuzz target: a signed port passed as 443.
            ("api.example.com:+443", Deny::BadAuthority),
            ("*.example.com", Deny::BadAuthority),
            ("a b.com", Deny::BadAuthority),
            ("", Deny::BadAuthority),
        ] {
            assert_eq!(parse_authority(bad, 443).unwrap_err(), why, "{bad}");
        }
    }

    #[test]
    fn placeholders() {
        let a = make_placeholder().unwrap();
        let b = make_placeholder().unwrap();
        assert_ne!(a, b);
        assert!(valid_placeholder(&a), "{a}");
        assert_eq!(a.len(), 8 + 32);
        assert!(!valid_placeholder("gmcp_ph_short"));
        assert!(!valid_placeholder("gmcp_ph_0123456789abcdef\r\n"));
    }

    #[test]
    fn policy_from_manifest() {
        let m = Manifest::from_json(
            r#"{"name":"t","version":"1","command":["x"],
            "egress":[{"host":"api.example.com"},{"host":"plain.example.com","ports":[80],"http":true}],
            "credentials":[{"name":"TOKEN","hosts":["api.example.com"],
              "inject":{"type":"header","name":"Authorization","format":"Bearer {}"}}]}"#,
        )
        .unwrap();
        let ph = make_placeholder().unwrap();
        let p = Policy::new(&m, &[("TOKEN".into(), ph.clone())]).unwrap();
        let t = |h: &str, port| Target {
            host: h.into(),
            port,
        };
        assert_eq!(p.check_tunnel(&t("api.example.com", 443)), Ok(()));
        assert_eq!(
            p.check_tunnel(&t("api.example.com", 8443)),
            Err(Deny::PortNotAllowed)
        );
        assert_eq!(
            p.check_tunnel(&t("evil.example.com", 443)),
            Err(Deny::NotAllowlisted)
        );
        assert_eq!(
            p.check_plain_http(&t("api.example.com", 443)),
            Err(Deny::PlainHttpNotAllowed)
        );
        assert_eq!(p.check_plain_http(&t("plain.example.com", 80)), Ok(()));
        assert_eq!(
            p.dns_names(),
            HashSet::from(["api.example.com".to_string()])
        );
        assert!(Policy::new(&m, &[]).is_err(), "missing placeholder");
        assert!(Policy::new(&m, &[("TOKEN".into(), "gmcp_ph_x".into())]).is_err());
    }
}
