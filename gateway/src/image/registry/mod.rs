//! An OCI distribution client: `/v2/` ping, anonymous, Basic and Bearer-token auth, manifests
//! and blobs by digest, blob upload and manifest push.
//!
//! Written on the hyper + rustls (ring) stack the egress proxy already links, not on
//! `oci-client`: that crate buffers whole manifests and token answers without a cap and
//! follows redirects and re-sends credentials by its own rules, while a hostile registry must
//! not make the daemon buffer or write without bound, and a credential must reach only the
//! registry's origin. Here every read is capped (the top document at
//! [`crate::image::oci::MAX_MANIFEST_BYTES`], a blob at its descriptor's size through [`BlobWriter`], token
//! and error bodies at 64 KiB) and timed (connect, idle read, a per-blob deadline scaled by
//! size); the `Authorization` header goes only to the registry's own origin (scheme, host,
//! port) and its configured `token_origins`. A realm or a redirect elsewhere (blob storage) is
//! followed without it, and one resolving to a loopback, link-local, private or otherwise
//! special address is refused unless the registry itself is at such an address.
//!
//! TLS roots: the registry's `ca_file`, else the system's bundle, read as the egress proxy
//! reads it ([`crate::egress::tls::system_roots`]); other origins always get the system's.

mod auth;
mod client;
mod session;
mod settings;
mod upload;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, Uri, header};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use zeroize::Zeroizing;

pub use auth::Credentials;
pub use client::{Origin, Timeouts, special_class};
use client::{Request, Response, Transport};
use session::{AuthState, pinned_special};
pub use settings::RegistryConfig;

use crate::egress::{Resolve, SystemResolver};
use crate::image::blobs::{BlobError, BlobStore, BlobWriter};
use crate::image::digest::Digest;

/// Why a registry operation failed. Messages name the origin, the object and the cause; they
/// never carry a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error(
        "{origin} resolves to {address}, a {class} address: refused (the registry is not \
         configured at such an address)"
    )]
    ForbiddenAddress {
        origin: String,
        address: IpAddr,
        class: &'static str,
    },
    #[error("cannot connect to {origin}: {source}")]
    Connect {
        origin: String,
        source: std::io::Error,
    },
    #[error("TLS with {origin}: {source}")]
    Tls {
        origin: String,
        source: std::io::Error,
    },
    #[error("HTTP with {origin}: {source}")]
    Http {
        origin: String,
        source: hyper::Error,
    },
    #[error("{what}: nothing for {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("more than {} redirects from {url}", client::MAX_REDIRECTS)]
    TooManyRedirects { url: String },
    #[error("{what} is larger than the {max} bytes allowed")]
    TooLarge { what: String, max: u64 },
    #[error("{what}: {status} {message}")]
    Status {
        what: String,
        status: u16,
        message: String,
    },
    #[error("{what} is not in the registry (404)")]
    NotFound { what: String },
    #[error("{origin} refused the credentials: {detail}")]
    Unauthorized { origin: String, detail: String },
    #[error(
        "{origin} asks for credentials, but it is not the registry's origin or one of its \
         token_origins: none were sent"
    )]
    CredentialsElsewhere { origin: String },
    #[error("the registry {registry} asks for credentials and none are configured")]
    NoCredentials { registry: String },
    #[error("{origin}: unreadable WWW-Authenticate challenge: {message}")]
    Challenge { origin: String, message: String },
    #[error("token from {realm}: {message}")]
    Token { realm: String, message: String },
    #[error("the registry answered {what} with digest {got}, not {expected}")]
    PushedDigest {
        what: String,
        expected: Digest,
        got: String,
    },
    #[error("registry {host}: {message}")]
    Config { host: String, message: String },
    #[error("{path}: {source}")]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What a client is built with besides the registry's configuration.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub resolver: Arc<dyn Resolve>,
    pub timeouts: Timeouts,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            resolver: Arc::new(SystemResolver),
            timeouts: Timeouts::default(),
        }
    }
}

/// A client for one registry.
#[derive(Debug)]
pub struct RegistryClient {
    transport: Transport,
    registry: Origin,
    credentials: Option<Credentials>,
    auth: tokio::sync::Mutex<AuthState>,
}

/// The media types a manifest request accepts: every manifest and index type we read.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

fn config_error(host: &str, message: impl Into<String>) -> RegistryError {
    RegistryError::Config {
        host: host.to_owned(),
        message: message.into(),
    }
}

fn tls_config(
    roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(roots);
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(crate::egress::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_no_client_auth(),
    ))
}

impl RegistryClient {
    /// A client for `config`'s registry. `password` is the value of its `password_secret`
    /// (the caller reads the vault). The registry's host is resolved once here: if it is at
    /// a special address, realms and redirects may be too.
    pub async fn new(
        config: &RegistryConfig,
        password: Option<Zeroizing<String>>,
        options: ClientOptions,
    ) -> Result<Self, RegistryError> {
        let host = &config.host;
        let scheme = if config.plain_http { "http" } else { "https" };
        let registry = Origin::of(
            &format!("{scheme}://{host}/")
                .parse()
                .map_err(|_| config_error(host, "not host[:port]"))?,
        )?;
        if config.plain_http && !registry.is_loopback_host() {
            return Err(config_error(host, "plain_http needs a loopback registry"));
        }
        let credentials = match (&config.username, password) {
            (Some(username), Some(password)) => Some(Credentials {
                username: username.clone(),
                password,
            }),
            (Some(_), None) => {
                return Err(config_error(host, "a username but no password was given"));
            }
            (None, _) => None,
        };
        let trusted_roots = match &config.ca_file {
            Some(path) => {
                let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| config_error(host, format!("ca_file {}: {e}", path.display())))?;
                if certs.is_empty() {
                    return Err(config_error(
                        host,
                        format!("ca_file {} holds no certificate", path.display()),
                    ));
                }
                certs
            }
            None => crate::egress::tls::system_roots(),
        };
        let tls = |roots| tls_config(roots).map_err(|e| config_error(host, e.to_string()));
        let mut trusted = vec![registry.clone()];
        for o in &config.token_origins {
            let uri: Uri = o
                .parse()
                .map_err(|_| config_error(host, format!("token origin {o:?} is not a URL")))?;
            trusted.push(Origin::of(&uri)?);
        }
        let mut transport = Transport {
            resolver: options.resolver,
            tls_trusted: tls(trusted_roots)?,
            tls_other: tls(crate::egress::tls::system_roots())?,
            trusted,
            allowed_special: Vec::new(),
            plain_http: config.plain_http,
            timeouts: options.timeouts,
        };
        transport.allowed_special = pinned_special(transport.resolver.as_ref(), &registry).await?;
        Ok(Self {
            transport,
            registry,
            credentials,
            auth: Default::default(),
        })
    }

    /// The registry's origin.
    pub fn origin(&self) -> &Origin {
        &self.registry
    }

    fn url(&self, path: &str) -> Result<Uri, RegistryError> {
        format!("{}{path}", self.registry)
            .parse()
            .map_err(|_| RegistryError::BadUrl {
                url: path.to_owned(),
                reason: "not a valid registry path",
            })
    }

    fn pull_scope(repository: &str) -> String {
        format!("repository:{repository}:pull")
    }

    fn push_scope(repository: &str) -> String {
        format!("repository:{repository}:pull,push")
    }

    async fn expect_ok(&self, what: String, resp: Response) -> Result<Response, RegistryError> {
        match resp.status {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound { what }),
            s => Err(RegistryError::Status {
                what,
                status: s.as_u16(),
                message: resp.error_excerpt(&self.transport.timeouts).await,
            }),
        }
    }

    /// A manifest or index by digest: its bytes (at most `max`) and the `Content-Type` the
    /// registry gave (a hint only; the caller hashes the bytes).
    pub async fn fetch_manifest(
        &self,
        repository: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<(Bytes, Option<String>), RegistryError> {
        let what = format!("manifest {repository}@{digest}");
        let mut req = Request::get(self.url(&format!("/v2/{repository}/manifests/{digest}"))?);
        req.headers
            .insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let resp = self.send(&Self::pull_scope(repository), req).await?;
        let resp = self.expect_ok(what.clone(), resp).await?;
        let content_type = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let body = resp
            .read_capped(&what, max, &self.transport.timeouts)
            .await?;
        Ok((body, content_type))
    }

    /// Streams blob `digest` of `size` bytes into `store`, committed only if it matches.
    pub async fn fetch_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {repository}@{digest}");
        let req = Request::get(self.url(&format!("/v2/{repository}/blobs/{digest}"))?);
        let resp = self.send(&Self::pull_scope(repository), req).await?;
        let resp = self.expect_ok(what.clone(), resp).await?;
        let mut writer: BlobWriter = store.writer(digest, size)?;
        resp.stream_into(&what, &mut writer, size, &self.transport.timeouts)
            .await?;
        writer.commit()?;
        Ok(())
    }
}
