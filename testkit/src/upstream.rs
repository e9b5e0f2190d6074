//! The fake upstream: HTTPS (h1 and h2) with a certificate from a test CA, in its own netns.
//! It records exactly what it receives and serves:
//! - `/echo[?chunk=N]`: request headers as `x-echo-<name>` response headers, and a body of the
//!   request head followed by the request body, sent in N-byte frames;
//! - `/big?n=N`: N bytes of [`pattern`]; `/sum`: `<length> <sha256>` of the request body;
//! - `/gzip`: a response with `Content-Encoding: gzip`;
//! - `/search/users?q=Q`: a GitHub-shaped JSON answer (login `Q`, the request's Authorization
//!   as its bio); anything else: `ok`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::egress::{contains, in_netns};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The test CA's name and constraints (the same each time: [`TestCa::issue`] signs with them).
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "egress test upstream CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p
}

/// A test CA and one leaf for several names.
#[derive(Debug)]
pub struct TestCa {
    pub ca_pem: String,
    pub leaf: CertificateDer<'static>,
    pub leaf_key: Vec<u8>,
    /// The CA's key (PKCS#8), for [`TestCa::issue`].
    ca_key: Vec<u8>,
}

impl TestCa {
    pub fn new(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let ca_key_der = ca_key.serialize_der();
        let p = ca_params();
        let ca_cert = p.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(p, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            leaf: leaf.der().clone(),
            leaf_key: leaf_key.serialize_der(),
            ca_key: ca_key_der,
        }
    }

    /// Another leaf from this CA for `names`, valid only in 2000 when `expired`: its
    /// certificate and key, both PEM.
    pub fn issue(&self, names: &[&str], expired: bool) -> (String, String) {
        let key = KeyPair::try_from(self.ca_key.as_slice()).unwrap();
        let issuer = Issuer::new(ca_params(), key);
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(2000, 12, 31);
        }
        let leaf_key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&leaf_key, &issuer).unwrap();
        (cert.pem(), leaf_key.serialize_pem())
    }
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path_and_query: String,
    /// `:authority` (h2) or `Host` (h1).
    pub authority: String,
    pub version: Version,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body_len: usize,
    /// The body, if under 4 MiB.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Everything received, as bytes (for "was X ever seen" checks).
    pub fn all_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "{} {} {}\n",
            self.method, self.path_and_query, self.authority
        )
        .into_bytes();
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out.extend_from_slice(&self.body);
        out
    }
}

#[derive(Debug)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Period of [`pattern`]: prime, so it never lines up with chunk or record sizes.
const PERIOD: usize = 65_521;

/// The deterministic content of `/big`: a fixed pseudo-random period, copied rather than
/// computed per byte, so the upstream (on the same cores as the proxy in the benchmark) costs
/// little more than a memcpy, as a remote server would cost the proxy nothing.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..PERIOD as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    });
    let mut out = Vec::with_capacity(len);
    let mut at = (offset % PERIOD as u64) as usize;
    while out.len() < len {
        let n = (len - out.len()).min(PERIOD - at);
        out.extend_from_slice(&table[at..at + n]);
        at = 0;
    }
    out
}

impl Upstream {
    pub async fn start(ns: &str, addr: SocketAddr, ca: &TestCa) -> Self {
        let plain_addr = SocketAddr::new(addr.ip(), 80);
        let (listener, plain) = in_netns(ns, move || {
            (
                std::net::TcpListener::bind(addr).expect("bind upstream"),
                std::net::TcpListener::bind(plain_addr).expect("bind plain upstream"),
            )
        });
        plain.set_nonblocking(true).unwrap();
        let plain = tokio::net::TcpListener::from_std(plain).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.leaf_key.clone()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ca.leaf.clone()], key)
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let records = seen.clone();
        let plain_records = seen.clone();
        let plain_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = plain.accept().await else {
                    continue;
                };
                let records = plain_records.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(records.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        let task = tokio::spawn(async move {
            let _plain = AbortOnDrop(plain_task);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As real servers do: without it, h2 frames written separately wait for the
                // proxy's delayed ACK (Nagle), ~40 ms per response.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let records = records.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(records.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether `needle` appeared anywhere in anything received.
    pub fn ever_saw(&self, needle: &[u8]) -> bool {
        self.seen().iter().any(|s| contains(&s.all_bytes(), needle))
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

fn query_param(q: Option<&str>, key: &str) -> Option<u64> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn query_str<'q>(q: Option<&'q str>, key: &str) -> Option<&'q str> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// `/reflect`: what an API that echoes a credential back does, in the encoding `form` (see
/// [`crate::reflect`]) of `pre` + the request's `Authorization` value (or, with `from=last`,
/// the last one this upstream received) + `post` (`pre`/`post` in hex), in a header
/// `x-reflect`, split over two `x-reflect-split` headers at byte `split`, in the body (as
/// frames of `chunk` bytes) and, with `trailer=1`, in a trailer; with status `status`.
fn reflect(source: &[u8], query: Option<&str>) -> Response<Body> {
    let bytes = |key| hex::decode(query_str(query, key).unwrap_or("")).unwrap_or_default();
    let plain = [&bytes("pre")[..], source, &bytes("post")[..]].concat();
    let form = query_str(query, "form").unwrap_or("raw");
    let text = crate::reflect::encode(form, &plain);
    let status = query_param(query, "status").unwrap_or(200) as u16;
    let mut b = Response::builder().status(status);
    if let Ok(v) = http::HeaderValue::from_bytes(&text) {
        b = b.header("x-reflect", v);
    }
    let split = (query_param(query, "split").unwrap_or(1) as usize).clamp(1, text.len().max(1));
    if let (Ok(a), Ok(z)) = (
        http::HeaderValue::from_bytes(&text[..split]),
        http::HeaderValue::from_bytes(&text[split..]),
    ) {
        b = b.header("x-reflect-split", a).header("x-reflect-split", z);
    }
    if status == 206 {
        b = b.header("content-range", format!("bytes 0-{}/*", text.len()));
    }
    let mut body = b"reflected: ".to_vec();
    body.extend_from_slice(&text);
    body.extend_from_slice(b" end\n");
    let chunk = query_param(query, "chunk").unwrap_or(4096).max(1) as usize;
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = body
        .chunks(chunk)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    if query_param(query, "trailer") == Some(1)
        && let Ok(v) = http::HeaderValue::from_bytes(&text)
    {
        let mut t = http::HeaderMap::new();
        t.insert("x-reflect-trailer", v);
        frames.push(Ok(Frame::trailers(t)));
    }
    b.body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
        .unwrap()
}

async fn handle(
    records: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            parts
                .headers
                .get("host")
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let mut body = body;
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            hasher.update(&data);
            len += data.len();
            if kept.len() < 4 << 20 {
                kept.extend_from_slice(&data);
            }
        }
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        authority,
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body_len: len,
        body: kept.clone(),
    };
    let remembered = {
        let mut all = records.lock().unwrap();
        let last_auth = all
            .iter()
            .rev()
            .find_map(|s| s.header("authorization").map(<[u8]>::to_vec));
        all.push(seen.clone());
        last_auth
    };
    let query = parts.uri.query();
    let resp = match parts.uri.path() {
        "/echo" => {
            let mut b = Response::builder();
            for (n, v) in &seen.headers {
                b = b.header(format!("x-echo-{n}"), v.as_slice());
            }
            let text = seen.all_bytes();
            let chunk = query_param(query, "chunk").unwrap_or(4096).max(1) as usize;
            let frames: Vec<Result<Frame<Bytes>, BoxError>> = text
                .chunks(chunk)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            b.body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
                .unwrap()
        }
        "/big" => {
            let n = query_param(query, "n").unwrap_or(0);
            const STEP: u64 = 64 * 1024;
            let frames = futures_util::stream::iter((0..n.div_ceil(STEP)).map(move |i| {
                let len = (n - i * STEP).min(STEP) as usize;
                Ok::<_, BoxError>(Frame::data(Bytes::from(pattern(i * STEP, len))))
            }));
            Response::new(StreamBody::new(frames).boxed_unsync())
        }
        "/sum" => Response::new(full(format!("{len} {}", hex::encode(hasher.finalize())))),
        "/reflect" => {
            let source = match query_str(query, "from") {
                Some("last") => remembered.unwrap_or_default(),
                _ => seen.header("authorization").unwrap_or_default().to_vec(),
            };
            reflect(&source, query)
        }
        // GitHub's user search as the API shapes it (for the real server-github): the query as
        // the one login found, and the Authorization the request carried, which the egress
        // proxy's scrubber turns back into the placeholder on the way to the server.
        "/search/users" => {
            let found = serde_json::json!({
                "total_count": 1,
                "incomplete_results": false,
                "items": [{
                    "login": query_str(query, "q").unwrap_or_default(),
                    "id": 1,
                    "type": "User",
                    "bio": String::from_utf8_lossy(seen.header("authorization").unwrap_or_default()),
                }],
            });
            Response::builder()
                .header("content-type", "application/json; charset=utf-8")
                .body(full(found.to_string()))
                .unwrap()
        }
        "/gzip" => Response::builder()
            .header("content-encoding", "gzip")
            .body(full(kept))
            .unwrap(),
        _ => Response::new(full("ok")),
    };
    Ok(resp)
}
