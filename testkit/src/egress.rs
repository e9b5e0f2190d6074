//! Real network namespaces for the egress tests: an "upstream" netns running a fake HTTPS
//! server (test CA, records what it receives, echoes), and a "client" netns playing the
//! sandbox, whose host-side veth address the proxy listens on. The host sides live in the
//! test's own namespace (see [`crate::privileged`]), so their names and addresses are the
//! test's alone; the two named namespaces get generated names and go when [`Net`] drops, even
//! when a test panics.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use gateway::audit::Auditor;
use gateway::egress::{
    EgressConfig, EgressLimits, EgressProxy, EgressShared, SandboxEgress, StaticResolver,
    make_placeholder,
};
use gateway::manifest::Manifest;
use gateway::store::{AuditEvent, SqliteStore, Store};
use gateway::vault::{MasterKey, SecretName, SecretValue, Vault};

use crate::netns::{NamedNetns, Netns, ip_ok};
use crate::upstream;

/// Real credential values the tests put in the vault.
pub const TOKEN_VALUE: &str = "sk-live-REALtoken-7f3a9c2e41d85b60";
pub const BASIC_VALUE: &str = "pw-REALbasic-93ab0cd1e2";
pub const QKEY_VALUE: &str = "qk-REAL/query+key 42";

/// Two named namespaces and their veths; removed on drop (deleting a namespace deletes the
/// veth pair, host side included).
#[derive(Debug)]
pub struct Net {
    pub index: u8,
    pub up_ns: String,
    pub client_ns: String,
    _named: [NamedNetns; 2],
}

impl Net {
    /// Must be called inside the test's own namespace: the host sides and the 10.240/10.241
    /// addresses are fixed per index, unique only within it.
    fn new() -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        assert!(
            !Netns::current().is_host(),
            "an egress test must run in its own network namespace: wrap it in testkit::privileged"
        );
        let index = NEXT.fetch_add(1, Ordering::SeqCst);
        let base = crate::names::unique("gmeg");
        let up = NamedNetns::add(format!("{base}-up"));
        let client = NamedNetns::add(format!("{base}-cl"));
        let net = Self {
            index,
            up_ns: up.name.clone(),
            client_ns: client.name.clone(),
            _named: [up, client],
        };
        net.pair(&net.up_ns, &format!("ge{index}u"), 240);
        net.pair(&net.client_ns, &format!("ge{index}c"), 241);
        net
    }

    fn pair(&self, ns: &str, host_link: &str, second: u8) {
        let i = self.index;
        ip_ok(&[
            "link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        ip_ok(&[
            "addr",
            "add",
            &format!("10.{second}.{i}.1/30"),
            "dev",
            host_link,
        ]);
        ip_ok(&["link", "set", host_link, "up"]);
        ip_ok(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.{second}.{i}.2/30"),
            "dev",
            "eth0",
        ]);
        ip_ok(&["-n", ns, "link", "set", "eth0", "up"]);
        ip_ok(&["-n", ns, "link", "set", "lo", "up"]);
        ip_ok(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.{second}.{i}.1"),
        ]);
    }

    /// The upstream server's address (in the upstream netns).
    pub fn upstream_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 240, self.index, 2)
    }

    /// The proxy's address: the host side of the client's link (N.1).
    pub fn proxy_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 241, self.index, 1)
    }

    /// The sandbox's address (N.2).
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 241, self.index, 2)
    }
}

/// Runs `f` on a thread that joined network namespace `ns`; sockets made there stay in it.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    Netns::open(&format!("/run/netns/{ns}")).run(f)
}

/// A TCP connection from inside `ns`.
pub async fn connect_from(ns: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let s = in_netns(ns, move || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect")
    });
    s.set_nonblocking(true).unwrap();
    tokio::net::TcpStream::from_std(s).unwrap()
}

pub struct Fixture {
    pub net: Net,
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub shared: Arc<EgressShared>,
    pub proxy: EgressProxy,
    pub upstream: upstream::Upstream,
    /// The CA the proxy trusts for upstreams (besides the system's).
    pub test_ca: upstream::TestCa,
    /// The gateway's CA certificate (what sandboxes trust).
    pub ca_pem: PathBuf,
    /// credential name → placeholder
    pub ph: HashMap<String, String>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("net", &self.net)
            .field("proxy", &self.proxy.local_addr())
            .finish_non_exhaustive()
    }
}

pub fn manifest() -> Manifest {
    Manifest::from_json(
        r#"{"name":"egress-test","version":"1","command":["/bin/server"],
        "egress":[
          {"host":"api.test.example"},
          {"host":"other.test.example"},
          {"host":"loop.test.example"},
          {"host":"meta.test.example"},
          {"host":"pool.test.example"},
          {"host":"plain.test.example","ports":[80],"http":true},
          {"host":"badtls.test.example","ports":[8441,8442,8443,8444,8445,8446]}
        ],
        "credentials":[
          {"name":"API_TOKEN","hosts":["api.test.example"],
           "inject":{"type":"header","name":"Authorization","format":"Bearer {}"}},
          {"name":"BASIC_PW","hosts":["api.test.example"],"inject":{"type":"basic"}},
          {"name":"QUERY_KEY","hosts":["api.test.example"],"inject":{"type":"query","param":"key"}}
        ]}"#,
    )
    .expect("test manifest")
}

impl Fixture {
    pub async fn new(limits: EgressLimits) -> Self {
        Self::with_values(limits, [TOKEN_VALUE, BASIC_VALUE, QKEY_VALUE]).await
    }

    /// With these real values of API_TOKEN, BASIC_PW and QUERY_KEY (attack tests: random ones).
    pub async fn with_values(limits: EgressLimits, values: [&str; 3]) -> Self {
        let net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open_in(&dir.path().join("state")).unwrap());
        let vault = Arc::new(Vault::open(store.clone(), MasterKey::generate().unwrap()).unwrap());
        for (name, value) in ["API_TOKEN", "BASIC_PW", "QUERY_KEY"]
            .into_iter()
            .zip(values)
        {
            vault
                .set(
                    &SecretName::parse(name).unwrap(),
                    &SecretValue::from(value.as_bytes()),
                )
                .unwrap();
        }
        let test_ca = upstream::TestCa::new(&[
            "api.test.example",
            "other.test.example",
            "notlisted.test.example",
        ]);
        let test_ca_pem = dir.path().join("upstream-ca.pem");
        std::fs::write(&test_ca_pem, &test_ca.ca_pem).unwrap();
        let upstream = upstream::Upstream::start(
            &net.up_ns,
            SocketAddr::new(IpAddr::V4(net.upstream_ip()), 443),
            &test_ca,
        )
        .await;

        let up = IpAddr::V4(net.upstream_ip());
        let mut resolver = StaticResolver::new();
        resolver
            .insert("api.test.example", vec![up])
            .insert("other.test.example", vec![up])
            .insert("notlisted.test.example", vec![up])
            .insert("plain.test.example", vec![up])
            .insert("badtls.test.example", vec![up])
            .insert("loop.test.example", vec!["127.0.0.1".parse().unwrap()])
            .insert(
                "meta.test.example",
                vec!["169.254.169.254".parse().unwrap()],
            )
            .insert("pool.test.example", vec!["10.231.5.2".parse().unwrap()]);
        let ca_pem = dir.path().join("gateway-ca.pem");
        let mut config = EgressConfig::new(ca_pem.clone());
        config.extra_upstream_ca = Some(test_ca_pem);
        config.limits = limits;
        config.resolver = Arc::new(resolver);
        let shared =
            EgressShared::new(vault, Auditor::new(store.clone(), "gigmcpd"), config).unwrap();

        let ph: HashMap<String, String> = ["API_TOKEN", "BASIC_PW", "QUERY_KEY"]
            .iter()
            .map(|n| (n.to_string(), make_placeholder().unwrap()))
            .collect();
        let sb = SandboxEgress {
            sandbox_id: format!("test{}", net.index),
            listen: SocketAddr::new(IpAddr::V4(net.proxy_ip()), 0),
            expected_peer: net.client_ip(),
            manifest: Arc::new(manifest()),
            placeholders: ph.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // The test upstream lives in private space: approved for this server, as an admin
            // would for a homelab service.
            approved_ranges: vec![format!("10.240.{}.0/30", net.index).parse().unwrap()],
            reserved_opt_in: Vec::new(),
        };
        let proxy = EgressProxy::spawn(sb, shared.clone()).await.unwrap();
        Self {
            net,
            dir,
            store,
            shared,
            proxy,
            upstream,
            test_ca,
            ca_pem,
            ph,
        }
    }

    pub fn token_ph(&self) -> &str {
        &self.ph["API_TOKEN"]
    }

    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.proxy.local_addr())
    }

    /// curl inside the client netns, through the proxy, trusting the gateway CA.
    pub fn curl(&self, args: &[&str]) -> Curl {
        let proxy = self.proxy_url();
        let ca = self.ca_pem.to_string_lossy().into_owned();
        let mut all: Vec<&str> = vec![
            "-sS",
            "--max-time",
            "60",
            "--proxy",
            &proxy,
            "--cacert",
            &ca,
        ];
        all.extend_from_slice(args);
        self.curl_raw(&all)
    }

    /// curl inside the client netns with exactly `args`.
    pub fn curl_raw(&self, args: &[&str]) -> Curl {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.net.client_ns, "curl"])
            .args(args)
            .output()
            .expect("run curl");
        Curl {
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every audit event so far (oldest first).
    pub async fn audit(&self) -> Vec<AuditEvent> {
        self.shared.flush_audit().await;
        let mut all = self.store.audit_recent(100_000).unwrap();
        all.reverse();
        all
    }

    pub fn cacert(&self) -> &Path {
        &self.ca_pem
    }
}

#[derive(Debug)]
pub struct Curl {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Curl {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Limits small enough for tests to reach: a 2 s header read, a 3 s handshake, 16 connections.
pub fn limits() -> EgressLimits {
    EgressLimits {
        header_read_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(3),
        max_connections: 16,
        ..EgressLimits::default()
    }
}

/// Whether `events` hold an `egress.denied` for `target` whose detail names `reason`.
pub fn denied_with(events: &[AuditEvent], target: &str, reason: &str) -> bool {
    events.iter().any(|e| {
        e.action == "egress.denied" && e.target.contains(target) && e.detail.contains(reason)
    })
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads an HTTP response head (up to the blank line) byte by byte.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
        if head.len() > 64 * 1024 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// From the client netns: TCP to the proxy, `CONNECT authority`, returns the stream and the
/// proxy's response head.
pub async fn connect_tunnel(fx: &Fixture, authority: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let mut s = connect_from(&fx.net.client_ns, fx.proxy.local_addr()).await;
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await.unwrap_or_default();
    (s, head)
}

/// TLS over `io` with `sni`, trusting only the gateway CA.
pub async fn tls_client<IO>(
    io: IO,
    ca: &Path,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), io)
        .await
}

/// An intercepted HTTP/1.1 connection to `host` through CONNECT, ready for raw requests.
pub async fn h1_tunnel(
    fx: &Fixture,
    host: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (s, head) = connect_tunnel(fx, &format!("{host}:443")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {host}: {head}");
    tls_client(s, fx.cacert(), host, &[b"http/1.1"])
        .await
        .expect("TLS through the proxy")
}

/// Sends raw bytes, returns the response head (or the error text if the connection ended).
pub async fn raw_exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    raw: &[u8],
) -> String {
    use tokio::io::AsyncWriteExt;
    if let Err(e) = s.write_all(raw).await {
        return format!("write error: {e}");
    }
    match tokio::time::timeout(Duration::from_secs(20), read_head(s)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => format!("read error: {e}"),
        Err(_) => "timeout".into(),
    }
}

/// Reads the body after a head (Content-Length or chunked), for keep-alive reuse.
pub async fn read_body<S: tokio::io::AsyncRead + Unpin>(s: &mut S, head: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Small test bodies: read up to the last chunk.
        let mut raw = Vec::new();
        let mut b = [0u8; 1];
        while !raw.ends_with(b"0\r\n\r\n") {
            if s.read(&mut b).await.unwrap() == 0 {
                break;
            }
            raw.push(b[0]);
        }
        return raw;
    }
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    body
}

/// A whole response as the sandbox received it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Every header as `name: value` lines.
    pub head: Vec<u8>,
    pub body: Vec<u8>,
    /// Every trailer as `name: value` lines.
    pub trailers: Vec<u8>,
}

impl Reply {
    /// Head, body and trailers together (for "did X reach the sandbox" checks).
    pub fn all(&self) -> Vec<u8> {
        [&self.head[..], &self.body, &self.trailers].concat()
    }
}

fn lines(h: &http::HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in h {
        out.extend_from_slice(n.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.push(b'\n');
    }
    out
}

/// One request from the sandbox through an intercepted tunnel to `host`, over HTTP/2 (ALPN h2)
/// or HTTP/1.1, with hyper as the client: `headers` and `body` as given, nothing added but
/// Host (or :authority).
pub async fn send(
    fx: &Fixture,
    host: &str,
    h2: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: Vec<u8>,
) -> Reply {
    use http_body_util::{BodyExt, Full};
    let (s, head) = connect_tunnel(fx, &format!("{host}:443")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {host}: {head}");
    let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
    let tls = tls_client(s, fx.cacert(), host, &[alpn])
        .await
        .expect("TLS through the proxy");
    let io = hyper_util::rt::TokioIo::new(tls);
    let mut req = http::Request::builder().method(method);
    req = if h2 {
        req.uri(format!("https://{host}{path}"))
            .version(http::Version::HTTP_2)
    } else {
        req.uri(path).header("host", host)
    };
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        send.send_request(req).await
    }
    .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().map(lines).unwrap_or_default();
    Reply {
        status: parts.status.as_u16(),
        head: lines(&parts.headers),
        body: collected.to_bytes().to_vec(),
        trailers,
    }
}
