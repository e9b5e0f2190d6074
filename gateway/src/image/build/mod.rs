//! `gigmcp image build`: a reproducible server image from an npm or PyPI package or a local
//! directory, written as an oci-layout. The steps, in order:
//!
//! 1. the runtime and builder bases for the package's ecosystem, from the cache or made
//!    ([`base`]); the builder's root is placed beneath the helper's `images_dir`;
//! 2. the install step in a sandbox whose egress reaches the package registry alone
//!    ([`install`]), with the package's own scripts enabled: they are what the sandbox contains;
//! 3. its output, read as untrusted input beneath the data dir's fd ([`tree`]), and the
//!    package found in it: its version, entrypoint and MCP server name ([`app`]);
//! 4. the image: the base's layer, the app layer at `/app` ([`layer`]), the config (fixed
//!    `created`, the `io.modelcontextprotocol.server.name` label) and the manifest, in a new
//!    oci-layout directory ([`layout_writer`]). Building the same spec twice gives the same
//!    manifest digest: every byte of every document and layer is fixed by the inputs.
//!
//! The data dir is removed when the build ends, whatever its outcome; a failed build leaves
//! nothing at `--out`.

pub mod app;
pub mod base;
pub mod imported;
pub mod install;
pub mod layer;
pub mod layout_writer;
pub mod spec;
pub mod tree;

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use self::base::{Base, BaseError, Bases, Recipe};
use self::install::{InstallSandbox, Registry, SandboxRunner};
use self::layout_writer::{LayoutError, LayoutWriter};
use self::spec::{Ecosystem, Spec};
use self::tree::{Limits, Links, Tree, TreeError};
use crate::image::blobs::random_suffix;
use crate::image::digest::Digest;
use crate::image::oci::{Descriptor, ImageConfig, Platform, RootFs, RunConfig};

/// The label naming the MCP server an image holds (the MCP Registry's proof of ownership).
pub const SERVER_NAME_LABEL: &str = "io.modelcontextprotocol.server.name";
/// How long an install may run.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Which runtime base the image is built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChoice {
    /// The ecosystem's Debian-made base (`--base node` or `--base python`).
    Debian(Ecosystem),
    /// A base from an oci-layout, pinned by its manifest's digest
    /// (`--base oci-layout:DIR@sha256:…`). The install step still runs in the ecosystem's
    /// Debian builder.
    OciLayout { dir: PathBuf, digest: Digest },
}

impl BaseChoice {
    pub fn parse(text: &str) -> Result<Self, BuildError> {
        match text {
            "node" => Ok(Self::Debian(Ecosystem::Npm)),
            "python" => Ok(Self::Debian(Ecosystem::Pypi)),
            other if other.starts_with("oci-layout:") => {
                let (dir, digest) = imported::parse(other)?;
                Ok(Self::OciLayout { dir, digest })
            }
            other => Err(BuildError::Base(format!(
                "--base {other:?}: expected node, python or oci-layout:DIR@sha256:…"
            ))),
        }
    }
}

/// One build.
#[derive(Debug, Clone)]
pub struct Request {
    pub spec: Spec,
    pub base: BaseChoice,
    pub out: PathBuf,
    /// The server name for the label (else the package's own).
    pub name: Option<String>,
    /// Another registry than the ecosystem's public one.
    pub registry: Option<String>,
    /// Registry addresses in reserved space the operator opted in to, checked by the caller
    /// against the registry's resolution ([`check_registry_addresses`]) and by the egress
    /// proxy against every other class.
    pub registry_addresses: Vec<IpAddr>,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// The manifest's descriptor: its digest is the image's.
    pub manifest: Descriptor,
    pub server_name: String,
    pub install_time: Duration,
    pub total_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Base(String),
    #[error(transparent)]
    Bases(#[from] BaseError),
    #[error(transparent)]
    Registry(#[from] install::RegistryError),
    #[error(
        "--registry-address {address}: {host} does not resolve to it (it resolves to {resolved}); \
         the opt-in names the registry's own address only"
    )]
    AddressNotResolved {
        address: IpAddr,
        host: String,
        resolved: String,
    },
    #[error("resolving the registry {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("the package source {path}: {message}")]
    Source { path: String, message: String },
    #[error("the build's data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("the install sandbox: {0}")]
    Sandbox(Box<dyn std::error::Error + Send + Sync>),
    #[error("the install did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the install failed: {0}")]
    InstallFailed(String),
    #[error("the install output is refused: {0}")]
    Output(#[from] TreeError),
    #[error(transparent)]
    App(#[from] app::AppError),
    #[error(
        "no server name: the package declares none (mcpName, server.json, mcp-name:); pass --name"
    )]
    NoServerName,
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Imported(#[from] imported::ImportedError),
}

/// The builder: where bases are cached, the helper's directories, and the sandbox runner.
#[derive(Debug)]
pub struct Builder<R> {
    pub runner: R,
    pub bases: Bases,
    /// The helper's `images_dir` (the builder root goes beneath it).
    pub images_dir: PathBuf,
    /// The helper's `data_root` (the install's data dir is made there).
    pub data_root: PathBuf,
}

/// Removes a build's data dir when the build ends.
struct DataDir(PathBuf);

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl<R: SandboxRunner> Builder<R> {
    pub async fn build(&self, req: &Request) -> Result<Built, BuildError> {
        let started = Instant::now();
        let eco = req.spec.ecosystem();
        if let BaseChoice::Debian(base_eco) = req.base
            && base_eco != eco
        {
            return Err(BuildError::Base(format!(
                "{} is a {} package: it needs the {} base",
                req.spec,
                eco.name(),
                match eco {
                    Ecosystem::Npm => "node",
                    Ecosystem::Pypi => "python",
                }
            )));
        }
        let registry = Registry::for_ecosystem(eco, req.registry.as_deref())?;
        let dir_package = match &req.spec {
            Spec::Dir { path, ecosystem } => Some(source_name(path, *ecosystem)?),
            _ => None,
        };
        let (runtime, builder) = {
            let bases = self.bases.clone();
            tokio::task::spawn_blocking(move || -> Result<(Base, Base), BaseError> {
                Ok((
                    bases.ensure(&Recipe::runtime(eco))?,
                    bases.ensure(&Recipe::builder(eco))?,
                ))
            })
            .await
            .map_err(|e| BuildError::Base(e.to_string()))??
        };
        let builder_root = self.place_builder_root(&builder)?;

        let data_name = format!("build-{}", random_suffix());
        let data = DataDir(self.data_root.join(&data_name));
        create_private_dir(&data.0)?;
        if let Spec::Dir { path, .. } = &req.spec {
            copy_tree(path, &data.0.join("src"))?;
        }
        let manifest_json = install::manifest(&data_name, &req.spec, &registry);
        let manifest = crate::manifest::Manifest::from_json(&manifest_json.to_string())
            .map_err(|e| BuildError::Base(e.to_string()))?;
        let install_started = Instant::now();
        let finished = self
            .runner
            .run(
                InstallSandbox {
                    name: data_name.clone(),
                    rootfs: builder_root,
                    data_dir: data_name.clone(),
                    manifest,
                    reserved_opt_in: req.registry_addresses.clone(),
                },
                INSTALL_TIMEOUT,
            )
            .await
            .map_err(|e| BuildError::Sandbox(Box::new(e)))?;
        let install_time = install_started.elapsed();
        if finished.timed_out {
            return Err(BuildError::Timeout(INSTALL_TIMEOUT));
        }
        let stdout = String::from_utf8_lossy(&finished.stdout);
        if !stdout.lines().any(|l| l.trim() == install::DONE) {
            let from = finished.stderr.len().saturating_sub(2000);
            let tail = crate::terminal::escape_bytes(&finished.stderr[from..]);
            return Err(BuildError::InstallFailed(tail));
        }

        let app_root = open_beneath_data(&data.0)?;
        let tree = Tree::scan_fd(app_root, Limits::APP, Links::Inside)?;
        let (package, wanted) = app::wanted(&req.spec, dir_package);
        let app = app::inspect(&tree, eco, &package, wanted.as_deref())?;
        let server_name = req
            .name
            .clone()
            .or(app.server_name.clone())
            .ok_or(BuildError::NoServerName)?;

        let mtime = layer::source_date_epoch();
        let mut writer = LayoutWriter::create(&req.out)?;
        let base = match &req.base {
            BaseChoice::Debian(_) => imported::ImportedBase {
                layers: vec![(runtime.layer_path(), runtime.descriptor())],
                diff_ids: vec![runtime.record.diff_id.clone()],
                env: Recipe::runtime(eco).env(),
            },
            BaseChoice::OciLayout { dir, digest } => imported::read(dir, digest)?,
        };
        let mut layers = Vec::new();
        for (path, d) in &base.layers {
            layers.push(writer.copy_layer(path, d)?);
        }
        let (app_layer, app_diff) = writer.add_layer(&tree, app::APP_DIR, mtime)?;
        layers.push(app_layer);
        let mut diff_ids = base.diff_ids.clone();
        diff_ids.push(app_diff);
        let mut env = base.env.clone();
        env.extend(app.env.iter().cloned());
        let labels = BTreeMap::from([
            (SERVER_NAME_LABEL.to_owned(), server_name.clone()),
            (
                "org.opencontainers.image.version".to_owned(),
                req.spec.version().to_owned(),
            ),
        ]);
        let host = Platform::host();
        let config = ImageConfig {
            architecture: host.architecture,
            os: host.os,
            created: Some(rfc3339(mtime)),
            config: RunConfig {
                user: None,
                env: Some(env),
                entrypoint: Some(app.entrypoint.clone()),
                cmd: None,
                working_dir: Some(format!("/{}", app::APP_DIR)),
                labels: Some(labels),
            },
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids,
            },
        };
        let manifest = writer.finish(&config, layers, req.spec.version())?;
        Ok(Built {
            manifest,
            server_name,
            install_time,
            total_time: started.elapsed(),
        })
    }

    /// The builder base's root beneath `images_dir` (copied there once if the cache is
    /// elsewhere), as the helper wants it: relative to `images_dir`.
    fn place_builder_root(&self, builder: &Base) -> Result<String, BuildError> {
        let rootfs = builder.rootfs();
        if let Ok(rel) = rootfs.strip_prefix(&self.images_dir) {
            return Ok(rel.display().to_string());
        }
        let name = builder
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("build/{name}");
        let dest = self.images_dir.join(&rel);
        if !dest.exists() {
            let parent = self.images_dir.join("build");
            std::fs::create_dir_all(&parent).map_err(|source| BuildError::DataDir {
                path: parent.display().to_string(),
                source,
            })?;
            let tmp = parent.join(format!(".{name}.partial-{}", random_suffix()));
            let copied = std::process::Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&rootfs)
                .arg(&tmp)
                .status();
            if !copied.is_ok_and(|s| s.success()) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(BuildError::Base(format!(
                    "copying the builder root {} beneath {}",
                    rootfs.display(),
                    self.images_dir.display()
                )));
            }
            if std::fs::rename(&tmp, &dest).is_err() {
                // Placed by a concurrent build: theirs is the same root.
                let _ = std::fs::remove_dir_all(&tmp);
            }
        }
        Ok(rel)
    }
}

/// Checks the operator's `--registry-address` opt-ins against what the registry's hosts
/// resolve to here: each must be one of their answers (an opt-in cannot name some other
/// address). That each is in the reserved class and nothing else (never loopback, link-local,
/// metadata, private, the pool or the host's own) is checked again by the egress proxy itself
/// when the sandbox's egress is built (`egress::addresses`).
pub fn check_registry_addresses(
    registry: &Registry,
    addresses: &[IpAddr],
) -> Result<(), BuildError> {
    if addresses.is_empty() {
        return Ok(());
    }
    let mut resolved = Vec::new();
    for (host, port) in &registry.hosts {
        let answers: Vec<IpAddr> = (host.as_str(), *port)
            .to_socket_addrs()
            .map_err(|e| BuildError::Resolve {
                host: host.clone(),
                message: e.to_string(),
            })?
            .map(|a| a.ip())
            .collect();
        resolved.push((host.clone(), answers));
    }
    for address in addresses {
        if let Some((host, answers)) = resolved.iter().find(|(_, a)| !a.contains(address)) {
            return Err(BuildError::AddressNotResolved {
                address: *address,
                host: host.clone(),
                resolved: answers
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

/// The package name a local source declares (`package.json`'s `name`, `pyproject.toml`'s
/// `[project] name`).
fn source_name(path: &Path, eco: Ecosystem) -> Result<String, BuildError> {
    let bad = |message: String| BuildError::Source {
        path: path.display().to_string(),
        message,
    };
    match eco {
        Ecosystem::Npm => {
            let text = std::fs::read(path.join("package.json")).map_err(|e| bad(e.to_string()))?;
            let json: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| bad(format!("package.json: {e}")))?;
            json["name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("package.json has no name".into()))
        }
        Ecosystem::Pypi => {
            let text = std::fs::read_to_string(path.join("pyproject.toml"))
                .map_err(|e| bad(format!("pyproject.toml: {e}")))?;
            let doc: toml::Table =
                toml::from_str(&text).map_err(|e| bad(format!("pyproject.toml: {e}")))?;
            doc.get("project")
                .and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_owned)
                .ok_or_else(|| bad("pyproject.toml has no [project] name".into()))
        }
    }
}

fn create_private_dir(path: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| BuildError::DataDir {
            path: path.display().to_string(),
            source,
        })
}

/// Copies a local package source into the data dir (links copied as links, never followed).
fn copy_tree(from: &Path, to: &Path) -> Result<(), BuildError> {
    let ok = std::process::Command::new("cp")
        .args(["-a", "--no-dereference"])
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(BuildError::Source {
            path: from.display().to_string(),
            message: "could not be copied into the build's data dir".into(),
        })
    }
}

/// `<data>/app`, opened beneath the data dir without following a link (the sandbox owned it).
fn open_beneath_data(data: &Path) -> Result<std::os::fd::OwnedFd, BuildError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let at = |e: rustix::io::Errno| {
        BuildError::Output(TreeError::Io {
            path: "app".into(),
            source: e.into(),
        })
    };
    let root = rustix::fs::open(
        data,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(at)?;
    rustix::fs::openat2(
        &root,
        app::APP_DIR,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(at)
}

/// `epoch` as RFC 3339 UTC (days to a civil date: Howard Hinnant's algorithm).
fn rfc3339(epoch: u64) -> String {
    let (days, secs) = ((epoch / 86_400) as i64, epoch % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_is_the_epoch_in_rfc3339() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
