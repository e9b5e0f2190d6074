//! `gigmcp registry search|show|install|upgrade|remove`: servers from the registries the
//! gateway trusts, over [`AdminApi`]. The confirmation is this front end's: `--yes`, or the
//! word "yes" typed on a terminal after the entitlements were printed; without a terminal and
//! without `--yes` nothing is installed. What a registry says (descriptions, versions,
//! entitlements) is printed line by line through `terminal::sanitize`.

use std::io::{BufRead, IsTerminal, Write};

use clap::Subcommand;

use crate::admin::{AdminApi, Answer, Upgraded};
use crate::terminal;

#[derive(Debug, Subcommand)]
pub enum InstallCommand {
    /// List registry entries whose name or description contains TEXT (every entry without).
    Search { text: Option<String> },
    /// Show an entry and what it would be entitled to: [REGISTRY/]NAME[@VERSION].
    Show { spec: String },
    /// Install a server from a registry: [REGISTRY/]NAME[@VERSION] (default: the latest
    /// version; a name two registries offer needs its REGISTRY/). Shows the entitlements and
    /// asks, unless --yes.
    Install {
        spec: String,
        /// The local server name (default: the entry's).
        #[arg(long = "as")]
        local: Option<String>,
        /// Agree to the entitlements shown without being asked.
        #[arg(long)]
        yes: bool,
        /// Approve a private range (CIDR) the manifest asks to reach, exactly as it lists
        /// it; repeat for each. Ranges the manifest does not ask for are refused.
        #[arg(long = "approve-range")]
        approve_ranges: Vec<ipnet::IpNet>,
        /// Give this server the vault's existing secret NAME (secrets are looked up by name:
        /// a credential another server already uses is shared); repeat for each name.
        #[arg(long = "share-credential", value_name = "NAME")]
        share_credentials: Vec<String>,
    },
    /// Upgrade a server installed from a registry to its newest version there (or --to),
    /// showing the entitlement diff. An upgrade that adds any entitlement is refused with
    /// its digest: accept exactly that diff with --approve DIGEST (--yes alone never does).
    Upgrade {
        name: String,
        #[arg(long)]
        to: Option<String>,
        /// Agree to a diff that adds nothing without being asked.
        #[arg(long)]
        yes: bool,
        /// The digest the refusal printed for this upgrade's added entitlements.
        #[arg(long)]
        approve: Option<String>,
        /// Give this server the vault's existing secret NAME (secrets are looked up by name:
        /// a credential another server already uses is shared); repeat for each name.
        #[arg(long = "share-credential", value_name = "NAME")]
        share_credentials: Vec<String>,
    },
    /// Remove a server installed from a registry (refused while an endpoint exposes it; its
    /// image stays until `gigmcp image gc`).
    Remove { name: String },
}

/// Prints a registry's text, each line made safe for the terminal.
fn print_lines(out: &mut dyn Write, text: &str) -> std::io::Result<()> {
    for line in text.lines() {
        writeln!(out, "{}", terminal::sanitize(line))?;
    }
    Ok(())
}

/// Shows what the admin agrees to, then takes `--yes`, or asks on a terminal.
fn ask(out: &mut dyn Write, shown: &str, yes: bool) -> Answer {
    if print_lines(out, shown).is_err() {
        return Answer::Declined;
    }
    if yes {
        return Answer::Yes;
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Answer::NoTerminal;
    }
    let _ = write!(out, "Type yes to agree: ");
    let _ = out.flush();
    let mut line = String::new();
    match stdin.lock().read_line(&mut line) {
        Ok(_) if line.trim() == "yes" => Answer::Yes,
        _ => Answer::Declined,
    }
}

pub fn run(
    admin: &mut dyn AdminApi,
    command: InstallCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        InstallCommand::Search { text } => {
            for hit in admin.registry_search(text.as_deref().unwrap_or(""))? {
                let about = match (&hit.problem, &hit.description) {
                    (Some(problem), _) => format!("NOT INSTALLABLE: {problem}"),
                    (None, Some(d)) => d.clone(),
                    (None, None) => String::new(),
                };
                let line = format!("{}/{}  {about}", hit.registry, hit.target);
                writeln!(out, "{}", terminal::sanitize(&line))?;
            }
        }
        InstallCommand::Show { spec } => {
            let s = admin.registry_show(&spec)?;
            print_lines(out, &format!("{}/{}", s.registry, s.target))?;
            if let Some(d) = &s.description {
                print_lines(out, d)?;
            }
            print_lines(
                out,
                &format!("image {}\nentitled to:\n{}", s.image, s.entitlements),
            )?;
        }
        InstallCommand::Install {
            spec,
            local,
            yes,
            approve_ranges,
            share_credentials,
        } => {
            let i = admin.server_install(
                &spec,
                local.as_deref(),
                &approve_ranges,
                &share_credentials,
                &mut |shown: &str| ask(out, shown, yes),
            )?;
            let line = format!(
                "installed server {} {} from {}/{} (image {})",
                i.record.name, i.record.version, i.registry, i.target, i.record.image_digest
            );
            writeln!(out, "{}", terminal::sanitize(&line))?;
        }
        InstallCommand::Upgrade {
            name,
            to,
            yes,
            approve,
            share_credentials,
        } => {
            // A quoted digest is the admin's agreement to exactly that diff.
            let agreed = yes || approve.is_some();
            let u = admin.server_upgrade(
                &name,
                to.as_deref(),
                approve.as_deref(),
                &share_credentials,
                &mut |shown: &str| ask(out, shown, agreed),
            )?;
            let line = match u {
                Upgraded::Current { version } => {
                    format!("server {name} is at {version}, the newest its registry lists")
                }
                Upgraded::Replaced { record, from, .. } => format!(
                    "upgraded server {name} from {from} to {} (image {}; the old image stays until image gc)",
                    record.version, record.image_digest
                ),
            };
            writeln!(out, "{}", terminal::sanitize(&line))?;
        }
        InstallCommand::Remove { name } => {
            let r = admin.server_remove(&name)?;
            writeln!(
                out,
                "removed server {name} (image {} stays until image gc)",
                r.image_digest
            )?;
        }
    }
    Ok(())
}
