//! What an installed package is, read from the install output (untrusted: every document is
//! read through the [`Tree`], capped, and parsed as data): the package's own version (it must
//! be the one asked for), its entrypoint and its MCP server name (npm's `mcpName`, a
//! `server.json` beside it, or PyPI's `mcp-name:` line, which the MCP Registry reads as proof
//! of ownership).
//!
//! The app layer lands at `/app`; npm's `.bin` links are relative and pip's `--target` tree
//! has no absolute paths in it, so the tree is relocatable. The entrypoint names the runtime
//! explicitly (`node FILE`, `python3 FILE`), so no `#!` line of the package's decides what runs.

use std::io::Read;

use super::spec::{Ecosystem, Spec};
use super::tree::{Kind, Tree};

/// Where the app layer lands in the image.
pub const APP_DIR: &str = "app";
/// The most of a metadata document read.
const MAX_DOCUMENT: u64 = 1 << 20;

/// What the image runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    /// The package's own server name, if it declares one.
    pub server_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the install output has no {0}: the package was not installed")]
    Missing(String),
    #[error("the installed {package} is version {found:?}, not the {wanted} asked for")]
    WrongVersion {
        package: String,
        found: String,
        wanted: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Tree(#[from] super::tree::TreeError),
}

fn read(tree: &Tree, path: &str) -> Result<Option<Vec<u8>>, AppError> {
    let Some(entry) = tree.entries.iter().find(|e| e.path == path.as_bytes()) else {
        return Ok(None);
    };
    let Kind::File { size, .. } = entry.kind else {
        return Err(AppError::Invalid {
            path: path.into(),
            message: "not a regular file".into(),
        });
    };
    if size > MAX_DOCUMENT {
        return Err(AppError::Invalid {
            path: path.into(),
            message: format!("{size} bytes, over {MAX_DOCUMENT}"),
        });
    }
    let mut bytes = Vec::new();
    tree.open(entry)?
        .read_to_end(&mut bytes)
        .map_err(|e| AppError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
    Ok(Some(bytes))
}

fn is_file(tree: &Tree, path: &str) -> bool {
    tree.entries
        .iter()
        .any(|e| e.path == path.as_bytes() && matches!(e.kind, Kind::File { .. }))
}

/// `a/./b/../c` → `a/c`; `None` if it climbs out.
fn normalise(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Reads the installed package (`package` is its npm name or PyPI name; `wanted` the version,
/// `None` for a local directory).
pub fn inspect(
    tree: &Tree,
    eco: Ecosystem,
    package: &str,
    wanted: Option<&str>,
) -> Result<App, AppError> {
    match eco {
        Ecosystem::Npm => npm(tree, package, wanted),
        Ecosystem::Pypi => pypi(tree, package, wanted),
    }
}

fn npm(tree: &Tree, package: &str, wanted: Option<&str>) -> Result<App, AppError> {
    let dir = format!("node_modules/{package}");
    let manifest_path = format!("{dir}/package.json");
    let bytes =
        read(tree, &manifest_path)?.ok_or_else(|| AppError::Missing(manifest_path.clone()))?;
    let invalid = |message: String| AppError::Invalid {
        path: manifest_path.clone(),
        message,
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let version = json["version"].as_str().unwrap_or_default();
    if let Some(wanted) = wanted
        && version != wanted
    {
        return Err(AppError::WrongVersion {
            package: package.into(),
            found: version.into(),
            wanted: wanted.into(),
        });
    }
    let unscoped = package.rsplit('/').next().unwrap_or(package);
    let bin = match &json["bin"] {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map
            .get(unscoped)
            .or_else(|| (map.len() == 1).then(|| map.values().next()).flatten())
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        _ => None,
    }
    .ok_or_else(|| invalid("no `bin` to run (or several, none named after the package)".into()))?;
    let script = normalise(&bin)
        .map(|b| format!("{dir}/{b}"))
        .filter(|p| is_file(tree, p))
        .ok_or_else(|| invalid(format!("its bin {bin:?} is not a file of the package")))?;
    let server_name = match json["mcpName"].as_str() {
        Some(n) => Some(n.to_owned()),
        None => server_json_name(tree, &format!("{dir}/server.json"))?,
    };
    Ok(App {
        entrypoint: vec!["/usr/local/bin/node".into(), format!("/{APP_DIR}/{script}")],
        // The sandbox's seccomp policy kills io_uring_*, which libuv uses unless told not to.
        env: vec!["NODE_ENV=production".into(), "UV_USE_IO_URING=0".into()],
        server_name,
    })
}

fn server_json_name(tree: &Tree, path: &str) -> Result<Option<String>, AppError> {
    let Some(bytes) = read(tree, path)? else {
        return Ok(None);
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| AppError::Invalid {
            path: path.into(),
            message: e.to_string(),
        })?;
    Ok(json["name"].as_str().map(str::to_owned))
}

/// PEP 503 normalisation: lower case, runs of `-_.` as one `-`.
fn pep503(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn pypi(tree: &Tree, package: &str, wanted: Option<&str>) -> Result<App, AppError> {
    let want = pep503(package);
    let mut found = None;
    for e in &tree.entries {
        let path = String::from_utf8_lossy(&e.path);
        let Some(dist) = path.strip_suffix(".dist-info") else {
            continue;
        };
        if dist.contains('/') || !matches!(e.kind, Kind::Dir) {
            continue;
        }
        let metadata_path = format!("{path}/METADATA");
        let Some(metadata) = read(tree, &metadata_path)? else {
            continue;
        };
        let text = String::from_utf8_lossy(&metadata).into_owned();
        let header = |key: &str| {
            text.lines()
                .take_while(|l| !l.is_empty())
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_owned())
        };
        if header("Name:").is_some_and(|n| pep503(&n) == want) {
            found = Some((path.into_owned(), text.clone(), header("Version:")));
            break;
        }
    }
    let (dist_info, metadata, version) =
        found.ok_or_else(|| AppError::Missing(format!("*.dist-info for {package}")))?;
    let version = version.unwrap_or_default();
    if let Some(wanted) = wanted
        && version != wanted
    {
        return Err(AppError::WrongVersion {
            package: package.into(),
            found: version,
            wanted: wanted.into(),
        });
    }
    let entry_points_path = format!("{dist_info}/entry_points.txt");
    let entry_points = read(tree, &entry_points_path)?
        .ok_or_else(|| AppError::Missing(entry_points_path.clone()))?;
    let entry_points = String::from_utf8_lossy(&entry_points).into_owned();
    let scripts: Vec<&str> = entry_points
        .lines()
        .skip_while(|l| l.trim() != "[console_scripts]")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.is_empty())
        .collect();
    let script = scripts
        .iter()
        .find(|s| pep503(s) == want)
        .or_else(|| (scripts.len() == 1).then(|| &scripts[0]))
        .ok_or_else(|| AppError::Invalid {
            path: entry_points_path,
            message: "no console script named after the package (or more than one)".into(),
        })?;
    let bin = format!("bin/{script}");
    if !is_file(tree, &bin) {
        return Err(AppError::Missing(bin));
    }
    // The MCP Registry's proof of a PyPI package's ownership: `mcp-name: NAME` in its README
    // (usually hidden in an HTML comment: `<!-- mcp-name: NAME -->`).
    let server_name = metadata
        .lines()
        .find_map(|l| l.split_once("mcp-name:").map(|(_, rest)| rest))
        .map(|n| n.trim().trim_end_matches("-->").trim().to_owned())
        .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
    Ok(App {
        entrypoint: vec!["/usr/bin/python3".into(), format!("/{APP_DIR}/{bin}")],
        env: vec![
            format!("PYTHONPATH=/{APP_DIR}"),
            "PYTHONDONTWRITEBYTECODE=1".into(),
        ],
        server_name,
    })
}

/// The package's name and version to look for in the output.
pub fn wanted(spec: &Spec, dir_name: Option<String>) -> (String, Option<String>) {
    match spec {
        Spec::Npm { name, version } | Spec::Pypi { name, version } => {
            (name.clone(), Some(version.clone()))
        }
        Spec::Dir { .. } => (dir_name.unwrap_or_default(), None),
    }
}
