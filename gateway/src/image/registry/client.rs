//! The HTTP transport under the registry client: one HTTP/1.1 connection per request (hyper's
//! low-level `conn` API over tokio-rustls, ring only), so that this code, not a pool, decides
//! which address each connection reaches and which TLS roots vouch for it.
//!
//! Every connection resolves its host, classifies each address with the egress proxy's tables
//! (`egress::address_class`) and refuses loopback, link-local, private and otherwise special
//! addresses unless the registry itself was configured at one; it then dials exactly the
//! addresses it checked (no second lookup to rebind). Redirects (at most
//! [`MAX_REDIRECTS`]) are followed only to https, or to http when the registry is a plain-HTTP
//! loopback one; the `Authorization` header goes only to the origins the caller trusts.
//! Every body is read under an idle timeout and an overall deadline, and never past a cap.

mod body;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout, timeout_at};

use super::RegistryError;
use crate::egress::Resolve;
use crate::egress::address_class::{PRIVATE, effective, never_class};

/// Redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// Token and error bodies are read up to this.
pub const MAX_SMALL_BODY: u64 = 64 << 10;

/// How long the transport waits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake.
    pub connect: Duration,
    /// The longest silence while waiting for a response head or the next body bytes.
    pub idle: Duration,
    /// A body's overall deadline is `base + size / min_rate`: a trickling blob ends.
    pub deadline_base: Duration,
    pub min_rate_bytes_per_sec: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(15),
            idle: Duration::from_secs(30),
            deadline_base: Duration::from_secs(60),
            // 256 KiB/s: a 1 GiB layer may take ~70 minutes, a trickle of bytes cannot.
            min_rate_bytes_per_sec: 256 << 10,
        }
    }
}

impl Timeouts {
    pub fn deadline_for(&self, size: u64) -> Duration {
        self.deadline_base + Duration::from_secs(size / self.min_rate_bytes_per_sec.max(1))
    }
}

/// `scheme://host:port`, the unit credentials are bound to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub https: bool,
    /// Lower-case, without IPv6 brackets.
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn of(uri: &Uri) -> Result<Self, RegistryError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(RegistryError::BadUrl {
                    url: uri.to_string(),
                    reason: "not an absolute http(s) URL",
                });
            }
        };
        let host = uri.host().ok_or_else(|| RegistryError::BadUrl {
            url: uri.to_string(),
            reason: "no host",
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            https,
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// `host:port` for URLs and `Host` (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn is_loopback_host(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// The class of a special address (`loopback`, `link-local`, `private`, …), or `None` for a
/// public one.
pub fn special_class(ip: IpAddr) -> Option<&'static str> {
    let ip = effective(ip);
    if let Some(class) = never_class(ip) {
        return Some(class.name());
    }
    PRIVATE.iter().any(|n| n.contains(&ip)).then_some("private")
}

/// A request body the transport can send again after a 401 (it is rebuilt for each try).
#[derive(Debug, Clone)]
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// A file sent as it is read, `len` bytes.
    File(std::path::PathBuf, u64),
}

type SendBody = BoxBody<Bytes, std::io::Error>;

impl Body {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(_, len) => *len,
        }
    }

    fn into_send(self) -> Result<SendBody, RegistryError> {
        Ok(match self {
            Body::Empty => Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
            Body::Bytes(b) => Full::new(b).map_err(|n| match n {}).boxed(),
            Body::File(path, _) => {
                let file = std::fs::File::open(&path).map_err(|source| RegistryError::Local {
                    path: path.clone(),
                    source,
                })?;
                let stream = futures_util::stream::unfold(Some(file), |file| async move {
                    let mut file = file?;
                    let read = tokio::task::spawn_blocking(move || {
                        use std::io::Read;
                        let mut buf = vec![0u8; 256 << 10];
                        let n = file.read(&mut buf)?;
                        buf.truncate(n);
                        Ok::<_, std::io::Error>((file, buf))
                    })
                    .await
                    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                    match read {
                        Ok((_, buf)) if buf.is_empty() => None,
                        Ok((file, buf)) => {
                            Some((Ok(hyper::body::Frame::data(Bytes::from(buf))), Some(file)))
                        }
                        Err(e) => Some((Err(e), None)),
                    }
                });
                http_body_util::StreamBody::new(stream).boxed()
            }
        })
    }
}

/// One request as the registry client asks for it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Uri,
    pub headers: HeaderMap,
    pub body: Body,
    /// Sent only to the origins [`Transport`] trusts, on every hop of a redirect chain.
    pub authorization: Option<HeaderValue>,
}

impl Request {
    pub fn get(url: Uri) -> Self {
        Self {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            body: Body::Empty,
            authorization: None,
        }
    }
}

/// A response head and its body, still on the wire.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The URL that answered (after redirects).
    pub url: Uri,
    body: hyper::body::Incoming,
    /// The connection's task: ended with the response, so that a server streaming forever
    /// stops costing anything once we stop reading.
    _conn: AbortOnDrop,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connections for one registry: who gets credentials, which TLS roots, which addresses.
#[derive(Debug)]
pub struct Transport {
    pub resolver: Arc<dyn Resolve>,
    /// Roots for the registry and its token origins (its `ca_file`, else the system's).
    pub tls_trusted: Arc<ClientConfig>,
    /// Roots for any other origin (blob storage a redirect names): the system's.
    pub tls_other: Arc<ClientConfig>,
    /// The registry's origin first, then its token origins.
    pub trusted: Vec<Origin>,
    /// The special (loopback, private, …) addresses any origin may be dialled at: the
    /// registry's own, pinned when the client was made, and only when every address it
    /// resolved to then was special (a registry configured on such a network). Empty for a
    /// public registry. Never a metadata, unspecified or multicast address.
    pub allowed_special: Vec<IpAddr>,
    /// The registry is plain-HTTP on loopback: http is allowed to loopback origins.
    pub plain_http: bool,
    pub timeouts: Timeouts,
}

impl Transport {
    pub fn is_trusted(&self, origin: &Origin) -> bool {
        self.trusted.contains(origin)
    }

    /// The addresses `origin` may be dialled at, each checked.
    pub async fn addresses(&self, origin: &Origin) -> Result<Vec<SocketAddr>, RegistryError> {
        let addrs: Vec<SocketAddr> = match origin.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, origin.port)],
            Err(_) => self
                .resolver
                .resolve(&origin.host, origin.port)
                .await
                .map_err(|source| RegistryError::Resolve {
                    host: origin.host.clone(),
                    source,
                })?,
        };
        if addrs.is_empty() {
            return Err(RegistryError::Resolve {
                host: origin.host.clone(),
                source: std::io::Error::other("no addresses"),
            });
        }
        // One special address among several is refused too: which one a connection would
        // reach is the resolver's (the attacker's) choice. A special address is dialled only
        // if it is one the registry itself had when the client was made, so neither a realm,
        // a redirect nor a later answer for the registry's own name (rebinding) reaches any
        // other.
        for a in &addrs {
            if let Some(class) = special_class(a.ip()) {
                if !self.allowed_special.contains(&effective(a.ip())) {
                    return Err(RegistryError::ForbiddenAddress {
                        origin: origin.to_string(),
                        address: a.ip(),
                        class,
                    });
                }
            }
        }
        Ok(addrs)
    }

    async fn connect(&self, origin: &Origin) -> Result<Box<dyn Io>, RegistryError> {
        let addrs = self.addresses(origin).await?;
        let dial = async {
            let mut last = None;
            for a in &addrs {
                match tokio::net::TcpStream::connect(a).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("at least one address"))
        };
        let connect_timeout = || RegistryError::Timeout {
            what: format!("connecting to {origin}"),
            after: self.timeouts.connect,
        };
        let deadline = Instant::now() + self.timeouts.connect;
        let tcp = timeout_at(deadline, dial)
            .await
            .map_err(|_| connect_timeout())?
            .map_err(|source| RegistryError::Connect {
                origin: origin.to_string(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        if !origin.https {
            return Ok(Box::new(tcp));
        }
        let config = if self.is_trusted(origin) {
            &self.tls_trusted
        } else {
            &self.tls_other
        };
        let name = match origin.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => {
                ServerName::try_from(origin.host.clone()).map_err(|_| RegistryError::BadUrl {
                    url: origin.to_string(),
                    reason: "not a valid TLS server name",
                })?
            }
        };
        let tls = timeout_at(
            deadline,
            tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
        )
        .await
        .map_err(|_| connect_timeout())?
        .map_err(|source| RegistryError::Tls {
            origin: origin.to_string(),
            source,
        })?;
        Ok(Box::new(tls))
    }

    /// Whether a URL's scheme may be used at all.
    fn check_scheme(&self, origin: &Origin, url: &Uri) -> Result<(), RegistryError> {
        if origin.https || (self.plain_http && origin.is_loopback_host()) {
            Ok(())
        } else {
            Err(RegistryError::BadUrl {
                url: url.to_string(),
                reason: "plain http (only a plain_http loopback registry may use it)",
            })
        }
    }

    /// Sends `req` and follows redirects (GET and HEAD only).
    pub async fn send(&self, req: Request) -> Result<Response, RegistryError> {
        let mut url = req.url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let origin = Origin::of(&url)?;
            self.check_scheme(&origin, &url)?;
            let resp = self.send_once(&req, &url, &origin).await?;
            let redirect = matches!(resp.status.as_u16(), 301 | 302 | 303 | 307 | 308)
                && matches!(req.method, Method::GET | Method::HEAD);
            if !redirect {
                return Ok(resp);
            }
            let location = resp
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| RegistryError::BadUrl {
                    url: url.to_string(),
                    reason: "a redirect without a Location",
                })?;
            url = join(&url, location)?;
        }
        Err(RegistryError::TooManyRedirects {
            url: req.url.to_string(),
        })
    }

    async fn send_once(
        &self,
        req: &Request,
        url: &Uri,
        origin: &Origin,
    ) -> Result<Response, RegistryError> {
        let io = self.connect(origin).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, SendBody>(TokioIo::new(io))
                .await
                .map_err(|source| RegistryError::Http {
                    origin: origin.to_string(),
                    source,
                })?;
        let conn = AbortOnDrop(tokio::spawn(conn).abort_handle());
        let path = url.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut builder = http::Request::builder()
            .method(req.method.clone())
            .uri(path);
        let headers = builder.headers_mut().expect("a fresh builder");
        headers.extend(req.headers.clone());
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&origin.authority()).map_err(|_| RegistryError::BadUrl {
                url: url.to_string(),
                reason: "not a valid Host",
            })?,
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static("gigmcp"));
        if !matches!(req.method, Method::GET | Method::HEAD) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(req.body.len()));
        }
        if let Some(auth) = &req.authorization
            && self.is_trusted(origin)
        {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, auth);
        }
        let request =
            builder
                .body(req.body.clone().into_send()?)
                .map_err(|_| RegistryError::BadUrl {
                    url: url.to_string(),
                    reason: "not a valid request",
                })?;
        let head = timeout(self.timeouts.idle, sender.send_request(request))
            .await
            .map_err(|_| RegistryError::Timeout {
                what: format!("{} {url}: the response head", req.method),
                after: self.timeouts.idle,
            })?
            .map_err(|source| RegistryError::Http {
                origin: origin.to_string(),
                source,
            })?;
        let (parts, body) = head.into_parts();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            url: url.clone(),
            body,
            _conn: conn,
        })
    }
}

/// A `Location` (absolute, or a path on the same origin) against the URL that sent it.
fn join(base: &Uri, location: &str) -> Result<Uri, RegistryError> {
    let bad = |reason| RegistryError::BadUrl {
        url: location.chars().take(200).collect(),
        reason,
    };
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.parse().map_err(|_| bad("not a valid URL"));
    }
    if !location.starts_with('/') || location.starts_with("//") {
        return Err(bad("neither absolute nor a path"));
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse().map_err(|_| bad("not a valid path"))?);
    Uri::from_parts(parts).map_err(|_| bad("not a valid URL"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_classified_like_the_egress_proxy_does() {
        for (ip, class) in [
            ("127.0.0.1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("169.254.169.254", Some("cloud-metadata")),
            ("169.254.3.4", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("fd00::1", Some("private")),
            ("64:ff9b::a01:203", Some("private")),
            ("11.2.3.4", None),
            ("2a00:1450::1", None),
        ] {
            assert_eq!(special_class(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn locations_join_against_the_url_that_sent_them() {
        let base: Uri = "https://reg.example:5000/v2/a/blobs/x".parse().unwrap();
        assert_eq!(
            join(&base, "/v2/b?x=1").unwrap().to_string(),
            "https://reg.example:5000/v2/b?x=1"
        );
        assert_eq!(
            join(&base, "https://store.example/o").unwrap().to_string(),
            "https://store.example/o"
        );
        assert!(join(&base, "//evil.example/x").is_err());
        assert!(join(&base, "relative").is_err());
        let o = Origin::of(&"https://[::1]/x".parse().unwrap()).unwrap();
        assert_eq!(
            (o.authority(), o.is_loopback_host()),
            ("[::1]:443".into(), true)
        );
    }
}
