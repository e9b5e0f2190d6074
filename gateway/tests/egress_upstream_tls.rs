//! An upstream whose certificate does not verify (wrong name, self-signed, expired, unknown
//! CA) or that speaks only TLS 1.1 gets a 502, and the upstream's capture shows zero HTTP
//! bytes: the request, the injected credential with it, never leaves the proxy.
//!
//! The rustls upstreams record every byte they decrypt; the TLS 1.1 upstream is Debian's
//! `openssl s_server` (rustls cannot speak 1.1) behind a TCP tap in the upstream's namespace
//! that counts the application-data records it forwards to it, and whose own output (it
//! prints what it decrypts) is kept too. A request to each carries a placeholder of a
//! credential bound to nothing there; the random path makes any leak recognisable.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use testkit::egress::*;
use testkit::reflect::below;
use testkit::upstream::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "badtls.test.example";

/// What an upstream saw: connections accepted, and every byte decrypted (or, behind the tap,
/// of application-data records).
#[derive(Debug, Default)]
struct Capture {
    connections: AtomicUsize,
    bytes: Mutex<Vec<u8>>,
}

fn bind(fx: &Fixture, port: u16) -> tokio::net::TcpListener {
    let addr = SocketAddr::new(fx.net.upstream_ip().into(), port);
    let l = in_netns(&fx.net.up_ns, move || {
        std::net::TcpListener::bind(addr).unwrap()
    });
    l.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

/// A rustls upstream on `port` serving `cert_pem`/`key_pem`; returns its capture.
fn rustls_upstream(fx: &Fixture, port: u16, cert_pem: &str, key_pem: &str) -> Arc<Capture> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    // HTTP/1.1: the control's capture can then be read as text (h2 would Huffman-code it).
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = bind(fx, port);
    let capture = Arc::new(Capture::default());
    let c = capture.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.connections.fetch_add(1, Ordering::SeqCst);
            let (acceptor, c) = (acceptor.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    c.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    capture
}

/// Counts the application-data records (content type 23) in the client's TLS byte stream.
fn app_data(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 5 <= records.len() {
        let len = u16::from_be_bytes([records[at + 3], records[at + 4]]) as usize;
        let end = (at + 5 + len).min(records.len());
        if records[at] == 23 {
            out.extend_from_slice(&records[at + 5..end]);
        }
        at += 5 + len;
    }
    out
}

/// `openssl s_server -tls1_1` on loopback in the upstream namespace behind a tap on `port`;
/// returns the tap's capture (application-data records) and the server, whose stdout holds
/// what it decrypted.
fn tls11_upstream(
    fx: &Fixture,
    port: u16,
    cert: &str,
    key: &str,
) -> (Arc<Capture>, testkit::process::Tied) {
    let dir = fx.dir.path();
    std::fs::write(dir.join("tls11.crt"), cert).unwrap();
    std::fs::write(dir.join("tls11.key"), key).unwrap();
    let inner = 20_000 + below(20_000) as u16;
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &fx.net.up_ns,
        "openssl",
        "s_server",
        "-quiet",
        "-tls1_1",
    ])
    .args([
        "-cipher",
        "DEFAULT@SECLEVEL=0",
        "-accept",
        &format!("127.0.0.1:{inner}"),
    ])
    .arg("-cert")
    .arg(dir.join("tls11.crt"))
    .arg("-key")
    .arg(dir.join("tls11.key"))
    .stdin(std::process::Stdio::piped())
    .stdout(std::fs::File::create(dir.join("tls11.out")).unwrap())
    .stderr(std::fs::File::create(dir.join("tls11.err")).unwrap());
    let server = testkit::process::spawn_tied(cmd, None).unwrap();
    let listener = bind(fx, port);
    let capture = Arc::new(Capture::default());
    let c = capture.clone();
    let ns = fx.net.up_ns.clone();
    tokio::spawn(async move {
        while let Ok((mut from, _)) = listener.accept().await {
            c.connections.fetch_add(1, Ordering::SeqCst);
            let ns = ns.clone();
            let to = in_netns(&ns, move || {
                std::net::TcpStream::connect(("127.0.0.1", inner)).unwrap()
            });
            to.set_nonblocking(true).unwrap();
            let mut to = tokio::net::TcpStream::from_std(to).unwrap();
            let c = c.clone();
            tokio::spawn(async move {
                let (mut fr, mut fw) = from.split();
                let (mut tr, mut tw) = to.split();
                let mut seen = Vec::new();
                let up = async {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = fr.read(&mut buf).await {
                        if n == 0 || tw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let _ = tw.shutdown().await;
                };
                let down = tokio::io::copy(&mut tr, &mut fw);
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(up, down) })
                        .await;
                c.bytes.lock().unwrap().extend(app_data(&seen));
            });
        }
    });
    (capture, server)
}

/// A request through the proxy to `HOST:port`, with a placeholder; the response status line.
async fn request(fx: &Fixture, port: u16, marker: &str) -> String {
    let (s, head) = connect_tunnel(fx, &format!("{HOST}:{port}")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT: {head}");
    let mut tls = tls_client(s, fx.cacert(), HOST, &[b"http/1.1"])
        .await
        .unwrap();
    let raw = format!("GET /{marker} HTTP/1.1\r\nHost: {HOST}:{port}\r\nX-Probe: {marker}\r\n\r\n");
    raw_exchange(&mut tls, raw.as_bytes()).await
}

#[test]
fn an_upstream_that_does_not_verify_gets_a_502_and_not_one_http_byte() {
    testkit::privileged(
        "an_upstream_that_does_not_verify_gets_a_502_and_not_one_http_byte",
        4,
        || async {
            let fx = Fixture::new(limits()).await;
            let other_ca = TestCa::new(&[HOST]);
            let self_signed = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
            let (wrong_cert, wrong_key) = fx.test_ca.issue(&["wrong.test.example"], false);
            let (old_cert, old_key) = fx.test_ca.issue(&[HOST], true);
            let (good_cert, good_key) = fx.test_ca.issue(&[HOST], false);
            let cases: Vec<(&str, String, String)> = vec![
                ("wrong name", wrong_cert, wrong_key),
                (
                    "self-signed",
                    self_signed.cert.pem(),
                    self_signed.signing_key.serialize_pem(),
                ),
                ("expired", old_cert, old_key),
                (
                    "unknown CA",
                    pem("CERTIFICATE", &other_ca.leaf),
                    pem("PRIVATE KEY", &other_ca.leaf_key),
                ),
            ];
            // The manifest allows 8441..=8446 for HOST: each case gets one at random.
            let mut ports: Vec<u16> = (8441..=8446).collect();
            let turn = below(ports.len());
            ports.rotate_left(turn);
            let mut captures = Vec::new();
            for ((what, cert, key), port) in cases.iter().zip(&ports) {
                captures.push((*what, *port, rustls_upstream(&fx, *port, cert, key)));
            }
            let (tls11, _server) = tls11_upstream(&fx, ports[4], &good_cert, &good_key);
            captures.push(("TLS 1.1 only", ports[4], tls11));
            // The control: the same kind of upstream with a good certificate does get the bytes.
            let control_port = ports[5];
            let control = rustls_upstream(&fx, control_port, &good_cert, &good_key);
            tokio::time::sleep(Duration::from_millis(300)).await; // s_server binds

            for (what, port, capture) in &captures {
                let marker = format!("probe{}", below(1 << 30));
                let head = request(&fx, *port, &marker).await;
                assert!(head.starts_with("HTTP/1.1 502"), "{what}: {head}");
                assert!(
                    capture.connections.load(Ordering::SeqCst) > 0,
                    "{what}: the proxy never dialled it (the 502 proves nothing)"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
                let bytes = capture.bytes.lock().unwrap().clone();
                assert!(
                    bytes.is_empty(),
                    "{what}: the upstream got {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
            let printed = std::fs::read_to_string(fx.dir.path().join("tls11.out")).unwrap();
            assert!(!printed.contains("probe"), "s_server decrypted: {printed}");

            let marker = format!("probe{}", below(1 << 30));
            let head = request(&fx, control_port, &marker).await;
            assert!(head.starts_with("HTTP/1.1 "), "control: {head}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            let got = control.bytes.lock().unwrap().clone();
            assert!(
                contains(&got, marker.as_bytes()),
                "the control capture works"
            );

            let events = fx.audit().await;
            for (what, port, _) in &captures {
                assert!(
                    denied_with(
                        &events,
                        &format!("{HOST}:{port}"),
                        "upstream connection failed"
                    ),
                    "{what} not audited"
                );
            }
        },
    );
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}
