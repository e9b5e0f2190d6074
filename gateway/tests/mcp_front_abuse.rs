//! The MCP front's connections under abuse, as an attacker on its internet-facing port would
//! test them: silent connections, request heads and bodies trickled in, idle HTTP/2
//! connections, stalled TLS handshakes, connection floods past the caps. Deadlines and caps are
//! chosen at random; every test runs in its own network namespace. (HTTP/2 floods are in
//! `mcp_front_http2.rs`; tokens, sessions and names in `mcp_front_isolation.rs`.)

use testkit::mcp as mcp_support;
use testkit::names::{between, random_name as name};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use gateway::mcp::front::{ConnLimits, FrontLimits};
use mcp_support::Gw;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Limits with the given header deadline and everything else generous.
fn limits_with_header(header_read: Duration) -> FrontLimits {
    FrontLimits {
        connections: ConnLimits {
            header_read,
            ..ConnLimits::default()
        },
        ..FrontLimits::default()
    }
}

/// Reads from `s` until the server closes it (EOF or reset); how long that took, or `None`
/// if it was still open after `within`.
async fn closed_after(s: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end)
        .await
        .ok()
        .map(|()| start.elapsed())
}

/// Writes `bytes` one at a time every `gap` until the server closes the connection; how long
/// the connection survived.
async fn trickle(addr: SocketAddr, bytes: Vec<u8>, gap: Duration) -> Duration {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        for b in bytes.iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    writer.abort();
    assert!(closed.is_ok(), "still open after 60 s");
    start.elapsed()
}

/// The bounds a connection without a request must be closed in: not before its deadline, and
/// not much after it (the close grace and a scheduling margin).
fn assert_closed_at_deadline(survived: Duration, deadline: Duration, what: &str) {
    let grace = ConnLimits::default().close_grace;
    assert!(
        survived >= deadline - Duration::from_millis(100)
            && survived <= deadline + grace + Duration::from_millis(1500),
        "{what}: survived {survived:?}, the header timeout is {deadline:?}"
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "a_connection_that_sends_nothing_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            let survived = closed_after(&mut s, Duration::from_secs(30))
                .await
                .expect("closed by the server");
            assert_closed_at_deadline(survived, deadline, "silent connection");
            let audit = gw.audit().await;
            assert!(
                audit.iter().any(|e| e.action == "mcp.denied"
                    && e.target == "connection"
                    && e.detail.contains("no request within the header timeout")),
                "{audit:#?}"
            );
        },
    );
}

#[test]
fn a_request_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "a_request_head_sent_a_byte_at_a_time_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            // An HTTP/1.1 head whose header never ends, one byte per 500 ms (slowloris).
            let head = format!(
                "POST /mcp/{} HTTP/1.1\r\nHost: {}\r\nX-{}: {}",
                name(6),
                gw.addr,
                name(8),
                name(4000)
            );
            let h1 = trickle(gw.addr, head.into_bytes(), Duration::from_millis(500));
            // The HTTP/2 preface the same way: hyper's protocol detection alone would wait for
            // it forever.
            let h2 = trickle(
                gw.addr,
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
                Duration::from_millis(500),
            );
            let (h1, h2) = tokio::join!(h1, h2);
            assert_closed_at_deadline(h1, deadline, "HTTP/1.1 head");
            assert_closed_at_deadline(h2, deadline, "HTTP/2 preface");
        },
    );
}

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const H2_START: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A well-behaved but idle HTTP/2 client: the preface, then it acknowledges the server's
/// SETTINGS and answers every PING (so keep-alive pings alone cannot close it) and never opens
/// a stream. How long the connection lived.
async fn idle_h2_client(addr: SocketAddr) -> Duration {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    s.write_all(H2_START).await.unwrap();
    let live = async {
        loop {
            let mut head = [0u8; 9];
            if s.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let mut payload = vec![0u8; len];
            if s.read_exact(&mut payload).await.is_err() {
                return;
            }
            let answer = match (kind, flags & 1) {
                (0x4, 0) => vec![0, 0, 0, 0x4, 1, 0, 0, 0, 0],
                (0x6, 0) => [&[0, 0, 8, 0x6, 1, 0, 0, 0, 0][..], &payload].concat(),
                _ => continue,
            };
            if s.write_all(&answer).await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), live)
        .await
        .expect("still open after 60 s");
    start.elapsed()
}

#[test]
fn an_http2_connection_without_requests_is_closed_at_the_header_timeout() {
    testkit::privileged(
        "an_http2_connection_without_requests_is_closed_at_the_header_timeout",
        2,
        || async {
            let deadline = Duration::from_millis(between(1500, 3000));
            let gw = Gw::with_limits(vec![], vec![], &[], limits_with_header(deadline)).await;
            // HTTP/2 has no header timeout of its own, and this client answers pings.
            let survived = idle_h2_client(gw.addr).await;
            assert_closed_at_deadline(survived, deadline, "idle HTTP/2 connection");
        },
    );
}

#[test]
fn a_body_that_trickles_in_is_refused_at_the_body_deadline() {
    testkit::privileged(
        "a_body_that_trickles_in_is_refused_at_the_body_deadline",
        2,
        || async {
            let body_read = Duration::from_millis(between(1000, 2500));
            let limits = FrontLimits {
                body_read,
                ..FrontLimits::default()
            };
            let gw = Gw::with_limits(vec![], vec![("agents", vec![])], &[], limits).await;
            let (token_id, token) = gw.token("agents");
            let body = json!({"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad": name(2000)}})
                .to_string();
            let mut s = TcpStream::connect(gw.addr).await.unwrap();
            let head = format!(
                "POST /mcp/agents HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                gw.addr,
                body.len()
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let start = Instant::now();
            let (mut rd, mut wr) = s.into_split();
            let writer = tokio::spawn(async move {
                for b in body.bytes() {
                    if wr.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(30), rd.read(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                assert!(n > 0, "closed without an answer");
                got.extend_from_slice(&buf[..n]);
            }
            let answered = start.elapsed();
            writer.abort();
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "{}",
                String::from_utf8_lossy(&got)
            );
            assert!(
                answered >= body_read - Duration::from_millis(100)
                    && answered <= body_read + Duration::from_millis(1500),
                "answered after {answered:?}, the body deadline is {body_read:?}"
            );
            let audit = gw.audit().await;
            assert!(audit.iter().any(|e| e.action == "mcp.denied"
                && e.detail.contains(&format!("token={token_id}"))
                && e.detail.contains("request body not received in time")));
        },
    );
}

/// A TLS acceptor for `localhost` from a throwaway CA.
fn tls_acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(p, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    gateway::mcp::front::tls_acceptor(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap()
}

#[test]
fn a_stalled_tls_handshake_is_closed_at_its_deadline() {
    testkit::privileged(
        "a_stalled_tls_handshake_is_closed_at_its_deadline",
        2,
        || async {
            let gw = Gw::with(vec![], vec![], &[]).await;
            let dir = tempfile::tempdir().unwrap();
            let tls_handshake = Duration::from_millis(between(1000, 2500));
            let limits = FrontLimits {
                connections: ConnLimits {
                    tls_handshake,
                    // Longer than the handshake's: the handshake's own deadline must act.
                    header_read: Duration::from_secs(60),
                    ..ConnLimits::default()
                },
                ..FrontLimits::default()
            };
            let front = gateway::mcp::front::Front::new(
                gw.store.clone(),
                gateway::audit::Auditor::new(gw.store.clone(), "gigmcpd"),
                gw.pool.clone(),
                limits,
                vec!["localhost".into()],
                vec![],
                None,
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serving = tokio::spawn(
                front
                    .clone()
                    .serve_with(listener, Some(tls_acceptor(dir.path()))),
            );
            // Silent, and the first bytes of a ClientHello and then silence.
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut partial = TcpStream::connect(addr).await.unwrap();
            partial
                .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .await
                .unwrap();
            let (a, b) = tokio::join!(
                closed_after(&mut silent, Duration::from_secs(30)),
                closed_after(&mut partial, Duration::from_secs(30))
            );
            for (what, survived) in [("silent", a), ("partial ClientHello", b)] {
                let survived = survived.expect("closed by the server");
                assert!(
                    survived >= tls_handshake - Duration::from_millis(100)
                        && survived <= tls_handshake + Duration::from_millis(1500),
                    "{what}: survived {survived:?}, the handshake deadline is {tls_handshake:?}"
                );
            }
            serving.abort();
        },
    );
}

/// A connection to `addr` from source address `from`.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(from), 0)).unwrap();
    s.connect(addr).await.unwrap()
}

#[test]
fn connections_past_the_caps_are_closed_at_once_and_audited() {
    testkit::privileged(
        "connections_past_the_caps_are_closed_at_once_and_audited",
        2,
        || async {
            let per_peer = between(2, 8) as usize;
            let total = per_peer * 2 + between(1, per_peer as u64) as usize;
            let limits = FrontLimits {
                connections: ConnLimits {
                    max_connections: total,
                    max_connections_per_peer: per_peer,
                    header_read: Duration::from_secs(60),
                    ..ConnLimits::default()
                },
                ..FrontLimits::default()
            };
            let gw = Gw::with_limits(vec![], vec![], &[], limits).await;
            let peer = |n: u8| Ipv4Addr::new(127, 0, 0, n);
            let mut held = Vec::new();
            for _ in 0..per_peer {
                held.push(connect_from(peer(2), gw.addr).await);
            }
            // The peer's next one is closed at once; the others are still open.
            let mut over = connect_from(peer(2), gw.addr).await;
            assert!(
                closed_after(&mut over, Duration::from_secs(2))
                    .await
                    .is_some(),
                "a connection past the per-peer cap ({per_peer}) stayed open"
            );
            for s in &mut held {
                assert!(closed_after(s, Duration::from_millis(50)).await.is_none());
            }
            // Other peers fill the total; the next one, from a fresh address, is closed.
            let mut n = 3;
            while held.len() < total {
                for _ in 0..per_peer.min(total - held.len()) {
                    held.push(connect_from(peer(n), gw.addr).await);
                }
                n += 1;
            }
            let mut over = connect_from(peer(200), gw.addr).await;
            assert!(
                closed_after(&mut over, Duration::from_secs(2))
                    .await
                    .is_some(),
                "a connection past the total cap ({total}) stayed open"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(gw.front.open_connections(), total);
            // A closed connection frees its slot.
            drop(held.pop());
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut again = connect_from(peer(200), gw.addr).await;
            assert!(
                closed_after(&mut again, Duration::from_millis(300))
                    .await
                    .is_none()
            );
            let audit = gw.audit().await;
            for reason in [
                "too many connections from this address",
                "too many connections\"",
            ] {
                assert!(
                    audit
                        .iter()
                        .any(|e| e.target == "connection" && e.detail.contains(reason)),
                    "{reason}: {audit:#?}"
                );
            }
        },
    );
}
