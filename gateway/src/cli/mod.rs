//! `gigmcp`, the admin CLI: argument parsing and output formatting over [`AdminApi`].
//!
//! Where a command goes: with `--state-dir` or `--master-key-file` given, to the state
//! directory opened here (`LocalAdmin`: offline, the daemon stopped); otherwise to the running
//! daemon over D-Bus (`DbusAdmin`, on `--bus`, by default the configuration's `sandbox.bus`),
//! so that no admin verb needs the master key while gigmcpd runs. The offline verbs (the
//! registry author's tools, `vault keygen`, `image build`) need neither; `server
//! start|stop|logs` need the daemon; `vault rotate` is offline only (`DbusAdmin` says why).

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod build;
mod image;
mod registry;
use image::{ImageCommand, image};
use registry::{RegistryCommand, registry};
use zeroize::Zeroizing;

use crate::admin::AdminApi;
use crate::admin::local::{AdminSettings, LocalAdmin};
use crate::config::{self, Config};
use crate::control::DbusAdmin;
use crate::store::SecretMeta;
use crate::terminal;
use crate::vault::{MAX_VALUE_LEN, MasterKey, SecretValue};

#[derive(Debug, Parser)]
#[command(name = "gigmcp", version, about = "Administer a Gig'MCP gateway")]
pub struct Cli {
    /// State directory to open directly, offline (the daemon's, when it is stopped, or a dev
    /// one; default /var/lib/gigmcp). Without it (and without --master-key-file) commands go
    /// to the running daemon over D-Bus.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// Master key file for offline use (32 bytes raw or 64 hex digits, mode 0600). Default:
    /// the systemd credential master.key in $CREDENTIALS_DIRECTORY.
    #[arg(long, global = true)]
    master_key_file: Option<PathBuf>,
    /// The daemon's bus: `system` or a D-Bus address (default: sandbox.bus of the config).
    #[arg(long, global = true)]
    bus: Option<String>,
    /// The gateway's configuration (read for the settings admin commands obey; built-in
    /// defaults if the default file is absent).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage secrets (write-only: values can be set, never read back).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Inspect the vault or rotate its master key.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Install and inspect MCP servers.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Endpoints (named sets of servers with tool subsets) and their tokens.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// OCI images in the store at sandbox.images_dir: pull, import, list, remove, collect.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Signed registries: add (pin a root), sync, list, forget; servers from them (search,
    /// show, install, upgrade, remove); the author's offline tools.
    #[command(subcommand)]
    Registry(RegistryCommand),
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Install a server from a local root filesystem and manifest, without a registry
    /// signature. Development only: refused unless gateway.allow_unsigned_servers is true.
    Add {
        name: String,
        /// A root filesystem directory, copied into the images directory.
        #[arg(long, required_unless_present = "image", conflicts_with = "image")]
        rootfs: Option<PathBuf>,
        /// An image pinned by digest: HOST[:PORT]/REPO[:TAG]@sha256:<hex> (pulled unless it is
        /// installed), or oci-layout:PATH@sha256:<hex> (imported).
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        manifest: PathBuf,
        /// Required: says you know nobody verified this server.
        #[arg(long, required = true)]
        unsigned: bool,
        /// A private range (CIDR) this server may reach through the proxy (internal APIs);
        /// repeatable. Private destinations are refused otherwise. Refused: ranges wider than a
        /// /8 (IPv6: /48), public ones, and any overlapping what no approval opens (loopback,
        /// link-local, metadata, the sandbox pool, this host's own and listen addresses).
        #[arg(long = "approve-range")]
        approve_ranges: Vec<ipnet::IpNet>,
    },
    /// List installed servers.
    List,
    /// Start a server in the running daemon now (it also starts on first use).
    Start { name: String },
    /// Stop a server in the running daemon (it starts again on its next call).
    Stop { name: String },
    /// Show the last lines a server wrote to stderr in the running daemon.
    Logs {
        name: String,
        #[arg(long, default_value_t = 100)]
        lines: u32,
    },
    /// Show a server's tool definitions: approved, and changed ones awaiting approval.
    Tools {
        name: String,
        /// Show each pending definition next to the approved one.
        #[arg(long)]
        diff: bool,
        /// Approve the pending definition of this tool.
        #[arg(long)]
        approve: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Create an endpoint: --server NAME exposes every tool, --server NAME=tool1,tool2 a subset.
    Add {
        name: String,
        #[arg(long = "server", required = true)]
        servers: Vec<String>,
    },
    /// Show this endpoint's own description of a tool (`SERVER__TOOL`) instead of the server's.
    Describe {
        endpoint: String,
        tool: String,
        #[arg(long)]
        description: String,
    },
    /// Bearer tokens for an endpoint.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once and only its hash is stored.
    Create {
        endpoint: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum SecretCommand {
    /// Store a secret. The value is read from standard input (one trailing newline is dropped)
    /// or from --from-file (taken byte for byte); never from the command line.
    Set {
        name: String,
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List secrets: name, version, created, updated, last used. Never values.
    List,
    /// Delete a secret.
    Rm { name: String },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Show the master key fingerprint and check that every secret opens.
    Status,
    /// Rewrap every data key under a new master key, in one transaction.
    Rotate {
        #[arg(long)]
        new_master_key_file: PathBuf,
    },
    /// Write a new random master key to a file (mode 0600). Needs no state directory.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let result = match cli.command {
        // The author's verbs are offline: no configuration, state directory or master key.
        Command::Registry(registry::RegistryCommand::Author(c)) => registry::author::run(c),
        command => run(Cli { command, ..cli }, &mut std::io::stdout().lock())
            .map(|()| std::process::ExitCode::SUCCESS),
    };
    match result {
        Ok(code) if code == std::process::ExitCode::SUCCESS => 0,
        Ok(_) => 1,
        Err(e) => {
            // An error can quote a server's words (a manifest's value, a name in its image,
            // the daemon's or helper's refusal): made safe for the terminal like the rest,
            // line by line, so that a multi-line refusal (an upgrade's diff) stays readable.
            let text = format!("{e:#}");
            let mut lines = text.lines().map(terminal::sanitize);
            eprintln!("gigmcp: error: {}", lines.next().unwrap_or_default());
            for line in lines {
                eprintln!("  {line}");
            }
            1
        }
    }
}

impl Cli {
    /// The state directory an offline command opens.
    fn state_dir(&self) -> &std::path::Path {
        self.state_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("/var/lib/gigmcp"))
    }

    /// Offline: the admin asked for the state directory (or the key) explicitly.
    fn offline(&self) -> bool {
        self.state_dir.is_some() || self.master_key_file.is_some()
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Command::Vault(VaultCommand::Keygen { out: path }) = &cli.command {
        let key = MasterKey::generate_file(path)?;
        writeln!(
            out,
            "wrote {} (fingerprint {})",
            path.display(),
            key.fingerprint()
        )?;
        return Ok(());
    }
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None if std::path::Path::new(config::DEFAULT_PATH).exists() => {
            Config::load(std::path::Path::new(config::DEFAULT_PATH))?
        }
        None => Config::default(),
    };
    if let Command::Image(ImageCommand::Build(c)) = &cli.command {
        return build::build(c, &config, &cli, out);
    }
    let bus = cli
        .bus
        .clone()
        .unwrap_or_else(|| config.sandbox.bus.clone());
    if let Command::Server(
        c @ (ServerCommand::Start { .. } | ServerCommand::Stop { .. } | ServerCommand::Logs { .. }),
    ) = &cli.command
    {
        return daemon_command(&mut DbusAdmin::connect(&bus)?, c, out);
    }
    if !cli.offline() {
        return dispatch(&mut DbusAdmin::connect(&bus)?, cli.command, out);
    }
    let key = MasterKey::load(cli.master_key_file.as_deref())?;
    let actor = format!("cli:uid={}", nix::unistd::getuid());
    let settings = AdminSettings::from_config(&config);
    let mut admin = LocalAdmin::open(cli.state_dir(), key, actor, settings)?;
    dispatch(&mut admin, cli.command, out)
}

/// The commands only the running daemon answers: its server sessions.
fn daemon_command(
    gw: &mut DbusAdmin,
    c: &ServerCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match c {
        ServerCommand::Start { name } => {
            gw.server_start(name)?;
            writeln!(out, "started server {name}")?;
        }
        ServerCommand::Stop { name } => {
            if gw.server_stop(name)? {
                writeln!(out, "stopped server {name}")?;
            } else {
                writeln!(out, "server {name} was not running")?;
            }
        }
        ServerCommand::Logs { name, lines } => {
            let logs = gw.server_logs(name, *lines)?;
            if logs.is_empty() {
                writeln!(out, "server {name} has written nothing to stderr")?;
            }
            // The daemon escaped each line already; a line that was not (an older daemon)
            // is made safe here all the same: the server's text never drives the terminal.
            for l in logs {
                writeln!(out, "{}", terminal::sanitize(&l))?;
            }
        }
        _ => unreachable!("only daemon commands come here"),
    }
    Ok(())
}

/// Runs one admin command against the open store, one function per command group. Commands
/// that need no store (keygen) or the running daemon (start, stop, logs) never get here.
fn dispatch(admin: &mut dyn AdminApi, command: Command, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        Command::Secret(c) => secret(admin, c, out),
        Command::Vault(c) => vault(admin, c, out),
        Command::Server(c) => server(admin, c, out),
        Command::Endpoint(c) => endpoint(admin, c, out),
        Command::Image(c) => image(admin, c, out),
        Command::Registry(c) => registry(admin, c, out),
    }
}

/// `secret set|list|rm`.
fn secret(
    admin: &mut dyn AdminApi,
    command: SecretCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        SecretCommand::Set { name, from_file } => {
            let value = read_value(from_file)?;
            let o = admin.secret_set(&name, &value)?;
            let verb = if o.created { "created" } else { "updated" };
            writeln!(out, "{verb} secret {name} (version {})", o.version)?;
        }
        SecretCommand::List => print_secrets(&admin.secret_list()?, out)?,
        SecretCommand::Rm { name } => {
            admin.secret_remove(&name)?;
            writeln!(out, "removed secret {name}")?;
        }
    }
    Ok(())
}

/// `vault status|rotate`: status fails if any secret no longer opens.
fn vault(
    admin: &mut dyn AdminApi,
    command: VaultCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        VaultCommand::Status => {
            let s = admin.vault_status()?;
            writeln!(out, "master key fingerprint: {}", s.fingerprint)?;
            writeln!(out, "secrets: {}", s.secrets)?;
            if !s.damaged.is_empty() {
                for line in &s.damaged {
                    writeln!(out, "DAMAGED: {line}")?;
                }
                bail!(
                    "{} of {} secrets failed to open",
                    s.damaged.len(),
                    s.secrets
                );
            }
            writeln!(out, "all secrets open")?;
        }
        VaultCommand::Rotate {
            new_master_key_file,
        } => {
            let new = MasterKey::from_file(&new_master_key_file)?;
            let fp = admin.vault_rotate(new)?;
            writeln!(
                out,
                "rotated: every data key is now wrapped by {fp}; install {} as the master.key credential",
                new_master_key_file.display()
            )?;
        }
        VaultCommand::Keygen { .. } => unreachable!("handled before opening"),
    }
    Ok(())
}

/// `server add|list|tools`; start, stop and logs talk to the daemon instead.
fn server(
    admin: &mut dyn AdminApi,
    command: ServerCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        ServerCommand::Add {
            name,
            rootfs,
            image,
            manifest,
            unsigned: _,
            approve_ranges,
        } => {
            let text = std::fs::read_to_string(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            eprintln!(
                "gigmcp: WARNING: installing {name} UNSIGNED: no registry vouches for this code; it runs sandboxed, but review it yourself"
            );
            let r = match (rootfs, image) {
                (Some(rootfs), _) => {
                    admin.server_add_unsigned(&name, &rootfs, &text, &approve_ranges)?
                }
                (None, Some(image)) => {
                    admin.server_add_image(&name, &image, &text, &approve_ranges)?
                }
                (None, None) => bail!("name the server's root: --rootfs DIR or --image REF"),
            };
            // The version is the manifest's, the server author's words.
            writeln!(
                out,
                "installed server {} {} (unsigned, image {})",
                r.name,
                terminal::escape(&r.version),
                r.image_digest
            )?;
        }
        ServerCommand::Start { .. } | ServerCommand::Stop { .. } | ServerCommand::Logs { .. } => {
            unreachable!("handled before opening")
        }
        ServerCommand::List => {
            writeln!(
                out,
                "{:24}  {:12}  {:9}  INSTALLED",
                "NAME", "VERSION", "SOURCE"
            )?;
            for s in admin.server_list()? {
                writeln!(
                    out,
                    "{:24}  {:12}  {:9}  {}",
                    s.name,
                    terminal::escape(&s.version),
                    s.source,
                    timestamp(s.installed_ms)
                )?;
            }
        }
        ServerCommand::Tools {
            name,
            diff,
            approve,
        } => server_tools(admin, &name, diff, approve, out)?,
    }
    Ok(())
}

/// `endpoint add|describe|token`.
fn endpoint(
    admin: &mut dyn AdminApi,
    command: EndpointCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        EndpointCommand::Add { name, servers } => {
            let servers = servers
                .iter()
                .map(|s| match s.split_once('=') {
                    Some((server, tools)) => (
                        server.to_owned(),
                        tools
                            .split(',')
                            .filter(|t| !t.is_empty())
                            .map(String::from)
                            .collect(),
                    ),
                    None => (s.clone(), vec!["*".to_owned()]),
                })
                .collect();
            admin.endpoint_add(&name, servers)?;
            writeln!(out, "created endpoint {name} at /mcp/{name}")?;
        }
        EndpointCommand::Describe {
            endpoint,
            tool,
            description,
        } => {
            let Some((server, own)) = tool.split_once("__") else {
                bail!("name the tool as SERVER__TOOL, as clients see it");
            };
            admin.endpoint_describe(&endpoint, server, own, &description)?;
            writeln!(out, "endpoint {endpoint} now describes {tool} its own way")?;
        }
        EndpointCommand::Token(TokenCommand::Create { endpoint, label }) => {
            let t = admin.token_create(&endpoint, &label)?;
            writeln!(
                out,
                "token id {} for endpoint {endpoint} (shown once, keep it safe):",
                t.id
            )?;
            writeln!(out, "{}", &*t.secret)?;
        }
        EndpointCommand::Token(TokenCommand::Revoke { id }) => {
            admin.token_revoke(&id)?;
            writeln!(out, "revoked token {id}")?;
        }
    }
    Ok(())
}

/// `server tools`: approves a changed definition, or lists each tool as approved, changed or
/// new (the last two hidden from clients until approved), with `diff` showing old and new.
fn server_tools(
    admin: &mut dyn AdminApi,
    name: &str,
    diff: bool,
    approve: Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if let Some(tool) = approve {
        admin.server_tool_approve(name, &tool)?;
        writeln!(out, "approved the new definition of {name}/{tool}")?;
        return Ok(());
    }
    // The empty name marks the first listing, not a tool.
    let defs: Vec<_> = admin
        .server_tools(name)?
        .into_iter()
        .filter(|d| !d.tool.is_empty())
        .collect();
    // Names and definitions are the server's words: escaped (`terminal`), so that a name
    // cannot hide a character from the admin approving it, nor drive the terminal. A
    // definition is JSON, whose own escapes keep backslashes: `sanitize` keeps it readable.
    let (shown, json) = (terminal::escape, terminal::sanitize);
    for d in defs.iter().filter(|d| d.approved) {
        let pending = defs.iter().find(|p| !p.approved && p.tool == d.tool);
        let state = if pending.is_some() {
            "CHANGED (hidden)"
        } else {
            "approved"
        };
        writeln!(out, "{:32}  {state}", shown(&d.tool))?;
        if let (true, Some(p)) = (diff, pending) {
            writeln!(out, "  - approved: {}", json(&d.definition))?;
            writeln!(out, "  + now:      {}", json(&p.definition))?;
        }
    }
    for p in defs.iter().filter(|p| !p.approved) {
        if !defs.iter().any(|d| d.approved && d.tool == p.tool) {
            writeln!(out, "{:32}  NEW (hidden)", shown(&p.tool))?;
            if diff {
                writeln!(out, "  + now:      {}", json(&p.definition))?;
            }
        }
    }
    Ok(())
}

fn read_value(from_file: Option<PathBuf>) -> anyhow::Result<SecretValue> {
    let mut buf = Zeroizing::new(Vec::new());
    let limit = MAX_VALUE_LEN as u64 + 1;
    match &from_file {
        Some(path) => {
            std::fs::File::open(path)
                .with_context(|| format!("opening {}", path.display()))?
                .take(limit)
                .read_to_end(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        None => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut buf)
                .context("reading the secret from standard input")?;
            let keep = if buf.ends_with(b"\r\n") {
                buf.len() - 2
            } else if buf.ends_with(b"\n") {
                buf.len() - 1
            } else {
                buf.len()
            };
            buf.truncate(keep);
        }
    }
    Ok(SecretValue::new(buf))
}

fn print_secrets(list: &[SecretMeta], out: &mut dyn Write) -> std::io::Result<()> {
    let width = list.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:width$}  {:>7}  {:20}  {:20}  LAST USED",
        "NAME", "VERSION", "CREATED", "UPDATED"
    )?;
    for m in list {
        writeln!(
            out,
            "{:width$}  {:>7}  {:20}  {:20}  {}",
            m.name,
            m.version,
            timestamp(m.created_ms),
            timestamp(m.updated_ms),
            m.last_used_ms.map_or_else(|| "never".to_owned(), timestamp),
        )?;
    }
    Ok(())
}

fn timestamp(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}
