//! The registry author's verbs, offline (no daemon, no state directory, no master key):
//! `keygen`, `init`, `add-server`, `sign`, `verify` over a repository directory
//! (`tuf::Repo`, `catalog::author`), and `lint`, which checks manifests or server directories
//! with the rules the gateway applies before it installs one, printing
//! `FILE: field: rule: message` for each finding.
//!
//! `add-server` needs no key: it stages the entry in `DIR/staged-targets.json` (public
//! information, not metadata: no client reads it), and `sign`, which holds the keys, signs
//! what is staged and removes the file. So a CI job can prepare entries where no key is.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::catalog;
use crate::catalog::author::{self, entry_for, layout_image, read_server_dir};
use crate::catalog::entry::Entry;
use crate::catalog::lint::{Finding, LintPolicy, lint};
use crate::manifest::Manifest;
use crate::terminal;
use crate::tuf::{self, Expiry, KeyPair, PublicKey, Repo, RoleSetup, Target};

/// A manifest is a few kilobytes; a file far larger is not one.
const MAX_MANIFEST_FILE: u64 = 1 << 20;
/// Where `add-server` leaves entries for `sign`.
const STAGED: &str = "staged-targets.json";

#[derive(Debug, Subcommand)]
pub enum AuthorCommand {
    /// Write a new ed25519 signing key: FILE (private, mode 0600) and FILE.pub.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Create a repository in DIR: root and targets keys (public key files), signed with the
    /// private keys given by --key. Snapshot and timestamp are signed by the targets keys
    /// unless given their own.
    Init {
        dir: PathBuf,
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        #[arg(long = "targets-key", required = true)]
        targets_keys: Vec<PathBuf>,
        #[arg(long = "snapshot-key")]
        snapshot_keys: Vec<PathBuf>,
        #[arg(long = "timestamp-key")]
        timestamp_keys: Vec<PathBuf>,
        /// Signatures needed for root and targets.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Stage a server (servers/<name>/ with server.json + curation.toml) built as the image in
    /// an oci-layout directory, to be served from HOST/REPO: imported, linted (refused on any
    /// finding), signed by the next `sign`.
    AddServer {
        dir: PathBuf,
        #[arg(long)]
        server_dir: PathBuf,
        #[arg(long)]
        image_layout: PathBuf,
        /// HOST[:PORT]/REPO the image is pushed to (no tag, no digest).
        #[arg(long)]
        repository: String,
    },
    /// Sign what is staged (new targets, snapshot and timestamp; with nothing staged, a new
    /// timestamp only).
    Sign {
        dir: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Verify a repository (a directory or an https URL) as a gateway pinning ROOT would, and
    /// lint every entry; prints the entries, exits 1 on any finding.
    Verify {
        location: String,
        #[arg(long)]
        root: PathBuf,
    },
    /// Lint manifests (JSON files) or server directories (server.json + curation.toml) with
    /// the rules the gateway applies before installing: prints FILE: field: rule: message per
    /// finding; exits 1 if there is any.
    Lint {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn run(cmd: AuthorCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let now = SystemTime::now();
    match cmd {
        AuthorCommand::Keygen { out: path } => keygen(&path, &mut out),
        AuthorCommand::Init {
            dir,
            root_keys,
            targets_keys,
            snapshot_keys,
            timestamp_keys,
            threshold,
            keys,
        } => {
            let public = |paths: &[PathBuf]| -> anyhow::Result<Vec<PublicKey>> {
                paths.iter().map(|p| Ok(PublicKey::read(p)?)).collect()
            };
            let targets = public(&targets_keys)?;
            let or_targets = |paths: &[PathBuf]| -> anyhow::Result<Vec<PublicKey>> {
                if paths.is_empty() {
                    Ok(targets.clone())
                } else {
                    public(paths)
                }
            };
            let setup = RoleSetup {
                root: (public(&root_keys)?, threshold),
                snapshot: (or_targets(&snapshot_keys)?, 1),
                timestamp: (or_targets(&timestamp_keys)?, 1),
                targets: (targets.clone(), threshold),
            };
            let signers = read_keys(&keys)?;
            let signers: Vec<&KeyPair> = signers.iter().collect();
            Repo::init(&dir, &setup, Expiry::default(), &signers, now)?;
            writeln!(out, "initialised {} (root version 1)", dir.display())?;
            Ok(ExitCode::SUCCESS)
        }
        AuthorCommand::AddServer {
            dir,
            server_dir,
            image_layout,
            repository,
        } => add_server(&dir, &server_dir, &image_layout, &repository, &mut out),
        AuthorCommand::Sign { dir, keys } => sign(&dir, &keys, now, &mut out),
        AuthorCommand::Verify { location, root } => verify(&location, &root, now, &mut out),
        AuthorCommand::Lint { paths } => lint_paths(&paths, &mut out),
    }
}

fn keygen(path: &Path, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let key = KeyPair::generate();
    key.write_private(path)?;
    let public = path_with_suffix(path, ".pub");
    key.public().write(&public)?;
    writeln!(
        out,
        "wrote {} (private, 0600) and {} (key id {})",
        path.display(),
        public.display(),
        key.public().key_id()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn read_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<KeyPair>> {
    paths
        .iter()
        .map(|p| KeyPair::read_private(p).with_context(|| p.display().to_string()))
        .collect()
}

fn add_server(
    dir: &Path,
    server_dir: &Path,
    layout: &Path,
    repository: &str,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    // Opening checks the repository is one before anything is staged in it.
    Repo::open(dir)?;
    let image = layout_image(layout)?;
    let entry = entry_for(server_dir, &image, repository, &LintPolicy::default())?;
    let mut staged = read_staged(dir)?;
    let (path, length, sha256, custom) = entry.to_target_parts();
    staged.retain(|t| t.path != path);
    staged.push(Target {
        path: path.clone(),
        length,
        sha256,
        custom,
    });
    write_staged(dir, &staged)?;
    writeln!(
        out,
        "staged {} ({}); `sign` publishes it",
        terminal::escape(&path),
        terminal::escape(&entry.reference())
    )?;
    Ok(ExitCode::SUCCESS)
}

fn sign(
    dir: &Path,
    keys: &[PathBuf],
    now: SystemTime,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let mut repo = Repo::open(dir)?;
    let staged = read_staged(dir)?;
    for target in &staged {
        repo.set_target(target.clone());
    }
    let signers = read_keys(keys)?;
    let signers: Vec<&KeyPair> = signers.iter().collect();
    let v = repo.publish(&signers, Expiry::default(), now)?;
    if !staged.is_empty() {
        std::fs::remove_file(dir.join(STAGED))
            .with_context(|| dir.join(STAGED).display().to_string())?;
    }
    writeln!(
        out,
        "signed {}: root {}, targets {}, snapshot {}, timestamp {} ({} staged)",
        dir.display(),
        v.root,
        v.targets,
        v.snapshot,
        v.timestamp,
        staged.len()
    )?;
    Ok(ExitCode::SUCCESS)
}

fn verify(
    location: &str,
    root: &Path,
    now: SystemTime,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let root_bytes = std::fs::read(root).with_context(|| root.display().to_string())?;
    let mut fetch = catalog::fetcher(location)?;
    let author::Verified {
        versions: v,
        entries,
    } = author::verify(
        &root_bytes,
        fetch.as_mut(),
        &tuf::Limits::default(),
        now,
        &LintPolicy::default(),
    )?;
    writeln!(
        out,
        "verified {}: root {}, targets {}, snapshot {}, timestamp {}; {} entries",
        terminal::escape(location),
        v.root,
        v.targets,
        v.snapshot,
        v.timestamp,
        entries.len()
    )?;
    let mut any = false;
    for (entry, findings) in &entries {
        writeln!(
            out,
            "  {}",
            terminal::escape(&format!("{} {}", entry.target_path(), entry.reference()))
        )?;
        print_findings(&entry.target_path(), findings, out)?;
        any |= !findings.is_empty();
    }
    Ok(if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn lint_paths(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let policy = LintPolicy::default();
    let mut any = false;
    for path in paths {
        let findings = if path.is_dir() {
            lint(&read_server_dir(path)?.manifest, &policy)
        } else {
            lint_file(path, &policy)?
        };
        let shown = path.display().to_string();
        if findings.is_empty() {
            writeln!(out, "{}: no findings", terminal::escape(&shown))?;
        }
        print_findings(&shown, &findings, out)?;
        any |= !findings.is_empty();
    }
    Ok(if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_findings(what: &str, findings: &[Finding], out: &mut dyn Write) -> anyhow::Result<()> {
    for f in findings {
        let field = if f.field.is_empty() {
            "(manifest)"
        } else {
            &f.field
        };
        let line = format!("{what}: {field}: {}: {}", f.rule, f.message);
        writeln!(out, "{}", terminal::escape(&line))?;
    }
    Ok(())
}

/// The findings of one manifest file; one that does not parse is one finding (`parse`).
fn lint_file(path: &Path, policy: &LintPolicy) -> anyhow::Result<Vec<Finding>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{}", path.display()))?;
    if text.len() as u64 > MAX_MANIFEST_FILE {
        bail!("{}: larger than {MAX_MANIFEST_FILE} bytes", path.display());
    }
    Ok(match Manifest::parse_json(&text) {
        Ok(manifest) => lint(&manifest, policy),
        Err(e) => vec![Finding {
            field: String::new(),
            rule: "parse",
            message: e.problem,
        }],
    })
}

/// The staged targets, each checked to be an entry again (the file is only ours to write,
/// but it sits in a directory others may touch).
fn read_staged(dir: &Path) -> anyhow::Result<Vec<Target>> {
    let path = dir.join(STAGED);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let value = tuf::cjson::parse(text.as_bytes()).with_context(|| path.display().to_string())?;
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .map(|t| {
            let field = |k: &str| t.get(k).cloned().unwrap_or_default();
            let path_s = field("path").as_str().unwrap_or_default().to_owned();
            let length = field("length").as_u64().unwrap_or_default();
            let sha256 = field("sha256").as_str().unwrap_or_default().to_owned();
            let custom = field("custom");
            Entry::from_target(&path_s, length, &sha256, &custom)
                .with_context(|| format!("{}: {path_s}", path.display()))?;
            Ok(Target {
                path: path_s,
                length,
                sha256,
                custom,
            })
        })
        .collect()
}

fn write_staged(dir: &Path, staged: &[Target]) -> anyhow::Result<()> {
    let items: Vec<serde_json::Value> = staged
        .iter()
        .map(|t| serde_json::json!({"path": t.path, "length": t.length, "sha256": t.sha256, "custom": t.custom}))
        .collect();
    let path = dir.join(STAGED);
    let tmp = dir.join(format!(".{STAGED}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&items)?)
        .with_context(|| tmp.display().to_string())?;
    std::fs::rename(&tmp, &path).with_context(|| path.display().to_string())?;
    Ok(())
}

fn path_with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}
