//! The MCP Registry's documents, read from files (an offline snapshot): a server's
//! `server.json` (schema 2025-12-11) and a page of `GET /v0.1/servers` (`servers[]` of
//! `{server, _meta}`, `metadata.nextCursor`).
//!
//! Strict where it matters: sizes capped, duplicate JSON keys refused (`tuf::cjson::parse`, so
//! two readers cannot see two different documents), the name reverse-DNS with one `/`, the
//! fields we use typed. Tolerant of fields we do not use: the schema grows. Nothing here is
//! signed or trusted: the curation file and the lint decide what a server may do. It knows
//! nothing of curation or of images.

use serde::Deserialize;

use crate::tuf::cjson;

/// A `server.json` far larger than this is not one.
pub const MAX_SERVER_JSON: usize = 256 << 10;
/// A page of the listing.
pub const MAX_PAGE: usize = 8 << 20;

/// One server as the MCP Registry describes it (the fields the import reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerJson {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub version: String,
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub remotes: Vec<Remote>,
}

/// A way to run the server: a package of a registry (`npm`, `pypi`, `oci`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub registry_type: String,
    /// The package name, or for `oci` a full image reference.
    pub identifier: String,
    #[serde(default)]
    pub version: Option<String>,
    pub transport: Transport,
    #[serde(default)]
    pub environment_variables: Vec<EnvVar>,
    #[serde(default)]
    pub package_arguments: Vec<serde_json::Value>,
    #[serde(default)]
    pub runtime_arguments: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Transport {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_required: bool,
    #[serde(default)]
    pub is_secret: bool,
    #[serde(default)]
    pub default: Option<String>,
}

/// A server someone else runs (`streamable-http`, `sse`): there is nothing to sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Remote {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

/// One page of `/v0.1/servers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub servers: Vec<PageEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PageEntry {
    pub server: ServerJson,
    /// The registry's own metadata (status, publication times): kept, not interpreted.
    #[serde(rename = "_meta", default)]
    pub meta: serde_json::Value,
}

#[derive(Deserialize)]
struct RawPage {
    servers: Vec<PageEntry>,
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    next_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum McpRegistryError {
    #[error("{what}: larger than {max} bytes")]
    TooLarge { what: &'static str, max: usize },
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        source: cjson::CjsonError,
    },
    #[error("{what}: {field}: {detail}")]
    Field {
        what: &'static str,
        field: String,
        detail: String,
    },
    #[error("server name {0:?} is not reverse-DNS with one '/' (io.github.owner/name)")]
    Name(String),
}

/// A `server.json`.
pub fn parse_server(raw: &[u8]) -> Result<ServerJson, McpRegistryError> {
    let server: ServerJson = typed(raw, "server.json", MAX_SERVER_JSON)?;
    check_server(&server)?;
    Ok(server)
}

/// A page of `/v0.1/servers`.
pub fn parse_page(raw: &[u8]) -> Result<Page, McpRegistryError> {
    let page: RawPage = typed(raw, "servers page", MAX_PAGE)?;
    for entry in &page.servers {
        check_server(&entry.server)?;
    }
    Ok(Page {
        servers: page.servers,
        next_cursor: page.metadata.next_cursor,
    })
}

fn typed<T: serde::de::DeserializeOwned>(
    raw: &[u8],
    what: &'static str,
    max: usize,
) -> Result<T, McpRegistryError> {
    if raw.len() > max {
        return Err(McpRegistryError::TooLarge { what, max });
    }
    let value = cjson::parse(raw).map_err(|source| McpRegistryError::Json { what, source })?;
    serde_path_to_error::deserialize(&value).map_err(|e| McpRegistryError::Field {
        what,
        field: e.path().to_string(),
        detail: e.into_inner().to_string(),
    })
}

/// The name is `reverse.dns/name`: what an OCI image's label and the curation refer to.
fn check_server(s: &ServerJson) -> Result<(), McpRegistryError> {
    let ok = s.name.len() <= 200
        && s.name.split_once('/').is_some_and(|(ns, n)| {
            !ns.is_empty()
                && !n.is_empty()
                && ns.contains('.')
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if !ok {
        return Err(McpRegistryError::Name(s.name.chars().take(120).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/mcp-registry/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    #[test]
    fn the_offline_snapshot_pages_chain_by_cursor_and_hold_both_reference_servers() {
        let first = parse_page(&fixture("servers-page-1.json")).unwrap();
        assert_eq!(first.next_cursor.as_deref(), Some("page-2"));
        let second = parse_page(&fixture("servers-page-2.json")).unwrap();
        assert_eq!(second.next_cursor, None);
        let all: Vec<&ServerJson> = first
            .servers
            .iter()
            .chain(&second.servers)
            .map(|e| &e.server)
            .collect();
        let everything = all
            .iter()
            .find(|s| {
                s.packages
                    .iter()
                    .any(|p| p.identifier == "@modelcontextprotocol/server-everything")
            })
            .unwrap();
        assert_eq!(everything.version, "2026.8.31");
        assert_eq!(everything.packages[0].registry_type, "npm");
        let time = all
            .iter()
            .find(|s| s.packages.iter().any(|p| p.identifier == "mcp-server-time"))
            .unwrap();
        assert_eq!(
            (
                time.version.as_str(),
                time.packages[0].registry_type.as_str()
            ),
            ("2026.10.19", "pypi")
        );
        assert!(all.iter().any(|s| !s.remotes.is_empty()));
        assert!(all.iter().any(|s| {
            s.packages
                .iter()
                .any(|p| p.environment_variables.iter().any(|v| v.is_secret))
        }));
    }

    #[test]
    fn unknown_fields_are_tolerated_and_duplicate_keys_refused() {
        let text = r#"{"name": "io.github.x/y", "version": "1", "futureField": {"a": 1},
                       "packages": [{"registryType": "npm", "identifier": "y", "version": "1",
                                     "transport": {"type": "stdio"}, "newThing": true}]}"#;
        assert_eq!(parse_server(text.as_bytes()).unwrap().packages.len(), 1);
        let dup = r#"{"name": "io.github.x/y", "version": "1", "version": "2"}"#;
        assert!(matches!(
            parse_server(dup.as_bytes()),
            Err(McpRegistryError::Json { .. })
        ));
    }

    #[test]
    fn an_oversized_document_a_bad_name_or_a_wrong_type_is_refused() {
        let big = format!(
            r#"{{"name": "io.github.x/y", "version": "1", "description": "{}"}}"#,
            "a".repeat(MAX_SERVER_JSON)
        );
        assert!(matches!(
            parse_server(big.as_bytes()),
            Err(McpRegistryError::TooLarge { .. })
        ));
        for name in [
            "y",
            "io.github.x/y/z",
            "nodots/y",
            "io.github.x/",
            "io github.x/y",
        ] {
            let text = format!(r#"{{"name": "{name}", "version": "1"}}"#);
            assert!(
                matches!(
                    parse_server(text.as_bytes()),
                    Err(McpRegistryError::Name(_))
                ),
                "{name}"
            );
        }
        let wrong =
            r#"{"name": "io.github.x/y", "version": "1", "packages": [{"registryType": 1}]}"#;
        let e = parse_server(wrong.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("packages[0].registryType"), "{e}");
    }
}
