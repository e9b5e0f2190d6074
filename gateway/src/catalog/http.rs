//! [`HttpFetch`]: a registry's TUF metadata files over HTTPS, read under the limits the TUF
//! specification's "endless data" attack calls for.
//!
//! Every file is one GET on its own HTTP/1.1 connection (hyper's low-level `conn` API over
//! tokio-rustls, ring only, as the image registry client does), so nothing is pooled or reused
//! between files. Each read stops at the role's cap: refused before the body when the declared
//! `Content-Length` passes it, and at the first byte past it otherwise (the body is never
//! buffered beyond the cap plus one frame, whatever the server claims). One overall deadline
//! covers a file's connection, redirects, head and body, so a trickling server ends too. At
//! most [`MAX_REDIRECTS`] redirects are followed, each only to the same origin (scheme, host,
//! port): metadata has no reason to live elsewhere, and a registry must not steer the gateway
//! at other hosts. TLS roots are the system's (read as the egress proxy reads them), plus the
//! registry's own CA when the admin gave one; plain http is allowed only to a loopback address
//! literal (tests, a mirror on the same host). The host is the one the admin configured and
//! no redirect may leave it, so its addresses are not classified as an image pull's realms
//! and redirects are: a registry on a private network is the admin's choice.
//!
//! It knows nothing of what the files mean: verification is `tuf`'s. The [`tuf::Fetch`] trait
//! is synchronous, so each `HttpFetch` owns a single-threaded runtime: call it from a blocking
//! context (the CLI, or `spawn_blocking` in the daemon), never from inside a runtime.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use crate::tuf;

/// Redirects followed for one file.
pub const MAX_REDIRECTS: usize = 3;

/// The deadline [`super::fetcher`] gives each file: a 32 MiB targets file at ~300 KiB/s.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Why a metadata file could not be fetched. Messages name the file or origin and the cause.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("{file}: not found (404)")]
    NotFound { file: String },
    #[error("{file}: larger than {max} bytes")]
    TooLarge { file: String, max: u64 },
    #[error("{file}: not received within the {after:?} deadline")]
    Deadline { file: String, after: Duration },
    #[error("{file}: redirected to {to}, another origin: refused")]
    CrossOrigin { file: String, to: String },
    #[error("{file}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { file: String },
    #[error("{file}: the registry answered {status}")]
    Status { file: String, status: u16 },
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
    #[error("the registry's CA certificate: {0}")]
    Ca(String),
    #[error("cannot start the fetch runtime: {0}")]
    Runtime(std::io::Error),
}

impl HttpError {
    /// The form `tuf` reads: not found and too large keep their meaning (the root chain ends
    /// at the first missing file; an oversized file is its own refusal), the rest is detail.
    fn into_fetch(self, file: &str) -> tuf::FetchError {
        match self {
            HttpError::NotFound { file } => tuf::FetchError::NotFound { file },
            HttpError::TooLarge { file, max } => tuf::FetchError::TooLarge { file, max },
            other => tuf::FetchError::Failed {
                file: file.to_owned(),
                detail: other.to_string(),
            },
        }
    }
}

/// `scheme://host:port`: redirects must stay on it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    /// Lower case, without IPv6 brackets.
    host: String,
    port: u16,
}

impl Origin {
    fn of(uri: &Uri) -> Result<Self, HttpError> {
        let bad = |reason| HttpError::BadUrl {
            url: uri.to_string(),
            reason,
        };
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("not an absolute http(s) URL")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(Self {
            https,
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority())
    }
}

/// Fetches a registry's metadata files from one base URL.
#[derive(Debug)]
pub struct HttpFetch {
    /// Ends in `/`: a file name is appended.
    base: String,
    origin: Origin,
    tls: Arc<rustls::ClientConfig>,
    deadline: Duration,
    runtime: tokio::runtime::Runtime,
}

impl HttpFetch {
    /// Files under `base_url` (https, or http to a loopback address), each within `deadline`,
    /// verified against the system's TLS roots.
    // CONTRACT: fails with this layer's `HttpError` rather than `CatalogError` (which has a
    // `From` for it): the caller learns which URL was refused and why.
    pub fn new(base_url: &str, deadline: Duration) -> Result<Self, HttpError> {
        Self::with_ca(base_url, deadline, None)
    }

    /// As [`HttpFetch::new`], also trusting the CA certificates in `ca_pem` (a self-hosted
    /// registry's own CA).
    pub fn with_ca(
        base_url: &str,
        deadline: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, HttpError> {
        let base = if base_url.ends_with('/') {
            base_url.to_owned()
        } else {
            format!("{base_url}/")
        };
        let uri: Uri = base.parse().map_err(|_| HttpError::BadUrl {
            url: base_url.to_owned(),
            reason: "not a valid URL",
        })?;
        let origin = Origin::of(&uri)?;
        let loopback = origin
            .host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
        if !origin.https && !loopback {
            return Err(HttpError::BadUrl {
                url: base_url.to_owned(),
                reason: "plain http is allowed only to a loopback address (127.0.0.1, [::1])",
            });
        }
        if uri.query().is_some() {
            return Err(HttpError::BadUrl {
                url: base_url.to_owned(),
                reason: "a query string has no place in a metadata base URL",
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        Ok(Self {
            base,
            origin,
            tls: tls_config(ca_pem)?,
            deadline,
            runtime,
        })
    }

    /// `file` (a bare TUF file name), refused past `max` bytes or the deadline.
    pub fn get(&mut self, file: &str, max: u64) -> Result<Vec<u8>, HttpError> {
        // TUF file names are `[N.]role.json`: anything else (a path, a query) is refused
        // rather than appended to the URL.
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if file.is_empty() || file.starts_with('.') || !file.chars().all(plain) {
            return Err(HttpError::BadUrl {
                url: file.chars().take(100).collect(),
                reason: "not a metadata file name",
            });
        }
        let url: Uri = format!("{}{file}", self.base)
            .parse()
            .map_err(|_| HttpError::BadUrl {
                url: format!("{}{file}", self.base),
                reason: "not a valid URL",
            })?;
        let deadline = self.deadline;
        let work = get_following(&self.origin, &self.tls, file, url, max);
        self.runtime.block_on(async move {
            tokio::time::timeout(deadline, work)
                .await
                .unwrap_or_else(|_| {
                    Err(HttpError::Deadline {
                        file: file.to_owned(),
                        after: deadline,
                    })
                })
        })
    }
}

impl tuf::Fetch for HttpFetch {
    fn fetch(&mut self, file: &str, max: u64) -> Result<Vec<u8>, tuf::FetchError> {
        self.get(file, max).map_err(|e| e.into_fetch(file))
    }
}

fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(crate::egress::tls::system_roots());
    if let Some(pem) = ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|e| HttpError::Ca(e.to_string()))?;
        if certs.is_empty() {
            return Err(HttpError::Ca("no PEM certificate in it".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| HttpError::Ca(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::egress::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Ca(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// GETs `url`, following same-origin redirects, and reads the body under `max`.
async fn get_following(
    origin: &Origin,
    tls: &Arc<rustls::ClientConfig>,
    file: &str,
    mut url: Uri,
    max: u64,
) -> Result<Vec<u8>, HttpError> {
    for _ in 0..=MAX_REDIRECTS {
        let (head, mut body, _conn) = send(origin, tls, &url).await?;
        let status = head.status;
        if status.is_redirection() {
            let location = head
                .headers
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            url = same_origin(origin, &url, location, file)?;
            continue;
        }
        if status == StatusCode::NOT_FOUND {
            return Err(HttpError::NotFound {
                file: file.to_owned(),
            });
        }
        if !status.is_success() {
            return Err(HttpError::Status {
                file: file.to_owned(),
                status: status.as_u16(),
            });
        }
        let too_large = || HttpError::TooLarge {
            file: file.to_owned(),
            max,
        };
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|source| HttpError::Http {
                origin: origin.to_string(),
                source,
            })?;
            if let Ok(data) = frame.into_data() {
                if out.len() as u64 + data.len() as u64 > max {
                    return Err(too_large());
                }
                out.extend_from_slice(&data);
            }
        }
        return Ok(out);
    }
    Err(HttpError::TooManyRedirects {
        file: file.to_owned(),
    })
}

/// A redirect's `Location` (absolute, or a path) resolved against `url`, if it stays on
/// `origin`.
fn same_origin(origin: &Origin, url: &Uri, location: &str, file: &str) -> Result<Uri, HttpError> {
    let shown: String = location.chars().take(200).collect();
    let cross = || HttpError::CrossOrigin {
        file: file.to_owned(),
        to: shown.clone(),
    };
    let next: Uri = if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = url.clone().into_parts();
        parts.path_and_query = Some(location.parse().map_err(|_| cross())?);
        Uri::from_parts(parts).map_err(|_| cross())?
    } else {
        location.parse().map_err(|_| cross())?
    };
    match Origin::of(&next) {
        Ok(o) if &o == origin => Ok(next),
        _ => Err(cross()),
    }
}

/// Aborts the connection's task when the response is dropped: a server streaming forever
/// stops costing anything once we stop reading.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Head = http::response::Parts;

/// One GET on a fresh connection: the response head, its body, and the connection's guard.
async fn send(
    origin: &Origin,
    tls: &Arc<rustls::ClientConfig>,
    url: &Uri,
) -> Result<(Head, hyper::body::Incoming, AbortOnDrop), HttpError> {
    let tcp = tokio::net::TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|source| HttpError::Connect {
            origin: origin.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::get(path)
        .header(header::HOST, origin.authority())
        .header(header::USER_AGENT, "gigmcp")
        .header(header::ACCEPT_ENCODING, "identity")
        .body(Empty::<Bytes>::new())
        .map_err(|_| HttpError::BadUrl {
            url: url.to_string(),
            reason: "not a valid request",
        })?;
    if !origin.https {
        return exchange(origin, TokioIo::new(tcp), request).await;
    }
    let name = match origin.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(origin.host.clone()).map_err(|_| HttpError::BadUrl {
            url: url.to_string(),
            reason: "not a valid TLS server name",
        })?,
    };
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|source| HttpError::Tls {
            origin: origin.to_string(),
            source,
        })?;
    exchange(origin, TokioIo::new(stream), request).await
}

async fn exchange<T>(
    origin: &Origin,
    io: TokioIo<T>,
    request: http::Request<Empty<Bytes>>,
) -> Result<(Head, hyper::body::Incoming, AbortOnDrop), HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| HttpError::Http {
        origin: origin.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    let guard = AbortOnDrop(tokio::spawn(conn).abort_handle());
    let response = sender.send_request(request).await.map_err(http)?;
    let (head, body) = response.into_parts();
    Ok((head, body, guard))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::of(&url.parse().unwrap()).unwrap()
    }

    #[test]
    fn a_redirect_may_name_a_path_or_a_url_on_the_same_origin() {
        let o = origin("https://reg.example:8443/m/");
        let url: Uri = "https://reg.example:8443/m/root.json".parse().unwrap();
        let next = same_origin(&o, &url, "/mirror/root.json", "root.json").unwrap();
        assert_eq!(
            next.to_string(),
            "https://reg.example:8443/mirror/root.json"
        );
        let next = same_origin(&o, &url, "https://REG.example:8443/x", "root.json").unwrap();
        assert_eq!(next.path(), "/x");
    }

    #[test]
    fn a_redirect_to_another_scheme_host_or_port_is_refused() {
        let o = origin("https://reg.example/m/");
        let url: Uri = "https://reg.example/m/root.json".parse().unwrap();
        for to in [
            "http://reg.example/m/root.json",
            "https://evil.example/m/root.json",
            "https://reg.example:444/m/root.json",
            "//evil.example/x",
            "relative.json",
        ] {
            assert!(
                matches!(
                    same_origin(&o, &url, to, "root.json"),
                    Err(HttpError::CrossOrigin { .. })
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn plain_http_is_refused_unless_to_a_loopback_address() {
        for url in [
            "http://reg.example/",
            "http://localhost:80/",
            "http://10.0.0.1/",
        ] {
            assert!(
                matches!(
                    HttpFetch::new(url, DEFAULT_DEADLINE),
                    Err(HttpError::BadUrl { .. })
                ),
                "{url}"
            );
        }
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/m",
            "https://reg.example/m",
        ] {
            assert!(HttpFetch::new(url, DEFAULT_DEADLINE).is_ok(), "{url}");
        }
    }

    #[test]
    fn a_file_name_that_is_not_a_bare_name_is_refused_before_any_request() {
        let mut f = HttpFetch::new("http://127.0.0.1:9/", DEFAULT_DEADLINE).unwrap();
        for name in ["../root.json", "a/b.json", "root.json?x=1", ".hidden", ""] {
            assert!(
                matches!(f.get(name, 10), Err(HttpError::BadUrl { .. })),
                "{name:?}"
            );
        }
    }
}
