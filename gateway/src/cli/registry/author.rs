//! The registry author's verbs, offline (no daemon, no state directory, no master key):
//! `lint` checks manifests with the same rules the gateway applies before it installs one
//! (`catalog::lint`), printing `FILE: field: rule: message` for each finding.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::catalog::lint::{Finding, LintPolicy, lint};
use crate::manifest::Manifest;
use crate::terminal;

/// A manifest is a few kilobytes; a file far larger is not one.
const MAX_MANIFEST_FILE: u64 = 1 << 20;

#[derive(Debug, Subcommand)]
pub enum AuthorCommand {
    /// Lint manifests (JSON files) with the rules the gateway applies before installing:
    /// prints FILE: field: rule: message per finding; exits 1 if there is any.
    Lint {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

pub fn run(cmd: AuthorCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        AuthorCommand::Lint { paths } => lint_paths(&paths, &mut out),
    }
}

fn lint_paths(paths: &[PathBuf], out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let policy = LintPolicy::default();
    let mut any = false;
    for path in paths {
        let findings = lint_file(path, &policy)?;
        let shown = terminal::escape(&path.display().to_string());
        if findings.is_empty() {
            writeln!(out, "{shown}: no findings")?;
        }
        for f in &findings {
            let field = if f.field.is_empty() {
                "(manifest)"
            } else {
                &f.field
            };
            let line = format!("{shown}: {field}: {}: {}", f.rule, f.message);
            writeln!(out, "{}", terminal::sanitize(&line))?;
        }
        any |= !findings.is_empty();
    }
    Ok(if any {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The findings of one manifest file; one that does not parse is one finding (`parse`).
fn lint_file(path: &Path, policy: &LintPolicy) -> anyhow::Result<Vec<Finding>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("{}", path.display()))?;
    if text.len() as u64 > MAX_MANIFEST_FILE {
        anyhow::bail!("{}: larger than {MAX_MANIFEST_FILE} bytes", path.display());
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
