//! The curation file, `servers/<name>/curation.toml`: what a registry's reviewers add to a
//! `server.json`, which says nothing about where a server may connect or where its secrets may
//! be sent. It names the local server, its egress hosts and ports, for each secret variable the
//! hosts it may reach and how it is injected, the tool subset, limits, private ranges with
//! reasons, and values for non-secret variables:
//!
//! ```toml
//! name = "issues"
//! tools = ["create_issue", "search_issues"]
//! [[egress]]
//! host = "api.issues.example.com"
//! [[secrets]]
//! env = "ISSUES_TOKEN"
//! hosts = ["api.issues.example.com"]
//! inject = { type = "header", name = "Authorization", format = "Bearer {}" }
//! ```
//!
//! Parsed strictly (unknown keys refused; the parts are the manifest's own types). Whether it
//! fits its `server.json` is `import`'s question; this module knows nothing of server.json.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::manifest::{Egress, Inject, Limits, PrivateRange, valid_server_name};

/// A curation file is a page of TOML.
pub const MAX_CURATION: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curation {
    /// The server's local name (the manifest's and the target path's).
    pub name: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub egress: Vec<Egress>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default)]
    pub private_ranges: Vec<PrivateRange>,
    /// Values for the server's non-secret variables (over server.json's defaults).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where one of server.json's secret variables may be sent, and how.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub env: String,
    pub hosts: Vec<String>,
    pub inject: Inject,
}

#[derive(Debug, thiserror::Error)]
pub enum CurationError {
    #[error("curation.toml: larger than {MAX_CURATION} bytes")]
    TooLarge,
    #[error("curation.toml: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("curation.toml: name {0:?} is not a server name (1-32 of a-z 0-9 - _)")]
    Name(String),
}

pub fn parse(text: &str) -> Result<Curation, CurationError> {
    if text.len() > MAX_CURATION {
        return Err(CurationError::TooLarge);
    }
    let c: Curation = toml::from_str(text)?;
    if !valid_server_name(&c.name) {
        return Err(CurationError::Name(c.name.chars().take(64).collect()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUES: &str = r#"
        name = "issues"
        tools = ["create_issue"]
        [limits]
        memory_mib = 256
        [[egress]]
        host = "api.issues.example.com"
        [[secrets]]
        env = "ISSUES_TOKEN"
        hosts = ["api.issues.example.com"]
        inject = { type = "header", name = "Authorization", format = "Bearer {}" }
        [[private_ranges]]
        cidr = "10.2.0.0/16"
        reason = "the self-hosted tracker"
    "#;

    #[test]
    fn a_curation_file_parses_into_the_manifest_types() {
        let c = parse(ISSUES).unwrap();
        assert_eq!(c.name, "issues");
        assert_eq!(c.egress[0].ports, vec![443]);
        assert_eq!(c.secrets[0].env, "ISSUES_TOKEN");
        assert_eq!(c.limits.unwrap().memory_mib, Some(256));
        assert_eq!(c.private_ranges[0].reason, "the self-hosted tracker");
    }

    #[test]
    fn unknown_keys_and_bad_names_are_refused() {
        let typo = ISSUES.replacen("tools", "tool", 1);
        assert!(matches!(parse(&typo), Err(CurationError::Toml(_))));
        let nested = ISSUES.replacen("memory_mib", "memory", 1);
        assert!(matches!(parse(&nested), Err(CurationError::Toml(_))));
        let name = ISSUES.replacen("\"issues\"", "\"Issues__x\"", 1);
        assert!(matches!(parse(&name), Err(CurationError::Name(_))));
        assert!(matches!(
            parse(&"#".repeat(MAX_CURATION + 1)),
            Err(CurationError::TooLarge)
        ));
    }
}
