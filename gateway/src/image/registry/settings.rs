//! One `[[images.registries]]` entry of `gigmcp.toml`: how to reach a registry. Kept with the
//! client that obeys it (the configuration module reads it; `image` needs nothing of
//! `config`).

use std::path::PathBuf;

use serde::Deserialize;

/// One `[[images.registries]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]`, exactly as image references name it.
    pub host: String,
    /// The CA (PEM) the registry's and its token origins' certificates chain to; unset: the
    /// system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Basic credentials (also presented to the token realm): the user, and the name of the
    /// vault secret holding the password (the value never appears here).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Origins (`https://auth.example[:port]`) besides the registry's own where a Bearer realm
    /// may live and receive the credentials.
    #[serde(default)]
    pub token_origins: Vec<String>,
    /// Plain HTTP: only for a registry on a loopback address (tests, a local mirror).
    #[serde(default)]
    pub plain_http: bool,
}

impl RegistryConfig {
    pub fn anonymous(host: &str) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
            ca_file: None,
            username: None,
            password_secret: None,
            token_origins: Vec::new(),
            plain_http: false,
        }
    }

    /// The host part of [`RegistryConfig::host`], without the port or IPv6 brackets.
    pub fn hostname(&self) -> &str {
        split_host_port(&self.host).0
    }

    /// Whether the configured host is a loopback name or address (`plain_http` needs one).
    pub fn is_loopback(&self) -> bool {
        let h = self.hostname();
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    pub fn validate(&self) -> Result<(), String> {
        let (host, port) = split_host_port(&self.host);
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
            || port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0))
        {
            return Err(format!("{:?} is not host[:port]", self.host));
        }
        if self.plain_http && !self.is_loopback() {
            return Err(format!(
                "{}: plain_http is only allowed for a loopback registry",
                self.host
            ));
        }
        if self.username.is_some() != self.password_secret.is_some() {
            return Err(format!(
                "{}: username and password_secret go together",
                self.host
            ));
        }
        for origin in &self.token_origins {
            let uri: http::Uri = origin
                .parse()
                .map_err(|_| format!("{}: token origin {origin:?} is not a URL", self.host))?;
            let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/");
            if uri.scheme_str() != Some("https") || uri.host().is_none() || !bare {
                return Err(format!(
                    "{}: token origin {origin:?} is not https://host[:port]",
                    self.host
                ));
            }
        }
        Ok(())
    }
}

/// `host:port`, `[v6]:port`, `host` → (host, port).
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}
