//! `gigmcp image build`: a reproducible server image from a package, its install step in a
//! sandbox. It runs before the admin state is opened: the build holds no secret (the vault is
//! opened only for a push registry's password).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use zeroize::Zeroizing;

use super::Cli;
use crate::config::Config;
use crate::vault::MasterKey;

/// `image build`'s arguments.
#[derive(Debug, Args)]
pub(super) struct BuildCommand {
    spec: String,
    /// The runtime base: node, python, or oci-layout:DIR@sha256:… (a base imported from
    /// an oci-layout, pinned by its manifest digest).
    #[arg(long)]
    base: String,
    /// The oci-layout directory to create (it must not exist).
    #[arg(long)]
    out: PathBuf,
    /// The server name for the io.modelcontextprotocol.server.name label (default: the
    /// package's own mcpName, server.json or mcp-name:).
    #[arg(long)]
    name: Option<String>,
    /// Another package registry (https://HOST[:PORT][/PATH]): the only host the install
    /// sandbox may reach.
    #[arg(long)]
    registry: Option<String>,
    /// Opt-in for a registry mirror on a reserved or documentation address, which the
    /// egress proxy refuses otherwise: the exact address the registry's name resolves to
    /// here (checked), repeatable. Nothing but the reserved class can be opted in, and only
    /// for this build's sandbox. Audited with the build.
    #[arg(long = "registry-address")]
    registry_addresses: Vec<std::net::IpAddr>,
    /// The helper's data_root (privhelper.toml), where the install step's data dir is made.
    #[arg(long, default_value = "/var/lib/gigmcp-sandbox/data")]
    data_root: PathBuf,
    /// Where bases are cached (default: <sandbox.images_dir>/build).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Also push the image to this registry reference (host[:port]/repo[:tag]), with the
    /// credentials its [[images.registries]] entry names (a password_secret is read from
    /// the vault: the master key is needed then).
    #[arg(long)]
    push: Option<String>,
}

/// `image build`: the helper over the configured bus; the vault only for a push registry's
/// password (the build itself holds no secret).
pub(super) fn build(
    command: &BuildCommand,
    config: &Config,
    cli: &Cli,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let BuildCommand {
        spec,
        base,
        out: dir,
        name,
        registry,
        registry_addresses,
        data_root,
        cache,
        push,
    } = command;
    let push = match push {
        None => None,
        Some(reference) => {
            let host = crate::image::reference::Reference::parse(reference)
                .with_context(|| format!("--push {reference}"))?
                .registry;
            let entry = config.images.registry(&host);
            let password = match &entry.password_secret {
                None => None,
                Some(secret) => {
                    let key = MasterKey::load(cli.master_key_file.as_deref())?;
                    let store =
                        std::sync::Arc::new(crate::store::SqliteStore::open_in(cli.state_dir())?);
                    let vault = crate::vault::Vault::open(store, key)?;
                    let value = vault.get(&crate::vault::SecretName::parse(secret)?)?;
                    let text = std::str::from_utf8(value.expose())
                        .with_context(|| format!("the secret {secret} is not UTF-8"))?;
                    Some(Zeroizing::new(text.to_owned()))
                }
            };
            Some((reference.clone(), password))
        }
    };
    let state_dir = cli.state_dir();
    let args = crate::image_builder::BuildArgs {
        spec: spec.clone(),
        base: base.clone(),
        out: dir.clone(),
        name: name.clone(),
        registry: registry.clone(),
        registry_addresses: registry_addresses.clone(),
        data_root: data_root.clone(),
        cache: cache.clone(),
        push,
    };
    let actor = format!("cli:uid={}", nix::unistd::getuid());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = rt.block_on(crate::image_builder::build(
        config, state_dir, &actor, &args,
    ))?;
    let built = &outcome.built;
    writeln!(out, "{}", built.manifest.digest)?;
    if let Some(pushed) = &outcome.pushed {
        eprintln!("pushed {pushed}");
    }
    eprintln!(
        "built {} ({}) into {} in {:.1} s (install {:.1} s)",
        spec,
        built.server_name,
        dir.display(),
        built.total_time.as_secs_f64(),
        built.install_time.as_secs_f64()
    );
    Ok(())
}
