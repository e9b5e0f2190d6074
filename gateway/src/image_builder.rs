//! `gigmcp image build` on real parts: [`crate::image::build`] with the helper over D-Bus (as
//! the daemon reaches it), an egress proxy of the CLI's own for the install sandbox, and the
//! state directory's audit trail, where the build (`image.build`) and every egress decision of
//! its install step (`egress.denied`, …) are recorded.
//!
//! Who may run it: whoever the helper serves (the `gigmcp` user; root on CI machines, whose
//! helper allows uid 0). The install sandbox's CA is a fresh one per build, kept in a vault
//! that lives as long as the build (it holds no secret of the gateway's: the install step gets
//! no credential), published in the helper's `ca_dir` under a build-specific name and removed
//! afterwards.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use privhelper_api::Limits;

use crate::audit::{Auditor, Outcome};
use crate::config::Config;
use crate::egress::{EgressConfig, EgressShared};
use crate::image::build::base::Bases;
use crate::image::build::install::Registry;
use crate::image::build::spec::Spec;
use crate::image::build::{
    BaseChoice, BuildError, Builder, Built, Request, check_registry_addresses,
};
use crate::sandbox::{Helper, SandboxLauncher};
use crate::store::{SqliteStore, Store};
use crate::vault::{MasterKey, Vault};

/// What `gigmcp image build` was asked.
#[derive(Debug, Clone)]
pub struct BuildArgs {
    pub spec: String,
    pub base: String,
    pub out: PathBuf,
    pub name: Option<String>,
    pub registry: Option<String>,
    pub registry_addresses: Vec<IpAddr>,
    /// The helper's `data_root`.
    pub data_root: PathBuf,
    /// The base cache (default: `<images_dir>/build`, beneath the helper's images dir, so the
    /// builder roots need no copy).
    pub cache: Option<PathBuf>,
    /// Where to push the built image (`host[:port]/repo[:tag]`), and the registry's password
    /// when its `[[images.registries]]` entry names a `password_secret` (read from the vault
    /// by the caller).
    pub push: Option<(String, Option<zeroize::Zeroizing<String>>)>,
}

/// A built image, and where it was pushed.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub built: Built,
    /// The reference pushed to, with the digest the registry confirmed.
    pub pushed: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageBuildError {
    #[error(transparent)]
    Spec(#[from] crate::image::build::spec::SpecError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("the state directory: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("the image store: {0}")]
    Images(#[from] crate::image::ImageError),
    #[error("the install sandbox's egress proxy: {0}")]
    Egress(#[from] crate::egress::EgressError),
    #[error("the build's vault: {0}")]
    Vault(String),
    #[error("--push {reference}: {message}")]
    Push { reference: String, message: String },
    #[error("--push {reference}: the registry holds {got}, not the {built} built")]
    PushedOther {
        reference: String,
        got: crate::image::digest::Digest,
        built: crate::image::digest::Digest,
    },
    #[error("publishing the build's CA in {path}: {source}")]
    Ca {
        path: String,
        source: std::io::Error,
    },
}

/// Removes the build's CA bundle from the helper's `ca_dir`.
struct PublishedCa(PathBuf);

impl Drop for PublishedCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Builds (and pushes, if asked), audits the outcome in `state_dir`'s trail, and returns the
/// image.
pub async fn build(
    config: &Config,
    state_dir: &std::path::Path,
    actor: &str,
    args: &BuildArgs,
) -> Result<BuildOutcome, ImageBuildError> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(state_dir)?);
    let auditor = Auditor::new(store.clone(), actor);
    let result = match run(config, &auditor, args).await {
        Ok(built) => match &args.push {
            Some((reference, password)) => push(config, &built, &args.out, reference, password)
                .await
                .map(|pushed| BuildOutcome {
                    built,
                    pushed: Some(pushed),
                }),
            None => Ok(BuildOutcome {
                built,
                pushed: None,
            }),
        },
        Err(e) => Err(e),
    };
    let mut detail = format!(
        "spec={} base={} out={}",
        args.spec,
        args.base,
        args.out.display()
    );
    if let Some(r) = &args.registry {
        detail.push_str(&format!(" registry={r}"));
    }
    for a in &args.registry_addresses {
        detail.push_str(&format!(" registry_address={a}"));
    }
    match &result {
        Ok(outcome) => {
            detail.push_str(&format!(
                " digest={} server={}",
                outcome.built.manifest.digest, outcome.built.server_name
            ));
            if let Some(p) = &outcome.pushed {
                detail.push_str(&format!(" pushed={p}"));
            }
            let _ = auditor.record("image.build", &args.spec, Outcome::Ok, &detail);
        }
        Err(e) => {
            detail.push_str(&format!(" error={e}"));
            let _ = auditor.record("image.build", &args.spec, Outcome::Failed, &detail);
        }
    }
    result
}

async fn run(
    config: &Config,
    auditor: &Auditor,
    args: &BuildArgs,
) -> Result<Built, ImageBuildError> {
    let spec = Spec::parse(&args.spec)?;
    let base = BaseChoice::parse(&args.base)?;
    let registry = Registry::for_ecosystem(spec.ecosystem(), args.registry.as_deref())
        .map_err(BuildError::from)?;
    check_registry_addresses(&registry, &args.registry_addresses)?;
    let scratch = tempfile_dir()?;
    let vault_store: Arc<dyn Store> = Arc::new(SqliteStore::open_in(&scratch.0)?);
    let key = MasterKey::generate().map_err(|e| ImageBuildError::Vault(e.to_string()))?;
    let vault =
        Arc::new(Vault::open(vault_store, key).map_err(|e| ImageBuildError::Vault(e.to_string()))?);
    let mut egress_config = EgressConfig::new(scratch.0.join("ca.pem"));
    egress_config.sandbox_pool = ipnet::IpNet::V4(config.sandbox.pool);
    egress_config.gateway_listen = vec![config.gateway.listen.ip()];
    egress_config.extra_upstream_ca = config.egress.extra_ca_file.clone();
    let egress = EgressShared::new(vault, auditor.clone(), egress_config)?;
    // The pid alone can repeat across PID namespaces sharing ca_dir: a random part too.
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).expect("the kernel's random source");
    let ca_name = format!("build-{}-{}.pem", std::process::id(), hex::encode(nonce));
    let ca_path = config.sandbox.ca_dir.join(&ca_name);
    let ca_error = |source| ImageBuildError::Ca {
        path: config.sandbox.ca_dir.display().to_string(),
        source,
    };
    write_new(&ca_path, egress.ca_cert_pem()).map_err(ca_error)?;
    let _published = PublishedCa(ca_path);
    let launcher = SandboxLauncher {
        helper: Arc::new(Helper::on_bus(&config.sandbox.bus)),
        egress,
        proxy_port: config.sandbox.proxy_port,
        ca_bundle: ca_name,
        // The build's own sandboxes run from builder roots, never from an installed image: the
        // store is opened for the launcher's type, and holds what a --base oci-layout imports.
        images: Arc::new(
            crate::image::ImageStore::open(
                &config.sandbox.images_dir,
                config.images.unpack.clone(),
            )
            .map_err(ImageBuildError::Images)?,
        ),
        // Build steps are no registry's servers.
        catalog: None,
        // npm and pip need more than a typical server: at least 1 GiB (the helper caps it).
        limits: Limits {
            memory_max_bytes: config.sandbox.server_memory_max_bytes.max(1 << 30),
            pids_max: config.sandbox.server_pids_max,
            cpu_percent: config.sandbox.server_cpu_percent,
        },
    };
    let builder = Builder {
        runner: launcher,
        bases: Bases {
            cache: args
                .cache
                .clone()
                .unwrap_or_else(|| config.sandbox.images_dir.join("build")),
        },
        images_dir: config.sandbox.images_dir.clone(),
        data_root: args.data_root.clone(),
    };
    let request = Request {
        spec,
        base,
        out: args.out.clone(),
        name: args.name.clone(),
        registry: args.registry.clone(),
        registry_addresses: args.registry_addresses.clone(),
    };
    Ok(builder.build(&request).await?)
}

/// Pushes the layout at `out` to `reference` with the pull's client (its auth and credential
/// rules), and checks the registry confirmed the digest built. Returns `reference@digest`.
async fn push(
    config: &Config,
    built: &Built,
    out: &std::path::Path,
    reference: &str,
    password: &Option<zeroize::Zeroizing<String>>,
) -> Result<String, ImageBuildError> {
    use crate::image::layout::Layout;
    use crate::image::push::{PushSource, push};
    use crate::image::reference::Reference;
    use crate::image::registry::{ClientOptions, RegistryClient};
    let failed = |message: String| ImageBuildError::Push {
        reference: reference.to_owned(),
        message,
    };
    let target = Reference::parse(reference).map_err(|e| failed(e.to_string()))?;
    let registry = config.images.registry(&target.registry);
    let client = RegistryClient::new(&registry, password.clone(), ClientOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let layout = Layout::open(out).map_err(|e| failed(e.to_string()))?;
    let got = push(
        &client,
        PushSource::Layout(&layout),
        &built.manifest,
        &target,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    if got != built.manifest.digest {
        return Err(ImageBuildError::PushedOther {
            reference: reference.to_owned(),
            got,
            built: built.manifest.digest.clone(),
        });
    }
    Ok(format!("{reference}@{got}"))
}

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<Scratch, ImageBuildError> {
    use std::os::unix::fs::DirBuilderExt;
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source");
    let path = std::env::temp_dir().join(format!("gigmcp-build-{}", hex::encode(b)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&path)
        .map_err(|e| ImageBuildError::Vault(format!("{}: {e}", path.display())))?;
    Ok(Scratch(path))
}

/// A new single-link file of ours, 0644 (the helper checks owner and link count).
fn write_new(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
