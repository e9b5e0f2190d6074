//! `gigmcp registry …`: the operator's verbs over signed registries (add, sync, list, forget)
//! on the admin layer, the servers installed from them (`install.rs`), and the author's
//! verbs (`author.rs`), which are offline: they run before any state directory or master key
//! is opened. Everything a registry says (its location as given, errors quoting its metadata)
//! is shown through `terminal`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;

pub mod author;
mod install;

use super::timestamp;
use crate::admin::{AdminApi, RegistryInfo};
use crate::catalog::SyncReport;
use crate::terminal;
use crate::tuf::Versions;

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Trust a registry: its metadata at an https URL (http only to 127.0.0.1 / [::1]) or in
    /// a local directory, and the root.json you pin for it (verified with its own keys, not
    /// expired). A first sync follows.
    Add {
        name: String,
        /// https://HOST[:PORT]/PATH/ or /ABSOLUTE/DIR
        location: String,
        /// The root.json to trust (from the registry's maintainers, out of band).
        #[arg(long)]
        root: PathBuf,
        /// A PEM CA certificate the registry's HTTPS chains to (a self-hosted registry),
        /// trusted besides the system's roots for this registry only.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Fetch and verify a registry's newest signed index (every registry without NAME).
    /// A refusal (rollback, freeze, mix-and-match, bad signature, …) stores nothing.
    Sync { name: Option<String> },
    /// List registries: stored versions, last sync, targets, servers installed from each.
    List,
    /// Remove a registry and its stored metadata (refused while a server came from it).
    Forget { name: String },
    /// Servers from registries: search, show, install, upgrade, remove.
    #[command(flatten)]
    Install(install::InstallCommand),
    #[command(flatten)]
    Author(author::AuthorCommand),
}

/// `registry add|sync|list|forget`.
pub(super) fn registry(
    admin: &mut dyn AdminApi,
    command: RegistryCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        RegistryCommand::Add {
            name,
            location,
            root,
            ca,
        } => add(admin, &name, &location, &root, ca.as_ref(), out),
        RegistryCommand::Sync { name: Some(name) } => {
            let r = refused(&name, admin.registry_sync(&name))?;
            print_sync(&name, &r, out)
        }
        RegistryCommand::Sync { name: None } => sync_all(admin, out),
        RegistryCommand::List => print_list(&admin.registry_list()?, out),
        RegistryCommand::Forget { name } => {
            admin.registry_forget(&name)?;
            writeln!(out, "forgot registry {name} and its stored metadata")?;
            Ok(())
        }
        RegistryCommand::Install(c) => install::run(admin, c, out),
        RegistryCommand::Author(_) => {
            unreachable!("the author's verbs run before any state is opened")
        }
    }
}

fn add(
    admin: &mut dyn AdminApi,
    name: &str,
    location: &str,
    root: &PathBuf,
    ca: Option<&PathBuf>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let root_bytes = read(root)?;
    let ca_bytes = ca.map(read).transpose()?;
    let added = admin.registry_add(name, location, &root_bytes, ca_bytes.as_deref())?;
    writeln!(
        out,
        "added registry {name} at {} (root version {}, expires {}, keys {})",
        terminal::escape(location),
        added.root.version,
        humantime::format_rfc3339_seconds(added.root.expires),
        added.root.key_ids.join(", ")
    )?;
    let report = refused(name, added.first_sync)
        .with_context(|| format!("registry {name} is added but unsynced"))?;
    print_sync(name, &report, out)
}

/// A sync's error, worded as the refusal it is.
fn refused<T>(name: &str, r: Result<T, crate::admin::AdminError>) -> anyhow::Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(crate::admin::AdminError::Catalog(e)) => {
            bail!("registry {name}: sync refused ({}): {e}", e.kind())
        }
        Err(e) => Err(e.into()),
    }
}

fn sync_all(admin: &mut dyn AdminApi, out: &mut dyn Write) -> anyhow::Result<()> {
    let names: Vec<String> = admin
        .registry_list()?
        .into_iter()
        .map(|r| r.record.name)
        .collect();
    let mut failed = 0;
    for name in &names {
        match refused(name, admin.registry_sync(name)) {
            Ok(r) => print_sync(name, &r, out)?,
            Err(e) => {
                failed += 1;
                eprintln!("gigmcp: {}", terminal::sanitize(&format!("{e:#}")));
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} registries refused", names.len());
    }
    Ok(())
}

fn versions(v: &Versions) -> String {
    format!(
        "root {}, timestamp {}, snapshot {}, targets {}",
        v.root, v.timestamp, v.snapshot, v.targets
    )
}

fn print_sync(name: &str, r: &SyncReport, out: &mut dyn Write) -> anyhow::Result<()> {
    if r.changed {
        writeln!(
            out,
            "synced registry {name}: {} (was {}); {} targets",
            versions(&r.after),
            versions(&r.before),
            r.targets
        )?;
    } else {
        writeln!(
            out,
            "registry {name} is up to date: {}; {} targets",
            versions(&r.after),
            r.targets
        )?;
    }
    Ok(())
}

fn print_list(list: &[RegistryInfo], out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:16}  {:>4} {:>9} {:>8} {:>7}  {:>7}  {:20}  {:8}  LOCATION",
        "NAME", "ROOT", "TIMESTAMP", "SNAPSHOT", "TARGETS", "ENTRIES", "SYNCED", "SERVERS"
    )?;
    for r in list {
        let v = &r.versions;
        let status = match (&r.problem, r.expired, r.targets) {
            (Some(p), _, _) => format!("  DAMAGED: {}", terminal::escape(p)),
            (None, Some(role), _) => format!("  EXPIRED: {role} (sync it)"),
            (None, None, None) => "  never synced".to_owned(),
            (None, None, Some(_)) => String::new(),
        };
        writeln!(
            out,
            "{:16}  {:>4} {:>9} {:>8} {:>7}  {:>7}  {:20}  {:8}  {}{status}",
            r.record.name,
            v.root,
            v.timestamp,
            v.snapshot,
            v.targets,
            r.targets.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            r.synced_ms.map_or_else(|| "never".to_owned(), timestamp),
            if r.servers.is_empty() {
                "-".to_owned()
            } else {
                r.servers.join(",")
            },
            terminal::escape(&r.record.location),
        )?;
    }
    Ok(())
}
