//! A registry author's offline operations over a repository directory (`tuf::Repo`): turning
//! a server directory (`servers/<name>/server.json` + `curation.toml`) and its built image (an
//! oci-layout) into a signed-to-be target, and verifying a published repository the way the
//! gateway will: a full `tuf::update` from the pinned root, then every target parsed as an
//! [`Entry`] and linted.
//!
//! Nothing is added that lint refuses: the author sees the same findings an admin's gateway
//! would refuse the entry for. It knows nothing of how the image was built or where the
//! repository is served.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::image::digest::Digest;
use crate::image::layout::{Layout, LayoutError};
use crate::image::oci::{self, ImageConfig};
use crate::tuf::{self, Fetch, Repo, RepoError, Stored, Target, TufError};

use super::curation::{self, CurationError};
use super::entry::{Entry, EntryError, ImageDescriptor};
use super::import::{self, BuildSpec, ImportError, Imported};
use super::lint::{Finding, LintPolicy, lint};
use super::mcp_registry::{self, McpRegistryError};

#[derive(Debug, thiserror::Error)]
pub enum AuthorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    ServerJson {
        path: PathBuf,
        source: McpRegistryError,
    },
    #[error("{path}: {source}")]
    Curation {
        path: PathBuf,
        source: CurationError,
    },
    #[error("{dir}: {source}")]
    Import { dir: PathBuf, source: ImportError },
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: usize },
    #[error("{path}: {why}")]
    Image { path: PathBuf, why: String },
    #[error("target {target}: {source}")]
    Entry { target: String, source: EntryError },
    #[error("{target}: refused by lint:\n{}", render(.findings))]
    Lint {
        target: String,
        findings: Vec<Finding>,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Tuf(#[from] TufError),
}

fn render(findings: &[Finding]) -> String {
    let lines: Vec<String> = findings
        .iter()
        .map(|f| format!("  {}: {}: {}", f.field, f.rule, f.message))
        .collect();
    lines.join("\n")
}

/// A server directory imported: `server.json` + `curation.toml` → manifest and build.
pub fn read_server_dir(dir: &Path) -> Result<Imported, AuthorError> {
    let json_path = dir.join("server.json");
    let raw = read_capped(&json_path, mcp_registry::MAX_SERVER_JSON)?;
    let server = mcp_registry::parse_server(&raw).map_err(|source| AuthorError::ServerJson {
        path: json_path,
        source,
    })?;
    let toml_path = dir.join("curation.toml");
    let raw = read_capped(&toml_path, curation::MAX_CURATION)?;
    let text = String::from_utf8_lossy(&raw);
    let curation = curation::parse(&text).map_err(|source| AuthorError::Curation {
        path: toml_path,
        source,
    })?;
    import::import(&server, &curation).map_err(|source| AuthorError::Import {
        dir: dir.to_owned(),
        source,
    })
}

/// The one image of an oci-layout directory: its manifest's descriptor (hashed here, not
/// trusted from `index.json`) and its config's labels.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub labels: Option<BTreeMap<String, String>>,
}

pub fn layout_image(path: &Path) -> Result<LayoutImage, AuthorError> {
    let layout = Layout::open(path)?;
    let index = layout.index()?;
    let bad = |why: String| AuthorError::Image {
        path: path.to_owned(),
        why,
    };
    let [d] = index.manifests.as_slice() else {
        return Err(bad(format!(
            "index.json lists {} manifests; an entry pins exactly one image",
            index.manifests.len()
        )));
    };
    if !oci::is_manifest(&d.media_type) || d.size > oci::MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "{} of {} bytes is not an image manifest",
            d.media_type, d.size
        )));
    }
    let manifest_bytes = blob(&layout, path, &d.digest, d.size)?;
    let manifest: oci::Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("manifest: {e}")))?;
    if manifest.config.size > oci::MAX_CONFIG_BYTES {
        return Err(bad("config larger than the image store accepts".into()));
    }
    let config_bytes = blob(&layout, path, &manifest.config.digest, manifest.config.size)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| bad(format!("config: {e}")))?;
    Ok(LayoutImage {
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
        labels: config.config.labels,
    })
}

/// A blob of a directory layout, read within its pinned size and checked against its digest.
fn blob(layout: &Layout, path: &Path, digest: &Digest, size: u64) -> Result<Vec<u8>, AuthorError> {
    let file = layout.blob_path(digest).ok_or_else(|| AuthorError::Image {
        path: path.to_owned(),
        why: "a layout archive: give the layout directory".into(),
    })?;
    let bytes = read_capped(&file, usize::try_from(size).unwrap_or(usize::MAX))?;
    if bytes.len() as u64 != size || Digest::of(&bytes) != *digest {
        return Err(AuthorError::Image {
            path: file,
            why: format!("is not the {size} bytes of {digest}"),
        });
    }
    Ok(bytes)
}

/// The entry for a server directory and its image, linted: what `add-server` stages.
pub fn entry_for(
    server_dir: &Path,
    image: &LayoutImage,
    repository: &str,
    policy: &LintPolicy,
) -> Result<Entry, AuthorError> {
    let imported = read_server_dir(server_dir)?;
    if let BuildSpec::Oci { .. } = imported.build {
        import::check_oci_label(&imported.source.registry_name, image.labels.as_ref()).map_err(
            |source| AuthorError::Import {
                dir: server_dir.to_owned(),
                source,
            },
        )?;
    }
    let entry = Entry {
        name: imported.manifest.name.clone(),
        version: imported.manifest.version.clone(),
        description: imported.description,
        image: ImageDescriptor {
            repository: repository.to_owned(),
            digest: image.digest.to_string(),
            size: image.size,
            media_type: image.media_type.clone(),
        },
        manifest: imported.manifest,
        source: Some(imported.source),
    };
    let findings = lint(&entry.manifest, policy);
    if !findings.is_empty() {
        return Err(AuthorError::Lint {
            target: entry.target_path(),
            findings,
        });
    }
    // What the gateway will parse back must be this entry: checked before it is signed.
    let (path, length, sha256, custom) = entry.to_target_parts();
    Entry::from_target(&path, length, &sha256, &custom).map_err(|source| AuthorError::Entry {
        target: path,
        source,
    })
}

/// Stages `entry` in the repository (signed by the next `publish`).
pub fn stage(repo: &mut Repo, entry: &Entry) {
    let (path, length, sha256, custom) = entry.to_target_parts();
    repo.set_target(Target {
        path,
        length,
        sha256,
        custom,
    });
}

/// What `verify` found: the verified versions and every entry with its lint findings.
#[derive(Debug, Clone)]
pub struct Verified {
    pub versions: tuf::Versions,
    pub entries: Vec<(Entry, Vec<Finding>)>,
}

/// A published repository verified as the gateway will: every role from the pinned `root`,
/// then every target as an entry with its lint findings.
pub fn verify(
    root: &[u8],
    fetch: &mut dyn Fetch,
    limits: &tuf::Limits,
    now: SystemTime,
    policy: &LintPolicy,
) -> Result<Verified, AuthorError> {
    let stored = Stored {
        root: root.to_vec(),
        ..Stored::default()
    };
    let updated = tuf::update(&stored, fetch, limits, now)?;
    let mut entries = Vec::new();
    for t in updated.targets.entries.values() {
        let entry =
            Entry::from_target(&t.path, t.length, &t.sha256, &t.custom).map_err(|source| {
                AuthorError::Entry {
                    target: t.path.clone(),
                    source,
                }
            })?;
        let findings = lint(&entry.manifest, policy);
        entries.push((entry, findings));
    }
    Ok(Verified {
        versions: updated.versions,
        entries,
    })
}

fn read_capped(path: &Path, max: usize) -> Result<Vec<u8>, AuthorError> {
    let io = |source| AuthorError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > max {
        return Err(AuthorError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}
