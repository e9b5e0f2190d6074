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
mod settings;
mod upload;

use std::collections::HashMap;
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
use client::{MAX_SMALL_BODY, Request, Response, Transport};
pub use client::{Origin, Timeouts, special_class};
pub use settings::RegistryConfig;

use crate::egress::{Resolve, SystemResolver};
use crate::image::blobs::{BlobError, BlobStore, BlobWriter};
use crate::image::digest::Digest;

/// The registry's own special addresses, allowed from then on: all of them if every address
/// its name resolves to now is special and none is of a class never dialled (metadata,
/// unspecified, multicast); none otherwise (a public registry, or a mixed answer, which the
/// transport then refuses).
async fn pinned_special(
    resolver: &dyn Resolve,
    registry: &Origin,
) -> Result<Vec<IpAddr>, RegistryError> {
    let addrs: Vec<IpAddr> = match registry.host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => resolver
            .resolve(&registry.host, registry.port)
            .await
            .map_err(|source| RegistryError::Resolve {
                host: registry.host.clone(),
                source,
            })?
            .into_iter()
            .map(|a| a.ip())
            .collect(),
    };
    let all_special = !addrs.is_empty() && addrs.iter().all(|ip| special_class(*ip).is_some());
    let never_dialled = addrs.iter().any(|ip| {
        matches!(
            crate::egress::address_class::never_class(crate::egress::address_class::effective(*ip)),
            Some(
                crate::egress::AddressClass::Metadata
                    | crate::egress::AddressClass::Unspecified
                    | crate::egress::AddressClass::Multicast
            )
        )
    });
    Ok(if all_special && !never_dialled {
        addrs
            .into_iter()
            .map(crate::egress::address_class::effective)
            .collect()
    } else {
        Vec::new()
    })
}

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

/// Whether the registry was found to need credentials, and what was obtained.
#[derive(Default)]
enum AuthState {
    #[default]
    Unknown,
    Anonymous,
    Basic,
    Bearer {
        realm: Uri,
        service: Option<String>,
        /// Per scope; wiped when dropped.
        tokens: HashMap<String, Zeroizing<String>>,
    },
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unknown => f.write_str("Unknown"),
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic => f.write_str("Basic"),
            // The tokens are credentials: only their scopes are shown.
            Self::Bearer { realm, tokens, .. } => f
                .debug_struct("Bearer")
                .field("realm", realm)
                .field("scopes", &tokens.keys().collect::<Vec<_>>())
                .finish(),
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

    /// `GET /v2/`: learns whether and how the registry wants credentials.
    pub async fn ping(&self) -> Result<(), RegistryError> {
        let mut state = self.auth.lock().await;
        self.ping_locked(&mut state).await
    }

    async fn ping_locked(&self, state: &mut AuthState) -> Result<(), RegistryError> {
        let resp = self.transport.send(Request::get(self.url("/v2/")?)).await?;
        match resp.status {
            s if s.is_success() => {
                *state = AuthState::Anonymous;
                Ok(())
            }
            StatusCode::UNAUTHORIZED => self.learn_challenge(state, &resp),
            s => Err(RegistryError::Status {
                what: format!("{}/v2/", self.registry),
                status: s.as_u16(),
                message: resp.error_excerpt(&self.transport.timeouts).await,
            }),
        }
    }

    /// Records what a 401 from the registry asks for (Bearer preferred over Basic).
    fn learn_challenge(&self, state: &mut AuthState, resp: &Response) -> Result<(), RegistryError> {
        let origin = self.registry.to_string();
        let bad = |message: String| RegistryError::Challenge {
            origin: origin.clone(),
            message,
        };
        let mut challenges = Vec::new();
        for v in resp.headers.get_all(header::WWW_AUTHENTICATE) {
            let v = v.to_str().map_err(|_| bad("not ASCII".into()))?;
            challenges.extend(auth::parse_challenges(v).map_err(bad)?);
        }
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer
                .param("realm")
                .ok_or_else(|| bad("a Bearer challenge without a realm".into()))?;
            let realm: Uri = realm
                .parse()
                .map_err(|_| bad(format!("realm {realm:?} is not a URL")))?;
            let keep = match state {
                AuthState::Bearer { realm: r, .. } => *r == realm,
                _ => false,
            };
            if !keep {
                *state = AuthState::Bearer {
                    realm,
                    service: bearer.param("service").map(str::to_owned),
                    tokens: HashMap::new(),
                };
            }
            Ok(())
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            if self.credentials.is_none() {
                return Err(RegistryError::NoCredentials {
                    registry: self.registry.to_string(),
                });
            }
            *state = AuthState::Basic;
            Ok(())
        } else {
            Err(bad("no Basic or Bearer challenge".into()))
        }
    }

    /// The `Authorization` value for `scope`, fetching a token if needed.
    async fn authorization(
        &self,
        state: &mut AuthState,
        scope: &str,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if matches!(state, AuthState::Unknown) {
            self.ping_locked(state).await?;
        }
        let value = match state {
            AuthState::Unknown | AuthState::Anonymous => return Ok(None),
            AuthState::Basic => self
                .credentials
                .as_ref()
                .expect("Basic is chosen only with credentials")
                .basic(),
            AuthState::Bearer {
                realm,
                service,
                tokens,
            } => {
                if !tokens.contains_key(scope) {
                    let token = self.fetch_token(realm, service.as_deref(), scope).await?;
                    tokens.insert(scope.to_owned(), token);
                }
                Zeroizing::new(format!("Bearer {}", &*tokens[scope]))
            }
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| RegistryError::Token {
            realm: self.registry.to_string(),
            message: "not a valid header value".into(),
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    async fn fetch_token(
        &self,
        realm: &Uri,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Zeroizing<String>, RegistryError> {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let realm_origin = Origin::of(realm)?;
        let mut query = Vec::new();
        if let Some(s) = service {
            query.push(format!(
                "service={}",
                utf8_percent_encode(s, NON_ALPHANUMERIC)
            ));
        }
        query.push(format!(
            "scope={}",
            utf8_percent_encode(scope, NON_ALPHANUMERIC)
        ));
        let sep = if realm.query().is_some() { '&' } else { '?' };
        let url: Uri = format!("{realm}{sep}{}", query.join("&"))
            .parse()
            .map_err(|_| RegistryError::BadUrl {
                url: realm.to_string(),
                reason: "not a valid token realm",
            })?;
        let mut req = Request::get(url);
        if let Some(c) = &self.credentials {
            let mut v = HeaderValue::from_str(&c.basic()).map_err(|_| RegistryError::Token {
                realm: realm_origin.to_string(),
                message: "the username is not a valid header value".into(),
            })?;
            v.set_sensitive(true);
            req.authorization = Some(v);
        }
        let t = &self.transport.timeouts;
        let resp = self.transport.send(req).await?;
        let answered = Origin::of(&resp.url)?;
        match resp.status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                if self.credentials.is_some() && !self.transport.is_trusted(&answered) =>
            {
                return Err(RegistryError::CredentialsElsewhere {
                    origin: answered.to_string(),
                });
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(RegistryError::Unauthorized {
                    origin: answered.to_string(),
                    detail: resp.error_excerpt(t).await,
                });
            }
            s => {
                return Err(RegistryError::Token {
                    realm: answered.to_string(),
                    message: format!("{s} {}", resp.error_excerpt(t).await),
                });
            }
        }
        let body = resp
            .read_capped("the token answer", MAX_SMALL_BODY, t)
            .await?;
        auth::parse_token(&body).map_err(|message| RegistryError::Token {
            realm: answered.to_string(),
            message,
        })
    }

    /// Sends a request with the credentials `scope` needs; on a 401 from the registry learns
    /// the challenge and tries once more.
    async fn send(&self, scope: &str, mut req: Request) -> Result<Response, RegistryError> {
        let mut state = self.auth.lock().await;
        for attempt in 0..2 {
            req.authorization = self.authorization(&mut state, scope).await?;
            let resp = self.transport.send(req.clone()).await?;
            if resp.status != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let answered = Origin::of(&resp.url)?;
            if answered != self.registry {
                return Err(RegistryError::CredentialsElsewhere {
                    origin: answered.to_string(),
                });
            }
            if attempt == 1 || matches!(*state, AuthState::Basic) {
                return Err(RegistryError::Unauthorized {
                    origin: answered.to_string(),
                    detail: resp.error_excerpt(&self.transport.timeouts).await,
                });
            }
            // A token for another scope than the one asked for, or an expired one.
            if let AuthState::Bearer { tokens, .. } = &mut *state {
                tokens.remove(scope);
            }
            self.learn_challenge(&mut state, &resp)?;
        }
        unreachable!("the loop returns on its second attempt")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_a_registry_wholly_on_special_addresses_may_dial_them_and_only_its_own() {
        use crate::egress::StaticResolver;
        let origin = |host: &str| Origin {
            https: true,
            host: host.into(),
            port: 443,
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut names = StaticResolver::new();
        names
            .insert("lab.example", vec![ip("10.1.2.3"), ip("10.1.2.4")])
            .insert("mixed.example", vec![ip("127.0.0.1"), ip("93.184.216.34")])
            .insert("public.example", vec![ip("93.184.216.34")])
            .insert("meta.example", vec![ip("169.254.169.254")]);
        let pinned = |host: &'static str| {
            let names = &names;
            async move { pinned_special(names, &origin(host)).await.unwrap() }
        };
        assert_eq!(
            pinned("lab.example").await,
            [ip("10.1.2.3"), ip("10.1.2.4")]
        );
        // One special address beside a public one (or a rebinding first answer) opens none.
        assert!(pinned("mixed.example").await.is_empty());
        assert!(pinned("public.example").await.is_empty());
        // Metadata is never dialled, whatever the registry resolves to.
        assert!(pinned("meta.example").await.is_empty());
        assert_eq!(
            pinned_special(&names, &origin("127.0.0.1")).await.unwrap(),
            [ip("127.0.0.1")]
        );
    }

    #[test]
    fn a_bearer_state_never_prints_its_tokens() {
        let secret = "tok-3f9a1c";
        let state = AuthState::Bearer {
            realm: "https://auth.example/token".parse().unwrap(),
            service: None,
            tokens: HashMap::from([(
                "repository:a:pull".to_owned(),
                Zeroizing::new(secret.to_owned()),
            )]),
        };
        let shown = format!("{state:?}");
        assert!(shown.contains("repository:a:pull"), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    }
}
