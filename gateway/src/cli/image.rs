//! `gigmcp image pull|import|list|rm|gc`: the image store at `sandbox.images_dir`; and
//! `gigmcp image build`, which makes a server image from a package (no store involved).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use zeroize::Zeroizing;

use super::timestamp;
use crate::admin::{AdminApi, ImportSelect};
use crate::config::Config;
use crate::image::ImageRecord;
use crate::terminal;
use crate::vault::MasterKey;

#[derive(Debug, Subcommand)]
pub(super) enum ImageCommand {
    /// Build a reproducible server image from npm:NAME@VERSION, pypi:NAME==VERSION or
    /// dir:PATH into a new oci-layout directory, and print its digest. The package's install
    /// scripts run in a sandbox whose egress reaches only the package registry.
    Build {
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
    },
    /// Pull an image pinned by digest (HOST[:PORT]/REPO[:TAG]@sha256:<hex>) and install it.
    Pull { reference: String },
    /// Import an image from an oci-layout directory or tarball (air-gapped hosts) and install
    /// it: the layout's only image, or the one --digest or --name chooses.
    Import {
        path: PathBuf,
        #[arg(long, conflicts_with = "name")]
        digest: Option<String>,
        /// The image's org.opencontainers.image.ref.name in the layout.
        #[arg(long)]
        name: Option<String>,
    },
    /// List installed images and the servers using each.
    List,
    /// Remove an installed image (refused while a server uses it).
    Rm { digest: String },
    /// Remove every image no server uses, and the blobs only they used.
    Gc,
}

/// `image pull|import|list|rm|gc`.
pub(super) fn image(
    admin: &mut dyn AdminApi,
    command: ImageCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let installed = |out: &mut dyn Write, r: &ImageRecord| {
        writeln!(
            out,
            "installed image {} ({} layers, {} bytes unpacked, from {})",
            r.pinned,
            r.layers.len(),
            r.unpacked_bytes,
            terminal::escape(&r.reference)
        )
    };
    match command {
        ImageCommand::Pull { reference } => installed(out, &admin.image_pull(&reference)?)?,
        ImageCommand::Import { path, digest, name } => {
            let select = match (digest, name) {
                (Some(d), _) => ImportSelect::Digest(d),
                (None, Some(n)) => ImportSelect::Name(n),
                (None, None) => ImportSelect::Only,
            };
            installed(out, &admin.image_import(&path, &select)?)?;
        }
        ImageCommand::List => {
            writeln!(
                out,
                "{:71}  {:>12}  {:20}  USED BY",
                "DIGEST", "BYTES", "ADDED"
            )?;
            for (r, users) in admin.image_list()? {
                let users = if users.is_empty() {
                    "-".to_owned()
                } else {
                    users.join(",")
                };
                writeln!(
                    out,
                    "{:71}  {:>12}  {:20}  {users}",
                    r.pinned.to_string(),
                    r.unpacked_bytes,
                    timestamp(i64::try_from(r.added_ms).unwrap_or(0)),
                )?;
            }
        }
        ImageCommand::Rm { digest } => {
            let freed = admin.image_remove(&digest)?;
            writeln!(out, "removed image {digest} ({freed} bytes freed)")?;
        }
        ImageCommand::Build { .. } => unreachable!("run() answers image build: it needs no vault"),
        ImageCommand::Gc => {
            let r = admin.image_gc()?;
            writeln!(
                out,
                "removed {} images and {} blobs ({} bytes freed)",
                r.images.len(),
                r.blobs.len(),
                r.bytes_freed
            )?;
        }
    }
    Ok(())
}

/// `image build`: the helper over the configured bus; the vault only for a push registry's
/// password (the build itself holds no secret).
pub(super) fn build(
    command: &ImageCommand,
    config: &Config,
    state_dir: &Path,
    master_key_file: Option<&Path>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ImageCommand::Build {
        spec,
        base,
        out: dir,
        name,
        registry,
        registry_addresses,
        data_root,
        cache,
        push,
    } = command
    else {
        unreachable!("run() sends only image build here");
    };
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
                    let key = MasterKey::load(master_key_file)?;
                    let store = std::sync::Arc::new(crate::store::SqliteStore::open_in(state_dir)?);
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
